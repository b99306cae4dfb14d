"""ONNX import: an ONNX CNN becomes a readable .cnn spec plus its weights.

The graph is read with the onnx package; constant sub-graphs (Constant, Shape -> Gather -> Concat ...,
as exporters emit for flatten/reshape) are folded with the batch size tried at two values, so that a
size that follows the batch is recognised as the batch. Each remaining node maps to one cnnc op; an
unsupported node is reported with all the others in one error. The spec is written as a plain chain
where the graph is a chain, with tensor names only where branches need them, instance names taken from
the ONNX initializer/node names where they are valid, and shapes as comments.
"""

from __future__ import annotations

import os
import re

import numpy as np

from .errors import CnncError, Diagnostic
from .fileio import atomic_write, save_arrays

# Ops whose results only depend on constants and shapes: folded at import.
_FOLDABLE = {"Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice", "Mul", "Add", "Sub",
             "Div", "ConstantOfShape", "Identity", "Reshape", "Range", "Floor", "Ceil", "Sqrt", "ReduceProd",
             "Equal", "Where", "Expand", "Neg", "Transpose", "Flatten", "Size"}

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*|[0-9]+(\.[A-Za-z0-9_]+)*")
IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KEYWORDS = {"import", "block", "seq", "group", "network", "input", "output", "if", "elif", "else", "for", "in",
            "repeat", "as", "assert", "return", "and", "or", "not", "true", "false", "none", "N"}


def _err(message: str, hint: str | None = None, code: str = "E400") -> CnncError:
    return CnncError(Diagnostic(code, message, None, hint))


class _Unsupported(Exception):
    def __init__(self, why: str):
        self.why = why


def _attrs(node) -> dict:
    from onnx import helper
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    for key, value in attrs.items():
        if isinstance(value, float) and not np.isfinite(value):
            raise _Unsupported(f"attribute {key} is {value}")  # a damaged model: nothing sensible to build
    return attrs


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        r = str(np.float32(v))  # ONNX attributes are float32: print the shortest float32 form
        if r in ("inf", "-inf", "nan"):
            raise _Unsupported(f"the value {r} cannot be written in a spec")
        return r if "e" in r or "." in r else r + ".0"
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, (tuple, list)):
        inner = ", ".join(_fmt(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    return str(v)


class _Stmt:
    def __init__(self, op: str, inputs: list[str], args: list, kwargs: dict, instance: str | None,
                 weights: dict[str, np.ndarray], output: str):
        self.op, self.inputs, self.args, self.kwargs = op, inputs, args, kwargs
        self.instance, self.weights, self.output = instance, weights, output


class Importer:
    def __init__(self, model):
        import onnx
        from onnx import numpy_helper, shape_inference
        self.onnx = onnx
        self.nh = numpy_helper
        # Shapes come from ONNX shape inference run on a copy without the weight data (only their
        # dims matter), so a model with hundreds of MB of weights is not serialised for it.
        inferred = None
        try:
            light = onnx.ModelProto()
            light.CopyFrom(model)
            for init in light.graph.initializer:  # large weights only: small ones (scales, shapes) carry meaning
                if init.data_type == onnx.TensorProto.FLOAT and len(init.raw_data) > 4096:
                    init.ClearField("raw_data")
            inferred = shape_inference.infer_shapes(light)
        except Exception:  # noqa: BLE001 - shapes are a help, not a requirement
            pass
        self.model = model
        g = model.graph
        self.graph = g
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        for cname, value in self.consts.items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise _err(f"initializer {cname} holds NaN or Inf", "is the file damaged?")
        self.const2: dict[str, np.ndarray] = dict(self.consts)  # folded with a second batch size
        init_names = set(self.consts)
        self.inputs = [i for i in g.input if i.name not in init_names]
        self.shapes: dict[str, tuple] = {}
        info = inferred.graph if inferred is not None else g
        for vi in list(info.input) + list(info.value_info) + list(info.output):
            dims = vi.type.tensor_type.shape.dim
            self.shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        self.alias: dict[str, str] = {}  # value -> value it is an identity of
        self.stmts: list[_Stmt] = []
        self.unsupported: list[tuple[str, str, str]] = []
        self.used_instances: set[str] = set()
        self.weights: dict[str, np.ndarray] = {}

    # ---- constants and shapes
    def value(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def const(self, name: str, second: bool = False) -> np.ndarray:
        return (self.const2 if second else self.consts)[name]

    def _fold(self, node) -> bool:
        """Evaluate a node whose inputs are all known constants (shapes count: the batch tried as 1 and 2)."""
        if node.op_type not in _FOLDABLE:
            return False
        ins = [i for i in node.input if i]
        if node.op_type == "Shape":
            shape = self.shapes.get(self.value(node.input[0]))
            if shape is None or any(d is None for d in shape[1:]) or not shape:
                return False
            a = _attrs(node)
            for k, batch in enumerate((1, 2)):
                full = np.array([batch, *shape[1:]], np.int64)[a.get("start", 0):a.get("end", None)]
                (self.const2 if k else self.consts)[node.output[0]] = full
            return True
        if node.op_type != "Constant" and not all(self.is_const(i) for i in ins):
            return False
        from onnx.reference import ReferenceEvaluator
        from onnx import helper
        for k, store in enumerate((self.consts, self.const2)):
            feeds = {f"i{j}": store[i] for j, i in enumerate(ins)}
            inputs = [helper.make_tensor_value_info(f"i{j}", self._elem_type(feeds[f"i{j}"]), None)
                      for j in range(len(ins))]
            names = iter(f"i{j}" for j in range(len(ins)))
            n = helper.make_node(node.op_type, [next(names) if i else "" for i in node.input], ["o"],
                                 **_attrs(node))
            graph = helper.make_graph([n], "fold", inputs, [helper.make_tensor_value_info("o", 1, None)])
            model = helper.make_model(graph, opset_imports=self.model.opset_import)
            try:
                (out,) = ReferenceEvaluator(model).run(None, feeds)
            except Exception as err:  # noqa: BLE001
                raise _Unsupported(f"cannot fold constant {node.op_type}: {err}") from None
            store[node.output[0]] = np.asarray(out)
        return True

    @staticmethod
    def _elem_type(a: np.ndarray) -> int:
        from onnx import helper
        return helper.np_dtype_to_tensor_dtype(a.dtype)

    # ---- naming
    def instance_for(self, node, weight_input: str | None) -> str | None:
        """A valid instance name: from the weight initializer (`layer1.0.conv1.weight` -> `layer1.0.conv1`),
        else the node name, else None (an automatic name)."""
        candidates = []
        if weight_input:
            base = weight_input
            for suffix in (".weight", ".scale", ".gamma"):
                if base.endswith(suffix):
                    candidates.append(base[: -len(suffix)])
        if node.name:
            candidates.append(node.name.strip("/").replace("/", ".").replace("::", "."))
        for c in candidates:
            if NAME_RE.fullmatch(c) and c not in self.used_instances and not c.startswith("onnx"):
                self.used_instances.add(c)
                return c
        return None

    # ---- translation
    def add(self, node, op: str, inputs: list[str], args=(), kwargs=None, weights=None, weight_input=None):
        instance = self.instance_for(node, weight_input) if weights else None
        self.stmts.append(_Stmt(op, [self.value(i) for i in inputs], list(args), dict(kwargs or {}), instance,
                                dict(weights or {}), node.output[0]))

    def _find_yolo_heads(self):
        """Recognise YOLO decoding written in standard operators (as `cnnc export` writes it): Reshape to
        (N, A, 5+C, H, W) -> Transpose(0, 1, 3, 4, 2) -> Slice/Sigmoid/Exp/Add/Mul -> Concat -> Reshape to
        (N, A*H*W, 5+C). The whole sub-graph becomes one `yolo` statement."""
        consumers: dict[str, list] = {}
        for node in self.graph.node:
            for i in node.input:
                consumers.setdefault(i, []).append(node)
        producer = {o: node for node in self.graph.node for o in node.output}
        allowed = {"Slice", "Sigmoid", "Exp", "Add", "Mul", "Concat", "Reshape", "Constant"}
        for node in self.graph.node:
            if node.op_type != "Transpose" or list(_attrs(node).get("perm", [])) != [0, 1, 3, 4, 2]:
                continue
            first = producer.get(node.input[0])
            if first is None or first.op_type != "Reshape" or first.input[1] not in self.consts:
                continue
            target = self.consts[first.input[1]].tolist()
            if len(target) != 5:
                continue
            _, na, ch, h, w = target
            seen, frontier, final, anchors, stride = {first.name, node.name}, [node.output[0]], None, None, None
            members = [first, node]
            while frontier:
                v = frontier.pop()
                for c in consumers.get(v, []):
                    if c.name in seen:
                        continue
                    if c.op_type not in allowed:
                        final = None
                        frontier = []
                        break
                    seen.add(c.name)
                    members.append(c)
                    for i in c.input:
                        if i in self.consts and c.op_type == "Mul":
                            k = self.consts[i]
                            if k.shape == (1, na, 1, 1, 2):
                                anchors = k.reshape(na, 2)
                            elif k.shape == (2,):
                                stride = k
                    if c.op_type == "Reshape" and c.input[1] in self.consts and len(self.consts[c.input[1]]) == 3:
                        final = c
                        continue
                    frontier.extend(c.output)
            if final is None or anchors is None or stride is None:
                continue
            image = (int(round(float(stride[1]) * h)), int(round(float(stride[0]) * w)))
            self.yolo_heads[final.name] = (first.input[0], [tuple(float(x) for x in a) for a in anchors], ch - 5, image)
            self.skip |= {m.name for m in members if m is not final}

    def run(self):
        self.yolo_heads: dict[str, tuple] = {}
        self.skip: set[str] = set()
        self._find_yolo_heads()
        for node in self.graph.node:
            try:
                if node.name in self.skip:
                    continue
                if node.name in self.yolo_heads:
                    x, anchors, classes, image = self.yolo_heads[node.name]
                    self.add(node, "yolo", [x], [anchors, classes, image])
                    continue
                if self._fold(node):
                    continue
                self.translate(node)
            except _Unsupported as u:
                self.unsupported.append((node.op_type, node.name or node.output[0], u.why))
        if self.unsupported:
            lines = [f"{op} node '{name}': {why}" for op, name, why in self.unsupported]
            raise _err(f"the model uses {len(lines)} node(s) cnnc cannot import:\n    " + "\n    ".join(lines),
                       "cnnc imports the operators CNN exports use; see `cnnc import --help`", code="E200")

    def _spatial(self, a: dict, key: str, default, n=2):
        v = a.get(key)
        return tuple(int(x) for x in v) if v is not None else tuple([default] * n)

    def _pads(self, node, a, x_shape, kernel, strides, dilations):
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("NOTSET", ""):
            p = self._spatial(a, "pads", 0, 4)
            return p
        if auto == "VALID":
            return (0, 0, 0, 0)
        if x_shape is None or any(d is None for d in x_shape[2:]):
            raise _Unsupported(f"auto_pad={auto} needs a known input size")
        pads_b, pads_e = [], []
        for size, k, s, d in zip(x_shape[2:], kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            pads_b.append(small if auto == "SAME_UPPER" else big)
            pads_e.append(big if auto == "SAME_UPPER" else small)
        return (pads_b[0], pads_b[1], pads_e[0], pads_e[1])

    def _shape_of(self, name):
        return self.shapes.get(self.value(name)) or self.shapes.get(name)

    def translate(self, node):
        op = node.op_type
        a = _attrs(node)
        ins = list(node.input)
        out = node.output[0]
        if op in ("Identity", "Dropout"):
            self.alias[out] = ins[0]
            return
        if op in ("Conv", "ConvTranspose"):
            if not self.is_const(ins[1]):
                raise _Unsupported("the weight is not a constant")
            w = np.asarray(self.const(ins[1]), dtype=np.float32)
            if w.ndim != 4:
                raise _Unsupported(f"only 2-D convolutions ({w.ndim - 2}-D found)")
            kernel = self._spatial(a, "kernel_shape", None) if "kernel_shape" in a else tuple(w.shape[2:])
            strides = self._spatial(a, "strides", 1)
            dil = self._spatial(a, "dilations", 1)
            group = int(a.get("group", 1))
            pads = self._pads(node, a, self._shape_of(ins[0]), kernel, strides, dil)
            bias = len(ins) > 2 and bool(ins[2])
            weights = {"weight": w}
            if bias:
                if not self.is_const(ins[2]):
                    raise _Unsupported("the bias is not a constant")
                weights["bias"] = self.const(ins[2]).astype(np.float32)
            filters = w.shape[0] if op == "Conv" else w.shape[1] * group
            kw = {"stride": strides, "padding": pads, "dilation": dil, "groups": group, "bias": bias}
            if op == "ConvTranspose":
                if "output_shape" in a:
                    raise _Unsupported("output_shape is not supported; give pads and output_padding")
                kw["output_padding"] = self._spatial(a, "output_padding", 0)
            self.add(node, "conv" if op == "Conv" else "conv_transpose", [ins[0]], [filters, kernel], kw, weights,
                     ins[1])
            return
        if op == "BatchNormalization":
            if not all(self.is_const(i) for i in ins[1:5]):
                raise _Unsupported("statistics are not constants")
            scale, shift, mean, var = (self.const(i).astype(np.float32) for i in ins[1:5])
            self.add(node, "batchnorm", [ins[0]], [], {"eps": float(a.get("epsilon", 1e-5))},
                     {"weight": scale, "bias": shift, "running_mean": mean, "running_var": var}, ins[1])
            return
        simple = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hardswish"}
        if op in simple:
            self.add(node, simple[op], [ins[0]])
            return
        if op == "LeakyRelu":
            self.add(node, "leaky_relu", [ins[0]], [], {"slope": float(a.get("alpha", 0.01))})
            return
        if op == "HardSigmoid":
            self.add(node, "hardsigmoid", [ins[0]], [], {"alpha": float(a.get("alpha", 0.2)),
                                                          "beta": float(a.get("beta", 0.5))})
            return
        if op == "Clip":
            lo = a.get("min")
            hi = a.get("max")
            for i, slot in ((1, "lo"), (2, "hi")):
                if len(ins) > i and ins[i]:
                    if not self.is_const(ins[i]):
                        raise _Unsupported("min/max are not constants")
                    v = float(self.const(ins[i]))
                    lo, hi = (v, hi) if slot == "lo" else (lo, v)
            if lo == 0.0 and hi == 6.0:
                self.add(node, "relu6", [ins[0]])
            elif lo == 0.0 and hi is None:
                self.add(node, "relu", [ins[0]])
            else:
                self.add(node, "clip", [ins[0]], [], {k: float(v) for k, v in (("min", lo), ("max", hi)) if v is not None})
            return
        if op == "Softmax":
            self.add(node, "softmax", [ins[0]], [], {"axis": int(a.get("axis", -1))})
            return
        if op in ("MaxPool", "AveragePool"):
            kernel = self._spatial(a, "kernel_shape", None)
            strides = self._spatial(a, "strides", 1)
            dil = self._spatial(a, "dilations", 1)
            pads = self._pads(node, a, self._shape_of(ins[0]), kernel, strides, dil)
            kw = {"stride": strides, "padding": pads, "ceil_mode": bool(a.get("ceil_mode", 0))}
            if op == "MaxPool":
                if len(node.output) > 1 and node.output[1]:
                    raise _Unsupported("the Indices output is not supported")
                if dil != (1, 1):
                    kw["dilation"] = dil
                self.add(node, "maxpool", [ins[0]], [kernel], kw)
            else:
                kw["count_include_pad"] = bool(a.get("count_include_pad", 0))
                self.add(node, "avgpool", [ins[0]], [kernel], kw)
            return
        if op in ("GlobalAveragePool", "GlobalMaxPool"):
            self.add(node, "global_avgpool" if op == "GlobalAveragePool" else "global_maxpool", [ins[0]])
            return
        if op == "ReduceMean":
            axes = a.get("axes")
            if axes is None and len(ins) > 1 and ins[1]:
                axes = self.const(ins[1]).tolist()
            rank = len(self._shape_of(ins[0]) or ())
            axes = sorted(int(x) % rank for x in axes) if axes is not None and rank else axes
            if axes != [2, 3]:
                raise _Unsupported(f"only the mean over the spatial axes (2, 3) is supported, not {axes}")
            self.add(node, "global_avgpool", [ins[0]])
            if not a.get("keepdims", 1):
                self.stmts[-1].output = out + ":keep"
                self.stmts.append(_Stmt("flatten", [out + ":keep"], [], {}, None, {}, out))
            return
        if op == "Flatten":
            axis = int(a.get("axis", 1))
            if axis != 1:
                raise _Unsupported(f"only Flatten(axis=1) keeps the batch apart (axis={axis})")
            self.add(node, "flatten", [ins[0]])
            return
        if op == "Reshape":
            if not self.is_const(ins[1]):
                raise _Unsupported("the target shape is not a constant")
            t1, t2 = self.const(ins[1]).astype(np.int64).tolist(), self.const(ins[1], True).astype(np.int64).tolist()
            batch_kept = t1 and t2 and (t1[0] == 0 or (t1[0], t2[0]) == (1, 2))
            if not batch_kept:
                if t1 and t1[0] == -1 and t2[0] == -1 and self._shape_of(ins[0]):
                    # (-1, rest): the batch is what is left over when rest multiplies to a sample
                    per = int(np.prod([d for d in self._shape_of(ins[0])[1:]]))
                    if int(np.prod(t1[1:])) == per:
                        batch_kept = True
                if not batch_kept:
                    raise _Unsupported(f"the target shape {t1} does not keep the batch axis")
            rest = [int(x) for x in t1[1:]]
            if len(rest) == 1 and rest[0] == -1:
                self.add(node, "flatten", [ins[0]])
            else:
                self.add(node, "reshape", [ins[0]], [tuple(rest)])
            return
        if op in ("Gemm", "MatMul"):
            if not self.is_const(ins[1]):
                raise _Unsupported("the weight is not a constant")
            w = np.asarray(self.const(ins[1]), dtype=np.float32)
            if op == "Gemm":
                if a.get("transA", 0):
                    raise _Unsupported("transA=1 is not supported")
                if not a.get("transB", 0):
                    w = w.T
                w = w * float(a.get("alpha", 1.0))
            else:
                if w.ndim != 2:
                    raise _Unsupported("only MatMul with a 2-D constant weight")
                w = w.T
            weights = {"weight": np.ascontiguousarray(w)}
            if op == "Gemm" and len(ins) > 2 and ins[2]:
                if not self.is_const(ins[2]):
                    raise _Unsupported("the bias is not a constant")
                bias = self.const(ins[2]).astype(np.float32) * float(a.get("beta", 1.0))
                weights["bias"] = np.broadcast_to(bias.reshape(-1), (w.shape[0],)).copy()
            self.add(node, "dense", [ins[0]], [w.shape[0]], {"bias": "bias" in weights}, weights, ins[1])
            return
        if op in ("Add", "Mul", "Sub", "Div"):
            consts = [i for i in ins if self.is_const(i)]
            if not consts:
                if op in ("Sub", "Div"):
                    raise _Unsupported(f"{op} of two tensors is not supported")
                # x * sigmoid(x) is SiLU
                if op == "Mul":
                    for x, y in ((ins[0], ins[1]), (ins[1], ins[0])):
                        prev = next((s for s in self.stmts if s.output == self.value(y)), None)
                        if prev is not None and prev.op == "sigmoid" and prev.inputs == [self.value(x)]:
                            prev.op, prev.output = "silu", out
                            return
                self.add(node, "add" if op == "Add" else "mul", ins)
                return
            (c_name,) = consts if len(consts) == 1 else (consts[1],)
            x = ins[0] if ins[1] == c_name else ins[1]
            if op in ("Sub", "Div") and ins[0] == c_name:
                raise _Unsupported(f"{op} with the constant first is not supported")
            c = self.const(c_name).astype(np.float32)
            self._affine(node, op, x, c)
            return
        if op == "Concat":
            self.add(node, "concat", ins, [], {"axis": int(a.get("axis", 1))})
            return
        if op == "Pad":
            mode = a.get("mode", b"constant")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            pads = a.get("pads")
            if pads is None:
                if not self.is_const(ins[1]):
                    raise _Unsupported("pads are not constants")
                pads = self.const(ins[1]).tolist()
            value = float(a.get("value", 0.0))
            if len(ins) > 2 and ins[2]:
                value = float(self.const(ins[2]))
            if len(ins) > 3 and ins[3]:
                raise _Unsupported("the axes input is not supported")
            if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)):
                raise _Unsupported(f"only padding of H and W is supported (pads={pads})")
            kw = {"mode": {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[mode]}
            if kw["mode"] == "constant" and value:
                kw["value"] = value
            self.add(node, "pad", [ins[0]], [(int(pads[2]), int(pads[3]), int(pads[6]), int(pads[7]))], kw)
            return
        if op in ("Resize", "Upsample"):
            mode = a.get("mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode != "nearest":
                raise _Unsupported(f"mode={mode}: only nearest upsampling is supported")
            scales = None
            if op == "Upsample":
                scales = a.get("scales") or (self.const(ins[1]).tolist() if len(ins) > 1 else None)
            else:
                if len(ins) > 2 and ins[2] and self.is_const(ins[2]) and self.const(ins[2]).size:
                    scales = self.const(ins[2]).tolist()
                elif len(ins) > 3 and ins[3] and self.is_const(ins[3]):
                    sizes = self.const(ins[3]).tolist()
                    shape = self._shape_of(ins[0])
                    if not shape:
                        raise _Unsupported("sizes need a known input shape")
                    scales = [1, 1, sizes[2] / shape[2], sizes[3] / shape[3]]
            if scales is None or len(scales) != 4 or scales[0] != 1 or scales[1] != 1 or any(
                    float(s) != int(s) or s < 1 for s in scales[2:]):
                raise _Unsupported(f"only integer spatial scales are supported (scales={scales})")
            self.add(node, "upsample", [ins[0]], [(int(scales[2]), int(scales[3]))])
            return
        if op == "LRN":
            self.add(node, "lrn", [ins[0]], [int(a["size"])], {"alpha": float(a.get("alpha", 1e-4)),
                                                                "beta": float(a.get("beta", 0.75)),
                                                                "k": float(a.get("bias", 1.0))})
            return
        raise _Unsupported("this operator is not supported")

    def _affine(self, node, op, x, c):
        shape = self._shape_of(x)
        rank = len(shape) if shape else None
        if rank is None:
            raise _Unsupported("the input shape is unknown")
        channels = shape[1]
        flat = c.reshape(-1)
        if c.size == 1:
            vec = np.full(channels, flat[0], np.float32)
        else:
            squeezed = c.reshape(c.shape[-(rank - 1):] if c.ndim >= rank - 1 else c.shape)
            trailing = squeezed.shape[1:] if squeezed.ndim == rank - 1 else None
            if c.ndim > rank or c.size != channels or (trailing and any(d != 1 for d in trailing)):
                raise _Unsupported(f"only scalar or per-channel constants are supported (shape {c.shape})")
            vec = flat.astype(np.float32)
        if op == "Sub":
            vec = -vec
        if op == "Div":
            vec = 1.0 / vec
        if op in ("Add", "Sub"):
            self.add(node, "affine", [x], [], {"scale": False}, {"bias": vec})
        else:
            self.add(node, "affine", [x], [], {"shift": False}, {"weight": vec})

    # ---- writing the spec
    def spec(self, name: str) -> tuple[str, dict[str, np.ndarray]]:
        uses: dict[str, int] = {}
        for s in self.stmts:
            for i in s.inputs:
                uses[i] = uses.get(i, 0) + 1
        outputs = [o.name for o in self.graph.output]
        for o in outputs:
            uses[self.value(o)] = uses.get(self.value(o), 0) + 1
        var: dict[str, str] = {}
        taken = set(KEYWORDS)

        def varname(value: str, hint: str | None) -> str:
            if value in var:
                return var[value]
            base = hint.split(".")[-1] if hint else "t"
            if not IDENT_RE.fullmatch(base) or base in KEYWORDS:
                base = "t"
            cand, k = base, 1
            while cand in taken:
                k += 1
                cand = f"{base}{k}"
            taken.add(cand)
            var[value] = cand
            return cand

        inputs = []
        for i in self.inputs:
            dims = [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
            if len(dims) < 2 or any(d is None for d in dims[1:]):
                raise _err(f"input '{i.name}' has shape {dims}: cnnc needs every size but the batch fixed",
                           code="E241")
            inputs.append((varname(i.name, i.name if IDENT_RE.fullmatch(i.name) else "x"), dims))
        net = _safe_ident(name)
        lines = [f"# Imported from ONNX by `cnnc import`.", f"network {net}() {{"]
        for v, dims in inputs:
            lines.append(f"    input {v}: (N, {', '.join(str(d) for d in dims[1:])})")
        prev = self.value(self.inputs[0].name) if len(self.inputs) == 1 else None
        weights: dict[str, np.ndarray] = {}
        auto = 0
        for idx, s in enumerate(self.stmts):
            nxt = self.stmts[idx + 1] if idx + 1 < len(self.stmts) else None
            chained_out = (uses.get(s.output, 0) == 1 and nxt is not None and nxt.inputs == [s.output]
                           and s.output not in [self.value(o) for o in outputs])
            implicit = len(s.inputs) == 1 and s.inputs[0] == prev
            args = [] if implicit else [var.get(i) or varname(i, None) for i in s.inputs]
            args += [_fmt(_compact(v)) for v in s.args]
            args += [f"{k}={_fmt(_compact(v))}" for k, v in _non_default(s.op, s.kwargs, s.args[0] if s.args else None).items()]
            call = f"{s.op}({', '.join(args)})"
            instance = s.instance
            if instance is None and s.weights:
                auto += 1
                instance = f"{s.op}{auto}"
                while instance in self.used_instances:
                    auto += 1
                    instance = f"{s.op}{auto}"
                self.used_instances.add(instance)
            shape = self.shapes.get(s.output)
            comment = f"  # (N, {', '.join(str(d) for d in shape[1:])})" if shape and None not in shape[1:] else ""
            simple_name = instance is not None and IDENT_RE.fullmatch(instance) and instance not in taken
            if chained_out and not simple_name:
                stmt = call + (f' as "{instance}"' if instance else "")
            else:
                v = varname(s.output, instance)
                stmt = f"{v} = {call}" + (f' as "{instance}"' if instance and instance != v else "")
            lines.append("    " + stmt + comment)
            for role, arr in s.weights.items():
                weights[f"{instance}.{role}"] = np.ascontiguousarray(arr, dtype=np.float32)
            prev = s.output
        outs = []
        for o in outputs:
            v = self.value(o)
            if v not in var:
                raise _err(f"output '{o}' is not computed by an imported node", code="E241")
            oname = o if IDENT_RE.fullmatch(o) and (o not in KEYWORDS or o == "output") else var[v]
            outs.append(oname if oname == var[v] else f"{oname} = {var[v]}")
        lines.append("    output " + ", ".join(outs))
        lines.append("}")
        return "\n".join(lines) + "\n", weights


def _compact(v):
    """(3, 3) -> 3 and (1, 1, 1, 1) -> 1, (a, b, a, b) -> (a, b): the short forms a person writes."""
    if isinstance(v, tuple) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        if len(set(v)) == 1:
            return v[0]
        if len(v) == 4 and v[:2] == v[2:]:
            return v[:2]
    return v


def _non_default(op_name: str, kwargs: dict, kernel=None) -> dict:
    """Leave out keyword arguments equal to the op's defaults."""
    from .ops import REQUIRED, lookup
    op = lookup(op_name)
    out = {}
    for k, v in kwargs.items():
        if k == "stride" and op_name in ("maxpool", "avgpool") and kernel is not None and _compact(v) == _compact(kernel):
            continue  # a pool's stride defaults to its kernel
        attr = next((a for a in op.attrs if a.name == k), None)
        if attr is not None and attr.default is not REQUIRED and attr.default is not None:
            try:
                mine, default = attr.kind(v, k), attr.kind(attr.default, k)
                if mine == default or (isinstance(mine, float) and np.float32(mine) == np.float32(default)):
                    continue
            except Exception:  # noqa: BLE001 - not comparable: keep it
                pass
        out[k] = v
    return out


def _safe_ident(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", name) or "imported"
    if s[0].isdigit():
        s = "n_" + s
    return s


def import_model(path: str, name: str | None = None) -> tuple[str, dict[str, np.ndarray]]:
    try:
        import onnx
    except ImportError:  # pragma: no cover
        raise _err("ONNX import needs the onnx package", "pip install onnx", code="E900") from None
    if not os.path.isfile(path):
        raise CnncError(Diagnostic("E404", f"{path}: cannot read: no such file", None))
    try:
        model = onnx.load(path)
    except Exception as err:  # noqa: BLE001 - protobuf raises several types
        raise _err(f"{path}: not a readable ONNX model ({type(err).__name__}: {err})", "is the file truncated?") from None
    try:  # the structure ONNX requires (node arities, attribute values, tensor types) before reading it
        onnx.checker.check_model(model)
    except Exception as err:  # noqa: BLE001 - the checker raises ValidationError and protobuf errors
        raise _err(f"{path}: not a valid ONNX model: {_first_line(err)}", "is the file damaged?") from None
    base = name or os.path.splitext(os.path.basename(path))[0]
    try:
        imp = Importer(model)
        imp.run()
        return imp.spec(base)
    except (IndexError, KeyError, TypeError, ValueError) as err:
        # A model that passes the checker can still be inconsistent (a bias of the wrong size, a constant of
        # the wrong rank): this is untrusted input, so one message rather than a traceback.
        raise _err(f"{path}: inconsistent ONNX model ({type(err).__name__}: {_first_line(err)})",
                   "is the file damaged? a model exported by a standard exporter imports") from None


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def write(spec_text: str, weights: dict[str, np.ndarray], spec_path: str, weights_path: str | None) -> None:
    if weights_path:
        save_arrays(weights_path, weights)
    with atomic_write(spec_path, "w") as f:
        f.write(spec_text)
