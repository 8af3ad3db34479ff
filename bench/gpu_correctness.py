"""GPU correctness at realistic shapes: generated kernels (bf16) vs the spec's fp32 reference.

Every (batch, head) of these ops is independent, so the naive fp32 reference is run on a few
(batch, head) slices of the full-size problem while the kernel runs on all of it; the slices'
outputs, final states and gradients are compared. That keeps an exact per-token reference
(including GKA's torch.linalg.solve) affordable at T = 4096.

    python -m bench.gpu_correctness --out bench/results [--specs gka kda] [--backend triton]
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

from bench.per_spec import run_per_spec
from bench.tuned import tuned_note
from gka_gen.reference import reference_op
from gka_gen.spec import load_spec
from gka_gen.symbolic.canonical import canonicalize
from gka_gen.testing import make_inputs

ROOT = Path(__file__).resolve().parents[1]
ALL = ["deltanet", "gated_deltanet", "kda", "gla", "gka", "mesanet"]


def _slice(args: dict, b: int, h: int, seq: int | None) -> dict:
    """The inputs of batch b, head h (or of packed sequence `seq` when varlen)."""
    out = {}
    cu = args.get("cu_seqlens")
    for k, v in args.items():
        if k == "cu_seqlens":
            continue
        if k == "initial_state":
            idx = seq if cu is not None else b
            out[k] = tuple(s[idx:idx + 1, h:h + 1] for s in v) if isinstance(v, tuple) else v[idx:idx + 1, h:h + 1]
        elif isinstance(v, torch.Tensor) and v.dim() == 2:  # [H, K] head params
            out[k] = v[h:h + 1]
        elif isinstance(v, torch.Tensor):
            x = v[b:b + 1, :, h:h + 1]
            if cu is not None:
                x = x[:, int(cu[seq]):int(cu[seq + 1])]
            out[k] = x
        else:
            out[k] = v
    return out


def _flat(x):
    return list(x) if isinstance(x, tuple) else [x]


def _err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| / max |ref|: scale-free, and dominated by the worst element."""
    a, ref = a.detach().double(), ref.detach().double()
    if not torch.isfinite(a).all():
        return math.inf
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-2))


def check_spec(name: str, *, backend: str, B: int, T: int, H: int, K: int, V: int, cu: list[int] | None,
               dtype=torch.bfloat16, seed: int = 0, slices=((0, 0), (-1, -1))) -> dict:
    spec = load_spec(ROOT / "specs" / f"{name}.yaml")
    cf = canonicalize(spec)
    pkg = importlib.import_module(f"generated.{name}")
    fn = getattr(pkg, f"chunk_{name}")
    ref = reference_op(spec, cf, implicit_grad=True)  # the kernels differentiate the exact solution
    args = make_inputs(spec, B=B, T=T, H=H, K=K, V=V, dtype=dtype, device="cuda", seed=seed,
                       cu_seqlens=cu, initial_state=True, requires_grad=True)
    torch.cuda.synchronize()
    t0 = time.time()
    o, final = fn(**args, output_final_state=True, backend=backend)
    do = torch.randn_like(o)
    dht = [torch.randn_like(s) for s in _flat(final)]
    leaves = {k: v for k, v in args.items() if isinstance(v, torch.Tensor) and v.requires_grad and k != "initial_state"}
    istate = _flat(args["initial_state"])
    grads = torch.autograd.grad([o, *_flat(final)], [*leaves.values(), *istate], [do, *dht], allow_unused=True)
    torch.cuda.synchronize()
    kernel_s = time.time() - t0
    g_kernel = dict(zip([*leaves, *[f"h0[{i}]" for i in range(len(istate))]], grads))

    errors: dict[str, float] = {}
    n_seq = len(cu) - 1 if cu else B
    for b, h in slices:
        b = b % B if not cu else 0
        h = h % H
        seq = (b if not cu else (h % n_seq))
        sub = _slice({k: (v.detach().float().requires_grad_(True) if isinstance(v, torch.Tensor) and v.is_floating_point() else
                          tuple(s.detach().float().requires_grad_(True) for s in v) if isinstance(v, tuple) else v)
                      for k, v in args.items()}, b, h, seq if cu else None)
        ro, rfinal = ref(**sub, output_final_state=True)
        if cu:
            lo, hi = cu[seq], cu[seq + 1]
            ko, kfinal, kdo = o[:, lo:hi, h:h + 1], [s[seq:seq + 1, h:h + 1] for s in _flat(final)], do[:, lo:hi, h:h + 1]
        else:
            ko, kfinal, kdo = o[b:b + 1, :, h:h + 1], [s[b:b + 1, h:h + 1] for s in _flat(final)], do[b:b + 1, :, h:h + 1]
        kdht = [d[seq:seq + 1, h:h + 1] for d in dht]
        rleaves = {k: v for k, v in sub.items() if isinstance(v, torch.Tensor) and v.requires_grad and k != "initial_state"}
        rstate = _flat(sub["initial_state"])
        rgrads = torch.autograd.grad([ro, *_flat(rfinal)], [*rleaves.values(), *rstate], [kdo.float(), *kdht],
                                     allow_unused=True)
        rg = dict(zip([*rleaves, *[f"h0[{i}]" for i in range(len(rstate))]], rgrads))
        upd = {"o": _err(ko, ro)}
        upd.update({f"final[{i}]": _err(a, r) for i, (a, r) in enumerate(zip(kfinal, _flat(rfinal)))})
        for key, r in rg.items():
            if r is None:
                continue
            kg = g_kernel.get(key)
            if kg is None:
                upd[f"d{key}"] = math.inf
                continue
            if key.startswith("h0"):
                kg = kg[seq:seq + 1, h:h + 1]
            elif kg.dim() == 2:
                kg = kg[h:h + 1]
                continue  # head params gather gradient from every batch/sequence: not comparable per slice
            elif cu:
                kg = kg[:, cu[seq]:cu[seq + 1], h:h + 1]
            else:
                kg = kg[b:b + 1, :, h:h + 1]
            upd[f"d{key}"] = _err(kg, r)
        for k2, v2 in upd.items():
            errors[k2] = max(errors.get(k2, 0.0), v2)
    return {"spec": name, "backend": backend, "shape": dict(B=B, T=T, H=H, K=K, V=V), "cu_seqlens": cu,
            "dtype": str(dtype).replace("torch.", ""), "max_rel_err": errors, "kernel_seconds_incl_compile": kernel_s}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--specs", nargs="*", default=ALL)
    p.add_argument("--backend", default="triton")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--tol", type=float, default=2e-2)
    p.add_argument("--quick", action="store_true", help="small shapes (smoke test)")
    p.add_argument("--K", type=int, default=128, help="head dim (K = V)")
    p.add_argument("--jobs", type=int, default=1,
                   help="check the specs in this many processes at once (first compiles dominate; results merged)")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    shapes = [dict(B=4, T=4096, H=16, K=a.K, V=a.K, cu=None),
              dict(B=1, T=8192, H=16, K=a.K, V=a.K, cu=[0, 1000, 3001, 3100, 6000, 8192])]
    if a.quick:
        shapes = [dict(B=2, T=300, H=4, K=64, V=64, cu=None), dict(B=1, T=500, H=4, K=64, V=64, cu=[0, 100, 233, 500])]
    meta = {
        "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
        "triton": importlib.import_module("triton").__version__,
        "tilelang": _version("tilelang"), "date": dt.date.today().isoformat(),
        "python": platform.python_version(), "command": "python -m bench.gpu_correctness " + " ".join(sys.argv[1:]),
        "tolerance": a.tol,
        "tolerance_why": "bf16 inputs (8-bit mantissa, ~4e-3 relative rounding) through fp32-accumulating kernels over "
                         "T=4096 steps; errors are max-abs relative to the reference's max-abs per tensor",
        "launch_configs": [tuned_note(name, torch.cuda.get_device_name()) for name in a.specs],
    }
    stem = (f"gpu_correctness_{a.backend}" + ("_quick" if a.quick else "")
            + ("" if a.specs == ALL else "_" + "_".join(a.specs)) + ("" if a.K == 128 else f"_K{a.K}"))
    rows = []
    if a.jobs > 1 and len(a.specs) > 1:
        rows = _in_processes(a, argv if argv is not None else sys.argv[1:])
        (a.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
        (a.out / f"{stem}.md").write_text(_markdown(meta, rows))
    for name in a.specs if not rows else []:
        for s in shapes:
            t0 = time.time()
            try:
                r = check_spec(name, backend=a.backend, **s)
            except Exception as e:  # record and go on: one broken kernel must not hide the others
                r = {"spec": name, "backend": a.backend, "shape": s, "error": f"{type(e).__name__}: {e}"[:500]}
            r["wall_s"] = round(time.time() - t0, 1)
            worst = max(r.get("max_rel_err", {"x": math.inf}).values())
            r["pass"] = bool(worst <= a.tol)
            rows.append(r)
            print(f"{name:15s} T={s['T']:5d} varlen={bool(s['cu'])!s:5s} worst={worst:.2e} "
                  f"{'PASS' if r['pass'] else 'FAIL'} {r.get('error', '')}", flush=True)
            # written after every row: a run cut short by its time limit keeps what it measured
            (a.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
            (a.out / f"{stem}.md").write_text(_markdown(meta, rows))
    print(f"wrote {a.out / stem}.json/.md")


def _in_processes(a, argv):
    """One child per spec: every option but the spec list, the folder and the job count."""
    rest, skip = [], False
    for x in argv:
        if x in ("--specs", "--out", "--jobs"):
            skip = True
            continue
        if skip and not x.startswith("--"):
            continue
        skip = False
        rest.append(x)
    return run_per_spec("bench.gpu_correctness", a.specs, a.jobs, rest, lambda name: {
        "spec": name, "backend": a.backend, "shape": dict(B="?", T="?", H="?", K=a.K, V=a.K),
        "error": "the child wrote nothing (see its output above)", "pass": False}, a.out)


def _version(mod):
    try:
        return importlib.import_module(mod).__version__
    except Exception:
        return None


def _markdown(meta, rows):
    lines = [f"# GPU correctness ({meta['gpu']}, {meta['date']})", "",
             f"torch {meta['torch']}, triton {meta['triton']}, tilelang {meta['tilelang']}. Command: `{meta['command']}`",
             "", f"Tolerance {meta['tolerance']}: {meta['tolerance_why']}.", "",
             *[f"- {n}" for n in meta.get("launch_configs", [])], "",
             "| spec | shape | varlen | dtype | worst output/grad | max rel err per tensor | pass |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        errs = r.get("max_rel_err", {})
        worst = max(errs.values()) if errs else math.inf
        detail = ", ".join(f"{k} {v:.1e}" for k, v in errs.items()) or r.get("error", "")
        s = r["shape"]
        lines.append(f"| {r['spec']} | B={s['B']} T={s['T']} H={s['H']} K={s['K']} V={s['V']} | {bool(r.get('cu_seqlens') or s.get('cu'))} "
                     f"| {r.get('dtype', 'bfloat16')} | {worst:.1e} | {detail} | {'yes' if r['pass'] else 'NO'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
