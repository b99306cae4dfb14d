"""Residual fusion: the skip-connection add runs inside the convolution that produces one operand.

Requires: shapes inferred; run after fuse_activation (so an add's own activation is already its `act`).
Guarantees: every `add` of exactly two operands of its own shape (no broadcast), one of which is a dense
convolution (groups == 1) with no activation of its own, used by nothing but this add and placed after the
other operand in node order, is removed; that convolution gets the attribute `residual` = true, the other
operand as its second input, and the add's activation as its `act`. The result is
act(bn(conv(x)) + skip): bias and folded batchnorm first, then the skip, then the activation -- exactly the
unfused order. The memory planner may then let the convolution write into the skip's buffer when the skip
dies there (the kernels read each skip element before writing that element).
"""

from __future__ import annotations


def _candidate(graph, add: str, operand: str, other: str, position: dict) -> bool:
    d = graph.node(operand)
    return (d["op"] == "conv" and d["attrs"].get("groups", 1) == 1 and "act" not in d["attrs"]
            and "residual" not in d["attrs"] and graph.single_user(operand) == add
            and position[other] < position[operand])


def run(graph, ctx) -> bool:
    changed = False
    position = {n: i for i, n in enumerate(graph.nodes())}
    for name in list(graph.op_nodes()):
        d = graph.node(name)
        if d["op"] != "add" or len(d["inputs"]) != 2 or d["inputs"][0] == d["inputs"][1]:
            continue
        a, b = d["inputs"]
        if not (graph.node(a)["shape"] == graph.node(b)["shape"] == d["shape"]):
            continue
        # Prefer the operand computed last: the other one is then ready when the convolution runs.
        for conv, skip in sorted(((a, b), (b, a)), key=lambda pair: -position[pair[0]]):
            if _candidate(graph, name, conv, skip, position):
                break
        else:
            continue
        c = graph.node(conv)
        c["attrs"]["residual"] = True
        if "act" in d["attrs"]:
            c["attrs"]["act"] = d["attrs"]["act"]
        graph.set_inputs(conv, [c["inputs"][0], skip])
        graph.replace_uses(name, conv)
        graph.remove_node(name)
        changed = True
    return changed
