"""The CUDA kernels of cnnc (numba.cuda, from the numba-cuda package): one or more per op of the CPU
target, each with the fused epilogues the CPU has. runtime/cuda_program.py binds a plan to them.

``KERNELS`` maps every kernel's name to its ``Kernel`` (dispatcher and its one signature);
``OP_KERNELS`` says which kernels serve each op: the tests check that every op the CPU target runs is
listed here, that every listed kernel exists, and compile each one to PTX for sm_80 and sm_90.

Importing this package imports numba.cuda: do it only once a device (or the simulator) is known to be
usable (runtime/cuda_program.py::require_device).
"""

from __future__ import annotations

from . import conv, eltwise, pool, tensor  # noqa: F401  (their @kernel definitions fill KERNELS)
from ._common import KERNELS, SIMULATOR, Kernel, grid_1d

_CONV_EPILOGUE = ("conv2d_direct", "gemm", "conv2d_depthwise", "conv2d_generic")
_ACTIVATIONS = ("relu", "relu6", "clip", "leaky_relu", "sigmoid", "tanh", "silu", "hardswish", "hardsigmoid")

# op -> the kernels that run it (fusions: a conv/dense/conv_transpose/batchnorm/add/mul step's `act`,
# a conv's folded batchnorm `bn_eps` and `residual` are epilogues of these same kernels)
OP_KERNELS: dict[str, tuple[str, ...]] = {
    "conv": _CONV_EPILOGUE,
    "conv_transpose": ("gemm", "col2im"),
    "maxpool": ("max_pool2d",),
    "avgpool": ("avg_pool2d",),
    "global_avgpool": ("global_pool",),
    "global_maxpool": ("global_pool",),
    "adaptive_avgpool": ("adaptive_pool2d",),
    "adaptive_maxpool": ("adaptive_pool2d",),
    "dense": ("gemm",),
    "batchnorm": ("scale_shift",),
    "affine": ("scale_shift",),
    **{op: ("activation",) for op in _ACTIVATIONS},
    "softmax": ("softmax",),
    "lrn": ("lrn",),
    "add": ("binary_same", "binary_channel", "binary_broadcast"),
    "mul": ("binary_same", "binary_channel", "binary_broadcast"),
    "eltwise_chain": ("eltwise_chain",),
    "concat": ("copy_into",),
    "upsample": ("upsample_nearest",),
    "pad": ("pad",),
    "yolo": ("yolo_decode",),
}

__all__ = ["KERNELS", "OP_KERNELS", "SIMULATOR", "Kernel", "grid_1d"]
