"""Turn a call of the functional API into plain, validated, upcast tensors.

Everything about the *calling convention* lives here (argument order and defaults from
`op_signature`, optional-gate defaults, param defaults in the dims, dtype policy, shape and
cu_seqlens checks), so that the interpreter in `op.py` only sees the math.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from ..signature import op_signature
from ..spec import Spec, default_value


@dataclass
class Segment:
    """One independent scan: batch rows ``b``, tokens ``t`` and the state rows ``n`` it starts from."""

    b: slice
    t: slice
    n: slice


@dataclass
class Call:
    dims: dict[str, int]
    dtype: torch.dtype  # computation dtype (float32, or float64 if any input is float64)
    out_dtype: torch.dtype  # q's dtype, for o
    tokens: dict[str, torch.Tensor]  # inputs and gates, [B, T, H, *shape]; log gates still in log space
    params: dict[str, object]  # float: python float or 0-dim tensor; int: int; head_tensor: [H, *shape]
    initial: list[torch.Tensor]  # one [N, H, R, C] per state, spec order
    segments: list[Segment]
    output_final_state: bool
    B: int
    T: int
    H: int


def python_signature(spec: Spec) -> inspect.Signature:
    """The reference's Python signature: exactly `op_signature(spec)`'s names and order.

    Numeric param defaults are shown as numbers; everything else that may be omitted
    defaults to None (resolved at call time: a gate's spec default, a dims expression).
    Python forbids a required argument after an optional one, so once one argument has
    a default, later required ones get None too and are checked at call time.
    """
    params, seen_default = [], False
    for a in op_signature(spec):
        if a.kind == "option":
            default = a.default
        elif a.kind == "param" and isinstance(a.default, (int, float)) and not isinstance(a.default, bool):
            default = a.default
        elif a.required and not seen_default:
            default = inspect.Parameter.empty
        else:
            default = None
        seen_default |= default is not inspect.Parameter.empty
        params.append(inspect.Parameter(a.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default))
    return inspect.Signature(params)


def bind(spec: Spec, sig: inspect.Signature, args: tuple, kwargs: dict) -> Call:
    try:
        ba = sig.bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{spec.name} reference: {e}") from None
    ba.apply_defaults()
    given = dict(ba.arguments)
    f = spec.file

    # --- inputs: [B, T, H, dim], and the sizes of the dims they carry.
    dims: dict[str, int] = {}
    q0 = None
    for name, s in f.inputs.items():
        x = _tensor(given[name], name, required=True)
        if x.dim() != 4:
            raise ValueError(f"{name} must be [B, T, H, {s.shape[0]}], got shape {tuple(x.shape)}")
        if q0 is None:
            q0 = x
        elif x.shape[:3] != q0.shape[:3]:
            raise ValueError(f"{name} has shape {tuple(x.shape)} but the first input has [B, T, H] = {tuple(q0.shape[:3])}")
        _dim(dims, s.shape[0], x.shape[-1], name)
    B, T, H = q0.shape[:3]

    # --- gates: [B, T, H] or [B, T, H, dim]. Dims only a gate or param names are sized here too.
    gates: dict[str, torch.Tensor | None] = {}
    for name, g in f.gates.items():
        x = _tensor(given[name], name, required=False)
        if x is not None:
            if x.dim() != 3 + len(g.shape) or tuple(x.shape[:3]) != (B, T, H):
                want = ", ".join(["B", "T", "H", *g.shape])
                raise ValueError(f"gate {name} must be [{want}] = [{B}, {T}, {H}{''.join(', ' + d for d in g.shape)}], "
                                 f"got shape {tuple(x.shape)}")
            for d, n in zip(g.shape, x.shape[3:]):
                _dim(dims, d, n, name)
        elif not g.optional:
            raise ValueError(f"gate {name} is required")
        gates[name] = x
    for name, p in f.params.items():
        if p.type == "head_tensor" and given[name] is not None:
            x = _tensor(given[name], name, required=True)
            if x.dim() != 1 + len(p.shape) or x.shape[0] != H:
                raise ValueError(f"param {name} must be [H, {', '.join(p.shape)}] with H = {H}, got shape {tuple(x.shape)}")
            for d, n in zip(p.shape, x.shape[1:]):
                _dim(dims, d, n, name)
    missing = [d for d in f.dims if d not in dims]
    if missing:
        raise ValueError(f"cannot tell the size of dims {missing} from the arguments")

    # --- dtype: float64 if anything is float64, else float32 (bf16/fp16 are upcast).
    tensors = [v for v in given.values() if isinstance(v, torch.Tensor)]
    init = given["initial_state"]
    init_list = list(init) if isinstance(init, (tuple, list)) else [init]
    tensors += [s for s in init_list if isinstance(s, torch.Tensor)]
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    device = q0.device

    def up(x):
        return x.to(device=device, dtype=dtype)

    tokens = {n: up(given[n]) for n in f.inputs}
    for name in f.gates:
        tokens[name] = up(_gate_value(spec, name, gates, (B, T, H), dims, dtype, device))

    # --- params
    params: dict[str, object] = {}
    for name, p in f.params.items():
        val = given[name]
        if val is None and p.type != "head_tensor" and p.default is not None:
            val = default_value(p.default, dims)
        if val is None:
            raise ValueError(f"param {name} is required")
        if p.type == "int":
            if isinstance(val, torch.Tensor) and val.numel() == 1 and not val.is_floating_point():
                val = int(val.item())
            if isinstance(val, bool) or not isinstance(val, int) or val < 0:
                raise ValueError(f"param {name} must be a non-negative int, got {val!r}")
            params[name] = val
        elif p.type == "float":
            if isinstance(val, torch.Tensor):
                if val.numel() != 1:
                    raise ValueError(f"param {name} must be a scalar, got shape {tuple(val.shape)}")
                params[name] = up(val.reshape(()))  # a tensor keeps its autograd path
            elif isinstance(val, (int, float)) and not isinstance(val, bool):
                params[name] = float(val)
            else:
                raise ValueError(f"param {name} must be a number, got {type(val).__name__}")
        else:
            params[name] = up(val)

    # --- cu_seqlens -> segments; initial states
    cu = given["cu_seqlens"]
    if cu is None:
        N, segments = B, [Segment(slice(0, B), slice(0, T), slice(0, B))]
    else:
        bounds = _check_cu_seqlens(cu, B, T)
        N = len(bounds) - 1
        segments = [Segment(slice(0, 1), slice(bounds[i], bounds[i + 1]), slice(i, i + 1)) for i in range(N)]
    initial = _initial_states(spec, init, N, H, dims, dtype, device)
    return Call(dims, dtype, q0.dtype, tokens, params, initial, segments, bool(given["output_final_state"]), B, T, H)


def _tensor(x, name, *, required):
    if x is None:
        if required:
            raise ValueError(f"{name} is required")
        return None
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {type(x).__name__}"
                         + (f" of {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    return x


def _dim(dims: dict, d: str, n: int, who: str) -> None:
    if dims.setdefault(d, n) != n:
        raise ValueError(f"{who} says dim {d} = {n}, but an earlier argument says {d} = {dims[d]}")


def _gate_value(spec, name, gates, bth, dims, dtype, device, seen=()):
    """A gate's tensor, or its spec default: a number (constant tensor) or another gate's value."""
    x = gates[name]
    if x is not None:
        return x
    g = spec.file.gates[name]
    if isinstance(g.default, str):
        if g.default in seen:  # the loader forbids self-defaults; this catches longer cycles
            raise ValueError(f"gate defaults form a cycle through {name}")
        return _gate_value(spec, g.default, gates, bth, dims, dtype, device, seen + (name,))
    shape = (*bth, *(dims[d] for d in g.shape))
    return torch.full(shape, float(g.default), dtype=dtype, device=device)


def _check_cu_seqlens(cu, B: int, T: int) -> list[int]:
    if not isinstance(cu, torch.Tensor):
        raise ValueError(f"cu_seqlens must be an int64 tensor, got {type(cu).__name__}")
    if cu.dtype.is_floating_point or cu.dtype.is_complex or cu.dtype == torch.bool:
        raise ValueError(f"cu_seqlens must be an integer tensor (int64), got {cu.dtype}")
    if cu.dim() != 1 or cu.numel() < 2:
        raise ValueError(f"cu_seqlens must be 1-D with N + 1 >= 2 entries, got shape {tuple(cu.shape)}")
    if B != 1:
        raise ValueError(f"cu_seqlens needs the sequences packed into batch size 1, got B = {B}")
    b = [int(v) for v in cu.tolist()]
    if b[0] != 0 or b[-1] != T:
        raise ValueError(f"cu_seqlens must start at 0 and end at T = {T}, got {b[0]} ... {b[-1]}")
    bad = next((i for i in range(len(b) - 1) if b[i + 1] < b[i]), None)
    if bad is not None:
        # Equal neighbours (an empty sequence) are allowed: its final state is its initial state.
        raise ValueError(f"cu_seqlens must be non-decreasing, got {b[bad]} then {b[bad + 1]} at index {bad + 1}")
    return b


def _initial_states(spec, init, N, H, dims, dtype, device) -> list[torch.Tensor]:
    names = list(spec.file.states)
    shapes = [(N, H, *(dims[d] for d in spec.file.states[n].shape)) for n in names]
    if init is None:
        return [torch.zeros(s, dtype=dtype, device=device) for s in shapes]
    if len(names) == 1:
        if not isinstance(init, torch.Tensor):
            raise ValueError(f"initial_state must be a tensor {list(shapes[0])}, got {type(init).__name__}")
        init = (init,)
    elif not isinstance(init, (tuple, list)) or len(init) != len(names):
        raise ValueError(f"initial_state must be a tuple of {len(names)} tensors ({', '.join(names)}) in spec order")
    out = []
    for n, s, x in zip(names, shapes, init):
        if x is None:
            out.append(torch.zeros(s, dtype=dtype, device=device))
            continue
        _tensor(x, f"initial_state {n}", required=True)
        if tuple(x.shape) != s:
            raise ValueError(f"initial_state {n} must be [N, H, ...] = {list(s)}, got {list(x.shape)}")
        out.append(x.to(device=device, dtype=dtype))
    return out
