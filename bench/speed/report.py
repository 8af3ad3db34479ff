"""What a run writes: ratios and targets derived from the rows, then JSON, markdown and a PNG.

Rows are plain dicts (the Case fields plus measurements, or an "error"); everything here is
recomputed from the full list at every write, so a partial run reports what it has.
"""
from __future__ import annotations

import json
from pathlib import Path

from .plan import MATCH, OURS

DELTA_TARGET_OPS = ("deltanet", "gated_deltanet", "kda")
MET = {True: "yes", False: "NO", None: "not measured"}


def _ok(r: dict) -> bool:
    return "error" not in r and r.get("fwdbwd_ms") is not None


def _same_shape(a: dict, b: dict) -> bool:
    return all(a[d] == b[d] for d in ("B", "T", "H", "K", "V"))


def _matching(rows: list[dict], like: dict, **want) -> list[dict]:
    """The measured rows at like's shape whose fields equal ``want``."""
    return [r for r in rows if _ok(r) and _same_shape(r, like) and all(r[k] == v for k, v in want.items())]


def _find(rows: list[dict], like: dict, **want) -> dict | None:
    return next(iter(_matching(rows, like, **want)), None)


def _fastest_fla(rows: list[dict], like: dict, mode: str) -> dict | None:
    """The matching fla op's row at like's shape that took least time in `mode`, over its backends."""
    if like["spec"] not in MATCH:
        return None
    return min(_matching(rows, like, name=f"fla.{MATCH[like['spec']]}"), key=lambda r: r[f"{mode}_ms"], default=None)


def add_ratios(rows: list[dict]) -> None:
    """Our rows get time / (the matching fla op's time, its fastest backend), fwd and fwd+bwd; GKA
    also / our Gated DeltaNet."""
    for r in rows:
        if r["impl"] != "ours" or not _ok(r):
            continue
        for mode in ("fwd", "fwdbwd"):
            fla = _fastest_fla(rows, r, mode)
            r[f"ratio_fla_{mode}"] = r[f"{mode}_ms"] / fla[f"{mode}_ms"] if fla else None
            r[f"ratio_fla_{mode}_against"] = fla["backend"] if fla else None
        if r["spec"] == "gka":
            gdn = _find(rows, r, name="gated_deltanet", impl="ours", backend=r["backend"])
            r["ratio_gated_deltanet_fwdbwd"] = r["fwdbwd_ms"] / gdn["fwdbwd_ms"] if gdn else None


def targets(rows: list[dict]) -> list[dict]:
    """The issue's targets, each checked at every shape measured (worst case reported)."""
    out = []
    ours = [r for r in rows if r["impl"] == "ours" and _ok(r)]
    groups = sorted({(r["spec"], r["backend"], r["K"]) for r in ours})

    def check(text, spec, backend, K, field, limit):
        vals = [(r[field], r["T"]) for r in ours
                if (r["spec"], r["backend"], r["K"]) == (spec, backend, K) and r.get(field) is not None]
        worst, at_T = max(vals) if vals else (None, None)
        # A target whose comparison row failed or is missing stays in the list, as not measured.
        out.append({"target": text, "op": spec, "backend": backend, "K": K, "worst": worst, "at_T": at_T,
                    "limit": limit, "met": worst <= limit if vals else None, "shapes": len(vals)})

    for spec, backend, K in groups:
        if spec in DELTA_TARGET_OPS:
            check("fwd+bwd time / fla", spec, backend, K, "ratio_fla_fwdbwd", 1.0)
        if spec == "gka":
            check("fwd+bwd time / fla chunk_mesa_net (same iterations)", spec, backend, K, "ratio_fla_fwdbwd", 0.5)
            check("fwd+bwd time / our gated_deltanet", spec, backend, K, "ratio_gated_deltanet_fwdbwd", 2.0)
        per_token = {r["T"]: r["fwdbwd_ns_per_token"] for r in ours if (r["spec"], r["backend"], r["K"]) == (spec, backend, K)}
        if len(per_token) > 1:
            spread = max(per_token.values()) / min(per_token.values())
            out.append({"target": f"fwd+bwd time per token, max/min over T={min(per_token)}..{max(per_token)}",
                        "op": spec, "backend": backend, "K": K, "worst": spread,
                        "at_T": max(per_token, key=per_token.get), "limit": 1.15, "met": spread <= 1.15,
                        "shapes": len(per_token)})
    return out


def write_all(out: Path, stem: str, meta: dict, rows: list[dict], *, png: bool = True) -> dict[str, Path]:
    """Write <stem>.json, .md and (if `png`: drawing takes a fraction of a second) .png under `out`."""
    add_ratios(rows)
    tg = targets(rows)
    paths = {ext: out / f"{stem}.{ext}" for ext in ("json", "md", "png")}
    paths["json"].write_text(json.dumps({"meta": meta, "targets": tg, "rows": rows}, indent=1))
    paths["md"].write_text(markdown(meta, rows, tg))
    if png:
        plot(paths["png"], meta, rows)
    return paths


def _f(x, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def _pct(x, peak) -> str:
    return f" ({100 * x / peak:.0f}%)" if x is not None and peak else ""


def _mem(r: dict) -> str:
    return f"{r['peak_mem_mib']:.0f} ({r['peak_above_inputs_mib']:.0f})" if "peak_mem_mib" in r else ""


def markdown(meta: dict, rows: list[dict], tg: list[dict]) -> str:
    # Percentages of the datasheet peak: a fixed denominator, so runs compare with each other.
    peak = meta.get("peaks_datasheet") or meta.get("peaks_measured") or {}
    which = ("datasheet" if meta.get("peaks_datasheet") else "measured") if peak else "no"
    lines = [f"# Speed: generated kernels vs flash-linear-attention ({meta['gpu']}, {meta['date']})", "",
             f"torch {meta['torch']}, triton {meta['triton']}, fla {meta['fla']}, tilelang {meta['tilelang']}. "
             f"Command: `{meta['command']}`", "",
             f"Shapes: {meta['shapes']}. dtype {meta['dtype']}; ridge solvers {meta['ridge_iters']} iterations "
             "(GKA Chebyshev, MesaNet and fla chunk_mesa_net CG).", "",
             "fla rows: `triton` ran fla's Triton kernels only (FLA_TILELANG=0), `tilelang` its default dispatch "
             "(TileLang for the kernels fla has in it). Each /fla ratio is against the faster of the two.", "",
             f"Peaks: datasheet {meta.get('peaks_datasheet')}, measured {meta.get('peaks_measured')}; "
             f"percentages of the {which} peak. FLOP and byte models: bench/speed/flops.py. "
             f"Timer: {meta['timer']}.", ""]
    lines += [f"- {n}" for n in meta.get("notes", [])]
    lines += [f"- {m['rows']} rows from an earlier run, {m['date']}: `{m['command']}`" for m in meta.get("merged", [])]
    if tg:
        lines += ["", "## Targets", "", "| target | op | backend | K | worst | at T | limit | met |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {t['target']} | {t['op']} | {t['backend']} | {t['K']} | {_f(t['worst'], '.2f')} | {_f(t['at_T'], '')} "
                  f"| {t['limit']} | {MET[t['met']]} |" for t in tg]
    for K in sorted({r["K"] for r in rows}, reverse=True):
        lines += ["", f"## K = V = {K}", "",
                  "| op | backend | T | B | fwd ms | fwd+bwd ms | /fla fwd | /fla fwd+bwd | fwd+bwd TFLOP/s "
                  "| fwd+bwd GB/s | ns/token fwd+bwd | fwd+bwd peak MiB (above inputs) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["K"] == K):
            head = f"| {r['name']} | {r['backend']} | {r['T']} | {r['B']} |"
            if "error" in r:
                lines.append(head + f" error: {r['error'][:160].replace('|', '/')} |" + "|" * 7)
                continue
            lines.append(
                head + f" {r['fwd_ms']:.3f} | {r['fwdbwd_ms']:.3f} | {_f(r.get('ratio_fla_fwd'), '.2f')} "
                f"| {_f(r.get('ratio_fla_fwdbwd'), '.2f')} | {r['fwdbwd_tflops']:.1f}{_pct(r['fwdbwd_tflops'], peak.get('tflops'))} "
                f"| {r['fwdbwd_gbs']:.0f}{_pct(r['fwdbwd_gbs'], peak.get('gbs'))} | {r['fwdbwd_ns_per_token']:.1f} "
                f"| {_mem(r)} |")
    return "\n".join(lines) + "\n"


def plot(path: Path, meta: dict, rows: list[dict]) -> None:
    """Per head dim: a panel per spec with time per token against T of our backends (solid), its fla
    op's (dashed) and SDPA (grey), so flatness and the gap read at a glance; under them our fwd+bwd
    time / fla's faster backend, one bar per T."""
    import matplotlib

    matplotlib.use("Agg")  # no display on the GPU machine
    import matplotlib.pyplot as plt

    good = [r for r in rows if _ok(r)]
    Ks = sorted({r["K"] for r in rows}, reverse=True) or [0]
    specs = [s for s in OURS if any(r["name"] == s for r in good)]
    cols, spec_rows = 3, max(1, -(-len(specs) // 3))
    fig = plt.figure(figsize=(15, (2.8 * spec_rows + 3.2) * len(Ks)))
    grid = fig.add_gridspec(len(Ks) * (spec_rows + 1), cols, height_ratios=([2.8] * spec_rows + [3.2]) * len(Ks))
    for k, K in enumerate(Ks):
        at_k = [r for r in good if r["K"] == K]
        Ts = sorted({r["T"] for r in at_k})
        top = k * (spec_rows + 1)
        for i, spec in enumerate(specs):
            ax = fig.add_subplot(grid[top + i // cols, i % cols])
            fla = f"fla.{MATCH[spec]}" if spec in MATCH else None
            for name, backend in sorted({(r["name"], r["backend"]) for r in at_k if r["name"] in (spec, fla, "sdpa")}):
                pts = sorted((r["T"], r["fwdbwd_ns_per_token"]) for r in at_k
                             if (r["name"], r["backend"]) == (name, backend))
                ours = name == spec
                ax.plot(*zip(*pts), marker="o", markersize=3, label=f"{name} ({backend})",
                        color="0.6" if name == "sdpa" else f"C{_LINE.get((ours, backend), 4)}",
                        linestyle="-" if ours else (":" if name == "sdpa" else "--"))
            ax.set_xscale("log", base=2)
            ax.set_xticks(Ts, [str(T) for T in Ts])
            ax.set_ylim(bottom=0)
            ax.set_title(f"{spec}, K = V = {K}: fwd+bwd ns / token", fontsize=9)
            ax.legend(fontsize=6, loc="best")
            ax.tick_params(labelsize=7)
        ax = fig.add_subplot(grid[top + spec_rows, :])
        ours = [r for r in at_k if r.get("ratio_fla_fwdbwd") is not None]
        labels = sorted({(r["name"], r["backend"]) for r in ours}, key=lambda nb: (OURS.index(nb[0]), nb[1]))
        Ts_r = sorted({r["T"] for r in ours})
        width = 0.8 / max(len(Ts_r), 1)
        for i, T in enumerate(Ts_r):
            heights = [next((r["ratio_fla_fwdbwd"] for r in ours if r["T"] == T and (r["name"], r["backend"]) == lab), 0)
                       for lab in labels]
            ax.bar([j + i * width for j in range(len(labels))], heights, width, label=f"T={T}")
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))],
                      [f"{n} ({b})\n/ {MATCH[n].removeprefix('chunk_')}" for n, b in labels], fontsize=7)
        ax.set(title=f"K = V = {K}: our fwd+bwd time / fla's faster backend (under 1: we are faster)", ylabel="ratio")
        ax.title.set_fontsize(9)
        if Ts_r:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no fla rows to compare with", ha="center", transform=ax.transAxes)
    fig.suptitle(f"{meta['gpu']} {meta['dtype']}, {meta['date']}")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=100)
    plt.close(fig)


# Line colours: ours Triton / TileLang (any other backend: C4), fla's Triton-only / default dispatch (dashed).
_LINE = {(True, "triton"): 0, (True, "tilelang"): 1, (False, "triton"): 2, (False, "tilelang"): 3}
