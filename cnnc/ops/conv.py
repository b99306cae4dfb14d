"""Convolution and transposed convolution."""

from __future__ import annotations

from . import (Attr, OpDef, ParamSpec, ShapeError, k_bool, k_int, k_pads, k_pair, non_negative, positive,
               register)
from .spatial import resolve_pads, window_out


def _conv_shape(shapes, attrs, ctx):
    (x,) = shapes
    if len(x) != 3:
        raise ShapeError(f"conv needs a (N, C, H, W) input, found rank {len(x) + 1}",
                         "convolutions take feature maps; use dense() for vectors", code="E302")
    cin, h, w = x
    groups, filters = attrs["groups"], attrs["filters"]
    if cin % groups:
        raise ShapeError(f"groups={groups} does not divide the {cin} input channels",
                         f"choose groups among the divisors of {cin}", code="E203")
    if filters % groups:
        raise ShapeError(f"groups={groups} does not divide filters={filters}", code="E203")
    k, s, d = attrs["kernel"], attrs["stride"], attrs["dilation"]
    t, l, b, r = resolve_pads(attrs, "padding", (h, w), k, s, d)
    oh = window_out(h, t, b, k[0], s[0], d[0], False, "height (rows)", ctx)
    ow = window_out(w, l, r, k[1], s[1], d[1], False, "width (columns)", ctx)
    return (filters, oh, ow)


def _conv_params(shapes, attrs):
    cin = shapes[0][0]
    k = attrs["kernel"]
    ps = [ParamSpec("weight", (attrs["filters"], cin // attrs["groups"], k[0], k[1]), init="he")]
    if attrs["bias"]:
        ps.append(ParamSpec("bias", (attrs["filters"],), init="zeros"))
    return ps


def _conv_macs(shapes, out, attrs):
    cin = shapes[0][0]
    k = attrs["kernel"]
    return out[0] * out[1] * out[2] * (cin // attrs["groups"]) * k[0] * k[1]


register(OpDef(
    name="conv",
    doc="2-D convolution. conv(filters, kernel, stride=1, padding=0, dilation=1, groups=1, bias=true); "
        "padding: int, (h, w), (top, left, bottom, right) or \"same\".",
    attrs=[
        Attr("filters", k_int, checks=(positive,), doc="number of output channels"),
        Attr("kernel", k_pair, checks=(positive,), doc="kernel size, int or (h, w)"),
        Attr("stride", k_pair, 1, (positive,)),
        Attr("padding", k_pads, 0, (non_negative,)),
        Attr("dilation", k_pair, 1, (positive,)),
        Attr("groups", k_int, 1, (positive,)),
        Attr("bias", k_bool, True),
    ],
    shape=_conv_shape, params=_conv_params, macs=_conv_macs, reference="conv2d", category="conv",
), aliases=("conv2d",))


def _convt_shape(shapes, attrs, ctx):
    (x,) = shapes
    if len(x) != 3:
        raise ShapeError(f"conv_transpose needs a (N, C, H, W) input, found rank {len(x) + 1}", code="E302")
    cin, h, w = x
    groups, filters = attrs["groups"], attrs["filters"]
    if cin % groups:
        raise ShapeError(f"groups={groups} does not divide the {cin} input channels", code="E203")
    if filters % groups:
        raise ShapeError(f"groups={groups} does not divide filters={filters}", code="E203")
    k, s, d, op = attrs["kernel"], attrs["stride"], attrs["dilation"], attrs["output_padding"]
    pads = attrs.pop("padding") if "padding" in attrs else attrs["pads"]
    if isinstance(pads, str):
        raise ShapeError("conv_transpose takes explicit padding, not \"same\"/\"valid\"", code="E203")
    attrs["pads"] = pads
    for i, axis in enumerate(("height", "width")):
        if op[i] >= s[i] and op[i] >= d[i]:
            raise ShapeError(f"output_padding {op[i]} must be smaller than the stride or the dilation "
                             f"along the {axis}", code="E203")
    oh = (h - 1) * s[0] - pads[0] - pads[2] + d[0] * (k[0] - 1) + op[0] + 1
    ow = (w - 1) * s[1] - pads[1] - pads[3] + d[1] * (k[1] - 1) + op[1] + 1
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"conv_transpose output would be {oh}x{ow}: padding too large for the input",
                         code="E301")
    return (filters, oh, ow)


def _convt_params(shapes, attrs):
    cin = shapes[0][0]
    k = attrs["kernel"]
    ps = [ParamSpec("weight", (cin, attrs["filters"] // attrs["groups"], k[0], k[1]), init="he_transpose")]
    if attrs["bias"]:
        ps.append(ParamSpec("bias", (attrs["filters"],), init="zeros"))
    return ps


def _convt_macs(shapes, out, attrs):
    cin, h, w = shapes[0]
    k = attrs["kernel"]
    return cin * h * w * (attrs["filters"] // attrs["groups"]) * k[0] * k[1]


register(OpDef(
    name="conv_transpose",
    doc="2-D transposed convolution. conv_transpose(filters, kernel, stride=1, padding=0, "
        "output_padding=0, dilation=1, groups=1, bias=true).",
    attrs=[
        Attr("filters", k_int, checks=(positive,)),
        Attr("kernel", k_pair, checks=(positive,)),
        Attr("stride", k_pair, 1, (positive,)),
        Attr("padding", k_pads, 0, (non_negative,)),
        Attr("output_padding", k_pair, 0, (non_negative,)),
        Attr("dilation", k_pair, 1, (positive,)),
        Attr("groups", k_int, 1, (positive,)),
        Attr("bias", k_bool, True),
    ],
    shape=_convt_shape, params=_convt_params, macs=_convt_macs, reference="conv_transpose2d",
    category="conv",
), aliases=("deconv", "conv_transpose2d"))
