"""`gka-gen verify` (the demo's check): it passes on a real package and fails on a broken one."""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from gka_gen import verify  # noqa: E402

SPECS = Path(__file__).resolve().parents[1] / "specs"


def test_verify_passes_on_generated_gated_deltanet():
    checks = verify.verify_spec(SPECS / "gated_deltanet.yaml", backend="triton", device="cpu")
    assert len(checks) == 4 and all(c.ok for c in checks), [(c.case, c.worst, c.problem) for c in checks]
    assert all({"o", "state0", "recurrent o", "dq", "dk", "dv", "dg", "dbeta", "dh0[0]"} <= set(c.errors)
               for c in checks if "h0" in c.case)


def test_verify_fails_on_a_wrong_kernel(monkeypatch):
    import generated.gated_deltanet as pkg

    real = pkg.chunk_gated_deltanet

    def off_by_a_bit(*args, **kwargs):
        o, final = real(*args, **kwargs)
        return o * 1.01, final

    monkeypatch.setattr(pkg, "chunk_gated_deltanet", off_by_a_bit)
    checks = verify.verify_spec(SPECS / "gated_deltanet.yaml", backend="triton", device="cpu")
    assert not any(c.ok for c in checks)
    assert all(c.errors["o"] == pytest.approx(0.01, rel=0.2) or c.problem for c in checks)
