"""The speed benchmark (bench/speed): FLOP/byte models, the row plan, the report writers, and
a CPU run of the whole harness on tiny shapes with the reference backend."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from bench.__main__ import main as bench_main
from bench.speed import calls, report, run
from bench.speed.flops import (GATES, delta_chunk_flops, flops, gla_chunk_flops, hbm_bytes, ridge_chunk_flops,
                               sdpa_flops)
from bench.speed.plan import FLA_OP, MATCH, OURS, Case, build_plan

# ----------------------------------------------------------------------------- FLOP and byte models


def test_chunk_flop_models_by_hand():
    # C=2, K=V=1. Delta: 6C²K + 4C²V + 6CKV + C³/3 = 24 + 16 + 12 + 8/3.
    assert delta_chunk_flops(2, 1, 1) == pytest.approx((54 + 2 / 3, 2 * (54 + 2 / 3)))
    # GLA: 2C²K + 2C²V + 4CKV = 8 + 8 + 8.
    assert gla_chunk_flops(2, 1, 1) == (24, 48)
    # Ridge, C=K=V=1, 2 iterations: solve 2·(2+4) = 12, rest 2+2+2+2+2 = 10;
    # backward 2·rest + solve + (4C²K + 4CK²) = 20 + 12 + 8.
    assert ridge_chunk_flops(1, 1, 1, 2, adaptive_lambda=False) == (22, 40)
    # GKA's ‖H_t‖_F adds 2CK² + 2C²K = 4 to the non-solve work (twice that in the backward).
    assert ridge_chunk_flops(1, 1, 1, 2, adaptive_lambda=True) == (26, 48)
    # Causal T=2: 3 (query, key) pairs, 2K + 2V each.
    assert sdpa_flops(2, 1, 1) == (12, 24)


def test_flops_scale_with_shape_and_iterations():
    one = flops("gla", B=1, T=64, H=1, K=1, V=1)
    assert one == {"fwd": 2 * 64 * 64 * 2 + 4 * 64, "fwdbwd": 3 * (2 * 64 * 64 * 2 + 4 * 64)}
    # Linear in B·H and in the number of chunks; a partial chunk costs a whole one.
    assert flops("gla", B=2, T=128, H=3, K=1, V=1)["fwd"] == 12 * one["fwd"]
    assert flops("gla", B=1, T=65, H=1, K=1, V=1)["fwd"] == 2 * one["fwd"]
    # Ten more solver iterations: ten more (H_t + Λ) products a token, forward and adjoint.
    a, b = (flops("gka", B=1, T=64, H=1, K=128, V=128, num_iter=n) for n in (10, 20))
    it = 2 * 64 * 128 * 128 + 4 * 64 * 64 * 128
    assert b["fwd"] - a["fwd"] == 10 * it and b["fwdbwd"] - a["fwdbwd"] == 20 * it
    # SDPA is quadratic in T, the chunked ops linear.
    assert flops("sdpa", B=1, T=4096, H=1, K=64, V=64)["fwd"] == pytest.approx(
        4 * flops("sdpa", B=1, T=2048, H=1, K=64, V=64)["fwd"], rel=1e-3)
    with pytest.raises(KeyError):
        flops("retnet", B=1, T=64, H=1, K=64, V=64)


def test_bytes_model_by_hand():
    # Gated DeltaNet, B=1 T=2 H=1 K=V=4, bf16 q/k/v, fp32 g and beta:
    # in = 2 tokens · (4+4+4) · 2 B + 2 tokens · 2 gates · 4 B = 48 + 16; out = 2 · 4 · 2 = 16.
    assert hbm_bytes("gated_deltanet", B=1, T=2, H=1, K=4, V=4) == {"fwd": 64 + 16, "fwdbwd": 3 * 64 + 2 * 16}


@pytest.mark.parametrize("spec", [*OURS, "sdpa"])
def test_bytes_model_counts_exactly_the_benchmarked_inputs(spec):
    """The model's inputs are the tensors the benchmark passes (make_inputs' gates, MesaNet's lambda)."""
    shape = dict(B=2, T=32, H=3, K=16, V=32 if spec not in ("mesanet", "sdpa") else 16)
    args = calls.make_case_inputs(Case(spec, "ours", "reference", spec, **shape), dtype=torch.bfloat16, device="cpu")
    in_bytes = sum(t.numel() * t.element_size() for t in args.values() if isinstance(t, torch.Tensor))
    out_bytes = shape["B"] * shape["T"] * shape["H"] * shape["V"] * 2
    assert hbm_bytes(spec, **shape) == {"fwd": in_bytes + out_bytes, "fwdbwd": 3 * in_bytes + 2 * out_bytes}
    assert set(GATES[spec]) <= set(args)


# ----------------------------------------------------------------------------- the plan


def test_full_plan_rows():
    backends = {s: ["triton"] for s in OURS}
    plan = build_plan(ops=[*OURS, "sdpa"], backends=backends, Ts=[2048, 4096, 8192, 16384], Ks=[128, 64], H=16,
                      tokens=16384, fla=True, device="cuda")
    assert len(plan) == 2 * 4 * (6 + 2 * 5 + 1)  # ours, fla's two backends per fla op, sdpa
    assert {c.B * c.T for c in plan} == {16384}
    assert [c.B for c in plan if c.name == "gka" and c.K == 128] == [8, 4, 2, 1]
    assert plan[0].K == 128 and plan[-1].K == 64
    assert {c.name for c in plan if c.impl == "fla"} == {f"fla.{op}" for op in FLA_OP.values()}
    # fla runs on the inputs drawn for the spec it matches; GKA is compared with fla's MesaNet.
    assert {(c.spec, c.name) for c in plan if c.impl == "fla"} == {(s, f"fla.{op}") for s, op in FLA_OP.items()}
    assert {c.backend for c in plan if c.impl == "fla"} == {"triton", "tilelang"}
    assert MATCH["gka"] == "chunk_mesa_net" and set(MATCH) == set(OURS)
    assert {c.backend for c in plan if c.name == "sdpa"} == {"flash"}
    assert all((c.H, c.V) == (16, c.K) for c in plan)


def test_plan_skips_missing_backends_and_fla():
    plan = build_plan(ops=["gka", "kda"], backends={"gka": [], "kda": ["triton", "tilelang"]}, Ts=[64], Ks=[32],
                      H=2, tokens=128, fla=False, device="cpu")
    assert [(c.name, c.backend) for c in plan] == [("kda", "triton"), ("kda", "tilelang")]
    with pytest.raises(ValueError, match="does not divide"):
        build_plan(ops=["kda"], backends={"kda": ["triton"]}, Ts=[48], Ks=[32], H=2, tokens=128, fla=False, device="cpu")


def test_tilelang_rows_follow_the_generated_packages():
    import importlib

    for spec in OURS:
        got, notes = calls.ours_available_backends(spec, ["triton", "tilelang"])
        tl = importlib.import_module(f"generated.{spec}.ops")._tilelang_kernels
        has_tilelang = tl is not None and "chunk_bwd" in tl.KERNELS  # rows time the backward too
        assert got == (["triton", "tilelang"] if has_tilelang else ["triton"])
        assert bool(notes) != has_tilelang
        if tl is not None and not has_tilelang:
            assert "no chunk_bwd" in notes[0]


def test_cli_defaults():
    full = run.parse(["--device", "cuda"])
    assert (full.T, full.K, full.H, full.tokens, full.dtype) == ([2048, 4096, 8192, 16384], [128, 64], 16, 16384, "bf16")
    assert full.backends == ["triton", "tilelang"] and full.ridge_iters == 10
    quick = run.parse(["--device", "cuda", "--quick", "--K", "64"])
    assert (quick.T, quick.K) == ([2048, 8192], [64])
    assert run.parse(["--device", "cpu", "--quick"]).backends == ["reference"]


def test_fla_missing_is_a_note():
    version, note = run._fla()
    try:
        import fla  # noqa: F401
    except ImportError:
        assert version is None and "not importable" in note
    else:
        assert version is not None and version in note


# ----------------------------------------------------------------------------- report writers


def _row(name, impl, spec, T, fwd, fwdbwd, K=128, backend="triton"):
    B = 16384 // T
    return {"name": name, "impl": impl, "backend": backend, "spec": spec, "B": B, "T": T, "H": 16, "K": K, "V": K,
            "fwd_ms": fwd, "fwdbwd_ms": fwdbwd, "fwdbwd_tflops": 100.0, "fwdbwd_gbs": 1000.0,
            "fwdbwd_ns_per_token": fwdbwd * 1e6 / (B * T), "peak_mem_mib": 900.0, "peak_above_inputs_mib": 300.0}


def _fake_rows():
    return [
        _row("gated_deltanet", "ours", "gated_deltanet", 2048, 1.0, 3.0),
        _row("fla.chunk_gated_delta_rule", "fla", "gated_deltanet", 2048, 2.0, 4.0, backend="tilelang"),
        # fla's two backends: each ratio takes the faster (here the fwd of one, the fwd+bwd of the other)
        _row("fla.chunk_gated_delta_rule", "fla", "gated_deltanet", 2048, 2.5, 8.0, backend="triton"),
        _row("gated_deltanet", "ours", "gated_deltanet", 8192, 1.0, 3.3),
        _row("fla.chunk_gated_delta_rule", "fla", "gated_deltanet", 8192, 2.0, 3.0, backend="tilelang"),
        _row("fla.chunk_gated_delta_rule", "fla", "gated_deltanet", 8192, 1.0, 6.0, backend="triton"),
        _row("gka", "ours", "gka", 2048, 2.0, 5.0),
        _row("fla.chunk_mesa_net", "fla", "mesanet", 2048, 8.0, 20.0, backend="tilelang"),
        {**Case("fla.chunk_mesa_net", "fla", "triton", "mesanet", 8, 2048, 16, 128, 128).key(), "error": "RuntimeError"},
        {**Case("kda", "ours", "triton", "kda", 8, 2048, 16, 128, 128).key(), "error": "OutOfResources: shared | memory"},
    ]


def test_ratios_and_targets_from_fake_rows():
    rows = _fake_rows()
    report.add_ratios(rows)
    assert rows[0]["ratio_fla_fwd"] == 0.5 and rows[0]["ratio_fla_fwdbwd"] == 0.75
    assert (rows[0]["ratio_fla_fwd_against"], rows[0]["ratio_fla_fwdbwd_against"]) == ("tilelang", "tilelang")
    assert rows[3]["ratio_fla_fwd"] == 1.0 and rows[3]["ratio_fla_fwdbwd"] == pytest.approx(1.1)
    assert (rows[3]["ratio_fla_fwd_against"], rows[3]["ratio_fla_fwdbwd_against"]) == ("triton", "tilelang")
    assert rows[6]["ratio_fla_fwdbwd"] == 0.25  # GKA against fla's MesaNet at the same shape (its error row skipped)
    assert rows[6]["ratio_gated_deltanet_fwdbwd"] == pytest.approx(5.0 / 3.0)
    got = {(t["op"], t["target"].split(",")[0]): t for t in report.targets(rows)}
    fla = got[("gated_deltanet", "fwd+bwd time / fla")]
    assert (fla["worst"], fla["at_T"], fla["met"]) == (pytest.approx(1.1), 8192, False)
    flat = got[("gated_deltanet", "fwd+bwd time per token")]
    assert flat["worst"] == pytest.approx(1.1) and flat["met"]
    assert got[("gka", "fwd+bwd time / fla chunk_mesa_net (same iterations)")]["met"]
    assert got[("gka", "fwd+bwd time / our gated_deltanet")]["met"]
    assert not any(t["op"] == "kda" for t in got.values())  # an error row of ours has nothing to check
    # Our row without its fla row: the target is listed, as not measured.
    alone = [r for r in rows if r["impl"] == "ours" and r["spec"] == "gated_deltanet"]
    report.add_ratios(alone)
    missing = [t for t in report.targets(alone) if t["target"] == "fwd+bwd time / fla"]
    assert [(t["met"], t["worst"], t["shapes"]) for t in missing] == [(None, None, 0)]


def test_writers_produce_json_markdown_png(tmp_path):
    meta = {"gpu": "NVIDIA H200", "date": "2026-01-01", "torch": "2.11", "triton": "3.6.0", "fla": "0.6.0",
            "tilelang": None, "command": "python -m bench speed", "shapes": "B·T = 16384", "dtype": "bf16",
            "ridge_iters": 10, "timer": "do_bench", "peaks_datasheet": {"tflops": 989.0, "gbs": 4800.0},
            "peaks_measured": {"tflops": 800.0, "gbs": 4000.0}, "notes": ["kda: no tilelang kernels"]}
    paths = report.write_all(tmp_path, "speed_test", meta, _fake_rows())
    data = json.loads(paths["json"].read_text())
    assert data["meta"]["gpu"] == "NVIDIA H200" and len(data["rows"]) == len(_fake_rows()) and data["targets"]
    md = paths["md"].read_text()
    assert "| gated_deltanet | triton | 2048 | 8 | 1.000 | 3.000 | 0.50 | 0.75 | 100.0 (10%) | 1000 (21%) |" in md
    assert "error: OutOfResources: shared / memory" in md  # a '|' in the message must not split the cell
    assert "- kda: no tilelang kernels" in md and "| fwd+bwd time / fla | gated_deltanet | triton | 128 | 1.10 | 8192" in md
    # Every table line has the header's number of cells, error rows included.
    table = [ln for ln in md.split("## K = V = 128")[1].splitlines() if ln.startswith("|")]
    assert len(table) == 2 + len(_fake_rows()) and {ln.count("|") for ln in table} == {13}
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


# ----------------------------------------------------------------------------- the harness on CPU


def test_cpu_smoke_run(tmp_path, capsys):
    assert bench_main(["speed", "--device", "cpu", "--quick", "--out", str(tmp_path), "--stem", "smoke"]) == 0
    data = json.loads((tmp_path / "smoke.json").read_text())
    rows = data["rows"]
    assert [(r["name"], r["T"]) for r in rows] == [(n, T) for T in (32, 64) for n in [*OURS, "sdpa"]]
    assert all("error" not in r for r in rows), [r.get("error") for r in rows]
    assert all(r["fwd_ms"] > 0 and r["fwdbwd_ms"] > 0 and r["fwdbwd_tflops"] > 0 for r in rows)
    assert all(r["no_grad_for"] == [] for r in rows)  # every input got its gradient
    assert {r["backend"] for r in rows if r["impl"] == "ours"} == {"reference"}
    assert all(r["B"] * r["T"] == 64 for r in rows)
    assert data["meta"]["command"] == f"python -m bench speed --device cpu --quick --out {tmp_path} --stem smoke"
    assert any("fla" in n for n in data["meta"]["notes"])
    assert (tmp_path / "smoke.png").stat().st_size > 0 and "| gka | reference | 64 | 1 |" in (tmp_path / "smoke.md").read_text()
    assert "[ 14/14] sdpa" in capsys.readouterr().out


def test_merge_completes_a_grid_measured_over_several_commands(tmp_path):
    """--merge: the earlier run's rows at the shapes this run does not measure stay, the rows it
    measures are replaced, both commands are on record, targets span the whole grid; a run on
    another dtype is refused."""
    base = ["speed", "--device", "cpu", "--ops", "deltanet", "sdpa", "--out", str(tmp_path)]
    assert bench_main([*base, "--T", "32", "64", "--stem", "grid"]) == 0
    first = json.loads((tmp_path / "grid.json").read_text())
    assert bench_main([*base, "--T", "64", "--merge", str(tmp_path / "grid.json")]) == 0
    data = json.loads((tmp_path / "grid.json").read_text())  # the merged file's stem by default
    assert [(r["name"], r["T"]) for r in data["rows"]] == [(n, T) for T in (32, 64) for n in ("deltanet", "sdpa")]
    assert data["rows"][:2] == [r for r in first["rows"] if r["T"] == 32]  # kept as measured; T=64 not doubled
    (merged,) = data["meta"]["merged"]
    assert merged["command"] == first["meta"]["command"] and merged["rows"] == 2
    assert f"2 rows from an earlier run, {first['meta']['date']}" in (tmp_path / "grid.md").read_text()
    with pytest.raises(SystemExit, match="dtype"):
        bench_main([*base, "--T", "64", "--dtype", "bf16", "--merge", str(tmp_path / "grid.json")])


def test_failing_op_becomes_an_error_row(tmp_path, monkeypatch):
    real = calls.forward_callable

    def broken_gka(case, args, **kw):
        if case.spec == "gka":
            raise RuntimeError("OutOfResources: out of resource: shared memory")
        return real(case, args, **kw)

    monkeypatch.setattr(calls, "forward_callable", broken_gka)
    run.main(["--device", "cpu", "--quick", "--ops", "gla", "gka", "--out", str(tmp_path), "--stem", "e"])
    rows = json.loads((tmp_path / "e.json").read_text())["rows"]
    assert [("error" in r) for r in rows] == [False, True, False, True]
    assert rows[1]["error"].startswith("RuntimeError: OutOfResources")


def test_compile_workers_warm_in_subprocesses(tmp_path, capsys):
    assert run.main(["--device", "cpu", "--quick", "--ops", "gla", "--warm-only", "--compile-workers", "1",
                     "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "warm gla             ours K=16" in out and "rc=0" in out
    assert not list(tmp_path.iterdir())  # warming writes no results


def test_bench_entry_point_lists_commands(capsys):
    assert bench_main([]) == 2
    assert "speed" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bench profile
def test_profile_table_groups_kernels_per_step_and_reports_errors():
    from types import SimpleNamespace

    from bench import profile

    assert profile.short_name("void fla::chunk_fwd_kernel<128, true>(float*, int)") == "void fla::chunk_fwd_kernel"
    assert profile.short_name("chunk_intra_fwd_kernel") == "chunk_intra_fwd_kernel"

    def ev(name, us, dev=torch.autograd.DeviceType.CUDA):
        return SimpleNamespace(name=name, device_type=dev, time_range=SimpleNamespace(elapsed_us=lambda: us))

    events = [ev("a_kernel", 300), ev("b_kernel<3>(int)", 100), ev("a_kernel", 300),
              ev("aten::mm", 999, torch.autograd.DeviceType.CPU)]  # host ops are not kernels
    table = profile.kernel_table(events, steps=2)
    assert table == [{"kernel": "a_kernel", "ms": 0.3, "launches": 1.0},
                     {"kernel": "b_kernel", "ms": 0.05, "launches": 0.5}]
    meta = {"gpu": "G", "date": "d", "torch": "t", "triton": "tr", "tilelang": None, "fla": "0.6.0",
            "command": "c", "shape": "B=1", "steps": 2}
    rows = [{"name": "deltanet", "backend": "triton", "step_ms": 0.4, "kernel_ms": 0.35, "launches": 1.5,
             "kernels": table},
            {"name": "fla.chunk_kda", "backend": "tilelang", "error": "RuntimeError: boom"}]
    md = profile.markdown(meta, rows)
    assert "| deltanet | triton | 0.400 | 0.350 | 2 |" in md and "error: RuntimeError: boom" in md
    assert "| `a_kernel` | 0.300 | 86% | 1 |" in md and "| `b_kernel` | 0.050 | 14% | 0 |" in md


def test_profile_sums_each_rows_kernels_per_stage_and_renders_a_run_again(tmp_path):
    """Ours and fla's kernels land in the same stages of the algorithm; the markdown and the plot
    show the per-stage sums; --render draws both again from a run's JSON and leaves the JSON be."""
    from bench import profile

    stage = {"chunk_intra_fwd_kernel": "in-chunk forward", "recompute_w_u_fwd_kernel": "in-chunk forward",
             "merge_16x16_to_64x64_inverse_kernel": "in-chunk forward",
             "chunk_state_fwd_kernel": "state scan, forward",
             "chunk_gated_delta_rule_fwd_kernel_h_blockdim64": "state scan, forward",
             "chunk_ridge_fwd_kernel": "ridge solve", "chunk_fwd_mesa_cg_dim64_kernel": "ridge solve",
             "chunk_output_fwd_kernel": "output", "chunk_fwd_kernel_o": "output",
             "chunk_state_bwd_kernel": "state scan, backward", "chunk_bwd_kernel_dh": "state scan, backward",
             "chunk_gated_delta_rule_bwd_kernel_dhu_blockdim64": "state scan, backward",
             "chunk_grad_bwd_kernel": "in-chunk backward", "chunk_bwd_kernel_dqkwg": "in-chunk backward",
             "chunk_kda_bwd_kernel_intra": "in-chunk backward", "void at::native::vectorized_elementwise_kernel": "other"}
    assert {k: profile.stage_of(k) for k in stage} == stage
    rows = [{"name": "deltanet", "backend": "triton", "step_ms": 2.0, "kernel_ms": 1.75, "launches": 4,
             "kernels": [{"kernel": "chunk_grad_bwd_kernel", "ms": 1.0, "launches": 1},
                         {"kernel": "chunk_intra_fwd_kernel", "ms": 0.5, "launches": 2},
                         {"kernel": "chunk_state_bwd_kernel", "ms": 0.25, "launches": 1}]},
            {"name": "fla.chunk_delta_rule", "backend": "triton", "error": "RuntimeError: boom"}]
    meta = {"gpu": "G", "date": "d", "torch": "t", "triton": "tr", "tilelang": None, "fla": "0.6.0",
            "command": "python -m bench profile --T 64", "shape": "B=1", "steps": 2, "notes": ["a note"]}
    path = tmp_path / "profile_K64_T64.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}))
    before = path.read_text()
    assert bench_main(["profile", "--render", str(path)]) == 0
    md = (tmp_path / "profile_K64_T64.md").read_text()
    assert "| stage | deltanet (triton) |" in md and "a note" in md and "--render" in md
    assert "| in-chunk forward | 0.500 |" in md and "| in-chunk backward | 1.000 |" in md
    assert "| state scan, backward | 0.250 |" in md and "| output |" not in md  # stages no row has: left out
    assert (tmp_path / "profile_K64_T64.png").stat().st_size > 0 and path.read_text() == before


def test_profile_without_a_gpu_says_so_instead_of_a_traceback(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device.*--render"):
        bench_main(["profile", "--ops", "gka"])


def test_run_per_spec_merges_each_childs_rows_in_spec_order(tmp_path, monkeypatch):
    """Children write under <out>/parts/<spec>/ (what a run cut short leaves behind); a finished
    run merges their rows in spec order, puts missing_row in for a child that wrote nothing, and
    removes parts/."""
    import os
    import textwrap

    from bench.per_spec import run_per_spec

    (tmp_path / "fake_child.py").write_text(textwrap.dedent('''
        import argparse, json, pathlib, sys
        p = argparse.ArgumentParser()
        p.add_argument("--specs", nargs="*")
        p.add_argument("--out", type=pathlib.Path)
        a, _ = p.parse_known_args()
        if a.specs[0] == "bad":
            sys.exit(1)
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "rows.json").write_text(json.dumps({"results": [{"spec": a.specs[0], "out": a.out.name}]}))
    '''))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "out"
    rows = run_per_spec("fake_child", ["a", "bad", "b"], 2, [], lambda name: {"spec": name, "missing": True}, out)
    assert rows == [{"spec": "a", "out": "a"}, {"spec": "bad", "missing": True}, {"spec": "b", "out": "b"}]
    assert not (out / "parts").exists()


def test_tuned_page_reports_gains_outcomes_race_and_staleness(tmp_path):
    """`python -m bench tuned`: per kernel the default and tuned config with the call's time and the
    gain, the candidates' outcomes, the race and auto's pick from it, and whether the generated
    package would read the file at all."""
    from bench import tuned
    from gka_gen.autotune import lookup

    import generated.kda.spec as kda_spec

    gpu = tmp_path / "NVIDIA_H200"
    gpu.mkdir()
    trials = [{"config": {"BK": 16}, "status": "ok", "ms": 3.0}, {"config": {"BK": 32}, "status": "ok", "ms": 2.0},
              {"config": {"BK": 64}, "status": "crash", "ms": None}, {"config": {"BK": 8}, "status": "mismatch"}]
    bucket = {"shape": {"dtype": "bf16", "B": 4, "T": 4096, "H": 16, "K": 128, "V": 128},
              "kernels": {"chunk_grad_bwd": {"phase": "bwd", "default": {"BK": 16}, "default_ms": 3.0,
                                             "config": {"BK": 32}, "ms": 2.0, "done": True, "trials": trials},
                          "chunk_state_bwd": {"phase": "bwd", "default": {"BV": 32}, "config": {"BV": 16},
                                              "rechecked": True, "trials": trials[:2]}},
              "phases": {"fwd": 1.0, "bwd": 2.0, "recurrent": 5.0}}
    race = {"shape": bucket["shape"], "kernels": {}, "phases": {"fwd": 0.5, "bwd": 3.0, "recurrent": 4.0}}
    for name, kernels_hash in (("kda", lookup.package_kernels_hashes("generated.kda")), ("gla", {"triton": "0" * 12})):
        (gpu / f"{name}-x.json").write_text(json.dumps({
            "spec": name, "spec_hash": kda_spec.SPEC_HASH if name == "kda" else "f" * 12,
            "kernels_hash": kernels_hash, "created": "c", "updated": "u", "versions": {"triton": "3.6.0"},
            "backends": {"triton": {"bf16/K128/V128/T4096": bucket}, "tilelang": {"bf16/K128/V128/T4096": race}}}))
    assert bench_main(["tuned", "--dir", str(gpu), "--out", str(tmp_path)]) == 0
    page = (tmp_path / "tuned_NVIDIA_H200.md").read_text()
    assert "| triton | chunk_grad_bwd | bwd | BK=16 | 3.000 | BK=32 | 2.000 | 1.50x | 2 ok, 1 mismatch, 1 crash |" in page
    assert "| BV=16 | - | - | 2 ok (the earlier search's pick rechecked; search open) |" in page  # --recheck's
    # fwd: TileLang 0.5 < 1.0; fwd+bwd: Triton 3.0 < 3.5; recurrent: TileLang 4.0 < 5.0
    assert "auto picks: forward (no grad): tilelang, forward + backward: triton, recurrent: tilelang" in page
    gla_part, kda_part = page.split("## kda")
    assert "current (spec and kernels hashes match" in kda_part and "stale: the spec's hash is now" in gla_part
    assert lookup.race_winner({"triton": {"fwd": 1.0}}, ("fwd",)) is None


def test_speed_notes_say_which_launch_configs_each_spec_ran_with(tmp_path, monkeypatch):
    """A speed or correctness run states per spec whether its rows ran tuned configs (and at which
    buckets) or the defaults: the committed numbers depend on it."""
    from bench import tuned
    from gka_gen.autotune import lookup

    import generated.kda.spec as kda_spec

    monkeypatch.setenv("GKA_GEN_AUTOTUNE_DIR", str(tmp_path))
    lookup.invalidate()
    gpu = tmp_path / "NVIDIA_H200"
    gpu.mkdir()
    shape = {"dtype": "bf16", "B": 4, "T": 4096, "H": 16, "K": 128, "V": 128}
    (gpu / f"kda-{kda_spec.SPEC_HASH}.json").write_text(json.dumps({
        "format": 2, "spec": "kda", "spec_hash": kda_spec.SPEC_HASH, "gpu": "NVIDIA H200",
        "kernels_hash": lookup.package_kernels_hashes("generated.kda"), "versions": {}, "created": "c", "updated": "u",
        "backends": {"triton": {"bf16/K128/V128/T4096": {"shape": shape, "kernels": {"chunk_grad_bwd": {
            "phase": "bwd", "config": {"BK": 32}, "default": {"BK": 16}, "ms": 1.0, "default_ms": 2.0,
            "done": True, "trials": []}}, "phases": {"fwd": 1.0}}}}}))
    try:
        assert tuned.tuned_note("kda", "NVIDIA H200") == ("kda: Triton launch configs tuned at bf16/K128/V128/T4096 "
                                                        "(autotune/NVIDIA_H200)")
        with warnings.catch_warnings():  # lookup's one warning about the missing file (once per process)
            warnings.simplefilter("ignore")
            note = tuned.tuned_note("gla", "NVIDIA H200")
        assert note == "gla: Triton launch configs the defaults (no usable tuned file for this GPU)"
        # a GPU of the same compute capability without a file of its own runs this one's configs
        path = gpu / f"kda-{kda_spec.SPEC_HASH}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "capability": [9, 0]}))
        monkeypatch.setitem(lookup._CAPABILITIES, "NVIDIA H100 80GB HBM3", [9, 0])
        lookup.invalidate()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            note = tuned.tuned_note("kda", "NVIDIA H100 80GB HBM3")
        assert note == ("kda: Triton launch configs tuned at bf16/K128/V128/T4096 "
                        "(autotune/NVIDIA_H200, another GPU of the same compute capability)")
    finally:
        lookup.invalidate()
