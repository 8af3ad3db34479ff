"""python -m bench tuned: what `gka-gen autotune` found on one GPU, as a markdown page.

    python -m bench tuned                                   # every GPU folder under autotune/
    python -m bench tuned --dir autotune/NVIDIA_H200 --out bench/results

Reads the tuned files (autotune/<GPU>/<spec>-<hash>.json) and writes tuned_<GPU>.md: per spec and
shape bucket, each kernel's default and tuned config with the time of the call it runs in, what
became of the candidates (ok, mismatch, error, crash, resources), each backend's whole-call times
and what `backend="auto"` picks from them; and whether the file is current for the generated
package (spec hash, kernels hash), since a stale file is never read. No GPU needed.
"""
from __future__ import annotations

import argparse
import importlib
import json
from collections import Counter
from pathlib import Path

from gka_gen.autotune import cache
from gka_gen.autotune.tune import config_text

STATUSES = ("ok", "mismatch", "error", "crash", "resources")


def _ms(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _current(data: dict) -> str:
    """Whether the generated package would read this file: its spec and kernels hashes."""
    from gka_gen.autotune.lookup import package_kernels_hashes

    package = f"generated.{data['spec']}"
    try:
        spec_hash = importlib.import_module(package + ".spec").SPEC_HASH
        kernels = package_kernels_hashes(package)
    except ImportError:
        return f"no package `{package}` here"
    if spec_hash != data["spec_hash"]:
        return f"stale: the spec's hash is now {spec_hash}"
    stale = [f"{b}'s kernels hash is now {kernels.get(b)}" for b in data["backends"]
             if data["kernels_hash"].get(b) != kernels.get(b)]
    if stale:
        return "stale: " + ", ".join(stale)
    return "current (spec and kernels hashes match the generated package)"


def auto_pick(phases: dict) -> dict:
    """backend="auto"'s choice per call from one bucket's race (Triton where nothing raced)."""
    from gka_gen.autotune.lookup import race_winner

    calls = {"forward (no grad)": ("fwd",), "forward + backward": ("fwd", "bwd"), "recurrent": ("recurrent",)}
    return {call: race_winner(phases, parts) or "triton" for call, parts in calls.items()}


def _search_state(entry: dict) -> str:
    if entry.get("done"):
        return ""
    return " (the earlier search's pick rechecked; search open)" if entry.get("rechecked") else " (search not finished)"


def render_file(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    lines = [f"## {data['spec']} (`{path.name}`)", "",
             f"{_current(data)}. Tuned {data['created']} .. {data['updated']}; "
             + ", ".join(f"{k} {v}" for k, v in data.get("versions", {}).items()) + ".", ""]
    buckets = sorted({key for b in data["backends"].values() for key in b}, key=cache.parse_bucket)
    for key in buckets:
        per = {name: b[key] for name, b in data["backends"].items() if key in b}
        shape = next(iter(per.values()))["shape"]
        lines += [f"### {key} (B={shape['B']} T={shape['T']} H={shape['H']})", ""]
        rows = [(name, kernel, e) for name, b in per.items() for kernel, e in b.get("kernels", {}).items()]
        if rows:
            lines += ["| backend | kernel | phase | default | ms | tuned | ms | gain | candidates |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for name, kernel, e in rows:
                seen = Counter(t["status"] for t in e.get("trials", ()))
                gain = (f"{e['default_ms'] / e['ms']:.2f}x" if e.get("ms") and e.get("default_ms") else "-")
                tally = ", ".join(f"{seen[s]} {s}" for s in STATUSES if seen[s])
                lines.append(f"| {name} | {kernel} | {e['phase']} | {config_text(e['default'])} "
                             f"| {_ms(e.get('default_ms'))} | {config_text(e['config'])} | {_ms(e.get('ms'))} | {gain} | "
                             f"{tally}{_search_state(e)} |")
            lines.append("")
        else:
            lines += ["No launch-config search at this bucket (the templates' defaults are used).", ""]
        phases = {name: b.get("phases", {}) for name, b in per.items() if b.get("phases")}
        if phases:
            lines += ["| backend | " + " | ".join(f"{p} ms" for p in cache.PHASES) + " |",
                      "|---|" + "---|" * len(cache.PHASES)]
            lines += [f"| {name} | " + " | ".join(_ms(ph.get(p)) for p in cache.PHASES) + " |"
                      for name, ph in phases.items()]
            lines += ["", "auto picks: " + ", ".join(f"{call}: {b}" for call, b in auto_pick(phases).items()), ""]
    return lines


def render(folder: Path) -> str:
    files = sorted(folder.glob("*.json"))
    shown = folder.resolve().relative_to(cache.ROOT.parent) if folder.resolve().is_relative_to(cache.ROOT.parent) \
        else folder
    lines = [f"# Tuned launch configs: {folder.name}", "",
             f"Made by `python -m bench tuned --dir {shown}` from the files `gka-gen autotune` wrote. `ms` is the "
             "median time of the whole call a kernel runs in (forward, backward or recurrent forward), "
             "with every other kernel at its best config; `gain` = default ms / tuned ms. Candidates: "
             "`mismatch` gave other outputs than the default config (beyond the bf16 tolerance), `crash` "
             "faulted on the GPU, `resources` were dropped before running by the sm_90 resource model "
             "(a compile error or too much shared memory; files from before 2026-11-30 evening also "
             "dropped spills over 64 bytes a thread). The race (whole calls per backend) is what "
             "`backend=\"auto\"` reads.",
             ""]
    for path in files:
        lines += render_file(path)
    return "\n".join(lines).rstrip() + "\n"


def tuned_note(spec: str, gpu: str) -> str:
    """Which launch configs ``spec``'s rows run with on ``gpu``: the shape buckets of its tuned file
    (gka_gen.autotune; a call takes the nearest bucket of its dtype, K and V), else the defaults."""
    from gka_gen.autotune import lookup

    package = f"generated.{spec}"
    spec_hash = importlib.import_module(package + ".spec").SPEC_HASH
    tuned = lookup.tuned_backends(spec, spec_hash, package, gpu)
    searched = sorted(key for key, b in tuned.get("triton", {}).items() if b.get("kernels"))
    raced = sorted(key for key, b in tuned.get("tilelang", {}).items() if b.get("phases"))
    source = lookup.borrowed_from(spec, spec_hash, gpu)
    if not tuned:
        where = "no usable tuned file for this GPU"
    elif source:
        where = f"autotune/{cache.sanitize_gpu_name(source)}, another GPU of the same compute capability"
    else:
        where = f"autotune/{cache.sanitize_gpu_name(gpu)}"
    return (f"{spec}: Triton launch configs " + (f"tuned at {', '.join(searched)}" if searched else "the defaults")
            + (f"; backend race at {', '.join(raced)}" if raced else "") + f" ({where})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench tuned", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, action="append", help="a GPU folder of tuned files (default: each "
                    "folder under autotune/)")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args(argv)
    folders = args.dir or sorted(p for p in cache.ROOT.iterdir() if p.is_dir())
    args.out.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        target = args.out / f"tuned_{folder.name}.md"
        target.write_text(render(folder))
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
