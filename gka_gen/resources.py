"""Per-kernel GPU resources of a generated package, without a GPU.

    python -m gka_gen.resources generated.gka --K 128 --V 128 [--dtype bf16] [--B 1 --T 80 --H 2]

Two steps, each in its own Python process (Triton decides interpreter vs compiler when a kernel
is *decorated*, so one process cannot do both):

1. capture: import the package with TRITON_INTERPRET=1 and call its public API once on a small
   input of the requested K, V and dtype (chunked forward with an initial state and the final
   state, its backward, the fused recurrent forward). Every kernel launch is recorded - kernel,
   argument kinds (pointer dtypes, scalars), constexpr values, num_warps / num_stages - and,
   by default, not executed (the numbers do not matter, only the launches; this keeps the
   capture to seconds even at K = V = 256).
2. compile: in a process without the interpreter, each distinct launch goes through the kernel's
   own JIT binder (the same specialization - pointer alignment, integer divisibility - as a real
   launch) and `triton.compile` for the target, by default the H100 (GPUTarget("cuda", 90, 32)).
   Reported per kernel: Triton's dynamic shared memory (what the launch checks against the
   device's limit), and from `ptxas -v` on the kernel's PTX the registers per thread and the
   spill stores / loads.

A kernel "fits" when shared <= the target's opt-in limit (232448 B on the H100) and it spills no
more than `max_spill` bytes (see `check`).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
H100_SHARED = 232448  # bytes of shared memory per block (opt-in maximum) on sm_90 (H200 too)
# Spill bytes (stores or loads, per thread) the default configs may have (tests/test_resources.py):
# a few spilled words live in L1 and cost next to nothing against a kernel's tile loads; hundreds of
# bytes (a [BT, K] tile that did not fit registers) are what this guards against in a config chosen
# without a GPU. 64: the ridge per-chunk kernels spill 0-56 bytes at K = V = 64, 128 and 256. The
# search does not apply it: there the GPU's times decide (autotune/prefilter.py).
MAX_SPILL = 64
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass
class Launch:
    """One distinct kernel launch: where the kernel lives and what it was called with."""
    module: str
    kernel: str
    args: list          # positional arguments, described (see _describe)
    kwargs: dict        # keyword arguments (constexprs, num_warps, num_stages, ...), described
    count: int = 1      # how many identical launches the call made

    def key(self):
        return json.dumps([self.module, self.kernel, self.args, self.kwargs], sort_keys=True)

    @property
    def constexprs(self) -> dict:
        return {k: v for k, v in self.kwargs.items() if k not in ("num_warps", "num_stages", "num_ctas")}


@dataclass
class Usage:
    package: str
    kernel: str
    constexprs: dict
    num_warps: int = 4
    num_stages: int = 3
    shared: int | None = None
    regs: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None
    compile_s: float = 0.
    error: str | None = None
    module: str = ""
    extra: dict = field(default_factory=dict)

    def fits(self, shared_limit: int = H100_SHARED, max_spill: int = 0) -> bool:
        return (self.error is None and self.shared is not None and self.shared <= shared_limit
                and (self.spill_stores or 0) <= max_spill and (self.spill_loads or 0) <= max_spill)


# ----------------------------------------------------------------------------- capture
def _describe(x):
    """A JSON-able description of one launch argument, enough to rebuild an equivalent one."""
    import torch
    import triton.language as tl
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, torch.Tensor):
        return {"tensor": str(x.dtype).replace("torch.", "")}
    if isinstance(x, int):
        return {"int": x}
    if isinstance(x, float):
        return {"float": x}
    if isinstance(x, tl.dtype):
        return {"tl_dtype": str(x)}
    if isinstance(x, tl.constexpr):
        return _describe(x.value)
    raise TypeError(f"cannot describe a launch argument of type {type(x).__name__}: {x!r}")


def _materialize(d):
    import torch
    import triton.language as tl
    if not isinstance(d, dict):
        return d
    if "tensor" in d:
        return torch.empty(64, dtype=getattr(torch, d["tensor"]))  # CPU allocations are 64 B aligned
    if "int" in d:
        return d["int"]
    if "float" in d:
        return d["float"]
    if "tl_dtype" in d:
        return getattr(tl, d["tl_dtype"])
    raise ValueError(d)


def _package_call(package: str, B: int, T: int, H: int, K: int, V: int, dtype: str):
    """Run the package's chunked forward + backward and its fused recurrent forward once."""
    import torch

    from gka_gen.spec import spec_from_dict
    from gka_gen.testing import make_inputs

    pkg = importlib.import_module(package)
    name = package.rsplit(".", 1)[-1]
    spec_mod = importlib.import_module(package + ".spec")
    spec = spec_from_dict(spec_mod.SPEC_DATA)
    for mode in ("chunk", "fused_recurrent"):
        a = make_inputs(spec, B=B, T=T, H=H, K=K, V=V, dtype=getattr(torch, DTYPES[dtype]), seed=0,
                        initial_state=True, requires_grad=True)
        fn = getattr(pkg, f"{mode}_{name}")
        o, state = fn(**a, output_final_state=True, backend="triton")
        if mode == "fused_recurrent":
            continue  # its backward is chunk_bwd again (with a recomputed chunk_fwd)
        outs = [o] + (list(state) if isinstance(state, (tuple, list)) else [state])
        leaves = [v for v in a.values() if isinstance(v, torch.Tensor) and v.requires_grad]
        st = a.get("initial_state")
        leaves += list(st) if isinstance(st, (tuple, list)) else ([st] if st is not None else [])
        torch.autograd.grad(outs, leaves, [torch.ones_like(x) for x in outs], allow_unused=True)


def _capture_here(package, B, T, H, K, V, dtype, execute=False) -> list[Launch]:
    """In a TRITON_INTERPRET=1 process: record the kernel launches of one package call."""
    from triton.runtime.interpreter import InterpretedFunction

    launches: dict[str, Launch] = {}
    orig = InterpretedFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        rec = Launch(self.fn.__module__, self.fn.__name__, [_describe(a) for a in args],
                     {k: _describe(v) for k, v in kwargs.items()})
        k = rec.key()
        if k in launches:
            launches[k].count += 1
        else:
            launches[k] = rec
        if execute:
            return orig(self, *args, grid=grid, warmup=warmup, **kwargs)
        return None

    InterpretedFunction.run = run
    try:
        _package_call(package, B, T, H, K, V, dtype)
    finally:
        InterpretedFunction.run = orig
    return list(launches.values())


def _child(code: str, env_update: dict, timeout: float, stdin: str | None = None) -> str:
    """Run ``code`` in a fresh Python; its last line of stdout. Data goes in on ``stdin``: Linux caps
    one argv string at 128 KiB, which a search's few hundred candidate launches pass."""
    env = {**os.environ, **env_update}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(ROOT), capture_output=True, text=True,
                       timeout=timeout, input=stdin)
    if r.returncode != 0:
        raise RuntimeError(f"child process failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return r.stdout.strip().splitlines()[-1]


def capture(packages, *, B=1, T=80, H=2, K=128, V=128, dtype="bf16", execute=False, timeout=600) -> dict:
    """{package: [Launch]} for each package, recorded in one TRITON_INTERPRET=1 child process.
    T=80: two chunks of 64, the second ragged, so every per-chunk and scan path is taken."""
    packages = [packages] if isinstance(packages, str) else list(packages)
    code = ("import json\nfrom dataclasses import asdict\nfrom gka_gen.resources import _capture_here\n"
            f"out = {{p: [asdict(x) for x in _capture_here(p, {B}, {T}, {H}, {K}, {V}, {dtype!r}, {execute})] "
            f"for p in {packages!r}}}\nprint(json.dumps(out))")
    out = json.loads(_child(code, {"TRITON_INTERPRET": "1"}, timeout))
    return {p: [Launch(**x) for x in v] for p, v in out.items()}


# ----------------------------------------------------------------------------- compile
def _target(arch: int = 90):
    from triton.backends.compiler import GPUTarget
    return GPUTarget("cuda", arch, 32)


def _ptxas_usage(ptx: str, arch: int = 90) -> dict:
    """Registers and spills from `ptxas -v` (the same ptxas Triton uses)."""
    from triton import knobs
    ptxas = knobs.nvidia.ptxas.path
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.ptx"
        src.write_text(ptx)
        r = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{arch}a", str(src), "-o", str(Path(d) / "k.o")],
                           capture_output=True, text=True)
    log = r.stderr + r.stdout
    regs = re.search(r"Used (\d+) registers", log)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return {"regs": int(regs.group(1)) if regs else None,
            "spill_stores": int(spill.group(1)) if spill else None,
            "spill_loads": int(spill.group(2)) if spill else None}


def compile_launch(launch: Launch, package: str = "", arch: int = 90) -> Usage:
    """AOT-compile one captured launch for sm_<arch> the way the JIT would, and measure it."""
    import triton
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    kw = {k: _materialize(v) for k, v in launch.kwargs.items()}
    u = Usage(package or launch.module, launch.kernel, launch.constexprs, kw.get("num_warps", 4),
              kw.get("num_stages", 3), module=launch.module)
    t0 = time.time()
    try:
        fn = getattr(importlib.import_module(launch.module), launch.kernel)
        if not isinstance(fn, JITFunction):
            raise TypeError(f"{launch.module}.{launch.kernel} is {type(fn).__name__}, not a JITFunction "
                            "(was the package imported with TRITON_INTERPRET=1?)")
        target = _target(arch)
        backend = make_backend(target)
        binder = create_function_from_signature(fn.signature, fn.params, backend)
        args = [_materialize(a) for a in launch.args]
        bound, spec, opts = binder(*args, **kw)
        options, signature, constexprs, attrs = fn._pack_args(backend, kw, bound, spec, opts)
        c = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)
        u.shared = int(c.metadata.shared)
        u.num_warps, u.num_stages = int(c.metadata.num_warps), int(c.metadata.num_stages)
        u.__dict__.update(_ptxas_usage(c.asm["ptx"], arch))
    except Exception as e:  # noqa: BLE001 - reported per kernel
        u.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
    u.compile_s = time.time() - t0
    return u


def _compile_here(items, arch=90, jobs=1) -> list[Usage]:
    """items: [(package, Launch)]. jobs > 1 compiles in a process pool."""
    if jobs > 1 and len(items) > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(jobs) as ex:
            return list(ex.map(_compile_item, [(p, asdict(x), arch) for p, x in items]))
    return [compile_launch(x, p, arch) for p, x in items]


def _compile_item(t):
    p, x, arch = t
    return compile_launch(Launch(**x), p, arch)


def compile_all(captured: dict, *, arch=90, jobs=None, timeout=1800) -> list[Usage]:
    """Compile every captured launch ({package: [Launch]}) in a child process without the
    interpreter. Distinct launches that differ only in runtime scalars compile once each anyway
    (Triton's cache makes repeats cheap)."""
    jobs = jobs or max(1, min(2, os.cpu_count() or 1))
    items = [(p, asdict(x)) for p, v in captured.items() for x in v]
    code = ("import json, sys\nfrom dataclasses import asdict\nfrom gka_gen.resources import _compile_here, Launch\n"
            "items = [(p, Launch(**x)) for p, x in json.load(sys.stdin)]\n"
            f"print(json.dumps([asdict(u) for u in _compile_here(items, {arch}, {jobs})]))")
    out = json.loads(_child(code, {"TRITON_INTERPRET": "0"}, timeout, stdin=json.dumps(items)))
    return [Usage(**u) for u in out]


def resources(packages, *, B=1, T=80, H=2, K=128, V=128, dtype="bf16", arch=90, jobs=None) -> list[Usage]:
    """Capture, then compile: one Usage per distinct kernel launch of each package."""
    return compile_all(capture(packages, B=B, T=T, H=H, K=K, V=V, dtype=dtype), arch=arch, jobs=jobs)


def check(usages, shared_limit=H100_SHARED, max_spill=0) -> list[Usage]:
    """The usages that do not fit (compile error, too much shared memory, or spills)."""
    return [u for u in usages if not u.fits(shared_limit, max_spill)]


# ----------------------------------------------------------------------------- report
_SHOWN = ("BT", "BK", "BV", "BX", "BC", "BD", "BVS", "K", "V", "X", "D", "INPUT_PRECISION")


def table(usages, shared_limit=H100_SHARED, max_spill=0) -> str:
    rows = [("package", "kernel", "tiles / constexprs", "warps", "stages", "shared B", "regs", "spill st/ld",
             "fits")]
    for u in usages:
        shown = " ".join(f"{k}={v['int'] if isinstance(v, dict) and 'int' in v else v}"
                         for k, v in u.constexprs.items() if k in _SHOWN)
        spill = "-" if u.spill_stores is None else f"{u.spill_stores}/{u.spill_loads}"
        rows.append((u.package.replace("generated.", ""), u.kernel, shown, str(u.num_warps), str(u.num_stages),
                     "-" if u.shared is None else str(u.shared), "-" if u.regs is None else str(u.regs), spill,
                     ("yes" if u.fits(shared_limit, max_spill) else "NO") + (f" ({u.error})" if u.error else "")))
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gka_gen.resources", description=__doc__.splitlines()[0])
    ap.add_argument("packages", nargs="+", help="generated packages, e.g. generated.gka")
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--T", type=int, default=80)
    ap.add_argument("--H", type=int, default=2)
    ap.add_argument("--K", type=int, default=128)
    ap.add_argument("--V", type=int, default=128)
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    ap.add_argument("--arch", type=int, default=90, help="compute capability (90: H100)")
    ap.add_argument("--shared-limit", type=int, default=H100_SHARED)
    ap.add_argument("--max-spill", type=int, default=0, help="spill bytes (stores or loads) still counted as fitting")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = ap.parse_args(argv)
    us = resources(a.packages, B=a.B, T=a.T, H=a.H, K=a.K, V=a.V, dtype=a.dtype, arch=a.arch, jobs=a.jobs)
    if a.json:
        print(json.dumps([asdict(u) for u in us], indent=1))
    else:
        print(f"sm_{a.arch}, K={a.K} V={a.V} {a.dtype}; shared limit {a.shared_limit} B")
        print(table(us, a.shared_limit, a.max_spill))
    return 1 if check(us, a.shared_limit, a.max_spill) else 0


if __name__ == "__main__":
    sys.exit(main())
