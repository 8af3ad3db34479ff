"""FLOP and minimal-HBM-byte models of every benchmarked op, so time becomes TFLOP/s and GB/s.

The models count the work of the *algorithm*, not of any one implementation, and the same
model is applied to our kernels and to flash-linear-attention's: a kernel that recomputes
(fla recomputes the chunk states in its backward) or runs extra passes does not get credit
for it, so the achieved TFLOP/s of two rows of one family compare their useful work per second.

Conventions
- A matrix product of an (m x n) by an (n x p) operand costs 2·m·n·p FLOPs (multiply + add),
  counted at full size even when the result is masked to a triangle: tensor cores compute
  the whole tile.
- Elementwise work (gates, exp, beta scaling, solver vector updates and dot products) is
  not counted: it runs on CUDA cores, is O(C·K) per chunk against O(C²·K) for the products,
  and counting it would mix two peaks.
- Chunked form with C tokens a chunk (C = 64 in ours and in fla), per (batch, head): the work
  of a sequence is (chunks) x (work of one chunk), chunks = ceil(T / C).
- Backward = 2 x forward for every product: Y = A·B gives dA = dY·Bᵀ and dB = Aᵀ·dY, two
  products of the same size (both operands depend on the inputs for every product here).
  The ridge solve is the exception, derived in `ridge_chunk_flops`.

Bytes: the minimum any implementation must move through HBM. The forward reads each input
once and writes the output; the backward reads the inputs and dO again and writes one
gradient per input: fwd = in + out, fwd+bwd = (in + out) + (in + out + in) = 3·in + 2·out.
Gates are fp32 (their precision matters; our kernels and fla both take them so), q/k/v/o
in the benchmark dtype.
"""
from __future__ import annotations

import math

CHUNK = 64

# Per-token gate widths of each op's inputs ("K": one value per key channel, 1: one per head),
# in the order make_inputs creates them; HEAD_PARAMS: [H, K] fp32 tensors (MesaNet's lambda).
GATES = {
    "deltanet": {"beta": 1},
    "gated_deltanet": {"g": 1, "beta": 1},
    "kda": {"g": "K", "beta": 1},
    "gla": {"g": "K"},
    "gka": {"g": 1, "gk": 1, "alpha": 1},
    "mesanet": {"g": 1, "beta": 1},
    "sdpa": {},
}
HEAD_PARAMS = {"mesanet": ("lamb",)}
RIDGE = ("gka", "mesanet")


def delta_chunk_flops(C: int, K: int, V: int) -> tuple[float, float]:
    """(forward, backward) FLOPs of one chunk of the chunked delta rule (DeltaNet, Gated DeltaNet, KDA).

    The WY form (fla's chunk_gated_delta_rule pipeline; ours lowers to the same products):
      A   = strict_tril(diag(β) K Kᵀ)          C·C·K   -> 2C²K
      Tinv = (I + A)⁻¹, unit lower triangular   C³/6 multiply-adds -> C³/3
      W   = Tinv diag(β) K                      C·C·K   -> 2C²K
      U   = Tinv diag(β) V                      C·C·V   -> 2C²V
      V'  = U - W S                             C·K·V   -> 2CKV
      O   = Q S + tril(Q Kᵀ) V'                 2CKV + 2C²K + 2C²V
      S  <- S + Kᵀ V'                           K·C·V   -> 2CKV
    Decays (scalar or per channel) only rescale rows and columns: no extra products.
    """
    fwd = 6 * C * C * K + 4 * C * C * V + 6 * C * K * V + C ** 3 / 3
    return fwd, 2 * fwd


def gla_chunk_flops(C: int, K: int, V: int) -> tuple[float, float]:
    """(forward, backward) FLOPs of one chunk of gated linear attention (no delta rule).

      A  = tril(Q Kᵀ) (decay-scaled)   2C²K
      O  = Q S + A V                   2CKV + 2C²V
      S <- S + Kᵀ V                    2CKV
    """
    fwd = 2 * C * C * K + 2 * C * C * V + 4 * C * K * V
    return fwd, 2 * fwd


def ridge_chunk_flops(C: int, K: int, V: int, num_iter: int, adaptive_lambda: bool) -> tuple[float, float]:
    """(forward, backward) FLOPs of one chunk of the ridge family (GKA: Chebyshev, MesaNet: CG).

    States H (K x K) and U (K x V), x_t = (H_t + Λ_t)⁻¹ q_t at every token, o_t = U_tᵀ x_t:
      H <- H + Kᵀ diag(β) K                     2CK²
      U <- U + Kᵀ diag(β) V                     2CKV
      solver, per iteration: one product (H_t + Λ_t) p_t for each of the C tokens, with
        H_t = a_t H_0 + Σ_{s≤t} β_s k_s k_sᵀ (H_0: the state at the chunk start):
        P H_0 (2CK²), G = tril(P Kᵀ) (2C²K), G K (2C²K)       -> 2CK² + 4C²K
        (Chebyshev and CG both take exactly one such product an iteration.)
      readout O = X U_0 + tril(X Kᵀ) V          2CKV + 2C²K + 2C²V
      GKA's λ_t = r·‖H_t‖_F:  ‖H_t‖² = a²‖H_0‖² + 2a Σ β_s k_sᵀ H_0 k_s + Σ_{s,s'≤t} β_s β_s' (k_sᵀ k_s')²
        needs K H_0 (2CK²) and K Kᵀ (2C²K).
    Backward: the solve is linear in q, so its gradient is one adjoint solve with the same
    symmetric matrix (same iterations, same cost); the gradient to H_t, -y_t x_tᵀ, reaches k
    through the H recurrence as a chunked linear-attention pass with values of width K
    (4C²K + 4CK², the GLA forward with V = K). Everything else: 2 x its forward.
    """
    solve = num_iter * (2 * C * K * K + 4 * C * C * K)
    rest = 2 * C * K * K + 2 * C * K * V + 2 * C * K * V + 2 * C * C * K + 2 * C * C * V
    if adaptive_lambda:
        rest += 2 * C * K * K + 2 * C * C * K
    fwd = solve + rest
    bwd = 2 * rest + solve + 4 * C * C * K + 4 * C * K * K
    return fwd, bwd


def sdpa_flops(T: int, K: int, V: int) -> tuple[float, float]:
    """(forward, backward) FLOPs of causal softmax attention for one (batch, head).

    Causal: T(T+1)/2 (query, key) pairs; each costs 2K for QKᵀ and 2V for PV. The backward
    counts 2 x (dS, dQ, dK, dV products); FlashAttention papers report 2.5 x because they
    also count the recomputation of P, which this model leaves out as for every other op.
    """
    pairs = T * (T + 1) / 2
    fwd = 2 * pairs * K + 2 * pairs * V
    return fwd, 2 * fwd


def flops(op: str, *, B: int, T: int, H: int, K: int, V: int, num_iter: int = 0) -> dict:
    """{"fwd": FLOPs, "fwdbwd": FLOPs} of one call of `op` (a spec name or "sdpa") on [B, T, H, K/V]."""
    if op == "sdpa":
        f, b = sdpa_flops(T, K, V)
        return {"fwd": B * H * f, "fwdbwd": B * H * (f + b)}
    if op in ("deltanet", "gated_deltanet", "kda"):
        f, b = delta_chunk_flops(CHUNK, K, V)
    elif op == "gla":
        f, b = gla_chunk_flops(CHUNK, K, V)
    elif op in RIDGE:
        f, b = ridge_chunk_flops(CHUNK, K, V, num_iter, adaptive_lambda=op == "gka")
    else:
        raise KeyError(f"no FLOP model for {op!r}")
    n = B * H * math.ceil(T / CHUNK)
    return {"fwd": n * f, "fwdbwd": n * (f + b)}


def hbm_bytes(op: str, *, B: int, T: int, H: int, K: int, V: int, elem: int = 2, gate_elem: int = 4) -> dict:
    """{"fwd": bytes, "fwdbwd": bytes}: minimal HBM traffic of one call (module docstring)."""
    tokens = B * T * H
    gate_width = sum(K if w == "K" else w for w in GATES[op].values())
    inputs = tokens * (2 * K + V) * elem + tokens * gate_width * gate_elem
    inputs += len(HEAD_PARAMS.get(op, ())) * H * K * gate_elem
    out = tokens * V * elem
    return {"fwd": inputs + out, "fwdbwd": 3 * inputs + 2 * out}
