"""`reference_op`: the naive recurrent reference of any spec, interpreted from its canonical form.

For each token t (in order, vectorised over batch rows and heads): every state takes one
canonical update step (`state.state_step`), then the readout reads the *updated* states
(`readout.readout`). Packed sequences (cu_seqlens) are independent scans, each from its own
initial state. There is no per-variant code: the spec's `CanonicalForm` drives everything.
"""
from __future__ import annotations

import torch

from ..spec import Spec
from ..symbolic.canonical import CanonicalForm, canonicalize
from .binding import Call, Segment, bind, python_signature
from .readout import readout
from .solvers import SOLVERS, implicit
from .state import state_step


def reference_op(spec: Spec, cf: CanonicalForm | None = None, *, solver: str | None = None,
                 implicit_grad: bool = False):
    """The functional API of ``spec`` as a plain-torch recurrent loop.

    Returns ``f(q, k, v, <gates>, <params>, initial_state=None, output_final_state=False,
    cu_seqlens=None) -> (o, final_state)`` with exactly `op_signature(spec)`'s arguments.
    ``solver`` ("exact" | "chebyshev" | "cg") overrides the spec's solver of a ridge readout
    (ignored when the spec has no solve); the iteration count stays the spec's (``iters``,
    an int or the int param the caller passes). ``implicit_grad`` differentiates the ridge
    solve implicitly (the exact solution's gradient at the iterate, as the kernels do) instead
    of unrolling the solver's iterations through autograd.
    """
    cf = cf if cf is not None else canonicalize(spec)
    ro = cf.readout
    if solver is not None and solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; expected one of {sorted(SOLVERS)}")
    method = (solver or ro.solver) if ro.kind == "ridge" else None
    solve = SOLVERS[method] if method else None
    if solve is not None and implicit_grad:
        solve = implicit(solve)
    sig = python_signature(spec)

    def op(*args, **kwargs):
        call = bind(spec, sig, args, kwargs)
        iters = 0
        if ro.kind == "ridge":
            iters = call.params[ro.iters] if isinstance(ro.iters, str) else int(ro.iters)
        outs, finals = [], []
        for seg in call.segments:
            o, fin = _scan(cf, call, seg, solve, iters)
            outs.append(o)
            finals.append(fin)
        o = torch.cat(outs, dim=1).to(call.out_dtype)
        if not call.output_final_state:
            return o, None
        final = tuple(torch.cat([f[i] for f in finals], dim=0) for i in range(len(cf.states)))
        return o, final[0] if len(final) == 1 else final

    op.__signature__ = sig
    op.__name__ = op.__qualname__ = f"reference_{spec.name}"
    op.__doc__ = f"Naive recurrent reference of {spec.name} (solver: {method or 'none'}); returns (o, final_state)."
    return op


def _scan(cf: CanonicalForm, call: Call, seg: Segment, solve, iters: int):
    tokens = {n: x[seg.b, seg.t] for n, x in call.tokens.items()}
    # exp of each decay gate once per sequence (log-space gates enter the math as exp(g)).
    rates = {s.decay_gate: torch.exp(tokens[s.decay_gate]) for s in cf.states if s.decay_gate}
    states = {s.name: x[seg.n] for s, x in zip(cf.states, call.initial)}
    b, T = tokens[cf.readout.query].shape[:2]
    outs = []
    for t in range(T):
        tok = {n: x[:, t] for n, x in tokens.items()}
        rate = {n: x[:, t] for n, x in rates.items()}
        states = {s.name: state_step(s, states[s.name], tok, rate) for s in cf.states}
        outs.append(readout(cf.readout, states, tok, call.params, solve=solve, iters=iters))
    if outs:
        o = torch.stack(outs, dim=1)
    else:  # an empty packed sequence: no tokens, and its final state is its initial state
        Vsize = states[cf.readout.state].shape[-1]
        o = torch.zeros(b, 0, call.H, Vsize, dtype=call.dtype, device=states[cf.readout.state].device)
    return o, [states[s.name] for s in cf.states]
