"""The graph IR: a networkx MultiDiGraph of op nodes; edges carry tensors.

A node is keyed by its hierarchical instance name (`layer1.0.conv1`) and holds:
  op      the registry name ("conv"), or "input"
  attrs   normalised attributes (padding resolved into `pads`, ...)
  inputs  the ordered list of producer node names (edges mirror it, keyed by input index)
  shape   per-sample output shape (the batch N is implicit and symbolic)
  params  {role: constant name} for its weights (`weight` -> "layer1.0.conv1.weight")
  span    the source span of the statement that created it
  scope   the block instances it sits in, outermost first: [(prefix, block name, span), ...]

Graph-level data (`g.graph`): `name`, `inputs` (ordered input node names), `input_info`
({name: {shape, mean, std, ...}}), `outputs` ({output name: node name}), and `constants`: an ordered
{name: Constant} of parameters and buffers, in definition order (this order is the weights order).
Nodes are kept in creation order, which is a topological order; passes preserve it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import networkx as nx

from .errors import Span
from .ops import fmt_shape, lookup, numel


@dataclass
class Constant:
    name: str
    shape: tuple
    learnable: bool
    owner: str  # node name
    role: str
    init: str


class Graph:
    def __init__(self, name: str):
        self.g = nx.MultiDiGraph(name=name, inputs=[], input_info={}, outputs={}, constants={})

    # ---- construction
    @property
    def name(self) -> str:
        return self.g.graph["name"]

    @property
    def constants(self) -> dict[str, Constant]:
        return self.g.graph["constants"]

    @property
    def outputs(self) -> dict[str, str]:
        return self.g.graph["outputs"]

    @property
    def inputs(self) -> list[str]:
        return self.g.graph["inputs"]

    def add_node(self, name: str, op: str, attrs: dict, inputs: list[str], span: Span | None,
                 scope: list, shape=None) -> str:
        assert name not in self.g, name
        self.g.add_node(name, op=op, attrs=attrs, inputs=list(inputs), shape=shape, params={}, span=span,
                        scope=list(scope))
        for i, src in enumerate(inputs):
            self.g.add_edge(src, name, key=i)
        return name

    def add_constant(self, node: str, role: str, shape: tuple, learnable: bool, init: str) -> str:
        cname = f"{node}.{role}"
        self.constants[cname] = Constant(cname, tuple(shape), learnable, node, role, init)
        self.g.nodes[node]["params"][role] = cname
        return cname

    def set_inputs(self, node: str, inputs: list[str]) -> None:
        for src in set(self.g.nodes[node]["inputs"]):
            while self.g.has_edge(src, node):
                self.g.remove_edge(src, node)
        self.g.nodes[node]["inputs"] = list(inputs)
        for i, src in enumerate(inputs):
            self.g.add_edge(src, node, key=i)

    def remove_node(self, name: str) -> None:
        for role, cname in self.g.nodes[name]["params"].items():
            self.constants.pop(cname, None)
        self.g.remove_node(name)

    def move_params(self, src: str, dst: str, prefix: str) -> None:
        """Hand `src`'s weights to `dst` under roles `prefix + role`; the weight names do not change
        (weight files keep matching), only which node uses them."""
        for role, cname in list(self.g.nodes[src]["params"].items()):
            c = self.constants[cname]
            c.owner, c.role = dst, prefix + role
            self.g.nodes[dst]["params"][prefix + role] = cname
        self.g.nodes[src]["params"] = {}

    def move_before(self, name: str, anchor: str) -> None:
        """Place node `name` just before `anchor` in node order (which passes keep topological)."""
        order = [n for n in self.g.nodes if n != name]
        order.insert(order.index(anchor), name)
        moved = nx.MultiDiGraph(**self.g.graph)
        moved.add_nodes_from((n, self.g.nodes[n]) for n in order)
        moved.add_edges_from(self.g.edges(keys=True, data=True))
        self.g = moved

    def live_op_nodes(self):
        """The op nodes in order as they are now, each skipped once removed: for a pass that removes nodes as it
        goes."""
        return (name for name in self.op_nodes() if name in self.g)

    def single_user(self, name: str) -> str | None:
        """The only consumer of `name`, if it has exactly one and is not a graph output."""
        users = self.users(name)
        if len(users) != 1 or name in self.outputs.values():
            return None
        if self.g.nodes[users[0]]["inputs"].count(name) != 1:
            return None
        return users[0]

    def replace_uses(self, old: str, new: str) -> None:
        """Make every consumer (and graph output) of `old` read `new` instead."""
        for user in list(self.g.successors(old)):
            self.set_inputs(user, [new if i == old else i for i in self.g.nodes[user]["inputs"]])
        for k, v in self.outputs.items():
            if v == old:
                self.outputs[k] = new

    # ---- queries
    def nodes(self) -> list[str]:
        return list(self.g.nodes)

    def node(self, name: str) -> dict:
        return self.g.nodes[name]

    def users(self, name: str) -> list[str]:
        return list(dict.fromkeys(self.g.successors(name)))

    def op_nodes(self) -> list[str]:
        return [n for n in self.g.nodes if self.g.nodes[n]["op"] != "input"]

    def parameters(self) -> int:
        return sum(numel(c.shape) for c in self.constants.values() if c.learnable)

    def macs(self) -> int:
        return sum(self.node_macs(n) for n in self.op_nodes())

    def node_macs(self, name: str) -> int:
        d = self.g.nodes[name]
        op = lookup(d["op"])
        if op is None or d["shape"] is None:
            return 0
        shapes = [self.g.nodes[i]["shape"] for i in d["inputs"]]
        return int(op.macs(shapes, d["shape"], d["attrs"]))

    def node_params(self, name: str) -> int:
        return sum(numel(self.constants[c].shape) for c in self.g.nodes[name]["params"].values()
                   if self.constants[c].learnable)

    def activation_bytes(self) -> int:
        """Bytes of every tensor the network produces, per sample, float32, with no reuse."""
        return 4 * sum(numel(self.g.nodes[n]["shape"]) for n in self.g.nodes if self.g.nodes[n]["shape"])

    # ---- printing
    def dump(self) -> str:
        """Deterministic text form: one node per line, in topological (creation) order."""
        lines = [f"network {self.name}"]
        for name in self.inputs:
            lines.append(f"  input {name}: {fmt_shape(self.g.nodes[name]['shape'])}")
        for name in self.op_nodes():
            d = self.g.nodes[name]
            attrs = ", ".join(f"{k}={_fmt_value(v)}" for k, v in sorted(d["attrs"].items()))
            params = "".join(f" [{role} {self.constants[c].shape}]" for role, c in d["params"].items())
            ins = ", ".join(d["inputs"])
            where = f"  # {os.path.basename(d['span'].path)}:{d['span'].line}" if d["span"] else ""
            lines.append(f"  {name} = {d['op']}({ins}{'; ' + attrs if attrs else ''}) -> "
                         f"{fmt_shape(d['shape'])}{params}{where}")
        for k, v in self.outputs.items():
            lines.append(f"  output {k} = {v}")
        return "\n".join(lines) + "\n"


def _fmt_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt_value(x) for x in v) + ")"
    if v is None:
        return "none"
    return str(v)
