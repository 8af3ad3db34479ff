"""report.md: the setup that reproduces the run, then one section per measurement, each with
its table and figure, and a few sentences stating what the numbers show (computed, not
written in advance)."""
from __future__ import annotations

import datetime as dt
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

from .. import __version__
from .numerics import DTYPES

FIGURES = {"speed": "speed.png", "numerics": "numerics.png", "solver_iters": "solver_iters.png",
           "solver_cond": "solver_cond.png", "recall": "recall.png"}


def environment(device: str) -> dict:
    import torch
    import triton

    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
                    platform.processor() or "CPU")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "device": device,
            "device_name": name, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
            "gka_gen": __version__, "git_commit": commit or "unknown",
            "triton_interpret": os.environ.get("TRITON_INTERPRET", "0"), "platform": sys.platform}


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _fmt(x, spec=".2e") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "**non-finite**"
    return format(x, spec)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _errors(rows: list[dict]) -> list[str]:
    failed = [f"- {r['variant']} T={r['seq_len']}{' ' + r['dtype'] if 'dtype' in r else ''}: `{r['error']}`"
              for r in rows if "error" in r]
    return ["", "Runs that failed:", "", *failed] if failed else []


def _speed(variants, s, rows) -> str:
    if s.backend == "triton":
        how = (f"Generated Triton kernels, {str(s.dtype).replace('torch.', '')}, B={s.batch} H={s.heads} "
               f"K=V={s.head_dim}; `triton.testing.do_bench` medians (CUDA events, L2 flushed); "
               "forward under `no_grad`, forward+backward with a random output cotangent.")
    else:
        how = (f"CPU: `chunk_<name>(..., backend=\"reference\")`, the spec-derived token loop in plain torch "
               f"(fp32, B={s.batch} H={s.heads} K=V={s.head_dim}), median of {s.reps} timed runs after a warm-up. "
               "This is the cost of each recurrence written naively in torch - not kernel speed; "
               "run with `--device cuda` for that.")
    seq = list(s.seq_lens)
    by = {(r["variant"], r["seq_len"]): r for r in rows}
    body = []
    for v in variants:
        cells = [f"{_fmt(by[v.name, T].get('fwd_ms'), '.3g')} / {_fmt(by[v.name, T].get('fwd_bwd_ms'), '.3g')}"
                 for T in seq]
        body.append([v.name, *cells])
    out = [how, "", "Time in ms, forward / forward+backward:", "",
           _table(["variant", *[f"T={T}" for T in seq]], body), "", f"![speed]({FIGURES['speed']})"]
    out += _errors(rows)
    longest = [by[v.name, seq[-1]] for v in variants if "fwd_bwd_ms" in by[v.name, seq[-1]]]
    if len(longest) > 1:
        fastest = min(longest, key=lambda r: r["fwd_bwd_ms"])
        rel = ", ".join(f"{r['variant']} {r['fwd_bwd_ms'] / fastest['fwd_bwd_ms']:.1f}x" for r in longest)
        out += ["", f"At T={seq[-1]}, forward+backward relative to the fastest ({fastest['variant']}): {rel}."]
    return "\n".join(out)


def _numerics(variants, s, rows, device: str) -> str:
    if s.backend == "triton":
        how = "the generated Triton kernels" + (" (in the Triton interpreter, on CPU)" if device == "cpu" else "")
    else:
        how = ("the reference backend (the Triton kernels were not importable in the interpreter here, so this "
               "measures only the rounding of bf16 inputs and outputs around an fp32 computation)")
    out = [f"Each variant's chunked op, run by {how}, against the spec-derived fp64 reference "
           f"(B={s.batch} H={s.heads} K=V={s.head_dim}, seed {s.seed}). Inputs q, k, v are rounded to bf16 once and "
           "given to every run (gates stay fp32, as the layers pass them), so the error is the kernel's "
           "arithmetic. Error = max|kernel - ref| / max|ref|, for o and for the worst input gradient under a "
           "fixed random cotangent (ridge gradients against the exact solution's gradient at the iterate, "
           "which is what the kernels compute).", ""]
    by = {(r["variant"], r["seq_len"], r["dtype"]): r for r in rows}
    body = []
    for v in variants:
        for d in DTYPES:
            body.append([v.name, d, *[f"{_fmt(by[v.name, T, d].get('o'))} / {_fmt(by[v.name, T, d].get('grad'))}"
                                      for T in s.seq_lens]])
    out += ["o error / gradient error:", "", _table(["variant", "dtype", *[f"T={T}" for T in s.seq_lens]], body),
            "", f"![numerics]({FIGURES['numerics']})"]
    out += _errors(rows)
    pairs = [(r, by[r["variant"], r["seq_len"], "fp32"]) for r in rows if r["dtype"] == "bf16" and "o" in r]
    pairs = [(b, f) for b, f in pairs if f.get("o", 0) > 0]
    if pairs:
        ratio = sorted(b["o"] / f["o"] for b, f in pairs)
        out += ["", f"bf16 error is above fp32 error in {sum(b['o'] > f['o'] for b, f in pairs)} of {len(pairs)} "
                    f"(variant, T) cases for o; the median ratio is {ratio[len(ratio) // 2]:.0f}x."]
    return "\n".join(out)


def _solver(s, res, ridge_names) -> str:
    it = res["by_iters"]
    out = [f"The ridge family ({', '.join(ridge_names)}) solves (H_t + lam_t I) x = q_t every token. Here: "
           f"{s.systems} systems built like GKA's (H_T a decayed sum of T={s.T} unit-key outer products, K={s.K}, "
           f"random unit q, lam = ridge_ratio ||H||_F), each solver run entirely in the given dtype (torch, CPU); "
           "the relative residual ||(H + lam I) x - q|| / ||q|| is computed in fp64 "
           "(`gka_gen.solver_study`). Chebyshev uses only the spectrum bounds [lam, lam + ||H||_F]; CG "
           "(MesaNet's solver) uses inner products and stops updating once its residual reaches "
           "the dtype's rounding level.", "",
           f"Median residual vs iterations at ridge ratio {s.ridge_ratio:g} (max over systems in brackets):", ""]
    by = {(r["dtype"], r["solver"], r["iters"]): r for r in it}
    body = []
    for d in DTYPES:
        for solver in ("chebyshev", "cg"):
            body.append([solver, d, *[f"{_fmt(by[d, solver, n]['median_residual'], '.1e')} "
                                      f"({_fmt(by[d, solver, n]['max_residual'], '.1e')})"
                                      + (" NaN" if by[d, solver, n]["nonfinite"] else "") for n in s.iters]])
    out += [_table(["solver", "dtype", *[str(n) for n in s.iters]], body), "", f"![solver iterations]({FIGURES['solver_iters']})",
            "", f"Median residual after {s.cond_iters} iterations vs the condition number of H + lam I "
                "(swept through the ridge ratio a; the bound is (1 + a) / a):", ""]
    cond = res["by_cond"]
    ratios = sorted({r["ridge_ratio"] for r in cond}, reverse=True)
    byc = {(r["dtype"], r["solver"], r["ridge_ratio"]): r for r in cond}
    kap = {r["ridge_ratio"]: r["condition"] for r in cond}
    body = [[f"{a:g}", f"{kap[a]:.1f}", f"{(1 + a) / a:.0f}",
             *[_fmt(byc[d, so, a]["median_residual"], ".1e") for d in DTYPES for so in ("chebyshev", "cg")]]
            for a in ratios]
    out += [_table(["ridge ratio", "cond (median)", "bound", *[f"{so} {d}" for d in DTYPES for so in ("chebyshev", "cg")]],
                   body), "", f"![solver condition]({FIGURES['solver_cond']})", ""]
    n = s.cond_iters if s.cond_iters in s.iters else s.iters[-1]
    cheb, cg = by["bf16", "chebyshev", n], by["bf16", "cg", n]
    cheb32, cg32 = by["fp32", "chebyshev", n], by["fp32", "cg", n]
    out.append(f"Measured at {n} iterations: in bf16 Chebyshev reaches {_fmt(cheb['median_residual'], '.1e')} "
               f"(max {_fmt(cheb['max_residual'], '.1e')}) and CG {_fmt(cg['median_residual'], '.1e')} "
               f"(max {_fmt(cg['max_residual'], '.1e')}); in fp32 {_fmt(cheb32['median_residual'], '.1e')} and "
               f"{_fmt(cg32['median_residual'], '.1e')}. The paper's claim that CG breaks down in bf16 while "
               "Chebyshev does not is " + ("consistent with" if cg["max_residual"] > 3 * cheb["max_residual"]
                                           or cg["nonfinite"] else "not visible in") + " these numbers "
               "(criterion: CG's worst bf16 residual above 3x Chebyshev's, or non-finite).")
    return "\n".join(out)


def _recall(variants, settings, res) -> str:
    r = settings.recall
    num_iter = settings.recall_num_iter
    out = [f"Multi-query associative recall: a sequence holds `num_kv` key-value pairs, then filler tokens among "
           f"which every key is asked once more; the model must output its value. Keys and values come from "
           f"disjoint vocabularies of {r.vocab.n_keys} and {r.vocab.n_values} tokens (chance = "
           f"{r.vocab.chance:.3f}; a model that only learnt to copy some value of its context scores "
           f"about 1 / num_kv). Each model: token embedding, {r.n_layers} pre-norm blocks of (the variant's "
           f"generated layer with hidden_size={r.d_model}, num_heads={r.num_heads}, head_dim={r.head_dim} and its "
           f"defaults; an MLP {r.d_model}-{2 * r.d_model}-{r.d_model}), LM head. Identical budget for every "
           f"variant: {r.steps} AdamW steps (lr {r.lr:g}, weight decay {r.weight_decay:g}, 10% warm-up, cosine), "
           f"batch {r.batch}, one (T, num_kv) cell of the grid per step in turn; the same seed ({r.seed}) for the "
           f"shared weights and the same training data for every variant; evaluation on {r.eval_batch} held-out "
           "sequences per cell." + (" Layers on CPU run the reference backend." if settings.device == "cpu" else
                                     " Layers run the generated Triton kernels under bf16 autocast.")]
    if num_iter is not None:
        out[-1] += (f" To fit the CPU budget, ridge-family layers run {num_iter} solver iterations here instead of "
                    "their spec default.")
    out.append("")
    rows = res["accuracy"]
    cells = sorted({(x["seq_len"], x["num_kv"]) for x in rows})
    by = {(x["variant"], x["seq_len"], x["num_kv"]): x["accuracy"] for x in rows}
    runs = {x["variant"]: x for x in res["runs"]}
    body = [[v.name, *[f"{by[v.name, T, n]:.2f}" for T, n in cells], f"{runs[v.name]['final_loss']:.2f}",
             f"{runs[v.name]['parameters'] / 1e3:.0f}k", f"{runs[v.name]['seconds']:.0f}"] for v in variants]
    out += ["Accuracy per (T, num_kv):", "",
            _table(["variant", *[f"T={T} kv={n}" for T, n in cells], "final loss", "params", "train s"], body), "",
            f"![recall]({FIGURES['recall']})"]
    return "\n".join(out)


def render(variants, settings, results, *, command: str, env: dict) -> str:
    names = ", ".join(v.name for v in variants)
    profile = "quick" if settings.quick else "full"
    vt = _table(["variant", "title", "family", "spec hash"],
                [[v.name, v.title, v.family, f"`{v.spec.hash}`"] for v in variants])
    secs = results["seconds"]
    parts = [
        f"# Variant comparison: {names}",
        "",
        f"Reproduce with (from the repository root):\n\n```\n{command}\n```",
        "",
        "## Setup",
        "",
        f"- date: {env['date']}; profile: {profile}; device: {env['device']} ({env['device_name']}, "
        f"{env['cpu_count']} CPU cores, torch threads {env['torch_threads']})",
        f"- versions: gka-gen {env['gka_gen']} (git {env['git_commit']}), python {env['python']}, "
        f"torch {env['torch']}, triton {env['triton']}"
        + (" (interpreter)" if env["triton_interpret"] == "1" and env["device"] == "cpu" else ""),
        f"- seed {settings.recall.seed} everywhere (inputs, model initialisation, training data; evaluation "
        "data uses seed + 2, training data seed + 1)",
        f"- wall time: speed {secs.get('speed', 0):.0f} s, numerics {secs.get('numerics', 0):.0f} s, "
        f"solver {secs.get('solver', 0):.0f} s, recall {secs.get('recall', 0):.0f} s, total {secs['total']:.0f} s",
        "- raw numbers and every setting: `results.json` beside this file",
        "",
        vt,
        "",
        "## Speed",
        "",
        _speed(variants, settings.speed, results["speed"]),
        "",
        "## Numerics",
        "",
        "### Kernels against the fp64 reference",
        "",
        _numerics(variants, settings.numerics, results["numerics"], settings.device),
        "",
    ]
    if results["solver"] is not None:
        ridge = [v.name for v in variants if v.family == "ridge"]
        parts += ["### Ridge solve: Chebyshev vs CG, bf16 vs fp32", "",
                  _solver(settings.solver, results["solver"], ridge), ""]
    parts += ["## Recall (MQAR)", "", _recall(variants, settings, results["recall"]), ""]
    return "\n".join(parts)
