"""The spec library against the model zoo's reference facts (tests/fixtures/zoo, copied from the
reference implementations: torchvision for the ImageNet models)."""

import numpy as np
import pytest

from cnnc import plan as plan_mod
from cnnc.compiler import compile_spec
from cnnc.inspect import to_json
from cnnc.weights import seeded_fixture_weights
from conftest import MODELS, SPECS, ZOO, zoo_keys, zoo_meta


@pytest.fixture(scope="module", params=MODELS)
def compiled(request):
    model = request.param
    return model, compile_spec(str(SPECS / f"{model}.cnn"), stop_after="dce")  # the network as written


def test_parameters_and_macs_exact(compiled):
    model, result = compiled
    info = to_json(result.graph)
    meta = zoo_meta(model)
    assert info["parameters"] == meta["parameters"]
    assert info["macs"] == meta["macs_per_sample"]


def test_weight_names_shapes_and_order_exact(compiled):
    model, result = compiled
    ours = [[w["name"], w["shape"]] for w in to_json(result.graph)["weights"]]
    assert ours == zoo_keys(model)


def test_output_shape(compiled):
    model, result = compiled
    meta = zoo_meta(model)
    g = result.graph
    first = next(iter(g.outputs.values()))
    assert [meta["input_shape"][0], *g.node(first)["shape"]] == meta["output_shape"]
    assert list(g.node(g.inputs[0])["shape"]) == meta["input_shape"][1:]


def test_batchnorm_eps(compiled):
    model, result = compiled
    g = result.graph
    eps = sorted({g.node(n)["attrs"]["eps"] for n in g.op_nodes() if g.node(n)["op"] == "batchnorm"})
    assert eps == sorted(zoo_meta(model)["batchnorm_eps"])


def test_no_warnings_on_library(compiled):
    model, result = compiled
    assert result.warnings == []


# Parameter counts that torchvision documents for its models (weights metadata `num_params`): the
# family specs must reproduce every variant, not just the one in the fixtures.
FAMILY = [
    ("resnet", {"depth": 34}, 21797672), ("resnet", {"depth": 101}, 44549160),
    ("resnet", {"depth": 152}, 60192808), ("densenet", {"depth": 161}, 28681000),
    ("densenet", {"depth": 169}, 14149480), ("densenet", {"depth": 201}, 20013928),
    ("vgg", {"depth": 11}, 132863336), ("vgg", {"depth": 13}, 133047848), ("vgg", {"depth": 19}, 143667240),
    ("vgg", {"depth": 16, "batchnorm": True}, 138365992),
    ("efficientnet", {"variant": 1}, 7794184), ("efficientnet", {"variant": 2}, 9109994),
    ("efficientnet", {"variant": 3}, 12233232), ("efficientnet", {"variant": 4}, 19341616),
    ("efficientnet", {"variant": 5}, 30389784), ("efficientnet", {"variant": 6}, 43040704),
    ("efficientnet", {"variant": 7}, 66347960),
]


@pytest.mark.parametrize("spec,overrides,params", FAMILY, ids=[f"{s}-{list(o.values())}" for s, o, _ in FAMILY])
def test_family_variants(spec, overrides, params):
    result = compile_spec(str(SPECS / f"{spec}.cnn"), overrides)
    assert result.graph.parameters() == params


def test_efficientnet_resolution_scales_with_variant():
    sizes = [compile_spec(str(SPECS / "efficientnet.cnn"), {"variant": v}).graph.node("x")["shape"][1]
             for v in range(8)]
    assert sizes == [224, 240, 260, 300, 380, 456, 528, 600]


def test_mobilenet_width_multiplier():
    # torchvision mobilenet_v2(width_mult=0.5) has 1,968,680 parameters (channels rounded to 8).
    g = compile_spec(str(SPECS / "mobilenet_v2.cnn"), {"width": 0.5}).graph
    assert g.parameters() == 1968680


def test_yolo_classes_override():
    g = compile_spec(str(SPECS / "yolov3_tiny.cnn"), {"classes": 20}).graph
    assert g.node(g.outputs["output"])["shape"] == (2535, 25)
    assert g.constants["head1.conv.weight"].shape == (75, 512, 1, 1)


# VGG-16 on the numpy reference target takes 16 s of the suite's ten minutes and runs no op the other models do
# not run there; its specs' numerics are checked on the cpu target.
NUMERICS = [pytest.param(m, t, id=f"{m}-{t}") for m in MODELS for t in ("reference", "cpu")
            if (m, t) != ("vgg16", "reference")]


@pytest.mark.parametrize("model,target", NUMERICS)
def test_numerics_match_expected(model, target):
    """The specs compute the reference function: the numpy reference runtime and the Numba CPU runtime,
    on the zoo's seeded weights and input, agree with the reference implementation's outputs
    (expected.npz) by the fixtures' agreement rule."""
    from cnnc.runtime.executor import Program
    result = compile_spec(str(SPECS / f"{model}.cnn"))
    plan = plan_mod.from_graph(result.graph)
    weights = seeded_fixture_weights(plan["constants"])
    meta = zoo_meta(model)
    x = np.random.default_rng(1).standard_normal(meta["input_shape"]).astype(np.float32)
    out = Program(plan, weights, target=target).run({plan["inputs"][0]["name"]: x})
    expected = np.load(ZOO / model / "expected.npz")
    for key in expected.files:
        y, ref = out[key], expected[key]
        assert y.shape == ref.shape
        if model == "yolov3_tiny" and key == "output":
            assert np.all(np.abs(y - ref) <= 1e-3 * np.abs(ref) + 1e-3)
        else:
            assert np.max(np.abs(y - ref)) <= 1e-4 * np.max(np.abs(ref))
