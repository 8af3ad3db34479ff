"""Random inputs for any spec's functional API (tests, `gka-gen verify`, GPU checks, benchmarks).

Inputs follow the spec: l2-normalised q/k where the spec says `norm: l2`, log-space gates
drawn like a trained layer's (logsigmoid of a normal, a few percent decay per token),
unit gates as sigmoids, per-channel lambdas positive. `extreme=True` pushes every gate to
the edge the kernels must survive: decay down to exp(-20) per token, beta/alpha at 0 and 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .signature import op_signature
from .spec import Spec


def make_inputs(
    spec: Spec,
    *,
    B: int = 1,
    T: int = 64,
    H: int = 2,
    K: int = 32,
    V: int = 32,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    extreme: bool = False,
    cu_seqlens: list[int] | None = None,
    initial_state: bool = False,
    requires_grad: bool = False,
) -> dict:
    """Keyword arguments for ``chunk_<name>`` / ``reference_op(spec, cf)`` (without ``backend``)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float32)

    dims = {"K": K, "V": V}
    f = spec.file
    args: dict = {}
    for a in op_signature(spec):
        if a.kind == "input":
            x = randn(B, T, H, dims[f.inputs[a.name].shape[0]])
            if f.inputs[a.name].norm == "l2":
                x = F.normalize(x, dim=-1)
            args[a.name] = x.to(dtype)
        elif a.kind == "gate":
            g = f.gates[a.name]
            shape = (B, T, H, *(dims[d] for d in g.shape))
            if g.space == "log":
                x = F.logsigmoid(randn(*shape) + 3.0)  # ~5% decay a token, like a trained model
                if extreme:
                    x = torch.where(torch.rand(shape, generator=gen) < 0.2, torch.full(shape, -20.0), x)
            else:
                x = torch.sigmoid(randn(*shape))
                if extreme:
                    pick = torch.rand(shape, generator=gen)
                    x = torch.where(pick < 0.25, torch.zeros(shape), torch.where(pick > 0.75, torch.ones(shape), x))
            args[a.name] = x  # gates stay fp32: they are tiny and their precision matters
        elif a.kind == "param" and a.shape:
            args[a.name] = F.softplus(randn(H, *(dims[d] for d in f.params[a.name].shape))) + 0.25
    if cu_seqlens is not None:
        if B != 1 or cu_seqlens[-1] != T:
            raise ValueError("cu_seqlens needs B == 1 and must end at T")
        args["cu_seqlens"] = torch.tensor(cu_seqlens, dtype=torch.long)
    if initial_state:
        N = len(cu_seqlens) - 1 if cu_seqlens is not None else B
        states = []
        for st in f.states.values():
            s = randn(N, H, *(dims[d] for d in st.shape)) * 0.1
            if st.shape[0] == st.shape[1]:
                s = s @ s.transpose(-1, -2)  # a covariance state must be PSD
            states.append(s)
        args["initial_state"] = states[0] if len(states) == 1 else tuple(states)
    for key, val in list(args.items()):
        if isinstance(val, torch.Tensor):
            val = val.to(device)
            if requires_grad and val.is_floating_point():
                val.requires_grad_(True)
            args[key] = val
        elif isinstance(val, tuple):
            args[key] = tuple(v.to(device).requires_grad_(requires_grad) for v in val)
    return args
