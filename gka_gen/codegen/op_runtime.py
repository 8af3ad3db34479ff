"""Run-time helpers shared by every generated ``generated/<name>/ops.py`` (the functional API).

Kept to torch only (no sympy, no pydantic), because every generated package imports it: the
spec-specific decisions were made at generation time and are rendered into ops.py as tables
and plain code; what lives here is what is the same for every spec: backend choice, the
argument checks and their messages.

Everything on the normal (no error) path is written so that torch.compile can trace it
without a graph break: attribute reads, comparisons, no data-dependent Python branching.
Checks that need tensor *values* (cu_seqlens, positivity of a per-head lambda) read them with
``.tolist()``; they are skipped while compiling, where that would break the graph.
"""
from __future__ import annotations

import math
import sys
import warnings

import torch

BACKENDS = ("auto", "triton", "tilelang", "reference")
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}
INT_DTYPES = (torch.int32, torch.int64)


def is_compiling() -> bool:
    return torch.compiler.is_compiling()


# ----------------------------------------------------------------------------- backends


def kernels_interpreted(pkg) -> bool:
    """Whether the Triton kernels of ``pkg`` (an imported kernel package) run in the interpreter.

    Triton picks interpreter or compiler when a kernel is *decorated* (``@triton.jit`` reads
    TRITON_INTERPRET at that moment), so the environment variable today says nothing about
    kernels imported earlier. Look at the kernels themselves instead.
    """
    if pkg is None:
        return False
    try:
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction
    except ImportError:  # pragma: no cover - triton is a dependency
        return False
    prefix = pkg.__name__ + "."
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == pkg.__name__ or mod_name.startswith(prefix)):
            continue
        for obj in vars(mod).values():
            if isinstance(obj, InterpretedFunction):
                return True
            if isinstance(obj, JITFunction):
                return False
    import triton

    return bool(triton.knobs.runtime.interpret)


def resolve_backend(backend: str, device: torch.device, op: str, *, triton_pkg, triton_error, tilelang_pkg,
                    interpreted: bool, race=None, kernels=()) -> str:
    """The backend a call runs on: "triton" | "tilelang" | "reference".

    auto: on a CUDA device, TileLang where ``race()`` (the tuned file's verdict for this call's
    shape and phases: lookup.faster_backend) says it is the faster one and it has every kernel in
    ``kernels``; where TileLang would win but cannot run (not installed), Triton with one warning.
    Otherwise Triton on a CUDA device; on CPU, Triton only when its kernels were imported in the
    interpreter (TRITON_INTERPRET=1 before the package was imported), else the reference -
    quietly, as CPU use without the interpreter is the normal case of a CPU machine.
    tilelang: only by name, on CUDA tensors, where TileLang is installed (``tilelang_pkg.unavailable``
    says why not); which kernels it has is checked per call by `require_kernels`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    dev = device.type
    if backend == "auto":
        if (dev == "cuda" and tilelang_pkg is not None and race is not None
                and all(k in tilelang_pkg.KERNELS for k in kernels) and race() == "tilelang"):
            why = tilelang_pkg.unavailable()
            if why is None:
                return "tilelang"
            if triton_pkg is not None:
                _warn_once(("auto", op), f"{op}: the tuned configs of this GPU measured the TileLang kernels "
                                         f"faster at this shape, but {why}; using Triton")
        if triton_pkg is not None and (dev == "cuda" or (dev == "cpu" and interpreted)):
            return "triton"
        if triton_pkg is None and dev == "cuda":
            warnings.warn(f"{op}: the Triton kernels failed to import ({triton_error}); using the slow reference",
                          RuntimeWarning, stacklevel=3)
        return "reference"
    if backend == "triton":
        if triton_pkg is None:
            raise RuntimeError(f"{op}: the Triton kernels are not usable here: {triton_error}")
        if dev == "cpu" and not interpreted:
            raise ValueError(f"{op}: Triton kernels run on CPU only in the Triton interpreter; set "
                             "TRITON_INTERPRET=1 in the environment before triton and this package are imported")
        if dev not in ("cpu", "cuda"):
            raise ValueError(f"{op}: Triton kernels need CUDA (or CPU in the interpreter) tensors, got {device}")
    if backend == "tilelang":
        if tilelang_pkg is None:
            raise ValueError(f"{op}: no TileLang kernels were generated for this variant (use backend='triton' "
                             "or 'reference')")
        if dev != "cuda":
            raise ValueError(f"{op}: TileLang kernels need CUDA tensors, got {device}")
        why = tilelang_pkg.unavailable()
        if why:
            raise RuntimeError(f"{op}: the TileLang kernels cannot run here: {why}")
    return backend


_WARNED: set = set()


def _warn_once(key, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def call_parts(mode: str, grad: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(kernels, timed phases) a call is made of: a chunked call needs chunk_fwd (and chunk_bwd when
    a gradient may follow: phases fwd, bwd), a recurrent one fused_recurrent_fwd (phase recurrent)."""
    if mode == "chunk":
        return ("chunk_fwd", "chunk_bwd") if grad else ("chunk_fwd",), ("fwd", "bwd") if grad else ("fwd",)
    return ("fused_recurrent_fwd",), ("recurrent",)


def needs_grad(a: dict) -> bool:
    """Whether autograd will record a call on the arguments ``a`` (so a backward may follow)."""
    if not torch.is_grad_enabled():
        return False
    for x in a.values():
        for t in x if isinstance(x, (tuple, list)) else (x,):
            if isinstance(t, torch.Tensor) and t.requires_grad:
                return True
    return False


def require_kernels(pkg, op: str, variant: str, kernels) -> None:
    """Raise unless the kernel package ``pkg`` (one that lists its kernels in KERNELS, as the
    TileLang packages do) has every one of ``kernels`` (call_parts): a missing kernel is an error
    that names it, never a silent switch to another backend (nor a backward that fails later, far
    from the call)."""
    missing = [k for k in kernels if k not in pkg.KERNELS]
    if not missing:
        return
    why = " (a gradient needs chunk_bwd)" if "chunk_bwd" in missing else ""
    hint = ", or call it under torch.no_grad()" if missing == ["chunk_bwd"] else ""
    raise NotImplementedError(f"{op}: the TileLang backend of {variant} has no {' and no '.join(missing)} kernel "
                              f"yet{why}; it has {', '.join(pkg.KERNELS)}. Use backend='triton'{hint}.")


# ----------------------------------------------------------------------------- checks


def _shape_text(names, sizes) -> str:
    return "[" + ", ".join(names) + "]" + (" = [" + ", ".join(str(sizes.get(n, n)) for n in names) + "]"
                                            if any(n in sizes for n in names) else "")


def _float_dtype(op, what, x, allowed, allow_fp64):
    names = list(allowed) + (["fp64"] if allow_fp64 else [])
    if DTYPE_NAMES.get(x.dtype) not in names:
        raise ValueError(f"{op}: {what} must be {'/'.join(names)}, got {x.dtype}")


def _size(op, sizes, dim, n, what):
    have = sizes.setdefault(dim, n)
    if have != n:
        raise ValueError(f"{op}: {what} has {dim} = {n}, but an earlier argument has {dim} = {have}")


def check_args(op: str, a: dict, *, inputs, gates, params, states, dims, allow_fp64: bool = False) -> dict:
    """Check one call of a generated op; return the sizes {B, T, H, N, <dims>}.

    ``a`` maps argument names to values. The tables come from the spec (rendered in ops.py):
    inputs ((name, dim, dtypes),...), gates ((name, dims, optional),...), params
    ((name, type, dims, positive, has_default),...), states ((name, (row dim, col dim)),...), and
    dims {dim: (min, max, multiple_of)}. Raises ValueError naming the argument and the rule.
    """
    sizes: dict = {}
    first = None
    for name, dim, dtypes in inputs:
        x = a[name]
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{op}: {name} must be a tensor [B, T, H, {dim}], got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{op}: {name} must be [B, T, H, {dim}], got shape {tuple(x.shape)}")
        _float_dtype(op, name, x, dtypes, allow_fp64)
        if first is None:
            first = name
            sizes.update(B=x.shape[0], T=x.shape[1], H=x.shape[2])
            device, dtype = x.device, x.dtype
            if min(x.shape[:3]) == 0:
                raise ValueError(f"{op}: {name} has an empty batch, time or head axis: shape {tuple(x.shape)}")
        else:
            if tuple(x.shape[:3]) != (sizes["B"], sizes["T"], sizes["H"]):
                raise ValueError(f"{op}: {name} has [B, T, H] = {list(x.shape[:3])}, but {first} has "
                                 f"{[sizes['B'], sizes['T'], sizes['H']]}")
            if x.device != device:
                raise ValueError(f"{op}: all tensors must be on one device: {first} is on {device}, {name} on {x.device}")
            if x.dtype != dtype:
                raise ValueError(f"{op}: {', '.join(n for n, _, _ in inputs)} must share one dtype: "
                                 f"{first} is {dtype}, {name} is {x.dtype}")
        _size(op, sizes, dim, x.shape[3], name)
    B, T, H = sizes["B"], sizes["T"], sizes["H"]

    def on_device(name, x):
        if x.device != device:
            raise ValueError(f"{op}: all tensors must be on one device: {first} is on {device}, {name} on {x.device}")

    for name, gdims, optional in gates:
        x = a[name]
        want = ["B", "T", "H", *gdims]
        if x is None:
            if not optional:
                raise ValueError(f"{op}: gate {name} {_shape_text(want, sizes)} is required")
            continue
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{op}: gate {name} must be a tensor {_shape_text(want, sizes)}, got {type(x).__name__}")
        if x.dim() != len(want) or tuple(x.shape[:3]) != (B, T, H):
            raise ValueError(f"{op}: gate {name} must be {_shape_text(want, sizes)}, got shape {tuple(x.shape)}")
        _float_dtype(op, f"gate {name}", x, ("fp32", "bf16", "fp16"), allow_fp64)
        on_device(f"gate {name}", x)
        for d, n in zip(gdims, x.shape[3:]):
            _size(op, sizes, d, n, f"gate {name}")

    compiling = is_compiling()
    for name, ptype, pdims, positive, has_default in params:
        x = a[name]
        if ptype == "head_tensor":
            want = ["H", *pdims]
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"{op}: {name} must be a tensor {_shape_text(want, sizes)}, got "
                                 f"{'None' if x is None else type(x).__name__}")
            if x.dim() != len(want) or x.shape[0] != H:
                raise ValueError(f"{op}: {name} must be {_shape_text(want, sizes)}, got shape {tuple(x.shape)}")
            _float_dtype(op, name, x, ("fp32", "bf16", "fp16"), allow_fp64)
            on_device(name, x)
            for d, n in zip(pdims, x.shape[1:]):
                _size(op, sizes, d, n, name)
            if positive and not compiling and not bool((x > 0).all()):
                raise ValueError(f"{op}: {name} must be positive everywhere")
            continue
        if x is None:
            if not has_default:
                raise ValueError(f"{op}: {name} is required (the spec gives it no default)")
            continue  # the caller resolves the spec default
        if ptype == "int":
            if isinstance(x, bool) or not isinstance(x, int):
                raise ValueError(f"{op}: {name} must be an int, got {type(x).__name__} {x!r}")
            if x < (1 if positive else 0):
                raise ValueError(f"{op}: {name} must be {'positive' if positive else 'non-negative'}, got {x}")
        else:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise ValueError(f"{op}: {name} must be a number, got {type(x).__name__}")
            if not math.isfinite(x) or (positive and x <= 0):
                raise ValueError(f"{op}: {name} must be {'positive and ' if positive else ''}finite, got {x}")

    for d, (lo, hi, mult) in dims.items():
        n = sizes.get(d)
        if n is not None and not (lo <= n <= hi and n % mult == 0):
            raise ValueError(f"{op}: head dimension {d} = {n} is not supported: it must lie in [{lo}, {hi}] "
                             f"and be a multiple of {mult}")

    cu = a["cu_seqlens"]
    N = B
    if cu is not None:
        if not isinstance(cu, torch.Tensor) or cu.dim() != 1 or cu.dtype not in INT_DTYPES:
            what = f"a {cu.dim()}-D {cu.dtype} tensor" if isinstance(cu, torch.Tensor) else type(cu).__name__
            raise ValueError(f"{op}: cu_seqlens must be a 1-D int32/int64 tensor, got {what}")
        on_device("cu_seqlens", cu)
        if B != 1:
            raise ValueError(f"{op}: with cu_seqlens the sequences are packed along T, so B must be 1, got B = {B}")
        if cu.shape[0] < 2:
            raise ValueError(f"{op}: cu_seqlens needs at least 2 entries [0, ..., T], got {cu.shape[0]}")
        N = cu.shape[0] - 1
        if not compiling:
            vals = cu.tolist()
            if vals[0] != 0 or vals[-1] != T:
                raise ValueError(f"{op}: cu_seqlens must start at 0 and end at T = {T}, got {vals[0]} ... {vals[-1]}")
            if any(b <= a_ for a_, b in zip(vals, vals[1:])):
                raise ValueError(f"{op}: cu_seqlens must be strictly increasing (no empty sequences), got {vals}")
    sizes["N"] = N

    h0 = a["initial_state"]
    if h0 is not None:
        single = len(states) == 1
        parts = [h0] if single and isinstance(h0, torch.Tensor) else h0
        if not isinstance(parts, (tuple, list)) or len(parts) != len(states):
            names = ", ".join(n for n, _ in states)
            raise ValueError(f"{op}: initial_state must be {'a tensor' if single else f'a tuple ({names})'}, "
                             f"got {type(h0).__name__}")
        for (sname, sdims), x in zip(states, parts):
            want = ["N", "H", *sdims]
            what = "initial_state" if single else f"initial_state[{sname}]"
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"{op}: {what} must be a tensor {_shape_text(want, sizes)}, got {type(x).__name__}")
            if tuple(x.shape) != tuple(sizes.get(d) for d in want):
                raise ValueError(f"{op}: {what} must be {_shape_text(want, sizes)}, got shape {tuple(x.shape)}")
            if x.dtype != torch.float32 and not (allow_fp64 and x.dtype == torch.float64):
                raise ValueError(f"{op}: {what} must be fp32 (states are kept in fp32), got {x.dtype}")
            on_device(what, x)
    if not isinstance(a["output_final_state"], bool):
        raise ValueError(f"{op}: output_final_state must be a bool, got {type(a['output_final_state']).__name__}")
    return sizes


def absent(ref: torch.Tensor) -> torch.Tensor:
    """The stand-in for a None output of a custom op (custom ops return tensors only)."""
    return ref.new_empty((0,), dtype=torch.float32)


def pack_state(parts):
    """Kernel form of a state: None, one tensor, or a tuple (h_kk, h_kv)."""
    if all(p is None for p in parts):
        return None
    return parts[0] if len(parts) == 1 else tuple(parts)


def unpack_state(state, n: int) -> list:
    """Inverse of `pack_state`: a list of ``n`` tensors (or Nones)."""
    if state is None:
        return [None] * n
    return [state] if n == 1 else list(state)


def pack_saved(saved):
    """Split what a kernel's chunk_fwd returned in ``saved`` into (layout, tensors).

    The tensors go through ``ctx.save_for_backward`` (so autograd's saved-tensor checks and
    hooks apply); the layout is everything else, to rebuild the object with `unpack_saved`.
    """
    tensors = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            tensors.append(x)
            return ("T", len(tensors) - 1)
        if isinstance(x, dict):
            return ("D", tuple((k, walk(v)) for k, v in x.items()))
        if isinstance(x, (tuple, list)):
            return ("L" if isinstance(x, list) else "U", tuple(walk(v) for v in x))
        return ("C", x)

    return walk(saved), tensors


def unpack_saved(layout, tensors):
    kind, body = layout
    if kind == "T":
        return tensors[body]
    if kind == "D":
        return {k: unpack_saved(v, tensors) for k, v in body}
    if kind in "LU":
        items = [unpack_saved(v, tensors) for v in body]
        return items if kind == "L" else tuple(items)
    return body


def present(x: torch.Tensor | None) -> torch.Tensor | None:
    """Undo `absent`: an empty stand-in means None."""
    return None if x is None or x.numel() == 0 else x
