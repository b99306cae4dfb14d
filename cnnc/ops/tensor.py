"""Data movement: flatten, reshape, concat, upsample, pad, dense (matrix product)."""

from __future__ import annotations

from . import (Attr, AttrError, OpDef, ParamSpec, ShapeError, fmt_shape, k_bool, k_float, k_int, k_ints,
               k_pair, k_str, numel, one_of, positive, register)


def _flatten_shape(shapes, attrs, ctx):
    (x,) = shapes
    start = attrs["start"]
    rank = len(x) + 1
    if start < 0:
        start += rank
    if not 1 <= start < rank:
        raise ShapeError(f"flatten start {attrs['start']} is out of range for a rank-{rank} tensor "
                         "(the batch axis 0 is always kept)", code="E203")
    attrs["start"] = start
    return tuple(x[:start - 1]) + (numel(x[start - 1:]),)


register(OpDef(name="flatten", doc="flatten(start=1): merge axes start.. into one (the batch stays)",
               attrs=[Attr("start", k_int, 1)], shape=_flatten_shape, reference="flatten", category="shape"))


def _reshape_shape(shapes, attrs, ctx):
    (x,) = shapes
    target = list(attrs["shape"])
    if target.count(-1) > 1:
        raise ShapeError("reshape allows at most one -1", code="E203")
    if any(d == 0 or d < -1 for d in target):
        raise ShapeError(f"reshape sizes must be positive (or one -1), found {tuple(target)}", code="E203")
    total = numel(x)
    known = numel([d for d in target if d != -1])
    if -1 in target:
        if total % known:
            raise ShapeError(f"cannot reshape {fmt_shape(x)} ({total} values per sample) into "
                             f"(N, {', '.join(map(str, target))})", code="E300")
        target[target.index(-1)] = total // known
    elif known != total:
        raise ShapeError(f"cannot reshape {fmt_shape(x)} ({total} values per sample) into "
                         f"{fmt_shape(target)} ({known} values)", code="E300")
    attrs["shape"] = tuple(target)
    return tuple(target)


register(OpDef(name="reshape", doc="reshape(shape): new per-sample shape (the batch axis is kept; one -1 allowed)",
               attrs=[Attr("shape", k_ints)], shape=_reshape_shape, reference="reshape", category="shape"))


def _concat_shape(shapes, attrs, ctx):
    rank = len(shapes[0]) + 1
    axis = attrs["axis"]
    if not -rank <= axis < rank or axis % rank == 0:
        raise ShapeError(f"concat axis {axis} is out of range for rank {rank} (the batch axis 0 is not allowed)",
                         code="E203")
    axis = axis % rank
    attrs["axis"] = axis
    first = shapes[0]
    for s in shapes[1:]:
        if len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(first, s)) if i != axis - 1):
            raise ShapeError("concat of tensors whose shapes differ outside the concatenation axis: "
                             + ", ".join(fmt_shape(s) for s in shapes), code="E300")
    out = list(first)
    out[axis - 1] = sum(s[axis - 1] for s in shapes)
    return tuple(out)


register(OpDef(name="concat", doc="concatenate tensors along an axis (1 = channels)", inputs=(1, None),
               attrs=[Attr("axis", k_int, 1)], shape=_concat_shape, reference="concat", category="shape"),
         aliases=("cat",))


def _upsample_shape(shapes, attrs, ctx):
    (x,) = shapes
    if len(x) != 3:
        raise ShapeError(f"upsample needs a (N, C, H, W) input, found rank {len(x) + 1}", code="E302")
    s = attrs["scale"]
    return (x[0], x[1] * s[0], x[2] * s[1])


register(OpDef(name="upsample", doc="nearest-neighbour upsampling by an integer scale, upsample(scale=2)",
               attrs=[Attr("scale", k_pair, 2, (positive,)), Attr("mode", k_str, "nearest", (one_of("nearest"),))],
               shape=_upsample_shape, reference="upsample_nearest", category="shape"))


def k_signed_pads(v, name):
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v, v, v)
    if isinstance(v, (tuple, list)) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        if len(v) == 2:
            return (v[0], v[1], v[0], v[1])
        if len(v) == 4:
            return tuple(v)
    raise AttrError(f"'{name}' must be an integer, (h, w) or (top, left, bottom, right)")


def _pad_shape(shapes, attrs, ctx):
    (x,) = shapes
    if len(x) != 3:
        raise ShapeError(f"pad needs a (N, C, H, W) input, found rank {len(x) + 1}", code="E302")
    t, l, b, r = attrs.pop("padding") if "padding" in attrs else attrs["pads"]
    attrs["pads"] = (t, l, b, r)
    oh, ow = x[1] + t + b, x[2] + l + r
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"padding {attrs['pads']} crops {x[1]}x{x[2]} to nothing", code="E301")
    if attrs["mode"] == "reflect" and (max(t, b) >= x[1] or max(l, r) >= x[2]):
        raise ShapeError("reflect padding must be smaller than the input size", code="E301")
    return (x[0], oh, ow)


register(OpDef(name="pad", doc="pad(padding, value=0, mode=\"constant\"|\"reflect\"|\"replicate\"); negative pads crop",
               attrs=[Attr("padding", k_signed_pads), Attr("value", k_float, 0.0),
                      Attr("mode", k_str, "constant", (one_of("constant", "reflect", "replicate"),))],
               shape=_pad_shape, reference="pad", category="shape"))


def _dense_shape(shapes, attrs, ctx):
    (x,) = shapes
    if len(x) != 1:
        raise ShapeError(f"dense needs a (N, features) input, found {fmt_shape(x)}",
                         "insert flatten() before dense()", code="E302")
    return (attrs["units"],)


def _dense_params(shapes, attrs):
    ps = [ParamSpec("weight", (attrs["units"], shapes[0][0]), init="he")]
    if attrs["bias"]:
        ps.append(ParamSpec("bias", (attrs["units"],), init="zeros"))
    return ps


register(OpDef(name="dense", doc="fully connected layer, dense(units, bias=true); weight (units, in_features)",
               attrs=[Attr("units", k_int, checks=(positive,)), Attr("bias", k_bool, True)],
               shape=_dense_shape, params=_dense_params,
               macs=lambda shapes, out, attrs: shapes[0][0] * attrs["units"], reference="dense", category="dense"),
         aliases=("linear", "fc"))


