"""Pool first: an average pool after a pointwise convolution runs before it, on 1/(stride^2) of the pixels.

A 1x1 convolution (stride 1, no padding) computes each output pixel as the same affine map of that pixel's
channels (weights, bias and a folded batchnorm); an average pool without padding takes each output pixel as
a mean of whole input pixels, with weights summing to one. The two commute: pool(conv(x)) = conv(pool(x)),
exactly in real arithmetic (in float32 the sums are rounded in another order: differences of a few ulps).
Pooling first, the convolution's multiply-adds shrink by the pool's window count ratio: DenseNet-121's three
transitions (1x1 convolution, then a 2x2 stride-2 average pool) drop from 308 to 77 million MACs per sample,
8% of the network's.

Requires: shapes inferred; run after fold_batchnorm and fuse_activation (a batchnorm folded into the
convolution keeps it affine; an activation between the two, fused or not, stops the rewrite).
Guarantees: for every convolution C with a 1x1 kernel, stride 1, no padding, no activation and no residual,
whose only user (C not being a network output) is an average pool P that has no padding and whose windows
all lie inside the image (so no ceil-mode window is clipped), or a global average pool: P reads C's input,
C reads P, and C's users are P's former users (network outputs too).
Both keep their names, attributes, weights and source spans; P now comes before C in node order, and the
shapes are inferred again (P has C's input channels, C P's spatial size).
The values are unchanged up to float rounding; `cnnc inspect` (which shows the network as written) is not
affected, but `--after pool_first` shows the smaller MAC count.
"""

from __future__ import annotations

from . import infer_shapes


def _pointwise(d: dict) -> bool:
    a = d["attrs"]
    return (d["op"] == "conv" and tuple(a["kernel"]) == (1, 1) and tuple(a["stride"]) == (1, 1)
            and not any(a["pads"]) and "act" not in a and not a.get("residual") and len(d["inputs"]) == 1)


def _whole_windows(graph, pool: str) -> bool:
    """Whether `pool` averages whole input pixels with equal weights: a global average pool, or an average
    pool with no padding whose every window lies inside the image."""
    d = graph.node(pool)
    if d["op"] == "global_avgpool":
        return True
    if d["op"] != "avgpool" or any(d["attrs"]["pads"]):
        return False
    (kh, kw), (sh, sw) = d["attrs"]["kernel"], d["attrs"]["stride"]
    _, h, w = graph.node(d["inputs"][0])["shape"]
    _, oh, ow = d["shape"]
    return (oh - 1) * sh + kh <= h and (ow - 1) * sw + kw <= w


def run(graph, ctx) -> bool:
    changed = False
    for conv in list(graph.op_nodes()):
        c = graph.node(conv)
        if not _pointwise(c):
            continue
        pool = graph.single_user(conv)
        if pool is None or not _whole_windows(graph, pool):
            continue
        source = c["inputs"][0]
        graph.replace_uses(pool, conv)  # P's readers (and outputs) now read C ...
        graph.set_inputs(pool, [source])  # ... which reads P, which reads C's input
        graph.set_inputs(conv, [pool])
        graph.move_before(pool, conv)
        changed = True
    if changed:
        infer_shapes.run(graph, ctx)
    return changed
