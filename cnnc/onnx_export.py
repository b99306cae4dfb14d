"""ONNX export: a compiled graph and its weights as an ONNX model.

Node and initializer names are the spec's instance and weight names; the batch dimension is the
symbolic `N` unless a fixed batch is asked for. Every op maps to standard ONNX operators (opset 13+);
one that cannot be expressed is refused with its name and spec line.
"""

from __future__ import annotations

import numpy as np

from .errors import CnncError, Diagnostic
from .fileio import atomic_write


def _onnx():
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:  # pragma: no cover - onnx is in the test and export extras
        raise CnncError(Diagnostic("E900", "ONNX export needs the onnx package", None,
                                   "pip install 'cnnc[onnx]' (or pip install onnx)")) from None
    return onnx, TensorProto, helper, numpy_helper


class _Builder:
    def __init__(self, opset: int):
        self.onnx, self.TP, self.helper, self.nh = _onnx()
        self.opset = opset
        self.nodes = []
        self.initializers = []
        self.names: set[str] = set()  # value names (tensors, initializers)
        self.node_names: set[str] = set()  # node names live in their own namespace

    def const(self, name: str, value) -> str:
        name = self.unique(name)
        a = np.asarray(value)
        if a.dtype.kind == "f":
            a = a.astype(np.float32)
        self.initializers.append(self.nh.from_array(a, name))
        return name

    def unique(self, name: str, space: set | None = None) -> str:
        space = self.names if space is None else space
        base, k = name, 1
        while name in space:
            k += 1
            name = f"{base}_{k}"
        space.add(name)
        return name

    def node(self, op: str, inputs: list[str], name: str, output: str | None = None, **attrs) -> str:
        name = self.unique(name, self.node_names)
        out = output or self.unique(name + ":out")
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=name, **attrs))
        return out


def _refuse(node: str, d: dict, why: str) -> CnncError:
    span = d["span"]
    return CnncError(Diagnostic("E202", f"{d['op']} {node} cannot be exported to ONNX: {why}", span,
                                "change the layer, or run it with cnnc's own runtime"))


def export(graph, weights: dict[str, np.ndarray], opset: int = 17, batch: int | None = None):
    """Returns an onnx.ModelProto for the graph with the given weights (names as graph constants)."""
    b = _Builder(opset)
    TP, helper = b.TP, b.helper
    if opset < 13:
        raise CnncError(Diagnostic("E203", f"opset {opset} is too old; cnnc exports opset 13 or newer", None))
    for c in graph.constants.values():
        a = weights[c.name]
        b.initializers.append(b.nh.from_array(np.ascontiguousarray(a, dtype=np.float32), c.name))
        b.names.add(c.name)
    tensor = {}  # node name -> ONNX value name
    dim = batch if batch is not None else "N"
    inputs = []
    for name in graph.inputs:
        shape = [dim, *graph.node(name)["shape"]]
        inputs.append(helper.make_tensor_value_info(name, TP.FLOAT, shape))
        tensor[name] = name
        b.names.add(name)
    out_by_node = {}
    for out_name, node in graph.outputs.items():
        out_by_node.setdefault(node, out_name)
    for name in graph.op_nodes():
        d = graph.node(name)
        xs = [tensor[i] for i in d["inputs"]]
        target = out_by_node.get(name)
        if target is not None:
            b.names.add(target)
        tensor[name] = _emit_with_epilogue(b, name, d, xs, graph, target)
    outputs = []
    for out_name, node in graph.outputs.items():
        value = tensor[node]
        if value != out_name:  # a second output name for the same tensor
            value = b.node("Identity", [value], out_name + ":id", output=out_name)
        shape = [dim, *graph.node(node)["shape"]]
        outputs.append(helper.make_tensor_value_info(out_name, TP.FLOAT, shape))
    g = helper.make_graph(b.nodes, graph.name, inputs, outputs, b.initializers)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="cnnc")
    model.ir_version = min(model.ir_version, 8 if opset <= 17 else model.ir_version)
    return model


def _emit_with_epilogue(b: _Builder, name: str, d: dict, xs: list[str], graph, output: str | None) -> str:
    """A fused node (fold_batchnorm / fuse_activation / fuse_residual) exports as the op followed by its
    batchnorm, residual Add and activation, so the ONNX graph is standard whatever passes ran."""
    a = d["attrs"]
    if d["op"] == "eltwise_chain":  # (fuse_elementwise) its stages one node each
        y = xs[0]
        for i, (op, attrs, other) in enumerate(a["chain"]):
            out = output if i == len(a["chain"]) - 1 else None
            if other >= 0:
                y = b.node("Add" if op == "add" else "Mul", [y, xs[other]], f"{name}.{i}.{op}", out)
            else:
                y = _emit_activation(b, f"{name}.{i}.{op}", op, attrs, d, name, y, graph, out)
        return y
    residual = bool(a.get("residual"))
    if "bn_eps" not in a and "act" not in a and not residual:
        return _emit(b, name, d, xs, graph, output)
    core = dict(d, attrs={k: v for k, v in a.items() if k not in ("bn_eps", "act", "residual")},
                params={k: v for k, v in d["params"].items() if not k.startswith("bn_")},
                inputs=d["inputs"][:1])
    y = _emit(b, name, core, xs[:1], graph, None)
    if "bn_eps" in a:
        last = "act" not in a and not residual
        p = d["params"]
        y = b.node("BatchNormalization", [y, p["bn_weight"], p["bn_bias"], p["bn_running_mean"], p["bn_running_var"]],
                   name + ".bn", output if last else None, epsilon=float(a["bn_eps"]))
    if residual:
        y = b.node("Add", [y, xs[1]], name + ".residual", output if "act" not in a else None)
    if "act" in a:
        op, attrs = a["act"]
        y = _emit_activation(b, name + "." + op, op, attrs, d, name, y, graph, output)
    return y


def _emit_activation(b: _Builder, node: str, op: str, attrs, d: dict, name: str, y: str, graph,
                     output: str | None) -> str:
    """An activation (op, its attributes as pairs) that node `name` (`d`) applies to its value `y`, as a node
    of its own called `node`."""
    act = {"op": op, "attrs": dict(attrs), "params": {}, "shape": d["shape"], "inputs": [name], "span": d["span"]}
    return _emit(b, node, act, [y], graph, output)


def _emit(b: _Builder, name: str, d: dict, xs: list[str], graph, output: str | None) -> str:
    op, a, p = d["op"], d["attrs"], d["params"]
    shape = d["shape"]
    in_shape = graph.node(d["inputs"][0])["shape"] if d["inputs"] else None
    ints = lambda t: [int(v) for v in t]  # noqa: E731
    if op == "conv":
        ins = [xs[0], p["weight"]] + ([p["bias"]] if "bias" in p else [])
        return b.node("Conv", ins, name, output, kernel_shape=ints(a["kernel"]), strides=ints(a["stride"]),
                      pads=ints(a["pads"]), dilations=ints(a["dilation"]), group=int(a["groups"]))
    if op == "conv_transpose":
        ins = [xs[0], p["weight"]] + ([p["bias"]] if "bias" in p else [])
        return b.node("ConvTranspose", ins, name, output, kernel_shape=ints(a["kernel"]), strides=ints(a["stride"]),
                      pads=ints(a["pads"]), dilations=ints(a["dilation"]), group=int(a["groups"]),
                      output_padding=ints(a["output_padding"]))
    if op == "maxpool":
        return b.node("MaxPool", xs, name, output, kernel_shape=ints(a["kernel"]), strides=ints(a["stride"]),
                      pads=ints(a["pads"]), dilations=ints(a["dilation"]), ceil_mode=int(a["ceil_mode"]))
    if op == "avgpool":
        return b.node("AveragePool", xs, name, output, kernel_shape=ints(a["kernel"]), strides=ints(a["stride"]),
                      pads=ints(a["pads"]), ceil_mode=int(a["ceil_mode"]),
                      count_include_pad=int(a["count_include_pad"]))
    if op in ("global_avgpool", "global_maxpool"):
        return b.node("GlobalAveragePool" if op == "global_avgpool" else "GlobalMaxPool", xs, name, output)
    if op in ("adaptive_avgpool", "adaptive_maxpool"):
        (c, h, w), (oh, ow) = in_shape, a["size"]
        kind = "AveragePool" if op == "adaptive_avgpool" else "MaxPool"
        if (oh, ow) == (1, 1):
            return b.node("Global" + ("AveragePool" if kind == "AveragePool" else "MaxPool"), xs, name, output)
        if h % oh or w % ow:
            raise _refuse(name, d, f"input {h}x{w} is not a multiple of the output {oh}x{ow} "
                          "(ONNX has no adaptive pooling with uneven bins)")
        k = [h // oh, w // ow]
        return b.node(kind, xs, name, output, kernel_shape=k, strides=k)
    if op == "dense":
        ins = [xs[0], p["weight"]] + ([p["bias"]] if "bias" in p else [])
        return b.node("Gemm", ins, name, output, transB=1)
    if op == "batchnorm":
        c = in_shape[0]
        scale = p.get("weight") or b.const(name + ".weight", np.ones(c, np.float32))
        shift = p.get("bias") or b.const(name + ".bias", np.zeros(c, np.float32))
        return b.node("BatchNormalization", [xs[0], scale, shift, p["running_mean"], p["running_var"]], name, output,
                      epsilon=float(a["eps"]))
    if op == "affine":
        c = in_shape[0]
        bshape = (c,) + (1,) * (len(in_shape) - 1)
        y = xs[0]
        if "weight" in p:
            w = b.node("Reshape", [p["weight"], b.const(name + ".wshape", np.array(bshape, np.int64))], name + ".w")
            y = b.node("Mul", [y, w], name if "bias" not in p else name + ".mul", output if "bias" not in p else None)
        if "bias" in p:
            s = b.node("Reshape", [p["bias"], b.const(name + ".bshape", np.array(bshape, np.int64))], name + ".b")
            y = b.node("Add", [y, s], name, output)
        return y
    simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "hardswish": "HardSwish",
              "identity": "Identity", "dropout": "Identity"}
    if op in simple:
        if op == "hardswish" and b.opset < 14:
            raise _refuse(name, d, "HardSwish needs opset 14 or newer")
        return b.node(simple[op], xs, name, output)
    if op in ("relu6", "clip"):
        lo, hi = (0.0, 6.0) if op == "relu6" else (a["min"], a["max"])
        ins = [xs[0], b.const(name + ".min", np.float32(lo)) if lo is not None else "",
               b.const(name + ".max", np.float32(hi)) if hi is not None else ""]
        while ins and ins[-1] == "":
            ins.pop()
        return b.node("Clip", ins, name, output)
    if op == "leaky_relu":
        return b.node("LeakyRelu", xs, name, output, alpha=float(a["slope"]))
    if op == "hardsigmoid":
        return b.node("HardSigmoid", xs, name, output, alpha=float(a["alpha"]), beta=float(a["beta"]))
    if op == "silu":
        s = b.node("Sigmoid", xs, name + ".sigmoid")
        return b.node("Mul", [xs[0], s], name, output)
    if op == "softmax":
        return b.node("Softmax", xs, name, output, axis=int(a["axis"]))
    if op in ("add", "mul"):
        kind = "Add" if op == "add" else "Mul"
        acc = xs[0]
        for i, x in enumerate(xs[1:]):
            last = i == len(xs) - 2
            acc = b.node(kind, [acc, x], name if last else f"{name}.{i}", output if last else None)
        return acc
    if op == "concat":
        return b.node("Concat", xs, name, output, axis=int(a["axis"]))
    if op in ("flatten", "reshape"):
        target = b.const(name + ".shape", np.array([0, *shape], np.int64))
        if op == "flatten" and len(shape) == 1:
            return b.node("Flatten", xs, name, output, axis=1)
        return b.node("Reshape", [xs[0], target], name, output)
    if op == "upsample":
        scales = b.const(name + ".scales", np.array([1, 1, *a["scale"]], np.float32))
        return b.node("Resize", [xs[0], "", scales], name, output, mode="nearest",
                      coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    if op == "pad":
        t, l, bo, r = a["pads"]
        pads = b.const(name + ".pads", np.array([0, 0, t, l, 0, 0, bo, r], np.int64))
        mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}[a["mode"]]
        ins = [xs[0], pads] + ([b.const(name + ".value", np.float32(a["value"]))] if mode == "constant" else [])
        return b.node("Pad", ins, name, output, mode=mode)
    if op == "lrn":
        return b.node("LRN", xs, name, output, size=int(a["size"]), alpha=float(a["alpha"]), beta=float(a["beta"]),
                      bias=float(a["k"]))
    if op == "yolo":
        return _emit_yolo(b, name, a, xs[0], in_shape, output)
    raise _refuse(name, d, "no ONNX mapping")


def _emit_yolo(b: _Builder, name: str, a: dict, x: str, in_shape, output):
    """YOLO decode as Reshape/Transpose/Slice/Sigmoid/Exp/Add/Mul/Concat."""
    anchors = np.asarray(a["anchors"], np.float32)
    na, nc = len(anchors), a["classes"]
    _, h, w = in_shape
    img_h, img_w = a["image_size"]
    i64 = lambda v: b.const(f"{name}.c", np.asarray(v, np.int64))  # noqa: E731
    y = b.node("Reshape", [x, i64([0, na, 5 + nc, h, w])], name + ".reshape")
    y = b.node("Transpose", [y], name + ".transpose", perm=[0, 1, 3, 4, 2])
    sl = lambda start, end: b.node("Slice", [y, i64([start]), i64([end]), i64([4])], f"{name}.slice")  # noqa: E731
    xy, wh, rest = sl(0, 2), sl(2, 4), sl(4, 5 + nc)
    cols, rows = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    grid = b.const(name + ".grid", np.stack([cols, rows], -1)[None, None])  # (1, 1, h, w, 2)
    stride = b.const(name + ".stride", np.array([img_w / w, img_h / h], np.float32))
    xy = b.node("Mul", [b.node("Add", [b.node("Sigmoid", [xy], name + ".sxy"), grid], name + ".gxy"), stride],
                name + ".xy")
    wh = b.node("Mul", [b.node("Exp", [wh], name + ".exp"), b.const(name + ".anchors", anchors[None, :, None, None, :])],
                name + ".wh")
    rest = b.node("Sigmoid", [rest], name + ".scores")
    y = b.node("Concat", [xy, wh, rest], name + ".concat", axis=4)
    return b.node("Reshape", [y, i64([0, na * h * w, 5 + nc])], name, output)


def save(model, path: str, full_check: bool = True) -> None:
    onnx = _onnx()[0]
    try:
        onnx.checker.check_model(model, full_check=full_check)
    except Exception as err:  # the checker raises its own ValidationError types
        raise CnncError(Diagnostic("E900", f"exported model fails the ONNX checker: {err}", None)) from None
    with atomic_write(path) as f:
        f.write(model.SerializeToString())
