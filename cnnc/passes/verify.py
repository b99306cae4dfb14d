"""The verifier, run between passes (always on in tests).

Requires: nothing. Guarantees (or raises an internal error naming the pass that broke it): the graph
is acyclic; each node's `inputs` list and its incoming edges agree; every node has an op known to the
registry (or "input") and a shape; every parameter a node names is a declared constant owned by it;
every graph output names an existing node; node order is topological.
"""

from __future__ import annotations

import networkx as nx

from ..ops import lookup


class VerifyError(RuntimeError):
    pass


def run(graph, after: str) -> None:
    g = graph.g

    def fail(msg):
        raise VerifyError(f"graph invalid after pass '{after}': {msg}")

    if not nx.is_directed_acyclic_graph(g):
        fail("cycle: " + " -> ".join(str(e[0]) for e in nx.find_cycle(g)))
    position = {n: i for i, n in enumerate(g.nodes)}
    for n, d in g.nodes(data=True):
        if d["op"] != "input" and lookup(d["op"]) is None:
            fail(f"node {n} has unknown op {d['op']}")
        if d["shape"] is None:
            fail(f"node {n} has no shape")
        edges = sorted((k, u) for u, _, k in g.in_edges(n, keys=True))
        if [u for _, u in edges] != d["inputs"] or [k for k, _ in edges] != list(range(len(d["inputs"]))):
            fail(f"node {n}: inputs {d['inputs']} disagree with its edges {edges}")
        for src in d["inputs"]:
            if position[src] >= position[n]:
                fail(f"node {n} comes before its input {src}")
        for role, cname in d["params"].items():
            c = graph.constants.get(cname)
            if c is None or c.owner != n or c.role != role:
                fail(f"node {n} names parameter {cname} that it does not own")
    for cname, c in graph.constants.items():
        if c.owner not in g or g.nodes[c.owner]["params"].get(c.role) != cname:
            fail(f"constant {cname} belongs to no node")
    for out, n in graph.outputs.items():
        if n not in g:
            fail(f"output {out} names missing node {n}")
