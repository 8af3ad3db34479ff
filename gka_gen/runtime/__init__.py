"""Plain-torch building blocks that every generated layer (generated/<name>/layer.py) imports.

Kept out of the templates so that the layer template stays a thin, spec-driven wiring of
projections, gates and the op, and so that these pieces are written (and tested) once.
"""
from .layers import (
    LayerCache,
    LogSigmoidGate,
    MambaGate,
    RMSNormGated,
    ShortConvolution,
    SigmoidGate,
    l2norm,
    make_gate,
    pad_tokens,
    unpad_tokens,
)

__all__ = [
    "LayerCache",
    "LogSigmoidGate",
    "MambaGate",
    "RMSNormGated",
    "ShortConvolution",
    "SigmoidGate",
    "l2norm",
    "make_gate",
    "pad_tokens",
    "unpad_tokens",
]
