"""Activations and elementwise arithmetic (with the broadcasting CNNs use)."""

from __future__ import annotations

from . import Attr, OpDef, ShapeError, fmt_shape, in_range, k_float, k_int, k_opt_float, register


def _same(shapes, attrs, ctx):
    return shapes[0]


def _activation(name, doc, reference, attrs=(), aliases=()):
    register(OpDef(name=name, doc=doc, attrs=list(attrs), shape=_same, reference=reference,
                   elementwise=True, category="activation"), aliases=aliases)


_activation("relu", "max(x, 0)", "relu")
_activation("relu6", "min(max(x, 0), 6)", "relu6")
_activation("sigmoid", "1 / (1 + exp(-x))", "sigmoid")
_activation("tanh", "hyperbolic tangent", "tanh")
_activation("silu", "x * sigmoid(x) (swish)", "silu", aliases=("swish",))
_activation("hardswish", "x * relu6(x + 3) / 6", "hardswish")
_activation("hardsigmoid", "clip(alpha * x + beta, 0, 1); PyTorch's alpha=1/6, beta=0.5 by default", "hardsigmoid",
            attrs=[Attr("alpha", k_float, 1 / 6), Attr("beta", k_float, 0.5)])
_activation("leaky_relu", "x if x > 0 else slope * x", "leaky_relu", attrs=[Attr("slope", k_float, 0.01)])
_activation("clip", "min(max(x, min), max)", "clip",
            attrs=[Attr("min", k_opt_float, None), Attr("max", k_opt_float, None)])
_activation("identity", "returns its input", "identity")
_activation("dropout", "identity at inference; p is kept for training", "dropout",
            attrs=[Attr("p", k_float, 0.5, (in_range(0.0, 1.0),))])


def _softmax_shape(shapes, attrs, ctx):
    (x,) = shapes
    rank = len(x) + 1
    axis = attrs["axis"]
    if not -rank <= axis < rank or axis % rank == 0:
        raise ShapeError(f"softmax axis {axis} is out of range for a rank-{rank} tensor "
                         "(axis 0, the batch, is not allowed)", code="E203")
    attrs["axis"] = axis % rank
    return x


register(OpDef(name="softmax", doc="softmax over an axis (1 = channels/features)",
               attrs=[Attr("axis", k_int, 1)], shape=_softmax_shape, reference="softmax",
               category="activation"))


def broadcast(op, shapes):
    """Numpy-style broadcasting of per-sample shapes; refuses mismatched sizes."""
    rank = max(len(s) for s in shapes)
    out = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise ShapeError(f"{op} of tensors with incompatible shapes "
                             + " and ".join(fmt_shape(s) for s in shapes),
                             code="E300")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _binary_shape(op):
    def rule(shapes, attrs, ctx):
        return broadcast(op, shapes)
    return rule


register(OpDef(name="add", doc="elementwise sum of two or more tensors (broadcasting (N,C,1,1) over maps)",
               inputs=(2, None), shape=_binary_shape("add"), reference="add", category="arith"))
register(OpDef(name="mul", doc="elementwise product (broadcasting, e.g. (N,C,1,1) channel scales)",
               inputs=(2, None), shape=_binary_shape("mul"), reference="mul", category="arith"))



def _chain_shape(shapes, attrs, ctx):
    """The first input's shape: the value the chain carries; the other inputs broadcast onto it."""
    out = broadcast("eltwise_chain", shapes)
    if tuple(out) != tuple(shapes[0]):
        raise ShapeError("eltwise_chain: its first input must have the output's shape", code="E300")
    return shapes[0]


# Made by the fuse_elementwise pass: a chain of elementwise ops as one op. `chain`: its stages in order, each
# (op, its attributes as a sorted tuple of (name, value), the input it combines with: an index, or -1 for an
# activation). The value starts as the first input.
register(OpDef(name="eltwise_chain", doc="a chain of activations, adds and muls run as one loop (fuse_elementwise)",
               inputs=(1, None), attrs=[Attr("chain", None, ())], shape=_chain_shape, elementwise=True,
               category="fused", internal=True))
