"""Epilogue fusion: an activation runs inside the kernel of the layer that produces its input.

Requires: shapes inferred (run after fold_batchnorm, so conv -> batchnorm -> relu fuses completely).
Guarantees: every activation op whose input comes from a conv, conv_transpose, dense, batchnorm,
affine, add or mul used by nothing else (and not a network output) is removed, and the producer gets
the attribute `act` = (activation op, its attributes as a sorted tuple of (name, value)). The kernels
apply it to each result before storing it; the reference target applies it after the op.
"""

from __future__ import annotations

ACTIVATIONS = {"relu", "relu6", "clip", "leaky_relu", "sigmoid", "tanh", "silu", "hardswish", "hardsigmoid"}
PRODUCERS = {"conv", "conv_transpose", "dense", "batchnorm", "affine", "add", "mul"}


def run(graph, ctx) -> bool:
    changed = False
    for name in graph.live_op_nodes():
        d = graph.node(name)
        if d["op"] not in ACTIVATIONS:
            continue
        src = d["inputs"][0]
        s = graph.node(src)
        if s["op"] not in PRODUCERS or "act" in s["attrs"] or graph.single_user(src) != name:
            continue
        s["attrs"]["act"] = (d["op"], tuple(sorted(d["attrs"].items())))
        graph.replace_uses(name, src)
        graph.remove_node(name)
        changed = True
    return changed
