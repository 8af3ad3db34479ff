"""Symbolic proofs of the lowering rules: each passes, and each can fail.

A proof that cannot fail proves nothing, so every rule is also run with a deliberately
wrong variant (a dropped decay, a wrong causal mask, a dropped term) that must FAIL.
"""
from __future__ import annotations

import sympy
import pytest

from gka_gen.symbolic import proofs as P


@pytest.fixture(scope="module")
def results():
    return P.run_all()


def test_every_proof_passes(results):
    failed = [str(r) for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    names = {r.name for r in results}
    for expected in ("wy_chunk[none]", "wy_chunk[scalar]", "wy_chunk[channel]", "gated_scan[scalar]",
                     "gated_scan[channel]", "ridge_split", "chebyshev_polynomial", "chebyshev_adjoint", "ridge_grad"):
        assert expected in names


def test_results_are_small_records(results):
    for r in results:
        assert isinstance(r, P.ProofResult)
        assert r.statement and r.detail and isinstance(r.passed, bool)
    text = P.summary(results, verbose=True)
    assert f"{len(results)}/{len(results)} proofs passed" in text
    assert results[0].statement in text


# (proof, kwargs) that must fail: one or more wrong variants per rule.
WRONG = [
    (P.prove_wy, dict(decay="scalar", K=2, mutation="A_no_decay")),
    (P.prove_wy, dict(decay="channel", K=2, mutation="A_no_decay")),
    (P.prove_wy, dict(decay="channel", K=2, mutation="W_no_decay")),
    (P.prove_wy, dict(decay="none", K=2, mutation="out_strict_mask")),
    (P.prove_wy, dict(decay="scalar", K=2, mutation="state_no_decay")),
    (P.prove_gated_scan, dict(decay="scalar", mutation="mask_strict")),
    (P.prove_gated_scan, dict(decay="channel", mutation="no_intra_decay")),
    (P.prove_gated_scan, dict(decay="channel", factored=True, mutation="mask_strict")),
    (P.prove_gated_scan, dict(decay="scalar", factored=True, mutation="no_boundary_decay")),
    (P.prove_ridge_split, dict(mutation="matvec_strict_mask")),
    (P.prove_ridge_split, dict(mutation="matvec_no_inter_decay")),
    (P.prove_ridge_split, dict(mutation="fro_no_cross")),
    (P.prove_ridge_split, dict(mutation="fro_cross_once")),
    (P.prove_chebyshev_polynomial, dict(mutation="w0_one")),
    (P.prove_chebyshev_adjoint, dict(iters=2, mutation="nonsymmetric_A")),
    (P.prove_chebyshev_adjoint, dict(mutation="steepest_descent")),
    (P.prove_ridge_grad, dict(mutation="no_lam_path")),
    (P.prove_ridge_grad, dict(mutation="dq_untransposed")),
]


@pytest.mark.parametrize("proof,kwargs", WRONG, ids=[f"{p.__name__}-{k['mutation']}" for p, k in WRONG])
def test_wrong_variant_fails(proof, kwargs):
    r = proof(**kwargs)
    assert not r.passed, f"the wrong variant {kwargs['mutation']!r} was not caught: {r}"
    assert "differs" in r.detail or "not" in r.detail
    assert kwargs["mutation"] in r.name


def test_dropping_decay_is_invisible_without_decay():
    # Sanity of the mutation hooks: with no decay, "drop the decay" changes nothing.
    assert P.prove_wy("none", K=2, mutation="A_no_decay").passed


def test_chebyshev_converges_on_an_exact_matrix():
    # The generic recurrence on exact rationals approaches the exact solve at the Chebyshev rate.
    A = sympy.Matrix([[2, sympy.Rational(1, 2)], [sympy.Rational(1, 2), 1]])
    q = sympy.Matrix([1, -1])
    ev = sorted(A.eigenvals())
    lo, hi = sympy.Rational(1, 2), sympy.Integer(3)  # brackets the spectrum (eigenvalues 3/2 +- sqrt(2)/2)
    assert lo <= min(ev) and max(ev) <= hi
    exact = A.LUsolve(q)
    errs = []
    for n in (2, 6, 10):
        x = P.chebyshev(lambda y: A * y, q, lo, hi, n)
        assert all(isinstance(e, sympy.Rational) for e in x)  # no floating point anywhere
        errs.append(max(abs(e) for e in x - exact))
    assert errs[0] > errs[1] > errs[2]
    # Chebyshev bound on [lo, hi]: ||e||_A <= 2 s^(n+1) ||x||_A, s = (sqrt(kappa)-1)/(sqrt(kappa)+1).
    kappa = float(hi / lo)
    s = (kappa**0.5 - 1) / (kappa**0.5 + 1)
    x_norm = max(abs(float(e)) for e in exact) * 2**0.5
    assert float(errs[2]) <= 2 * s**11 * kappa**0.5 * x_norm
