"""The chunk-level IR: canonical form -> forward/backward graphs of ops -> fused kernels.

    program = lower(spec, cf)            # lowering, shape inference, autodiff, fusion, schedule
    program.template_dir("triton")       # "triton/linear" | "triton/ridge" (tilelang likewise)
    program.template_context("triton")   # what the kernel templates are rendered with
    program.cost()                       # symbolic FLOPs / bytes per op, kernel, direction
    format_program(program), to_dot(program), to_mermaid(program), draw_png(program, path)

The compiler core never imports torch.
"""
from __future__ import annotations

from .. import __version__
from ..spec import Spec
from ..symbolic.canonical import CanonicalForm, describe
from .autodiff import ADJOINTS, derive_backward
from .context import ir_family
from .core import Graph, IRError, Kernel, Program
from .lower import RULES, lower_forward
from .ops import OP_KINDS
from .passes import FUSION, cost, fuse, infer_shapes
from .render import draw_png, format_program, to_dot, to_mermaid

__all__ = ["lower", "format_program", "to_dot", "to_mermaid", "draw_png", "Program", "Graph", "Kernel", "IRError",
           "OP_KINDS", "RULES", "ADJOINTS", "FUSION", "cost"]


def lower(spec: Spec, cf: CanonicalForm) -> Program:
    """Lower a canonical form to a Program: forward graph, derived backward graph, kernels."""
    fwd = lower_forward(spec, cf)
    infer_shapes(fwd)
    bwd = derive_backward(fwd)
    infer_shapes(bwd)
    program = Program(name=spec.name, family=cf.family, spec_hash=spec.hash, version=__version__,
                      description=describe(cf), chunk_size=spec.file.chunk_size, forward=fwd, backward=bwd)
    family = ir_family(program)
    if family != cf.family:
        raise IRError(f"the IR of {spec.name} lowered to the {family} family, the canonical form says {cf.family}")
    program.kernels = {d: fuse(g, family) for d, g in program.graphs.items()}
    return program
