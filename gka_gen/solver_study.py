"""Chebyshev vs CG on GKA's ridge systems, in fp32 and bf16 arithmetic (the demo's comparison).

The paper's claim: Chebyshev needs only the spectrum bounds [lam, lam + ||H||_F], no inner
products, so it stays stable in bf16 where CG's inner products break down. This measures the
relative residual ||(H + lam I) x - q|| / ||q|| (computed in fp64) of both solvers, run in
each dtype, on covariance matrices H_t built like GKA's (decayed sums of unit-key outer
products), against the iteration count.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .reference.solvers import cg, chebyshev


def gka_systems(n: int = 64, K: int = 64, T: int = 256, ridge_ratio: float = 0.02, seed: int = 0):
    """n ridge systems (H_T, lam, q) at the end of a GKA scan of T tokens (fp64)."""
    gen = torch.Generator().manual_seed(seed)
    k = F.normalize(torch.randn(n, T, K, generator=gen, dtype=torch.float64), dim=-1)
    decay = torch.sigmoid(torch.randn(n, T, generator=gen, dtype=torch.float64) + 3)
    H = torch.zeros(n, K, K, dtype=torch.float64)
    for t in range(T):
        H = decay[:, t, None, None] * H + k[:, t, :, None] * k[:, t, None, :]
    q = F.normalize(torch.randn(n, K, generator=gen, dtype=torch.float64), dim=-1)
    fro = H.flatten(1).norm(dim=1)
    return H, ridge_ratio * fro, fro, q


def residuals(iters=(2, 5, 10, 20, 30), dtypes=(torch.float32, torch.bfloat16), **kw) -> list[dict]:
    H, lam, fro, q = gka_systems(**kw)
    K = H.shape[-1]
    A = H + lam[:, None, None] * torch.eye(K, dtype=H.dtype)
    rows = []
    for dtype in dtypes:
        h, lm, f, qq = (x.to(dtype)[:, None] for x in (H, lam, fro, q))  # solvers take [b, H, ...]
        lam_vec = lm[..., None].expand(*lm.shape, K)
        for n in iters:
            for name, solve in (("chebyshev", chebyshev), ("cg", cg)):
                x = solve(h, lam_vec, qq, iters=n, mu=lm, L=lm + f)[:, 0].double()
                r = (torch.einsum("bij,bj->bi", A, x) - q).norm(dim=-1) / q.norm(dim=-1)
                rows.append({"dtype": str(dtype).replace("torch.", ""), "solver": name, "iters": n,
                             "median_residual": float(r.median()), "max_residual": float(r.max()),
                             "nonfinite": int((~torch.isfinite(r)).sum())})
    return rows


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="GKA ridge solve: relative residual ||(H+lam I)x - q||/||q|| (median over 64 systems, K=64)")
    table.add_column("dtype")
    table.add_column("iters")
    table.add_column("chebyshev")
    table.add_column("cg")
    by = {(r["dtype"], r["iters"], r["solver"]): r for r in rows}
    for dtype, n in dict.fromkeys((r["dtype"], r["iters"]) for r in rows):
        cells = [f"{by[dtype, n, s]['median_residual']:.1e}" + (" (NaN)" if by[dtype, n, s]["nonfinite"] else "")
                 for s in ("chebyshev", "cg")]
        table.add_row(dtype, str(n), *cells)
    Console().print(table)
