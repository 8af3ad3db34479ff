"""Naive recurrent torch references, generated from a spec's canonical form.

    from gka_gen.reference import reference_op
    f = reference_op(spec, canonicalize(spec))          # or solver="exact" | "chebyshev" | "cg"
    o, final_state = f(q, k, v, <gates>, <params>, initial_state=None,
                       output_final_state=False, cu_seqlens=None)

Plain tensors in, plain tensors out; differentiable by autograd; fp32 (fp64 if any input
is fp64) whatever the input dtype; o comes back in q's dtype.
"""
from .binding import python_signature
from .op import reference_op
from .solvers import SOLVERS

__all__ = ["reference_op", "python_signature", "SOLVERS"]
