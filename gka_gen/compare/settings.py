"""What `gka-gen compare` measures, at which sizes: the quick profile (a 2-core CPU, under 10
minutes for the four required variants) and the full one (about 5 minutes on one H200)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .mqar import RecallSetup, Vocab
from .numerics import NumericsSetup, SolverSetup
from .speed import SpeedSetup

SEED = 0


@dataclass(frozen=True)
class Settings:
    device: str
    quick: bool
    speed: SpeedSetup
    numerics: NumericsSetup
    solver: SolverSetup
    recall: RecallSetup
    # Solver iterations of ridge-family layers in the recall models (None: the spec's default).
    recall_num_iter: int | None


def settings_for(device: str, quick: bool, kernels_on_cpu: bool) -> Settings:
    """``kernels_on_cpu``: the Triton kernels run here in the interpreter (CPU numerics use
    them at tiny shapes; otherwise the reference stands in and the report says so)."""
    cuda = device == "cuda"
    kernel_backend = "triton" if cuda or kernels_on_cpu else "reference"
    if quick:
        speed = SpeedSetup(seq_lens=(64, 128, 256), batch=1, heads=2, head_dim=32,
                           dtype=torch.bfloat16 if cuda else torch.float32,
                           backend="triton" if cuda else "reference", reps=3)
        numerics = NumericsSetup(seq_lens=(64, 128, 256, 512), batch=1, heads=2, head_dim=32,
                                 backend=kernel_backend, seed=SEED)
        solver = SolverSetup(iters=(1, 2, 5, 10, 20, 30, 50), ridge_ratios=(0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005,
                                                                            0.002, 0.001),
                             cond_iters=30, systems=64, K=64, T=256, seed=SEED)
        # 100 steps and 16 + 16 tokens: a delta-rule model then reaches ~95% at 2 pairs and ~55%
        # at 8 (with 32 + 32 it stays at 1/num_kv, a guess among the context's values, which
        # tells the variants apart less), and the token-loop reference trains in about a minute.
        recall = RecallSetup(seq_lens=(32, 64), num_kvs=(2, 4, 8), vocab=Vocab(16, 16), steps=100, batch=32,
                             eval_batch=128, num_heads=4, head_dim=32, seed=SEED)
        # The CPU reference unrolls every solver step per token through autograd: at 30 steps a
        # GKA model trains ~10x slower than a delta-rule one, so quick runs use 10.
        return Settings(device, True, speed, numerics, solver, recall, recall_num_iter=None if cuda else 10)
    # K=V=128 for every variant (equal footing), the shape of the GPU checks.
    speed = SpeedSetup(seq_lens=(512, 1024, 2048, 4096, 8192), batch=4, heads=16, head_dim=128,
                       dtype=torch.bfloat16 if cuda else torch.float32,
                       backend="triton" if cuda else "reference", reps=3)
    numerics = NumericsSetup(seq_lens=(256, 1024, 4096), batch=1, heads=2, head_dim=64,
                             backend=kernel_backend, seed=SEED)
    solver = SolverSetup(iters=(1, 2, 3, 5, 8, 10, 15, 20, 30, 50),
                         ridge_ratios=(1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001),
                         cond_iters=30, systems=128, K=64, T=512, seed=SEED)
    # 1500 steps of 64 sequences: about a minute per variant on one H200 (estimated: kernel
    # launches, not arithmetic, bound a model this small); 2 heads of 64 make d_model 128.
    recall = RecallSetup(seq_lens=(64, 128, 256), num_kvs=(4, 8, 16, 32, 64), vocab=Vocab(128, 128), steps=1500,
                         batch=64, eval_batch=512, num_heads=2, head_dim=64, seed=SEED)
    return Settings(device, False, speed, numerics, solver, recall, recall_num_iter=None)
