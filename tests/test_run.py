"""`cnnc run`, `cnnc init` and the Python API, on real files."""

import subprocess
import sys

import numpy as np
import pytest

import cnnc
from cnnc.cli import main
from cnnc.compiler import compile_spec
from cnnc.errors import CnncError
from cnnc.fileio import load_arrays, save_arrays
from cnnc import plan as plan_mod
from conftest import ROOT, SPECS

LENET = str(SPECS / "lenet5.cnn")
TWO_OUT = """\
network two() {
    input a: (N, 2, 4, 4)
    input b: (N, 2, 4, 4)
    s = add(a, b)
    output total = s, pooled = global_avgpool(s)
}
"""


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def lenet_reference(x, w):
    """LeNet-5 written out directly in numpy (independent of cnnc's plan and executor)."""
    from cnnc.runtime import reference as R
    y = np.tanh(R.conv2d(x, w["conv1.weight"], w["conv1.bias"]))
    y = R.avg_pool2d(y, (2, 2), (2, 2))
    y = np.tanh(R.conv2d(y, w["conv2.weight"], w["conv2.bias"]))
    y = R.avg_pool2d(y, (2, 2), (2, 2)).reshape(len(x), -1)
    y = np.tanh(y @ w["fc1.weight"].T + w["fc1.bias"])
    y = np.tanh(y @ w["fc2.weight"].T + w["fc2.bias"])
    return y @ w["fc3.weight"].T + w["fc3.bias"]


@pytest.mark.parametrize("target", ["reference", "cpu"])
def test_run_npy_to_npy(capsys, tmp_path, target):
    x = np.random.default_rng(5).standard_normal((7, 1, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, _, err = run(capsys, "init", LENET, "-o", str(tmp_path / "w.npz"), "--seed", "4")
    assert code == 0
    code, out, err = run(capsys, "run", LENET, "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"),
                         "--weights", str(tmp_path / "w.npz"), "--batch-size", "3", "--target", target)
    assert code == 0, err
    y = np.load(tmp_path / "y.npy")
    w = dict(np.load(tmp_path / "w.npz"))
    ref = lenet_reference(x, w)
    assert y.shape == (7, 10)
    assert np.max(np.abs(y - ref)) <= 1e-4 * np.max(np.abs(ref))
    assert "top-5" in out and "#6" in out
    assert "ms per batch of 3" in err


def test_run_without_weights_or_input_says_so(capsys):
    code, out, err = run(capsys, "run", LENET, "--target", "reference")
    assert code == 0
    assert "no --weights: running on seeded initialisation" in err
    assert "no --input: running on a seeded synthetic batch of 1" in err
    assert out.startswith("output: shape (1, 10)")


def test_run_multi_output_npz_and_npy_refusal(capsys, tmp_path, write_spec):
    spec = write_spec(TWO_OUT)
    a = np.arange(64, dtype=np.float32).reshape(2, 2, 4, 4)
    b = np.ones_like(a)
    np.savez(tmp_path / "in.npz", a=a, b=b)
    code, _, err = run(capsys, "run", spec, "-i", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"),
                       "--target", "reference")
    assert code == 0, err
    out = np.load(tmp_path / "out.npz")
    assert sorted(out.files) == ["pooled", "total"]
    assert np.array_equal(out["total"], a + b)
    assert np.allclose(out["pooled"], (a + b).mean(axis=(2, 3), keepdims=True))
    code, _, err = run(capsys, "run", spec, "-i", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npy"))
    assert code == 1 and "2 outputs" in err and not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize("bad,words", [
    (np.zeros((2, 1, 28, 28), np.float32), "expected (N, 1, 32, 32)"),
    (np.zeros((32, 32), np.float32), "expected (N, 1, 32, 32)"),
    (np.array([["a"]]), "dtype"),
])
def test_run_rejects_wrong_inputs(capsys, tmp_path, bad, words):
    np.save(tmp_path / "x.npy", bad)
    code, _, err = run(capsys, "run", LENET, "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"))
    assert code == 1 and "E401" in err and words in err
    assert not (tmp_path / "y.npy").exists()


def test_nan_inputs_warn_or_refuse(capsys, tmp_path):
    x = np.zeros((1, 1, 32, 32), np.float32)
    x[0, 0, 3, 3] = np.nan
    np.save(tmp_path / "x.npy", x)
    code, _, err = run(capsys, "run", LENET, "-i", str(tmp_path / "x.npy"), "--target", "reference")
    assert code == 0 and "warning" in err and "1 NaN/Inf value" in err
    code, _, err = run(capsys, "run", LENET, "-i", str(tmp_path / "x.npy"), "--strict")
    assert code == 1 and "NaN/Inf" in err


def test_truncated_npy(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 32, 32), np.float32))
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[: len(data) // 2])
    code, _, err = run(capsys, "run", LENET, "-i", str(tmp_path / "t.npy"))
    assert code == 1 and "E401" in err and "Traceback" not in err


def test_images_and_folders(capsys, tmp_path, write_spec):
    from PIL import Image
    spec = write_spec("network im() {\n input x: (N, 3, 8, 8), mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0)\n"
                      " global_avgpool()\n flatten()\n}\n")
    folder = tmp_path / "imgs"
    folder.mkdir()
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for i, c in enumerate(colours):
        Image.new("RGB", (20, 10), c).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("ignored")
    code, out, err = run(capsys, "run", spec, "-i", str(folder), "-o", str(tmp_path / "y.npy"), "-b", "2",
                         "--target", "reference")
    assert code == 0, err
    y = np.load(tmp_path / "y.npy")
    expect = [[(c[k] / 255 - 0.5) / s for k, s in enumerate((0.5, 0.25, 1.0))] for c in colours]
    assert np.allclose(y, expect, atol=1e-6)
    assert "0.png" in out
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    code, _, err = run(capsys, "run", spec, "-i", str(tmp_path / "broken.jpg"))
    assert code == 1 and "unreadable image" in err


def test_init_is_a_proper_initialisation(capsys, tmp_path):
    code, _, _ = run(capsys, "init", str(SPECS / "resnet18.cnn"), "-o", str(tmp_path / "w.safetensors"), "--seed", "2")
    assert code == 0
    w = load_arrays(str(tmp_path / "w.safetensors"))
    assert np.all(w["bn1.weight"] == 1) and np.all(w["bn1.bias"] == 0)
    assert np.all(w["bn1.running_mean"] == 0) and np.all(w["bn1.running_var"] == 1)
    conv = w["layer3.0.conv2.weight"]  # fan-in 256 * 9: He std sqrt(2 / 2304)
    assert abs(conv.std() - np.sqrt(2 / 2304)) < 0.02 * np.sqrt(2 / 2304)
    assert np.all(w["fc.bias"] == 0)
    again = tmp_path / "again.safetensors"
    run(capsys, "init", str(SPECS / "resnet18.cnn"), "-o", str(again), "--seed", "2")
    assert again.read_bytes() == (tmp_path / "w.safetensors").read_bytes()


def test_torchvision_style_state_dict_loads_by_name(tmp_path):
    """A checkpoint with the reference's keys (plus torch's num_batches_tracked) loads unchanged."""
    import json
    keys = json.loads((ROOT / "tests/fixtures/zoo/resnet18/keys.json").read_text())
    rng = np.random.default_rng(0)
    state = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in keys}
    for name, _ in keys:
        if name.endswith("running_var"):
            state[name] = np.abs(state[name]) + 0.5
            state[name.replace("running_var", "num_batches_tracked")] = np.array(7, dtype=np.int64)
    np.savez(tmp_path / "r18.npz", **state)
    save_arrays(str(tmp_path / "r18.safetensors"), {k: v for k, v in state.items() if v.dtype == np.float32})
    for path in ("r18.npz", "r18.safetensors"):
        model = cnnc.load(str(SPECS / "resnet18.cnn"), weights=str(tmp_path / path), target="reference")
        assert model.weights_source.endswith(path)


def test_weight_mismatch_reports_everything(tmp_path):
    plan = plan_mod.from_graph(compile_spec(LENET).graph)
    from cnnc.weights import initialise
    w = initialise(plan["constants"])
    del w["conv1.weight"], w["fc2.bias"]
    w["fc1.weight"] = w["fc1.weight"].T.copy()
    w["extra.thing"] = np.zeros(3, np.float32)
    w["fc3.bias"] = np.full(10, np.nan, np.float32)
    with pytest.raises(CnncError) as e:
        cnnc.load(LENET, weights=w)
    msg = e.value.diagnostics[0].message
    for words in ("missing conv1.weight (6, 1, 5, 5)", "missing fc2.bias (84,)", "unexpected extra.thing (3,)",
                  "fc1.weight: shape (400, 120), expected (120, 400)", "fc3.bias: 10 NaN/Inf values",
                  "2 missing", "1 unexpected", "2 wrong"):
        assert words in msg
    model = cnnc.load(LENET, weights={k: v for k, v in w.items() if k in ("conv1.bias",)}, allow_missing=True,
                      target="reference")
    assert "missing tensors initialised" in model.weights_source


def test_python_api(tmp_path):
    model = cnnc.load(LENET, target="reference")
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    y = model(x)
    assert y.shape == (3, 10)
    assert model.inputs == {"x": (1, 32, 32)} and model.outputs == {"output": (10,)}
    assert "fc3" in model.summary() and "61,706" in model.summary()
    with pytest.raises(CnncError, match="expected"):
        model(x[:, :, :30])
    # a compiled plan with bundled weights runs the same function
    from cnnc.weights import initialise
    plan = plan_mod.from_graph(compile_spec(LENET).graph)
    w = initialise(plan["constants"], seed=0)
    plan_mod.save(str(tmp_path / "l.cnnplan"), plan, w)
    again = cnnc.load(str(tmp_path / "l.cnnplan"), target="reference")
    assert np.array_equal(again(x), y)
    assert "conv1" in again.summary()


def test_outputs_are_written_atomically(tmp_path):
    """Killing `cnnc run` mid-way never leaves a partial output: the file appears complete or not at all."""
    x = np.random.default_rng(0).standard_normal((64, 1, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    proc = subprocess.Popen([sys.executable, "-m", "cnnc", "run", LENET, "-i", str(tmp_path / "x.npy"), "-o", str(out),
                             "-b", "1", "--target", "reference"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import time
    time.sleep(1.0)
    proc.kill()
    proc.wait()
    assert not out.exists() or np.load(out).shape == (64, 10)
