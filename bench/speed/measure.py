"""Timers, peak memory, and the GPU's peak rates the achieved TFLOP/s and GB/s are read against."""
from __future__ import annotations

import gc
import time

import torch

# Dense bf16 tensor-core TFLOP/s (no sparsity) and HBM GB/s from NVIDIA's datasheets, SXM
# parts. Matched by substring of torch.cuda.get_device_name(), longest key first.
DATASHEET = {
    "H200": {"tflops": 989.0, "gbs": 4800.0},
    "H100 PCIe": {"tflops": 756.0, "gbs": 2000.0},
    "H100": {"tflops": 989.0, "gbs": 3350.0},
}


def time_ms(fn, *, device: str, warmup_ms: int, rep_ms: int, cpu_reps: int = 3) -> dict:
    """{"median", "p20", "p80"} milliseconds of fn()."""
    if device == "cuda":
        from triton.testing import do_bench

        # do_bench times each call with CUDA events and clears the L2 cache before it, so a
        # row does not run on inputs left in cache by the previous call.
        p20, med, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.2, 0.5, 0.8])
        return {"median": med, "p20": p20, "p80": p80}
    fn()
    times = []
    for _ in range(cpu_reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    p20, med, p80 = torch.tensor(times, dtype=torch.float64).quantile(torch.tensor([0.2, 0.5, 0.8],
                                                                                    dtype=torch.float64)).tolist()
    return {"median": med, "p20": p20, "p80": p80}


def peak_memory(step, *, device: str) -> dict:
    """Peak allocated memory over one call of step(): in all, and above what was allocated before it.

    The second number is the op's own cost (saved activations, workspace, gradients): the
    inputs are the same tensors for our row and fla's row, so that is where they differ.
    """
    if device != "cuda":
        return {}
    # Garbage left by earlier calls (reference cycles that hold tensors until a collection) would
    # count in the "in all" figure: some rows of the 2026-11-30 runs show 4-16 GB there
    # against 1.6-2 GB above their inputs.
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return {"peak_mem_mib": peak / 2 ** 20, "peak_above_inputs_mib": (peak - before) / 2 ** 20}


def datasheet_peaks(gpu: str) -> dict | None:
    for key in sorted(DATASHEET, key=len, reverse=True):
        if key in gpu:
            return dict(DATASHEET[key])
    return None


def measured_peaks() -> dict:
    """What this GPU reaches on the simplest kernels: a large bf16 matmul and a device copy.

    Datasheet peaks are not reachable in practice (an H200 sustains ~700-790 of its 989 dense
    bf16 TFLOP/s and ~4.3 of its 4.8 TB/s); the report states these beside the datasheet's.
    """
    from triton.testing import do_bench

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    mm_ms = do_bench(lambda: a @ b, warmup=50, rep=300, return_mode="median")
    x = torch.empty(2 ** 30, device="cuda", dtype=torch.uint8)  # 1 GiB: far beyond the L2 cache
    y = torch.empty_like(x)
    cp_ms = do_bench(lambda: y.copy_(x), warmup=50, rep=300, return_mode="median")
    return {"tflops": 2 * n ** 3 / mm_ms / 1e9, "gbs": 2 * x.numel() / cp_ms / 1e6}  # a copy reads and writes
