"""Dead-code elimination.

Requires: a verified graph with outputs. Guarantees: every op node that no graph output depends on is
removed together with its parameters; inputs are kept (they are the network's interface) even when
unused; a removed layer that had weights is reported as a warning (W101), since it usually means a
mistake in the spec. Returns whether anything was removed.
"""

from __future__ import annotations

import networkx as nx

from ..errors import Diagnostic


def run(graph, ctx) -> bool:
    live = set()
    for node in graph.outputs.values():
        live.add(node)
        live |= nx.ancestors(graph.g, node)
    dead = [n for n in graph.op_nodes() if n not in live]
    for n in dead:
        d = graph.node(n)
        if d["params"]:
            ctx.warnings.append(Diagnostic("W101", f"layer {n} ({d['op']}) feeds no output and was removed, "
                                           "with its weights", d["span"],
                                           "name it in an `output` statement if it is meant to be one",
                                           severity="warning"))
        graph.remove_node(n)
    return bool(dead)
