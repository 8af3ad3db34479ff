"""The op kinds of the chunk-level IR: one table row per kind.

Every row says, as data, what an op of that kind reads and writes:

* ``inputs``: port -> shape template. A trailing ``?`` marks an optional port. Templates are
  comma-separated dimension names formatted with the op's attributes first, so
  ``"B,T,H,{K}"`` with ``K="K"`` is ``[B, T, H, K]`` and ``"{gshape}"`` is the shape of the
  decay gate (``B,T,H`` for a scalar gate, ``B,T,H,K`` for a per-channel one). ``*`` is a
  variadic port list whose members all share one shape (``grad_add``).
* ``outputs``: port -> (shape template, dtype rule, condition). The dtype rule is ``fp32``,
  ``io`` (the dtype the layer was called with: bf16/fp16/fp32) or ``like:<port>``. The
  condition names a boolean attribute; the output exists only when it is true.
* ``flops``: a function (attrs, dims) -> sympy expression, the arithmetic of the whole op.
* ``saves``: outputs the forward stores for the backward; every other intermediate the
  backward needs is recomputed (see `gka_gen.ir.autodiff`).

Dimensions: B batch, T tokens, H heads, C chunk size, NT = T / C chunks, plus the spec's own
dims (K, V). Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import sympy

B, T, H, C, NT = sympy.symbols("B T H C NT", positive=True, integer=True)
BASE_DIMS = {"B": B, "T": T, "H": H, "C": C, "NT": NT}


def dim(name: str) -> sympy.Symbol:
    return BASE_DIMS.get(name) or sympy.Symbol(name, positive=True, integer=True)


def _it(a) -> sympy.Expr:
    """An iteration count attribute: an int, or the name of the int param that holds it."""
    it = a.get("iters")
    return sympy.Integer(it) if isinstance(it, int) else sympy.Symbol(str(it or "num_iter"), positive=True, integer=True)


def _gsize(a, d) -> sympy.Expr:
    """Elements per token of the decay gate (1 for scalar, K for per-channel)."""
    return d[a["K"]] if a.get("decay") == "channel" else sympy.Integer(1)


@dataclass(frozen=True)
class OpKind:
    name: str
    inputs: dict[str, str]
    outputs: dict[str, tuple[str, str, str | None]]
    flops: Callable[[dict, dict], sympy.Expr]
    doc: str
    saves: tuple[str, ...] = ()
    differentiable: bool = True  # False: its adjoint rule is "no gradient flows"
    extra: dict = field(default_factory=dict)


def _k(**kw) -> OpKind:
    return OpKind(**kw)


TOK = "B,T,H"
QK = "B,T,H,{K}"
VV = "B,T,H,{V}"
ST = "B,NT,H,{R},{Q}"  # chunk-boundary states of a state (R x Q per head)
FIN = "B,H,{R},{Q}"  # initial / final state

OP_KINDS: dict[str, OpKind] = {k.name: k for k in [
    # ------------------------------------------------------------------ forward, both families
    _k(name="gate_cumsum", inputs={"g": "{gshape}"}, outputs={"g_cum": ("{gshape}", "fp32", None)},
       flops=lambda a, d: B * T * H * _gsize(a, d), saves=("g_cum",),
       doc="chunk-local cumulative sum of a log-space decay gate (G_t = sum_{j<=t in chunk} g_j)"),
    _k(name="gate_scale", inputs={"x": "B,T,H,{W}", "beta": TOK}, outputs={"y": ("B,T,H,{W}", "like:x", None)},
       flops=lambda a, d: B * T * H * d[a["W"]],
       doc="fold a unit input strength into the written vector: y = beta * x"),
    _k(name="state_scan",
       inputs={"key": "B,T,H,{R}", "val": "B,T,H,{Q}", "w?": "B,T,H,{R}", "g_cum?": "{gshape}", "beta?": TOK,
               "h0?": FIN},
       outputs={"h": (ST, "fp32", None), "v_new": ("B,T,H,{Q}", "io", "delta"), "ht": (FIN, "fp32", None)},
       flops=lambda a, d: 2 * B * T * H * d[a["R"]] * d[a["Q"]] * (1 + 2 * int(a["delta"])),
       doc="gated scan over chunks: chunk-start states h[n] (and, with the delta rule, v_new = u - w h)"),
    # ------------------------------------------------------------------ forward, delta rule (WY / UT form)
    _k(name="masked_kkt", inputs={"k": QK, "beta?": TOK, "g_cum?": "{gshape}"},
       outputs={"A": ("B,T,H,C", "fp32", None)},
       flops=lambda a, d: 2 * B * T * H * C * d[a["K"]],
       doc="strictly lower, beta-scaled, decay-weighted K K^T of each chunk"),
    _k(name="tri_solve", inputs={"A": "B,T,H,C"}, outputs={"A_inv": ("B,T,H,C", "fp32", None)},
       flops=lambda a, d: B * T * H * C * C / 3, saves=("A_inv",),
       doc="UT transform: (I + A)^-1 by blocked forward substitution"),
    _k(name="wy_recompute", inputs={"k": QK, "v": VV, "beta?": TOK, "A_inv": "B,T,H,C", "g_cum?": "{gshape}"},
       outputs={"w": (QK, "io", None), "u": (VV, "io", None)},
       flops=lambda a, d: 2 * B * T * H * C * (d[a["K"]] + d[a["V"]]),
       doc="WY factors w = A_inv (beta decay k), u = A_inv (beta v)"),
    _k(name="chunk_output", inputs={"q": QK, "k": QK, "v": VV, "h": "B,NT,H,{K},{V}", "g_cum?": "{gshape}",
                                    "beta?": TOK},
       outputs={"o": (VV, "io", None)},
       flops=lambda a, d: 2 * B * T * H * (d[a["K"]] * d[a["V"]] + C * d[a["K"]] + C * d[a["V"]]),
       doc="o = scale (inter-chunk q h[n] + intra-chunk causal (q k^T . D) v)"),
    # ------------------------------------------------------------------ forward, ridge family
    _k(name="fro_norm", inputs={"k": QK, "beta?": TOK, "g_cum?": TOK, "h": "B,NT,H,{K},{K}"},
       outputs={"hnorm": (TOK, "fp32", None)},
       flops=lambda a, d: B * T * H * (2 * C * d[a["K"]] + 3 * C + 2 * d[a["K"]] ** 2),
       saves=("hnorm",),
       doc="per-token ||H_t||_F from the chunk-start state and in-chunk keys (no per-token K x K matrix)"),
    _k(name="chebyshev_solve",
       inputs={"rhs": QK, "k": QK, "beta?": TOK, "g_cum?": TOK, "h": "B,NT,H,{K},{K}", "hnorm?": TOK,
               "lamb?": "H,{K}"},
       outputs={"x": (QK, "fp32", None)},
       flops=lambda a, d: B * T * H * _it(a) * (2 * d[a["K"]] ** 2 + 4 * C * d[a["K"]] + 8 * d[a["K"]]),
       saves=("x",),
       doc="fixed-step Chebyshev iteration on A_t = H_t + lam_t I, spectrum bounds [lam, lam + ||H_t||_F]"),
    _k(name="cg_solve",
       inputs={"rhs": QK, "k": QK, "beta?": TOK, "g_cum?": TOK, "h": "B,NT,H,{K},{K}", "hnorm?": TOK,
               "lamb?": "H,{K}"},
       outputs={"x": (QK, "fp32", None)},
       flops=lambda a, d: B * T * H * _it(a) * (2 * d[a["K"]] ** 2 + 4 * C * d[a["K"]] + 10 * d[a["K"]]),
       saves=("x",),
       doc="fixed-step conjugate gradient on A_t = H_t + Lambda"),
    _k(name="exact_solve",
       inputs={"rhs": QK, "k": QK, "beta?": TOK, "g_cum?": TOK, "h": "B,NT,H,{K},{K}", "hnorm?": TOK,
               "lamb?": "H,{K}"},
       outputs={"x": (QK, "fp32", None)},
       flops=lambda a, d: B * T * H * (2 * C * d[a["K"]] ** 2 + 2 * d[a["K"]] ** 3 / 3),
       saves=("x",),
       doc="direct solve with the per-token matrix H_t + lam_t I (materialised on chip)"),
    _k(name="alpha_mix", inputs={"q": QK, "x": QK, "alpha": TOK}, outputs={"qm": (QK, "fp32", None)},
       flops=lambda a, d: 3 * B * T * H * d[a["K"]],
       doc="qm = q + alpha (x - q)"),
    _k(name="chunk_readout", inputs={"q": QK, "k": QK, "v": VV, "h": "B,NT,H,{K},{V}", "g_cum?": TOK,
                                     "beta?": TOK},
       outputs={"o": (VV, "io", None)},
       flops=lambda a, d: 2 * B * T * H * (d[a["K"]] * d[a["V"]] + C * d[a["K"]] + C * d[a["V"]]),
       doc="o = scale (e^G qm U_c + ((qm K^T) . D) V)"),
    # ------------------------------------------------------------------ backward
    _k(name="grad_add", inputs={"*": "{shape}"}, outputs={"y": ("{shape}", "fp32", None)},
       flops=lambda a, d: (a["n"] - 1) * sympy.Mul(*[dim(s) for s in a["shape"].split(",") if s]),
       doc="sum of gradient contributions"),
    _k(name="reverse_cumsum", inputs={"dg_cum": "{gshape}"}, outputs={"dg": ("{gshape}", "fp32", None)},
       flops=lambda a, d: B * T * H * _gsize(a, d),
       doc="adjoint of gate_cumsum: chunk-local reverse cumulative sum"),
    _k(name="gate_scale_grad", inputs={"x": "B,T,H,{W}", "beta": TOK, "dy": "B,T,H,{W}"},
       outputs={"dx": ("B,T,H,{W}", "fp32", None), "dbeta": (TOK, "fp32", None)},
       flops=lambda a, d: 3 * B * T * H * d[a["W"]],
       doc="dx = beta dy, dbeta = <x, dy>"),
    _k(name="output_grad_local", inputs={"q": QK, "k": QK, "g_cum?": "{gshape}", "beta?": TOK, "do": VV},
       outputs={"dv": (VV, "fp32", None)},
       flops=lambda a, d: 2 * B * T * H * C * (d[a["K"]] + d[a["V"]]),
       doc="intra-chunk dv = (q k^T . D)^T do"),
    _k(name="output_grad_state", inputs={"q": QK, "g_cum?": "{gshape}", "do": VV},
       outputs={"dh": ("B,NT,H,{K},{V}", "fp32", None)},
       flops=lambda a, d: 2 * B * T * H * d[a["K"]] * d[a["V"]],
       doc="per-chunk dh_local = scale (decayed q)^T do"),
    _k(name="output_grad_qkg",
       inputs={"q": QK, "k": QK, "v": VV, "h": "B,NT,H,{K},{V}", "g_cum?": "{gshape}", "beta?": TOK, "do": VV},
       outputs={"dq": (QK, "fp32", None), "dk": (QK, "fp32", None), "dg_cum": ("{gshape}", "fp32", "decayed"),
                "dbeta": (TOK, "fp32", "has_beta")},
       flops=lambda a, d: 2 * B * T * H * (d[a["K"]] * d[a["V"]] + 2 * C * d[a["K"]] + C * d[a["V"]]),
       doc="dq = scale (do h^T decay + (do v^T . D) k), dk intra, dg from both"),
    _k(name="reverse_state_scan",
       inputs={"key?": "B,T,H,{R}", "w?": "B,T,H,{R}", "g_cum?": "{gshape}", "beta?": TOK, "dh": ST,
               "dv_new?": "B,T,H,{Q}", "dht?": FIN},
       outputs={"dh_total": (ST, "fp32", None), "dh0": (FIN, "fp32", None),
                "du": ("B,T,H,{Q}", "fp32", "delta")},
       flops=lambda a, d: 2 * B * T * H * d[a["R"]] * d[a["Q"]] * (1 + 2 * int(a["delta"])),
       doc="reverse gated scan of the state gradient (dh[n] = decay dh[n+1] - w^T dv_new + dh_local[n])"),
    _k(name="state_scan_grad",
       inputs={"key": "B,T,H,{R}", "val": "B,T,H,{Q}", "w?": "B,T,H,{R}", "h": ST, "dh": ST,
               "du?": "B,T,H,{Q}", "g_cum?": "{gshape}", "beta?": TOK},
       outputs={"dkey": ("B,T,H,{R}", "fp32", None), "dval": ("B,T,H,{Q}", "fp32", "nodelta"),
                "dw": ("B,T,H,{R}", "fp32", "delta"), "dg_cum": ("{gshape}", "fp32", "decayed"),
                "dbeta": (TOK, "fp32", "has_beta")},
       flops=lambda a, d: 2 * B * T * H * d[a["R"]] * d[a["Q"]] * (2 + int(a["delta"])),
       doc="gradients of the written keys/values (and w, decay) from the reverse-scanned dh"),
    _k(name="wy_grad",
       inputs={"k": QK, "v": VV, "beta?": TOK, "A_inv": "B,T,H,C", "g_cum?": "{gshape}", "dw": QK, "du": VV},
       outputs={"dk": (QK, "fp32", None), "dv": (VV, "fp32", None), "dbeta": (TOK, "fp32", "has_beta"),
                "dA_inv": ("B,T,H,C", "fp32", None), "dg_cum": ("{gshape}", "fp32", "decayed")},
       flops=lambda a, d: 4 * B * T * H * C * (d[a["K"]] + d[a["V"]]),
       doc="adjoint of the WY factors"),
    _k(name="tri_solve_grad", inputs={"A_inv": "B,T,H,C", "dA_inv": "B,T,H,C"},
       outputs={"dA": ("B,T,H,C", "fp32", None)},
       flops=lambda a, d: 4 * B * T * H * C * C,
       doc="dA = -A_inv^T dA_inv A_inv^T, strictly lower part"),
    _k(name="kkt_grad", inputs={"k": QK, "beta?": TOK, "g_cum?": "{gshape}", "dA": "B,T,H,C"},
       outputs={"dk": (QK, "fp32", None), "dbeta": (TOK, "fp32", "has_beta"),
                "dg_cum": ("{gshape}", "fp32", "decayed")},
       flops=lambda a, d: 4 * B * T * H * C * d[a["K"]],
       doc="adjoint of the masked K K^T"),
    _k(name="mix_grad", inputs={"q": QK, "x": QK, "alpha": TOK, "dqm": QK},
       outputs={"dq": (QK, "fp32", None), "dx": (QK, "fp32", None), "dalpha": (TOK, "fp32", None)},
       flops=lambda a, d: 5 * B * T * H * d[a["K"]],
       doc="dq = (1 - alpha) dqm, dx = alpha dqm, dalpha = <x - q, dqm>"),
    _k(name="solve_grad",
       inputs={"x": QK, "dq": QK, "k": QK, "beta?": TOK, "g_cum?": TOK, "h": "B,NT,H,{K},{K}"},
       outputs={"dk": (QK, "fp32", None), "dbeta": (TOK, "fp32", "has_beta"), "dg_cum": (TOK, "fp32", "decayed"),
                "dh": ("B,NT,H,{K},{K}", "fp32", None), "dhnorm": (TOK, "fp32", "fro"),
                "dlamb": ("H,{K}", "fp32", "channel")},
       flops=lambda a, d: B * T * H * (4 * C * d[a["K"]] + 4 * d[a["K"]] ** 2),
       doc="implicit gradient: dH_t = -dq x^T (rank one, in-chunk and per-chunk parts), dlam = -<x, dq>"),
    _k(name="fro_norm_grad",
       inputs={"k": QK, "beta?": TOK, "g_cum?": TOK, "h": "B,NT,H,{K},{K}", "hnorm": TOK, "dhnorm": TOK},
       outputs={"dk": (QK, "fp32", None), "dbeta": (TOK, "fp32", "has_beta"), "dg_cum": (TOK, "fp32", "decayed"),
                "dh": ("B,NT,H,{K},{K}", "fp32", None)},
       flops=lambda a, d: B * T * H * (4 * C * d[a["K"]] + 4 * d[a["K"]] ** 2),
       doc="lam path: dH_t = dhnorm_t H_t / ||H_t||_F (unmasked decay in-chunk, reverse carry across)"),
]}

# Which solver name a solve op kind implements (the inverse is used by the lowering).
SOLVER_OF_KIND = {"chebyshev_solve": "chebyshev", "cg_solve": "cg", "exact_solve": "exact"}
KIND_OF_SOLVER = {v: k for k, v in SOLVER_OF_KIND.items()}

DTYPE_BYTES = {"fp32": 4, "io": 2}
