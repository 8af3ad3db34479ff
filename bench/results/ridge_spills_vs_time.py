"""Measured time against the sm_90 resource model for the ridge solves' tuned candidates.

Times: the Triton search's trials on the H200 (autotune/NVIDIA_H200/gka-*.json, bucket
bf16/K128/V128/T2048: the call each kernel runs in, the spec's 30 Chebyshev steps). Registers,
spills and shared memory: the same configs compiled ahead of time for sm_90 on a CPU
(gka_gen.autotune.prefilter, ptxas -v). Run from the repository root, no GPU needed (~5 min):

    python bench/results/ridge_spills_vs_time.py
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gka_gen.autotune import prefilter  # noqa: E402
from generated.gka import spec  # noqa: E402

KERNELS = ("chunk_ridge_fwd", "chunk_ridge_bwd_solve")
BUCKET = "bf16/K128/V128/T2048"


def main():
    path = ROOT / "autotune" / "NVIDIA_H200" / f"gka-{spec.SPEC_HASH}.json"
    entries = json.loads(path.read_text())["backends"]["triton"][BUCKET]["kernels"]
    trials = {k: sorted((t for t in entries[k]["trials"] if t["status"] == "ok"), key=lambda t: t["ms"])
              for k in KERNELS}
    found = prefilter.check("generated.gka", 128, 128, 16, "bf16", {k: [t["config"] for t in ts]
                                                                      for k, ts in trials.items()})
    rows = [{"kernel": k, **t["config"], "ms": round(t["ms"], 3), "regs": v.regs, "spill": v.spill,
             "shared": v.shared} for k in KERNELS for t, v in zip(trials[k], found[k])]
    out = Path(__file__).with_suffix("")
    out.with_suffix(".json").write_text(json.dumps({"source": str(path.relative_to(ROOT)), "bucket": BUCKET,
                                                   "rows": rows}, indent=1) + "\n")
    lines = ["# Ridge solves: measured time against registers and spills (gka, K = V = 128)", "",
             f"Times: `{path.relative_to(ROOT)}`, bucket {BUCKET} (the H200, the whole call the kernel runs in, "
             "30 Chebyshev steps). Registers, spill bytes a thread and shared memory: the same configs "
             "compiled for sm_90 without a GPU. Command: `python bench/results/ridge_spills_vs_time.py`.", "",
             "| kernel | BK | BS | BV | warps | stages | ms | regs | spill B | shared B |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['kernel']} | {r['BK']} | {r['BS']} | {r['BV']} | {r['num_warps']} | {r['num_stages']} | "
              f"{r['ms']} | {r['regs']} | {r['spill']} | {r['shared']} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.json/.md")


if __name__ == "__main__":
    main()
