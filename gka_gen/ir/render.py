"""Showing a Program: readable text, graphviz dot, mermaid, and a PNG (matplotlib only)."""
from __future__ import annotations

import re
from pathlib import Path

import networkx as nx

from .core import Program, vid

DIRECTIONS = ("forward", "backward")
ROLE_MARK = {"forward": "", "recompute": " (recompute)", "adjoint": ""}


def _shape(d: dict) -> str:
    return f"[{','.join(d['shape'] or ())}] {d['dtype']}"


def _attrs_text(attrs: dict) -> str:
    keep = {k: v for k, v in attrs.items() if k not in ("K", "V", "R", "Q", "W", "gshape", "shape")}
    return ", ".join(f"{k}={v}" for k, v in keep.items())


def format_program(program: Program) -> str:
    """Both graphs, ops in schedule order grouped by kernel, with shapes, dtypes and proofs."""
    lines = [f"program {program.name}: {program.family} family, spec hash {program.spec_hash}, "
             f"chunk {program.chunk_size}, gka-gen {program.version}"]
    lines += ["  " + line for line in program.description.splitlines()[1:]]
    for direction in DIRECTIONS:
        g = program.graph(direction)
        ks = program.kernels[direction]
        lines.append("")
        lines.append(f"{direction}: {len(g.ops())} ops in {len(ks)} kernels")
        ins = [v for v in g.values() if g.val(v)["role"] in ("input", "saved")]
        for role in ("input", "saved"):
            vs = [v for v in ins if g.val(v)["role"] == role]
            if vs:
                lines.append(f"  {role + 's':7s} " + ", ".join(f"{v}{_shape(g.val(v))}" for v in vs))
        for i, k in enumerate(ks, 1):
            lines.append(f"  kernel {i} {k.name}: reads {', '.join(k.reads)}; writes {', '.join(k.writes)}")
            for op in k.ops:
                n = g.node(op)
                ins_t = ", ".join(f"{p}={v}" for p, v in n["inputs"].items())
                outs_t = ", ".join(f"{v}{_shape(g.val(v))}" for v in n["outputs"].values())
                at = _attrs_text(n["attrs"])
                proof = n["proof"] or "identity"
                lines.append(f"    {op:18s} {n['kind'] + ROLE_MARK[n['role']]:26s} ({ins_t}) -> {outs_t}")
                lines.append(f"    {'':18s} {'':26s} rule {n['rule']}, proof {proof}" + (f"; {at}" if at else ""))
        outs = [v for v in g.values() if g.val(v)["role"] in ("output", "grad")]
        lines.append("  results " + ", ".join(f"{v}{_shape(g.val(v))}" for v in outs))
    c = program.cost()
    lines.append("")
    lines.append("cost (NT = T/C):")
    for direction in DIRECTIONS:
        lines.append(f"  {direction:8s} flops {c[direction]['flops']}")
        lines.append(f"  {'':8s} bytes {c[direction]['bytes']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- dot / mermaid


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(program: Program) -> str:
    """Graphviz dot: one cluster per direction, a sub-cluster per kernel; values as ellipses."""
    out = [f"digraph {_q(program.name)} {{", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
    for direction in DIRECTIONS:
        g = program.graph(direction)
        p = direction[0]  # node id prefix: f / b
        out.append(f"  subgraph {_q('cluster_' + direction)} {{")
        out.append(f"    label={_q(direction)};")
        for i, k in enumerate(program.kernels[direction]):
            out.append(f"    subgraph {_q(f'cluster_{direction}_{i}')} {{")
            out.append(f"      label={_q(k.name)}; style=rounded; color=gray50;")
            for op in k.ops:
                n = g.node(op)
                label = f"{op}\\n{n['kind']}" + (" (recompute)" if n["role"] == "recompute" else "")
                out.append(f"      {_q(p + ':' + op)} [shape=box, style=filled, fillcolor=lightblue, label={_q(label)}];")
            out.append("    }")
        for v in g.values():
            d = g.val(v)
            style = {"input": "lightyellow", "saved": "khaki", "output": "palegreen", "grad": "palegreen"}.get(
                d["role"], "white")
            label = f"{v}\\n{_shape(d)}"
            out.append(f"    {_q(p + ':' + vid(v))} [shape=ellipse, style=filled, fillcolor={style}, label={_q(label)}];")
        for a, b in g.g.edges:
            out.append(f"    {_q(p + ':' + a)} -> {_q(p + ':' + b)};")
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def _mid(prefix: str, node: str) -> str:
    return prefix + "_" + re.sub(r"[^A-Za-z0-9_]", "_", node.replace("%", "v_"))


def _mtext(s: str) -> str:
    return s.replace('"', "'")


def to_mermaid(program: Program) -> str:
    """A mermaid flowchart: a subgraph per direction and per kernel."""
    out = ["flowchart TB"]
    for direction in DIRECTIONS:
        g = program.graph(direction)
        p = direction[0]
        out.append(f"  subgraph {direction}[\"{direction}\"]")
        for i, k in enumerate(program.kernels[direction]):
            out.append(f"    subgraph {p}_k{i}[\"{k.name}\"]")
            for op in k.ops:
                n = g.node(op)
                out.append(f"      {_mid(p, op)}[\"{_mtext(op)}<br/>{n['kind']}\"]")
            out.append("    end")
        for v in g.values():
            out.append(f"    {_mid(p, vid(v))}([\"{_mtext(v)} {_mtext(_shape(g.val(v)))}\"])")
        for a, b in g.g.edges:
            out.append(f"    {_mid(p, a)} --> {_mid(p, b)}")
        out.append("  end")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- PNG


def _layout(g: nx.DiGraph) -> dict:
    """Layered layout: layer = longest path from a source; position within a layer by order."""
    layer = {}
    for n in nx.topological_sort(g):
        layer[n] = max((layer[p] + 1 for p in g.predecessors(n)), default=0)
    rows: dict[int, list] = {}
    for n in sorted(g.nodes, key=lambda n: (layer[n], str(n))):
        rows.setdefault(layer[n], []).append(n)
    pos = {}
    for y, ns in rows.items():
        for x, n in enumerate(ns):
            pos[n] = ((x - (len(ns) - 1) / 2), -y)
    return pos


def draw_png(program: Program, path) -> None:
    """Draw both graphs (ops coloured by kernel, values as small labels) into one PNG."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    fig = Figure(figsize=(22, 14))
    axes = fig.subplots(1, 2)
    cmap = matplotlib.colormaps["tab10"]
    for ax, direction in zip(axes, DIRECTIONS):
        g = program.graph(direction)
        pos = _layout(g.g)
        kernels = [k.name for k in program.kernels[direction]]
        ops = g.ops()
        vals = [vid(v) for v in g.values()]
        nx.draw_networkx_edges(g.g, pos, ax=ax, arrows=True, arrowsize=8, width=0.6, edge_color="gray",
                               node_size=300)
        for i, k in enumerate(kernels):
            members = [o for o in ops if g.node(o)["kernel"] == k]
            nx.draw_networkx_nodes(g.g, pos, nodelist=members, ax=ax, node_shape="s", node_size=500,
                                   node_color=[cmap(i % 10)], label=k)
        nx.draw_networkx_nodes(g.g, pos, nodelist=vals, ax=ax, node_size=40, node_color="lightgray")
        nx.draw_networkx_labels(g.g, pos, labels={o: f"{o}\n{g.node(o)['kind']}" for o in ops}, ax=ax, font_size=6)
        nx.draw_networkx_labels(g.g, {v: (x, y - 0.18) for v, (x, y) in pos.items() if v in vals},
                                labels={vid(v): v for v in g.values()}, ax=ax, font_size=5, font_color="dimgray")
        ax.set_title(f"{program.name} {direction}: {len(ops)} ops, {len(kernels)} kernels")
        ax.legend(loc="lower left", fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(Path(path), dpi=110)
