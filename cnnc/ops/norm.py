"""Normalisation: batchnorm (inference form) and local response normalisation."""

from __future__ import annotations

from . import Attr, OpDef, ParamSpec, ShapeError, k_bool, k_float, k_int, positive, register


def _bn_shape(shapes, attrs, ctx):
    (x,) = shapes
    if len(x) not in (1, 3):
        raise ShapeError(f"batchnorm needs (N, C) or (N, C, H, W), found rank {len(x) + 1}", code="E302")
    return x


def _bn_params(shapes, attrs):
    c = shapes[0][0]
    ps = []
    if attrs["affine"]:
        ps += [ParamSpec("weight", (c,), init="ones"), ParamSpec("bias", (c,), init="zeros")]
    ps += [ParamSpec("running_mean", (c,), learnable=False, init="zeros"),
           ParamSpec("running_var", (c,), learnable=False, init="ones")]
    return ps


register(OpDef(
    name="batchnorm",
    doc="Batch normalisation with running statistics (inference). batchnorm(eps=1e-5, affine=true); "
        "weights: weight, bias, running_mean, running_var.",
    attrs=[Attr("eps", k_float, 1e-5, (positive,)), Attr("affine", k_bool, True)],
    shape=_bn_shape, params=_bn_params, reference="batchnorm", category="norm",
), aliases=("bn", "batchnorm2d"))


def _lrn_shape(shapes, attrs, ctx):
    (x,) = shapes
    if len(x) != 3:
        raise ShapeError(f"lrn needs a (N, C, H, W) input, found rank {len(x) + 1}", code="E302")
    return x


register(OpDef(
    name="lrn",
    doc="Local response normalisation across channels (AlexNet): "
        "x / (k + alpha / size * sum of squares over size channels) ** beta.",
    attrs=[Attr("size", k_int, checks=(positive,)), Attr("alpha", k_float, 1e-4), Attr("beta", k_float, 0.75),
           Attr("k", k_float, 1.0)],
    shape=_lrn_shape, reference="lrn", category="norm",
), aliases=("local_response_norm",))


def _affine_params(shapes, attrs):
    c = shapes[0][0]
    ps = []
    if attrs["scale"]:
        ps.append(ParamSpec("weight", (c,), init="ones"))
    if attrs["shift"]:
        ps.append(ParamSpec("bias", (c,), init="zeros"))
    return ps


def _affine_shape(shapes, attrs, ctx):
    (x,) = shapes
    if len(x) not in (1, 3):
        raise ShapeError(f"affine needs (N, C) or (N, C, H, W), found rank {len(x) + 1}", code="E302")
    if not attrs["scale"] and not attrs["shift"]:
        raise ShapeError("affine with neither scale nor shift does nothing", code="E203")
    return x


register(OpDef(
    name="affine",
    doc="Per-channel scale and shift: x * weight[c] + bias[c]. affine(scale=true, shift=true). "
        "(What a batchnorm becomes once its statistics are folded; ONNX import maps constant Mul/Add to it.)",
    attrs=[Attr("scale", k_bool, True), Attr("shift", k_bool, True)],
    shape=_affine_shape, params=_affine_params, reference="batchnorm", category="norm",
), aliases=("scale_shift",))
