"""Sizing experiment (no GPU needed): a row-block Chebyshev solve of the ridge family with the
chunk's K and H_c and a block of BR rows' iterates all on chip, compiled for sm_90 with the Triton
backend's own compiler; prints shared memory, registers and spills per (K, H_c dtype, BR, warps).
One step has the shape of GKA's: X H_c + ((X K^T) . D) K + lambda X and the Chebyshev update (the
per-row e^G factor and the real coefficients are left out: only the resources are read).

    python bench/results/ridge_rowblock_sizing.py
"""
import sys
from pathlib import Path

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from gka_gen.resources import _ptxas_usage  # noqa: E402


@triton.jit
def rowblock_cheb(b_ptr, k_ptr, hc_ptr, d_ptr, x_ptr, num_iter, K: tl.constexpr, BT: tl.constexpr,
                  BR: tl.constexpr, HC16: tl.constexpr):
    rows = tl.arange(0, BR)
    ck = tl.arange(0, K)
    ct = tl.arange(0, BT)
    b = tl.load(b_ptr + rows[:, None] * K + ck[None, :])
    kc = tl.load(k_ptr + ct[:, None] * K + ck[None, :])
    hc = tl.load(hc_ptr + ck[:, None] * K + ck[None, :])
    if HC16:
        hc = hc.to(tl.bfloat16)
    D = tl.load(d_ptr + rows[:, None] * BT + ct[None, :])
    x_prev = tl.zeros([BR, K], dtype=tl.float32)
    x = b * 0.1
    w = 2.
    for _ in range(num_iter):
        w = 4. / (4. - 0.5 * w)
        P = tl.dot(x.to(tl.bfloat16), tl.trans(kc)) * D
        if HC16:
            ax = tl.dot(x.to(tl.bfloat16), hc)
        else:
            ax = tl.dot(x, hc, input_precision="tf32")
        ax += tl.dot(P.to(tl.bfloat16), kc) + 0.1 * x
        x_new = x - (0.1 * w) * (ax - b) + (w - 1.) * (x - x_prev)
        x_prev = x
        x = x_new
    tl.store(x_ptr + rows[:, None] * K + ck[None, :], x)


sig = {"b_ptr": "*fp32", "k_ptr": "*bf16", "hc_ptr": "*fp32", "d_ptr": "*fp32", "x_ptr": "*fp32", "num_iter": "i32",
       "K": "constexpr", "BT": "constexpr", "BR": "constexpr", "HC16": "constexpr"}
for K in (128, 64):
    for hc16 in (False, True):
        for BR in (16, 32, 64):
            for nw in (4, 8):
                src = ASTSource(rowblock_cheb, sig, constexprs={"K": K, "BT": 64, "BR": BR, "HC16": hc16})
                ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": nw, "num_stages": 1})
                u = _ptxas_usage(ck.asm["ptx"])
                print(f"K={K} H_c {'bf16' if hc16 else 'fp32'} BR={BR:2d} warps={nw}: shared {ck.metadata.shared:6d} B, {u}", flush=True)
