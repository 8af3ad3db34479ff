"""The resource model in front of the search: which candidates can run on sm_90 at all.

gka_gen.resources records the launches of one call of the package under the Triton interpreter
(the defaults' launches), then compiles launches ahead of time for sm_90 and reads shared memory,
registers and spills from ptxas. A candidate config is a dict of launch keyword arguments, so its
launches are the default launches of that kernel with those arguments replaced: exactly what the
launcher will run. All candidates compile in parallel before any timing, which also fills Triton's
cache for the GPU compiles that follow.

A candidate is dropped only when it cannot run: a compile error, or more shared memory than a
block may have. Spills are recorded with the trial, not held against it: on the H200 the fastest
ridge solves spill 364-572 bytes a thread (4 warps, two blocks sharing an SM), 1.2-1.7x faster than
the spill-free 8-warp configs (bench/results/ridge_spills_vs_time.md).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .. import resources


@dataclass
class Verdict:
    fits: bool
    why: str = ""            # empty when it can run
    shared: int | None = None
    regs: int | None = None
    spill: int | None = None  # the larger of spill stores / loads, bytes a thread (recorded, not judged)


def patched(launches, kernel: str, cfg: dict) -> list:
    """The launches of ``kernel`` with ``cfg``'s keyword arguments (kernel "x" is the function x_kernel)."""
    name = f"{kernel}_kernel"
    return [resources.Launch(x.module, x.kernel, x.args, {**x.kwargs, **{k: {"int": int(v)} for k, v in cfg.items()}})
            for x in launches if x.kernel == name]


def verdict(usages) -> Verdict:
    """One candidate's verdict from the usages of its launches (no launches: nothing to object to)."""
    if not usages:
        return Verdict(True)
    shared = max((u.shared or 0) for u in usages)
    regs = max((u.regs or 0) for u in usages)
    spill = max(max(u.spill_stores or 0, u.spill_loads or 0) for u in usages)
    bad = [u for u in usages if not u.fits(max_spill=math.inf)]
    if not bad:
        return Verdict(True, "", shared, regs, spill)
    u = bad[0]
    why = u.error or f"shared memory {u.shared} B > {resources.H100_SHARED}"
    return Verdict(False, why, shared, regs, spill)


def check(package: str, K: int, V: int, H: int, dtype: str, todo: dict, jobs: int | None = None) -> dict:
    """{kernel: [Verdict per candidate]} for ``todo`` = {kernel: [config, ...]}. H is a constexpr
    of every kernel: captured at the tuned H, these compiles are the very ones the GPU run needs."""
    launches = resources.capture([package], H=H, K=K, V=V, dtype=dtype)[package]
    groups = [(kernel, patched(launches, kernel, cfg)) for kernel, cfgs in todo.items() for cfg in cfgs]
    flat = [x for _, ls in groups for x in ls]
    usages = iter(resources.compile_all({package: flat}, jobs=jobs or os.cpu_count() or 1) if flat else [])
    out: dict = {kernel: [] for kernel in todo}
    for kernel, ls in groups:
        out[kernel].append(verdict([next(usages) for _ in ls]))
    return out
