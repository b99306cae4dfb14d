"""ONNX exports of torchvision's classification models (the graphs, weights stripped, in
tests/fixtures/onnx_torchvision; see its README for how they were made) import into cnnc and compute the
same function as ONNX Runtime on the original file, with seeded weights filled in."""

import os
import pathlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402

from cnnc import plan as plan_mod  # noqa: E402
from cnnc.compiler import compile_spec  # noqa: E402
from cnnc.onnx_import import import_model  # noqa: E402
from cnnc.runtime.executor import Program  # noqa: E402
from cnnc.weights import match  # noqa: E402

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "onnx_torchvision"
MODELS = sorted(p.stem for p in FIXTURES.glob("*.onnx"))
# The VGG exports differ only in depth and batchnorm and cost ~11 s each with their 130M seeded weights: the
# default run keeps vgg16_bn (its plain convolution + relu pairs are also squeezenet's), CNNC_ALL_TORCHVISION=1
# runs all.
DEPTH_ONLY_VARIANTS = {"vgg11", "vgg11_bn", "vgg13", "vgg16", "vgg19"}
RUN = [m for m in MODELS if os.environ.get("CNNC_ALL_TORCHVISION") == "1" or m not in DEPTH_ONLY_VARIANTS]


def filled(model_name: str):
    """The stripped graph with seeded weights: normal(0, 0.05), batchnorm variances uniform(0.5, 1.5)."""
    m = onnx.load(str(FIXTURES / f"{model_name}.onnx"))
    variances = {n.input[4] for n in m.graph.node if n.op_type == "BatchNormalization"}
    rng = np.random.default_rng(0)
    for init in m.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or init.raw_data or init.float_data:
            continue
        shape = tuple(init.dims)
        if init.name in variances:
            a = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            a = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.05)
        init.CopyFrom(numpy_helper.from_array(a, init.name))
    return m


def test_all_families_are_there():
    for family in ("resnet18", "resnet152", "vgg11", "vgg19", "vgg16_bn", "densenet121", "densenet201",
                   "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b7", "googlenet",
                   "squeezenet1_0", "squeezenet1_1", "mnasnet0_5", "mnasnet1_3"):
        assert family in MODELS


@pytest.mark.parametrize("name", RUN)
def test_torchvision_export_imports_and_matches_onnxruntime(name, tmp_path):
    m = filled(name)
    onnx.save(m, str(tmp_path / "m.onnx"))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    (ref,) = sess.run(None, {inp.name: x})
    # the CLI path (spec and weight files) is tested on the library; here the weights stay in memory
    text, arrays = import_model(str(tmp_path / "m.onnx"))
    spec = tmp_path / "m.cnn"
    spec.write_text(text)
    g = compile_spec(str(spec)).graph
    plan = plan_mod.from_graph(g)
    weights, _ = match(plan["constants"], arrays)
    out = Program(plan, weights, target="cpu").run({plan["inputs"][0]["name"]: x})
    (y,) = out.values()
    assert y.shape == ref.shape == (2, 1000)
    assert np.max(np.abs(y - ref)) <= 1e-4 * np.max(np.abs(ref))
