"""The fields of a spec file, as strict pydantic models (unknown fields are errors)."""
from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field

Scalarish = Union[int, float, str]


class _Strict(BaseModel):
    # strict: a YAML string "3" is not silently an int; forbid: a typo'd field is an error.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DimSpec(_Strict):
    doc: str = ""
    min: int = Field(16, ge=1, le=4096)
    max: int = Field(256, ge=1, le=4096)
    multiple_of: int = Field(16, ge=1, le=256)


class InputSpec(_Strict):
    """A per-token, per-head tensor of the op: ``[B, T, H, *shape]``."""

    shape: list[str]
    norm: Literal["l2", "none"] = "none"
    dtypes: list[Literal["fp32", "bf16", "fp16"]] = ["fp32", "bf16", "fp16"]
    doc: str = ""


class GateSpec(_Strict):
    """A per-token, per-head gate ``[B, T, H, *shape]`` and how the layer produces it.

    space: ``log`` gates enter the math as exp(g) (g <= 0 is a decay), ``unit`` gates lie in
    [0, 1] (beta, alpha). param is the layer's parametrization from its input projection:
    ``mamba`` g = -exp(A_log) * softplus(x + dt_bias), ``logsigmoid``, ``sigmoid``.
    """

    shape: list[str] = []
    space: Literal["log", "unit"]
    param: Literal["mamba", "logsigmoid", "sigmoid"]
    optional: bool = False
    default: Scalarish | None = None  # used when the caller passes None: a number or another gate
    doc: str = ""


class ParamSpec(_Strict):
    """A call-time argument: a python scalar, or a per-head tensor ``[H, *shape]``."""

    type: Literal["float", "int", "head_tensor"]
    shape: list[str] = []
    default: Scalarish | None = None  # number, or an expression in the dims (e.g. "K**-0.5")
    positive: bool = False
    doc: str = ""


class StateSpec(_Strict):
    shape: list[str]
    doc: str = ""


class SolverSpec(_Strict):
    method: Literal["chebyshev", "cg", "exact"]
    iters: int | str = 30


class LayerSpec(_Strict):
    class_name: str = Field(alias="class")
    conv_size: int = Field(4, ge=0, le=16)
    output_gate: bool = True
    doc: str = ""


class AliasSpec(_Strict):
    """flash-linear-attention's names for the op, exported next to ours."""

    chunk: str | None = None
    fused_recurrent: str | None = None


class SpecFile(_Strict):
    name: str
    title: str = ""
    paper: str = ""
    dims: dict[str, DimSpec]
    inputs: dict[str, InputSpec]
    gates: dict[str, GateSpec] = {}
    params: dict[str, ParamSpec] = {}
    states: dict[str, StateSpec]
    update: dict[str, str]
    readout: dict[str, str]
    solver: SolverSpec | None = None
    chunk_size: Literal[16, 32, 64, 128] = 64
    backends: list[Literal["triton", "tilelang"]] = ["triton", "tilelang"]
    layer: LayerSpec
    fla: AliasSpec = AliasSpec()
