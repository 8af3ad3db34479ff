"""`gka-gen compare`: the MQAR task, that training works, the numerics, and the whole report.

Triton kernels run in the interpreter (set before triton is imported); every size is tiny.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import dataclasses  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from gka_gen.cli import app  # noqa: E402
from gka_gen.compare import mqar, numerics, run, settings  # noqa: E402
from gka_gen.compare.variants import load_variant  # noqa: E402
from gka_gen.errors import SpecError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny ops: a second thread only adds synchronisation, and on a shared machine it can make
    # training steps many times slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_mqar_targets_are_the_values_of_the_queried_keys():
    vocab = mqar.Vocab(n_keys=16, n_values=8)
    x, y = mqar.mqar_batch(64, 24, 6, vocab, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (64, 24)
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        keys, values = row_x[0:12:2], row_x[1:12:2]
        assert len(set(keys)) == 6 and all(1 <= k <= 16 for k in keys)
        assert all(17 <= v < vocab.size for v in values)
        assert all(t == mqar.IGNORE for t in row_y[:12])  # nothing is asked inside the pairs
        answer = dict(zip(keys, values))
        asked = [(tok, tgt) for tok, tgt in zip(row_x[12:], row_y[12:]) if tgt != mqar.IGNORE]
        assert sorted(tok for tok, _ in asked) == sorted(keys)  # every key asked exactly once
        assert all(answer[tok] == tgt for tok, tgt in asked)
        assert all(tok == 0 for tok, tgt in zip(row_x[12:], row_y[12:]) if tgt == mqar.IGNORE)


def test_mqar_rejects_settings_that_do_not_fit():
    vocab = mqar.Vocab(4, 4)
    with pytest.raises(ValueError, match="distinct keys"):
        mqar.mqar_batch(1, 30, 5, vocab, torch.Generator())
    with pytest.raises(ValueError, match="needs 9"):
        mqar.mqar_batch(1, 8, 3, vocab, torch.Generator())


def test_tiny_model_learns_recall_above_chance():
    setup = mqar.RecallSetup(seq_lens=(12,), num_kvs=(2,), vocab=mqar.Vocab(8, 8), steps=60, batch=32,
                             eval_batch=256, d_model=32, n_layers=1, num_heads=2, head_dim=16, lr=1e-2)
    layer = load_variant(SPECS / "deltanet.yaml").layer_cls
    model = mqar.build_model(layer, setup, {"backend": "reference"})
    untrained = mqar.evaluate(model, setup, "cpu")[0]["accuracy"]
    mqar.train(model, setup, "cpu")
    acc = mqar.evaluate(model, setup, "cpu")[0]["accuracy"]
    assert acc > 3 * setup.vocab.chance, (untrained, acc)
    assert acc > untrained + 0.2


def test_bf16_kernels_are_less_accurate_than_fp32():
    setup = numerics.NumericsSetup(seq_lens=(32,), batch=1, heads=1, head_dim=16, backend="triton")
    rows = {r["dtype"]: r for r in numerics.kernel_errors(load_variant(SPECS / "gated_deltanet.yaml"), setup, "cpu")}
    assert rows["fp32"]["o"] < 1e-5 and rows["fp32"]["grad"] < 1e-4
    assert rows["bf16"]["o"] > 30 * rows["fp32"]["o"]
    assert rows["bf16"]["o"] < 5e-2  # bf16 rounding, not a wrong kernel


def test_solver_residuals_fall_with_iterations_and_bf16_sets_a_floor():
    setup = numerics.SolverSetup(iters=(2, 30), ridge_ratios=(0.2, 0.005), cond_iters=30, systems=8, K=32, T=64)
    res = numerics.solver_residuals(setup)
    by = {(r["solver"], r["dtype"], r["iters"]): r["median_residual"] for r in res["by_iters"]}
    for solver in ("chebyshev", "cg"):
        assert by[solver, "fp32", 30] < 1e-2 * by[solver, "fp32", 2]
        assert by[solver, "bf16", 30] > 10 * by[solver, "fp32", 30]
    cond = {(r["solver"], r["dtype"], r["ridge_ratio"]): r for r in res["by_cond"]}
    # A smaller ridge ratio is a worse-conditioned system, within the (1 + a) / a bound.
    assert cond["chebyshev", "fp32", 0.005]["condition"] > cond["chebyshev", "fp32", 0.2]["condition"]
    assert all(r["condition"] <= r["bound"] for r in res["by_cond"])
    assert cond["chebyshev", "fp32", 0.005]["median_residual"] > cond["chebyshev", "fp32", 0.2]["median_residual"]


def _tiny(device, quick, kernels_on_cpu):
    s = settings.settings_for(device, quick, kernels_on_cpu)
    return dataclasses.replace(
        s,
        speed=dataclasses.replace(s.speed, seq_lens=(16, 32), heads=1, head_dim=16, reps=1),
        numerics=dataclasses.replace(s.numerics, seq_lens=(16, 32), heads=1, head_dim=16),
        solver=dataclasses.replace(s.solver, iters=(2, 30), ridge_ratios=(0.1, 0.01), systems=4, K=16, T=32),
        recall=dataclasses.replace(s.recall, seq_lens=(12, 16), num_kvs=(2, 4), steps=2, batch=2, eval_batch=4,
                                   num_heads=1, head_dim=16),
    )


def test_compare_command_writes_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "settings_for", _tiny)
    out = tmp_path / "report"
    specs = [str(SPECS / "deltanet.yaml"), str(SPECS / "gka.yaml")]
    result = CliRunner().invoke(app, ["compare", *specs, "--device", "cpu", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    for heading in ("## Setup", "## Speed", "## Numerics", "### Ridge solve", "## Recall (MQAR)"):
        assert heading in text
    assert f"gka-gen compare {' '.join(specs)} --device cpu --quick --out {out}" in text
    assert f"torch {torch.__version__}" in text
    for png in ("speed", "numerics", "solver_iters", "solver_cond", "recall"):
        assert f"({png}.png)" in text
        data = (out / f"{png}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["recall"]["steps"] == 2  # the tiny sizes above, not the quick profile
    assert {r["variant"] for r in results["recall"]["accuracy"]} == {"deltanet", "gka"}
    assert not [r for r in results["speed"] + results["numerics"] if "error" in r]
    bf16 = [r["o"] for r in results["numerics"] if r["dtype"] == "bf16"]
    fp32 = [r["o"] for r in results["numerics"] if r["dtype"] == "fp32"]
    assert min(bf16) > max(fp32)


def test_a_spec_without_a_generated_package_is_refused(tmp_path):
    spec = tmp_path / "other.yaml"
    spec.write_text((SPECS / "deltanet.yaml").read_text().replace("name: deltanet", "name: not_generated"))
    with pytest.raises(SpecError, match="gka-gen generate"):
        load_variant(spec)
