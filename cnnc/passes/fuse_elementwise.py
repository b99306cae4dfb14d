"""Elementwise chains: a run of activations, adds and muls, each the only reader of the one before, runs as one op.

Requires: shapes inferred; run after fuse_activation and fuse_residual (an activation that a producing kernel
applies, or an add that a convolution accumulates, is no longer a separate op, and is not chained again).
Guarantees: wherever a node is an activation (relu, relu6, clip, leaky_relu, sigmoid, tanh, silu, hardswish,
hardsigmoid) or a two-operand add or mul, and its value is read only by the next such node (not a network
output, not twice), the run of them becomes one `eltwise_chain` node at the place and under the name of its
last node, so that no intermediate tensor is stored: the chain's first input is the value that flows down the
chain (the first node's input, or for a first add or mul its full-sized operand), each later add or mul
combines it with one other input of the same shape, one value per channel (C, 1, 1) or one value (1, ..., 1),
and `chain` lists the stages in order: (op, its attributes as a sorted tuple, the index of the other input or
-1), an op's fused activation as a stage of its own. At most `MAX_SIDES` other inputs per chain (a longer
run becomes several chains). The kernels run the stages block by block over each channel plane, so each
element is loaded and stored once; the reference target runs the ops one after another.
"""

from __future__ import annotations

from .fuse_activation import ACTIVATIONS

BINARY = {"add", "mul"}
MAX_SIDES = 3  # other inputs of one chain (the CPU kernel takes this many operand arrays)


def side_fits(side: tuple, value: tuple) -> bool:
    """Whether an operand of shape `side` broadcasts onto a value of shape `value` the way the kernels
    broadcast: the same shape, one value per channel (C, 1, 1), or one value."""
    side, value = tuple(side), tuple(value)
    if side == value or (len(side) <= len(value) and all(d == 1 for d in side)):
        return True
    return len(side) == len(value) > 1 and side[0] == value[0] and all(d == 1 for d in side[1:])


def _stages(graph, name: str, flowing: str | None = None) -> tuple[list, list[str]] | None:
    """A chain-capable node as (stages, inputs): its own chain, or the stages it would make as the first
    node of one, an add or mul carrying `flowing` where it can (None where it cannot be in a chain)."""
    d = graph.node(name)
    if d["op"] == "eltwise_chain":
        return list(d["attrs"]["chain"]), list(d["inputs"])
    act = [(d["attrs"]["act"][0], d["attrs"]["act"][1], -1)] if "act" in d["attrs"] else []
    if d["op"] in ACTIVATIONS:
        return [(d["op"], tuple(sorted(d["attrs"].items())), -1)] + act, [d["inputs"][0]]
    if d["op"] in BINARY and len(d["inputs"]) == 2 and d["inputs"][0] != d["inputs"][1]:
        shapes = [tuple(graph.node(i)["shape"]) for i in d["inputs"]]
        order = ((1, 0), (0, 1)) if d["inputs"][1] == flowing else ((0, 1), (1, 0))  # (add and mul commute)
        for first, other in order:
            if shapes[first] == tuple(d["shape"]) and side_fits(shapes[other], shapes[first]):
                return [(d["op"], (), 1)] + act, [d["inputs"][first], d["inputs"][other]]
    return None


def run(graph, ctx) -> bool:
    changed = False
    for name in graph.live_op_nodes():
        d = graph.node(name)
        if d["op"] not in ACTIVATIONS | BINARY:
            continue
        # the node before it in the chain: the value it reads, made by a chain-capable node read by it alone
        for prev in dict.fromkeys(d["inputs"]):
            mine = _stages(graph, name, prev)
            if mine is None or graph.single_user(prev) != name or mine[1][0] != prev:
                continue
            own_stages, own_inputs = mine
            before = _stages(graph, prev)
            if before is None:
                continue
            stages, inputs = before
            if len(inputs) - 1 + len(own_inputs) - 1 > MAX_SIDES:
                continue
            for op, attrs, other in own_stages:  # renumber this node's other input after the chain's
                stages.append((op, attrs, len(inputs) if other >= 0 else -1))
                if other >= 0:
                    inputs.append(own_inputs[other])
            d["op"], d["attrs"] = "eltwise_chain", {"chain": tuple(stages)}
            graph.set_inputs(name, inputs)
            graph.remove_node(prev)
            changed = True
            break
    return changed
