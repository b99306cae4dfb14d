"""`--target cuda` where no GPU can be used fails at once: one line saying what was looked for and what
was found, exit status 1, no traceback. Run as real `cnnc` processes without the simulator (importing
numba.cuda stays out of this test process)."""

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import ROOT, SPECS

LENET = str(SPECS / "lenet5.cnn")

# A process in which numba-cuda looks uninstalled, to see the message a user without the extra gets.
WITHOUT_NUMBA_CUDA = """
import importlib.util, sys
find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == "numba_cuda" else find_spec(name, *a)
from cnnc.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cnnc(*args, without_numba_cuda=False):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    cmd = [sys.executable, "-c", WITHOUT_NUMBA_CUDA] if without_numba_cuda else [sys.executable, "-m", "cnnc"]
    return subprocess.run(cmd + list(args), check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc, *fragments):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("cnnc: error[E406]: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize("command", ["run", "bench"])
def test_no_gpu_is_one_line(command):
    proc = cnnc(command, LENET, "--target", "cuda")
    if proc.returncode == 0:
        pytest.skip("a usable CUDA GPU is present")
    if importlib.util.find_spec("numba_cuda") is None:
        assert_one_line_error(proc, "numba-cuda", "pip install -e .[cuda]")
    else:
        assert_one_line_error(proc, "no usable NVIDIA GPU", "looked for the CUDA driver", "found: ", "--target cpu")


def test_missing_numba_cuda_is_one_line_with_the_install_command():
    proc = cnnc("run", LENET, "--target", "cuda", without_numba_cuda=True)
    assert_one_line_error(proc, "needs the numba-cuda package", "not installed", "pip install -e .[cuda]")
