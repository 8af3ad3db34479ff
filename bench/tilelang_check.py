"""GPU check of the TileLang kernels: forward outputs and final states against the spec's fp32
reference and against the Triton backend, and their forward time beside Triton's.

Only what the TileLang packages have is checked (today: chunk_fwd and fused_recurrent_fwd of the
linear family; no chunk_bwd, so every call runs under torch.no_grad()), plus the one promise about
what they lack: a call that needs a gradient raises NotImplementedError naming chunk_bwd.

    python -m bench tilelang [--specs deltanet kda] [--quick] [--jobs 4] [--out bench/results]

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

from bench.gpu_correctness import _err, _flat, _slice, _version
from gka_gen.reference import reference_op
from gka_gen.spec import load_spec
from gka_gen.symbolic.canonical import canonicalize
from gka_gen.testing import make_inputs

ROOT = Path(__file__).resolve().parents[1]
LINEAR = ["deltanet", "gated_deltanet", "kda", "gla"]
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


def grad_is_refused(name: str) -> str | None:
    """None when a TileLang call that needs a gradient raises NotImplementedError naming chunk_bwd."""
    spec = load_spec(ROOT / "specs" / f"{name}.yaml")
    args = make_inputs(spec, B=1, T=64, H=2, K=64, V=64, dtype=torch.bfloat16, device="cuda", requires_grad=True)
    fn = getattr(importlib.import_module(f"generated.{name}"), f"chunk_{name}")
    try:
        fn(**args, backend="tilelang")
    except NotImplementedError as e:
        return None if "chunk_bwd" in str(e) else f"wrong message: {e}"
    return "no error: a gradient was allowed without a TileLang chunk_bwd"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--specs", nargs="*", default=LINEAR)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--tol", type=float, default=2e-2)
    p.add_argument("--quick", action="store_true", help="two small shapes (smoke test)")
    p.add_argument("--jobs", type=int, default=4, help="specs checked in parallel processes")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": _version("triton"),
            "tilelang": _version("tilelang"), "date": dt.date.today().isoformat(), "python": platform.python_version(),
            "command": "python -m bench tilelang " + " ".join(sys.argv[1:] if argv is None else argv),
            "tolerance": a.tol}
    stem = "tilelang_check" + ("_quick" if a.quick else "") + ("" if a.specs == LINEAR else "_" + "_".join(a.specs))
    if a.jobs > 1 and len(a.specs) > 1:
        rows = _in_processes(a)
        (a.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
        (a.out / f"{stem}.md").write_text(_markdown(meta, rows))
        print(f"wrote {a.out / stem}.json/.md")
        return 0 if all(r["pass"] for r in rows) else 1
    rows = []
    for name in a.specs:
        refused = grad_is_refused(name)
        rows.append({"spec": name, "check": "gradient refused", "pass": refused is None, "error": refused})
        for shape in QUICK if a.quick else SHAPES:
            for mode in ("chunk", "fused_recurrent"):
                row = {"spec": name, "check": mode, "shape": shape}
                t0 = time.time()
                try:
                    row.update(check(name, shape, mode))
                    row["pass"] = max(row["errors"].values()) <= a.tol
                except Exception as e:  # an error row; the other checks still run
                    row.update({"pass": False, "error": f"{type(e).__name__}: {e}"[:1000]})
                row["wall_s"] = round(time.time() - t0, 1)
                rows.append(row)
                worst = max(row.get("errors", {"x": math.inf}).values())
                print(f"{name:15s} {mode:15s} {shape} worst={worst:.2e} {'PASS' if row['pass'] else 'FAIL'} "
                      f"{row.get('fwd_ms', '')} {row.get('error') or ''}", flush=True)
                # written after every row: a run cut short keeps what it measured
                (a.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
                (a.out / f"{stem}.md").write_text(_markdown(meta, rows))
    print(f"wrote {a.out / stem}.json/.md")
    return 0 if all(r["pass"] for r in rows) else 1


def _in_processes(a) -> list[dict]:
    """Each spec in a child process (a.jobs at a time) writing to a scratch folder; their rows, in spec order."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        pending, running = list(a.specs), []
        while pending or running:
            while pending and len(running) < a.jobs:
                name = pending.pop(0)
                cmd = [sys.executable, "-m", "bench.tilelang_check", "--specs", name, "--out", f"{tmp}/{name}",
                       "--tol", str(a.tol), "--jobs", "1", *(["--quick"] if a.quick else [])]
                running.append(subprocess.Popen(cmd, cwd=ROOT))
            running[0].wait()
            running = [r for r in running if r.poll() is None]
        rows = []
        for name in a.specs:
            found = list(Path(tmp, name).glob("*.json"))
            rows += json.loads(found[0].read_text())["results"] if found else [
                {"spec": name, "check": "all", "pass": False, "error": "the child wrote nothing (see its output)"}]
    return rows


def _markdown(meta, rows):
    lines = [f"# TileLang forward check ({meta['gpu']}, {meta['date']})", "",
             f"torch {meta['torch']}, triton {meta['triton']}, tilelang {meta['tilelang']}. Command: `{meta['command']}`",
             "", f"Tolerance {meta['tolerance']} (max-abs error relative to the reference's max-abs, per tensor).", "",
             "| spec | check | shape | dtype | worst vs reference | worst vs triton | fwd ms tilelang / triton | pass |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r.get("shape")
        if s is None:
            lines.append(f"| {r['spec']} | {r['check']} | | | | | | {'yes' if r['pass'] else 'NO: ' + str(r['error'])} |")
            continue
        errs = r.get("errors", {})
        ref = max((v for k, v in errs.items() if k.endswith("reference")), default=math.inf)
        tri = max((v for k, v in errs.items() if k.endswith("triton")), default=math.inf)
        ms = r.get("fwd_ms", {})
        timing = f"{ms['tilelang']:.3f} / {ms['triton']:.3f}" if ms else r.get("error", "")
        shape = f"B={s['B']} T={s['T']} H={s['H']} K={s['K']} V={s['V']}" + (f" cu={s['cu']}" if s["cu"] else "")
        lines.append(f"| {r['spec']} | {r['check']} | {shape} | {s['dtype']} | {ref:.1e} | {tri:.1e} | {timing} | "
                     f"{'yes' if r['pass'] else 'NO'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
