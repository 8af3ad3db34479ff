"""Forward and forward+backward time of each variant's chunked op across sequence lengths.

On CUDA the generated Triton kernels are timed with triton.testing.do_bench (medians of
CUDA-event timings, L2 flushed between runs). On CPU the op runs its reference backend (a
token loop in plain torch) and is timed with perf_counter: that measures the recurrences'
cost in torch, not kernel speed, and the report says so.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from ..testing import make_inputs
from .variants import Variant


@dataclass(frozen=True)
class SpeedSetup:
    seq_lens: tuple[int, ...]
    batch: int
    heads: int
    head_dim: int
    dtype: torch.dtype
    backend: str
    reps: int  # CPU only: timed repetitions after one warm-up (do_bench picks its own on CUDA)


def _median_ms(fn, grads, device: str, reps: int) -> float:
    if device == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, grad_to_none=grads, return_mode="median"))
    fn()
    times = []
    for _ in range(reps):
        for g in grads:
            g.grad = None
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def time_variant(v: Variant, setup: SpeedSetup, device: str) -> list[dict]:
    rows = []
    for T in setup.seq_lens:
        row = {"variant": v.name, "seq_len": T}
        try:
            args = make_inputs(v.spec, B=setup.batch, T=T, H=setup.heads, K=setup.head_dim, V=setup.head_dim,
                               dtype=setup.dtype, device=device, seed=0, requires_grad=True)
            grads = [a for a in args.values() if isinstance(a, torch.Tensor) and a.requires_grad]
            with torch.no_grad():
                do = torch.randn_like(v.chunk(**args, backend=setup.backend)[0])

            def fwd():
                with torch.no_grad():
                    v.chunk(**args, backend=setup.backend)

            def fwd_bwd():
                v.chunk(**args, backend=setup.backend)[0].backward(do)

            row["fwd_ms"] = _median_ms(fwd, grads, device, setup.reps)
            row["fwd_bwd_ms"] = _median_ms(fwd_bwd, grads, device, setup.reps)
        except Exception as e:  # noqa: BLE001 - one variant failing at one size must not hide the rest
            row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        rows.append(row)
    return rows
