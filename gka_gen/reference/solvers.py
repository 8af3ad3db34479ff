"""Solvers of (H + Diag(lam)) x = q, batched over [b, H]; differentiable by unrolling.

H [b, H, K, K] symmetric PSD; lam [b, H, K] > 0 (the diagonal of the ridge term);
q [b, H, K]. mu, L [b, H]: spectrum bounds of A = H + Diag(lam), used by Chebyshev only.
``iters`` is the number of matrix-vector products with A.
"""
from __future__ import annotations

import torch


def _matvec(H, lam, x):
    return torch.einsum("bhij,bhj->bhi", H, x) + lam * x


def exact(H, lam, q, *, iters=None, mu=None, L=None):
    A = H + torch.diag_embed(lam)
    return torch.linalg.solve(A, q.unsqueeze(-1)).squeeze(-1)


def chebyshev(H, lam, q, *, iters, mu, L):
    """DESIGN.md's recurrence. x_0 = 2 q/(L+mu) costs no product; x_n, n = 1..iters, one each.

    x_{-1} = 0, w_0 = 2; w_n = 4/(4 - rho^2 w_{n-1});
    x_n = x_{n-1} - (2 w_n/(L+mu)) (A x_{n-1} - q) + (w_n - 1)(x_{n-1} - x_{n-2}).
    Only the bounds enter the coefficients (no inner products), which is the point of it.
    """
    s = (L + mu)[..., None]
    rho2 = ((L - mu)[..., None] / s) ** 2
    x_prev, x = torch.zeros_like(q), 2 * q / s
    w = torch.full_like(s, 2.0)
    for _ in range(iters):
        w = 4 / (4 - rho2 * w)
        x, x_prev = x - (2 * w / s) * (_matvec(H, lam, x) - q) + (w - 1) * (x - x_prev), x
    return x


def cg(H, lam, q, *, iters, mu=None, L=None):
    """Conjugate gradient from the Jacobi guess x0 = q / (diag(H) + lam), as MesaNet does.

    A step runs only while the residual is above rounding level (||r|| > tol ||q||); after
    that x is frozen. Without this, steps past convergence divide noise by noise
    (r^T r / p^T A p with both ~1e-32): harmless forward, but autograd through them yields
    gradients of 1e30 or NaN. Freezing changes x by at most a rounding-level residual.
    """
    tol2 = (CG_RTOL[q.dtype] ** 2) * (q * q).sum(-1)
    x = q / (torch.diagonal(H, dim1=-2, dim2=-1) + lam)
    r = q - _matvec(H, lam, x)
    p, rr = r, (r * r).sum(-1)
    for _ in range(iters):
        on = rr > tol2
        Ap = _matvec(H, lam, p)
        a = _masked_div(rr, (p * Ap).sum(-1), on)[..., None]
        x, r = x + a * p, r - a * Ap
        rr_new = (r * r).sum(-1)
        p = r + _masked_div(rr_new, rr, on)[..., None] * p
        rr = torch.where(on, rr_new, rr)
    return x


def _masked_div(num, den, on):
    # num / den where on, else 0; the untaken branch divides by 1 so its (zero) cotangent
    # never meets an infinite derivative (0 * inf = NaN).
    return torch.where(on, num / torch.where(on, den, torch.ones_like(den)), torch.zeros_like(num))


# Relative residual at which CG counts as converged: a few ulps (K-independent on purpose:
# the forward result must equal plain CG to rounding, so the tests can compare at K steps).
CG_RTOL = {torch.float64: 1e-14, torch.float32: 1e-6, torch.bfloat16: 1e-2, torch.float16: 1e-3}


SOLVERS = {"exact": exact, "chebyshev": chebyshev, "cg": cg}


class _ImplicitSolve(torch.autograd.Function):
    """x = solve(H, lam, q) forward; the backward of the *exact* solution at that x.

    This is what the generated kernels compute (DESIGN.md: iterates are never stored): with
    A = H + Diag(lam) symmetric, dq = A^{-1} dx is one more run of the same solver on dx, and
    dH = -dq x^T, dlam = -dq * x (the lam path to ||H||_F is then ordinary autograd). mu and L
    are the solver's tuning only: the exact solution does not depend on them.
    """

    @staticmethod
    def forward(ctx, H, lam, q, mu, L, solve, iters):
        x = solve(H, lam, q, iters=iters, mu=mu, L=L)
        ctx.save_for_backward(H, lam, x, mu, L)
        ctx.solve, ctx.iters = solve, iters
        return x

    @staticmethod
    def backward(ctx, dx):
        H, lam, x, mu, L = ctx.saved_tensors
        dq = ctx.solve(H, lam, dx, iters=ctx.iters, mu=mu, L=L)
        return -dq[..., :, None] * x[..., None, :], -dq * x, dq, None, None, None, None


def implicit(solve):
    """``solve`` with the implicit (exact-solution) gradient instead of unrolled autograd."""

    def run(H, lam, q, *, iters, mu=None, L=None):
        return _ImplicitSolve.apply(H, lam, q, mu, L, solve, iters)

    return run
