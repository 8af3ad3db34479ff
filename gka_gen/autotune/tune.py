"""The search behind `gka-gen autotune`: on this GPU, the fastest verified launch config of every
tunable kernel, per shape bucket, written to autotune/<GPU>/<spec>-<spec hash>.json.

Per spec and shape:
1. every kernel at its default config runs the package's own calls once - the chunked forward,
   its backward, the fused recurrent forward: the reference outputs;
2. kernel by kernel (configs.SPACES order, forward kernels first: the backward recomputes with
   them), its candidates go through the resource model (prefilter.py: compiled ahead for sm_90 in
   parallel; a compile error or too much shared memory: dropped, never timed; spills are only
   recorded, since spilling configs were the fastest ridge solves). Each survivor runs the call
   the kernel belongs to with that config (every other kernel at its best so far); a config whose
   outputs differ from the reference beyond rounding is a bug and is skipped ('mismatch'), one that
   fails to compile or launch is skipped ('error'), one that faults on the GPU ('crash': the
   process goes on in a new one, past it) too; the rest are timed (triton.testing.do_bench,
   median ms of the whole call);
3. the fastest is kept. The file is rewritten after every kernel, with every trial, so a search cut
   short (budget, Ctrl-C) resumes where it stopped and never re-times a candidate;
4. the race (race_shape): each backend's whole calls, timed with its best configs, one backend
   after the other; TileLang's outputs must match Triton's to be timed. `backend="auto"` reads it.

`--recheck` (after a kernel change voided a file's search, cache.py): per bucket of that search,
each kernel runs only its new default and the earlier pick (the file's `prior`), verified and timed
as above; the faster stays, the kernel's search left open, so a later plain run goes on with the
rest of its candidates. Kernel changes that leave what a config means alone (a launcher that stops
recomputing a tensor) keep their tuning for two candidates per kernel, where a search times 94-173
per shape.

The budget (minutes) covers the search and the race, their compiles included (not the
--warm-workers pre-compile, which runs first: a budget shorter than it would otherwise end the run
before its first candidate); past it the search stops after the current candidate, keeps the best
verified so far, and marks the kernel not done.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import importlib.util
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import cache, configs, lookup, prefilter

# Largest max|out - ref| / max|ref| over a call's outputs that still counts as the same result.
# A config changes summation order (block sizes) and nothing else: bf16 / fp16 inputs use TF32 dots
# and round outputs to 8-11 bits, fp32 inputs use IEEE dots. A wrong config (a lost block, a
# masking bug) is off by O(1).
TOLERANCE = {"bf16": 2e-2, "fp16": 2e-2, "fp32": 2e-4}
TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class BudgetExceeded(Exception):
    pass


class TuneError(RuntimeError):
    """Nothing can be tuned as asked (no GPU, a stale generated package): one line for the CLI."""


@dataclass(frozen=True)
class Shape:
    dtype: str
    B: int
    T: int
    H: int
    K: int
    V: int

    @property
    def bucket(self) -> str:
        return cache.bucket_key(self.dtype, self.K, self.V, self.T)


DEFAULT_SHAPES = "K=64,128 T=2048,4096,8192,16384 tokens=16384 H=16 dtype=bf16"


def parse_shapes(text: str) -> list[Shape]:
    """'K=64,128 T=2048,4096 tokens=16384 H=16 dtype=bf16' -> the grid of shapes.

    Fields (space separated, values comma separated): K; V (default: V = K, paired); T; B, or
    tokens = B*T (default 16384: B = tokens / T, the issue's constant-B*T sweep); H (16); dtype
    (bf16). Several grids: separate them with ';'."""
    shapes = []
    for grid in filter(None, (g.strip() for g in text.split(";"))):
        f = {}
        for item in grid.split():
            key, _, vals = item.partition("=")
            if key not in ("K", "V", "T", "B", "tokens", "H", "dtype") or not vals:
                raise ValueError(f"bad shape field {item!r} (expected K=, V=, T=, B=, tokens=, H=, dtype=)")
            f[key] = vals.split(",")
        if "K" not in f or "T" not in f:
            raise ValueError(f"shape grid {grid!r} needs K= and T=")
        Ks = [int(k) for k in f["K"]]
        Vs = [int(v) for v in f["V"]] if "V" in f else Ks
        if "V" in f and len(Vs) != len(Ks):
            raise ValueError(f"{grid!r}: V= pairs with K= and needs as many values")
        for K, V in zip(Ks, Vs):
            for T in (int(t) for t in f["T"]):
                for dtype in f.get("dtype", ["bf16"]):
                    for H in (int(h) for h in f.get("H", ["16"])):
                        Bs = [int(b) for b in f["B"]] if "B" in f else [max(1, int(f.get("tokens", ["16384"])[0]) // T)]
                        shapes += [Shape(dtype, B, T, H, K, V) for B in Bs]
    return shapes


# ----------------------------------------------------------------------------- verification, timing
def _tensors(x) -> list:
    if x is None:
        return []
    if isinstance(x, (tuple, list)):
        return [t for y in x for t in _tensors(y)]
    return [x]


def max_rel_diff(outs, refs) -> float:
    """max over outputs of max|out - ref| / max|ref| (inf on a non-finite output or a shape change)."""
    outs, refs = _tensors(outs), _tensors(refs)
    if len(outs) != len(refs):
        return math.inf
    worst = 0.
    for o, r in zip(outs, refs):
        if o.shape != r.shape:
            return math.inf
        o, r = o.detach().float(), r.detach().float()
        if not bool(o.isfinite().all()):
            return math.inf
        worst = max(worst, float((o - r).abs().max()) / max(float(r.abs().max()), 1e-30)) if o.numel() else worst
    return worst


# A call this slow (ridge fused recurrent at long T: ~1 s) needs no L2 flush and few repeats: three
# runs, where do_bench would spend five on estimating alone.
SLOW_MS = 50.


def _timed_runs(fn, n: int, device) -> list[float]:
    out = []
    for _ in range(n):
        if device.type == "cuda":
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def bench(fn, device) -> float:
    """Median ms of fn(): triton.testing.do_bench on the GPU (L2 flushed between runs; ~60 ms of
    repeats); the median of 3 runs for a call over SLOW_MS, and off the GPU (the interpreter)."""
    first = _timed_runs(fn, 1, device)[0]
    if device.type == "cuda" and first < SLOW_MS:
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=15, rep=60, return_mode="median"))
    return sorted([first] + _timed_runs(fn, 2, device))[1]


def search(cands, run, time_it, reference, tol: float, deadline: float, tried=(), verdicts=None, on_trial=None,
           on_start=None):
    """Try each candidate config (skipping those in ``tried``): dropped by its resource verdict,
    'error' when it raises, 'mismatch' when its outputs differ from ``reference`` by more than
    ``tol``, else 'ok' with time_it(cfg) ms. Returns the new trials. The first candidate (the
    default) is always run: it is the baseline the others must beat. BudgetExceeded past
    ``deadline`` (time.monotonic()), after on_trial has seen every finished trial.

    Before a candidate runs, on_start sees it as a 'crash' trial, which on_trial's result replaces:
    a config that kills the process (a hardware fault takes the CUDA context with it) stays on
    record as the one that did, so the resumed search skips it. Such a fault raises ContextLost."""
    trials = []
    for i, cfg in enumerate(cands):
        if cfg in tried:
            continue
        if time.monotonic() > deadline:
            raise BudgetExceeded
        v = verdicts[i] if verdicts else None
        trial = {"config": cfg, "status": "ok", "ms": None}
        if v is not None:
            trial["resources"] = {"shared": v.shared, "regs": v.regs, "spill": v.spill}
        if v is not None and not v.fits and i > 0:
            trial.update(status="resources", detail=v.why)
        else:
            if on_start:
                on_start({**trial, "status": "crash", "detail": "the process died running it"})
            try:
                trial.update(_try(cfg, run, time_it, reference, tol))
            except Exception as e:  # noqa: BLE001 - OutOfResources, compile errors: skip the config
                raise_if_context_lost(e, f"config {cfg}")
                trial.update(status="error", detail=f"{type(e).__name__}: {str(e).strip()[:300]}")
        trials.append(trial)
        if on_trial:
            on_trial(trial)
    return trials


def _try(cfg, run, time_it, reference, tol: float) -> dict:
    t0 = time.monotonic()
    outs = run(cfg)
    err = max_rel_diff(outs, reference)  # waits for the GPU: a fault surfaces here, not in a later call
    first = round(time.monotonic() - t0, 3)  # its JIT compile or cache load
    if err > tol:
        return {"status": "mismatch", "first_call_s": first, "detail": f"max rel diff {err:.3g} > {tol:g}"}
    return {"first_call_s": first, "ms": time_it(cfg), "rel_diff": err}


class ContextLost(Exception):
    """A candidate faulted on the GPU (illegal address, launch failure): the CUDA context is unusable,
    every later call in this process would fail too."""


def context_lost(e: BaseException) -> bool:
    """Whether ``e`` is a sticky CUDA fault (torch.AcceleratorError, or 'CUDA error' in older torch),
    not a recoverable one (out of memory, a compile error, out of resources)."""
    text = str(e)
    if "out of memory" in text:
        return False
    return type(e).__name__ == "AcceleratorError" or "CUDA error" in text


def raise_if_context_lost(e: BaseException, where: str) -> None:
    """ContextLost (from e) when e is a sticky CUDA fault, naming ``where`` it happened."""
    if context_lost(e):
        raise ContextLost(f"{where}: {str(e).strip().splitlines()[0][:200]}") from e


def best_of(trials):
    ok = [t for t in trials if t["status"] == "ok"]
    return min(ok, key=lambda t: t["ms"]) if ok else None


# ----------------------------------------------------------------------------- one package
class Calls:
    """The package's three calls on one shape's inputs; each returns its outputs."""

    def __init__(self, package: str, shape: Shape, device, backend: str = "triton"):
        import torch

        from ..testing import make_inputs

        spec_mod = importlib.import_module(package + ".spec")
        pkg = importlib.import_module(package)
        self.spec = spec_mod.load_spec()
        name = self.spec.name
        self.chunk_fn = getattr(pkg, f"chunk_{name}")
        self.recurrent_fn = getattr(pkg, f"fused_recurrent_{name}")
        self.a = make_inputs(self.spec, B=shape.B, T=shape.T, H=shape.H, K=shape.K, V=shape.V,
                             dtype=getattr(torch, TORCH_DTYPES[shape.dtype]), device=device, seed=0,
                             initial_state=True, requires_grad=True)
        self.leaves = [t for v in self.a.values() for t in _tensors(v)
                       if isinstance(t, torch.Tensor) and t.requires_grad]  # initial states included
        self.backend = backend
        self._graph = None

    def fwd(self):
        import torch

        with torch.no_grad():
            return self.chunk_fn(**self.a, output_final_state=True, backend=self.backend)

    def recurrent(self):
        import torch

        with torch.no_grad():
            return self.recurrent_fn(**self.a, output_final_state=True, backend=self.backend)

    def bwd(self):
        """Gradients of every input from one backward over a forward graph built on first use
        (retained, so each call times the backward alone)."""
        import torch

        if self._graph is None:
            with torch.enable_grad():
                outs = _tensors(self.chunk_fn(**self.a, output_final_state=True, backend=self.backend))
            gen = torch.Generator().manual_seed(1)
            self._graph = (outs, [torch.randn(o.shape, generator=gen).to(o) for o in outs])
        outs, grads = self._graph
        return torch.autograd.grad(outs, self.leaves, grads, retain_graph=True, allow_unused=True)

    def phase(self, name: str):
        return {"fwd": self.fwd, "bwd": self.bwd, "recurrent": self.recurrent}[name]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict:
    import torch
    import triton

    from .. import __version__
    return {"torch": torch.__version__, "triton": triton.__version__, "gka_gen": __version__,
            "cuda": torch.version.cuda}


def _device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _open_table(path: Path, spec: str, spec_hash: str, kernels_hashes: dict, gpu: str, echo,
                recheck: bool = False) -> dict:
    """The file so far (to resume), less the backends tuned for other kernel sources (their picks
    kept as `prior`); a new table when there is none or it is unusable."""
    try:
        table, stale = cache.load(path, spec, spec_hash, kernels_hashes)
    except FileNotFoundError:
        pass
    except (OSError, cache.CacheError) as e:
        echo(f"  {path}: {e}; starting over")
    else:
        for backend, why in stale.items():
            echo(f"  {path}: {why}; " + ("rechecking its picks" if recheck else f"starting {backend} over"))
        table["kernels_hash"] = dict(kernels_hashes)
        return table
    return cache.new_table(spec, spec_hash, kernels_hashes, gpu, _versions(), _now())


def tune_package(package: str, shapes, *, budget_min: float | None = None, out: Path | None = None, device=None,
                 jobs: int | None = None, use_prefilter: bool = True, progress: bool = True, echo=print,
                 deadline: float | None = None, search=("triton",), race=("triton",), recheck: bool = False) -> Path:
    """Search every tunable kernel of ``package`` (e.g. "generated.kda") of each backend in
    ``search`` for each shape, then time the whole calls of each backend in ``race`` with its best
    configs (race_shape); returns the file written. BudgetExceeded when the budget ran out (the file
    then holds the partial search). A backend without tunable kernels for the package's family (the
    ridge TileLang programs) is skipped with a note. ``recheck``: instead of ``shapes``, the buckets
    of the file's `prior` picks, each kernel trying its default and that pick only."""
    import torch

    device = torch.device(device or "cuda")
    if deadline is None:
        deadline = time.monotonic() + (budget_min * 60 if budget_min else math.inf)
    spec_mod = importlib.import_module(package + ".spec")
    kernels_mod = importlib.import_module(package + ".triton_kernels")
    name, spec_hash, family = spec_mod.NAME, spec_mod.SPEC_HASH, spec_mod.CANONICAL["family"]
    if kernels_mod.common.SPEC_HASH != spec_hash:
        raise TuneError(f"{package}'s kernels were generated for spec hash {kernels_mod.common.SPEC_HASH!r}, "
                           f"its spec is {spec_hash!r}: run `gka-gen generate`")
    missing = set(configs.kernels(family)) - set(kernels_mod.TUNABLE)
    if missing:
        raise TuneError(f"{package} has no tunable kernels {sorted(missing)}: run `gka-gen generate`")
    gpu = _device_name(device)
    path = cache.tuned_path(out or cache.root(), gpu, name, spec_hash)
    table = _open_table(path, name, spec_hash, lookup.package_kernels_hashes(package), gpu, echo, recheck)
    if device.type == "cuda":  # what lets a GPU of the same architecture use the file (lookup.py)
        table["capability"] = list(torch.cuda.get_device_capability(device))
    verdict_memo: dict = {}
    plan = _recheck_plan(table, search) if recheck else [(shape, dict.fromkeys(search)) for shape in shapes]
    if recheck and not plan:
        echo(f"  {name}: nothing to recheck ({path} holds no picks of earlier kernel sources)")
    try:
        for shape, picks in plan:
            tried = _trial_count(table, shape)
            for backend, kernel_picks in picks.items():
                mod = kernels_mod if backend == "triton" else _tilelang_tunable(package, family, echo)
                if mod is not None:
                    _tune_shape(package, name, family, mod, shape, table, path, device, deadline, jobs,
                                use_prefilter and backend == "triton", verdict_memo, progress, echo, backend,
                                picks=kernel_picks)
                if recheck:
                    _drop_prior(table, path, backend, shape.bucket)
            race_shape(package, name, shape, table, path, device, race, echo,
                       retime=_trial_count(table, shape) != tried)
    finally:
        lookup.invalidate()
    return path


def _forget_spill_drops(entries: dict) -> None:
    """Files written before the search timed spilling candidates hold them as 'resources' trials
    ("spills ... B a thread"): forget those, and reopen their kernel's search, so a resumed run
    times them (prefilter.py says why)."""
    for entry in entries.values():
        trials = entry.get("trials", [])
        kept = [t for t in trials if not (t["status"] == "resources" and t.get("detail", "").startswith("spills"))]
        if len(kept) < len(trials):
            entry["trials"] = kept
            entry.pop("done", None)


def _trial_count(table, shape: Shape) -> int:
    """Trials so far at this shape, every backend's: a change means the race must be timed again."""
    return sum(len(e.get("trials", ())) for b in table["backends"].values()
               for e in b.get(shape.bucket, {}).get("kernels", {}).values())


def _tilelang_tunable(package: str, family: str, echo):
    """The package's TileLang kernel module when it has a config space to search, else None."""
    if not configs.kernels(family, "tilelang") or importlib.util.find_spec(package + ".tilelang_kernels") is None:
        echo(f"  {package}: no TileLang config space for the {family} family; its programs fix their threads")
        return None
    mod = importlib.import_module(package + ".tilelang_kernels.common")
    missing = set(configs.kernels(family, "tilelang")) - set(getattr(mod, "TUNABLE", ()))
    if missing:
        raise TuneError(f"{package}'s TileLang kernels have no tunable {sorted(missing)}: run `gka-gen generate`")
    return mod


def _tune_shape(package, name, family, kernels_mod, shape: Shape, table, path, device, deadline, jobs,
                use_prefilter, verdict_memo, progress, echo, backend="triton", picks=None):
    """One backend's search at one shape. ``kernels_mod`` has the backend's default_config; the
    resource model (use_prefilter) is Triton's: TileLang candidates are all compiled and timed.
    ``picks`` ({kernel: config}, a recheck): each kernel's candidates are its default and that
    config only, and its search stays open."""
    buckets = table["backends"].setdefault(backend, {})
    bucket = buckets.get(shape.bucket)
    if bucket is None or bucket.get("shape") != asdict(shape):  # a bucket re-tuned at another B starts over
        bucket = buckets[shape.bucket] = {"shape": asdict(shape), "kernels": {}}
    entries = bucket["kernels"]
    _forget_spill_drops(entries)
    names = configs.kernels(family, backend)
    if all(entries.get(k, {}).get("done") for k in names):
        echo(f"  {name} {shape.bucket} {backend}: done already")
        return
    defaults = {k: kernels_mod.default_config(k, shape.K, shape.V) for k in names}
    todo = {k: (configs.candidates(family, k, shape.K, shape.V, defaults[k], backend) if picks is None
                else _recheck_candidates(defaults[k], picks.get(k)))
            for k in names if not entries.get(k, {}).get("done")}
    # Resource verdicts of the candidates not tried yet (a resumed search compiles only those). The
    # compiled kernels depend on K, V, H and dtype, not on B or T: one verdict serves every T.
    rkey = (shape.K, shape.V, shape.H, shape.dtype)
    tried = {k: [t["config"] for t in entries.get(k, {}).get("trials", [])] for k in todo}
    need = {k: [c for c in cands if c not in tried[k] and (rkey, k, _key(c)) not in verdict_memo]
            for k, cands in todo.items()}
    need = {k: c for k, c in need.items() if c}
    if use_prefilter and need:
        try:
            found = prefilter.check(package, shape.K, shape.V, shape.H, shape.dtype, need, jobs)
        except Exception as e:  # noqa: BLE001 - no ptxas etc.: time everything instead
            echo(f"  resource model unavailable ({type(e).__name__}: {e}); every candidate will be timed")
        else:
            verdict_memo.update({(rkey, k, _key(c)): v for k, cs in need.items() for c, v in zip(cs, found[k])})
    verdicts = {k: [verdict_memo.get((rkey, k, _key(c))) for c in cands] for k, cands in todo.items()}
    calls = Calls(package, shape, device, backend=backend)
    best = {k: (entries[k]["config"] if k in entries else defaults[k]) for k in names}
    try:
        with lookup.overrides(name, defaults, backend):
            refs = {p: calls.phase(p)() for p in sorted({configs.phase(family, k, backend) for k in todo})}
    except Exception as e:  # noqa: BLE001 - the package itself fails here: nothing to compare against
        raise_if_context_lost(e, "the default configs")
        echo(f"  {name} {shape.bucket}: the default configs fail ({type(e).__name__}: {e}); shape skipped")
        return
    tol = TOLERANCE[shape.dtype]
    bar = _progress(sum(len(c) for c in todo.values()), f"{name} {shape.bucket} {backend}", progress)
    try:
        for kernel, cands in todo.items():
            entry = entries.setdefault(kernel, {"phase": configs.phase(family, kernel, backend), "trials": []})
            entry["default"] = defaults[kernel]  # the templates' default now (resumed files may predate it)
            fn = calls.phase(entry["phase"])

            def run(cfg, kernel=kernel, fn=fn):
                with lookup.overrides(name, {**best, kernel: cfg}, backend):
                    return fn()

            def time_it(cfg, kernel=kernel, fn=fn):
                with lookup.overrides(name, {**best, kernel: cfg}, backend):
                    return bench(fn, device)

            def on_start(t, entry=entry):
                entry["trials"].append(t)
                cache.save(path, table)

            def on_trial(t, entry=entry):
                trials = entry["trials"]
                if trials and trials[-1]["status"] == "crash" and trials[-1]["config"] == t["config"]:
                    trials.pop()  # on_start's provisional record: it did not crash
                trials.append(t)
                bar.update(1)
                b = best_of(entry["trials"])
                bar.set_postfix_str(f"{kernel}: " + ("-" if b is None else f"{b['ms']:.3f} ms"))

            bar.update(sum(c in tried[kernel] for c in cands))
            try:
                search(cands, run, time_it, refs[entry["phase"]], tol, deadline, tried=tried[kernel],
                       verdicts=verdicts[kernel], on_trial=on_trial, on_start=on_start)
                if picks is None:
                    entry["done"] = True
                    entry.pop("rechecked", None)
                else:
                    entry["rechecked"] = True
            finally:
                _record(entry, defaults[kernel], best, kernel)
                table["updated"] = _now()
                cache.save(path, table)
    finally:
        bar.close()
    for kernel in todo:
        echo(gain_line(name, shape.bucket, backend, kernel, entries[kernel]))


def _recheck_plan(table, backends) -> list:
    """The buckets of the table's `prior` picks for these backends: [(shape, {backend: {kernel:
    config}})]. A bucket recorded without its shape gets parse_shapes' defaults for B and H."""
    plan: dict = {}
    for backend in backends:
        for key, bucket in table.get("prior", {}).get(backend, {}).items():
            if bucket.get("shape"):
                shape = Shape(**bucket["shape"])
            else:
                dtype, K, V, T = cache.parse_bucket(key)
                shape, = parse_shapes(f"K={K} V={V} T={T} dtype={dtype}")
            plan.setdefault(shape, {})[backend] = bucket["kernels"]
    return list(plan.items())


def _recheck_candidates(default: dict, pick: dict | None) -> list[dict]:
    """The default, then the earlier pick on the default's parameters (lookup.merge_config, as a
    launch would read it)."""
    carried = lookup.merge_config(default, pick) if pick else default
    return [dict(default)] + ([carried] if carried != default else [])


def _drop_prior(table, path, backend: str, bucket: str) -> None:
    """A rechecked bucket's earlier picks are spent: out of the file."""
    prior = table.get("prior", {})
    if backend in prior:
        prior[backend].pop(bucket, None)
        if not prior[backend]:
            del prior[backend]
    if not prior:
        table.pop("prior", None)
    cache.save(path, table)


def config_text(cfg: dict) -> str:
    """A launch config as `BK=32 num_warps=8` (the log, bench/tuned.py's page)."""
    return " ".join(f"{k}={v}" for k, v in cfg.items())


def gain_line(name: str, bucket: str, backend: str, kernel: str, entry: dict) -> str:
    """One kernel's outcome for the log: its config and the time of its call, default -> tuned."""
    cfg = config_text(entry["config"])
    if entry.get("ms") is None or entry.get("default_ms") is None:
        return f"  {name} {bucket} {backend} {kernel}: {cfg} (nothing timed against the default)"
    note = ", the earlier pick rechecked" if entry.get("rechecked") else ""
    return (f"  {name} {bucket} {backend} {kernel}: {cfg}, {entry['default_ms']:.3f} -> {entry['ms']:.3f} ms "
            f"({entry['default_ms'] / entry['ms']:.2f}x){note}")


# ----------------------------------------------------------------------------- the backend race
def _tilelang_phases(package: str) -> tuple[str, ...]:
    """The phases the package's TileLang kernels can run on their own (none without TileLang kernels):
    those of every call (op_runtime.call_parts, what a generated op asks for) whose kernels it has."""
    from ..codegen.op_runtime import call_parts

    if importlib.util.find_spec(package + ".tilelang_kernels") is None:
        return ()
    have = importlib.import_module(package + ".tilelang_kernels").KERNELS
    runnable = {p for mode, grad in (("chunk", False), ("chunk", True), ("fused_recurrent", False))
                for kernels, phases in [call_parts(mode, grad)] if set(kernels) <= set(have) for p in phases}
    return tuple(p for p in cache.PHASES if p in runnable)


def race_shape(package, name, shape: Shape, table, path, device, backends, echo, retime: bool = False) -> None:
    """Time each phase (chunked forward, its backward, recurrent forward) of every backend in
    ``backends`` with its best configs, one backend after the other in this process: the numbers
    `backend="auto"` chooses by. Triton always runs (the baseline and the reference outputs); a
    TileLang phase whose outputs differ from Triton's beyond TOLERANCE gets no time, so auto never
    picks it. Phases already timed are kept (a resumed run) unless ``retime`` (a search just
    changed configs)."""
    tri = table["backends"].setdefault("triton", {}).setdefault(shape.bucket, {"shape": asdict(shape),
                                                                               "kernels": {}})
    best = {k: e["config"] for k, e in tri["kernels"].items()}
    tl_best = {k: e["config"] for k, e in
               table["backends"].get("tilelang", {}).get(shape.bucket, {}).get("kernels", {}).items()}
    want = {"triton": ("fwd", "bwd", "recurrent")}
    if "tilelang" in backends:
        want["tilelang"] = _tilelang_phases(package)
        if not want["tilelang"]:
            echo(f"  {name}: no TileLang kernels; the race is Triton only")
    refs = {}

    def reference(phase):  # Triton's outputs of a phase, the yardstick of TileLang's
        if phase not in refs:
            with lookup.overrides(name, best):
                refs[phase] = Calls(package, shape, device).phase(phase)()
        return refs[phase]

    for backend, phases in want.items():
        bucket = tri if backend == "triton" else table["backends"].setdefault(backend, {}).setdefault(
            shape.bucket, {"shape": asdict(shape), "kernels": {}})
        if bucket.get("shape") != asdict(shape):  # timed before at another B: those times mean another shape
            bucket.update(shape=asdict(shape), phases={}, rel_diff={})
        done = bucket.setdefault("phases", {})
        todo = [p for p in phases if p not in done or retime]
        calls = Calls(package, shape, device, backend=backend) if todo else None
        for phase in todo:
            fn = calls.phase(phase)
            done.pop(phase, None)
            try:
                with lookup.overrides(name, best), lookup.overrides(name, tl_best, "tilelang"):
                    outs = fn()
                    if backend == "triton":
                        refs[phase] = outs
                    else:
                        err = bucket.setdefault("rel_diff", {})[phase] = max_rel_diff(outs, reference(phase))
                        if err > TOLERANCE[shape.dtype]:
                            echo(f"  {name} {shape.bucket} {backend} {phase}: differs from Triton (max rel diff "
                                 f"{err:.3g}); left out of the race")
                            continue
                    done[phase] = round(bench(fn, device), 4)
            except Exception as e:  # noqa: BLE001 - a phase that fails is left out of the race
                raise_if_context_lost(e, f"{backend} {phase}")
                echo(f"  {name} {shape.bucket} {backend} {phase}: {type(e).__name__}: {str(e).strip()[:300]}")
                continue
            echo(f"  {name} {shape.bucket} {backend:8s} {phase:9s} {done[phase]:8.3f} ms")
        if todo:
            table["updated"] = _now()
            cache.save(path, table)


def _key(cfg: dict) -> str:
    return json.dumps(cfg, sort_keys=True)


def _record(entry, default, best, kernel):
    """The entry's best verified config so far (the default when nothing ran yet)."""
    b = best_of(entry["trials"])
    dflt = [t for t in entry["trials"] if t["config"] == default and t["status"] == "ok"]
    entry["config"] = b["config"] if b else dict(default)
    entry["ms"] = b["ms"] if b else None
    entry["default_ms"] = dflt[0]["ms"] if dflt else None
    entry.setdefault("done", False)
    best[kernel] = entry["config"]


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="cfg", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


# ----------------------------------------------------------------------------- the command
def shape_text(shapes) -> str:
    """parse_shapes' input for exactly these shapes (one grid each)."""
    return "; ".join(f"K={s.K} V={s.V} T={s.T} B={s.B} H={s.H} dtype={s.dtype}" for s in shapes)


def autotune_command(spec_paths, backend: str, shapes, out: Path | None = None, recheck: bool = False) -> list[str]:
    """`gka-gen autotune` for these specs, backend and exactly these shapes (or --recheck), as a
    subprocess argv."""
    cmd = [sys.executable, "-m", "gka_gen.cli", "autotune", *map(str, spec_paths), "--backend", backend,
           *(["--recheck"] if recheck else ["--shapes", shape_text(shapes)])]
    return cmd + (["--out", str(out)] if out is not None else [])


def warm_caches(spec_paths, shapes, workers: int, echo=print) -> None:
    """Compile every kernel the race will time, in ``workers`` processes at once (one spec each,
    results thrown away): the race then loads them from Triton's and TileLang's disk caches and
    times one backend after the other without paying minutes of serial compiles. A worker that
    fails only costs its warm-up: the timed run compiles what is missing."""
    import subprocess
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    def one(path):
        with tempfile.TemporaryDirectory(prefix="gka-gen-warm-") as tmp:
            r = subprocess.run(autotune_command([path], "tilelang", shapes, Path(tmp)), capture_output=True, text=True)
        return path, r.returncode, (r.stderr or r.stdout).strip().splitlines()[-1:] if r.returncode else []

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, rc, tail in pool.map(one, spec_paths):
            echo(f"  warmed {Path(path).stem}" + (f" (exit {rc}: {' '.join(tail)})" if rc else ""))
    echo(f"warm-up: {time.monotonic() - t0:.0f} s in {workers} processes")


def run(spec_paths, shapes, *, backend: str = "triton", budget_min: float | None = None, out: Path | None = None,
        jobs: int | None = None, warm_workers: int = 0, recheck: bool = False, echo=print) -> bool:
    """`gka-gen autotune`: every spec in turn, one file each. False when the budget ran out.

    backend "triton": search the Triton configs, then time Triton's calls; "tilelang": search the
    TileLang configs (threads; the linear family), then time the TileLang calls beside Triton's
    current ones, the race `backend="auto"` reads; "all": both searches and the race.
    warm_workers > 0 compiles the race's kernels (default configs) in that many processes first
    (warm_caches). recheck: the buckets of each file's earlier picks instead of ``shapes``
    (tune_package)."""
    import torch

    from ..codegen.generate import import_generated
    from ..spec import load_spec

    if not torch.cuda.is_available():
        raise TuneError("gka-gen autotune needs a CUDA GPU (torch.cuda.is_available() is False)")
    if warm_workers > 0:
        warm_caches(spec_paths, shapes, warm_workers, echo)
    deadline = time.monotonic() + (budget_min * 60 if budget_min else math.inf)
    for i, p in enumerate(spec_paths):
        spec = load_spec(Path(p))
        package = import_generated(spec, p).__name__
        echo(f"{spec.name} (hash {spec.hash}) on {torch.cuda.get_device_name()}: "
             + ("rechecking earlier picks" if recheck else f"{len(shapes)} shapes"))
        try:
            path = tune_package(package, shapes, out=out, jobs=jobs, echo=echo, deadline=deadline,
                                search={"triton": ("triton",), "tilelang": ("tilelang",),
                                        "all": ("triton", "tilelang")}[backend],
                                race=("triton", "tilelang") if backend in ("tilelang", "all") else ("triton",),
                                recheck=recheck)
        except BudgetExceeded:
            echo(f"budget of {budget_min} min used up during {spec.name}; run the same command again to resume")
            return False
        except ContextLost as e:
            echo(f"  {spec.name}: the GPU faulted ({e}); the config stays on record as 'crash', "
                 "going on in a new process")
            return _go_on_in_new_process(spec_paths[i:], shapes, backend, deadline, out, jobs, recheck)
        echo(f"  wrote {path}")
    return True


MAX_RESTARTS = 16  # GPU faults in one command before it gives up (each one skips the config that faulted)


def _go_on_in_new_process(spec_paths, shapes, backend, deadline, out, jobs, recheck=False) -> bool:
    """The same command for the specs left, in a fresh process (a fresh CUDA context) with the budget
    left: it resumes from the file, past the config that faulted. False when its budget ran out."""
    import os
    import subprocess

    restarts = int(os.environ.get("GKA_GEN_AUTOTUNE_RESTARTS", "0")) + 1
    if restarts > MAX_RESTARTS:
        raise TuneError(f"the GPU faulted {MAX_RESTARTS} times in one run; the configs that did are marked "
                        "'crash' in the tuned file")
    cmd = autotune_command(spec_paths, backend, shapes, out, recheck)
    if jobs:
        cmd += ["--jobs", str(jobs)]
    if deadline != math.inf:
        cmd += ["--budget-min", f"{max(0.01, (deadline - time.monotonic()) / 60):.3f}"]
    rc = subprocess.call(cmd, env={**os.environ, "GKA_GEN_AUTOTUNE_RESTARTS": str(restarts)})
    if rc not in (0, 3):
        raise TuneError(f"the resumed run ({' '.join(cmd[1:])}) exited with {rc}")
    return rc == 0
