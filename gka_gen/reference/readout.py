"""One token's output from the current states, for any `ReadoutForm`.

direct:  o = scale * S^T q
ridge:   x = solve(H + Lambda, q),  qm = q + alpha (x - q) (or x),  o = scale * U^T qm
"""
from __future__ import annotations

import torch

from ..symbolic.canonical import ReadoutForm


def readout(ro: ReadoutForm, states: dict[str, torch.Tensor], tok: dict[str, torch.Tensor],
            params: dict[str, object], *, solve, iters: int) -> torch.Tensor:
    q = tok[ro.query]
    if ro.kind == "ridge":
        q = _ridge_query(ro, states[ro.cov_state], q, tok, params, solve, iters)
    o = torch.einsum("bhkv,bhk->bhv", states[ro.state], q)
    return o if ro.scale is None else params[ro.scale] * o


def _ridge_query(ro, H, q, tok, params, solve, iters):
    lam, mu, L, live = ridge_lambda(ro, H, params)
    rhs = q
    if live is not None:
        # Where the solve is undefined (x := 0) the solvers get right-hand side 0 too, so every
        # intermediate is exactly 0 and finite: a discarded branch still carries its (zero)
        # cotangent through the solver, and 0 * inf (e.g. CG's 1/p^T A p near 0) would be NaN.
        rhs = torch.where(live[..., None], q, torch.zeros_like(q))
    x = solve(H, lam, rhs, iters=iters, mu=mu, L=L)
    if live is not None:
        x = torch.where(live[..., None], x, torch.zeros_like(x))
    return x if ro.mix_gate is None else q + tok[ro.mix_gate][..., None] * (x - q)


def frobenius(H: torch.Tensor):
    """(||H||_F, live) with a NaN-free gradient everywhere.

    live = ||H||_F^2 above the dtype's smallest normal number. At H = 0 (before any input,
    or after keys of zeros) sqrt has an infinite derivative and 0 * inf = NaN would poison
    every gradient; so the sqrt sees 1 there (its branch is then discarded by the outer
    where, with gradient exactly 0) and the norm is defined as 0. Norms below sqrt(tiny)
    (~1e-19 in fp32) count as zero too: 1/||H||_F would overflow fp32 there.
    """
    sq = (H * H).sum((-2, -1))
    live = sq > torch.finfo(H.dtype).tiny
    fro = torch.where(live, torch.sqrt(torch.where(live, sq, torch.ones_like(sq))), torch.zeros_like(sq))
    return fro, live


def ridge_lambda(ro: ReadoutForm, H, params):
    """The ridge diagonal lam [b, H, K], Chebyshev bounds mu, L [b, H], and the mask of
    tokens where the solve is defined (None: everywhere).

    fro_ratio:      Lambda = a ||H||_F I;  spectrum of A in [a F, a F + F] (||H||_2 <= F).
                    F = 0 makes A = 0 singular: x is defined as 0 there (live = False);
                    meanwhile the solver runs on the harmless stand-in A = a I (F := 1,
                    H is 0 anyway) so no NaN can appear even in discarded branches.
    channel_param:  Lambda = Diag(lamb[h]);  spectrum in [min lamb, max lamb + F].
                    lamb > 0, so A is invertible even at H = 0: no mask.
    """
    fro, live = frobenius(H)
    K = H.shape[-1]
    if ro.lam_rule == "fro_ratio":
        F = torch.where(live, fro, torch.ones_like(fro))
        lam_s = params[ro.lam_param] * F
        return lam_s[..., None].expand(*lam_s.shape, K), lam_s, lam_s + F, live
    if ro.lam_rule == "channel_param":
        lamb = params[ro.lam_param]  # [H, K]
        lam = lamb.expand(*H.shape[:-2], K)
        return lam, lamb.amin(-1).expand_as(fro), lamb.amax(-1) + fro, None
    raise NotImplementedError(f"lambda rule {ro.lam_rule!r}")
