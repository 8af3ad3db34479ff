"""Context parallelism: one sequence split over the ranks of a torch.distributed group.

Rank r holds tokens [r*T/P, (r+1)*T/P) of every sequence. Every state of a spec evolves as an
affine map over a slice of tokens, S_end = A(S_start) + B, where A and B depend only on that
slice's tokens (gka_gen.ir.carry derives from the canonical form which of two shapes A has):

- "decayed_sum" (no delta rule; the ridge family's H and U, GLA): A is the product of the
  slice's decays (a scalar or one value per key channel) and B = sum_t (decay t->end) b_t u_t w_t^T.
  Both are plain torch reductions over the slice.
- "operator" (delta rule): A is the slice's K x K transition prod_t D_t (I - beta_t k_t k_t^T).
  It is the final state of the op run on the slice with zero values from the identity, and B its
  final state from zero; as the update acts on each value column on its own, one run with
  values [0 | v] from [I | 0] gives [A | B].

Forward: every rank computes its (A_r, B_r), one all_gather shares them (per head K*K + K*V
numbers for an operator, K or 1 + K*K / K*V for a decayed sum: independent of T), each rank
folds S_r = A_{r-1}(... A_0(S_0) + B_0 ...) + B_{r-1} locally and reruns its slice from S_r.
Backward is autograd through the same graph: the all_gather's backward sums every rank's
gradient for each rank's (A, B) and hands it to its owner, which is the reverse exchange.

Tensors that every rank holds whole (the initial state, per-head parameters) get on each rank
the gradient of that rank's outputs: their sum over the group is the full gradient, which is
what DDP / FSDP's gradient reduction does for parameters (their average matches a mean loss
over equal slices). The final state a rank returns is the state after its own slice: the last
rank's is the sequence's.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.distributed as dist


def world_size(group) -> int:
    return dist.get_world_size(group) if group is not None else 1


class _AllGather(torch.autograd.Function):
    """[n] on each rank -> [P, n] on every rank; backward: sum over ranks, keep own row."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group, ctx.rank = group, dist.get_rank(group)
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.rank], None


class _Tie(torch.autograd.Function):
    """Returns ``x``; gives ``other`` a zero gradient.

    The all_gather's backward is a collective: every rank must reach it, also a rank whose
    result does not use what it gathered (rank 0 starts from S_0, not from anything gathered).
    """

    @staticmethod
    def forward(ctx, x, other):
        ctx.shape, ctx.dtype, ctx.device = other.shape, other.dtype, other.device
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad, torch.zeros(ctx.shape, dtype=ctx.dtype, device=ctx.device)


def all_gather(x: torch.Tensor, group) -> torch.Tensor:
    """Differentiable all_gather of equally shaped tensors: [P, *x.shape]."""
    return _AllGather.apply(x, group)


def halo(x: torch.Tensor, width: int, group) -> torch.Tensor:
    """The last ``width`` tokens of the previous rank's x [B, T, D] (zeros on rank 0), as the
    [B, D, width] cache a ShortConvolution continues from."""
    if x.shape[1] < width:
        raise ValueError(f"context parallelism: each rank needs at least {width} tokens for the short "
                         f"convolution's window, this rank has {x.shape[1]}")
    tails = all_gather(x[:, x.shape[1] - width:].transpose(1, 2), group)
    rank = dist.get_rank(group)
    return tails[rank - 1] if rank > 0 else _Tie.apply(torch.zeros_like(tails[0]), tails)


def _state_dtype(x: torch.Tensor) -> torch.dtype:
    """States are fp32, fp64 only for fp64 inputs (the reference backend)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _decayed_sum(rule: dict, a: dict):
    """(A, B) of S = D S + b u w^T over this slice, in the state's dtype (see the module docstring)."""
    dt = _state_dtype(a[rule["input"][0]])
    u, w = a[rule["input"][0]].to(dt), a[rule["input"][1]].to(dt)
    channel = rule["decay"] == "channel"
    if rule["decay"] == "none":
        g = u.new_zeros(u.shape[:3])
    else:
        g = a[rule["gate"]].to(dt)  # [B, T, H], or [B, T, H, K] per channel
    # decay from token t to the slice's end: exp(sum_{s>t} g_s), a reverse cumsum (not G_T - G_t,
    # which cancels two large sums after many strong decays).
    weight = torch.exp(torch.flip(torch.cumsum(torch.flip(g, [1]), 1), [1]) - g)
    if rule["beta"]:
        coef = a[rule["beta"]].to(dt)  # [B, T, H]
        weight = weight * (coef[..., None] if channel else coef)
    B = torch.einsum("bthk,bthv->bhkv", u * (weight if channel else weight[..., None]), w)
    return torch.exp(g.sum(1)), B


def _operator(rule: dict, a: dict, run: Callable, max_v: int):
    """(A, B) of a delta-rule state by running the op on this slice (see the module docstring)."""
    k, v = a[rule["key"]], a[rule["value"]]
    Bn, _, H, K = k.shape
    V = v.shape[-1]
    eye = torch.eye(K, device=k.device, dtype=_state_dtype(k)).expand(Bn, H, K, K)
    zeros_v = v.new_zeros(*v.shape[:-1], K)
    if K + V <= max_v:
        _, S = run(dict(a, **{rule["value"]: torch.cat([zeros_v, v], -1),
                              "initial_state": torch.cat([eye, eye.new_zeros(Bn, H, K, V)], -1),
                              "output_final_state": True}))
        return S[..., :K], S[..., K:]
    _, A = run(dict(a, **{rule["value"]: zeros_v, "initial_state": eye.contiguous(), "output_final_state": True}))
    _, B = run(dict(a, initial_state=None, output_final_state=True))
    return A, B


def _apply(rule: dict, A: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    if rule["rule"] == "operator":
        return A @ S
    return A[..., None] * S if rule["decay"] == "channel" else A[..., None, None] * S


def context_parallel(run: Callable, a: dict, *, carry: Sequence[dict], group, max_v: int):
    """The op over the whole sequence, this rank's slice of it: (o, final_state or None).

    ``run(a)`` runs the op on one device; ``a`` holds the op's arguments by name with every
    spec default resolved; ``carry`` is the package's _CARRY table (one rule per state, spec
    order); ``max_v`` the largest value width the op accepts.
    """
    if a.get("cu_seqlens") is not None:
        raise ValueError("context parallelism with cu_seqlens is not supported: pass [B, T_local, ...] "
                         "slices of equal-length sequences")
    rank = dist.get_rank(group)
    single = len(carry) == 1
    h0 = a.get("initial_state")
    h0 = [h0] if single else list(h0) if h0 is not None else [None] * len(carry)
    local = [_operator(rule, a, run, max_v) if rule["rule"] == "operator" else _decayed_sum(rule, a)
             for rule in carry]

    flat = [t.reshape(-1) for pair in local for t in pair]
    sizes = [t.numel() for t in flat]
    gathered = all_gather(torch.cat(flat), group)  # [P, sum(sizes)]
    per_rank = [list(torch.split(row, sizes)) for row in gathered]

    states = []
    for i, rule in enumerate(carry):
        A0, B0 = local[i]
        S = h0[i]
        S = S.to(B0.dtype) if S is not None else B0.new_zeros(B0.shape)
        for j in range(rank):
            A, B = per_rank[j][2 * i].view_as(A0), per_rank[j][2 * i + 1].view_as(B0)
            S = _apply(rule, A, S) + B
        states.append(S if rank > 0 else _Tie.apply(S, gathered))
    o, final = run(dict(a, initial_state=states[0] if single else tuple(states)))
    return o, final
