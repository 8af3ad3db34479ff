"""The report's figures (matplotlib, Agg: no display needed). One function per PNG."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

DPI = 120
DTYPE_STYLE = {"bf16": "-", "fp32": "--"}


def _finite(xs, ys):
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y) and y > 0]
    return [p[0] for p in pts], [p[1] for p in pts]


def _log2_x(ax, values) -> None:
    """A base-2 log axis labelled with the measured sizes themselves (64, 128, ... not 2^6)."""
    values = sorted(set(values))
    ax.set_xscale("log", base=2)
    ax.set_xticks(values, [str(v) for v in values])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _save(fig, path: Path) -> Path:
    for ax in fig.axes:
        # A log axis with nothing positive on it (every run failed) would abort the report.
        if not any(len(line.get_xdata()) for line in ax.get_lines() if line.get_linestyle() != "None"):
            ax.set_xscale("linear")
            ax.set_yscale("linear")
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def speed(rows: list[dict], variants: list[str], path: Path, *, unit_note: str) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in zip(axes, ("fwd_ms", "fwd_bwd_ms"), ("forward", "forward + backward")):
        for name in variants:
            r = [x for x in rows if x["variant"] == name and key in x]
            ax.plot(*_finite([x["seq_len"] for x in r], [x[key] for x in r]), "o-", label=name)
        ax.set(yscale="log", xlabel="sequence length T", ylabel="time (ms, median)", title=f"{title} ({unit_note})")
        _log2_x(ax, [x["seq_len"] for x in rows])
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    return _save(fig, path)


def numerics(rows: list[dict], variants: list[str], path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {n: f"C{i}" for i, n in enumerate(variants)}
    for ax, key, title in zip(axes, ("o", "grad"), ("output o", "input gradients (worst)")):
        for name in variants:
            for dtype, style in DTYPE_STYLE.items():
                r = [x for x in rows if x["variant"] == name and x["dtype"] == dtype and key in x]
                ax.plot(*_finite([x["seq_len"] for x in r], [x[key] for x in r]), style, marker="o",
                        color=colors[name], label=f"{name} {dtype}")
        ax.set(yscale="log", xlabel="sequence length T", ylabel="max|err| / max|ref|",
               title=f"{title} vs fp64 reference")
        _log2_x(ax, [x["seq_len"] for x in rows])
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    return _save(fig, path)


def solver_iters(rows: list[dict], path: Path, *, ridge_ratio: float, K: int) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, solver in zip(axes, ("chebyshev", "cg")):
        for dtype, style in DTYPE_STYLE.items():
            r = [x for x in rows if x["solver"] == solver and x["dtype"] == dtype]
            its = [x["iters"] for x in r]
            ax.plot(*_finite(its, [x["median_residual"] for x in r]), style, marker="o", color="C0",
                    label=f"{dtype} median")
            ax.plot(*_finite(its, [x["max_residual"] for x in r]), style, marker=".", color="C3", alpha=0.6,
                    label=f"{dtype} max")
        ax.set(yscale="log", xlabel="iterations", title=f"{solver} (K={K}, ridge ratio {ridge_ratio:g})")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("||(H + lam I) x - q|| / ||q||")
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def solver_cond(rows: list[dict], path: Path, *, iters: int) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, solver in enumerate(("chebyshev", "cg")):
        for dtype, style in DTYPE_STYLE.items():
            r = sorted((x for x in rows if x["solver"] == solver and x["dtype"] == dtype), key=lambda x: x["condition"])
            ax.plot(*_finite([x["condition"] for x in r], [x["median_residual"] for x in r]), style, marker="o",
                    color=f"C{i}", label=f"{solver} {dtype}")
    ax.set(xscale="log", yscale="log", xlabel="condition number of H + lam I (median; swept by the ridge ratio)",
           ylabel="median relative residual", title=f"residual after {iters} iterations")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def recall(rows: list[dict], variants: list[str], path: Path, *, chance: float) -> Path:
    seq_lens = sorted({x["seq_len"] for x in rows})
    # The legend goes beside the panels: inside, it would hide the curves at few pairs.
    fig, axes = plt.subplots(1, len(seq_lens), figsize=(4.2 * len(seq_lens) + 3, 4), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, T in zip(axes[0], seq_lens):
        for name in variants:
            r = sorted((x for x in rows if x["variant"] == name and x["seq_len"] == T), key=lambda x: x["num_kv"])
            ax.plot([x["num_kv"] for x in r], [x["accuracy"] for x in r], "o-", label=name)
        ax.axhline(chance, color="gray", ls=":", label="chance")
        kvs = sorted({x["num_kv"] for x in rows if x["seq_len"] == T})
        ax.plot(kvs, [1 / n for n in kvs], color="gray", ls="--", lw=1, label="1 / pairs\n(a guess among\nthe context's values)")
        ax.set(xlabel="key-value pairs", title=f"MQAR, T = {T}", ylim=(0, 1.02))
        _log2_x(ax, [x["num_kv"] for x in rows])
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("accuracy on queries")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    return _save(fig, path)
