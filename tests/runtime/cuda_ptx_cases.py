"""Every CUDA kernel compiles to PTX for sm_80 and sm_90 with numba.cuda.compile_ptx (NVVM and libdevice
come from PyPI with numba-cuda[cu12]; no GPU or driver needed), with the exact signature the program
launches; and every op of the CPU target has CUDA kernels.

Run by test_cuda_ptx.py in a subprocess without the simulator: importing numba.cuda for real, and the
compiler's memory, stay out of the main test process.
"""

import os

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("PTX needs the real CUDA compiler, not the simulator", allow_module_level=True)

from numba import cuda

from cnnc.runtime.cuda import KERNELS, OP_KERNELS
from cnnc.runtime.executor import REFERENCE_STEPS
from cnnc.runtime.memory import VIEW_OPS

COMPUTE_CAPABILITIES = [(8, 0), (9, 0)]
# Kernels whose register tiles must be fully unrolled: no local-memory traffic at all (the direct
# kernel's accumulators leave registers once, for its epilogue).
NO_LOCAL_MEMORY = {"gemm", "conv2d_depthwise"}


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_compiles_to_ptx(name):
    k = KERNELS[name]
    for cc in COMPUTE_CAPABILITIES:
        ptx, _ = cuda.compile_ptx(k.py_func, k.signature, cc=cc)
        assert f".target sm_{cc[0]}{cc[1]}" in ptx and ".entry" in ptx, (name, cc)
        if name in NO_LOCAL_MEMORY:
            assert "ld.local" not in ptx and "st.local" not in ptx, (name, cc)


def test_every_op_of_the_cpu_target_has_cuda_kernels():
    """The op table of the reference and CPU targets (executor.step_table) against OP_KERNELS: a new op
    without CUDA kernels fails here."""
    ops = set(REFERENCE_STEPS) - VIEW_OPS
    assert ops - set(OP_KERNELS) == set(), "ops without a CUDA kernel"
    assert set(OP_KERNELS) - ops == set(), "CUDA kernels for ops the CPU target does not have"
    listed = {k for names in OP_KERNELS.values() for k in names}
    assert listed - set(KERNELS) == set(), "OP_KERNELS names kernels that do not exist"
    assert set(KERNELS) - listed == set(), "kernels that no op uses"

