"""Layout: depthwise chains stored channel-blocked ("c16": (N, ceil(C/16), H, W, 16)).

A depthwise convolution in the plain NCHW layout works plane by plane and wastes most of its vector
tiles on the small planes of MobileNet and EfficientNet; with 16 channels of a pixel contiguous it is a
vector operation per tap. This pass picks the tensors to store that way, only where every producer and
consumer has a kernel for it, so no reorder is ever needed:

Requires: shapes inferred; run after the fusion passes (it reads the final producers and consumers).
Guarantees: an output gets the attribute `layout` = "c16" only in these chains --
  P -> D -> consumers, where D is a depthwise convolution (groups == input channels == output channels)
  whose input comes from a dense convolution P (groups == 1, no residual) used by nothing else; then P
  and D both write c16, provided every consumer of D is a 1x1 stride-1 unpadded dense convolution
  reading it as its input, a global average pool, or a channel multiply (squeeze-and-excitation: D times a
  (C, 1, 1) tensor) whose own consumers are all such convolutions (the multiply then writes c16 too).
  Nothing that is a network output is blocked. When D pads its input, P also gets `halo` = D's pads
  (top, left, bottom, right): P's output is stored inside a zero border that wide, written by P, so D
  reads its padding where it lies. The attributes only say how a target may store the tensor: the
  values (and the reference target, which ignores them) are unchanged.
"""

from __future__ import annotations

C16 = "c16"


def _dense_conv(d: dict) -> bool:
    return d["op"] == "conv" and d["attrs"].get("groups", 1) == 1 and not d["attrs"].get("residual")


def _reads_blocked(graph, tensor: str, user: str, blocked_muls: list[str]) -> bool:
    """Whether `user` can read `tensor` channel-blocked (collecting multiplies that then write blocked)."""
    d = graph.node(user)
    if d["op"] == "conv":
        a = d["attrs"]
        return (d["inputs"][0] == tensor and tensor not in d["inputs"][1:] and a.get("groups", 1) == 1
                and tuple(a["kernel"]) == (1, 1) and tuple(a["stride"]) == (1, 1) and not any(a["pads"]))
    if d["op"] == "global_avgpool":
        return True
    if d["op"] == "mul" and len(d["inputs"]) == 2 and d["inputs"].count(tensor) == 1:
        other = graph.node(d["inputs"][1 - d["inputs"].index(tensor)])["shape"]
        channels = graph.node(tensor)["shape"][0]
        if tuple(other) != (channels, 1, 1) or user in graph.outputs.values():
            return False
        if all(_reads_blocked(graph, user, u, blocked_muls) for u in graph.users(user)):
            blocked_muls.append(user)
            return True
    return False


def run(graph, ctx) -> bool:
    changed = False
    for name in graph.op_nodes():
        d = graph.node(name)
        a = d["attrs"]
        if d["op"] != "conv" or a.get("layout") or a.get("residual"):
            continue
        channels = graph.node(d["inputs"][0])["shape"][0]
        if not (a.get("groups", 1) == channels == d["shape"][0] and channels > 1):
            continue
        producer = d["inputs"][0]
        p = graph.node(producer)
        if not _dense_conv(p) or p["attrs"].get("layout") or graph.single_user(producer) != name:
            continue
        if name in graph.outputs.values():
            continue
        blocked_muls: list[str] = []
        if not all(_reads_blocked(graph, name, u, blocked_muls) for u in graph.users(name)):
            continue
        for node in (producer, name, *blocked_muls):
            graph.node(node)["attrs"]["layout"] = C16
        if any(a["pads"]):  # D reads its padding from a zero halo around P's output: no bounds tests
            p["attrs"]["halo"] = tuple(a["pads"])
        changed = True
    return changed
