"""Dead-code elimination.

Requires: a verified graph with outputs. Guarantees: every op node that no graph output depends on is
removed together with its parameters; inputs are kept (they are the network's interface) even when
unused. Returns whether anything was removed.
"""

from __future__ import annotations

import networkx as nx


def run(graph, ctx) -> bool:
    live = set()
    for node in graph.outputs.values():
        live.add(node)
        live |= nx.ancestors(graph.g, node)
    dead = [n for n in graph.op_nodes() if n not in live]
    for n in dead:
        graph.remove_node(n)
    return bool(dead)
