"""The jinja context of templates/package/: everything the generated ops/spec/layer need.

All spec-specific decisions of the functional API are made here, at generation time, from the
canonical form: which spec names feed which generic kernel arguments, the Python signature,
the order in which optional gates take their defaults, the dims expressions of param defaults
as plain Python. The generated code then only evaluates what was decided here (no sympy, no
canonicalisation at import time).
"""
from __future__ import annotations

import pprint
from pathlib import Path

import sympy

from .. import __version__
from ..errors import SpecError
from ..ir.carry import carry_rules
from ..signature import Arg, op_signature, state_shapes
from ..spec import Spec
from ..spec import expr as E
from ..symbolic.canonical import CanonicalForm, describe


REPO_ROOT = Path(__file__).resolve().parents[2]


def spec_source(spec: Spec) -> str:
    """Where the spec came from, as stable text: relative to the repository, else the file name.

    Never an absolute path: generated files must be identical on every machine.
    """
    p = Path(spec.path).resolve()
    try:
        return p.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return p.name


def literal(value) -> str:
    """A deterministic Python literal (dict order kept: it is the spec's order)."""
    return pprint.pformat(value, width=96, sort_dicts=False)


def python_default(a: Arg) -> tuple[bool, object]:
    """(has_default, default) of one argument of the generated Python signature.

    Mirrors `gka_gen.reference.python_signature`: options keep their defaults, numeric params
    show their number, every other omittable argument defaults to None and is resolved at call
    time (a gate's spec default, a dims expression such as K**-0.5).
    """
    if a.kind == "option":
        return True, a.default
    if a.kind == "param" and isinstance(a.default, (int, float)) and not isinstance(a.default, bool):
        return True, a.default
    if a.required:
        return False, None
    return True, None


def signature_args(spec: Spec) -> list[dict]:
    args, seen_default = [], False
    for a in op_signature(spec):
        has, default = python_default(a)
        if not has and seen_default:
            # Python forbids a required argument after an optional one: it gets None and is
            # checked at call time ("gate beta is required").
            has, default = True, None
        seen_default |= has
        text = a.name if not has else f"{a.name}={default!r}"
        args.append({"name": a.name, "kind": a.kind, "required": a.required, "text": text, "help": _help(spec, a),
                     "has_default": has, "default": default, "doc": a.doc, "shape": list(a.shape)})
    return args


def _help(spec: Spec, a: Arg) -> str:
    """One line of the generated docstring for argument ``a``."""
    f = spec.file
    if a.kind == "input":
        text = f"[{', '.join(a.shape)}]" + (", l2-normalised by the layer" if f.inputs[a.name].norm == "l2" else "")
    elif a.kind == "gate":
        g = f.gates[a.name]
        text = f"[{', '.join(a.shape)}], {'log space' if g.space == 'log' else 'in [0, 1]'}"
        if g.optional:
            text += f", optional (None: {'the gate ' + g.default if isinstance(g.default, str) else g.default})"
    elif a.kind == "param":
        p = f.params[a.name]
        if p.type == "head_tensor":
            text = f"[{', '.join(a.shape)}] per-head tensor"
        else:
            text = p.type + (f", default {p.default}" if p.default is not None else "")
        text += ", positive" if p.positive else ""
    else:
        states = state_shapes(spec)
        if a.name == "initial_state":
            parts = [f"{n} [{', '.join(s)}]" for n, s in states.items()]
            text = (parts[0] if len(parts) == 1 else f"a tuple ({', '.join(parts)})") + \
                " in fp32; N = B, or the number of sequences with cu_seqlens"
        elif a.name == "output_final_state":
            text = "also return the state after the last token"
        else:
            text = "int [N + 1] start offsets of N sequences packed along T (then B = 1)"
    return text + (f"; {a.doc}" if a.doc else "")


def dims_expression(text, dims: list[str]) -> str:
    """A param default (number or dims expression) as a Python expression in the dims."""
    if not isinstance(text, str):
        return repr(float(text))
    node = E.parse_expr(text, field="default")
    syms = {d: sympy.Symbol(d, positive=True, integer=True) for d in dims}
    return f"float({sympy.pycode(E.Lowering(syms)(node))})"


def _gate_order(spec: Spec) -> list[str]:
    """Gates in an order where a gate defaulting to another gate comes after it."""
    gates = spec.file.gates
    order, placed = [], set()
    pending = list(gates)
    while pending:
        ready = [n for n in pending if not isinstance(gates[n].default, str) or gates[n].default in placed]
        if not ready:
            raise SpecError(f"the gate defaults form a cycle: {pending}", file=spec.path, field="gates")
        for n in ready:
            order.append(n)
            placed.add(n)
            pending.remove(n)
    return order


def kernel_map(spec: Spec, cf: CanonicalForm) -> dict:
    """Spec names feeding the generic kernel arguments (None: the variant has no such input).

    Linear family: q, k, v, g (the decay gate of S), beta (strength of the delta rule), scale.
    A non-delta state with an input strength b (S = D S + b k v^T) is written for the kernel as
    D S + k (b v)^T: ``fold_beta`` names b, and the wrapper scales v by it before the kernel.
    Ridge family: gk decays the covariance state, g the value state (mesanet: one gate feeds
    both); beta from the states' input strength, alpha from the readout's mix gate, lamb the
    per-channel lambda, ridge_ratio the param of lam = ratio * ||H||_F, num_iter the solver's
    iteration count (a param name or a fixed int).
    """
    r = cf.readout
    if cf.family == "linear":
        s = cf.state(r.state)
        return {
            "q": r.query, "k": s.input[0], "v": s.input[1],
            "g": s.decay_gate, "beta": s.beta if s.delta else None,
            "fold_beta": s.beta if (s.beta and not s.delta) else None,
            "scale": r.scale, "decay": s.decay, "delta": s.delta,
        }
    cov, val = cf.state(r.cov_state), cf.state(r.state)
    return {
        "q": r.query, "k": cov.input[0], "v": val.input[1],
        "g": val.decay_gate, "gk": cov.decay_gate, "beta": cov.beta, "alpha": r.mix_gate,
        "lamb": r.lam_param if r.lam_rule == "channel_param" else None,
        "ridge_ratio": r.lam_param if r.lam_rule == "fro_ratio" else None,
        "num_iter": r.iters, "num_iter_is_param": isinstance(r.iters, str),
        "scale": r.scale, "solver": r.solver, "lam_rule": r.lam_rule,
    }


def kernel_signature(family: str) -> dict:
    """The generic host API of a family's kernel package (see templates/triton/<family>/__init__).

    tensors: the tensor arguments in order, with whether they may be None; scalars: the Python
    scalar arguments with their custom-op annotation; states: the state tensors of the family
    (the kernels take one state, or a (h_kk, h_kv) pair).
    """
    if family == "linear":
        return {"tensors": [("q", False), ("k", False), ("v", False), ("g", True), ("beta", True)],
                "scalars": [("scale", "float")], "states": ["ht"]}
    return {"tensors": [("q", False), ("k", False), ("v", False), ("g", True), ("gk", True), ("beta", True),
                        ("alpha", True), ("lamb", True)],
            "scalars": [("scale", "float"), ("ridge_ratio", "Optional[float]"), ("num_iter", "int")],
            "states": ["h_kk", "h_kv"]}


def package_context(spec: Spec, cf: CanonicalForm, data: dict, *, header: str, backends: list[str],
                    has_layer: bool) -> dict:
    """``data`` is the spec file as read (YAML -> dict): the generated spec.py rebuilds the Spec
    from it with `spec_from_dict`, which gives the same hash."""
    f = spec.file
    name = spec.name
    dims = list(f.dims)
    sig = signature_args(spec)
    state_names = list(f.states)
    kmap = kernel_map(spec, cf)
    if cf.family == "ridge":
        r = cf.readout
        state_order = [state_names.index(r.cov_state), state_names.index(r.state)]
    else:
        state_order = [0]

    inputs = [{"name": n, "dim": s.shape[0], "dtypes": list(s.dtypes), "dtypes_lit": repr(tuple(s.dtypes)),
               "norm": s.norm, "doc": s.doc}
              for n, s in f.inputs.items()]
    gates = [{"name": n, "shape": list(g.shape), "shape_lit": repr(tuple(g.shape)), "space": g.space, "param": g.param, "optional": g.optional,
              "default": g.default, "default_is_gate": isinstance(g.default, str), "doc": g.doc}
             for n, g in f.gates.items()]
    params = []
    for n, p in f.params.items():
        params.append({"name": n, "type": p.type, "shape": list(p.shape), "shape_lit": repr(tuple(p.shape)),
                       "positive": p.positive, "doc": p.doc,
                       "default": p.default, "has_default": p.default is not None,
                       "default_expr": dims_expression(p.default, dims) if p.default is not None else None})
    shapes = state_shapes(spec)
    states = [{"name": n, "shape": list(shapes[n][2:]), "doc": s.doc} for n, s in f.states.items()]

    return {
        "header": header,
        "version": __version__,
        "spec_name": name,
        "name": name,
        "spec_hash": spec.hash,
        "source": spec_source(spec),
        "title": f.title or name,
        "paper": f.paper,
        "family": cf.family,
        "description": describe(cf),
        "dims": {d: {"min": s.min, "max": s.max, "multiple_of": s.multiple_of, "doc": s.doc} for d, s in f.dims.items()},
        "dim_names": dims,
        "inputs": inputs,
        "gates": gates,
        "gate_order": _gate_order(spec),
        "gates_by_name": {g["name"]: g for g in gates},
        "params": params,
        "states": states,
        "state_order": state_order,
        "signature": sig,
        "signature_text": ", ".join(a["text"] for a in sig),
        "arg_names": [a["name"] for a in sig],
        "kernel": kmap,
        "ksig": kernel_signature(cf.family),
        "carry": carry_rules(cf),
        "chunk_size": f.chunk_size,
        "backends": backends,
        "chunk_fn": f"chunk_{name}",
        "recurrent_fn": f"fused_recurrent_{name}",
        "fla_chunk": f.fla.chunk,
        "fla_recurrent": f.fla.fused_recurrent,
        "layer": {"class_name": f.layer.class_name, "conv_size": f.layer.conv_size,
                  "output_gate": f.layer.output_gate, "doc": f.layer.doc},
        "layer_class": f.layer.class_name,
        "has_layer": has_layer,
        "spec_data": literal(data),
        "canonical": literal(cf.to_dict()),
        "canonical_dict": cf.to_dict(),
        "spec_raw": data,
        "literal": literal,
    }
