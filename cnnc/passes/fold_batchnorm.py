"""Freeze and fold: batchnorm into the convolution or dense layer before it.

Requires: shapes inferred. Guarantees: every batchnorm whose input is a conv, conv_transpose or dense
used by nothing else (and not a network output) is removed; its four weights move to that layer under
roles `bn_weight`, `bn_bias`, `bn_running_mean`, `bn_running_var` with the layer attribute `bn_eps`.
Weight names are unchanged, so weight files still match; the runtime folds the values once at load
time (w' = w * gamma / sqrt(var + eps) per output channel, b' = (b - mean) * gamma / sqrt(var + eps) +
beta), and the reference target applies the batchnorm after the layer exactly as written. A batchnorm
that follows anything else, or a layer already carrying an activation, is left alone.
"""

from __future__ import annotations

FOLDABLE = {"conv", "conv_transpose", "dense"}


def run(graph, ctx) -> bool:
    changed = False
    for name in graph.live_op_nodes():
        d = graph.node(name)
        if d["op"] != "batchnorm" or not d["attrs"].get("affine", True):
            continue
        src = d["inputs"][0]
        s = graph.node(src)
        if s["op"] not in FOLDABLE or "act" in s["attrs"] or "bn_eps" in s["attrs"]:
            continue
        if graph.single_user(src) != name:
            continue
        s["attrs"]["bn_eps"] = d["attrs"]["eps"]
        graph.move_params(name, src, "bn_")
        graph.replace_uses(name, src)
        graph.remove_node(name)
        changed = True
    return changed
