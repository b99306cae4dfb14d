"""Bad conditions: memory refused before allocating, files never half-written when cnnc is killed,
flat memory over a long stream."""

import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest

import cnnc
from cnnc.cli import main
from cnnc.errors import CnncError
from conftest import SPECS

LENET = str(SPECS / "lenet5.cnn")


def test_batch_too_large_for_memory_is_refused_before_allocating(capsys):
    model = cnnc.load(LENET, memory_limit=100_000)  # bytes
    x = np.zeros((64, 1, 32, 32), np.float32)
    with pytest.raises(CnncError) as e:
        model(x)
    assert e.value.code == "E405" and "batch 64 needs about" in e.value.diagnostics[0].message
    assert model(x[:1]).shape == (1, 10)  # a batch that fits still runs
    ref = cnnc.load(LENET, target="reference", memory_limit=1000)
    with pytest.raises(CnncError, match="not enough memory"):
        ref(x)
    # a synthetic batch that could never fit: refused at once with the estimate, no MemoryError
    t0 = time.perf_counter()
    assert main(["run", str(SPECS / "resnet18.cnn"), "--batch-size", "50000000"]) == 1
    err = capsys.readouterr().err
    assert "E405" in err and "GiB" in err and "Traceback" not in err
    assert time.perf_counter() - t0 < 30


def _complete(path: str, kind: str) -> bool:
    """Whether a file cnnc wrote is complete (loads fully)."""
    if kind == "npz":
        return bool(dict(np.load(path)))
    if kind == "plan":
        from cnnc import plan
        plan.load(path)
        return True
    if kind == "onnx":
        import onnx
        onnx.checker.check_model(onnx.load(path))
        return True
    if kind == "cnn":
        from cnnc.compiler import compile_spec
        compile_spec(path)
        return True
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["npz", "plan", "onnx", "cnn"])
def test_killed_at_random_moments_never_leaves_a_truncated_file(tmp_path, kind):
    """init, compile, export and import are killed at random moments: the destination is absent or complete."""
    if kind in ("onnx", "cnn"):
        pytest.importorskip("onnx")
    src = tmp_path / "r18.onnx"
    if kind == "cnn":
        assert main(["export", str(SPECS / "resnet18.cnn"), "-o", str(src)]) == 0
    commands = {
        "npz": ["init", str(SPECS / "resnet18.cnn"), "-o", "{out}.npz"],
        "plan": ["compile", str(SPECS / "resnet18.cnn"), "-o", "{out}.cnnplan", "--weights", str(tmp_path / "w.npz")],
        "onnx": ["export", str(SPECS / "resnet18.cnn"), "-o", "{out}.onnx"],
        "cnn": ["import", str(src), "-o", "{out}.cnn", "--weights-out", "{out}.npz"],
    }
    if kind == "plan":
        assert main(["init", str(SPECS / "resnet18.cnn"), "-o", str(tmp_path / "w.npz")]) == 0
    rng = random.Random(42)
    seen_complete = seen_absent = 0
    for i in range(6):
        out = str(tmp_path / f"out{i}")
        args = [a.format(out=out) for a in commands[kind]]
        dest = args[args.index("-o") + 1]
        proc = subprocess.Popen([sys.executable, "-m", "cnnc", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 4.0))
        proc.kill()
        proc.wait()
        if os.path.exists(dest):
            assert _complete(dest, "npz" if dest.endswith(".npz") else kind)
            seen_complete += 1
        else:
            seen_absent += 1
    assert seen_complete + seen_absent == 6


def test_long_stream_keeps_flat_memory(tmp_path):
    """Many batches through one model: resident memory at the end is what it was after the first batches."""
    from cnnc.bench import rss_mb
    model = cnnc.load(str(SPECS / "resnet18.cnn"))
    x = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
    for _ in range(5):
        model(x)
    start = rss_mb()
    for _ in range(60):
        model(x)
    assert rss_mb() - start < 20  # MB


@pytest.mark.parametrize("damage", ["truncated-npz", "truncated-safetensors", "int-dtype", "header-lies", "missing"])
def test_damaged_weight_files_are_one_clear_error(tmp_path, capsys, damage):
    from cnnc.fileio import save_arrays
    assert main(["init", LENET, "-o", str(tmp_path / "w.npz")]) == 0
    w = dict(np.load(tmp_path / "w.npz"))
    save_arrays(str(tmp_path / "w.safetensors"), w)
    capsys.readouterr()
    if damage == "truncated-npz":
        data = (tmp_path / "w.npz").read_bytes()
        path = tmp_path / "t.npz"
        path.write_bytes(data[: len(data) // 3])
        words = "not a readable .npz"
    elif damage == "truncated-safetensors":
        data = (tmp_path / "w.safetensors").read_bytes()
        path = tmp_path / "t.safetensors"
        path.write_bytes(data[: len(data) - 100])
        words = "not a valid .safetensors"
    elif damage == "header-lies":
        data = bytearray((tmp_path / "w.safetensors").read_bytes())
        data[0:8] = (10 ** 9).to_bytes(8, "little")
        path = tmp_path / "h.safetensors"
        path.write_bytes(bytes(data))
        words = "exceeds the file"
    elif damage == "int-dtype":
        w["conv1.weight"] = w["conv1.weight"].astype(np.int32)
        path = tmp_path / "i.npz"
        np.savez(path, **w)
        words = "conv1.weight: dtype int32, expected a float type"
    else:
        path = tmp_path / "none.npz"
        words = "no such file"
    code = main(["run", LENET, "--weights", str(path), "--output", str(tmp_path / "y.npy")])
    err = capsys.readouterr().err
    assert code == 1 and words in err and "Traceback" not in err
    assert not (tmp_path / "y.npy").exists()


def test_pickled_npz_is_refused(tmp_path, capsys):
    """An .npz holding a pickled object array is never unpickled."""
    np.savez(tmp_path / "evil.npz", **{"conv1.weight": np.array([{"a": 1}], dtype=object)})
    code = main(["run", LENET, "--weights", str(tmp_path / "evil.npz")])
    err = capsys.readouterr().err
    assert code == 1 and "E400" in err and "Traceback" not in err
