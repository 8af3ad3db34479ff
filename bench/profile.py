"""python -m bench profile: where the time of one forward+backward goes, kernel by kernel, for our
generated ops (each backend) beside fla 0.6.0's matching op, at one shape on one GPU.

    python -m bench profile --out $OUT                           # K=V=128, B=4 T=4096 H=16, bf16
    python -m bench profile --ops deltanet kda --K 64 --out $OUT

torch.profiler (CUPTI kernel activity, no hardware counters: those need ncu, which not every GPU
machine here allows) records every kernel a fwd+bwd step launches, over `--steps` steps after
warm-up compiles and autotunes. Per row: the step's total kernel time, launches, and each kernel's
share: which kernels a speed gap comes from, and whether ours spend it in the same stages as
fla's. JSON and markdown under --out.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from bench.speed import calls
from bench.speed.plan import FLA_OP, build_plan

ROOT = Path(__file__).resolve().parents[1]


def kernel_table(events, steps: int) -> list[dict]:
    """[{kernel, ms, launches}] per step, largest first, from profiler events of device kernels."""
    ms, n = defaultdict(float), defaultdict(int)
    for e in events:
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        name = short_name(e.name)
        ms[name] += e.time_range.elapsed_us() / 1e3 / steps
        n[name] += 1
    return sorted(({"kernel": k, "ms": ms[k], "launches": n[k] / steps} for k in ms), key=lambda r: -r["ms"])


def short_name(name: str) -> str:
    """A kernel's name without C++ template arguments and argument lists (they can run to pages)."""
    name = re.sub(r"<.*", "", name)
    name = re.sub(r"\(.*", "", name)
    return name.strip()[:80] or "?"


def profile_case(case, a) -> dict:
    row = {"name": case.name, "impl": case.impl, "backend": case.backend,
           "shape": dict(B=case.B, T=case.T, H=case.H, K=case.K, V=case.V)}
    try:
        args = calls.make_case_inputs(case, dtype=torch.bfloat16, device="cuda")
        leaves = [t for t in args.values() if isinstance(t, torch.Tensor) and t.requires_grad]
        fwd = calls.forward_callable(case, args, num_iter=a.ridge_iters)
        do = torch.randn_like(fwd())

        def step():
            return torch.autograd.grad(fwd(), leaves, do, allow_unused=True)

        for _ in range(3):  # compiles, autotunes, then a settled run
            step()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(a.steps):
            step()
        end.record()
        torch.cuda.synchronize()
        row["step_ms"] = start.elapsed_time(end) / a.steps  # outside the profiler: its overhead excluded
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(a.steps):
                step()
            torch.cuda.synchronize()
        kernels = kernel_table(prof.events(), a.steps)
        row["kernels"] = kernels
        row["kernel_ms"] = sum(k["ms"] for k in kernels)
        row["launches"] = sum(k["launches"] for k in kernels)
    except Exception as e:  # noqa: BLE001 - one failing op is an error row
        row["error"] = f"{type(e).__name__}: {e}"[:1000]
    return row


def markdown(meta: dict, rows: list[dict], top: int = 8) -> str:
    lines = [f"# Kernel time breakdown, fwd+bwd ({meta['gpu']}, {meta['date']})", "",
             f"torch {meta['torch']}, triton {meta['triton']}, tilelang {meta['tilelang']}, fla {meta['fla']}. "
             f"Command: `{meta['command']}`", "",
             f"bf16, {meta['shape']}; {meta['steps']} steps per row after 3 warm-up steps. `step ms`: CUDA events "
             "around the steps (no profiler); `kernel ms`: the sum of the step's kernel times from torch.profiler "
             "(the gap to `step ms` is launch overhead and idle GPU). Kernels under 2% of a row are summed "
             "into `other`.", "",
             "| op | backend | step ms | kernel ms | launches |", "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['backend']} | error: {r['error'][:200]} | | |")
        else:
            lines.append(f"| {r['name']} | {r['backend']} | {r['step_ms']:.3f} | {r['kernel_ms']:.3f} | "
                         f"{r['launches']:.0f} |")
    for r in rows:
        if "error" in r:
            continue
        lines += ["", f"## {r['name']} ({r['backend']}): {r['kernel_ms']:.3f} ms of kernels per step", "",
                  "| kernel | ms | share | launches |", "|---|---|---|---|"]
        big = [k for k in r["kernels"] if k["ms"] >= 0.02 * r["kernel_ms"]][:top]
        rest = r["kernel_ms"] - sum(k["ms"] for k in big)
        for k in big:
            lines.append(f"| `{k['kernel']}` | {k['ms']:.3f} | {k['ms'] / r['kernel_ms']:.0%} | {k['launches']:.0f} |")
        if rest > 0:
            lines.append(f"| other | {rest:.3f} | {rest / r['kernel_ms']:.0%} | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", nargs="*", default=["deltanet", "gated_deltanet", "kda", "gla", "gka"])
    p.add_argument("--backends", nargs="*", default=["triton", "tilelang"])
    p.add_argument("--K", type=int, default=128)
    p.add_argument("--T", type=int, default=4096)
    p.add_argument("--B", type=int, default=4)
    p.add_argument("--H", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--ridge-iters", type=int, default=10)
    p.add_argument("--no-fla", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    a = p.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.gpu_correctness import _version

    backends, notes = {}, []
    for op in a.ops:
        backends[op], skipped = calls.ours_available_backends(op, a.backends)
        notes += skipped
    fla = not a.no_fla and _version("fla") is not None
    plan = build_plan(ops=a.ops, backends=backends, Ts=[a.T], Ks=[a.K], H=a.H, tokens=a.B * a.T, fla=fla,
                      device="cuda")
    if not fla and not a.no_fla:
        notes.append("fla is not importable: no fla rows")
    if fla and "gka" in a.ops and "mesanet" not in a.ops:  # GKA's peer (the target)
        plan += build_plan(ops=["mesanet"], backends={}, Ts=[a.T], Ks=[a.K], H=a.H, tokens=a.B * a.T,
                           fla=True, device="cuda")
    meta = {"gpu": torch.cuda.get_device_name(), "date": dt.date.today().isoformat(), "torch": torch.__version__,
            "triton": _version("triton"), "tilelang": _version("tilelang"), "fla": _version("fla"),
            "python": platform.python_version(), "steps": a.steps, "ridge_iters": a.ridge_iters, "notes": notes,
            "shape": f"B={a.B} T={a.T} H={a.H} K=V={a.K}", "fla_ops": FLA_OP,
            "command": "python -m bench profile " + " ".join(sys.argv[1:] if argv is None else argv)}
    a.out.mkdir(parents=True, exist_ok=True)
    stem = f"profile_K{a.K}_T{a.T}"
    rows = []
    for case in plan:
        t0 = time.time()
        rows.append(profile_case(case, a))
        r = rows[-1]
        print(f"{case.name:28s} {case.backend:9s} "
              f"{r.get('step_ms', float('nan')):8.3f} ms  ({time.time() - t0:.0f} s) {r.get('error', '')}", flush=True)
        (a.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        (a.out / f"{stem}.md").write_text(markdown(meta, rows))
    print(f"wrote {a.out / stem}.json/.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
