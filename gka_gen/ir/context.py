"""What the kernel templates are told, read off the forward IR graph (not the spec).

The family is decided by the ops present (a solve op means the ridge family), each flag by an
op's attributes or the presence of an op or a connected port, so the IR is the one source of
truth for the kernels.
"""
from __future__ import annotations

from .core import IRError, Program
from .ops import SOLVER_OF_KIND

BACKENDS = ("triton", "tilelang")


def _solve_op(fwd):
    ops = [n for n in fwd.ops() if fwd.node(n)["kind"] in SOLVER_OF_KIND]
    if len(ops) > 1:
        raise IRError(f"more than one solve op in the forward graph: {ops}")
    return ops[0] if ops else None


def ir_family(program: Program) -> str:
    return "ridge" if _solve_op(program.forward) else "linear"


def template_dir(program: Program, backend: str) -> str:
    if backend not in BACKENDS:
        raise IRError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
    return f"{backend}/{ir_family(program)}"


def _scan(fwd, state_role: str | None = None):
    scans = [n for n in fwd.of_kind("state_scan")
             if state_role is None or fwd.node(n)["attrs"].get("state_role") == state_role]
    if len(scans) != 1:
        raise IRError(f"expected one {state_role or ''} state_scan, found {scans}")
    return fwd.node(scans[0])


def template_context(program: Program, backend: str) -> dict:
    template_dir(program, backend)  # validates the backend
    fwd = program.forward
    base = {"spec_name": program.name, "header": program.header()}
    solve = _solve_op(fwd)
    if solve is None:
        scan = _scan(fwd)
        return {"decay": scan["attrs"]["decay"], "delta": bool(fwd.of_kind("tri_solve")), **base}
    s = fwd.node(solve)
    cov, val = _scan(fwd, "cov"), _scan(fwd, "value")
    return {
        "decay_h": cov["attrs"]["decay"],
        "decay_u": val["attrs"]["decay"],
        "input_beta": "beta" in cov["inputs"],
        "lam_rule": s["attrs"]["lam_rule"],
        "solver": SOLVER_OF_KIND[s["kind"]],
        "mix": bool(fwd.of_kind("alpha_mix")),
        **base,
    }
