"""Shared torch pieces of the generated layers: short causal conv with a decoding cache,
gate parametrizations, l2 norm, gated RMSNorm, padding <-> packed sequences, the cache.

Everything here is plain torch (no fla, no Triton) so that a generated layer runs on any
device and under torch.compile; the heavy lifting is the op, not these.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------- small functions


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / ||x|| over the last dim, computed in fp32 (bf16 sums of squares lose too much).

    eps inside the sqrt (as fla does) keeps the gradient finite for an all-zero vector.
    """
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)


def unpad_tokens(hidden_states: torch.Tensor, attention_mask: torch.Tensor):
    """[B, T, ...] with a 0/1 padding mask -> ([1, total, ...], indices, cu_seqlens).

    The kept tokens are packed into one row in batch order, so sequence n of cu_seqlens is
    batch row n (a row of only padding becomes an empty sequence and keeps its state row).
    `nonzero` has a data-dependent size: torch.compile breaks the graph here, which is the
    price of variable-length batches.
    """
    B, T = attention_mask.shape
    mask = attention_mask.bool()
    indices = torch.nonzero(mask.reshape(-1), as_tuple=False).reshape(-1)
    lens = mask.sum(-1)
    cu_seqlens = F.pad(lens.cumsum(0), (1, 0)).to(torch.long)
    packed = hidden_states.reshape(B * T, *hidden_states.shape[2:]).index_select(0, indices)
    return packed.unsqueeze(0), indices, cu_seqlens


def pad_tokens(x: torch.Tensor, indices: torch.Tensor, batch_size: int, seq_len: int) -> torch.Tensor:
    """Inverse of `unpad_tokens`: [1, total, ...] -> [B, T, ...] with zeros at the padding."""
    flat = x.new_zeros(batch_size * seq_len, *x.shape[2:]).index_copy(0, indices, x[0])
    return flat.reshape(batch_size, seq_len, *x.shape[2:])


# --------------------------------------------------------------------------- short conv


class ShortConvolution(nn.Module):
    """Depthwise causal conv over time (kernel W) + SiLU, with a cache for decoding.

    The cache of a sequence is its last W-1 *inputs* ([N, D, W-1]), exactly what the next
    token's window needs; a sequence without cache sees zeros before its first token, so a
    prefill of T tokens and T single-token steps give the same outputs.
    """

    def __init__(self, channels: int, kernel_size: int, activation: str | None = "silu", bias: bool = False):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        self.channels, self.kernel_size, self.activation = channels, kernel_size, activation
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        # nn.Conv1d's default initialisation (fan_in = kernel_size for a depthwise conv).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(kernel_size)
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, activation={self.activation}"

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None, output_final_state: bool = False,
                cu_seqlens: torch.Tensor | None = None):
        """x [B, T, D] (B = 1 with cu_seqlens); cache [N, D, W-1]. Returns (y, cache or None)."""
        if cu_seqlens is None:
            y, final = self._dense(x, cache)
        else:
            y, final = self._packed(x, cache, cu_seqlens)
        if self.activation == "silu":
            y = F.silu(y)
        elif self.activation is not None:
            raise ValueError(f"unknown activation {self.activation!r}")
        return y, (final if output_final_state else None)

    def _dense(self, x, cache):
        B, T, D = x.shape
        W = self.kernel_size
        hist = x.new_zeros(B, W - 1, D) if cache is None else cache.transpose(1, 2).to(x.dtype)
        xp = torch.cat([hist, x], dim=1)  # [B, W-1+T, D]
        if T == 0:  # an empty input: nothing to convolve (conv1d rejects a window wider than it)
            return x, xp[:, T:].transpose(1, 2)
        # F.conv1d: one library call (cuDNN on GPU) rather than W shifted multiply-adds.
        y = F.conv1d(xp.transpose(1, 2), self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype),
                     groups=D).transpose(1, 2)
        return y, xp[:, T:].transpose(1, 2)

    def _packed(self, x, cache, cu_seqlens):
        """Sequences packed in one row: every token's window is gathered by index, so a
        window never reaches into the previous sequence (it reads that sequence's cache row,
        or zeros, instead)."""
        if x.shape[0] != 1:
            raise ValueError(f"cu_seqlens needs the sequences packed into batch size 1, got B = {x.shape[0]}")
        W = self.kernel_size
        total, D = x.shape[1], x.shape[2]
        cu = cu_seqlens.to(device=x.device, dtype=torch.long)
        N = cu.numel() - 1
        parts = [x[0]]
        if cache is not None:
            parts.append(cache.transpose(1, 2).reshape(N * (W - 1), D).to(x.dtype))
        parts.append(x.new_zeros(1, D))
        src = torch.cat(parts, 0)  # rows: tokens | cache rows (N x (W-1)) | one zero row
        zero_row = src.shape[0] - 1

        def rows(seq, rel):
            # rel: position relative to the start of sequence `seq`; negative = before it.
            inside = cu[seq] + rel
            if cache is not None:
                before = total + seq * (W - 1) + (W - 1) + rel
            else:
                before = torch.full_like(inside, zero_row)
            return torch.where(rel >= 0, inside, before)

        lags = torch.arange(W, device=x.device) - (W - 1)  # -(W-1) .. 0, in weight order
        t = torch.arange(total, device=x.device)
        seq = torch.searchsorted(cu[1:], t, right=True)  # the sequence holding token t
        pos = t - cu[seq]
        win = src[rows(seq[:, None], pos[:, None] + lags[None, :])]  # [total, W, D]
        w = self.weight[:, 0, :].t().to(x.dtype)  # [W, D]
        y = (win * w).sum(1)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        n = torch.arange(N, device=x.device)
        lens = cu[1:] - cu[:-1]
        final = src[rows(n[:, None], lens[:, None] + lags[None, :-1])]  # positions len-(W-1)..len-1: [N, W-1, D]
        return y.unsqueeze(0), final.transpose(1, 2)


# --------------------------------------------------------------------------- gates
#
# Every gate module maps hidden states [B, T, hidden] to [B, T, H] (scalar gate) or
# [B, T, H, C] (per-channel gate) in the space the op expects: "log" (log decay, <= 0) or
# "unit" (in (0, 1)). Each parametrization has a natural space (mamba, logsigmoid: log;
# sigmoid: unit) and converts when the spec asks for the other one. Log gates come out in
# fp32: the op cumsums them over a chunk, where bf16 rounding would compound.

DEFAULT_GATE_RANK = 16  # GLA's low-rank width for per-channel gate projections


def _projection(hidden_size: int, out: int, channels: int | None, bias: bool, rank: int) -> nn.Module:
    # Per-channel gates would cost hidden x (H*C) weights; a rank-r bottleneck (GLA's gk_proj,
    # KDA's f_proj) keeps them cheap. Scalar gates are one small Linear.
    if channels is None:
        return nn.Linear(hidden_size, out, bias=bias)
    return nn.Sequential(nn.Linear(hidden_size, rank, bias=False), nn.Linear(rank, out, bias=bias))


class _Gate(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, channels: int | None, space: str, bias: bool,
                 rank: int = DEFAULT_GATE_RANK):
        super().__init__()
        if space not in ("log", "unit"):
            raise ValueError(f"gate space must be 'log' or 'unit', got {space!r}")
        self.num_heads, self.channels, self.space = num_heads, channels, space
        self.proj = _projection(hidden_size, num_heads * (channels or 1), channels, bias, rank)

    def _heads(self, x):
        return x if self.channels is None else x.unflatten(-1, (self.num_heads, self.channels))

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, channels={self.channels}, space={self.space}"


class MambaGate(_Gate):
    """g = -exp(A_log) * softplus(W x + dt_bias): Mamba2's discretised decay, log space.

    A_log per head, dt_bias per output (head or head x channel), initialised as in Mamba2 /
    fla: A ~ U(1, 16), dt log-uniform in [1e-3, 0.1] stored through softplus^-1, so at init
    the per-token decay exp(g) = exp(-A dt) lies between ~0.2 and ~1.
    """

    def __init__(self, hidden_size, num_heads, channels=None, space="log", rank=DEFAULT_GATE_RANK,
                 dt_min=1e-3, dt_max=0.1, dt_init_floor=1e-4):
        super().__init__(hidden_size, num_heads, channels, space, bias=False, rank=rank)
        self.A_log = nn.Parameter(torch.log(torch.empty(num_heads).uniform_(1, 16)))
        n = num_heads * (channels or 1)
        dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        # Optimizers that honour fla's convention keep weight decay off these.
        self.A_log._no_weight_decay = True
        self.dt_bias._no_weight_decay = True

    def forward(self, x):
        a = self.proj(x).float() + self.dt_bias.float()
        A = self.A_log.float().exp()
        if self.channels is not None:
            A = A[:, None].expand(self.num_heads, self.channels).reshape(-1)
        g = self._heads(-A * F.softplus(a))
        return g if self.space == "log" else g.exp()


class LogSigmoidGate(_Gate):
    """g = logsigmoid(W x + b) / normalizer (GLA): log space, decay in (0, 1).

    The normalizer (GLA's gate_logit_normalizer, 16) pulls the initial decays towards 1, so a
    fresh layer remembers over many tokens instead of ~2.
    """

    def __init__(self, hidden_size, num_heads, channels=None, space="log", rank=DEFAULT_GATE_RANK,
                 normalizer: float = 16.0):
        super().__init__(hidden_size, num_heads, channels, space, bias=True, rank=rank)
        self.normalizer = float(normalizer)

    def forward(self, x):
        g = self._heads(F.logsigmoid(self.proj(x).float()) / self.normalizer)
        return g if self.space == "log" else g.exp()


class SigmoidGate(_Gate):
    """sigmoid(W x): unit space (beta, alpha); in log space it is logsigmoid(W x)."""

    def __init__(self, hidden_size, num_heads, channels=None, space="unit", rank=DEFAULT_GATE_RANK):
        super().__init__(hidden_size, num_heads, channels, space, bias=False, rank=rank)

    def forward(self, x):
        a = self.proj(x)
        if self.space == "log":
            return self._heads(F.logsigmoid(a.float()))
        return self._heads(torch.sigmoid(a))


GATES = {"mamba": MambaGate, "logsigmoid": LogSigmoidGate, "sigmoid": SigmoidGate}


def make_gate(param: str, space: str, hidden_size: int, num_heads: int, channels: int | None = None, **kwargs):
    """The gate module of a spec gate: ``param`` picks the parametrization, ``space`` the output."""
    try:
        cls = GATES[param]
    except KeyError:
        raise ValueError(f"unknown gate parametrization {param!r}; expected one of {sorted(GATES)}") from None
    return cls(hidden_size, num_heads, channels, space=space, **kwargs)


# --------------------------------------------------------------------------- output norm


class RMSNormGated(nn.Module):
    """Per-head RMSNorm over the last dim, optionally times SiLU(gate) (fla's FusedRMSNormGated
    with its default swish), computed in fp32 and returned in x's dtype."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        if gate is not None:
            y = y * F.silu(gate.float())
        return y.to(x.dtype)


# --------------------------------------------------------------------------- cache


class LayerCache:
    """Per-layer decoding state: ``cache[layer_idx]`` is a dict with "recurrent_state" (the
    op's final state: a tensor, or a tuple for multi-state families) and "conv_state" (a
    tuple of per-input conv caches, or None), or None for a layer that has not run yet.

    Same surface as fla's Cache (len, indexing, update(..., layer_idx, offset)), so an fla
    model-level cache can be passed to a generated layer and this one to fla-style code.
    """

    def __init__(self):
        self.states: list[dict | None] = []
        self._seen_tokens = 0

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, layer_idx: int):
        return self.states[layer_idx]

    def __iter__(self):
        return iter(self.states)

    def update(self, recurrent_state=None, conv_state=None, layer_idx: int = 0, offset: int = 1, **kwargs):
        while len(self.states) <= layer_idx:
            self.states.append(None)
        self.states[layer_idx] = {"recurrent_state": recurrent_state, "conv_state": conv_state, **kwargs}
        if layer_idx == 0:  # count tokens once per model step, not once per layer
            self._seen_tokens += offset
        return self.states[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._seen_tokens if len(self.states) > layer_idx else 0

    def reset(self) -> None:
        self.states.clear()
        self._seen_tokens = 0
