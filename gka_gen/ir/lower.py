"""Lowering: canonical form -> forward graph of chunk-level ops.

Each lowering rule is a row of `RULES` (its name, the symbolic proof in
`gka_gen.symbolic.proofs` that shows the chunked form equals the recurrence, and what it
does); every op a rule emits carries the rule's name and proof. The family functions below
only decide which rules apply to a canonical form and wire their tensors.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..spec import Spec
from ..symbolic.canonical import CanonicalForm, StateForm
from .core import Graph, IRError
from .ops import KIND_OF_SOLVER


@dataclass(frozen=True)
class Rule:
    name: str
    proof: str | None  # None: a plain algebraic identity, nothing to prove
    doc: str


RULES: dict[str, Rule] = {r.name: r for r in [
    Rule("chunk_local_cumsum", "gated_scan", "decay products inside a chunk become exp of differences of G = cumsum(g)"),
    Rule("fold_input_strength", None, "D S + b k v^T = D S + k (b v)^T: the strength scales the written vector"),
    Rule("wy_ut_transform", "wy_form", "delta rule per chunk: masked K K^T, (I + A)^-1, WY factors w, u"),
    Rule("delta_state_scan", "wy_form", "chunk states S[n+1] = decay S[n] + k^T (u - w S[n])"),
    Rule("gated_state_scan", "gated_scan", "chunk states S[n+1] = decay S[n] + (decayed k)^T v"),
    Rule("chunk_output", "gated_scan", "o = inter-chunk q S[n] + intra-chunk decay-masked causal attention"),
    Rule("fro_norm_chunked", "fro_norm_chunked", "||H_t||_F from H_c and in-chunk keys, no per-token K x K"),
    Rule("ridge_solve", "ridge_matvec_split", "A_t y = e^G (H_c y) + ((y K^T) . D) K + lam y inside the solver"),
    Rule("ridge_mix", None, "qm = q + alpha (x - q)"),
    Rule("ridge_readout", "gated_scan", "o = scale (e^G qm U_c + ((qm K^T) . D) V)"),
]}


class _Lowering:
    def __init__(self, spec: Spec, cf: CanonicalForm):
        self.spec, self.cf = spec, cf
        self.g = Graph("forward")

    # ------------------------------------------------------------------ graph inputs
    def tensor(self, name: str) -> str:
        """A graph input named as in the spec, with its [B, T, H, ...] shape."""
        if name is None:
            return None
        if f"%{name}" in self.g.g:
            return name
        kind = self.spec.kind_of(name)
        r, c = self.spec.shapes[name]
        if c != "1":
            raise IRError(f"{name} has a matrix shape {r}x{c}; tensors fed to kernels are vectors or scalars")
        per = () if r == "1" else (r,)
        if kind == "input":
            return self.g.value(name, shape=("B", "T", "H") + per, dtype="io", role="input", differentiable=True)
        if kind == "gate":
            return self.g.value(name, shape=("B", "T", "H") + per, dtype="fp32", role="input", differentiable=True)
        if kind == "param" and self.spec.file.params[name].type == "head_tensor":
            return self.g.value(name, shape=("H",) + per, dtype="fp32", role="input", differentiable=True)
        raise IRError(f"{name} ({kind}) is not a tensor input")

    def initial_state(self, st: StateForm) -> str:
        return self.g.value(f"h0_{st.name}", shape=("B", "H") + tuple(st.shape), dtype="fp32", role="input",
                            differentiable=True, optional=True)

    # ------------------------------------------------------------------ emission
    def emit(self, rule: str, kind: str, name: str, inputs: dict, outputs: dict, attrs: dict) -> dict:
        r = RULES[rule]
        self.g.op(name, kind, inputs, outputs, attrs=attrs, rule=r.name, proof=r.proof)
        return self.g.node(name)["outputs"]

    def cumsum(self, gate: str | None, decay: str, K: str, cache: dict) -> str | None:
        if decay == "none":
            return None
        if gate not in cache:
            g = self.tensor(gate)
            cache[gate] = self.emit("chunk_local_cumsum", "gate_cumsum", f"cumsum_{gate}", {"g": g},
                                    {"g_cum": f"{gate}_cum"},
                                    {"decay": decay, "K": K, "gshape": _gshape(decay, K)})["g_cum"]
        return cache[gate]

    def finish(self, outputs: list[str]) -> Graph:
        for v in outputs:
            self.g.val(v)["role"] = "output"
        return self.g


def _gshape(decay: str, K: str) -> str:
    return "B,T,H," + K if decay == "channel" else "B,T,H"


def _lower_linear(L: _Lowering) -> Graph:
    cf = L.cf
    r = cf.readout
    st = cf.state(r.state)
    K, V = st.shape
    key, val = st.input
    q, k, v = L.tensor(r.query), L.tensor(key), L.tensor(val)
    a = {"K": K, "V": V, "decay": st.decay, "gshape": _gshape(st.decay, K)}
    g_cum = L.cumsum(st.decay_gate, st.decay, K, {})
    beta = L.tensor(st.beta)
    scan_attrs = {**a, "R": K, "Q": V, "state": st.name, "state_role": "value", "delta": st.delta}
    if st.delta:
        A = L.emit("wy_ut_transform", "masked_kkt", "kkt", {"k": k, "beta": beta, "g_cum": g_cum}, {"A": "A"}, a)["A"]
        A_inv = L.emit("wy_ut_transform", "tri_solve", "ut_solve", {"A": A}, {"A_inv": "A_inv"}, a)["A_inv"]
        wu = L.emit("wy_ut_transform", "wy_recompute", "wy", {"k": k, "v": v, "beta": beta, "A_inv": A_inv,
                                                              "g_cum": g_cum}, {"w": "w", "u": "u"}, a)
        s = L.emit("delta_state_scan", "state_scan", f"scan_{st.name}",
                   {"key": k, "val": wu["u"], "w": wu["w"], "g_cum": g_cum, "h0": L.initial_state(st)},
                   {"h": f"h_{st.name}", "v_new": "v_new", "ht": f"ht_{st.name}"}, scan_attrs)
        v_out = s["v_new"]
    else:
        if beta:
            v = L.emit("fold_input_strength", "gate_scale", f"fold_{beta}", {"x": v, "beta": beta},
                       {"y": f"{v}_{beta}"}, {"W": V})["y"]
        s = L.emit("gated_state_scan", "state_scan", f"scan_{st.name}",
                   {"key": k, "val": v, "g_cum": g_cum, "h0": L.initial_state(st)},
                   {"h": f"h_{st.name}", "ht": f"ht_{st.name}"}, scan_attrs)
        v_out = v
    o = L.emit("chunk_output", "chunk_output", "output", {"q": q, "k": k, "v": v_out, "h": s["h"], "g_cum": g_cum},
               {"o": "o"}, {**a, "scale": r.scale})["o"]
    return L.finish([o, s["ht"]])


def _lower_ridge(L: _Lowering) -> Graph:
    cf = L.cf
    r = cf.readout
    cov, val = cf.state(r.cov_state), cf.state(r.state)
    K, V = cov.shape[0], val.shape[1]
    q, k, v = L.tensor(r.query), L.tensor(cov.input[0]), L.tensor(val.input[1])
    beta = L.tensor(cov.beta)
    cache: dict = {}
    scans = {}
    for st, role in ((cov, "cov"), (val, "value")):
        g_cum = L.cumsum(st.decay_gate, st.decay, K, cache)
        R, Q = st.shape
        attrs = {"K": K, "R": R, "Q": Q, "decay": st.decay, "gshape": _gshape(st.decay, K), "state": st.name,
                 "state_role": role, "delta": False}
        outs = L.emit("gated_state_scan", "state_scan", f"scan_{st.name}",
                      {"key": L.tensor(st.input[0]), "val": L.tensor(st.input[1]), "g_cum": g_cum, "beta": beta,
                       "h0": L.initial_state(st)},
                      {"h": f"h_{st.name}", "ht": f"ht_{st.name}"}, attrs)
        scans[role] = (outs, g_cum)
    (h_cov, gk_cum), (h_val, g_cum) = (scans["cov"][0]["h"], scans["cov"][1]), (scans["value"][0]["h"], scans["value"][1])
    a = {"K": K, "V": V, "decay": cov.decay, "gshape": "B,T,H"}
    hnorm = None
    if r.lam_rule == "fro_ratio":
        hnorm = L.emit("fro_norm_chunked", "fro_norm", "fro_norm", {"k": k, "beta": beta, "g_cum": gk_cum, "h": h_cov},
                       {"hnorm": "hnorm"}, a)["hnorm"]
    lamb = L.tensor(r.lam_param) if r.lam_rule == "channel_param" else None
    if r.solver not in KIND_OF_SOLVER:
        raise IRError(f"no solve op for solver {r.solver!r}")
    x = L.emit("ridge_solve", KIND_OF_SOLVER[r.solver], "solve",
               {"rhs": q, "k": k, "beta": beta, "g_cum": gk_cum, "h": h_cov, "hnorm": hnorm, "lamb": lamb},
               {"x": "x"}, {**a, "iters": r.iters, "lam_rule": r.lam_rule, "lam_param": r.lam_param,
                            "adjoint": False})["x"]
    qm = x
    if r.mix_gate:
        qm = L.emit("ridge_mix", "alpha_mix", "mix", {"q": q, "x": x, "alpha": L.tensor(r.mix_gate)}, {"qm": "qm"},
                    {"K": K})["qm"]
    o = L.emit("ridge_readout", "chunk_readout", "readout",
               {"q": qm, "k": k, "v": v, "h": h_val, "g_cum": g_cum, "beta": beta}, {"o": "o"},
               {**a, "decay": val.decay, "scale": r.scale})["o"]
    return L.finish([o, scans["cov"][0]["ht"], scans["value"][0]["ht"]])


FAMILY_LOWERING = {"linear": _lower_linear, "ridge": _lower_ridge}


def lower_forward(spec: Spec, cf: CanonicalForm) -> Graph:
    if cf.family not in FAMILY_LOWERING:
        raise IRError(f"no lowering for the {cf.family!r} family")
    L = _Lowering(spec, cf)
    g = FAMILY_LOWERING[cf.family](L)
    # What the forward keeps for the backward (everything else is recomputed).
    from .ops import OP_KINDS

    for n in g.ops():
        d = g.node(n)
        for port in OP_KINDS[d["kind"]].saves:
            if port in d["outputs"]:
                g.val(d["outputs"][port])["saved"] = True
    return g
