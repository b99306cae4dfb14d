"""Pooling: max/average windows, global and adaptive pools."""

from __future__ import annotations

from . import (Attr, OpDef, ShapeError, k_bool, k_pads, k_pair, non_negative, positive, register)
from .spatial import resolve_pads, window_out


def _need_map(op, x):
    if len(x) != 3:
        raise ShapeError(f"{op} needs a (N, C, H, W) input, found rank {len(x) + 1}", code="E302")


def _pool_shape(op):
    def rule(shapes, attrs, ctx):
        (x,) = shapes
        _need_map(op, x)
        c, h, w = x
        k = attrs["kernel"]
        if attrs["stride"] is None:
            attrs["stride"] = k
        s = attrs["stride"]
        d = attrs.get("dilation", (1, 1))
        t, l, b, r = resolve_pads(attrs, "padding", (h, w), k, s, d)
        for p, kk, dd, axis in ((max(t, b), k[0], d[0], "height"), (max(l, r), k[1], d[1], "width")):
            if 2 * p > (kk - 1) * dd + 1:
                raise ShapeError(f"{op} padding {p} along the {axis} is more than half the window {kk}",
                                 "a window made only of padding has no input to pool", code="E203")
        oh = window_out(h, t, b, k[0], s[0], d[0], attrs["ceil_mode"], "height (rows)", ctx)
        ow = window_out(w, l, r, k[1], s[1], d[1], attrs["ceil_mode"], "width (columns)", ctx)
        return (c, oh, ow)
    return rule


def k_opt_pair(v, name):
    return None if v is None else k_pair(v, name)


register(OpDef(
    name="maxpool",
    doc="Max pooling; padding is -inf. maxpool(kernel, stride=kernel, padding=0, dilation=1, ceil_mode=false).",
    attrs=[
        Attr("kernel", k_pair, checks=(positive,)),
        Attr("stride", k_opt_pair, None, (lambda v, n: v is None or positive(v, n),)),
        Attr("padding", k_pads, 0, (non_negative,)),
        Attr("dilation", k_pair, 1, (positive,)),
        Attr("ceil_mode", k_bool, False),
    ],
    shape=_pool_shape("maxpool"), reference="max_pool2d", category="pool",
), aliases=("max_pool", "maxpool2d"))

register(OpDef(
    name="avgpool",
    doc="Average pooling. avgpool(kernel, stride=kernel, padding=0, ceil_mode=false, count_include_pad=true).",
    attrs=[
        Attr("kernel", k_pair, checks=(positive,)),
        Attr("stride", k_opt_pair, None, (lambda v, n: v is None or positive(v, n),)),
        Attr("padding", k_pads, 0, (non_negative,)),
        Attr("ceil_mode", k_bool, False),
        Attr("count_include_pad", k_bool, True),
    ],
    shape=_pool_shape("avgpool"), reference="avg_pool2d", category="pool",
), aliases=("avg_pool", "avgpool2d"))


def _global_shape(op):
    def rule(shapes, attrs, ctx):
        (x,) = shapes
        _need_map(op, x)
        return (x[0], 1, 1)
    return rule


register(OpDef(name="global_avgpool", doc="Mean over H and W: (N, C, H, W) -> (N, C, 1, 1).",
               shape=_global_shape("global_avgpool"), reference="global_avg_pool", category="pool"),
         aliases=("global_avg_pool",))
register(OpDef(name="global_maxpool", doc="Max over H and W: (N, C, H, W) -> (N, C, 1, 1).",
               shape=_global_shape("global_maxpool"), reference="global_max_pool", category="pool"),
         aliases=("global_max_pool",))


def _adaptive_shape(op):
    def rule(shapes, attrs, ctx):
        (x,) = shapes
        _need_map(op, x)
        oh, ow = attrs["size"]
        return (x[0], oh, ow)
    return rule


register(OpDef(name="adaptive_avgpool", doc="Adaptive average pooling to a fixed (h, w) (PyTorch bins).",
               attrs=[Attr("size", k_pair, checks=(positive,))],
               shape=_adaptive_shape("adaptive_avgpool"), reference="adaptive_avg_pool2d", category="pool"),
         aliases=("adaptive_avg_pool",))
register(OpDef(name="adaptive_maxpool", doc="Adaptive max pooling to a fixed (h, w) (PyTorch bins).",
               attrs=[Attr("size", k_pair, checks=(positive,))],
               shape=_adaptive_shape("adaptive_maxpool"), reference="adaptive_max_pool2d", category="pool"),
         aliases=("adaptive_max_pool",))
