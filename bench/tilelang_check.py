"""GPU check of the TileLang kernels: forward outputs and final states, and (where the package has
chunk_bwd) the gradients of every input and of the initial state, against the spec's fp32
reference and against the Triton backend; their forward (and forward + backward) time beside Triton's.

What the TileLang packages offer is checked (their KERNELS): chunk_fwd and fused_recurrent_fwd
under torch.no_grad(), and gradients through chunk_fwd + chunk_bwd.

    python -m bench tilelang [--specs deltanet kda gka] [--quick] [--shapes 3 4] [--jobs 4] [--out bench/results]

Each spec runs in its own process (--jobs at a time): the first call of every kernel variant
compiles it (lowering plus nvcc, ~15 s), and specs compile independently.

Shapes: B=4 T=4096 H=16 K=V=128 bf16 (the issue's), T=8192 varlen, a ragged T, K=V=80 (not a power
of two) and fp32 inputs. The reference runs on two (batch, head) slices, as in gpu_correctness.
TileLang's matmuls of fp32 tiles are TF32 (docs/backends.md), so fp32 inputs get the bf16 tolerance.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

from bench.gpu_correctness import _err, _flat, _slice, _version, check_spec
from bench.per_spec import run_per_spec
from gka_gen.reference import reference_op
from gka_gen.spec import load_spec
from gka_gen.symbolic.canonical import canonicalize
from gka_gen.testing import make_inputs

ROOT = Path(__file__).resolve().parents[1]
LINEAR = ["deltanet", "gated_deltanet", "kda", "gla"]
RIDGE = ["gka", "mesanet"]  # chunk_fwd, fused_recurrent_fwd, chunk_bwd (K <= 128)
ALL = LINEAR + RIDGE
SHAPES = [
    dict(B=4, T=4096, H=16, K=128, V=128, cu=None, dtype="bf16"),
    dict(B=1, T=8192, H=16, K=128, V=128, cu=[0, 1000, 3001, 3100, 6000, 8192], dtype="bf16"),
    dict(B=2, T=1000, H=4, K=64, V=64, cu=None, dtype="bf16"),  # ragged: 1000 = 15 chunks + 40 rows
    dict(B=2, T=300, H=4, K=80, V=80, cu=None, dtype="bf16"),
    dict(B=1, T=300, H=4, K=64, V=128, cu=[0, 1, 65, 300], dtype="fp32"),
]
QUICK = [dict(B=2, T=300, H=4, K=64, V=64, cu=None, dtype="bf16"),
         dict(B=1, T=500, H=4, K=80, V=80, cu=[0, 100, 233, 500], dtype="bf16")]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def _time_ms(fn, reps=20) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def check(name: str, shape: dict, mode: str, slices=((0, 0), (-1, -1))) -> dict:
    """Max relative errors of TileLang vs the fp32 reference (two slices) and vs Triton (everything)."""
    spec = load_spec(ROOT / "specs" / f"{name}.yaml")
    ref = reference_op(spec, canonicalize(spec))
    pkg = importlib.import_module(f"generated.{name}")
    fn = getattr(pkg, f"{'chunk' if mode == 'chunk' else 'fused_recurrent'}_{name}")
    B, T, H, K, V, cu = (shape[k] for k in ("B", "T", "H", "K", "V", "cu"))
    args = make_inputs(spec, B=B, T=T, H=H, K=K, V=V, dtype=DTYPES[shape["dtype"]], device="cuda",
                       cu_seqlens=cu, initial_state=True)
    with torch.no_grad():
        t0 = time.time()
        o, final = fn(**args, output_final_state=True, backend="tilelang")
        torch.cuda.synchronize()
        first_call_s = time.time() - t0  # includes TileLang's compile of every kernel of the call
        o_tr, final_tr = fn(**args, output_final_state=True, backend="triton")
        errors = {"o vs triton": _err(o, o_tr)}
        errors.update({f"final[{i}] vs triton": _err(a, r) for i, (a, r) in enumerate(zip(_flat(final), _flat(final_tr)))})
        n_seq = len(cu) - 1 if cu else B
        for b, h in slices:
            b, h = (0 if cu else b % B), h % H
            seq = h % n_seq if cu else b
            sub = _slice({k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                          for k, v in args.items()}, b, h, seq if cu else None)
            ro, rfinal = ref(**sub, output_final_state=True)
            lo, hi = (cu[seq], cu[seq + 1]) if cu else (0, T)
            upd = {"o vs reference": _err(o[b:b + 1, lo:hi, h:h + 1], ro)}
            upd.update({f"final[{i}] vs reference": _err(s[seq:seq + 1, h:h + 1], r)
                        for i, (s, r) in enumerate(zip(_flat(final), _flat(rfinal)))})
            for key, val in upd.items():
                errors[key] = max(errors.get(key, 0.0), val)
        ms = {be: _time_ms(lambda be=be: fn(**args, output_final_state=True, backend=be)) for be in ("tilelang", "triton")}
    return {"errors": errors, "first_call_s": round(first_call_s, 1), "fwd_ms": ms}


def kernels(name: str) -> tuple:
    return importlib.import_module(f"generated.{name}.tilelang_kernels").KERNELS


def modes(name: str) -> tuple:
    """The checks the package's kernels allow: forward by chunk_fwd / fused_recurrent_fwd, gradients."""
    have = kernels(name)
    return (("chunk",) if "chunk_fwd" in have else ()) + (("fused_recurrent",) if "fused_recurrent_fwd" in have else ()) \
        + (("chunk_grad",) if "chunk_bwd" in have else ())


def check_grad(name: str, shape: dict, slices=((0, 0), (-1, -1))) -> dict:
    """Gradients through the TileLang chunk_fwd + chunk_bwd: vs the fp32 reference on two slices
    (bench.gpu_correctness.check_spec, which also rechecks o and the final state), and vs Triton's
    gradients everywhere (same inputs, same dO and dht)."""
    B, T, H, K, V, cu = (shape[k] for k in ("B", "T", "H", "K", "V", "cu"))
    dtype = DTYPES[shape["dtype"]]
    t0 = time.time()
    res = check_spec(name, backend="tilelang", B=B, T=T, H=H, K=K, V=V, cu=cu, dtype=dtype, slices=slices)
    first_call_s = time.time() - t0
    errors = {f"{k} vs reference": v for k, v in res["max_rel_err"].items()}
    spec = load_spec(ROOT / "specs" / f"{name}.yaml")
    fn = getattr(importlib.import_module(f"generated.{name}"), f"chunk_{name}")
    args = make_inputs(spec, B=B, T=T, H=H, K=K, V=V, dtype=dtype, device="cuda", cu_seqlens=cu,
                       initial_state=True, requires_grad=True)
    leaves = {k: v for k, v in args.items() if isinstance(v, torch.Tensor) and v.requires_grad and k != "initial_state"}
    leaves.update({f"h0[{i}]": s for i, s in enumerate(_flat(args["initial_state"]))})
    with torch.no_grad():
        o, final = fn(**args, output_final_state=True, backend="triton")
    gen = torch.Generator(device="cuda").manual_seed(1)
    do = torch.randn(o.shape, generator=gen, device="cuda", dtype=o.dtype)
    dht = [torch.randn(s.shape, generator=gen, device="cuda", dtype=s.dtype) for s in _flat(final)]

    def grads(be):
        o, final = fn(**args, output_final_state=True, backend=be)
        return torch.autograd.grad([o, *_flat(final)], list(leaves.values()), [do, *dht], allow_unused=True)

    g_tl, g_tr = grads("tilelang"), grads("triton")
    for key, a, r in zip(leaves, g_tl, g_tr):
        if r is not None:
            errors[f"d{key} vs triton"] = math.inf if a is None else _err(a, r)
    ms = {be: _time_ms(lambda be=be: grads(be)) for be in ("tilelang", "triton")}
    return {"errors": errors, "first_call_s": round(first_call_s, 1), "fwd_bwd_ms": ms}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--specs", nargs="*", default=ALL)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--tol", type=float, default=2e-2)
    p.add_argument("--quick", action="store_true", help="two small shapes (smoke test)")
    p.add_argument("--jobs", type=int, default=4, help="specs checked in parallel processes")
    p.add_argument("--shapes", nargs="*", type=int, metavar="I",
                   help="only these rows of SHAPES (0-based), to finish a run that was cut short")
    a = p.parse_args(argv)
    shapes = QUICK if a.quick else [SHAPES[i] for i in a.shapes] if a.shapes else SHAPES
    a.out.mkdir(parents=True, exist_ok=True)
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": _version("triton"),
            "tilelang": _version("tilelang"), "date": dt.date.today().isoformat(), "python": platform.python_version(),
            "command": "python -m bench tilelang " + " ".join(sys.argv[1:] if argv is None else argv),
            "tolerance": a.tol, "jobs": a.jobs if len(a.specs) > 1 else 1}
    stem = "tilelang_check" + ("_quick" if a.quick else "") + ("" if a.specs == ALL else "_" + "_".join(a.specs))
    stem += "_shapes" + "".join(map(str, a.shapes)) if a.shapes and not a.quick else ""  # never a full run's name
    if a.jobs > 1 and len(a.specs) > 1:
        rows = _in_processes(a)
        (a.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
        (a.out / f"{stem}.md").write_text(_markdown(meta, rows))
        print(f"wrote {a.out / stem}.json/.md")
        return 0 if all(r["pass"] for r in rows) else 1
    rows = []
    for name in a.specs:
        for shape in shapes:
            for mode in modes(name):
                row = {"spec": name, "check": mode, "shape": shape}
                t0 = time.time()
                try:
                    row.update(check_grad(name, shape) if mode == "chunk_grad" else check(name, shape, mode))
                    row["pass"] = max(row["errors"].values()) <= a.tol
                except Exception as e:  # an error row; the other checks still run
                    row.update({"pass": False, "error": f"{type(e).__name__}: {e}"[:1000]})
                row["wall_s"] = round(time.time() - t0, 1)
                rows.append(row)
                errs = row.get("errors", {"x": math.inf})
                over = {k: f"{v:.2e}" for k, v in errs.items() if v > a.tol}  # a log alone must say what failed
                print(f"{name:15s} {mode:15s} {shape} worst={max(errs.values()):.2e} "
                      f"{'PASS' if row['pass'] else 'FAIL ' + str(over)} "
                      f"{row.get('fwd_ms', row.get('fwd_bwd_ms', ''))} {row.get('error') or ''}", flush=True)
                # written after every row: a run cut short keeps what it measured
                (a.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
                (a.out / f"{stem}.md").write_text(_markdown(meta, rows))
    print(f"wrote {a.out / stem}.json/.md")
    return 0 if all(r["pass"] for r in rows) else 1


def _in_processes(a) -> list[dict]:
    return run_per_spec("bench.tilelang_check", a.specs, a.jobs,
                        ["--tol", str(a.tol), "--jobs", "1", *(["--quick"] if a.quick else []),
                         *(["--shapes", *map(str, a.shapes)] if a.shapes else [])],
                        lambda name: {"spec": name, "check": "all", "pass": False,
                                      "error": "the child wrote nothing (see its output)"}, a.out)


def _markdown(meta, rows):
    lines = [f"# TileLang check ({meta['gpu']}, {meta['date']})", "",
             f"torch {meta['torch']}, triton {meta['triton']}, tilelang {meta['tilelang']}. Command: `{meta['command']}`",
             "", f"Tolerance {meta['tolerance']} (max-abs error relative to the reference's max-abs, per tensor).", "",
             "chunk_grad rows: gradients (and o, final state) through chunk_fwd + chunk_bwd; their time is",
             "fwd + bwd." + (f" Timings are indicative only: {meta['jobs']} specs ran at once in parallel processes,"
                             " sharing the GPU (and compiling beside it); `gka-gen autotune --backend all` times"
                             " both backends alone." if meta.get("jobs", 1) > 1 else ""), "",
             "| spec | check | shape | dtype | worst vs reference | worst vs triton | ms tilelang / triton | pass |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r.get("shape")
        if s is None:
            lines.append(f"| {r['spec']} | {r['check']} | | | | | | {'yes' if r['pass'] else 'NO: ' + str(r['error'])} |")
            continue
        errs = r.get("errors", {})
        ref = max((v for k, v in errs.items() if k.endswith("reference")), default=math.inf)
        tri = max((v for k, v in errs.items() if k.endswith("triton")), default=math.inf)
        ms = r.get("fwd_ms") or r.get("fwd_bwd_ms") or {}
        timing = f"{ms['tilelang']:.3f} / {ms['triton']:.3f}" if ms else r.get("error", "")
        shape = f"B={s['B']} T={s['T']} H={s['H']} K={s['K']} V={s['V']}" + (f" cu={s['cu']}" if s["cu"] else "")
        lines.append(f"| {r['spec']} | {r['check']} | {shape} | {s['dtype']} | {ref:.1e} | {tri:.1e} | {timing} | "
                     f"{'yes' if r['pass'] else 'NO'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
