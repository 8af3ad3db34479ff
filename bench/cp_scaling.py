"""Context parallelism on several GPUs of one host (NCCL): correctness against one GPU, and time at 128k.

    python -m bench.cp_scaling --specs gated_deltanet gka --out bench/results

One process per GPU. Correctness: the whole sequence (--check-T tokens, fits one GPU) runs on
every GPU alone and, split in equal slices, with cp_group across all of them; outputs, the last
rank's final state and the gradients of every input slice are compared (max-abs error relative to
the single-GPU tensor's max-abs). Timing: forward and forward+backward at --T tokens split over the
GPUs, beside one GPU running all --T tokens and one GPU running one slice (T / P: the work of a
rank without the exchange), CUDA events, median of --reps after warm-up. B=1, H=16, K=V=128, bf16.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import socket
import statistics
import sys
from pathlib import Path

# NVLink multicast (NVLS) must stay off on the shared hosts (device README); children inherit.
os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
os.environ.setdefault("NVSHMEM_DISABLE_NVLS", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gka_gen.compare.numerics import rel_error  # noqa: E402
from gka_gen.spec import load_spec  # noqa: E402
from gka_gen.testing import make_inputs  # noqa: E402

H, K, V = 16, 128, 128


def _log(rank, *msg):
    if rank == 0:
        print(*msg, flush=True)


def _inputs(name, T, seed=0):
    spec = load_spec(ROOT / "specs" / f"{name}.yaml")
    return make_inputs(spec, B=1, T=T, H=H, K=K, V=V, dtype=torch.bfloat16, seed=seed)


def _split(a, T, rank, world, device, grad=False):
    """This rank's slice of every [B, T, ...] tensor (everything else whole), on device."""
    s, e = T * rank // world, T * (rank + 1) // world
    out = {}
    for key, x in a.items():
        if isinstance(x, torch.Tensor):
            x = (x[:, s:e] if x.dim() >= 3 and x.shape[1] == T else x).to(device).contiguous()
            out[key] = x.requires_grad_(grad and x.is_floating_point())
        else:
            out[key] = x
    return out, (s, e)


def check(name, T, rank, world, device):
    """Max relative error of the cp run against one GPU, per tensor, worst over ranks."""
    fn = getattr(importlib.import_module(f"generated.{name}"), f"chunk_{name}")
    a = _inputs(name, T)
    full, _ = _split(a, T, 0, 1, device, grad=True)
    o, ht = fn(**full, output_final_state=True, backend="triton")
    ht = ht if isinstance(ht, tuple) else (ht,)
    w = torch.randn(o.shape, generator=torch.Generator(device).manual_seed(1), device=device, dtype=o.dtype)
    (o.float() * w).sum().backward()
    local, (s, e) = _split(a, T, rank, world, device, grad=True)
    o_l, ht_l = fn(**local, output_final_state=True, backend="triton", cp_group=dist.group.WORLD)
    ht_l = ht_l if isinstance(ht_l, tuple) else (ht_l,)
    (o_l.float() * w[:, s:e]).sum().backward()
    errs = {"o": rel_error(o_l, o[:, s:e])}
    if rank == world - 1:
        errs.update({f"final_state[{i}]": rel_error(x, y) for i, (x, y) in enumerate(zip(ht_l, ht))})
    for key, x in local.items():
        if isinstance(x, torch.Tensor) and x.grad is not None and x.shape != full[key].shape:
            errs[f"d{key}"] = rel_error(x.grad, full[key].grad[:, s:e])
    gathered = [None] * world
    dist.all_gather_object(gathered, errs)
    worst = {}
    for r in gathered:
        for k, v in r.items():
            worst[k] = max(worst.get(k, 0.0), v)
    return worst


def _time(fn, reps, group=None):
    """Median ms of fn() over reps, all ranks of group in step."""
    times = []
    for i in range(reps + 2):
        if group is not None:
            dist.barrier(group)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        if i >= 2:  # two warm-ups (compile, allocator)
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def _runs(fn, a, cp_group=None):
    def fwd():
        with torch.no_grad():
            fn(**a, backend="triton", cp_group=cp_group)

    def fwdbwd():
        o, _ = fn(**a, backend="triton", cp_group=cp_group)
        o.float().sum().backward()
        for x in a.values():
            if isinstance(x, torch.Tensor):
                x.grad = None
    return fwd, fwdbwd


def timing(name, T, reps, rank, world, device):
    fn = getattr(importlib.import_module(f"generated.{name}"), f"chunk_{name}")
    a = _inputs(name, T, seed=2)
    row = {"spec": name, "T_total": T, "gpus": world}
    local, _ = _split(a, T, rank, world, device, grad=True)
    fwd, fwdbwd = _runs(fn, local, dist.group.WORLD)
    torch.cuda.reset_peak_memory_stats(device)
    row["cp_fwd_ms"] = _time(fwd, reps, dist.group.WORLD)
    row["cp_fwdbwd_ms"] = _time(fwdbwd, reps, dist.group.WORLD)
    row["cp_peak_gib_per_gpu"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    del local
    if rank == 0:  # one GPU alone: the whole sequence, and one rank's share of it
        for label, world_alone in (("one_gpu_full", 1), ("one_gpu_slice", world)):
            alone, _ = _split(a, T, 0, world_alone, device, grad=True)
            f, fb = _runs(fn, alone)
            torch.cuda.reset_peak_memory_stats(device)
            row[f"{label}_fwd_ms"] = _time(f, reps)
            row[f"{label}_fwdbwd_ms"] = _time(fb, reps)
            row[f"{label}_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
            del alone
        row["speedup_fwdbwd"] = row["one_gpu_full_fwdbwd_ms"] / row["cp_fwdbwd_ms"]
        row["cp_overhead_fwdbwd"] = row["cp_fwdbwd_ms"] / row["one_gpu_slice_fwdbwd_ms"]
    dist.barrier()
    return row


def _worker(rank, world, args, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=device)
    try:
        checks, times = [], []
        for name in args.specs:
            _log(rank, f"{name}: correctness at T={args.check_T} over {world} GPUs ...")
            errs = check(name, args.check_T, rank, world, device)
            worst = max(errs.values())
            checks.append({"spec": name, "T_total": args.check_T, "max_rel_err": errs, "pass": worst <= args.tol})
            _log(rank, f"  worst {worst:.2e} {'PASS' if worst <= args.tol else 'FAIL'}  {errs}")
            _log(rank, f"{name}: timing at T={args.T} ...")
            row = timing(name, args.T, args.reps, rank, world, device)
            times.append(row)
            _log(rank, "  " + json.dumps(row))
            if rank == 0:
                _write(args, world, checks, times)
    finally:
        dist.destroy_process_group()


def _write(args, world, checks, times):
    meta = {"gpu": torch.cuda.get_device_name(), "gpus": world, "torch": torch.__version__,
            "triton": importlib.import_module("triton").__version__, "date": dt.date.today().isoformat(),
            "shape": f"B=1 H={H} K=V={K} bf16", "tolerance": args.tol,
            "tolerance_why": "both sides bf16 with fp32 accumulation; the split moves chunk boundaries and adds "
                             "the carried state in fp32, so the cp run differs from one GPU by bf16 roundings",
            "nccl_nvls": os.environ.get("NCCL_NVLS_ENABLE"),
            "command": "python -m bench.cp_scaling " + " ".join(sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"cp_scaling_{world}gpu"
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "correctness": checks, "timing": times}, indent=1))
    lines = [f"# Context parallelism on {world} x {meta['gpu']} ({meta['date']})", "",
             f"torch {meta['torch']}, triton {meta['triton']}, {meta['shape']}, NCCL_NVLS_ENABLE={meta['nccl_nvls']}. "
             f"Command: `{meta['command']}`", "",
             f"## Correctness: split over {world} GPUs vs one GPU (max rel err, tolerance {args.tol})", "",
             "| spec | T | worst | pass | per tensor |", "|---|---|---|---|---|"]
    for c in checks:
        per = ", ".join(f"{k} {v:.1e}" for k, v in c["max_rel_err"].items())
        lines.append(f"| {c['spec']} | {c['T_total']} | {max(c['max_rel_err'].values()):.2e} | {c['pass']} | {per} |")
    lines += ["", "## Time (median ms; fwd+bwd includes the exchange)", "",
              f"| spec | T | {world} GPUs fwd | {world} GPUs fwd+bwd | 1 GPU all T fwd+bwd | 1 GPU T/{world} fwd+bwd | "
              f"speedup | cp / slice | peak GiB per GPU (cp / 1 GPU) |", "|---|---|---|---|---|---|---|---|---|"]
    for t in times:
        lines.append(f"| {t['spec']} | {t['T_total']} | {t['cp_fwd_ms']:.2f} | {t['cp_fwdbwd_ms']:.2f} | "
                     f"{t['one_gpu_full_fwdbwd_ms']:.2f} | {t['one_gpu_slice_fwdbwd_ms']:.2f} | "
                     f"{t['speedup_fwdbwd']:.2f}x | {t['cp_overhead_fwdbwd']:.2f} | "
                     f"{t['cp_peak_gib_per_gpu']:.1f} / {t['one_gpu_full_peak_gib']:.1f} |")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--specs", nargs="*", default=["gated_deltanet", "gka"])
    p.add_argument("--T", type=int, default=131072, help="total tokens of the timed sequence")
    p.add_argument("--check-T", type=int, default=16384, help="total tokens of the correctness check")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--tol", type=float, default=2e-2)
    p.add_argument("--gpus", type=int, default=None, help="default: every visible GPU")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    world = args.gpus or torch.cuda.device_count()
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(world, args, port), nprocs=world, join=True)


if __name__ == "__main__":
    main()
