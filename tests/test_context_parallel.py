"""Context parallelism on CPU: 2 and 3 gloo processes against one process holding everything.

Each rank holds a contiguous slice of the sequence (slices of unequal length, none a multiple of
the chunk), runs the op or layer with cp_group, and compares with the single-process run of the
whole sequence that every rank also computes: outputs of its slice, the last rank's final
state, the gradients of its slice of every input, and - summed over the group, as DDP / FSDP
would - the gradients of what every rank holds whole (initial state, per-head params, weights).

Tolerances: the reference backend runs in fp64; the split only re-associates products (a slice's
transition is formed, then applied) and the ridge solvers are differentiated through their
iterates: up to ~5e-8 relative seen, 1e-6 allowed. The Triton interpreter runs the kernels in fp32 with the chunked algorithm on both sides;
the split changes where chunks start, so errors are fp32 roundings over ~100 tokens (2e-4 rel).
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import functools  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gka_gen.spec import load_spec  # noqa: E402
from gka_gen.testing import make_inputs  # noqa: E402

NAMES = ["deltanet", "gated_deltanet", "kda", "gla", "gka", "mesanet"]
LAYERS = {"gated_deltanet": "GatedDeltaNet", "gka": "GatedKalmaNet"}


def _spawn(world, job):
    """Run job(rank, world) in `world` gloo processes; a failure in any rank fails the test."""
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_worker, args=(world, os.path.join(d, "store"), job), nprocs=world, join=True)


def _worker(rank, world, store, job):
    torch.set_num_threads(1)  # 2-3 processes on 2 cores
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        job(rank, world)
    except BaseException:  # the peers then fail in a collective: show the rank that broke first
        traceback.print_exc()
        raise
    # Tear down in step: a DDP reducer collected after its process group is destroyed, or a rank
    # leaving while a peer's gloo thread still talks to it, aborts the process ("terminate called
    # without an active exception", seen once under load).
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def _bounds(T, world):
    """Unequal slices: rank r ends at round(T * (r+1)^1.3 / world^1.3)."""
    return [round(T * (r / world) ** 1.3) for r in range(world + 1)]


def _close(name, got, want, tol):
    err = ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1e-6)).item()
    assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


def _sliced(x, s, e):
    return x.detach()[:, s:e].clone().requires_grad_(x.requires_grad)


def _op_job(names, backend, dtype, T, K, V, tol, rank, world):
    group = dist.group.WORLD
    for name in names:
        spec = load_spec(ROOT / "specs" / f"{name}.yaml")
        fn = getattr(importlib.import_module(f"generated.{name}"), f"chunk_{name}")
        symmetric = [len(set(st.shape)) == 1 for st in spec.file.states.values()]
        full = make_inputs(spec, B=2, T=T, H=2, K=K, V=V, dtype=dtype, seed=3, initial_state=True,
                           requires_grad=True)
        gen = torch.Generator().manual_seed(7)
        o, ht = fn(**full, output_final_state=True, backend=backend)
        ht = ht if isinstance(ht, tuple) else (ht,)
        w_o = torch.randn(o.shape, generator=gen, dtype=o.dtype)
        w_h = [torch.randn(h.shape, generator=gen, dtype=h.dtype) for h in ht]
        ((o * w_o).sum() + sum((h * w).sum() for h, w in zip(ht, w_h))).backward()

        s, e = _bounds(T, world)[rank:rank + 2]
        local = {}
        for key, x in full.items():
            if isinstance(x, torch.Tensor) and x.dim() >= 3 and x.shape[1] == T:  # [B, T, H, ...]
                local[key] = _sliced(x, s, e)
            elif isinstance(x, torch.Tensor):  # held whole by every rank
                local[key] = x.detach().clone().requires_grad_(x.requires_grad)
            elif isinstance(x, tuple):
                local[key] = tuple(h.detach().clone().requires_grad_(True) for h in x)
            else:
                local[key] = x
        o_l, ht_l = fn(**local, output_final_state=True, backend=backend, cp_group=group)
        ht_l = ht_l if isinstance(ht_l, tuple) else (ht_l,)
        loss = (o_l * w_o[:, s:e]).sum()
        if rank == world - 1:  # the sequence's final state is the last rank's
            loss = loss + sum((h * w).sum() for h, w in zip(ht_l, w_h))
        loss.backward()

        _close(f"{name} o", o_l, o[:, s:e], tol)
        if rank == world - 1:
            for i, (h_l, h) in enumerate(zip(ht_l, ht)):
                _close(f"{name} final state {i}", h_l, h, tol)
        for key, x in local.items():
            xs = x if isinstance(x, tuple) else (x,)
            fs = full[key] if isinstance(full[key], tuple) else (full[key],)
            for i, (xl, xf) in enumerate(zip(xs, fs)):
                if not isinstance(xl, torch.Tensor) or not xl.requires_grad:
                    continue
                if xl.shape != xf.shape:  # a slice: its gradient is this rank's alone
                    _close(f"{name} d{key}", xl.grad, xf.grad[:, s:e], tol)
                else:  # held whole: the ranks' gradients add up
                    g, want = xl.grad.clone(), xf.grad
                    dist.all_reduce(g)
                    if key == "initial_state" and symmetric[i]:
                        # A covariance state is symmetric; a gradient for it is defined up to an
                        # antisymmetric part, which depends on the solver's order of products.
                        g, want = g + g.mT, want + want.mT
                    _close(f"{name} d{key}[{i}]", g, want, tol)


@pytest.mark.parametrize("world", [2, 3])
def test_reference_backend_matches_one_process(world):
    _spawn(world, functools.partial(_op_job, NAMES, "reference", torch.float64, 45, 16, 32, 1e-6))


@pytest.mark.parametrize("name", ["gated_deltanet", "gka"])
def test_triton_interpreter_matches_one_process(name):
    """One spec per carry rule: a K x K operator (delta rule) and decayed sums (ridge)."""
    _spawn(2, functools.partial(_op_job, [name], "triton", torch.float32, 100, 16, 16, 2e-4))


# The layer in fp64 still takes l2 norms and RMSNorm in fp32: a 1e-16 difference from the split
# (the conv sees its window through the halo) can flip an fp32 rounding, ~1e-7 relative.
LAYER_TOL = 1e-5


def _layer_job(name, wrap, rank, world):
    group = dist.group.WORLD
    pkg = importlib.import_module(f"generated.{name}")
    torch.manual_seed(0)
    kw = dict(hidden_size=32, num_heads=2, head_dim=16, backend="reference", conv_size=4)
    single = getattr(pkg, LAYERS[name])(**kw).double()
    layer = getattr(pkg, LAYERS[name])(**kw, cp_group=group).double()
    layer.load_state_dict(single.state_dict())
    T = 37
    x = torch.randn(2, T, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = single(x)[0]
    (y.pow(2).mean()).backward()

    s, e = _bounds(T, world)[rank:rank + 2]
    model = layer
    if wrap == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(layer)
    elif wrap == "fsdp":
        from torch.distributed.fsdp import fully_shard
        model = fully_shard(layer)
    y_l = model(x[:, s:e])[0]
    # Each rank's share of the mean over all tokens, times world: DDP / FSDP average over ranks.
    (y_l.pow(2).sum() / y.numel() * world).backward()
    _close(f"{name} layer out", y_l, y[:, s:e], LAYER_TOL)
    for (n, p), (_, q) in zip(layer.named_parameters(), single.named_parameters()):
        g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
        if wrap is None:
            g = g.clone()
            dist.all_reduce(g)
            g = g / world
        _close(f"{name} d{n}", g, q.grad, LAYER_TOL)


@pytest.mark.parametrize("wrap", [None, "ddp", "fsdp"])
def test_layer_with_conv_matches_one_process(wrap):
    """The short convolution's window reaches into the previous rank's tokens (a halo)."""
    _spawn(2, functools.partial(_layer_job, "gated_deltanet", wrap))


def test_ridge_layer_matches_one_process():
    _spawn(3, functools.partial(_layer_job, "gka", "ddp"))
