"""Run a bench script once per spec in child processes, a few at a time, and merge their rows.

First compiles dominate a GPU check (minutes per spec, one CPU core each), so specs checked in
parallel processes on the GPU machine's many cores finish several times sooner; the GPU itself
is shared, which is fine for correctness (timings should run alone).

Each child writes under <out>/parts/<spec>/ and rewrites its JSON after every row, so a run that a
time limit cuts short still leaves, in the output folder, every row each child finished; a run
that completes merges them and removes parts/.
"""
from __future__ import annotations

import json
import subprocess
import sys
import shutil
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


def run_per_spec(module: str, specs: list[str], jobs: int, child_args: list[str],
                 missing_row: Callable[[str], dict], out: Path) -> list[dict]:
    """``python -m module --specs NAME --out out/parts/NAME *child_args`` for every spec (``jobs`` at
    once); the "results" rows of the JSON each child wrote, in spec order (``missing_row(name)`` for
    a child that wrote none: its own output, printed above, says why)."""
    parts = Path(out) / "parts"
    pending, running = list(specs), []
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            running.append(subprocess.Popen([sys.executable, "-m", module, "--specs", name,
                                             "--out", str(parts / name), *child_args], cwd=ROOT))
        running[0].wait()
        running = [r for r in running if r.poll() is None]
    rows = []
    for name in specs:
        found = list((parts / name).glob("*.json"))
        rows += json.loads(found[0].read_text())["results"] if found else [missing_row(name)]
    shutil.rmtree(parts, ignore_errors=True)
    return rows
