"""Layout: depthwise and dense chains stored channel-blocked ("c16": (N, ceil(C/16), H, W, 16)).

A depthwise convolution in the plain NCHW layout works plane by plane and wastes most of its vector
tiles on the small planes of MobileNet and EfficientNet; with 16 channels of a pixel contiguous it is a
vector operation per tap. A dense convolution reads and writes whole vectors in this layout, reads its
padding from a zero halo instead of copying its input, and a max pool is a vector operation per tap
(ResNet-50's convolutions together: 18.5 -> 16.6 ms at batch 1 in isolation). This pass picks the tensors
to store that way, only where every producer and consumer has a kernel for it, so no reorder is ever needed:

Requires: shapes inferred; run after the fusion passes (it reads the final producers and consumers).
Guarantees: an output gets the attribute `layout` = "c16" only in these chains --
  P -> D -> consumers, where D is a depthwise convolution (groups == input channels == output channels)
  whose input comes from a dense convolution P (groups == 1, no residual) used by nothing else; then P
  and D both write c16, provided every consumer of D is a 1x1 stride-1 unpadded dense convolution
  reading it as its input, a global average pool, or a channel multiply (squeeze-and-excitation: D times a
  (C, 1, 1) tensor) whose own consumers are all such convolutions (the multiply then writes c16 too).
  Nothing that is a network output is blocked. When D pads its input, P also gets `halo` = D's pads
  (top, left, bottom, right): P's output is stored inside a zero border that wide, written by P, so D
  reads its padding where it lies.

Dense chains (ResNet, VGG, GoogLeNet, DenseNet): a dense convolution writes its output in this layout,
and its consumers read it without reorders, when a convolution's output T is read only by
  - dense convolutions, as their input (any kernel, stride, padding or dilation) -- except those the CPU
    target computes with Winograd (``runtime/winograd_plan.applies``), whose input and output stay plain;
  - dense convolutions as the residual they add, whose own output is then blocked too, in the same halo
    (the kernel reads the residual where it stores the output, often in the same buffer);
  - max pools, whose output is then blocked too (each inside its own halo) unless its readers need the plain
    layout: then the pool reads the blocked layout and writes the plain one (AlexNet's last pool, before the
    flatten: its convolution stores whole vectors, and AlexNet no longer compiles the plain pool kernel, which
    took 5 s of its cold start);
  - nearest upsamples, whose output is then blocked too (their input and output are blocked together, each
    inside its own halo);
  - transposed convolutions (groups == 1), as their input: they read either layout;
  - average pools and batchnorms (or per-channel affine maps), with their fused activation, blocked
    together with their input the same way, where neither needs a halo (DenseNet's BN-ReLU before each
    bottleneck and transition, the transitions' pools);
  - global average pools, if T needs no halo;
  - channel concatenations (axis 1) of inputs that are all blocked and all whole blocks (multiples of 16
    channels), whose output is then blocked too. Each input is a run of the output's blocks, inside the
    output's halo (made equal across a concatenation and its inputs), so the memory plan can place it there
    and its producer writes it in place (GoogLeNet's inceptions: every branch and every reader blocked);
but not by the expansion convolution of a depthwise chain: MobileNet-V2's and EfficientNet-B0's trunks
between the chains stay plain (blocked, the projections gained what the expansions, then reading the
blocked layout, lost: both networks ran 5-15% slower in alternating runs).
The output of a pool, upsample, batchnorm or concatenation is blocked under the same rule, and so is a
transposed convolution's (groups == 1): a 1x1 convolution writing blocked per-tap products, then a gather
into place (U-Net's upsampling writes its run of the concatenation's blocks; DCGAN's generator is blocked up
to its last layer, which reads the blocked layout and writes the plain one). The candidates are
narrowed to a fixed point (a tensor leaves when a consumer it depends on does). T's `halo` is the widest
padding of each side among its convolution consumers, so that each reads its padding in place (one with
less padding starts further inside the halo), widened to match across residual pairs and concatenations.
Nothing that is a network output, or whose consumers include a view, add or any other op, is blocked.
The attributes only say how a target may store the tensor: the values (and the reference target, which
ignores them) are unchanged.
"""

from __future__ import annotations

from ..runtime import winograd_plan

C16 = "c16"


# Ops whose output is blocked together with their input (kernels for the blocked layout in and out only),
# and those of them whose kernels read and write no halo.
_BLOCKED_WITH_INPUT = frozenset({"maxpool", "avgpool", "batchnorm", "affine", "upsample"})
_NO_HALO = frozenset({"avgpool", "batchnorm", "affine"})


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
    changed = _depthwise_chains(graph)
    return _dense_chains(graph) or changed


def _depthwise_chains(graph) -> bool:
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


def _winograd(graph, name: str) -> bool:
    """Whether the CPU target computes convolution `name` with Winograd (plain layout in and out)."""
    d = graph.node(name)
    a = d["attrs"]
    cin = graph.node(d["inputs"][0])["shape"][0]
    weight_shape = (d["shape"][0], cin // a.get("groups", 1), *a["kernel"])
    return winograd_plan.applies(weight_shape, a.get("groups", 1), a["stride"], a["dilation"], d["shape"][1:])


def _dense_chains(graph) -> bool:
    """The dense-chain rule of the module docstring."""
    outputs = set(graph.outputs.values())

    def producer_kind(name: str) -> str | None:
        d = graph.node(name)
        if name in outputs or len(d["shape"]) != 3 or d["attrs"].get("layout") or tuple(d["shape"][1:]) == (1, 1):
            return None  # (a 1x1 plane: squeeze-and-excitation's matrix-vector products stay plain)
        if d["op"] == "conv" and d["attrs"].get("groups", 1) == 1 and not _winograd(graph, name):
            return "conv"
        if d["op"] in _BLOCKED_WITH_INPUT:
            return d["op"]
        if d["op"] == "conv_transpose" and d["attrs"].get("groups", 1) == 1:
            return "conv_transpose"
        ins = d["inputs"]
        if (d["op"] == "concat" and d["attrs"]["axis"] == 1 and len(set(ins)) == len(ins)
                and all(graph.node(t)["shape"][0] % 16 == 0 for t in ins)):
            return "concat"  # (whole blocks per input: each is a run of the output's blocks)
        return None

    blocked = {n for n in graph.op_nodes() if producer_kind(n)}

    def is_blocked(t: str) -> bool:  # (also by an earlier run or the depthwise rule)
        return t in blocked or graph.node(t).get("attrs", {}).get("layout") == C16

    def consumers_allow(t: str) -> bool:
        for u in graph.users(t):
            d = graph.node(u)
            ins = d["inputs"]
            if d["op"] == "conv" and d["attrs"].get("groups", 1) == 1 and not _winograd(graph, u):
                if ins.count(t) != 1 or (d["attrs"].get("layout") == C16 and u not in blocked):
                    return False  # (an expansion of a depthwise chain reads the plain layout)
                if ins.index(t) == 1 and not is_blocked(u):  # the residual: blocked with the output
                    return False
            elif d["op"] == "maxpool":
                pass  # (its output blocked too, or plain where its readers need that)
            elif d["op"] in _BLOCKED_WITH_INPUT or d["op"] == "concat":
                if not is_blocked(u):
                    return False
            elif d["op"] == "conv_transpose":
                if d["attrs"].get("groups", 1) != 1:
                    return False
            elif d["op"] != "global_avgpool":
                return False
        return True

    def producer_allows(t: str) -> bool:
        d = graph.node(t)
        if d["op"] in _BLOCKED_WITH_INPUT:
            return is_blocked(d["inputs"][0])
        if d["op"] == "concat":
            return all(t in blocked for t in d["inputs"])
        if d["attrs"].get("residual"):  # (its skip's halo is made equal to the output's below)
            return d["inputs"][1] in blocked
        return True

    while True:  # narrow to a fixed point, then check the halos a global pool cannot read past
        while True:
            drop = {t for t in blocked if not (consumers_allow(t) and producer_allows(t))}
            if not drop:
                break
            blocked -= drop
        halos = _halos(graph, blocked)
        drop = {t for t in blocked if any(halos[t]) and (graph.node(t)["op"] in _NO_HALO or any(
            graph.node(u)["op"] in _NO_HALO or graph.node(u)["op"] == "global_avgpool" for u in graph.users(t)))}
        if not drop:
            break
        blocked -= drop
    for t in blocked:
        graph.node(t)["attrs"]["layout"] = C16
        if any(halos[t]):
            graph.node(t)["attrs"]["halo"] = halos[t]
    return bool(blocked)


def _halos(graph, blocked: set[str]) -> dict[str, tuple[int, int, int, int]]:
    """Each blocked tensor's halo: the widest padding per side among the convolutions reading it as their
    input, made equal (widest of both) across a residual convolution's skip and output, and across a
    concatenation and its inputs (they are runs of its blocks, in one buffer)."""
    halos = {}
    for t in blocked:
        pads = [graph.node(u)["attrs"]["pads"] for u in graph.users(t)
                if graph.node(u)["op"] == "conv" and graph.node(u)["inputs"][0] == t]
        halos[t] = tuple(max((p[i] for p in pads), default=0) for i in range(4))
    pairs = [(t, graph.node(t)["inputs"][1]) for t in blocked
             if graph.node(t)["op"] == "conv" and graph.node(t)["attrs"].get("residual")]
    pairs += [(t, i) for t in blocked if graph.node(t)["op"] == "concat" for i in graph.node(t)["inputs"]]
    changed = True
    while changed:
        changed = False
        for t, r in pairs:
            both = tuple(max(a, b) for a, b in zip(halos[t], halos[r]))
            if halos[t] != both or halos[r] != both:
                halos[t] = halos[r] = both
                changed = True
    return halos
