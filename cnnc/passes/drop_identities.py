"""Inference identities: `dropout` (the identity at inference), `identity`, and adaptive pools whose output
size is their input's (AlexNet's 6x6 average pool after a 6x6 map) are removed.

Requires: shapes inferred. Guarantees: every such node is gone and its readers (and the network outputs it
was) read its input instead -- except one that is a network output and whose input is a network input or
another output, which stays (an output is the result of an op, and its own tensor). The function is
unchanged. The CPU target ran dropout and identity as views of their input already; the adaptive pool was a
copy (0.02 ms in AlexNet). A dropout no longer separates a layer from an activation that could be fused into
it. `cnnc inspect` and the ONNX export show the network as written (after `dce`), dropout included.
"""

from __future__ import annotations

IDENTITIES = frozenset({"dropout", "identity"})
ADAPTIVE_POOLS = frozenset({"adaptive_avgpool", "adaptive_maxpool"})


def _identity(graph, d: dict) -> bool:
    if d["op"] in IDENTITIES:
        return True
    return d["op"] in ADAPTIVE_POOLS and tuple(d["shape"]) == tuple(graph.node(d["inputs"][0])["shape"])


def run(graph, ctx) -> bool:
    changed = False
    for name in list(graph.op_nodes()):
        d = graph.node(name)
        if not _identity(graph, d):
            continue
        source = d["inputs"][0]
        outputs = set(graph.outputs.values())  # (as earlier removals left them)
        if name in outputs and (graph.node(source)["op"] == "input" or source in outputs):
            continue  # (an output stays its own tensor, not another output's or the input's)
        graph.replace_uses(name, source)
        graph.remove_node(name)
        changed = True
    return changed
