"""ONNX import: exported library models and hand-built ONNX graphs come back as specs that compute the
same function as ONNX Runtime on the original file."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cnnc import plan as plan_mod  # noqa: E402
from cnnc.cli import main  # noqa: E402
from cnnc.compiler import compile_spec  # noqa: E402
from cnnc.errors import CnncError  # noqa: E402
from cnnc.fileio import load_arrays  # noqa: E402
from cnnc.onnx_export import export, save  # noqa: E402
from cnnc.runtime.executor import Program  # noqa: E402
from cnnc.weights import match, seeded_fixture_weights  # noqa: E402
from conftest import MODELS, SPECS, zoo_meta  # noqa: E402


def ort_run(path, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def import_and_run(tmp_path, onnx_path, feeds, capsys=None):
    spec, wout = tmp_path / "imported.cnn", tmp_path / "imported.npz"
    assert main(["import", str(onnx_path), "-o", str(spec), "--weights-out", str(wout)]) == 0
    g = compile_spec(str(spec)).graph
    plan = plan_mod.from_graph(g)
    weights, _ = match(plan["constants"], load_arrays(str(wout)))
    return Program(plan, weights).run(feeds), spec.read_text()


def close(a, b):
    return a.shape == b.shape and np.max(np.abs(a - b)) <= 1e-4 * max(1e-6, np.max(np.abs(b)))


@pytest.mark.parametrize("model", [m for m in MODELS if m != "vgg16"])
def test_round_trip_of_the_library(model, tmp_path):
    """import(export(spec)) computes the same function as the spec (ONNX Runtime on the export as oracle),
    with the same parameter count and the same weight names."""
    g = compile_spec(str(SPECS / f"{model}.cnn")).graph
    w = seeded_fixture_weights(plan_mod.from_graph(g)["constants"])
    save(export(g, w), str(tmp_path / "m.onnx"))
    meta = zoo_meta(model)
    x = np.random.default_rng(1).standard_normal([1, *meta["input_shape"][1:]]).astype(np.float32)
    ref = ort_run(tmp_path / "m.onnx", {g.inputs[0]: x})
    ours, text = import_and_run(tmp_path, tmp_path / "m.onnx", {g.inputs[0]: x})
    for k in ref:
        assert close(ours[k], ref[k]), k
    imported = compile_spec(str(tmp_path / "imported.cnn")).graph
    assert imported.parameters() == g.parameters()
    assert set(imported.constants) == set(g.constants)  # instance names come back from initializer names


def test_spec_reads_like_a_chain(tmp_path):
    g = compile_spec(str(SPECS / "lenet5.cnn")).graph
    save(export(g, seeded_fixture_weights(plan_mod.from_graph(g)["constants"])), str(tmp_path / "l.onnx"))
    assert main(["import", str(tmp_path / "l.onnx"), "-o", str(tmp_path / "l.cnn")]) == 0
    text = (tmp_path / "l.cnn").read_text()
    assert "conv1 = conv(6, 5)  # (N, 6, 28, 28)" in text or 'conv(6, 5) as "conv1"  # (N, 6, 28, 28)' in text
    assert "    tanh()" in text and "avgpool(2)" in text
    assert " = " not in "\n".join(l for l in text.splitlines() if "tanh" in l)  # no needless names in a chain


def model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return m


def vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def init(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


def test_operator_coverage_against_onnxruntime(tmp_path):
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="stem/conv", auto_pad="SAME_UPPER", strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "s", "bb", "m", "v"], ["bn"], epsilon=1e-3),
        helper.make_node("Clip", ["bn", "lo", "hi"], ["r6"]),
        helper.make_node("Sub", ["r6", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "two"], ["halved"]),
        helper.make_node("Sigmoid", ["halved"], ["sg"]),
        helper.make_node("Mul", ["halved", "sg"], ["silu"]),
        helper.make_node("Conv", ["silu", "wd"], ["dw"], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("HardSigmoid", ["dw"], ["hs"], alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["dw", "hs"], ["gated"]),
        helper.make_node("MaxPool", ["gated"], ["mp"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        helper.make_node("AveragePool", ["gated"], ["ap"], kernel_shape=[2, 2], strides=[2, 2],
                         count_include_pad=0),
        helper.make_node("Add", ["mp", "ap"], ["sum"]),
        helper.make_node("LeakyRelu", ["sum"], ["lk"], alpha=0.1),
        helper.make_node("Resize", ["lk", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Pad", ["up", "pads"], ["padded"], mode="reflect"),
        helper.make_node("LRN", ["padded"], ["lrn"], size=3),
        helper.make_node("Concat", ["lrn", "padded"], ["cat"], axis=1),
        helper.make_node("ConvTranspose", ["cat", "wt"], ["ct"], strides=[2, 2], pads=[1, 1, 1, 1],
                         output_padding=[1, 1]),
        helper.make_node("Identity", ["ct"], ["idn"]),
        helper.make_node("ReduceMean", ["idn"], ["rm0"], axes=[2, 3], keepdims=1),
        helper.make_node("Constant", [], ["half"], value=numpy_helper.from_array(np.float32(0.5), "half")),
        helper.make_node("Mul", ["rm0", "half"], ["rm1"]),
        helper.make_node("GlobalMaxPool", ["idn"], ["gm"]),
        helper.make_node("Add", ["rm1", "gm"], ["rm"]),
        # a Shape-based flatten, as older exporters write it
        helper.make_node("Shape", ["rm"], ["shp"]),
        helper.make_node("Gather", ["shp", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero1d"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["rm", "target"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wg", "bg"], ["g1"], transB=0, alpha=0.5),
        helper.make_node("Tanh", ["g1"], ["th"]),
        helper.make_node("MatMul", ["th", "wm"], ["mm"]),
        helper.make_node("Dropout", ["mm"], ["dp"]),
        helper.make_node("Softmax", ["dp"], ["y"], axis=1),
    ]
    inits = [init("w1", f(8, 3, 3, 3)), init("b1", f(8)), init("s", f(8) + 2), init("bb", f(8)), init("m", f(8)),
             init("v", np.abs(f(8)) + 0.5), init("lo", np.float32(0)), init("hi", np.float32(6)),
             init("mean", f(8, 1, 1)), init("two", np.float32(2)), init("wd", f(8, 1, 3, 3)),
             init("scales", np.array([1, 1, 2, 2], np.float32)), init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1])),
             init("wt", f(16, 4, 3, 3)), init("zero", np.array(0)), init("zero1d", np.array([0])),
             init("minus1", np.array([-1])), init("wg", f(4, 6)), init("bg", f(6)), init("wm", f(6, 5))]
    m = model(nodes, [vi("x", ["batch", 3, 16, 16])], [vi("y", ["batch", 5])], inits)
    onnx.save(m, tmp_path / "cov.onnx")
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    ref = ort_run(tmp_path / "cov.onnx", {"x": x})
    ours, text = import_and_run(tmp_path, tmp_path / "cov.onnx", {"x": x})
    assert close(ours["y"], ref["y"])
    assert "silu()" in text and "relu6()" in text and "affine(" in text


def test_unsupported_nodes_are_listed_together_and_nothing_is_written(tmp_path, capsys):
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Einsum", ["a"], ["b"], name="weird", equation="ij->ji"),
             helper.make_node("Resize", ["b", "", "sc"], ["c"], name="smooth", mode="linear"),
             helper.make_node("Relu", ["c"], ["y"])]
    m = model(nodes, [vi("x", ["N", 3, 4, 4])], [vi("y", ["N", 3, 8, 8])], [init("sc", np.array([1, 1, 2, 2], np.float32))])
    onnx.save(m, tmp_path / "u.onnx")
    out = tmp_path / "u.cnn"
    assert main(["import", str(tmp_path / "u.onnx"), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "2 node(s)" in err and "Einsum node 'weird'" in err and "Resize node 'smooth'" in err
    assert "Traceback" not in err and not out.exists()


def test_unreadable_model(tmp_path, capsys):
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    assert main(["import", str(tmp_path / "bad.onnx"), "-o", str(tmp_path / "x.cnn")]) == 1
    assert "not a readable ONNX model" in capsys.readouterr().err
    with pytest.raises(CnncError):
        from cnnc.onnx_import import import_model
        import_model(str(tmp_path / "missing.onnx"))


def test_upsample_of_old_opsets(tmp_path):
    nodes = [helper.make_node("Upsample", ["x", "scales"], ["up"], mode="nearest"),
             helper.make_node("Relu", ["up"], ["y"])]
    m = model(nodes, [vi("x", ["N", 2, 3, 3])], [vi("y", ["N", 2, 6, 9])],
              [init("scales", np.array([1, 1, 2, 3], np.float32))], opset=9)
    onnx.save(m, tmp_path / "up.onnx")
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 3)).astype(np.float32)
    ref = ort_run(tmp_path / "up.onnx", {"x": x})
    ours, text = import_and_run(tmp_path, tmp_path / "up.onnx", {"x": x})
    assert "upsample((2, 3))" in text and close(ours["y"], ref["y"])
