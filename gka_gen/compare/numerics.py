"""Numerics: each variant's kernels in bf16 and fp32 against its fp64 reference, and the
ridge family's solve (Chebyshev vs CG) in bf16 and fp32.

Kernel error is max |kernel - ref| / max |ref| over the output o and over every input
gradient (for a fixed random cotangent). The inputs are rounded to bf16 once and shared by
every run, so the fp64 reference sees exactly the values each kernel sees and the error is
the kernel's arithmetic, not the rounding of its inputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import solver_study
from ..testing import make_inputs
from .variants import Variant

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass(frozen=True)
class NumericsSetup:
    seq_lens: tuple[int, ...]
    batch: int
    heads: int
    head_dim: int
    backend: str
    seed: int = 0


@dataclass(frozen=True)
class SolverSetup:
    iters: tuple[int, ...]  # residual vs iteration count, at the spec's ridge ratio
    ridge_ratios: tuple[float, ...]  # residual vs condition number, at cond_iters
    cond_iters: int
    systems: int
    K: int
    T: int
    ridge_ratio: float = 0.02
    seed: int = 0


def rel_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.detach().double().cpu(), ref.detach().double().cpu()
    if not bool(a.isfinite().all()):
        return float("inf")
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _cast(args: dict, fn) -> dict:
    out = {}
    for k, a in args.items():
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            out[k] = fn(k, a).detach().requires_grad_(True)
        else:
            out[k] = a
    return out


def _grads(args: dict) -> dict:
    return {k: a.grad for k, a in args.items() if isinstance(a, torch.Tensor) and a.grad is not None}


def kernel_errors(v: Variant, setup: NumericsSetup, device: str) -> list[dict]:
    ref_op = v.reference()
    inputs = set(v.spec.file.inputs)  # q, k, v: run in the compared dtype; gates and params stay fp32
    rows = []
    for T in setup.seq_lens:
        base = make_inputs(v.spec, B=setup.batch, T=T, H=setup.heads, K=setup.head_dim, V=setup.head_dim,
                           dtype=torch.bfloat16, device=device, seed=setup.seed)
        ref_args = _cast(base, lambda k, a: a.double())
        o_ref, _ = ref_op(**ref_args)
        do = torch.randn(o_ref.shape, generator=torch.Generator().manual_seed(setup.seed), dtype=torch.float64)
        do = do.to(device)
        o_ref.backward(do)
        g_ref = _grads(ref_args)
        for dname, dtype in DTYPES.items():
            row = {"variant": v.name, "seq_len": T, "dtype": dname}
            try:
                args = _cast(base, lambda k, a: a.to(dtype) if k in inputs else a.float())
                o, _ = v.chunk(**args, backend=setup.backend)
                o.backward(do.to(o.dtype))
                row["o"] = rel_error(o, o_ref)
                row["grad"] = max(rel_error(g, g_ref[k]) for k, g in _grads(args).items())
            except Exception as e:  # noqa: BLE001 - recorded in the report; the other runs go on
                row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            rows.append(row)
    return rows


def solver_residuals(setup: SolverSetup) -> dict:
    """Chebyshev and CG relative residuals in bf16 and fp32 on GKA-like ridge systems: against
    the iteration count, and against the condition number (swept through the ridge ratio)."""
    sizes = dict(n=setup.systems, K=setup.K, T=setup.T, seed=setup.seed)
    by_iters = _short_dtypes(solver_study.residuals(iters=setup.iters, ridge_ratio=setup.ridge_ratio, **sizes))
    by_cond = []
    for a in setup.ridge_ratios:
        H, lam, _, _ = solver_study.gka_systems(ridge_ratio=a, **sizes)
        eig = torch.linalg.eigvalsh(H + lam[:, None, None] * torch.eye(setup.K, dtype=H.dtype))
        kappa = float((eig[:, -1] / eig[:, 0]).median())
        for r in _short_dtypes(solver_study.residuals(iters=(setup.cond_iters,), ridge_ratio=a, **sizes)):
            by_cond.append({**r, "ridge_ratio": a, "condition": kappa, "bound": (1 + a) / a})
    return {"by_iters": by_iters, "by_cond": by_cond}


def _short_dtypes(rows: list[dict]) -> list[dict]:
    short = {str(t).replace("torch.", ""): name for name, t in DTYPES.items()}
    return [{**r, "dtype": short[r["dtype"]]} for r in rows]
