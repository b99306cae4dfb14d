"""ONNX export: every library spec exports a valid model that ONNX Runtime runs to the reference outputs."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cnnc import plan as plan_mod  # noqa: E402
from cnnc.cli import main  # noqa: E402
from cnnc.compiler import compile_spec  # noqa: E402
from cnnc.errors import CnncError  # noqa: E402
from cnnc.onnx_export import export, save  # noqa: E402
from cnnc.weights import seeded_fixture_weights  # noqa: E402
from conftest import MODELS, SPECS, ZOO, zoo_meta  # noqa: E402


def session(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("model", MODELS)
def test_library_exports_and_onnxruntime_matches_the_reference(model, tmp_path):
    g = compile_spec(str(SPECS / f"{model}.cnn")).graph
    weights = seeded_fixture_weights(plan_mod.from_graph(g)["constants"])
    proto = export(g, weights)
    save(proto, str(tmp_path / "m.onnx"))  # runs onnx.checker with full_check
    # names: initializers are the spec's weight names, nodes its instance names, the batch is symbolic
    inits = {i.name for i in proto.graph.initializer}
    assert set(weights) <= inits
    assert {n for n in g.op_nodes()} <= {n.name for n in proto.graph.node}
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    meta = zoo_meta(model)
    x = np.random.default_rng(1).standard_normal(meta["input_shape"]).astype(np.float32)
    sess = session(tmp_path / "m.onnx")
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(None, {g.inputs[0]: x})))
    # ONNX Runtime on the export agrees with cnnc's own CPU runtime on the same weights and input ...
    from cnnc.runtime.executor import Program
    ours = Program(plan_mod.from_graph(g), weights, target="cpu").run({g.inputs[0]: x})
    for key, y in ours.items():
        assert np.max(np.abs(y - outs[key])) <= 1e-4 * np.max(np.abs(outs[key])), key
    # ... and with the reference implementation's outputs
    expected = np.load(ZOO / model / "expected.npz")
    for key in expected.files:
        y, ref = outs[key], expected[key]
        if model == "yolov3_tiny" and key == "output":
            assert np.all(np.abs(y - ref) <= 1e-3 * np.abs(ref) + 1e-3)
        else:
            assert np.max(np.abs(y - ref)) <= 1e-4 * np.max(np.abs(ref))


def test_cli_export_fixed_batch_and_opset(tmp_path, capsys):
    out = tmp_path / "l.onnx"
    assert main(["export", str(SPECS / "lenet5.cnn"), "-o", str(out), "--batch", "3", "--opset", "18"]) == 0
    err = capsys.readouterr().err
    assert "seeded initialisation" in err
    m = onnx.load(str(out))
    assert m.opset_import[0].version == 18
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3
    assert main(["export", str(SPECS / "lenet5.cnn"), "-o", str(out), "--batch", "zero"]) == 1


def test_unexpressible_op_is_refused_with_its_line(write_spec, tmp_path):
    path = write_spec("network n() {\n    input x: (N, 3, 10, 10)\n    adaptive_avgpool(3)\n}\n")
    g = compile_spec(path).graph
    with pytest.raises(CnncError) as e:
        export(g, {})
    d = e.value.diagnostics[0]
    assert "adaptive_avgpool" in d.message and "uneven bins" in d.message
    assert (d.span.line, d.span.column) == (3, 5)
    assert main(["export", path, "-o", str(tmp_path / "x.onnx")]) == 1
    assert not (tmp_path / "x.onnx").exists()


OPS = """\
network ops() {
    input x: (N, 4, 12, 12)
    a = pad(x, (1, 2, 0, 1), value=0.5)
    b = pad(x, 2, mode="reflect") -> pad((-1, -1, -1, -1), mode="replicate")
    c = conv(a, 8, (3, 2), stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2), groups=2, bias=false)
    d = conv_transpose(c, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
    e = avgpool(b, 3, stride=2, padding=1, ceil_mode=true, count_include_pad=false)
    f = maxpool(b, 3, stride=2, padding=(0, 0, 1, 1), ceil_mode=true)
    h = upsample(f, (2, 3)) -> lrn(3) -> hardsigmoid() -> hardswish()
    k = clip(d, min=-0.5) -> leaky_relu(0.2) -> silu() -> relu6() -> tanh()
    m = mul(k, global_maxpool(k) -> sigmoid())
    n = add(x, x, x) -> batchnorm(affine=false) -> affine() -> affine(shift=false)
    s = flatten(n) -> dense(7, bias=false) -> softmax()
    r = reshape(e, (2, 2, -1))
    output m, h, s, r
}
"""


def test_every_op_mapping_against_onnxruntime(write_spec, tmp_path):
    """The reference runtime and ONNX Runtime agree on an exported graph that uses every op mapping."""
    from cnnc.runtime.executor import Program
    from cnnc.weights import initialise
    spec = OPS.replace("global_maxpool(k) -> sigmoid()", "gate")
    spec = spec.replace("    m = mul(k, gate)", "    gate = global_maxpool(k) -> sigmoid()\n    m = mul(k, gate)")
    path = write_spec(spec)
    g = compile_spec(path).graph
    plan = plan_mod.from_graph(g)
    w = initialise(plan["constants"], seed=2)
    for c in plan["constants"]:
        if c["name"].endswith("running_var"):
            w[c["name"]] = np.linspace(0.5, 2.0, c["shape"][0]).astype(np.float32)
    save(export(g, w), str(tmp_path / "ops.onnx"))
    x = np.random.default_rng(3).standard_normal((2, 4, 12, 12)).astype(np.float32)
    ours = Program(plan, w).run({"x": x})
    sess = session(tmp_path / "ops.onnx")
    names = [o.name for o in sess.get_outputs()]
    theirs = dict(zip(names, sess.run(None, {"x": x})))
    assert set(ours) == set(theirs) == {"m", "h", "s", "r"}
    for k in ours:
        assert ours[k].shape == theirs[k].shape, k
        assert np.max(np.abs(ours[k] - theirs[k])) <= 1e-5 * max(1.0, np.max(np.abs(theirs[k]))), k
