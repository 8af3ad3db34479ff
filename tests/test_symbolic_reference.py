"""The exact spec-derived reference against independent hand-written float64 loops.

The loops below are written from the published recurrences (DESIGN.md), not from the
specs, so agreement checks the spec files, the expression lowering and the unrolling at once.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sympy

from gka_gen.spec import load_spec
from gka_gen.symbolic.reference import (
    RationalInputs,
    canonical_number,
    random_rational_inputs,
    result_to_numpy,
    result_to_torch,
    symbolic_reference,
)

SPEC_DIR = Path(__file__).resolve().parents[1] / "specs"
SIZES = {"K": 3, "V": 2}
T = 6


def spec(name):
    return load_spec(SPEC_DIR / f"{name}.yaml")


# ----------------------------------------------------------------------------- hand loops (float64)


def _tok(a, t):
    """Token t of a [1, T, 1, ...] array, as a float or a 1-D vector."""
    x = a[0, t, 0]
    return float(x) if np.ndim(x) == 0 else x


def _init(args, *shapes):
    init = args["initial_state"]
    if init is None:
        return [np.zeros(s) for s in shapes]
    init = init if isinstance(init, tuple) else (init,)
    return [s[0, 0].copy() for s in init]


def loop_delta(args, decay):
    """DeltaNet / Gated DeltaNet / KDA: S_t = (I - b k k^T) D_t S_{t-1} + b k v^T; o_t = scale S_t^T q_t."""
    q, k, v, beta = args["q"], args["k"], args["v"], args["beta"]
    K, V = q.shape[-1], v.shape[-1]
    (S,) = _init(args, (K, V))
    out = []
    for t in range(q.shape[1]):
        kt, b = _tok(k, t), _tok(beta, t)
        if decay == "scalar":
            S = np.exp(_tok(args["g"], t)) * S
        elif decay == "channel":
            S = np.exp(_tok(args["g"], t))[:, None] * S
        S = (np.eye(K) - b * np.outer(kt, kt)) @ S + b * np.outer(kt, _tok(v, t))
        out.append(args["scale"] * S.T @ _tok(q, t))
    return np.array(out), S


def loop_gla(args):
    q, k, v = args["q"], args["k"], args["v"]
    (S,) = _init(args, (q.shape[-1], v.shape[-1]))
    out = []
    for t in range(q.shape[1]):
        S = np.exp(_tok(args["g"], t))[:, None] * S + np.outer(_tok(k, t), _tok(v, t))
        out.append(args["scale"] * S.T @ _tok(q, t))
    return np.array(out), S


def loop_ridge(args, kind):
    """GKA (exact solve, lam = a ||H||_F, alpha mix) or MesaNet (beta-weighted, diag(lamb))."""
    q, k, v = args["q"], args["k"], args["v"]
    K, V = q.shape[-1], v.shape[-1]
    H, U = _init(args, (K, K), (K, V))
    out, xs = [], []
    for t in range(q.shape[1]):
        kt, vt, qt = _tok(k, t), _tok(v, t), _tok(q, t)
        if kind == "gka":
            H = np.exp(_tok(args["gk"], t)) * H + np.outer(kt, kt)
            U = np.exp(_tok(args["g"], t)) * U + np.outer(kt, vt)
            lam = args["ridge_ratio"] * np.linalg.norm(H)
            x = np.linalg.solve(H + lam * np.eye(K), qt)
            a = _tok(args["alpha"], t)
            out.append(args["scale"] * U.T @ (qt + a * (x - qt)))
        else:
            b, d = _tok(args["beta"], t), np.exp(_tok(args["g"], t))
            H = d * H + b * np.outer(kt, kt)
            U = d * U + b * np.outer(kt, vt)
            x = np.linalg.solve(H + np.diag(args["lamb"][0]), qt)
            out.append(U.T @ x)
        xs.append(x)
    return np.array(out), (H, U)


LOOPS = {
    "deltanet": lambda a: loop_delta(a, "none"),
    "gated_deltanet": lambda a: loop_delta(a, "scalar"),
    "kda": lambda a: loop_delta(a, "channel"),
    "gla": loop_gla,
    "gka": lambda a: loop_ridge(a, "gka"),
    "mesanet": lambda a: loop_ridge(a, "mesanet"),
}


# ----------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("init", [False, True], ids=["zero_state", "initial_state"])
@pytest.mark.parametrize("name", list(LOOPS))
def test_matches_hand_loop(name, init):
    sp = spec(name)
    inp = random_rational_inputs(sp, SIZES, T, seed=7 + init, initial_state=init)
    res = symbolic_reference(sp, inp, sizes=SIZES, T=T)
    o, final = result_to_numpy(sp, res)
    args = inp.to_numpy()
    o_ref, final_ref = LOOPS[name](args)
    np.testing.assert_allclose(o[0, :, 0], o_ref, rtol=1e-12, atol=1e-12)
    finals = final if isinstance(final, tuple) else (final,)
    finals_ref = final_ref if isinstance(final_ref, tuple) else (final_ref,)
    for got, want in zip(finals, finals_ref):
        np.testing.assert_allclose(got[0, 0], want, rtol=1e-12, atol=1e-12)


def test_gka_solution_is_exact():
    sp = spec("gka")
    inp = random_rational_inputs(sp, SIZES, 4, seed=3, initial_state=True)
    res = symbolic_reference(sp, inp, sizes=SIZES, T=4)
    a = inp.params["ridge_ratio"]
    for t, step in enumerate(res["steps"]):
        H, x, q = step["H"], step["x"], inp.tokens["q"][t]
        assert sympy.simplify(step["lam"] - a * sympy.sqrt(sum(e**2 for e in H))) == 0
        residual = ((H + step["lam"] * sympy.eye(3)) * x - q).applyfunc(canonical_number)
        assert residual == sympy.zeros(3, 1), residual
        # lam is an exact irrational (a sqrt), not a float
        assert not step["lam"].atoms(sympy.Float)
        alpha = inp.tokens["alpha"][t]
        qm = q + alpha * (x - q)
        assert ((step["U"].T * qm * inp.params["scale"]) - step["o"]).applyfunc(canonical_number) == sympy.zeros(2, 1)


def test_inputs_are_exact():
    sp = spec("kda")
    inp = random_rational_inputs(sp, SIZES, T, seed=1)
    for t in range(T):
        for n in ("q", "k"):  # norm: l2 inputs are exact unit vectors
            vec = inp.tokens[n][t]
            assert sum(e**2 for e in vec) == 1 and all(isinstance(e, sympy.Rational) for e in vec)
        g, r = inp.tokens["g"][t], inp.ratios["g"][t]
        assert g.applyfunc(sympy.exp) == r  # exp(log r) is r exactly
        assert all(0 < e <= 1 for e in r)
        assert 0 <= inp.tokens["beta"][t] <= 1
    args = inp.to_numpy()
    np.testing.assert_allclose(np.exp(args["g"][0, :, 0]), [[float(e) for e in r] for r in inp.ratios["g"]], rtol=1e-15)


def test_torch_layout():
    torch = pytest.importorskip("torch")
    sp = spec("gka")
    inp = random_rational_inputs(sp, SIZES, T, seed=2, initial_state=True)
    args = inp.to_torch()
    assert args["q"].shape == (1, T, 1, 3) and args["v"].shape == (1, T, 1, 2)
    assert args["g"].shape == (1, T, 1) and args["alpha"].shape == (1, T, 1)
    assert args["q"].dtype == torch.float64
    H0, U0 = args["initial_state"]
    assert H0.shape == (1, 1, 3, 3) and U0.shape == (1, 1, 3, 2)
    assert isinstance(args["num_iter"], int) and isinstance(args["ridge_ratio"], float)
    assert np.all(np.linalg.eigvalsh(H0[0, 0].numpy()) >= -1e-12)  # covariance is PSD
    kda = random_rational_inputs(spec("kda"), SIZES, T, seed=2, initial_state=True).to_torch()
    assert kda["g"].shape == (1, T, 1, 3) and kda["initial_state"].shape == (1, 1, 3, 2)
    mesa = random_rational_inputs(spec("mesanet"), SIZES, T, seed=2).to_torch()
    assert mesa["lamb"].shape == (1, 3) and bool((mesa["lamb"] > 0).all())
    res = symbolic_reference(sp, inp, sizes=SIZES, T=T)
    o, (H, U) = result_to_torch(sp, res)
    assert o.shape == (1, T, 1, 2) and H.shape == (1, 1, 3, 3) and U.shape == (1, 1, 3, 2)


def test_defaults_follow_the_spec():
    # gka without g, gk, alpha: g = 0 (no decay), gk = g, alpha = 1; scale = K**-0.5 exactly.
    sp = spec("gka")
    inp = random_rational_inputs(sp, SIZES, 3, seed=5)
    plain = {n: inp.tokens[n] for n in ("q", "k", "v")}
    plain["ridge_ratio"] = inp.params["ridge_ratio"]
    res = symbolic_reference(sp, plain, sizes=SIZES, T=3)
    full = dict(plain, g=[sympy.Integer(0)] * 3, gk=[sympy.Integer(0)] * 3, alpha=[sympy.Integer(1)] * 3,
                scale=1 / sympy.sqrt(3))
    res2 = symbolic_reference(sp, full, sizes=SIZES, T=3)
    for a, b in zip(res["o"], res2["o"]):
        assert (a - b).applyfunc(canonical_number) == sympy.zeros(2, 1)
    # gk defaults to g: giving only g decays both states
    g = [sympy.log(sympy.Rational(1, 2))] * 3
    r1 = symbolic_reference(sp, dict(plain, g=g), sizes=SIZES, T=3)
    r2 = symbolic_reference(sp, dict(plain, g=g, gk=g), sizes=SIZES, T=3)
    assert r1["final_state"]["H"] == r2["final_state"]["H"]


def test_initial_state_argument_forms():
    sp = spec("gated_deltanet")
    inp = random_rational_inputs(sp, SIZES, 3, seed=4, initial_state=True)
    S0 = inp.initial_state["S"]
    a = symbolic_reference(sp, inp, sizes=SIZES, T=3)
    b = symbolic_reference(sp, RationalInputs(**{**inp.__dict__, "initial_state": None}), sizes=SIZES, T=3,
                           initial_state=S0)
    c = symbolic_reference(sp, RationalInputs(**{**inp.__dict__, "initial_state": None}), sizes=SIZES, T=3)
    assert a["final_state"]["S"] == b["final_state"]["S"]
    assert a["final_state"]["S"] != c["final_state"]["S"]
    with pytest.raises(ValueError):
        symbolic_reference(sp, inp, sizes=SIZES, T=3, initial_state=sympy.zeros(2, 2))


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet", "kda", "gla", "gka", "mesanet"])
def test_matches_torch_reference_op(name):
    """The torch reference (interpreting the canonical form) against the exact values from the
    spec's own equations, on random rational inputs, for all six specs."""
    import torch

    from gka_gen.reference import reference_op

    sp = spec(name)
    inp = random_rational_inputs(sp, SIZES, T, seed=11, initial_state=True)
    res = symbolic_reference(sp, inp, sizes=SIZES, T=T)
    o_ex, st_ex = result_to_torch(sp, res)
    kwargs = inp.to_torch()
    op = reference_op(sp, solver="exact") if sp.file.solver else reference_op(sp)
    o, st = op(**kwargs)
    torch.testing.assert_close(o, o_ex, rtol=1e-10, atol=1e-10)
    st, st_ex = (st, st_ex) if isinstance(st, tuple) else ((st,), (st_ex,))
    for a, b in zip(st, st_ex):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
