# ruff: noqa: FURB136  -- explicit selects: NaN handled as on the CPU (CUDA max/min would drop it)
"""What every CUDA kernel of cnnc shares: the kernel registry, launch geometry and the device-side
activation function.

A kernel is declared with ``@kernel("aaaa iiii ff")``: one letter per argument, ``a`` a flat
(1-D, C-contiguous) float32 device array, ``i`` an int64, ``f`` a float64 (spaces only group them).
Every tensor is passed flat with its sizes as integers, so each kernel has exactly one signature:
the one the program launches, the one compiled once per device (``cache=True`` keeps it on disk)
and the one the PTX test compiles for sm_80 and sm_90. In Numba's CUDA simulator every launch
checks its arguments against that signature.

Launch geometry: the kernels read their tile sizes from ``blockDim`` (register tiles and shared
memory capacities are compile-time constants), so the host chooses the thread block per launch. The
simulator runs every CUDA thread as a Python thread (about a millisecond each), so there it gets
the smallest blocks and grids that still exercise every code path (several tiles, channel chunks
and grid-stride steps); on a GPU the geometry is the one the kernels are written for.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda

from ..cpu._act import (
    ACT_CLIP,
    ACT_HARDSIGMOID,
    ACT_HARDSWISH,
    ACT_LEAKY_RELU,
    ACT_NONE,
    ACT_RELU,
    ACT_RELU6,
    ACT_SIGMOID,
    ACT_SILU,
    ACT_TANH,
)

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)

_ARG_TYPES = {"a": "float32[::1]", "i": "int64", "f": "float64"}


class Kernel:
    """A CUDA kernel with its one signature; ``launch(grid, block, stream, *args)`` runs it."""

    def __init__(self, fn, arg_kinds: str):
        self.name = fn.__name__
        self.arg_kinds = arg_kinds.replace(" ", "")
        if set(self.arg_kinds) - set(_ARG_TYPES) or len(self.arg_kinds) != fn.__code__.co_argcount:
            raise TypeError(f"kernel {self.name}: argument kinds {arg_kinds!r} do not match its arguments")
        self.py_func = fn
        self.dispatcher = cuda.jit(cache=True)(fn)

    @property
    def signature(self) -> str:
        return "void(" + ", ".join(_ARG_TYPES[k] for k in self.arg_kinds) + ")"

    def launch(self, grid, block, stream, *args) -> None:
        if SIMULATOR:
            self.check_args(args)
        self.dispatcher[grid, block, stream](*args)

    def check_args(self, args) -> None:
        """Arguments of exactly the declared types (a float where an int is declared would compile,
        on a GPU, a second specialisation that the PTX test never saw)."""
        if len(args) != len(self.arg_kinds):
            raise TypeError(f"kernel {self.name}: {len(args)} arguments, declared {len(self.arg_kinds)}")
        for i, (kind, a) in enumerate(zip(self.arg_kinds, args)):
            if kind == "a":
                ok = getattr(a, "dtype", None) == np.float32 and a.ndim == 1 and a.is_c_contiguous()
            else:
                ok = type(a) is (int if kind == "i" else float)
            if not ok:
                raise TypeError(f"kernel {self.name}: argument {i} is {type(a).__name__}, declared {_ARG_TYPES[kind]}")


KERNELS: dict[str, Kernel] = {}


def kernel(arg_kinds: str):
    """Declare and register a CUDA kernel (compiled lazily for the device it first runs on, cached)."""

    def wrap(fn) -> Kernel:
        k = Kernel(fn, arg_kinds)
        KERNELS[k.name] = k
        return k

    return wrap


def device(fn):
    """A device function, inlined into its callers at Numba IR level (so that compiling a kernel needs
    no GPU: an out-of-line device function asks the driver for the compute capability)."""
    return cuda.jit(device=True, inline="always")(fn)


@device
def store_epilogue(out, res, o, v, has_res, act, act_a, act_b):
    """The fused epilogue of every convolution kernel, for output element ``o`` (``v`` holds the sum and
    bias, a folded batchnorm included): the residual, read just before the write so that ``out`` may be
    the residual's own buffer, then the activation, then the store."""
    if has_res != 0:
        v += res[o]
    out[o] = activate(v, act, act_a, act_b)


# ---- launch geometry -------------------------------------------------------------------------------

ELEMENTWISE_THREADS = 4 if SIMULATOR else 256
MAX_BLOCKS = 1 if SIMULATOR else 4096  # grid-stride loops cover the rest; 4096 x 256 fills any GPU


def grid_1d(count: int) -> tuple[int, int]:
    """(blocks, threads per block) of a grid-stride loop over ``count`` items."""
    return max(1, min(-(-count // ELEMENTWISE_THREADS), MAX_BLOCKS)), ELEMENTWISE_THREADS


def pow2_at_least(v: int, cap: int) -> int:
    """The smallest power of two >= v, at most cap."""
    p = 1
    while p < v and p < cap:
        p *= 2
    return p


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---- device functions ------------------------------------------------------------------------------


@device
def sigmoid(v):
    """1 / (1 + exp(-v)) in float32: exp overflows to inf for v < -88, giving exactly 0, never NaN."""
    return np.float32(1.0) / (np.float32(1.0) + math.exp(-v))


@device
def activate(v, code, a, b):
    """Activation ``code`` (the codes of runtime/cpu/_act.py, parameters ``a``, ``b``) of a float32.

    Written with comparisons that let NaN through, as the CPU kernels and numpy do.
    """
    zero = np.float32(0.0)
    six = np.float32(6.0)
    if code == ACT_NONE:
        return v
    if code == ACT_RELU:
        return zero if v < zero else v
    if code == ACT_RELU6:
        v = zero if v < zero else v
        return six if v > six else v
    if code == ACT_CLIP:
        lo = np.float32(a)
        hi = np.float32(b)
        v = lo if v < lo else v
        return hi if v > hi else v
    if code == ACT_LEAKY_RELU:
        return v if v >= zero else v * np.float32(a)
    if code == ACT_SIGMOID:
        return sigmoid(v)
    if code == ACT_TANH:
        return np.float32(math.tanh(v))
    if code == ACT_SILU:
        return v * sigmoid(v)
    if code == ACT_HARDSWISH:
        r = v + np.float32(3.0)
        r = r if r > zero else zero
        r = r if r < six else six
        return v * r / six
    if code == ACT_HARDSIGMOID:
        r = np.float32(a) * v + np.float32(b)
        r = r if r > zero else zero
        return r if r < np.float32(1.0) else np.float32(1.0)
    return v
