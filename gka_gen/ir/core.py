"""IR data: a graph of chunk-level ops and the tensors between them, and the Program.

A graph is a bipartite ``networkx.DiGraph``: op nodes and value (tensor) nodes. Edges go
value -> op (the op reads it; ``ports`` lists the input ports it feeds, one value can feed
two ports, e.g. ``k`` as both key and written vector of the covariance scan) and op -> value
(``port``: which output it is). Node ids: ops by name, values as ``%name``.

Op node attributes: ``type="op"``, ``kind`` (a row of `gka_gen.ir.ops.OP_KINDS`), ``attrs``
(decay, delta, solver settings, dim names ...), ``inputs``/``outputs`` (ordered port ->
value name), ``rule`` and ``proof`` (the lowering or adjoint rule that made it and the
symbolic proof that justifies it), ``role`` (``forward`` | ``recompute`` | ``adjoint``),
``kernel`` (set by the fusion pass), ``index`` (creation order, for deterministic order).
Value node attributes: ``type="value"``, ``name``, ``shape`` (tuple of dim names, set by
shape inference for op outputs), ``dtype`` (``io`` | ``fp32``), ``role`` (``input`` |
``param`` | ``output`` | ``saved`` | ``intermediate`` | ``grad``), ``differentiable``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from .ops import OP_KINDS


class IRError(Exception):
    """The IR is inconsistent (a compiler bug or an unsupported combination), never a spec typo."""


# Conditions under which a conditional output port exists: name -> (attrs, connected inputs) -> bool.
CONDITIONS = {
    "delta": lambda a, ins: bool(a.get("delta")),
    "nodelta": lambda a, ins: not a.get("delta"),
    "decayed": lambda a, ins: "g_cum" in ins,
    "has_beta": lambda a, ins: "beta" in ins,
    "fro": lambda a, ins: a.get("lam_rule") == "fro_ratio",
    "channel": lambda a, ins: a.get("lam_rule") == "channel_param",
}


def vid(name: str) -> str:
    return f"%{name}"


class Graph:
    """Builder and accessors over one direction's ``networkx.DiGraph``."""

    def __init__(self, direction: str):
        self.g = nx.DiGraph(direction=direction)
        self._n = 0

    # ------------------------------------------------------------------ building
    def value(self, name: str, *, shape=None, dtype=None, role="intermediate", **attrs) -> str:
        node = vid(name)
        if node in self.g:
            data = self.g.nodes[node]
            for k, v in (("shape", shape), ("dtype", dtype)):
                if v is not None:
                    data[k] = tuple(v) if k == "shape" else v
            return name
        self.g.add_node(node, type="value", name=name, shape=tuple(shape) if shape is not None else None,
                        dtype=dtype, role=role, index=self._n, **attrs)
        self._n += 1
        return name

    def op(self, name: str, kind: str, inputs: dict, outputs: dict, *, attrs: dict | None = None,
           rule: str, proof: str | None, role: str = "forward") -> str:
        if kind not in OP_KINDS:
            raise IRError(f"unknown op kind {kind!r}")
        if name in self.g:
            raise IRError(f"duplicate op name {name!r}")
        spec = OP_KINDS[kind]
        attrs = dict(attrs or {})
        ins = {p: v for p, v in inputs.items() if v is not None}
        declared = {p.rstrip("?") for p in spec.inputs}
        variadic = "*" in spec.inputs
        for p in ins:
            if p not in declared and not variadic:
                raise IRError(f"{name}: {kind} has no input port {p!r}")
        for p in spec.inputs:
            if not p.endswith("?") and p != "*" and p not in ins:
                raise IRError(f"{name}: required input {p!r} of {kind} is missing")
        active = [p for p, (_, _, cond) in spec.outputs.items() if cond is None or CONDITIONS[cond](attrs, ins)]
        outs = {p: outputs.get(p, f"{name}.{p}") for p in active}
        extra = set(outputs) - set(active)
        if extra:
            raise IRError(f"{name}: {kind} does not produce {sorted(extra)} with attrs {attrs}")
        self.g.add_node(name, type="op", kind=kind, attrs=attrs, inputs=ins, outputs=outs, rule=rule,
                        proof=proof, role=role, kernel=None, index=self._n)
        self._n += 1
        for port, v in ins.items():
            if vid(v) not in self.g:
                raise IRError(f"{name}: input {v!r} is not defined yet")
            e = self.g.get_edge_data(vid(v), name)
            if e:
                e["ports"].append(port)
            else:
                self.g.add_edge(vid(v), name, ports=[port])
        for port, v in outs.items():
            if vid(v) in self.g and self.g.in_degree(vid(v)):
                raise IRError(f"{name}: value {v!r} already has a producer")
            self.value(v)
            self.g.add_edge(name, vid(v), port=port)
        return name

    # ------------------------------------------------------------------ access
    def ops(self) -> list[str]:
        """Op names in a deterministic topological order (ties by creation)."""
        order = nx.lexicographical_topological_sort(self.g, key=lambda n: self._key(n))
        return [n for n in order if self.g.nodes[n]["type"] == "op"]

    def _key(self, n):
        d = self.g.nodes[n]
        return d["index"]

    def values(self) -> list[str]:
        """Value names in creation order."""
        vs = [d for _, d in self.g.nodes(data=True) if d["type"] == "value"]
        return [d["name"] for d in sorted(vs, key=lambda d: d["index"])]

    def node(self, name: str) -> dict:
        return self.g.nodes[name]

    def val(self, name: str) -> dict:
        return self.g.nodes[vid(name)]

    def producer(self, value: str) -> str | None:
        preds = list(self.g.predecessors(vid(value)))
        return preds[0] if preds else None

    def consumers(self, value: str) -> list[str]:
        return sorted(self.g.successors(vid(value)), key=lambda n: self.g.nodes[n]["index"])

    def of_kind(self, kind: str) -> list[str]:
        return [n for n in self.ops() if self.g.nodes[n]["kind"] == kind]

    def op_deps(self) -> nx.DiGraph:
        """The op-level graph: an edge a -> b when b reads a value a writes (label: the values)."""
        d = nx.DiGraph()
        for n in self.ops():
            d.add_node(n)
        for n in self.ops():
            for v in self.g.nodes[n]["outputs"].values():
                for c in self.consumers(v):
                    if d.has_edge(n, c):
                        d.edges[n, c]["values"].append(v)
                    else:
                        d.add_edge(n, c, values=[v])
        return d

    @property
    def direction(self) -> str:
        return self.g.graph["direction"]


@dataclass
class Kernel:
    """One fused kernel: a group of ops run in one launch, and the tensors it moves through memory."""

    name: str
    ops: list[str]
    reads: list[str] = field(default_factory=list)  # values read from memory (made elsewhere or inputs)
    writes: list[str] = field(default_factory=list)  # values written (read by a later kernel or results)


@dataclass
class Program:
    """A lowered spec: forward and backward graphs, their kernels in schedule order."""

    name: str
    family: str
    spec_hash: str
    version: str
    description: str  # the canonical form, as `describe` prints it
    chunk_size: int
    forward: Graph
    backward: Graph
    kernels: dict[str, list[Kernel]] = field(default_factory=dict)  # direction -> kernels in order

    def graph(self, direction: str) -> Graph:
        return {"forward": self.forward, "backward": self.backward}[direction]

    @property
    def graphs(self) -> dict[str, Graph]:
        return {"forward": self.forward, "backward": self.backward}

    def schedule(self, direction: str) -> list[str]:
        """Ops in execution order: kernels in schedule order, ops in order within each kernel."""
        return [op for k in self.kernels[direction] for op in k.ops]

    # ------------------------------------------------------------------ codegen interface
    def header(self) -> str:
        return (f"Generated by gka-gen {self.version} from spec {self.name} (hash {self.spec_hash}). "
                "Do not edit: regenerate with `gka-gen generate`.\n" + self.description)

    def template_dir(self, backend: str) -> str:
        from .context import template_dir

        return template_dir(self, backend)

    def template_context(self, backend: str) -> dict:
        from .context import template_context

        return template_context(self, backend)

    def cost(self, subs: dict | None = None, *, io_bytes: int = 2):
        from .passes import cost

        return cost(self, subs=subs, io_bytes=io_bytes)
