"""The command line: help, exit codes, compile, and what a new user types first."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cnnc import plan as plan_mod
from cnnc.cli import main
from cnnc.errors import CnncError
from conftest import ROOT, SPECS


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args", [["--help"], ["inspect", "--help"], ["compile", "--help"], ["ops", "--help"]])
def test_help_explains_itself(capsys, args):
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "usage: cnnc" in out
    if args[0] != "ops":
        assert "examples:" in out


def test_no_command_prints_help_and_fails(capsys):
    code, out, _ = run(capsys)
    assert code == 1 and "inspect" in out


def test_bad_command_line_is_one_clear_error(capsys):
    code, _, err = run(capsys, "inspect")
    assert code == 1 and "error[E100]" in err and "spec" in err and "Traceback" not in err


def test_missing_file(capsys):
    code, _, err = run(capsys, "inspect", "no/such/file.cnn")
    assert code == 1 and "E404" in err and "no/such/file.cnn" in err


def test_ops_reference(capsys):
    code, out, _ = run(capsys, "ops")
    assert code == 0
    assert "conv(filters, kernel, stride=1, padding=0, dilation=1, groups=1, bias=true)" in out
    code, out, _ = run(capsys, "ops", "maxpool")
    assert code == 0 and out.startswith("maxpool(kernel")


def test_set_overrides(capsys):
    code, out, _ = run(capsys, "inspect", str(SPECS / "lenet5.cnn"), "--set", "classes=3")
    assert code == 0 and "fc3        dense    (N, 3)" in out
    code, _, err = run(capsys, "inspect", str(SPECS / "lenet5.cnn"), "--set", "clases=3")
    assert code == 1 and "no parameter 'clases'" in err and "classes" in err


def test_compile_writes_a_plan_that_loads_back_identically(capsys, tmp_path):
    out = tmp_path / "lenet.cnnplan"
    code, _, err = run(capsys, "compile", str(SPECS / "lenet5.cnn"), "-o", str(out))
    assert code == 0 and "wrote" in err
    plan, weights = plan_mod.load(str(out))
    assert weights is None
    assert [s["name"] for s in plan["steps"]][:2] == ["conv1", "avgpool#1"]  # tanh runs inside conv1
    assert plan["steps"][0]["attrs"]["act"] == ("tanh", ())
    assert plan["steps"][0]["attrs"]["kernel"] == (5, 5)
    again = tmp_path / "again.cnnplan"
    plan_mod.save(str(again), plan, None)
    assert again.read_bytes() == out.read_bytes()


def test_compile_with_weights_checks_and_bundles_them(capsys, tmp_path):
    import numpy as np
    from cnnc.weights import initialise
    plan = plan_mod.from_graph(__import__("cnnc.compiler", fromlist=["x"]).compile_spec(str(SPECS / "lenet5.cnn")).graph)
    w = initialise(plan["constants"], seed=1)
    np.savez(tmp_path / "w.npz", **w)
    out = tmp_path / "l.cnnplan"
    code, _, err = run(capsys, "compile", str(SPECS / "lenet5.cnn"), "-o", str(out), "--weights", str(tmp_path / "w.npz"))
    assert code == 0, err
    _, loaded = plan_mod.load(str(out))
    assert set(loaded) == set(w) and all(np.array_equal(loaded[k], w[k]) for k in w)
    # a wrong-shaped and a missing tensor: one message listing both, and no output file
    w["fc3.weight"] = w["fc3.weight"][:5]
    del w["conv1.bias"]
    np.savez(tmp_path / "bad.npz", **w)
    bad_out = tmp_path / "bad.cnnplan"
    code, _, err = run(capsys, "compile", str(SPECS / "lenet5.cnn"), "-o", str(bad_out), "--weights", str(tmp_path / "bad.npz"))
    assert code == 1
    assert "missing conv1.bias (6,)" in err and "fc3.weight: shape (5, 84), expected (10, 84)" in err
    assert not bad_out.exists()


def test_plan_checksum_and_version_are_verified(tmp_path):
    import json
    import zipfile
    from cnnc.compiler import compile_spec
    path = tmp_path / "p.cnnplan"
    plan_mod.save(str(path), plan_mod.from_graph(compile_spec(str(SPECS / "lenet5.cnn")).graph))
    with zipfile.ZipFile(path) as z:
        data = json.loads(z.read("plan.json"))
    for mutate, words in [(lambda d: d["steps"][0]["attrs"].update(filters=7), "checksum"),
                          (lambda d: d.update(version=99), "version 99")]:
        d = json.loads(json.dumps(data))
        mutate(d)
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("plan.json", json.dumps(d))
        with pytest.raises(CnncError, match=words) as e:
            plan_mod.load(str(path))
        assert e.value.code == "E402"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CnncError) as e:
        plan_mod.load(str(path))
    assert e.value.code == "E402"


def test_unwritable_output(capsys, tmp_path):
    code, _, err = run(capsys, "compile", str(SPECS / "lenet5.cnn"), "-o", str(tmp_path / "missing" / "x.cnnplan"))
    assert code == 1 and "E403" in err


def test_internal_errors_are_one_line_unless_debug(capsys, monkeypatch):
    import cnnc.cli as cli
    monkeypatch.setitem(cli.COMMANDS, "ops", lambda args: 1 / 0)
    code, _, err = run(capsys, "ops")
    assert code == 2 and err.count("\n") == 1 and "internal error: ZeroDivisionError" in err
    code, _, err = run(capsys, "--debug", "ops")
    assert code == 2 and "Traceback" in err


def test_readme_two_commands_print_a_resnet50_summary():
    """The README's first run: (install, then) `cnnc inspect specs/resnet50.cnn`, in a real process."""
    r = subprocess.run([sys.executable, "-m", "cnnc", "inspect", "specs/resnet50.cnn"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "parameters: 25,557,032 learnable" in r.stdout
    assert "MACs per sample: 4,089,184,256" in r.stdout
    assert r.stderr == ""


def test_spec_outside_the_checkout_imports_from_the_library(tmp_path):
    spec = tmp_path / "r34.cnn"
    spec.write_text('import "resnet.cnn"\nnetwork resnet34 = resnet(depth=34)\n')
    r = subprocess.run([sys.executable, "-m", "cnnc", "inspect", str(spec), "--format", "json"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert '"parameters": 21797672' in r.stdout


def test_run_and_bench_compile_at_the_level_asked(capsys, tmp_path):
    """`cnnc run` and `cnnc bench` take -O and --disable as `compile` does: LeNet-5 at -O0 runs its tanh
    activations as steps of their own (four more steps: after conv1, conv2, fc1, fc2), computing the same outputs; an unknown pass is refused,
    and so are optimisation flags for a plan compiled already."""
    spec = str(SPECS / "lenet5.cnn")
    steps = {}
    for flags in (["-O0"], ["--disable", "fuse_activation"], []):
        code, out, _ = run(capsys, "bench", spec, "--repeat", "1", "--warmup", "0", "--format", "json", *flags)
        assert code == 0
        steps[" ".join(flags)] = json.loads(out)["steps"]
    assert steps["-O0"] == steps["--disable fuse_activation"] == steps[""] + 4
    outputs = {}
    for level in ("0", "2"):
        path = tmp_path / f"y{level}.npy"
        code, _, _ = run(capsys, "run", spec, f"-O{level}", "--output", str(path))
        assert code == 0
        outputs[level] = np.load(path)
    np.testing.assert_allclose(outputs["0"], outputs["2"], rtol=1e-5, atol=1e-6)
    code, _, err = run(capsys, "run", spec, "--disable", "no_such_pass")
    assert code == 1 and "unknown pass 'no_such_pass'" in err
    plan = tmp_path / "lenet.cnnplan"
    assert run(capsys, "compile", spec, "-o", str(plan))[0] == 0
    code, _, err = run(capsys, "run", str(plan), "-O1")
    assert code == 1 and "chosen when it was compiled" in err


def test_outputs_are_bitwise_the_same_in_separate_processes(tmp_path):
    """Two `cnnc run` processes (2 threads, seeded weights and input) write bitwise identical outputs: no
    run-to-run freedom in how the kernels split or sum their work (in one process: test_cpu_program)."""
    outs = []
    for i in range(2):
        path = tmp_path / f"y{i}.npy"
        subprocess.run([sys.executable, "-m", "cnnc", "run", str(SPECS / "resnet18.cnn"), "--threads", "2",
                        "--batch-size", "2", "-o", str(path)], check=True, capture_output=True, cwd=tmp_path)
        outs.append(np.load(path))
    assert outs[0].shape == (2, 1000) and np.isfinite(outs[0]).all()
    assert outs[0].tobytes() == outs[1].tobytes()


def test_running_a_compiled_plan_imports_no_compiler(tmp_path):
    """A process that loads a .cnnplan and runs it imports neither the parser (lark) nor the graph IR
    (networkx): about 12 MB of a small model's process peak (MobileNet-V2: 182 -> 171 MB once a stray import
    of the passes was gone)."""
    plan = tmp_path / "lenet.cnnplan"
    assert main(["compile", str(SPECS / "lenet5.cnn"), "-o", str(plan)]) == 0
    code = ("import sys, numpy as np, cnnc\n"
            f"m = cnnc.load({str(plan)!r})\n"
            "m.run({'x': np.zeros((1, 1, 32, 32), np.float32)})\n"
            "print(sorted({k.split('.')[0] for k in sys.modules} & {'lark', 'networkx', 'onnx', 'torch'}))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
