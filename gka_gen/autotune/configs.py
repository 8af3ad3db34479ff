"""The config space of every tunable kernel: what `gka-gen autotune` tries.

A config is a dict of launch keyword arguments of one kernel (tile constexprs, num_warps,
num_stages) - the same dict its template's default_config returns and its launcher passes on, so a
candidate is compiled and launched exactly as a tuned file would make it. Parameters absent from a
space keep their default value. The kernels are searched in the order listed: forward kernels
first, since the backward recomputes with them.

Sizes: at K = V = 128 a linear-family spec has 94 candidates per shape, a ridge one 173, before the
resource filter drops those that cannot run on sm_90 (gka_gen.resources); each survivor costs one
compile (in parallel, ahead of the timing, once per K / V / H / dtype) and one timed call. Within a
kernel the candidates run in the order of the space's product (the default first).
"""
from __future__ import annotations

import itertools

# kernel -> (phase it is timed in, {param: values}). phase: "fwd" (chunked forward),
# "bwd" (chunked backward) or "recurrent" (the token-by-token forward).
SPACES = {
    "linear": {
        "chunk_intra_fwd": ("fwd", {"BK": (32, 64), "BV": (32, 64), "num_warps": (4, 8), "num_stages": (2, 3)}),
        "chunk_state_fwd": ("fwd", {"BV": (16, 32, 64), "num_warps": (4, 8), "num_stages": (1, 2)}),
        "chunk_output_fwd": ("fwd", {"BK": (32, 64, 128), "BV": (32, 64), "num_warps": (4, 8), "num_stages": (2, 3)}),
        "chunk_state_bwd": ("bwd", {"BV": (16, 32, 64), "num_warps": (4, 8), "num_stages": (1, 2)}),
        "chunk_grad_bwd": ("bwd", {"BK": (16, 32, 64), "BV": (16, 32, 64), "num_warps": (4, 8)}),
        "fused_recurrent_fwd": ("recurrent", {"BV": (8, 16, 32, 64), "num_warps": (1, 2, 4)}),
    },
    "ridge": {
        "chunk_state_fwd": ("fwd", {"BK": (32, 64), "BX": (32, 64), "num_warps": (4, 8)}),
        # BK from the widest: the on-chip solves (BK >= K) come first, and were 2-4x faster than the
        # K-tiled ones at K = 128 on the H200, so a search cut short by its budget has timed them
        "chunk_ridge_fwd": ("fwd", {"BK": (128, 64, 32, 16), "BV": (32, 64), "BS": (16, 32, 64), "num_warps": (4, 8),
                                    "num_stages": (1, 2)}),
        # after the forward solve: it runs only for that kernel's row blocks (BS < 64)
        "chunk_norm_fwd": ("fwd", {"BK": (16, 32, 64, 128), "num_warps": (2, 4, 8)}),
        "chunk_ridge_bwd_solve": ("bwd", {"BK": (128, 64, 32, 16), "BV": (32, 64), "BS": (16, 32, 64),
                                          "num_warps": (4, 8), "num_stages": (1, 2)}),
        "chunk_dh_bwd": ("bwd", {"BK": (32, 64), "num_warps": (4, 8), "num_stages": (1, 2)}),
        "chunk_du_bwd": ("bwd", {"BK": (32, 64), "BV": (32, 64), "num_warps": (4, 8), "num_stages": (1, 2)}),
        "chunk_ridge_bwd_dk": ("bwd", {"BK": (16, 32, 64), "BV": (32, 64), "num_warps": (4, 8),
                                       "num_stages": (1, 2)}),
        "fused_recurrent_fwd": ("recurrent", {"BR": (16, 32, 64), "num_warps": (2, 4, 8)}),
    },
}

# TileLang's kernels (their templates' default_config): the thread count of each program, which sets
# how T.gemm splits its tiles over warps and how T.Parallel loops spread, and the forward state
# scan's pipeline depth over its chunks (T.Pipelined num_stages). Only the linear family:
# the ridge programs map rows to threads explicitly (the first 64 of 256 run the per-row sums), so
# their thread count is part of the program, not a launch choice.
TILELANG_SPACES = {
    "linear": {
        "chunk_intra_fwd": ("fwd", {"threads": (128, 256)}),
        "chunk_state_fwd": ("fwd", {"threads": (64, 128, 256), "num_stages": (1, 2, 3)}),
        "chunk_output_fwd": ("fwd", {"threads": (128, 256)}),
        "chunk_state_bwd": ("bwd", {"threads": (64, 128, 256)}),
        "chunk_grad_bwd": ("bwd", {"threads": (128, 256)}),
        "fused_recurrent_fwd": ("recurrent", {"threads": (64, 128, 256)}),
    },
}


def _spaces(backend: str) -> dict:
    return {"triton": SPACES, "tilelang": TILELANG_SPACES}[backend]


# The widest sensible block of each tile parameter: the axis it tiles, rounded up to a power of
# two (a wider block is all padding, or is clamped back by the launcher: a duplicate).
_AXIS = {"BK": "K", "BV": "V", "BX": "KV", "BR": "K"}


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _fits_axis(param: str, value: int, K: int, V: int) -> bool:
    axis = _AXIS.get(param)
    if axis is None:
        return True
    width = {"K": K, "V": V, "KV": max(K, V)}[axis]
    return value <= max(16, _pow2(width))


def kernels(family: str, backend: str = "triton") -> list[str]:
    """The tunable kernels of ``backend`` for ``family`` ([] where it has none)."""
    return list(_spaces(backend).get(family, {}))


def phase(family: str, kernel: str, backend: str = "triton") -> str:
    return _spaces(backend)[family][kernel][0]


def candidates(family: str, kernel: str, K: int, V: int, default: dict, backend: str = "triton") -> list[dict]:
    """Every config of ``backend``'s ``kernel`` to try at this K, V: the default first, then the
    space's product (duplicates and blocks wider than their axis dropped). Keys are the default's."""
    space = {p: vs for p, vs in _spaces(backend)[family][kernel][1].items() if p in default}
    out = [dict(default)]
    for values in itertools.product(*space.values()):
        cfg = {**default, **dict(zip(space, values))}
        if all(_fits_axis(p, v, K, V) for p, v in cfg.items()) and not _redundant(cfg, K) and cfg not in out:
            out.append(cfg)
    return out


def _redundant(cfg: dict, K: int) -> bool:
    """A ridge solve config whose row block the launcher overrides: the K-tiled solver (BK < K)
    takes whole chunks, so its BS < 64 would run (and be timed) as BS = 64 again."""
    return cfg.get("BS", 64) < 64 and cfg.get("BK", K) < K
