"""The CUDA target without a GPU, part 2: every CUDA kernel compiles to PTX for compute capabilities 8.0
and 9.0 (a compile error in code the simulator does not exercise still fails here), and every op of the
CPU target has CUDA kernels. The cases (cuda_ptx_cases.py) run in a subprocess without the simulator."""

from test_cuda_simulator import needs_numba_cuda, run_cases


@needs_numba_cuda
def test_cuda_kernels_compile_to_ptx_and_cover_every_op():
    run_cases("cuda_ptx_cases.py", simulator=False)
