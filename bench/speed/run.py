"""python -m bench speed: forward and forward+backward time of our generated kernels beside
flash-linear-attention 0.6.0 and causal SDPA, in one process on one GPU.

    python -m bench speed                          # full run: T 2048..16384 (B·T = 16384), K = V = 128 and 64
    python -m bench speed --compile-workers 12     # compile every kernel in 12 processes first
    python -m bench speed --quick                  # T 2048 and 8192, K = V = 128, shorter timing
    python -m bench speed --device cpu --quick     # smoke test of the harness: tiny shapes, reference backend

Each row: median ms (fwd, fwd+bwd), time / the matching fla op's, achieved TFLOP/s and GB/s
(models in flops.py), ns per token, peak memory of fwd+bwd. JSON, markdown and PNG are
rewritten under --out after every row, so a run stopped early keeps what it measured; one
failing op (compile error, out of resources, OOM) becomes an error row and the rest go on.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.metadata
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import torch

from .. import tuned
from . import calls, measure, report
from .flops import RIDGE, flops, hbm_bytes
from .plan import FLA_OP, K_FULL, OURS, T_FULL, TOKENS, build_plan

ROOT = Path(__file__).resolve().parents[2]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# (T, K, H, tokens, rep_ms) by (device, quick). On CPU the harness only proves itself (the
# reference backend is a per-token loop), so its shapes are tiny whatever --quick says.
DEFAULTS = {
    ("cuda", False): dict(T=T_FULL, K=K_FULL, H=16, tokens=TOKENS, rep_ms=200),
    ("cuda", True): dict(T=(2048, 8192), K=(128,), H=16, tokens=TOKENS, rep_ms=50),
    ("cpu", False): dict(T=(32, 64), K=(16,), H=1, tokens=64, rep_ms=0),
    ("cpu", True): dict(T=(32, 64), K=(16,), H=1, tokens=64, rep_ms=0),
}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    p.add_argument("--quick", action="store_true", help="fewer shapes, shorter timing")
    p.add_argument("--ops", nargs="+", default=[*OURS, "sdpa"], choices=[*OURS, "sdpa"],
                   help="our specs (each brings its fla op) and sdpa")
    p.add_argument("--backends", nargs="+", choices=["triton", "tilelang", "reference"],
                   help="our backends (default: triton tilelang on CUDA, reference on CPU); "
                        "ones a package lacks are skipped with a note")
    p.add_argument("--T", nargs="+", type=int, help="sequence lengths")
    p.add_argument("--K", nargs="+", type=int, help="head dims (K = V)")
    p.add_argument("--H", type=int, help="heads")
    p.add_argument("--tokens", type=int, help="B·T, the same at every T (B = tokens / T)")
    p.add_argument("--ridge-iters", type=int, default=10,
                   help="GKA Chebyshev = MesaNet CG = fla chunk_mesa_net CG iterations")
    p.add_argument("--dtype", choices=list(DTYPES), help="q/k/v dtype (default bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--impls", nargs="+", default=["ours", "fla"], choices=["ours", "fla"],
                   help="whose rows of each spec in --ops: ours, fla's, or both")
    p.add_argument("--no-fla", action="store_true", help="leave out flash-linear-attention's rows")
    p.add_argument("--warmup-ms", type=int, default=25)
    p.add_argument("--rep-ms", type=int, help="do_bench time budget per measurement")
    p.add_argument("--compile-workers", type=int, default=0,
                   help="first run every op once at every shape in N processes, to compile in parallel")
    p.add_argument("--warm-only", action="store_true", help="run each row once (compile, autotune) and stop")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--stem", help="output file name without extension (default speed_<gpu>_K<dims>[_quick])")
    p.add_argument("--merge", type=Path, metavar="JSON",
                   help="an earlier run's JSON (same GPU, dtype, iterations) whose rows at shapes this run does "
                        "not measure are kept: one file for a grid measured over several commands (default "
                        "stem: that file's)")
    a = p.parse_args(argv)
    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    for key, val in DEFAULTS[(a.device, a.quick)].items():
        if getattr(a, key) is None:
            setattr(a, key, list(val) if isinstance(val, tuple) else val)
    a.backends = a.backends or (["triton", "tilelang"] if a.device == "cuda" else ["reference"])
    a.dtype = a.dtype or ("bf16" if a.device == "cuda" else "fp32")
    return a


def _fla() -> tuple[str | None, str]:
    """(fla version or None, note). Imported here only: fla is a benchmark-only dependency."""
    try:
        import fla
        import fla.ops  # noqa: F401 - the ops themselves must import, not only the package
    except Exception as e:  # noqa: BLE001 - any failure means: no fla rows, say why
        return None, f"fla rows skipped: fla is not importable ({type(e).__name__}: {e})"
    note = f"fla {fla.__version__} from {Path(fla.__file__).parent}"
    if fla.__version__ != "0.6.0":
        note += " (the issue asks for 0.6.0)"
    return fla.__version__, note


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


class Inputs:
    """The inputs of the last (spec, shape): our row and fla's row use the very same tensors."""

    def __init__(self, dtype: torch.dtype, device: str):
        self.dtype, self.device, self.key, self.args = dtype, device, None, None

    def get(self, case) -> dict:
        key = (case.spec, case.B, case.T, case.H, case.K, case.V)
        if key != self.key:
            self.key, self.args = None, None  # free the old ones before drawing the new
            self.args = calls.make_case_inputs(case, dtype=self.dtype, device=self.device)
            self.key = key
        return self.args


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_case(case, inputs: Inputs, a, *, timed: bool) -> dict:
    """One row: run fwd+bwd once (compiles and autotunes), then, if `timed`, measure it."""
    row = {**case.key(), "dtype": a.dtype, "num_iter": a.ridge_iters if case.spec in RIDGE else None}
    t0 = time.time()
    try:
        args = inputs.get(case)
        leaves = {n: t for n, t in args.items() if isinstance(t, torch.Tensor) and t.requires_grad}
        fwd = calls.forward_callable(case, args, num_iter=a.ridge_iters)
        do = torch.randn_like(fwd())

        def step():
            return torch.autograd.grad(fwd(), list(leaves.values()), do, allow_unused=True)

        # The first call compiles (or loads from Triton's cache) and autotunes: never timed.
        grads = step()
        _sync(a.device)
        row["no_grad_for"] = [n for n, g in zip(leaves, grads) if g is None]
        del grads
        if timed:
            row.update(measure.peak_memory(step, device=a.device))
            tf = measure.time_ms(fwd, device=a.device, warmup_ms=a.warmup_ms, rep_ms=a.rep_ms)
            tb = measure.time_ms(step, device=a.device, warmup_ms=a.warmup_ms, rep_ms=a.rep_ms)
            shape = dict(B=case.B, T=case.T, H=case.H, K=case.K, V=case.V)
            fl = flops(case.spec, **shape, num_iter=a.ridge_iters)
            by = hbm_bytes(case.spec, **shape, elem=DTYPES[a.dtype].itemsize)
            for mode, t in (("fwd", tf), ("fwdbwd", tb)):
                row[f"{mode}_ms"], row[f"{mode}_ms_p20"], row[f"{mode}_ms_p80"] = t["median"], t["p20"], t["p80"]
                row[f"{mode}_tflops"] = fl[mode] / t["median"] / 1e9
                row[f"{mode}_gbs"] = by[mode] / t["median"] / 1e6
                row[f"{mode}_ns_per_token"] = t["median"] * 1e6 / (case.B * case.T)
            row["flops"], row["bytes"] = fl, by
    except Exception as e:  # noqa: BLE001 - recorded as an error row; the other rows still run
        row["error"] = f"{type(e).__name__}: {e}"[:1000]
        if a.device == "cuda":
            torch.cuda.empty_cache()
    row["wall_s"] = round(time.time() - t0, 2)
    return row


def warm_in_workers(a) -> float:
    """Run each (spec, implementation, K) group once at every T in `--compile-workers` processes; return seconds.

    Triton's on-disk cache (TRITON_CACHE_DIR, default ~/.triton/cache) is shared by every
    process and written atomically (temp file + rename), so kernels compiled here are loaded,
    not compiled, by the timed pass. A group holds one implementation of one spec at one K,
    at every T, so a worker compiles each of its kernels once. FLA_CACHE_RESULTS=0 keeps
    fla's autotuner from saving the configs it picked while other workers loaded the GPU: the
    timed pass re-tunes on an idle GPU from already compiled binaries. SDPA (precompiled in
    torch) needs no warming.
    """
    impls = [i for i in a.impls if i == "ours" or (i == "fla" and not a.no_fla and a.device == "cuda")]
    groups = sorted({(s, i, K) for s in a.ops if s != "sdpa" for i in impls for K in a.K
                     if i == "ours" or s in FLA_OP}, key=lambda g: (g[1] != "fla", g[0] not in RIDGE, g))
    common = ["--device", a.device, "--T", *map(str, a.T), "--H", str(a.H), "--tokens", str(a.tokens),
              "--ridge-iters", str(a.ridge_iters), "--dtype", a.dtype, "--backends", *a.backends]
    env = {**os.environ, "FLA_CACHE_RESULTS": "0"}

    def one(group):
        spec, impl, K = group
        cmd = [sys.executable, "-m", "bench", "speed", "--warm-only", "--ops", spec, "--impls", impl, "--K", str(K),
               *common]
        t0 = time.time()
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        return group, p.returncode, time.time() - t0, p.stdout + p.stderr

    t0 = time.time()
    print(f"warm-up: {len(groups)} groups in {a.compile_workers} processes", flush=True)
    with ThreadPoolExecutor(a.compile_workers) as ex:
        for fut in as_completed([ex.submit(one, g) for g in groups]):
            (spec, impl, K), rc, secs, log = fut.result()
            errors = [ln for ln in log.splitlines() if "error" in ln.lower()]
            print(f"  warm {spec:15s} {impl:4s} K={K:<4d} {secs:6.0f}s rc={rc}" + "".join(f"\n    {e}" for e in errors[:5])
                  + (f"\n{log[-2000:]}" if rc else ""), flush=True)
    return time.time() - t0


def merge_rows(path: Path, want: dict, plan) -> tuple[list[dict], list[dict]]:
    """(rows, record) of the earlier run at ``path``: its rows at shapes ``plan`` does not measure,
    and the runs they came from. A run whose gpu, dtype or ridge_iters differ from ``want`` is refused
    (before any compile)."""
    try:
        prev = json.loads(path.read_text())
        pm, prev_rows = prev["meta"], prev["rows"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"--merge {path}: not a `bench speed` JSON ({type(e).__name__}: {e})") from None
    for field, value in want.items():
        if pm.get(field) != value:
            raise SystemExit(f"--merge {path}: its {field} is {pm.get(field)!r}, this run's {value!r}")
    shapes = {(c.K, c.T, c.B, c.H) for c in plan}
    kept = [r for r in prev_rows if (r["K"], r["T"], r["B"], r["H"]) not in shapes]
    return kept, [{"command": pm["command"], "date": pm["date"], "rows": len(kept)}, *pm.get("merged", [])]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device (use --device cpu for the smoke run)")
    notes = []
    backends = {}
    for spec in (s for s in a.ops if s != "sdpa" and "ours" in a.impls):
        backends[spec], skipped = calls.ours_available_backends(spec, a.backends)
        notes += skipped
    fla_version = None
    if a.no_fla or "fla" not in a.impls:
        notes.append("fla rows left out (--no-fla or --impls)")
    elif a.device != "cuda":
        notes.append("fla rows skipped: fla's kernels need CUDA")
    else:
        fla_version, note = _fla()
        notes.append(note)
    plan = build_plan(ops=a.ops, backends=backends, Ts=a.T, Ks=a.K, H=a.H, tokens=a.tokens,
                      fla=fla_version is not None, device=a.device)
    inputs = Inputs(DTYPES[a.dtype], a.device)
    gpu = torch.cuda.get_device_name() if a.device == "cuda" else f"cpu ({platform.processor() or platform.machine()})"
    kept, merged = merge_rows(a.merge, {"gpu": gpu, "dtype": a.dtype, "ridge_iters": a.ridge_iters}, plan) \
        if a.merge else ([], [])

    if a.warm_only and not a.compile_workers:
        for i, case in enumerate(plan, 1):
            row = run_case(case, inputs, a, timed=False)
            print(f"[{i}/{len(plan)}] warm {case.name} {case.backend} K={case.K} T={case.T}: "
                  f"{row.get('error', 'ok')} ({row['wall_s']:.0f}s)", flush=True)
        return 0
    warm_s = warm_in_workers(a) if a.compile_workers else None
    if a.warm_only:
        return 0

    if a.device == "cuda":
        notes += [tuned.tuned_note(spec, gpu) for spec in backends]
    import triton

    meta = {
        "gpu": gpu, "torch": torch.__version__, "triton": triton.__version__, "fla": fla_version,
        "tilelang": _dist_version("tilelang"), "python": platform.python_version(),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": "python -m bench speed " + shlex.join(argv),
        "device": a.device, "dtype": a.dtype, "ridge_iters": a.ridge_iters,
        "shapes": f"B·T = {a.tokens} tokens at every T (B = {a.tokens}/T), T in {a.T}, H = {a.H}, K = V in {a.K}",
        "timer": ("triton.testing.do_bench, L2 cleared before each call, median of the calls in "
                  f"{a.rep_ms} ms after {a.warmup_ms} ms warm-up; forward timed with autograd recording, as in training"
                  if a.device == "cuda" else "time.perf_counter, median of 3 calls after 1"),
        "peaks_datasheet": measure.datasheet_peaks(gpu) if a.device == "cuda" else None,
        "peaks_measured": measure.measured_peaks() if a.device == "cuda" else None,
        "env": {k: v for k, v in os.environ.items() if k.startswith(("TRITON_", "FLA_", "GKA_GEN_", "CUDA_VISIBLE"))},
        "compile_workers": a.compile_workers, "warm_up_s": warm_s, "notes": notes,
        **({"merged": merged} if merged else {}),
    }
    default_stem = (f"speed_{re.sub(r'[^A-Za-z0-9]+', '_', gpu).strip('_')}_K{'-'.join(map(str, a.K))}"
                    + ("_quick" if a.quick else ""))
    stem = a.stem or (a.merge.stem if a.merge else default_stem)
    a.out.mkdir(parents=True, exist_ok=True)
    for n in notes:
        print("note:", n, flush=True)
    rows = list(kept)
    report.write_all(a.out, stem, meta, rows, png=False)  # the run's metadata and notes, before its first row
    for i, case in enumerate(plan, 1):
        row = run_case(case, inputs, a, timed=True)
        rows.append(row)
        rows.sort(key=lambda r: (-r["K"], r["T"]))  # merged runs: shapes in plan order (stable within one)
        # JSON and markdown after every row, so a run cut short keeps its rows; the plot once a shape is done.
        shape_done = i == len(plan) or (plan[i].K, plan[i].T) != (case.K, case.T)
        report.write_all(a.out, stem, meta, rows, png=shape_done)
        result = (f"fwd {row['fwd_ms']:8.3f} ms  fwd+bwd {row['fwdbwd_ms']:8.3f} ms" if "error" not in row
                  else f"ERROR {row['error'][:200]}")
        print(f"[{i:3d}/{len(plan)}] {case.name:28s} {case.backend:9s} K={case.K:<4d} T={case.T:<6d} B={case.B:<3d} "
              f"{result}  ({row['wall_s']:.1f}s)", flush=True)
    print(f"wrote {a.out / stem}.json/.md/.png", flush=True)
    return 0
