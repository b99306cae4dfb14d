"""The CUDA target without a GPU (CI has none), part 1: every kernel and fusion, lenet5 and a small ResNet
run under Numba's CUDA simulator and match the reference target.

The cases live in cuda_simulator_cases.py and run in a subprocess with NUMBA_ENABLE_CUDASIM=1: the
simulator is chosen when numba.cuda is first imported, so it must not share this process (whose other
tests use the Numba CPU kernels). Its pytest output is shown when a case fails.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import ROOT

HERE = os.path.dirname(os.path.abspath(__file__))

needs_numba_cuda = pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                                      reason="numba-cuda is not installed (pip install -e '.[cuda]')")


def run_cases(filename: str, simulator: bool) -> None:
    """Run a case file under pytest in a fresh interpreter, with or without the CUDA simulator."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                           os.path.join(HERE, filename)], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{filename} failed:\n{proc.stdout[-8000:]}\n{proc.stderr[-3000:]}"
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]


@needs_numba_cuda
def test_cuda_kernels_match_the_reference_in_the_simulator():
    run_cases("cuda_simulator_cases.py", simulator=True)
