"""GPU robustness: GKA's solve residual in bf16, and a NaN/inf sweep over seeds with extreme gates.

    python -m bench.gpu_stress --out bench/results [--seeds 100]

1. Residual: the Triton GKA forward keeps its ridge solution x_t (fp32, for the backward);
   we rebuild H_t token by token in fp32 and report ||(H_t + lam_t I) x_t - q_t|| / ||q_t||
   for bf16 and fp32 inputs at several iteration counts (the spec's default is 30).
2. Sweep: every spec, `--seeds` seeds, gates pushed to their edges (decay exp(-20) on a fifth
   of the tokens, beta/alpha exactly 0 or 1 on half of them), forward + backward in bf16;
   any non-finite value in o, the final state or a gradient is a failure.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import sys
import time
from pathlib import Path

import torch

from gka_gen.spec import load_spec
from gka_gen.testing import make_inputs

ROOT = Path(__file__).resolve().parents[1]
ALL = ["deltanet", "gated_deltanet", "kda", "gla", "gka", "mesanet"]


def gka_residuals(T=4096, H=16, K=128, iters=(5, 10, 20, 30), ridge_ratio=0.02) -> list[dict]:
    kernels = importlib.import_module("generated.gka.triton_kernels")
    spec = load_spec(ROOT / "specs" / "gka.yaml")
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        args = make_inputs(spec, B=1, T=T, H=H, K=K, V=K, dtype=dtype, device="cuda", seed=0)
        q, k, v, g, alpha = args["q"], args["k"], args["v"], args["g"], args["alpha"]
        for n in iters:
            _, _, saved = kernels.chunk_fwd(q, k, v, g, g, None, alpha, None, K ** -0.5, ridge_ratio, n,
                                           None, False, None)
            x = saved["x"][0].float()  # [T, H, K]
            kf, qf, a = k[0].float(), q[0].float(), g[0].float().exp()
            Hs = torch.zeros(H, K, K, device="cuda")
            res = torch.empty(T, H, device="cuda")
            for t in range(T):
                Hs = a[t, :, None, None] * Hs + kf[t, :, :, None] * kf[t, :, None, :]
                lam = ridge_ratio * Hs.flatten(1).norm(dim=1)
                r = (Hs @ x[t, :, :, None]).squeeze(-1) + lam[:, None] * x[t] - qf[t]
                res[t] = r.norm(dim=-1) / qf[t].norm(dim=-1)
            kappa = (1 + ridge_ratio) / ridge_ratio  # cond(H + lam I) <= (1 + a) / a, whatever the input
            bound = 2 * ((kappa ** 0.5 - 1) / (kappa ** 0.5 + 1)) ** n
            rows.append({"dtype": str(dtype).replace("torch.", ""), "num_iter": n, "median": float(res.median()),
                         "p99": float(res.flatten().quantile(0.99)), "max": float(res.max()),
                         "chebyshev_bound_on_error": bound})
            print(f"residual {rows[-1]}", flush=True)
    return rows


def nan_sweep(specs, seeds: int, T=1024, H=4, K=128, V=128) -> list[dict]:
    rows = []
    for name in specs:
        spec = load_spec(ROOT / "specs" / f"{name}.yaml")
        fn = getattr(importlib.import_module(f"generated.{name}"), f"chunk_{name}")
        bad, error = [], None
        t0 = time.time()
        try:
            _sweep_one(spec, fn, seeds, bad, T=T, H=H, K=K, V=V)
        except Exception as e:  # record and go on: one broken kernel must not hide the others
            error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        torch.cuda.synchronize()
        rows.append({"spec": name, "seeds": seeds, "nonfinite_seeds": bad, "error": error,
                     "seconds": round(time.time() - t0, 1)})
        print(f"sweep {rows[-1]}", flush=True)
    return rows


def _sweep_one(spec, fn, seeds, bad, *, T, H, K, V):
    for seed in range(seeds):
        args = make_inputs(spec, B=2, T=T, H=H, K=K, V=V, dtype=torch.bfloat16, device="cuda", seed=seed,
                           extreme=True, initial_state=seed % 2 == 0, requires_grad=True)
        o, final = fn(**args, output_final_state=True, backend="triton")
        finals = list(final) if isinstance(final, tuple) else [final]
        leaves = [v for v in args.values() if isinstance(v, torch.Tensor) and v.requires_grad]
        if isinstance(args.get("initial_state"), tuple):
            leaves += list(args["initial_state"])
        grads = torch.autograd.grad([o, *finals], leaves, [torch.randn_like(o), *[torch.randn_like(f) for f in finals]],
                                    allow_unused=True)
        outs = [o, *finals, *[gr for gr in grads if gr is not None]]
        if not all(bool(torch.isfinite(x).all()) for x in outs):
            bad.append(seed)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--specs", nargs="*", default=ALL)
    p.add_argument("--K", type=int, default=128, help="head dim of the sweep (K = V)")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
            "triton": importlib.import_module("triton").__version__, "date": dt.date.today().isoformat(),
            "command": "python -m bench.gpu_stress " + " ".join(sys.argv[1:]),
            "residual_shape": f"B=1 T=4096 H=16 K=V={a.K}, ridge_ratio 0.02", "sweep_shape": f"B=2 T=1024 H=4 K=V={a.K} bf16"}
    res = gka_residuals(K=a.K) if "gka" in a.specs else []
    sweep = nan_sweep(a.specs, a.seeds, K=a.K, V=a.K)
    stem = "gpu_stress" + ("" if a.specs == ALL else "_" + "_".join(a.specs)) + ("" if a.K == 128 else f"_K{a.K}")
    (a.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "gka_residual": res, "nan_sweep": sweep}, indent=1))
    lines = [f"# GPU robustness ({meta['gpu']}, {meta['date']})", "",
             f"torch {meta['torch']}, triton {meta['triton']}. Command: `{meta['command']}`", ""]
    if res:
        lines += [f"## GKA relative residual ||(H_t + lam_t I) x_t - q_t|| / ||q_t|| ({meta['residual_shape']})", "",
                  "| inputs | iterations | median | p99 | max | Chebyshev worst-case error bound |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['dtype']} | {r['num_iter']} | {r['median']:.1e} | {r['p99']:.1e} | {r['max']:.1e} | {r['chebyshev_bound_on_error']:.1e} |"
                  for r in res]
    lines += ["", f"## Non-finite sweep, extreme gates ({meta['sweep_shape']}, forward + backward)", "",
              "| spec | seeds | seeds with NaN/inf | seconds |", "|---|---|---|---|"]
    lines += [f"| {r['spec']} | {r['seeds']} | {r['error'] or len(r['nonfinite_seeds'])} {r['nonfinite_seeds'][:10]} "
              f"| {r['seconds']} |" for r in sweep]
    (a.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("wrote", a.out / f"{stem}.md")


if __name__ == "__main__":
    main()
