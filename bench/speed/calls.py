"""Inputs and the callables each row times: our generated ops, fla 0.6.0's, causal SDPA.

Every callable runs the op's forward and returns the output; the caller adds the backward.
fla gets the very tensors ours gets, with arguments that mean the same: layout [B, T, H, K],
q/k already l2-normalised where the spec says so (so use_qk_l2norm_in_kernel stays False),
log-space decays (fla's `g` without use_gate_in_kernel), betas after the sigmoid (without
use_beta_sigmoid_in_kernel), the same scale K^-0.5, no initial state, no final state.
fla runs either its Triton kernels alone (backend "triton": FLA_TILELANG=0) or its default
dispatch, which sends some kernels to TileLang where it is importable (backend "tilelang"). Its
Gated DeltaNet backward refuses Triton 3.4-3.7.0 on Hopper (fla #640), so that op needs
tilelang on PYTHONPATH on the GPU machine (../shared/device/pack.sh).
"""
from __future__ import annotations

import functools
import importlib
import inspect
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from gka_gen.spec import load_spec
from gka_gen.testing import make_inputs

from .plan import Case

SPECS = Path(__file__).resolve().parents[2] / "specs"


@functools.lru_cache(maxsize=None)
def _spec(name: str):
    return load_spec(SPECS / f"{name}.yaml")


def make_case_inputs(case: Case, *, dtype: torch.dtype, device: str, seed: int = 0) -> dict:
    """The keyword arguments of the spec's op at the case's shape, every float tensor a leaf needing grad."""
    if case.spec == "sdpa":
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return {n: torch.randn(case.B, case.T, case.H, d, generator=gen).to(device, dtype).requires_grad_(True)
                for n, d in (("q", case.K), ("k", case.K), ("v", case.V))}
    return make_inputs(_spec(case.spec), B=case.B, T=case.T, H=case.H, K=case.K, V=case.V, dtype=dtype,
                       device=device, seed=seed, requires_grad=True)


def ours_available_backends(spec: str, wanted: list[str]) -> tuple[list[str], list[str]]:
    """(usable backends of our package `spec` among `wanted`, notes on those skipped).

    Every row times forward and backward, so a backend needs chunk_bwd: the TileLang packages list
    their kernels in KERNELS, and one without chunk_bwd is skipped with a note."""
    ops = importlib.import_module(f"generated.{spec}.ops")
    tl = ops._tilelang_kernels
    have = {"triton": ops._triton_kernels is not None, "tilelang": tl is not None and "chunk_bwd" in tl.KERNELS,
            "reference": True}
    why = {b: f"no {b} kernels in generated/{spec}" for b in have}
    if tl is not None:
        why["tilelang"] = f"TileLang has no chunk_bwd for {spec} yet (python -m bench tilelang times its forward)"
    notes = [f"{spec}: {why[b]}, {b} rows skipped" for b in wanted if not have[b]]
    return [b for b in wanted if have[b]], notes


def forward_callable(case: Case, args: dict, *, num_iter: int):
    """A no-argument function running the case's forward on `args`, returning the output."""
    scale = case.K ** -0.5
    if case.impl == "ours":
        fn = getattr(importlib.import_module(f"generated.{case.spec}"), f"chunk_{case.spec}")
        params = inspect.signature(fn).parameters
        extra = {"scale": scale} if "scale" in params else {}
        if "num_iter" in params:
            extra["num_iter"] = num_iter
        return lambda: fn(**args, **extra, backend=case.backend)[0]
    if case.impl == "fla":
        return _fla_callable(case.name.removeprefix("fla."), args, scale=scale, num_iter=num_iter,
                             tilelang=case.backend == "tilelang")
    return _sdpa_callable(args)


def _fla_callable(op: str, a: dict, *, scale: float, num_iter: int, tilelang: bool):
    fla_ops = importlib.import_module("fla.ops")  # here, not at the top: fla is a benchmark-only dependency
    q, k, v = a["q"], a["k"], a["v"]
    calls = {
        "chunk_delta_rule": lambda: fla_ops.chunk_delta_rule(q, k, v, a["beta"], scale=scale),
        "chunk_gated_delta_rule": lambda: fla_ops.chunk_gated_delta_rule(q, k, v, a["g"], a["beta"], scale=scale),
        "chunk_kda": lambda: fla_ops.chunk_kda(q, k, v, a["g"], a["beta"], scale=scale),
        "chunk_gla": lambda: fla_ops.chunk_gla(q, k, v, a["g"], scale=scale),
        # MesaNet has no scale in either; lamb is the per-channel [H, K] lambda in both.
        "chunk_mesa_net": lambda: fla_ops.chunk_mesa_net(q, k, v, a["g"], a["beta"], a["lamb"],
                                                         max_CG_iteration=num_iter),
    }
    call = calls[op]

    def run():
        # fla reads FLA_TILELANG at every dispatch, the backward's included (which autograd runs
        # after this returns): so set, not restored. Rows run one after the other.
        os.environ["FLA_TILELANG"] = "1" if tilelang else "0"
        return call()[0]
    return run


def _sdpa_callable(a: dict):
    # SDPA wants [B, H, T, D]; a transposed view is what a model would pass too.
    q, k, v = (a[n].transpose(1, 2) for n in ("q", "k", "v"))
    if q.is_cuda:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def run():
            # The flash kernel is picked at the forward; its backward follows it through autograd.
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return run
    return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
