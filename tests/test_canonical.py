"""Canonical forms: the six specs classify as published, and the classification is algebraic.

The canonicaliser works on the expanded algebra, not the text: the same recurrence spelled
differently must give the same form, and specs outside the six (linear attention, a CG or
exact-solve GKA) must work without compiler changes.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gka_gen.spec import load_spec, spec_from_dict
from gka_gen.symbolic.canonical import CanonicalForm, canonicalize, describe

SPEC_DIR = Path(__file__).resolve().parents[1] / "specs"


def _raw(name):
    return yaml.safe_load((SPEC_DIR / f"{name}.yaml").read_text())


def _cf(data):
    return canonicalize(spec_from_dict(data, path="test.yaml"))


# name -> (family, [(state, decay, delta, beta, input)], readout kind, lam_rule, solver, mix)
EXPECTED = {
    "deltanet": ("linear", [("S", "none", True, "beta", ("k", "v"))], "direct", None, None, None),
    "gated_deltanet": ("linear", [("S", "scalar", True, "beta", ("k", "v"))], "direct", None, None, None),
    "kda": ("linear", [("S", "channel", True, "beta", ("k", "v"))], "direct", None, None, None),
    "gla": ("linear", [("S", "channel", False, None, ("k", "v"))], "direct", None, None, None),
    "gka": ("ridge", [("H", "scalar", False, None, ("k", "k")), ("U", "scalar", False, None, ("k", "v"))],
            "ridge", "fro_ratio", "chebyshev", "alpha"),
    "mesanet": ("ridge", [("H", "scalar", False, "beta", ("k", "k")), ("U", "scalar", False, "beta", ("k", "v"))],
                "ridge", "channel_param", "cg", None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_six_specs_classify_as_published(name):
    cf = canonicalize(load_spec(SPEC_DIR / f"{name}.yaml"))
    family, states, kind, lam_rule, solver, mix = EXPECTED[name]
    assert cf.family == family
    assert [(s.name, s.decay, s.delta, s.beta, s.input) for s in cf.states] == states
    assert (cf.readout.kind, cf.readout.lam_rule, cf.readout.solver, cf.readout.mix_gate) == (kind, lam_rule, solver, mix)
    assert CanonicalForm.from_dict(cf.to_dict()) == cf  # the generated packages embed this dict


@pytest.mark.parametrize(
    "name,update",
    [
        ("gated_deltanet", "exp(g)*S - beta*k*(k.T @ (exp(g)*S)) + beta*k*v.T"),
        ("gated_deltanet", "exp(g)*(S - beta*k@(k.T@S)) + k*(beta*v.T)"),
        ("kda", "exp(g)*S - k@(beta*(k.T@(exp(g)*S))) + beta*(k@v.T)"),
        ("deltanet", "S + beta*k*(v.T - k.T @ S)"),
        ("gla", "k*v.T + exp(g)*S"),
    ],
)
def test_respelled_recurrence_gives_the_same_form(name, update):
    data = _raw(name)
    reference = _cf(data)
    data["update"]["S"] = update
    assert _cf(data) == reference


@pytest.mark.parametrize(
    "readout",
    [
        {"lam": "ridge_ratio*fro(H)", "x": "solve(lam*I + H, q)", "o": "scale*(U.T @ ((1 - alpha)*q + alpha*x))"},
        {"x": "solve(H + ridge_ratio*fro(H)*I, q)", "o": "U.T @ (q + alpha*x - alpha*q) * scale"},
    ],
)
def test_respelled_gka_readout_gives_the_same_form(readout):
    data = _raw("gka")
    reference = _cf(data)
    data["readout"] = readout
    assert _cf(data) == reference


def test_new_specs_need_no_compiler_change():
    # Plain linear attention: no decay, no delta rule.
    data = _raw("gla")
    del data["gates"]["g"]
    data["update"]["S"] = "S + k*v.T"
    cf = _cf(data)
    assert (cf.family, cf.states[0].decay, cf.states[0].delta) == ("linear", "none", False)
    # GKA solved exactly or by CG, without the alpha mix.
    for method in ("exact", "cg"):
        data = _raw("gka")
        data["solver"]["method"] = method
        data["readout"].pop("qm")
        data["readout"]["o"] = "U.T @ x * scale"
        cf = _cf(data)
        assert (cf.readout.solver, cf.readout.mix_gate) == (method, None)
    # A gated ridge with a fixed per-channel lambda and Chebyshev (MesaNet with GKA's solver).
    data = _raw("mesanet")
    data["solver"]["method"] = "chebyshev"
    assert _cf(data).readout.lam_rule == "channel_param"


def test_describe_is_readable_math():
    text = describe(canonicalize(load_spec(SPEC_DIR / "kda.yaml")))
    assert "S_t = (I - beta_t k_t k_tᵀ) Diag(exp(g_t)) S_(t-1) + beta_t k_t v_tᵀ" in text
    assert "o_t = scale · S_tᵀ q_t" in text

