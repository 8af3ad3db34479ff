"""The backward graph, derived from the forward graph by per-op adjoint rules.

`ADJOINTS` maps each forward op kind to its rule (the proof that justifies it and a function
emitting backward ops). `derive_backward` walks the forward ops in reverse topological order;
when it reaches an op every consumer of its outputs has been visited, so each output's total
gradient is known (several contributions are summed by a ``grad_add`` op). The rule returns a
gradient contribution per input port.

Recompute rather than store: a backward op that reads a forward tensor gets it from the
backward graph's inputs when it is a forward input or a tensor the forward saves (the op
kind's ``saves``: gate cumsums, the UT inverse, ||H_t||_F, the solution x), and otherwise from
a clone of its producer (role ``recompute``), recursively: chunk states, WY factors and qm are
recomputed.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import networkx as nx

from .core import Graph, IRError, vid


@dataclass(frozen=True)
class Adjoint:
    proof: str | None
    emit: Callable  # (ctx, fwd op name, fwd op node, output grads by port) -> input grads by port
    doc: str


class _Ctx:
    def __init__(self, fwd: Graph):
        self.fwd = fwd
        self.g = Graph("backward")
        self.contrib: dict[str, list[str]] = defaultdict(list)
        self.total: dict[str, str | None] = {}
        self.seeds: set[str] = set()
        self.proof: str | None = None
        self.rule: str = ""

    # ------------------------------------------------------------------ forward tensors in the backward
    def need(self, v: str | None) -> str | None:
        if v is None:
            return None
        d = self.fwd.val(v)
        if vid(v) in self.g.g:
            return v
        if d["role"] == "input" or d.get("saved"):
            self.g.value(v, shape=d["shape"], dtype=d["dtype"], role="input" if d["role"] == "input" else "saved",
                         differentiable=False, forward=True)
            return v
        p = self.fwd.producer(v)
        pd = self.fwd.node(p)
        ins = {port: self.need(x) for port, x in pd["inputs"].items()}
        self.g.op(f"re_{p}", pd["kind"], ins, dict(pd["outputs"]), attrs=dict(pd["attrs"]), rule=pd["rule"],
                  proof=pd["proof"], role="recompute")
        for x in pd["outputs"].values():
            self.g.val(x)["forward"] = True
        return v

    def emit(self, kind: str, name: str, inputs: dict, attrs: dict, proof: str | None = "<rule>") -> dict:
        self.g.op(name, kind, inputs, {}, attrs=attrs, rule=self.rule, proof=self.proof if proof == "<rule>" else proof,
                  role="adjoint")
        return self.g.node(name)["outputs"]

    # ------------------------------------------------------------------ gradients
    def seed(self, v: str, name: str, **kw):
        d = self.fwd.val(v)
        self.g.value(name, shape=d["shape"], dtype=d["dtype"], role="input", differentiable=False, grad_of=v, **kw)
        self.seeds.add(name)
        self.contrib[v].append(name)

    def add(self, v: str, gv: str):
        self.contrib[v].append(gv)

    def grad(self, v: str) -> str | None:
        """The total gradient of forward value v (summing contributions the first time it is asked)."""
        if v in self.total:
            return self.total[v]
        cs = self.contrib.get(v, [])
        if not cs:
            out = None
        elif len(cs) == 1:
            out = cs[0] if cs[0] in self.seeds else self.rename(cs[0], f"d{v}")
        else:
            shape = self.fwd.val(v)["shape"]
            self.g.op(f"sum_d{v}", "grad_add", {f"x{i}": c for i, c in enumerate(cs)}, {"y": f"d{v}"},
                      attrs={"shape": ",".join(shape), "n": len(cs)}, rule="grad_accumulate", proof=None,
                      role="adjoint")
            out = f"d{v}"
        if out is not None:
            self.g.val(out)["grad_of"] = v
        self.total[v] = out
        return out

    def rename(self, old: str, new: str) -> str:
        if old == new:
            return new
        if vid(new) in self.g.g:
            raise IRError(f"backward value name {new!r} is taken")
        g = self.g.g
        nx.relabel_nodes(g, {vid(old): vid(new)}, copy=False)
        g.nodes[vid(new)]["name"] = new
        for p in g.predecessors(vid(new)):
            outs = g.nodes[p]["outputs"]
            for port, x in outs.items():
                if x == old:
                    outs[port] = new
        for c in g.successors(vid(new)):
            ins = g.nodes[c]["inputs"]
            for port, x in ins.items():
                if x == old:
                    ins[port] = new
        for v, cs in self.contrib.items():
            self.contrib[v] = [new if c == old else c for c in cs]
        return new


# ----------------------------------------------------------------------------- adjoint rules
# Each takes (ctx, op name, op node, dout) and returns {input port: gradient value}.


def _ins(ctx, n, *ports):
    return {p: ctx.need(n["inputs"].get(p)) for p in ports}


def _adj_gate_cumsum(ctx, name, n, d):
    out = ctx.emit("reverse_cumsum", f"rcumsum_{n['inputs']['g']}", {"dg_cum": d["g_cum"]}, n["attrs"])
    return {"g": out["dg"]}


def _adj_gate_scale(ctx, name, n, d):
    out = ctx.emit("gate_scale_grad", f"{name}_grad", {**_ins(ctx, n, "x", "beta"), "dy": d["y"]}, n["attrs"])
    return {"x": out["dx"], "beta": out["dbeta"]}


def _adj_state_scan(ctx, name, n, d):
    a, ins = n["attrs"], n["inputs"]
    if d.get("h") is None:
        raise IRError(f"{name}: the chunk states are never read, nothing to differentiate")
    delta = a["delta"]
    st = a["state"]
    rs = ctx.emit("reverse_state_scan", f"rscan_{st}",
                  {"key": ctx.need(ins["key"]) if delta else None, "w": ctx.need(ins.get("w")),
                   "g_cum": ctx.need(ins.get("g_cum")), "dh": d["h"], "dv_new": d.get("v_new"),
                   "dht": d.get("ht")}, a)
    sg = ctx.emit("state_scan_grad", f"scan_grad_{st}",
                  {"key": ctx.need(ins["key"]), "val": ctx.need(n["outputs"]["v_new"] if delta else ins["val"]),
                   "w": ctx.need(ins.get("w")), "h": ctx.need(n["outputs"]["h"]), "dh": rs["dh_total"],
                   "du": rs.get("du"), "g_cum": ctx.need(ins.get("g_cum")), "beta": ctx.need(ins.get("beta"))}, a)
    return {"key": sg["dkey"], "val": rs["du"] if delta else sg["dval"], "w": sg.get("dw"),
            "g_cum": sg.get("dg_cum"), "beta": sg.get("dbeta"), "h0": rs["dh0"]}


def _adj_output(ctx, name, n, d):
    a = n["attrs"]
    base = _ins(ctx, n, "q", "k", "g_cum", "beta")
    loc = ctx.emit("output_grad_local", f"{name}_grad_dv", {**base, "do": d["o"]}, a)
    st = ctx.emit("output_grad_state", f"{name}_grad_dh", {"q": base["q"], "g_cum": base["g_cum"], "do": d["o"]}, a)
    qkg = ctx.emit("output_grad_qkg", f"{name}_grad_dqk", {**base, **_ins(ctx, n, "v", "h"), "do": d["o"]}, a)
    return {"q": qkg["dq"], "k": qkg["dk"], "v": loc["dv"], "h": st["dh"], "g_cum": qkg.get("dg_cum"),
            "beta": qkg.get("dbeta")}


def _adj_masked_kkt(ctx, name, n, d):
    out = ctx.emit("kkt_grad", "kkt_grad", {**_ins(ctx, n, "k", "beta", "g_cum"), "dA": d["A"]}, n["attrs"])
    return {"k": out["dk"], "beta": out.get("dbeta"), "g_cum": out.get("dg_cum")}


def _adj_tri_solve(ctx, name, n, d):
    out = ctx.emit("tri_solve_grad", "ut_solve_grad", {"A_inv": ctx.need(n["outputs"]["A_inv"]),
                                                       "dA_inv": d["A_inv"]}, n["attrs"])
    return {"A": out["dA"]}


def _adj_wy(ctx, name, n, d):
    out = ctx.emit("wy_grad", "wy_grad", {**_ins(ctx, n, "k", "v", "beta", "A_inv", "g_cum"), "dw": d["w"],
                                          "du": d["u"]}, n["attrs"])
    return {"k": out["dk"], "v": out["dv"], "beta": out.get("dbeta"), "A_inv": out["dA_inv"],
            "g_cum": out.get("dg_cum")}


def _adj_fro_norm(ctx, name, n, d):
    out = ctx.emit("fro_norm_grad", "fro_norm_grad",
                   {**_ins(ctx, n, "k", "beta", "g_cum", "h"), "hnorm": ctx.need(n["outputs"]["hnorm"]),
                    "dhnorm": d["hnorm"]}, n["attrs"])
    return {"k": out["dk"], "beta": out.get("dbeta"), "g_cum": out.get("dg_cum"), "h": out["dh"]}


# The adjoint solve reuses the forward operator (same lam_t from the stored ||H_t||_F). Chebyshev
# output is a fixed polynomial p(A) q, so the adjoint is exact; CG / exact rely on x being the
# solution (implicit differentiation).
ADJOINT_SOLVE_PROOF = {"chebyshev_solve": "chebyshev_adjoint", "cg_solve": "ridge_implicit_grad",
                       "exact_solve": "ridge_implicit_grad"}


def _adj_solve(ctx, name, n, d):
    ops = _ins(ctx, n, "k", "beta", "g_cum", "h", "hnorm", "lamb")
    dq = ctx.emit(n["kind"], "adjoint_solve", {"rhs": d["x"], **ops}, {**n["attrs"], "adjoint": True},
                  proof=ADJOINT_SOLVE_PROOF[n["kind"]])["x"]
    sg = ctx.emit("solve_grad", "solve_grad",
                  {"x": ctx.need(n["outputs"]["x"]), "dq": dq, **{p: ops[p] for p in ("k", "beta", "g_cum", "h")}},
                  n["attrs"])
    return {"rhs": dq, "k": sg["dk"], "beta": sg.get("dbeta"), "g_cum": sg.get("dg_cum"), "h": sg["dh"],
            "hnorm": sg.get("dhnorm"), "lamb": sg.get("dlamb")}


def _adj_mix(ctx, name, n, d):
    out = ctx.emit("mix_grad", "mix_grad", {**_ins(ctx, n, "q", "x", "alpha"), "dqm": d["qm"]}, n["attrs"])
    return {"q": out["dq"], "x": out["dx"], "alpha": out["dalpha"]}


ADJOINTS: dict[str, Adjoint] = {
    "gate_cumsum": Adjoint("gated_scan", _adj_gate_cumsum, "reverse chunk-local cumsum"),
    "gate_scale": Adjoint(None, _adj_gate_scale, "product rule"),
    "state_scan": Adjoint("gated_scan", _adj_state_scan, "reverse state scan, then per-chunk input gradients"),
    "chunk_output": Adjoint("gated_scan", _adj_output, "transpose of inter- and intra-chunk output"),
    "chunk_readout": Adjoint("gated_scan", _adj_output, "transpose of the ridge readout (a GLA readout of qm)"),
    "masked_kkt": Adjoint("wy_form", _adj_masked_kkt, "adjoint of the masked K K^T"),
    "tri_solve": Adjoint("wy_form", _adj_tri_solve, "adjoint of the UT inverse"),
    "wy_recompute": Adjoint("wy_form", _adj_wy, "adjoint of the WY factors"),
    "fro_norm": Adjoint("ridge_implicit_grad", _adj_fro_norm, "lam path: d||H||_F = <dH, H>/||H||_F"),
    "chebyshev_solve": Adjoint("ridge_implicit_grad", _adj_solve, "adjoint Chebyshev solve + implicit gradient"),
    "cg_solve": Adjoint("ridge_implicit_grad", _adj_solve, "adjoint CG solve + implicit gradient"),
    "exact_solve": Adjoint("ridge_implicit_grad", _adj_solve, "adjoint exact solve + implicit gradient"),
    "alpha_mix": Adjoint(None, _adj_mix, "product rule"),
}


def derive_backward(fwd: Graph) -> Graph:
    ctx = _Ctx(fwd)
    for v in fwd.values():
        d = fwd.val(v)
        if d["role"] == "output":
            ctx.seed(v, f"d{v}")
    for name in reversed(fwd.ops()):
        n = fwd.node(name)
        dout = {port: ctx.grad(v) for port, v in n["outputs"].items()}
        if all(x is None for x in dout.values()):
            continue
        if n["kind"] not in ADJOINTS:
            raise IRError(f"no adjoint rule for op kind {n['kind']!r}")
        adj = ADJOINTS[n["kind"]]
        ctx.rule, ctx.proof = f"adjoint_{n['kind']}", adj.proof
        grads = adj.emit(ctx, name, n, dout)
        for port, gv in grads.items():
            if gv is None:
                continue
            if port not in n["inputs"]:
                raise IRError(f"adjoint of {name} returned a gradient for the unconnected port {port!r}")
            ctx.add(n["inputs"][port], gv)
    for v in fwd.values():
        d = fwd.val(v)
        if d["role"] == "input" and d.get("differentiable"):
            gv = ctx.grad(v)
            if gv is not None:
                ctx.g.val(gv)["role"] = "grad"
    # Contributions that were never summed (a gradient nobody asked for) would be dead code.
    return ctx.g
