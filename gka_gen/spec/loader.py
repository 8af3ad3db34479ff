"""Load a spec file into a validated `Spec`: fields, identifiers, expressions, shapes."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pydantic
import sympy

from ..errors import SpecError
from . import expr as E
from .schema import SpecFile
from .yaml_io import read_yaml

RESERVED_DIMS = {"B", "T", "H", "N", "I"}


@dataclass(frozen=True)
class Spec:
    """A spec that passed every check. Expressions are parsed and shape-checked."""

    file: SpecFile
    path: str
    update: dict[str, E.Node]
    readout: dict[str, E.Node]  # ordered: later statements may use earlier names
    shapes: dict[str, tuple[str, str]] = field(repr=False)
    hash: str = ""

    @property
    def name(self) -> str:
        return self.file.name

    def kind_of(self, name: str) -> str:
        f = self.file
        for kind, table in (("input", f.inputs), ("gate", f.gates), ("param", f.params), ("state", f.states)):
            if name in table:
                return kind
        if name in f.dims:
            return "dim"
        return "readout"


def load_spec(path: str | Path) -> Spec:
    """Read, validate and parse ``path``. Raises SpecError (with the file) on any problem."""
    path = str(path)
    return spec_from_dict(read_yaml(path), path=path)


def spec_from_dict(data: dict, *, path: str = "<spec>") -> Spec:
    try:
        return _build(data, path)
    except SpecError as e:
        raise e.at(file=path) from None


def _build(data: dict, path: str) -> Spec:
    try:
        sf = SpecFile.model_validate(data)
    except pydantic.ValidationError as e:
        raise _from_pydantic(e) from None
    shapes = _check_declarations(sf)
    update = _check_update(sf, shapes)
    readout = _check_readout(sf, shapes)
    _check_solver(sf, readout)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Spec(file=sf, path=path, update=update, readout=readout, shapes=shapes, hash=digest)


def _from_pydantic(e: pydantic.ValidationError) -> SpecError:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "<top>"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif "input" in err and err["type"].endswith("_type"):
        msg = f"{msg} (got {type(err['input']).__name__})"
    more = f" (and {len(e.errors()) - 1} more problems)" if len(e.errors()) > 1 else ""
    return SpecError(msg + more, field=loc)


def _dims_shape(shape: list[str], sf: SpecFile, *, field: str, rank: tuple[int, ...]) -> tuple[str, str]:
    if len(shape) not in rank:
        raise SpecError(f"shape {shape} must have {' or '.join(map(str, rank))} dimensions", field=field)
    for d in shape:
        if d not in sf.dims:
            raise SpecError(f"unknown dimension {d!r} (declared: {', '.join(sf.dims)})", field=field)
    if len(shape) == 0:
        return E.SCALAR
    if len(shape) == 1:
        return (shape[0], "1")
    return (shape[0], shape[1])


def _check_declarations(sf: SpecFile) -> dict[str, tuple[str, str]]:
    E.check_identifier(sf.name, E.IDENT, what="spec name", field="name")
    E.check_identifier(sf.layer.class_name, E.CLASS_IDENT, what="layer class", field="layer.class")
    for key in ("chunk", "fused_recurrent"):
        alias = getattr(sf.fla, key)
        if alias is not None:
            E.check_identifier(alias, E.IDENT, what="alias", field=f"fla.{key}")
    for d, spec in sf.dims.items():
        E.check_identifier(d, E.DIM_IDENT, what="dimension", field=f"dims.{d}")
        if d in RESERVED_DIMS:
            raise SpecError(f"dimension name {d!r} is reserved (B, T, H, N, I are the op's own)", field=f"dims.{d}")
        if spec.min > spec.max:
            raise SpecError("min is larger than max", field=f"dims.{d}")

    shapes: dict[str, tuple[str, str]] = {}
    owner: dict[str, str] = {}

    def declare(name, table, pattern, what, shape):
        fld = f"{table}.{name}"
        E.check_identifier(name, pattern, what=what, field=fld)
        if name in owner or name in sf.dims:
            raise SpecError(f"{name!r} is already declared in {owner.get(name, 'dims')}", field=fld)
        owner[name] = table
        shapes[name] = shape

    for n, s in sf.inputs.items():
        declare(n, "inputs", E.IDENT, "input name", _dims_shape(s.shape, sf, field=f"inputs.{n}.shape", rank=(1,)))
    for n, s in sf.gates.items():
        declare(n, "gates", E.IDENT, "gate name", _dims_shape(s.shape, sf, field=f"gates.{n}.shape", rank=(0, 1)))
    for n, s in sf.params.items():
        rank = (1,) if s.type == "head_tensor" else (0,)
        declare(n, "params", E.IDENT, "param name", _dims_shape(s.shape, sf, field=f"params.{n}.shape", rank=rank))
    for n, s in sf.states.items():
        declare(n, "states", E.STATE_IDENT, "state name", _dims_shape(s.shape, sf, field=f"states.{n}.shape", rank=(2,)))

    for n, g in sf.gates.items():
        fld = f"gates.{n}.default"
        if g.optional and g.default is None:
            raise SpecError("an optional gate needs a default (a number or another gate)", field=fld)
        if isinstance(g.default, str):
            if g.default not in sf.gates or g.default == n:
                raise SpecError(f"default {g.default!r} must be a number or another gate", field=fld)
            if sf.gates[g.default].shape != g.shape:
                raise SpecError(f"default gate {g.default!r} has a different shape", field=fld)
            if sf.gates[g.default].space != g.space:
                raise SpecError(f"default gate {g.default!r} lives in a different space", field=fld)
    for n, p in sf.params.items():
        fld = f"params.{n}.default"
        if p.type == "head_tensor":
            if p.default is not None:
                raise SpecError("a head_tensor param has no default", field=fld)
            continue
        if p.default is None:
            continue
        if p.type == "int" and not isinstance(p.default, int):
            raise SpecError("an int param needs an integer default", field=fld)
        if isinstance(p.default, str):
            node = E.parse_expr(p.default, field=fld)
            unknown = E.names(node) - set(sf.dims)
            if unknown:
                raise SpecError(f"a default may only use the dims, not {sorted(unknown)}", field=fld)
            if E.calls(node):
                raise SpecError("a default may not call functions", field=fld)
    return shapes


def _check_update(sf: SpecFile, shapes) -> dict[str, E.Node]:
    if set(sf.update) != set(sf.states):
        missing = sorted(set(sf.states) - set(sf.update))
        extra = sorted(set(sf.update) - set(sf.states))
        what = f"missing an equation for {missing}" if missing else f"{extra} are not declared states"
        raise SpecError(what, field="update")
    # The update sees inputs, gates, scalar params and the states.
    env = {n: s for n, s in shapes.items() if sf.params.get(n) is None or sf.params[n].type != "head_tensor"}
    parsed = {}
    for n, text in sf.update.items():
        fld = f"update.{n}"
        node = E.parse_expr(text, field=fld)
        if any(c.fn in ("solve", "fro") for c in E.calls(node)):
            raise SpecError("solve() and fro() belong in the readout, not in a state update", field=fld)
        got = E.infer_shape(node, env, field=fld)
        if got != shapes[n]:
            raise SpecError(
                f"the right-hand side is {E.shape_text(got)} but state {n} is {E.shape_text(shapes[n])}", field=fld
            )
        parsed[n] = node
    return parsed


def _check_readout(sf: SpecFile, shapes) -> dict[str, E.Node]:
    if not sf.readout:
        raise SpecError("the readout needs at least the output 'o'", field="readout")
    keys = list(sf.readout)
    if keys[-1] != "o":
        raise SpecError(f"the last readout statement must define 'o' (found {keys[-1]!r})", field="readout")
    env = dict(shapes)
    parsed = {}
    for n, text in sf.readout.items():
        fld = f"readout.{n}"
        E.check_identifier(n, E.IDENT, what="readout name", field=fld)
        if n in env:
            raise SpecError(f"{n!r} is already declared; readout names must be new", field=fld)
        node = E.parse_expr(text, field=fld)
        env[n] = E.infer_shape(node, env, field=fld)
        parsed[n] = node
    o_shape = env["o"]
    if o_shape[1] != "1" or o_shape[0] == "1":
        raise SpecError(f"the output must be a column vector, got {E.shape_text(o_shape)}", field="readout.o")
    shapes.update({n: env[n] for n in parsed})
    return parsed


def _check_solver(sf: SpecFile, readout) -> None:
    uses_solve = any(c.fn == "solve" for node in readout.values() for c in E.calls(node))
    if uses_solve and sf.solver is None:
        raise SpecError("the readout calls solve(); state the solver (method, iters)", field="solver")
    if not uses_solve and sf.solver is not None:
        raise SpecError("a solver is given but the readout never calls solve()", field="solver")
    if sf.solver is None:
        return
    it = sf.solver.iters
    if isinstance(it, int):
        if not 1 <= it <= 1000:
            raise SpecError("iters must be between 1 and 1000", field="solver.iters")
    elif it not in sf.params or sf.params[it].type != "int":
        raise SpecError(f"iters {it!r} must be an integer or the name of an int param", field="solver.iters")


def default_value(text: str | int | float, dims: dict[str, int]) -> float:
    """Evaluate a param default (a number or an expression in the dims) for concrete dims."""
    if not isinstance(text, str):
        return text
    node = E.parse_expr(text, field="default")

    values = {d: sympy.Integer(v) for d, v in dims.items()}
    return float(E.Lowering(values)(node))

