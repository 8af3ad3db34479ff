"""The launch config a generated kernel uses for one call.

Each kernel launcher of a generated package calls `launch_config(..., default, x=q, K=.., V=.., T=..)`
(TileLang's with backend="tilelang": the two backends' kernels share names, not configs) and
launches with what comes back. In order:

1. a config the search (tune.py) is trying right now, for this spec and kernel;
2. on a CUDA tensor: the tuned config of this kernel in autotune/<GPU>/<spec>-<spec hash>.json for
   the nearest shape bucket (same dtype, K and V; nearest T). The file is read once, at the first
   CUDA call of the spec. Without a file for this GPU, one tuned on another GPU of the same compute
   capability serves (an H200's on an H100: the same sm_90 code and per-SM limits, so its configs
   run and compute the same here), with one warning; with neither, or an unusable file, one warning
   and the defaults from then on;
3. the kernel's default (its template's default_config).

Nothing is ever searched at run time unless GKA_GEN_AUTOTUNE=1: then a CUDA call whose shape
bucket is not in the file runs the search for that bucket first (GKA_GEN_AUTOTUNE_BUDGET_MIN
minutes, default 10), writes the file, and uses the result.
"""
from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

from . import cache

DTYPE_NAMES = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}

_OVERRIDES: dict[tuple[str, str, str], dict] = {}  # (spec, backend, kernel) -> config being measured by tune.py
_TABLES: dict[tuple[str, str, str], dict] = {}  # (spec, hash, gpu) -> the file's "backends"
_RESOLVED: dict[tuple, dict] = {}  # memo: one dict lookup per launch (or per auto choice) once a shape has been seen
_WARNED: set = set()
_GPU_NAMES: dict[int, str] = {}
_CAPABILITIES: dict[str, list[int]] = {}  # GPU name -> [major, minor] compute capability, of the GPUs seen
_BORROWED: dict[tuple[str, str, str], str] = {}  # (spec, hash, gpu) -> the other GPU whose file serves it
_TUNING = False  # a search is running in this process: never start another from inside it


def launch_config(spec: str, spec_hash: str, package: str, kernel: str, default: dict, *, x, K: int, V: int,
                  T: int, backend: str = "triton") -> dict:
    """The launch keyword arguments of ``backend``'s ``kernel`` for a call on ``x`` (device, dtype)
    with T tokens per sequence. Always the keys of ``default``: a tuned file can change values,
    never add keys."""
    override = _OVERRIDES.get((spec, backend, kernel))
    if override is not None:
        return merge_config(default, override)
    gpu = gpu_name(x)
    dtype = DTYPE_NAMES.get(str(x.dtype))
    if gpu is None or not spec_hash or dtype is None:
        return dict(default)
    memo = (spec, spec_hash, gpu, backend, kernel, dtype, K, V, cache.t_bucket(T))
    tuned = _RESOLVED.get(memo)
    if tuned is None:
        tuned = _RESOLVED[memo] = _resolve(spec, spec_hash, package, backend, kernel, gpu, dtype, K, V, T, x)
    return merge_config(default, tuned)


def package_kernels_hashes(package: str) -> dict:
    """{backend: cache.kernels_hash} of a generated package's kernels, for the backends it has
    ("triton" from triton_kernels/, "tilelang" from tilelang_kernels/)."""
    import importlib.util

    hashes = {}
    for backend in ("triton", "tilelang"):
        found = importlib.util.find_spec(f"{package}.{backend}_kernels")
        if found is not None:
            hashes[backend] = cache.kernels_hash(Path(found.origin).parent)
    return hashes


def gpu_name(x) -> str | None:
    """torch.cuda.get_device_name of x's device ('NVIDIA H200'), None for a tensor not on CUDA."""
    device = getattr(x, "device", None)
    if device is None or device.type != "cuda":
        return None
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _GPU_NAMES:
        _GPU_NAMES[index] = name = torch.cuda.get_device_name(index)
        _CAPABILITIES[name] = list(torch.cuda.get_device_capability(index))
    return _GPU_NAMES[index]


def tuned_backends(spec: str, spec_hash: str, package: str, gpu: str) -> dict:
    """{backend: {bucket: {"kernels": {kernel: entry}, "phases": {phase: ms}}}} of this spec's file
    for ``gpu``; {} (after one warning) when the file is missing or unusable."""
    key = (spec, spec_hash, gpu)
    if key not in _TABLES:
        own = cache.tuned_path(cache.root(), gpu, spec, spec_hash)
        path = own if own.is_file() else _same_architecture_file(own, gpu) or own
        try:
            table, stale = cache.load(path, spec, spec_hash, package_kernels_hashes(package))
            backends = table["backends"]
            for backend, why in stale.items():
                _warn_once(key + (backend,), f"gka-gen: ignoring the {backend} configs of {path}: {why}. "
                                            f"Using {backend}'s default launch configs.")
            if path != own:
                _BORROWED[key] = table["gpu"]
                capability = ".".join(map(str, table["capability"]))
                _warn_once(key + ("borrowed",),
                           f"gka-gen: no tuned launch configs for {spec} on {gpu}; using those tuned on "
                           f"{table['gpu']} ({path}), a GPU of the same compute capability {capability}. "
                           "`gka-gen autotune` on this GPU tunes for it.")
        except FileNotFoundError:
            others = sorted(p.name for p in path.parent.glob(f"{spec}-*.json"))
            stale = f" (only for other versions of the spec: {', '.join(others)})" if others else ""
            _warn_once(key, f"gka-gen: no tuned launch configs for {spec} (spec hash {spec_hash}) on {gpu}: "
                            f"{path} is missing{stale}. Using the defaults; `gka-gen autotune` on this GPU "
                            "writes the file.")
            backends = {}
        except (OSError, UnicodeDecodeError, cache.CacheError) as e:
            _warn_once(key, f"gka-gen: ignoring {path}: {e}. Using the default launch configs.")
            backends = {}
        _TABLES[key] = backends
    return _TABLES[key]


def _same_architecture_file(own: Path, gpu: str) -> Path | None:
    """The same spec version's tuned file of another GPU with ``gpu``'s compute capability (the
    file records it), or None."""
    capability = _CAPABILITIES.get(gpu)
    if capability is None:
        return None
    for path in sorted(own.parent.parent.glob(f"*/{own.name}")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("capability") == capability and data.get("gpu") != gpu:
            return path
    return None


def borrowed_from(spec: str, spec_hash: str, gpu: str) -> str | None:
    """The GPU whose tuned file serves ``spec`` on ``gpu`` (same compute capability, no file of its
    own), None when it has its own or none; after tuned_backends read it."""
    return _BORROWED.get((spec, spec_hash, gpu))


def tuned_buckets(spec: str, spec_hash: str, package: str, gpu: str, backend: str = "triton") -> dict:
    """One backend's buckets of tuned_backends."""
    return tuned_backends(spec, spec_hash, package, gpu).get(backend, {})


def faster_backend(spec: str, spec_hash: str, package: str, *, x, K: int, V: int, T: int, phases) -> str | None:
    """Which backend the tuned file measured faster for a call made of ``phases`` ("fwd", "bwd",
    "recurrent"): "tilelang" or "triton", at the nearest shape bucket that timed both backends for
    all of them (same dtype, K and V; nearest T). None when nothing measured says (no file, no such
    bucket, not CUDA): the caller's default then holds."""
    gpu = gpu_name(x)
    dtype = DTYPE_NAMES.get(str(x.dtype))
    if gpu is None or dtype is None:
        return None
    memo = ("race", spec, spec_hash, gpu, dtype, K, V, cache.t_bucket(T), tuple(phases))
    if memo not in _RESOLVED:
        backends = tuned_backends(spec, spec_hash, package, gpu)
        times = {b: {key: bucket.get("phases", {}) for key, bucket in backends.get(b, {}).items()}
                 for b in ("triton", "tilelang")}
        both = [key for key in times["tilelang"]
                if all(p in times["tilelang"][key] and p in times["triton"].get(key, {}) for p in phases)]
        near = cache.nearest_bucket(both, dtype, K, V, T)
        winner = None if near is None else race_winner({b: times[b][near] for b in times}, phases)
        _RESOLVED[memo] = {"backend": winner}
    return _RESOLVED[memo]["backend"]


def race_winner(times: dict, phases) -> str | None:
    """The backend whose ``phases`` took less time in total, from one bucket's race ({backend:
    {phase: ms}}): "tilelang" or "triton"; None when either backend lacks one of the phases."""
    if not all(p in times.get(b, {}) for b in ("triton", "tilelang") for p in phases):
        return None
    total = {b: sum(times[b][p] for p in phases) for b in ("triton", "tilelang")}
    return "tilelang" if total["tilelang"] < total["triton"] else "triton"


def invalidate() -> None:
    """Forget what was read (after a search wrote a file; tests)."""
    _TABLES.clear()
    _RESOLVED.clear()
    _BORROWED.clear()


@contextmanager
def overrides(spec: str, configs: dict, backend: str = "triton"):
    """Within the block, ``backend``'s kernels of ``spec`` launch with ``configs`` ({kernel: config})."""
    mine = lambda k: k[:2] == (spec, backend)  # noqa: E731
    saved = {k: v for k, v in _OVERRIDES.items() if mine(k)}
    for k in saved:
        del _OVERRIDES[k]
    _OVERRIDES.update({(spec, backend, kernel): dict(cfg) for kernel, cfg in configs.items()})
    try:
        yield
    finally:
        for k in [k for k in _OVERRIDES if mine(k)]:
            del _OVERRIDES[k]
        _OVERRIDES.update(saved)


def merge_config(default: dict, tuned: dict) -> dict:
    """``tuned`` on ``default``'s parameters: one the kernel does not take is dropped, one ``tuned``
    lacks keeps its default."""
    return {k: int(tuned.get(k, v)) for k, v in default.items()}


def _resolve(spec, spec_hash, package, backend, kernel, gpu, dtype, K, V, T, x) -> dict:
    buckets = tuned_buckets(spec, spec_hash, package, gpu, backend)
    # a bucket holding only the backend race (no Triton search ran) counts as not tuned, and so does
    # one tuned on another GPU; a run-time search is Triton's only (TileLang's compiles take minutes)
    untuned = (not buckets.get(cache.bucket_key(dtype, K, V, T), {}).get("kernels")
               or borrowed_from(spec, spec_hash, gpu) is not None)
    if backend == "triton" and untuned and os.environ.get("GKA_GEN_AUTOTUNE") == "1" and not _TUNING:
        buckets = _tune_now(package, spec, spec_hash, gpu, dtype, K, V, T, x)
    near = cache.nearest_bucket(buckets, dtype, K, V, T)
    entry = buckets[near]["kernels"].get(kernel) if near else None
    return dict(entry["config"]) if entry else {}


def _tune_now(package, spec, spec_hash, gpu, dtype, K, V, T, x) -> dict:
    """GKA_GEN_AUTOTUNE=1: search this call's shape bucket now (B from the call's token count)."""
    global _TUNING
    from .tune import BudgetExceeded, Shape, tune_package

    Tb = cache.t_bucket(T)
    shape = Shape(dtype=dtype, B=max(1, x.shape[0] * x.shape[1] // Tb), T=Tb, H=x.shape[2], K=K, V=V)
    _TUNING = True
    try:
        tune_package(package, [shape], budget_min=float(os.environ.get("GKA_GEN_AUTOTUNE_BUDGET_MIN", "10")),
                     out=cache.root(), device=x.device)
    except BudgetExceeded:
        pass  # the file holds the best verified configs found in the budget
    except Exception as e:  # noqa: BLE001 - a failed search must not fail the user's call
        _warn_once(("tune", spec, spec_hash, gpu), f"gka-gen: GKA_GEN_AUTOTUNE=1 search for {spec} failed "
                                                  f"({type(e).__name__}: {e}); using what is tuned so far.")
    finally:
        _TUNING = False
    invalidate()
    return tuned_buckets(spec, spec_hash, package, gpu)


def _warn_once(key, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)
