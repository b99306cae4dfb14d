"""`cnnc bench`: the report's structure, the profile, and that the peers run the same function."""

import json

import numpy as np
import pytest

from cnnc import plan as plan_mod
from cnnc.cli import main
from cnnc.compiler import compile_spec
from cnnc.runtime.executor import Program
from cnnc.weights import seeded_fixture_weights
from conftest import SPECS, zoo_meta


def test_bench_json_with_onnxruntime_and_profile(capsys):
    pytest.importorskip("onnxruntime")
    code = main(["bench", str(SPECS / "lenet5.cnn"), "--compare", "onnxruntime", "--batch-size", "1,4",
                 "--repeat", "3", "--warmup", "1", "--profile", "--format", "json"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)
    from cnnc.runtime.cpu.isa import VECTOR_UNIT, target_cpu, vector_unit_for
    assert report["vector_unit"] == VECTOR_UNIT.key == vector_unit_for(*target_cpu()).key
    rows = {(r["engine"], r["batch"]): r for r in report["results"]}
    assert set(rows) == {("cnnc", 1), ("cnnc", 4), ("onnxruntime", 1), ("onnxruntime", 4)}
    for r in rows.values():
        assert 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["throughput"] > 0
    assert rows[("onnxruntime", 4)]["cnnc_ratio"] == pytest.approx(rows[("cnnc", 4)]["median_ms"]
                                                                     / rows[("onnxruntime", 4)]["median_ms"])
    for batch in (1, 4):  # a profile per batch size
        prof = [p for p in report["profile"] if p["batch"] == batch]
        assert {p["step"] for p in prof} == {"conv1", "avgpool#1", "conv2", "avgpool#2", "fc1", "fc2", "fc3"}
        assert sum(p["share"] for p in prof) == pytest.approx(1.0)
        assert all(p["shape"][0] == batch for p in prof)
        assert next(p for p in prof if p["step"] == "conv1")["op"] == "conv+tanh"
    assert len(report["profile"]) == 14


def test_bench_table_and_bad_arguments(capsys):
    assert main(["bench", str(SPECS / "lenet5.cnn"), "--repeat", "2", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "median ms" in out and "cnnc" in out
    assert main(["bench", str(SPECS / "lenet5.cnn"), "--batch-size", "0"]) == 1
    assert main(["bench", str(SPECS / "lenet5.cnn"), "--compare", "tensorflow"]) == 1


@pytest.mark.parametrize("model", ["googlenet", "efficientnet_b0", "yolov3_tiny", "unet", "dcgan_generator",
                                   "densenet121"])
def test_torch_peer_computes_the_same_function(model):
    """The PyTorch peer runs the unfused plan with torch.nn.functional: it must agree with the reference."""
    pytest.importorskip("torch")
    from cnnc.bench import torch_runner
    g = compile_spec(str(SPECS / f"{model}.cnn"), stop_after="dce").graph
    plan = plan_mod.from_graph(g)
    w = seeded_fixture_weights(plan["constants"])
    x = np.random.default_rng(1).standard_normal([1, *zoo_meta(model)["input_shape"][1:]]).astype(np.float32)
    ours = Program(plan, w).run({plan["inputs"][0]["name"]: x})
    theirs = torch_runner(plan, w, 2)(x)
    for (k, ref), y in zip(ours.items(), theirs):
        if model == "yolov3_tiny" and k == "output":
            assert np.all(np.abs(y - ref) <= 1e-3 * np.abs(ref) + 1e-3)
        else:
            assert np.max(np.abs(y - ref)) <= 1e-4 * np.max(np.abs(ref)), k
