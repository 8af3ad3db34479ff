"""`gka-gen compare`: measure every section, then write results.json, the plots and report.md."""
from __future__ import annotations

import inspect
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from . import mqar, numerics, plots, report, speed
from .settings import settings_for
from .variants import load_variant


def _prepare(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    if device == "cpu":
        # Triton reads TRITON_INTERPRET when kernels are decorated: it must be set before the
        # generated packages are imported, and then the CPU numerics can run the real kernels.
        if "triton" not in sys.modules:
            os.environ.setdefault("TRITON_INTERPRET", "1")
        # The CPU path is thousands of tiny per-token ops: extra threads only synchronise, and
        # on a shared machine they oversubscribe it (measured: 20x slower training steps).
        torch.set_num_threads(1)


def _layer_kwargs(layer_cls, backend: str, num_iter: int | None) -> dict:
    kw = {"backend": backend}
    if num_iter is not None and "num_iter" in inspect.signature(layer_cls.__init__).parameters:
        kw["num_iter"] = num_iter
    return kw


def compare(spec_paths: list[Path], *, device: str, quick: bool, out: Path, command: str, echo=print) -> Path:
    """Run the comparison and write ``out``/report.md; returns its path."""
    threads = torch.get_num_threads()
    try:
        _prepare(device)
        return _compare(spec_paths, device=device, quick=quick, out=out, command=command, echo=echo)
    finally:
        torch.set_num_threads(threads)


def _compare(spec_paths, *, device, quick, out, command, echo):
    variants = [load_variant(p) for p in spec_paths]
    names = [v.name for v in variants]
    settings = settings_for(device, quick, kernels_on_cpu=all(v.package.ops._INTERPRETED for v in variants))
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"seconds": {}}
    started = time.perf_counter()

    def section(name, fn):
        t0 = time.perf_counter()
        echo(f"[{name}]")
        value = fn()
        results["seconds"][name] = round(time.perf_counter() - t0, 1)
        echo(f"[{name}] done in {results['seconds'][name]:.0f} s")
        return value

    def per_variant(measure, setup):
        def run():
            rows = []
            for v in variants:
                echo(f"  {v.name}")
                rows += measure(v, setup, device)
            return rows
        return run

    def run_recall():
        rows, runs = [], []
        backend = "triton" if device == "cuda" else "reference"
        for v in variants:
            echo(f"  {v.name}")
            kw = _layer_kwargs(v.layer_cls, backend, settings.recall_num_iter)
            model = mqar.build_model(v.layer_cls, settings.recall, kw)
            stats = mqar.train(model, settings.recall, device, log=echo)
            runs.append({"variant": v.name, "layer_kwargs": kw, **stats,
                         "parameters": sum(p.numel() for p in model.parameters())})
            rows += [{"variant": v.name, **r} for r in mqar.evaluate(model, settings.recall, device)]
        return {"accuracy": rows, "runs": runs}

    results["speed"] = section("speed", per_variant(speed.time_variant, settings.speed))
    results["numerics"] = section("numerics", per_variant(numerics.kernel_errors, settings.numerics))
    ridge = [v.name for v in variants if v.family == "ridge"]
    results["solver"] = section("solver", lambda: numerics.solver_residuals(settings.solver)) if ridge else None
    results["recall"] = section("recall", run_recall)
    results["seconds"]["total"] = round(time.perf_counter() - started, 1)

    fig = {k: out / name for k, name in report.FIGURES.items()}
    plots.speed(results["speed"], names, fig["speed"],
                unit_note="Triton, bf16" if settings.speed.backend == "triton" else "torch reference, fp32")
    plots.numerics(results["numerics"], names, fig["numerics"])
    plots.recall(results["recall"]["accuracy"], names, fig["recall"], chance=settings.recall.vocab.chance)
    if results["solver"] is not None:
        plots.solver_iters(results["solver"]["by_iters"], fig["solver_iters"],
                           ridge_ratio=settings.solver.ridge_ratio, K=settings.solver.K)
        plots.solver_cond(results["solver"]["by_cond"], fig["solver_cond"], iters=settings.solver.cond_iters)
    env = report.environment(device)
    meta = {"command": command, "environment": env, "settings": asdict(settings), "variants": names,
            "ridge_variants": ridge}
    (out / "results.json").write_text(json.dumps({**meta, **results}, indent=1, default=str) + "\n")
    path = out / "report.md"
    path.write_text(report.render(variants, settings, results, command=command, env=env))
    echo(f"wrote {path} ({results['seconds']['total']:.0f} s)")
    return path
