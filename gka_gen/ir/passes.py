"""Passes over the IR: shape/dtype inference, fusion into kernels, scheduling, cost.

Fusion is a table per (family, direction): kernel name -> the op kinds it runs (``kind`` or
``kind@role`` for recompute / adjoint clones of forward kinds). ``FOLLOWERS`` (``grad_add``)
join the kernel of their consumer, else of their latest producer. The kernel graph must be a
DAG (no kernel needs a value a later kernel makes); the schedule is its topological order,
ties broken by table order.
"""
from __future__ import annotations

import networkx as nx
import sympy

from .core import Graph, IRError, Kernel, Program
from .ops import DTYPE_BYTES, NT, OP_KINDS, C, T, dim

FUSION: dict[tuple[str, str], list[tuple[str, list[str]]]] = {
    ("linear", "forward"): [
        ("chunk_prepare", ["gate_cumsum", "gate_scale", "masked_kkt", "tri_solve", "wy_recompute"]),
        ("chunk_state", ["state_scan"]),
        ("chunk_output", ["chunk_output"]),
    ],
    ("linear", "backward"): [
        ("chunk_bwd_prepare", ["wy_recompute@recompute", "gate_scale@recompute"]),
        ("chunk_bwd_state", ["state_scan@recompute"]),
        ("chunk_bwd_dhu", ["output_grad_local", "output_grad_state", "reverse_state_scan"]),
        ("chunk_bwd_dqkwg", ["output_grad_qkg", "state_scan_grad"]),
        ("chunk_bwd_wy", ["wy_grad", "tri_solve_grad", "kkt_grad"]),
        ("chunk_bwd_gates", ["gate_scale_grad", "reverse_cumsum"]),
    ],
    ("ridge", "forward"): [
        ("chunk_state", ["gate_cumsum", "state_scan"]),
        ("chunk_solve_readout", ["fro_norm", "chebyshev_solve", "cg_solve", "exact_solve", "alpha_mix",
                                 "chunk_readout"]),
    ],
    ("ridge", "backward"): [
        ("chunk_bwd_state", ["gate_cumsum@recompute", "state_scan@recompute"]),
        ("chunk_bwd_solve", ["alpha_mix@recompute", "output_grad_qkg", "mix_grad", "chebyshev_solve@adjoint",
                             "cg_solve@adjoint", "exact_solve@adjoint", "solve_grad", "fro_norm_grad",
                             "output_grad_state", "output_grad_local"]),
        ("chunk_bwd_dhu", ["reverse_state_scan"]),
        ("chunk_bwd_dqkv", ["state_scan_grad"]),
        ("chunk_bwd_gates", ["reverse_cumsum"]),
    ],
}
FOLLOWERS = {"grad_add"}


# ----------------------------------------------------------------------------- shapes


def _template(t: str, attrs: dict, where: str) -> tuple[str, ...]:
    try:
        text = t.format(**attrs)
    except KeyError as e:
        raise IRError(f"{where}: shape template {t!r} needs attribute {e}") from None
    return tuple(s.strip() for s in text.split(",") if s.strip())


def infer_shapes(graph: Graph) -> None:
    """Propagate shapes and dtypes through ``graph``, checking every input against its op's rule."""
    for name in graph.ops():
        n = graph.node(name)
        kind = OP_KINDS[n["kind"]]
        attrs = n["attrs"]
        for port, v in n["inputs"].items():
            t = kind.inputs.get(port, kind.inputs.get(port + "?", kind.inputs.get("*")))
            want = _template(t, attrs, f"{name}.{port}")
            got = graph.val(v)["shape"]
            if got is None:
                raise IRError(f"{name}: input {port}={v} has no shape (is it produced?)")
            if tuple(got) != want:
                raise IRError(f"{name} ({n['kind']}): input {port}={v} has shape [{','.join(got)}], "
                              f"expected [{','.join(want)}]")
        for port, v in n["outputs"].items():
            t, dt, _ = kind.outputs[port]
            shape = _template(t, attrs, f"{name}.{port}")
            dtype = graph.val(n["inputs"][dt[5:]])["dtype"] if dt.startswith("like:") else dt
            d = graph.val(v)
            if d["shape"] is not None and (tuple(d["shape"]) != shape or d["dtype"] != dtype):
                raise IRError(f"{name}: output {v} is [{','.join(d['shape'])}] {d['dtype']}, rule says "
                              f"[{','.join(shape)}] {dtype}")
            d["shape"], d["dtype"] = shape, dtype
    for v in graph.values():
        if graph.val(v)["shape"] is None:
            raise IRError(f"value {v} has no shape after inference")


# ----------------------------------------------------------------------------- fusion and schedule


def _group_of(n: dict, table: list) -> str | None:
    keys = (f"{n['kind']}@{n['role']}", n["kind"])
    for key in keys:
        for gname, kinds in table:
            if key in kinds:
                return gname
    return None


def fuse(graph: Graph, family: str) -> list[Kernel]:
    """Assign every op a kernel; return the kernels in schedule order."""
    table = FUSION[(family, graph.direction)]
    rank = {g: i for i, (g, _) in enumerate(table)}
    deps = graph.op_deps()
    followers = []
    for name in graph.ops():
        n = graph.node(name)
        if n["kind"] in FOLLOWERS:
            followers.append(name)
            continue
        g = _group_of(n, table)
        if g is None:
            raise IRError(f"{graph.direction}: no kernel for op {name} ({n['kind']}, {n['role']})")
        n["kernel"] = g

    def leaders(op, way):
        """Non-follower ops reached from op through followers (way: predecessors / successors)."""
        out, stack, seen = [], list(getattr(deps, way)(op)), set()
        while stack:
            x = stack.pop()
            if x in seen:
                continue
            seen.add(x)
            if graph.node(x)["kind"] in FOLLOWERS:
                stack.extend(getattr(deps, way)(x))
            else:
                out.append(x)
        return out

    prelim = nx.DiGraph()
    prelim.add_nodes_from({graph.node(o)["kernel"] for o in graph.ops() if graph.node(o)["kernel"]})
    for a, b in deps.edges:
        if graph.node(a)["kind"] in FOLLOWERS or graph.node(b)["kind"] in FOLLOWERS:
            continue
        ka, kb = graph.node(a)["kernel"], graph.node(b)["kernel"]
        if ka != kb:
            prelim.add_edge(ka, kb)
    for f in followers:
        for p in leaders(f, "predecessors"):
            for s in leaders(f, "successors"):
                ka, kb = graph.node(p)["kernel"], graph.node(s)["kernel"]
                if ka != kb:
                    prelim.add_edge(ka, kb)
    if not nx.is_directed_acyclic_graph(prelim):
        raise IRError(f"{graph.direction}: the kernel grouping has a cycle: {nx.find_cycle(prelim)}")
    order = {k: i for i, k in enumerate(nx.lexicographical_topological_sort(prelim, key=lambda k: rank[k]))}
    for f in followers:
        cons = leaders(f, "successors")
        prods = leaders(f, "predecessors")
        if cons:
            graph.node(f)["kernel"] = min((graph.node(c)["kernel"] for c in cons), key=order.get)
        elif prods:
            graph.node(f)["kernel"] = max((graph.node(p)["kernel"] for p in prods), key=order.get)
        else:
            raise IRError(f"{f} has neither producers nor consumers")

    quotient = nx.DiGraph()
    quotient.add_nodes_from(order)
    for a, b in deps.edges:
        ka, kb = graph.node(a)["kernel"], graph.node(b)["kernel"]
        if ka != kb:
            quotient.add_edge(ka, kb)
    if not nx.is_directed_acyclic_graph(quotient):
        raise IRError(f"{graph.direction}: the kernel graph has a cycle: {nx.find_cycle(quotient)}")
    sched = list(nx.lexicographical_topological_sort(quotient, key=lambda k: rank[k]))
    graph.g.graph["kernel_graph"] = quotient
    kernels = []
    all_ops = graph.ops()
    for k in sched:
        ops = [o for o in all_ops if graph.node(o)["kernel"] == k]
        kernels.append(_kernel_io(graph, k, ops))
    return kernels


def _kernel_io(graph: Graph, name: str, ops: list[str]) -> Kernel:
    inside = set(ops)
    reads, writes = [], []
    for o in ops:
        n = graph.node(o)
        for v in n["inputs"].values():
            p = graph.producer(v)
            if (p is None or p not in inside) and v not in reads:
                reads.append(v)
        for v in n["outputs"].values():
            d = graph.val(v)
            outside = any(c not in inside for c in graph.consumers(v))
            if (outside or d["role"] in ("output", "grad") or d.get("saved")) and v not in writes:
                writes.append(v)
    return Kernel(name, ops, reads, writes)


# ----------------------------------------------------------------------------- cost


class _Dims(dict):
    def __missing__(self, key):
        return dim(key)


def numel(shape) -> sympy.Expr:
    return sympy.Mul(*[dim(s) for s in shape])


def _bytes(graph: Graph, values, io_bytes: int) -> sympy.Expr:
    sizes = {**DTYPE_BYTES, "io": io_bytes}
    return sympy.Add(*[numel(graph.val(v)["shape"]) * sizes[graph.val(v)["dtype"]] for v in values])


def cost(program: Program, subs: dict | None = None, *, io_bytes: int = 2) -> dict:
    """FLOPs and memory traffic, symbolic in B, T, H, C, the spec's dims and iteration params.

    Per op: ``flops`` and ``bytes`` (every tensor it reads or writes, as if run alone). Per
    kernel: ``flops`` and ``bytes`` (only the tensors crossing the kernel boundary: what fusion
    saves shows as the difference). NT is replaced by T / C. With ``subs`` (e.g. ``{"B": 4,
    "T": 4096, "H": 16, "K": 128, "V": 128, "C": 64, "num_iter": 30}``) every number is evaluated.
    """
    def fin(e):
        e = sympy.factor_terms(sympy.expand(sympy.sympify(e).subs(NT, T / C)))
        if subs:
            e = e.subs({sympy.Symbol(k, positive=True, integer=True): v for k, v in subs.items()})
            e = e.subs({sympy.Symbol(k): v for k, v in subs.items()})
        return e

    out = {}
    for direction, graph in program.graphs.items():
        ops = {}
        for o in graph.ops():
            n = graph.node(o)
            f = OP_KINDS[n["kind"]].flops(n["attrs"], _Dims())
            b = _bytes(graph, list(dict.fromkeys(list(n["inputs"].values()) + list(n["outputs"].values()))), io_bytes)
            ops[o] = {"flops": fin(f), "bytes": fin(b), "kernel": n["kernel"]}
        kernels = {}
        for k in program.kernels[direction]:
            kernels[k.name] = {"flops": fin(sympy.Add(*[ops[o]["flops"] for o in k.ops])),
                               "bytes": fin(_bytes(graph, k.reads + k.writes, io_bytes))}
        out[direction] = {"ops": ops, "kernels": kernels,
                          "flops": fin(sympy.Add(*[k["flops"] for k in kernels.values()])),
                          "bytes": fin(sympy.Add(*[k["bytes"] for k in kernels.values()]))}
    out["total"] = {"flops": fin(out["forward"]["flops"] + out["backward"]["flops"]),
                    "bytes": fin(out["forward"]["bytes"] + out["backward"]["bytes"])}
    return out
