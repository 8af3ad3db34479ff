"""The tuned-config file of one spec on one GPU: format, paths, shape buckets, load and save.

    autotune/<sanitized GPU name>/<spec>-<spec hash>.json

    {"format": 2, "spec": "kda", "spec_hash": "2ff1ee236694",
     "kernels_hash": {"triton": "5d41402abc4b", "tilelang": "7d793037a076"},
     "gpu": "NVIDIA H200", "capability": [9, 0],
     "versions": {"torch": ..., "triton": ..., "gka_gen": ...}, "created": ISO date, "updated": ISO date,
     "backends": {"triton": {"bf16/K128/V128/T4096": {
         "shape": {"dtype": "bf16", "B": 4, "T": 4096, "H": 16, "K": 128, "V": 128},
         "kernels": {"chunk_grad_bwd": {
             "phase": "bwd", "config": {...best...}, "ms": 1.23, "default": {...}, "default_ms": 1.41,
             "done": true, "trials": [{"config": {...}, "status": "ok", "ms": 1.23, "first_call_s": 4.1, ...}, ...]}},
         "phases": {"fwd": 0.41, "bwd": 1.23, "recurrent": 2.0}}},
                  "tilelang": {"bf16/K128/V128/T4096": {"shape": {...}, "kernels": {"chunk_state_fwd": {...}},
         "phases": {"fwd": 0.39, "bwd": 1.5}, "rel_diff": {"fwd": 0.003, ...}}}}}

`ms` is the median time of the kernel's whole phase (forward, backward or recurrent forward), since
a kernel is tuned inside the call that uses it. `trials` keeps every candidate's outcome so an
interrupted search resumes where it stopped. `phases` are each backend's whole-call times with
its best configs (TileLang's: the linear family's thread counts, configs.TILELANG_SPACES),
measured one backend after the other in one process, and TileLang's agreement with Triton
(`rel_diff`): `backend="auto"` picks the faster backend per call from them
(lookup.faster_backend). The spec hash is part of the file name and is checked
inside: a changed spec never reads configs tuned for another version of it. Each backend's kernels
hash (of its generated kernel code, comment lines left out) is checked too: a config tuned for
other kernel code (templates changed since) could now exceed shared memory, so that backend's
entries are dropped when the file is read (the other backend's stay: a TileLang change does not
void Triton's search).
Their picks move to `prior` ({backend: {bucket: {"shape": ..., "kernels": {kernel: config}}}}),
which nothing launches with: `gka-gen autotune --recheck` times each against the new default and
keeps what still reproduces the default's outputs and is faster (tune.py).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path

FORMAT = 2  # 1: one kernels hash over both backends
ROOT = Path(__file__).resolve().parents[2] / "autotune"
DTYPES = ("fp32", "bf16", "fp16")
PHASES = ("fwd", "bwd", "recurrent")  # a call's parts that are timed whole: what `backend="auto"` races
_BUCKET = re.compile(r"^(fp32|bf16|fp16)/K(\d+)/V(\d+)/T(\d+)$")


class CacheError(ValueError):
    """A tuned-config file that cannot be used (unreadable, wrong format, another spec version)."""


def root() -> Path:
    """Where tuned files live: $GKA_GEN_AUTOTUNE_DIR, else autotune/ at the repository root."""
    return Path(os.environ.get("GKA_GEN_AUTOTUNE_DIR") or ROOT)


def sanitize_gpu_name(name: str) -> str:
    """A folder name for a device name: 'NVIDIA H200' -> 'NVIDIA_H200', 'NVIDIA H100 80GB HBM3' ->
    'NVIDIA_H100_80GB_HBM3'. Anything but letters, digits, '.', '-' becomes one '_'."""
    s = re.sub(r"[^A-Za-z0-9.\-]+", "_", name.strip()).strip("_")
    if not s:
        raise ValueError(f"no usable GPU name in {name!r}")
    return s


def tuned_path(base: Path, gpu: str, spec: str, spec_hash: str) -> Path:
    return Path(base) / sanitize_gpu_name(gpu) / f"{spec}-{spec_hash}.json"


def kernels_hash(directory) -> str:
    """Hash of one backend's kernel sources (a generated package's triton_kernels/ or
    tilelang_kernels/): file names and the lines of its *.py files, less blank lines and lines that
    hold only a comment, so a template's comment fixed does not void the searches tuned on its code
    (an hour of GPU time for a spec). Plain text, not Python's tokenizer or syntax tree, whose output
    differs between Python versions (f-strings, new node fields): the hash must be equal on every
    machine and Python that runs the same generated code."""
    h = hashlib.sha256()
    for p in sorted(Path(directory).glob("*.py")):
        code = [line.rstrip() for line in p.read_bytes().splitlines()]  # bytes: no locale's decoding
        kept = b"\n".join(line for line in code if line and not line.lstrip().startswith(b"#"))
        h.update(p.name.encode() + b"\0" + kept + b"\0")
    return h.hexdigest()[:12]


def spec_hash(path) -> str:
    """The hash `gka-gen` gives a spec file (the one generated packages carry as SPEC_HASH)."""
    from ..spec import load_spec

    return load_spec(Path(path)).hash


# ----------------------------------------------------------------------------- shape buckets
def t_bucket(T: int) -> int:
    """Tokens per sequence, rounded to the nearest power of two in log scale (2048 -> 2048,
    3000 -> 4096, 5000 -> 4096, 6000 -> 8192): configs tuned at T serve T/sqrt(2) .. T*sqrt(2)."""
    return 1 << max(0, round(math.log2(max(int(T), 1))))


def bucket_key(dtype: str, K: int, V: int, T: int) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {DTYPES}")
    return f"{dtype}/K{int(K)}/V{int(V)}/T{t_bucket(T)}"


def parse_bucket(key: str) -> tuple[str, int, int, int]:
    m = _BUCKET.match(key)
    if not m:
        raise CacheError(f"bad shape bucket {key!r} (expected dtype/K<k>/V<v>/T<t>)")
    return m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))


def nearest_bucket(keys, dtype: str, K: int, V: int, T: int) -> str | None:
    """The bucket for a call: same dtype, K and V, the closest T in log scale (ties: the smaller
    T). None when no bucket has this dtype, K and V: their best tiles differ, so no guessing."""
    best, best_d = None, None
    for key in keys:
        d, k, v, t = parse_bucket(key)
        if (d, k, v) != (dtype, K, V):
            continue
        dist = (abs(math.log2(t) - math.log2(max(T, 1))), t)
        if best_d is None or dist < best_d:
            best, best_d = key, dist
    return best


# ----------------------------------------------------------------------------- the file
def new_table(spec: str, spec_hash_: str, kernels_hashes: dict, gpu: str, versions: dict, now: str) -> dict:
    return {"format": FORMAT, "spec": spec, "spec_hash": spec_hash_, "kernels_hash": dict(kernels_hashes),
            "gpu": gpu, "versions": dict(versions), "created": now, "updated": now, "backends": {}}


def _check_config(cfg, where):
    if not isinstance(cfg, dict) or not cfg or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in cfg.items()):
        raise CacheError(f"{where}: a config must be a non-empty {{name: int}} object, got {cfg!r}")


SHAPE_FIELDS = {"dtype": str, "B": int, "T": int, "H": int, "K": int, "V": int}


def _check_shape(shape, where):
    """A bucket's recorded shape (tune.Shape's fields), or None where none was recorded."""
    if shape is not None and not (isinstance(shape, dict) and set(shape) == set(SHAPE_FIELDS) and all(
            type(shape[f]) is t for f, t in SHAPE_FIELDS.items()) and shape["dtype"] in DTYPES
            and min(shape[f] for f in "BTHKV") > 0):
        raise CacheError(f"{where}: 'shape' must be {{{', '.join(SHAPE_FIELDS)}}}, got {shape!r}")


def _bucket_kernels(key, bucket, where) -> dict:
    """A bucket's "kernels" (searched or `prior`), once its key is a bucket's and they are an object."""
    parse_bucket(key)
    kernels = bucket.get("kernels") if isinstance(bucket, dict) else None
    if not isinstance(kernels, dict):
        raise CacheError(f"{where}: missing 'kernels'")
    return kernels


def validate(data, spec: str, spec_hash_: str) -> dict:
    """``data`` if it is a well-formed table for this spec version, else CacheError."""
    if not isinstance(data, dict):
        raise CacheError("not a JSON object")
    if data.get("format") != FORMAT:
        raise CacheError(f"format {data.get('format')!r}, expected {FORMAT}")
    if data.get("spec") != spec:
        raise CacheError(f"tuned for spec {data.get('spec')!r}, not {spec!r}")
    if data.get("spec_hash") != spec_hash_:
        raise CacheError(f"tuned for spec hash {data.get('spec_hash')!r}; the spec is now {spec_hash_!r}")
    hashes = data.get("kernels_hash")
    if not isinstance(hashes, dict) or not all(isinstance(h, str) for h in hashes.values()):
        raise CacheError(f"'kernels_hash' must map each backend to its kernels' hash, got {hashes!r}")
    capability = data.get("capability", [0, 0])
    if not (isinstance(capability, list) and len(capability) == 2 and all(type(c) is int for c in capability)):
        raise CacheError(f"'capability' must be [major, minor], got {capability!r}")
    backends = data.get("backends")
    if not isinstance(backends, dict) or not isinstance(data.get("gpu"), str):
        raise CacheError("missing 'gpu' or 'backends'")
    prior = data.get("prior", {})
    if not isinstance(prior, dict) or not all(isinstance(b, dict) for b in prior.values()):
        raise CacheError("'prior' must map each backend to its buckets")
    for backend, buckets in prior.items():
        for key, bucket in buckets.items():
            kernels = _bucket_kernels(key, bucket, f"prior.{backend}/{key}")
            _check_shape(bucket.get("shape"), f"prior.{backend}/{key}")
            for name, cfg in kernels.items():
                _check_config(cfg, f"prior.{backend}/{key}/{name}")
    for backend, buckets in backends.items():
        if not isinstance(buckets, dict):
            raise CacheError(f"backends.{backend} is not an object")
        for key, bucket in buckets.items():
            kernels = _bucket_kernels(key, bucket, f"{backend}/{key}")
            phases = bucket.get("phases", {})
            if not isinstance(phases, dict) or not all(
                    p in PHASES and isinstance(ms, (int, float)) and not isinstance(ms, bool) and ms > 0
                    for p, ms in phases.items()):
                raise CacheError(f"{backend}/{key}: 'phases' must map {'/'.join(PHASES)} to positive ms, "
                                 f"got {phases!r}")
            for name, entry in kernels.items():
                if not isinstance(entry, dict):
                    raise CacheError(f"{backend}/{key}/{name} is not an object")
                _check_config(entry.get("config"), f"{backend}/{key}/{name}")
    return data


def load(path: Path, spec: str, spec_hash_: str, kernels_hashes: dict) -> tuple[dict, dict]:
    """Read and validate one tuned file: (the table, holding only the backends tuned for the kernel
    sources ``kernels_hashes`` ({backend: kernels_hash}); {dropped backend: why}). A dropped
    backend's picks go to the table's `prior` (replacing older ones of that backend).
    FileNotFoundError when absent, CacheError when unusable."""
    text = Path(path).read_text()
    try:
        data = validate(json.loads(text), spec, spec_hash_)
    except json.JSONDecodeError as e:
        raise CacheError(f"not valid JSON ({e})") from None
    stale = {}
    for backend in list(data["backends"]):
        then, now = data["kernels_hash"].get(backend), kernels_hashes.get(backend)
        if then != now:
            stale[backend] = (f"tuned for other {backend} kernel sources (kernels hash {then!r}, now {now!r}: "
                              "the templates changed since); tune that backend again, or time its earlier "
                              "picks against the new defaults with `gka-gen autotune --recheck`")
            picks = {key: {"shape": b.get("shape"), "kernels": {k: e["config"] for k, e in b["kernels"].items()}}
                     for key, b in data["backends"].pop(backend).items() if b["kernels"]}
            if picks:
                data.setdefault("prior", {})[backend] = picks
            data["kernels_hash"].pop(backend, None)
    return data, stale


def save(path: Path, data: dict) -> None:
    """Write atomically (a reader never sees half a file; an interrupted write leaves the old one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
