"""Multi-query associative recall (MQAR, Zoology): can a small model built from a variant's
layer store key-value pairs and answer queries about them later in the sequence?

A sequence of length T holds `num_kv` pairs `k1 v1 k2 v2 ...` followed by filler tokens (0),
among which every key appears once more, at a random position and in random order; the
target at such a query position is that key's value, every other position is ignored (-100).
Keys and values come from disjoint ranges of the vocabulary, so a model that learnt only the
output format (some value) is right with probability 1 / n_values: the chance level.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE = -100


@dataclass(frozen=True)
class Vocab:
    n_keys: int
    n_values: int

    @property
    def size(self) -> int:
        return 1 + self.n_keys + self.n_values  # token 0 is the filler

    @property
    def chance(self) -> float:
        return 1.0 / self.n_values


def mqar_batch(batch: int, seq_len: int, num_kv: int, vocab: Vocab, gen: torch.Generator):
    """(inputs [batch, seq_len], targets [batch, seq_len]) as int64 tensors on CPU."""
    if num_kv > vocab.n_keys:
        raise ValueError(f"num_kv={num_kv} needs that many distinct keys; the vocabulary has {vocab.n_keys}")
    if seq_len < 3 * num_kv:
        raise ValueError(f"seq_len={seq_len} cannot hold {num_kv} pairs and {num_kv} queries (needs {3 * num_kv})")
    keys = 1 + torch.rand(batch, vocab.n_keys, generator=gen).argsort(-1)[:, :num_kv]
    values = 1 + vocab.n_keys + torch.randint(vocab.n_values, (batch, num_kv), generator=gen)
    inputs = torch.zeros(batch, seq_len, dtype=torch.long)
    targets = torch.full((batch, seq_len), IGNORE, dtype=torch.long)
    inputs[:, 0:2 * num_kv:2] = keys
    inputs[:, 1:2 * num_kv:2] = values
    # Query slots: num_kv distinct positions after the pairs; pair j is asked at slot order[j].
    free = seq_len - 2 * num_kv
    slots = 2 * num_kv + torch.rand(batch, free, generator=gen).argsort(-1)[:, :num_kv]
    order = torch.rand(batch, num_kv, generator=gen).argsort(-1)
    pos = slots.gather(1, order)
    inputs.scatter_(1, pos, keys)
    targets.scatter_(1, pos, values)
    return inputs, targets


class MLP(nn.Module):
    def __init__(self, d_model: int, expand: int = 2):
        super().__init__()
        self.up = nn.Linear(d_model, expand * d_model)
        self.down = nn.Linear(expand * d_model, d_model)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


class RecallModel(nn.Module):
    """Embedding, `n_layers` pre-norm blocks (the variant's layer, then an MLP), LM head."""

    def __init__(self, make_layer, vocab_size: int, d_model: int, n_layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.mixers = nn.ModuleList([make_layer(i) for i in range(n_layers)])
        self.mlps = nn.ModuleList([MLP(d_model) for _ in range(n_layers)])
        self.norms = nn.ModuleList([nn.RMSNorm(d_model) for _ in range(2 * n_layers + 1)])
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for i, (mixer, mlp) in enumerate(zip(self.mixers, self.mlps)):
            x = x + mixer(self.norms[2 * i](x))[0]
            x = x + mlp(self.norms[2 * i + 1](x))
        return self.head(self.norms[-1](x))


@dataclass(frozen=True)
class RecallSetup:
    """One training budget, shared by every variant."""

    seq_lens: tuple[int, ...]
    num_kvs: tuple[int, ...]
    vocab: Vocab
    steps: int
    batch: int
    eval_batch: int
    d_model: int = 128
    n_layers: int = 2
    num_heads: int = 2
    head_dim: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.1
    seed: int = 0

    def cells(self) -> list[tuple[int, int]]:
        """The (seq_len, num_kv) settings that fit: each needs seq_len >= 3 num_kv."""
        return [(T, n) for T in self.seq_lens for n in self.num_kvs if T >= 3 * n]


def build_model(layer_cls, setup: RecallSetup, layer_kwargs: dict) -> RecallModel:
    # The same seed before every model: embeddings, MLPs and head start identical across
    # variants (they are built in the same order; only the mixers differ).
    torch.manual_seed(setup.seed)

    def make_layer(i):
        return layer_cls(hidden_size=setup.d_model, num_heads=setup.num_heads, head_dim=setup.head_dim,
                         layer_idx=i, **layer_kwargs)

    return RecallModel(make_layer, setup.vocab.size, setup.d_model, setup.n_layers)


def train(model: RecallModel, setup: RecallSetup, device: str, log=None) -> dict:
    """Train on every cell of the grid in turn (one cell per step), with the same data stream
    for every variant. Returns {"seconds", "final_loss"}."""
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=setup.lr, weight_decay=setup.weight_decay)
    warmup = max(1, setup.steps // 10)

    def lr_at(step):  # linear warm-up, cosine decay to 10%: standard for short budgets
        if step < warmup:
            return (step + 1) / warmup
        p = (step - warmup) / max(1, setup.steps - warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * p))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(setup.seed + 1)
    cells = setup.cells()
    t0, losses = time.perf_counter(), []
    for step in range(setup.steps):
        T, n = cells[step % len(cells)]
        x, y = mqar_batch(setup.batch, T, n, setup.vocab, gen)
        x, y = x.to(device), y.to(device)
        with _autocast(device):
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log is not None and (step + 1) % max(1, setup.steps // 5) == 0:
            log(f"    step {step + 1}/{setup.steps}  loss {sum(losses[-10:]) / len(losses[-10:]):.3f}")
    return {"seconds": time.perf_counter() - t0, "final_loss": sum(losses[-10:]) / max(1, len(losses[-10:]))}


def _autocast(device: str):
    # On the GPU the layers' projections then produce bf16, so the kernels run in bf16 as in
    # training at scale; the CPU reference computes in fp32 whatever it is given.
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda")


@torch.no_grad()
def evaluate(model: RecallModel, setup: RecallSetup, device: str) -> list[dict]:
    """Accuracy on the query positions of every cell, on held-out data (its own seed)."""
    model.eval()
    gen = torch.Generator().manual_seed(setup.seed + 2)
    rows = []
    for T, n in setup.cells():
        x, y = mqar_batch(setup.eval_batch, T, n, setup.vocab, gen)
        with _autocast(device):
            pred = model(x.to(device)).argmax(-1).cpu()
        mask = y != IGNORE
        rows.append({"seq_len": T, "num_kv": n, "accuracy": float((pred[mask] == y[mask]).float().mean())})
    return rows
