"""Which rows a benchmark run measures: ops x backends x shapes.

Shapes: the issue asks for "B=4, T in {2048, 4096, 8192, 16384} (B·T constant)", which
cannot hold both at once. We keep the tokens per batch constant at B·T = 16384, so B = 4 at
T = 4096 (the shape of the committed correctness runs) and B = 8, 4, 2, 1 over the four
lengths. Equal tokens make a linear-time op take equal time at every T, which is what the
"time per token flat within 15%" target checks, and every row moves the same amount of data.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

OURS = ("deltanet", "gated_deltanet", "kda", "gla", "gka", "mesanet")
# fla 0.6.0's op for each spec whose inputs mean the same thing (ours lists the op it is compared to).
FLA_OP = {
    "deltanet": "chunk_delta_rule",
    "gated_deltanet": "chunk_gated_delta_rule",
    "kda": "chunk_kda",
    "gla": "chunk_gla",
    "mesanet": "chunk_mesa_net",
}
# Our op -> the fla op its ratio is taken against. GKA has no fla kernel; the target
# compares it with fla's MesaNet (CG) at the same iteration count.
MATCH = {**{s: FLA_OP[s] for s in FLA_OP}, "gka": "chunk_mesa_net"}

# fla 0.6.0 sends some kernels (the delta rules' dq/dk/dw/dg backward, several of KDA's) to TileLang
# when it is importable, and TileLang is not always its faster path (chunk_delta_rule's fwd+bwd went
# from 1.91 to 2.69 ms on the H200). So each fla op gets two rows: "triton" (FLA_TILELANG=0: its
# Triton kernels only) and "tilelang" (its default dispatch), and ratios take the faster one. The
# Gated DeltaNet "triton" row is an error on Hopper with Triton 3.4-3.7.0 (fla #640).
FLA_BACKENDS = ("triton", "tilelang")

TOKENS = 16384
T_FULL = (2048, 4096, 8192, 16384)
K_FULL = (128, 64)


@dataclass(frozen=True)
class Case:
    """One benchmark row: `name` run by `impl` on inputs drawn for `spec` at one shape."""

    name: str  # our spec name, "fla.<op>" or "sdpa"
    impl: str  # "ours" | "fla" | "torch"
    backend: str  # ours: triton | tilelang | reference; fla: one of FLA_BACKENDS; sdpa: flash (CUDA) or math (CPU)
    spec: str  # whose inputs (and FLOP/byte model): a spec name, or "sdpa"
    B: int
    T: int
    H: int
    K: int
    V: int

    def key(self) -> dict:
        return asdict(self)


def build_plan(*, ops, backends, Ts, Ks, H, tokens, fla: bool, device: str) -> list[Case]:
    """Rows in run order: K (the main target, 128, first), then T, then op.

    `ops` are our spec names and "sdpa"; each spec in FLA_OP also brings its fla rows (one per
    FLA_BACKENDS) when `fla` is set. Our rows come once per backend in `backends` that the caller found usable.
    """
    plan = []
    for K in Ks:
        for T in Ts:
            if tokens % T:
                raise ValueError(f"T={T} does not divide the token count {tokens}")
            shape = dict(B=tokens // T, T=T, H=H, K=K, V=K)
            for op in ops:
                if op == "sdpa":
                    plan.append(Case("sdpa", "torch", "flash" if device == "cuda" else "math", "sdpa", **shape))
                    continue
                plan += [Case(op, "ours", b, op, **shape) for b in backends.get(op, ())]
                if fla and op in FLA_OP:
                    plan += [Case(f"fla.{FLA_OP[op]}", "fla", b, op, **shape) for b in FLA_BACKENDS]
    return plan
