"""`cnnc inspect` renderings of a compiled graph: a per-layer table, JSON, and Graphviz dot."""

from __future__ import annotations

import json

from .graph import Graph
from .ops import fmt_shape, numel


def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:g} {unit}".rstrip()


def rows(graph: Graph, depth: int | None = None) -> list[dict]:
    """One row per op node, or with `depth`, one row per block instance at that depth."""
    out: list[dict] = []
    index: dict[str, dict] = {}
    for name in graph.nodes():
        d = graph.node(name)
        if d["op"] == "input":
            out.append({"name": name, "op": "input", "shape": d["shape"], "params": 0, "macs": 0, "layers": 1})
            continue
        scope = d["scope"]
        if depth is not None and len(scope) >= depth:
            prefix, block, _ = scope[depth - 1]
            row = index.get(prefix)
            if row is None:
                row = {"name": prefix, "op": block, "shape": None, "params": 0, "macs": 0, "layers": 0}
                index[prefix] = row
                out.append(row)
        else:
            row = {"name": name, "op": d["op"], "shape": None, "params": 0, "macs": 0, "layers": 0}
            out.append(row)
        row["shape"] = d["shape"]
        row["params"] += graph.node_params(name)
        row["macs"] += graph.node_macs(name)
        row["layers"] += 1
    return out


def table(graph: Graph, depth: int | None = None, compiled: tuple[dict, str] | None = None) -> str:
    """The per-layer table and totals. The memory line is that of `compiled` (a plan and how it was compiled,
    e.g. "-O2"): the plan that runs, whose fused steps have fewer tensors than the graph as written; without
    it, of the graph itself."""
    rs = rows(graph, depth)
    headers = ("name", "op", "output shape", "params", "MACs")
    body = [(r["name"], r["op"] + (f" ({r['layers']} layers)" if r["layers"] > 1 else ""), fmt_shape(r["shape"]),
             f"{r['params']:,}", f"{r['macs']:,}") for r in rs]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = []
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    lines.append(fmt(headers))
    lines.append("  ".join("-" * w for w in widths))
    lines += [fmt(b) for b in body]
    lines.append("  ".join("-" * w for w in widths))
    params = graph.parameters()
    buffers = sum(numel(c.shape) for c in graph.constants.values() if not c.learnable)
    macs = graph.macs()
    act = graph.activation_bytes()
    lines.append(f"network {graph.name}: {len(graph.op_nodes())} layers, inputs "
                 + ", ".join(f"{n} {fmt_shape(graph.node(n)['shape'])}" for n in graph.inputs)
                 + "; outputs " + ", ".join(f"{k} {fmt_shape(graph.node(v)['shape'])}" for k, v in graph.outputs.items()))
    lines.append(f"parameters: {params:,} learnable ({_human(params)})"
                 + (f" + {buffers:,} buffer values" if buffers else "")
                 + f"; weights {_human(4 * (params + buffers), 'B')} as float32")
    lines.append(f"MACs per sample: {macs:,} ({_human(macs)})")
    plan, label = compiled or (_plan(graph), "as shown")
    memory = plan["memory"]
    lines.append(f"activation memory per sample: {_human(act, 'B')} (every tensor above, no reuse)")
    lines.append(f"compiled {label}: {len(plan['steps'])} steps, their outputs {_human(4 * memory['no_reuse'], 'B')} "
                 f"with no reuse, in a planned arena of {_human(4 * memory['per_sample'], 'B')}")
    return "\n".join(lines) + "\n"


def to_json(graph: Graph, plan: dict | None = None) -> dict:
    """The graph as JSON; the memory figures `plan_*` are those of `plan` (default: the graph's own)."""
    plan = plan or _plan(graph)
    nodes = []
    for name in graph.nodes():
        d = graph.node(name)
        span = d["span"]
        nodes.append({
            "name": name, "op": d["op"], "inputs": d["inputs"],
            "shape": ["N", *d["shape"]] if d["shape"] is not None else None,
            "attrs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(d["attrs"].items())},
            "params": d["params"], "macs": graph.node_macs(name),
            "block": [s[0] for s in d["scope"]],
            "source": f"{span.path}:{span.line}:{span.column}" if span else None,
        })
    return {
        "network": graph.name,
        "inputs": [{"name": n, "shape": ["N", *graph.node(n)["shape"]]} for n in graph.inputs],
        "outputs": [{"name": k, "node": v, "shape": ["N", *graph.node(v)["shape"]]} for k, v in graph.outputs.items()],
        "parameters": graph.parameters(),
        "buffers": sum(numel(c.shape) for c in graph.constants.values() if not c.learnable),
        "macs": graph.macs(),
        "activation_bytes": graph.activation_bytes(),
        "plan_steps": len(plan["steps"]),
        "plan_no_reuse_bytes": 4 * plan["memory"]["no_reuse"],
        "arena_bytes": 4 * plan["memory"]["per_sample"],
        "weights": [{"name": c.name, "shape": list(c.shape), "learnable": c.learnable}
                    for c in graph.constants.values()],
        "nodes": nodes,
    }


def _plan(graph: Graph) -> dict:
    from .plan import from_graph
    return from_graph(graph)


def json_text(graph: Graph, plan: dict | None = None) -> str:
    return json.dumps(to_json(graph, plan), indent=1) + "\n"


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(*lines: str) -> str:
    """A dot string whose lines are separated by dot's own \\n escape."""
    return '"' + "\\n".join(x.replace("\\", "\\\\").replace('"', '\\"') for x in lines) + '"'


def dot(graph: Graph) -> str:
    """Graphviz: one box per layer, a cluster per block instance, edges labelled with shapes."""
    lines = [f"digraph {_q(graph.name)} {{", "  rankdir=TB;", '  node [shape=box, fontname="monospace", fontsize=10];']
    tree: dict = {"children": {}, "nodes": [], "label": None}
    for name in graph.nodes():
        d = graph.node(name)
        t = tree
        for prefix, block, _ in d["scope"]:
            t = t["children"].setdefault(prefix, {"children": {}, "nodes": [], "label": f"{prefix}: {block}"})
        t["nodes"].append(name)
    counter = [0]

    def emit(t, indent):
        for n in t["nodes"]:
            d = graph.node(n)
            label = _label(n, f"{d['op']} {fmt_shape(d['shape'])}")
            style = ", style=rounded" if d["op"] == "input" else ""
            lines.append(f"{indent}{_q(n)} [label={label}{style}];")
        for prefix, child in t["children"].items():
            counter[0] += 1
            lines.append(f"{indent}subgraph cluster_{counter[0]} {{")
            lines.append(f"{indent}  label={_q(child['label'])}; style=dashed;")
            emit(child, indent + "  ")
            lines.append(f"{indent}}}")
    emit(tree, "  ")
    for name in graph.nodes():
        for src in graph.node(name)["inputs"]:
            lines.append(f"  {_q(src)} -> {_q(name)};")
    for out, node in graph.outputs.items():
        lines.append(f"  {_q('output:' + out)} [shape=oval];")
        lines.append(f"  {_q(node)} -> {_q('output:' + out)};")
    lines.append("}")
    return "\n".join(lines) + "\n"
