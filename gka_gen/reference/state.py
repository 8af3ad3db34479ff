"""One token of one canonical state update, for any `StateForm`.

    X_t = (I - b u u^T) D X_{t-1} + b u w^T,   D in {I, exp(g) I, Diag(exp(g))}

Shapes: X [b, H, R, C]; u [b, H, R]; w [b, H, C]; b and a scalar decay [b, H]; a channel
decay [b, H, R] (it scales the rows: Diag(a) X). No in-place ops, so autograd sees it all.
"""
from __future__ import annotations

import torch

from ..symbolic.canonical import StateForm


def state_step(form: StateForm, X: torch.Tensor, tok: dict[str, torch.Tensor],
               rate: dict[str, torch.Tensor]) -> torch.Tensor:
    """``tok``: this token's inputs and unit gates; ``rate``: exp(g) of this token's log gates."""
    if form.decay == "scalar":
        X = rate[form.decay_gate][..., None, None] * X
    elif form.decay == "channel":
        X = rate[form.decay_gate][..., :, None] * X
    u, w = tok[form.input[0]], tok[form.input[1]]
    bu = u if form.beta is None else tok[form.beta][..., None] * u
    if form.delta:
        # (I - b u u^T) X = X - (b u) (u^T X): a rank-one correction, never a dense R x R matrix.
        X = X - bu[..., :, None] * torch.einsum("bhr,bhrc->bhc", u, X)[..., None, :]
    return X + bu[..., :, None] * w[..., None, :]
