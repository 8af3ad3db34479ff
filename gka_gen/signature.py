"""The functional API of a spec's op: argument order, shapes, defaults (fla-compatible).

Order is fla's: q, k, v, the gates in spec order, the params in spec order, then
initial_state, output_final_state, cu_seqlens. One place decides it, so the reference,
the generated wrappers and the docs cannot disagree.
"""
from __future__ import annotations

from dataclasses import dataclass

from .spec import Spec


@dataclass(frozen=True)
class Arg:
    name: str
    kind: str  # "input" | "gate" | "param" | "option"
    shape: tuple[str, ...]  # e.g. ("B", "T", "H", "K"); () for python scalars
    required: bool
    default: object = None  # number, gate name or dims expression (see spec), or None
    doc: str = ""


def op_signature(spec: Spec) -> list[Arg]:
    f = spec.file
    args = [Arg(n, "input", ("B", "T", "H", *s.shape), True, doc=s.doc) for n, s in f.inputs.items()]
    for n, g in f.gates.items():
        args.append(Arg(n, "gate", ("B", "T", "H", *g.shape), not g.optional, g.default, g.doc))
    for n, p in f.params.items():
        shape = ("H", *p.shape) if p.type == "head_tensor" else ()
        args.append(Arg(n, "param", shape, p.type == "head_tensor" or p.default is None, p.default, p.doc))
    args += [
        Arg("initial_state", "option", (), False),
        Arg("output_final_state", "option", (), False, False),
        Arg("cu_seqlens", "option", (), False),
    ]
    return args


def state_shapes(spec: Spec) -> dict[str, tuple[str, ...]]:
    """Per-sequence state shapes ``[N, H, *state]`` in spec order."""
    return {n: ("N", "H", *s.shape) for n, s in spec.file.states.items()}
