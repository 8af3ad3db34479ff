"""python -m bench profile: where the time of one forward+backward goes, kernel by kernel, for our
generated ops (each backend) beside fla 0.6.0's matching op, at one shape on one GPU.

    python -m bench profile --out $OUT                           # K=V=128, B=4 T=4096 H=16, bf16
    python -m bench profile --ops deltanet kda --K 64 --out $OUT

torch.profiler (CUPTI kernel activity, no hardware counters: those need ncu, which not every GPU
machine here allows) records every kernel a fwd+bwd step launches, over `--steps` steps after
warm-up compiles and autotunes. Per row: the step's total kernel time, launches, and each kernel's
share: which kernels a speed gap comes from, and whether ours spend it in the same stages as
fla's: the kernels of every row are also summed per stage of the algorithm (STAGES), as a table
and a PNG of one stacked bar per row. JSON, markdown and PNG under --out;

    python -m bench profile --render bench/results/profile_K128_T16384.json

draws the table and plot again from a run's JSON, without a GPU.
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


# Each kernel, ours or fla's, by the stage of a chunked fwd+bwd step it belongs to (first match).
# Ours: the generated kernels' names; fla 0.6.0's: its Triton kernels (its TileLang ones are all
# named `kernel_kernel`, which lands in "other").
STAGES = [
    ("in-chunk forward", r"chunk_intra_fwd|recompute_w_u|inverse|kkt|kda_fwd_kernel_intra|inter_solve"),
    ("state scan, forward", r"chunk_state_fwd|fwd_kernel_h"),
    ("ridge solve", r"chunk_ridge_fwd|chunk_norm_fwd|ridge_bwd_solve|mesa_cg"),
    ("output", r"chunk_output_fwd|fwd_kernel_o"),
    ("state scan, backward", r"chunk_state_bwd|chunk_dh_bwd|chunk_du_bwd|bwd_kernel_dhu|bwd_kernel_dh\b"),
    ("in-chunk backward", r"chunk_grad_bwd|chunk_dv_bwd|ridge_bwd_dk|wy_repr_bwd|dqkwg|dv_local|kda_bwd|bwd_intra"),
    ("other", r""),
]


def stage_of(kernel: str) -> str:
    return next(name for name, pattern in STAGES if re.search(pattern, kernel))


def stage_table(row: dict) -> dict:
    """{stage: ms per step} of one profiled row, every stage present (0 where it has no kernel)."""
    ms = dict.fromkeys((name for name, _ in STAGES), 0.)
    for k in row["kernels"]:
        ms[stage_of(k["kernel"])] += k["ms"]
    return ms


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
             *(line for note in meta.get("notes", ()) for line in (note, "")),
             *([f"Tables and plot drawn again from the JSON by `{meta['rendered_by']}`.", ""]
               if meta.get("rendered_by") else []),
             "| op | backend | step ms | kernel ms | launches |", "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['backend']} | error: {r['error'][:200]} | | |")
        else:
            lines.append(f"| {r['name']} | {r['backend']} | {r['step_ms']:.3f} | {r['kernel_ms']:.3f} | "
                         f"{r['launches']:.0f} |")
    good = [r for r in rows if "error" not in r]
    if good:
        stages = [stage_table(r) for r in good]
        lines += ["", "## By stage (ms of kernels per step; the plot draws the same)", "",
                  "| stage | " + " | ".join(f"{r['name']} ({r['backend']})" for r in good) + " |",
                  "|---|" + "---|" * len(good)]
        lines += [f"| {name} | " + " | ".join(f"{st[name]:.3f}" for st in stages) + " |"
                  for name, _ in STAGES if any(st[name] for st in stages)]
    for r in good:
        lines += ["", f"## {r['name']} ({r['backend']}): {r['kernel_ms']:.3f} ms of kernels per step", "",
                  "| kernel | ms | share | launches |", "|---|---|---|---|"]
        big = [k for k in r["kernels"] if k["ms"] >= 0.02 * r["kernel_ms"]][:top]
        rest = r["kernel_ms"] - sum(k["ms"] for k in big)
        for k in big:
            lines.append(f"| `{k['kernel']}` | {k['ms']:.3f} | {k['ms'] / r['kernel_ms']:.0%} | {k['launches']:.0f} |")
        if rest > 0:
            lines.append(f"| other | {rest:.3f} | {rest / r['kernel_ms']:.0%} | |")
    return "\n".join(lines) + "\n"


def plot(path: Path, meta: dict, rows: list[dict]) -> None:
    """One stacked horizontal bar per profiled row, its kernel time split by stage: ours beside
    fla's, which stage a gap sits in reads at a glance."""
    import matplotlib

    matplotlib.use("Agg")  # no display on the GPU machine
    import matplotlib.pyplot as plt

    good = [r for r in rows if "error" not in r]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(good) + 1.6))
    labels = [f"{r['name']} ({r['backend']})" for r in good][::-1]
    stages = [stage_table(r) for r in good][::-1]
    left = [0.] * len(good)
    for i, (name, _) in enumerate(STAGES):
        ms = [st[name] for st in stages]
        if any(ms):
            ax.barh(labels, ms, left=left, color="0.75" if name == "other" else f"C{i}", label=name)
            left = [a + b for a, b in zip(left, ms)]
    for y, total in enumerate(left):
        ax.text(total, y, f" {total:.2f}", va="center", fontsize=7)
    ax.set_xlabel("ms of kernels per fwd+bwd step")
    ax.set_title(f"{meta['gpu']}, bf16, {meta['shape']}: where a fwd+bwd step's kernel time goes", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(out_stem: Path, meta: dict, rows: list[dict], data: bool = True) -> None:
    """<stem>.md and .png (the plot only once some row has kernels), and .json unless not ``data``."""
    if data:
        out_stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    out_stem.with_suffix(".md").write_text(markdown(meta, rows))
    if any("error" not in r for r in rows):
        plot(out_stem.with_suffix(".png"), meta, rows)


def render(path: Path, argv) -> int:
    """--render: the markdown and plot of an earlier run, from its JSON (no GPU)."""
    data = json.loads(path.read_text())
    meta = {**data["meta"], "rendered_by": "python -m bench profile " + " ".join(argv)}
    write(path.with_suffix(""), meta, data["rows"], data=False)
    print(f"wrote {path.with_suffix('')}.md/.png")
    return 0


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
    p.add_argument("--render", type=Path, metavar="JSON", help="draw an earlier run's tables and plot again")
    a = p.parse_args(argv)
    if a.render:
        return render(a.render, sys.argv[1:] if argv is None else argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench profile: no CUDA device (`--render JSON` redraws a run's tables without one)")
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
        write(a.out / stem, meta, rows)  # after every row: a run cut short keeps what it measured
    print(f"wrote {a.out / stem}.json/.md/.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
