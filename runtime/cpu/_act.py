"""Activation codes shared by the elementwise kernel and the fused epilogues of other kernels.

An activation is ``(code, a, b)``: ``a`` and ``b`` are the only parameters any of them takes.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# code            formula                               a        b
ACT_NONE = 0  # x
ACT_RELU = 1  # max(x, 0)
ACT_RELU6 = 2  # min(max(x, 0), 6)
ACT_CLIP = 3  # min(max(x, a), b)                      min      max
ACT_LEAKY_RELU = 4  # x if x >= 0 else a*x             slope
ACT_SIGMOID = 5  # 1 / (1 + exp(-x))
ACT_TANH = 6  # tanh(x)
ACT_SILU = 7  # x * sigmoid(x)
ACT_HARDSWISH = 8  # x * min(max(x + 3, 0), 6) / 6
ACT_HARDSIGMOID = 9  # min(max(a*x + b, 0), 1)          alpha    beta

ACTIVATIONS = {
    "identity": ACT_NONE,
    "relu": ACT_RELU,
    "relu6": ACT_RELU6,
    "clip": ACT_CLIP,
    "leaky_relu": ACT_LEAKY_RELU,
    "sigmoid": ACT_SIGMOID,
    "tanh": ACT_TANH,
    "silu": ACT_SILU,
    "hardswish": ACT_HARDSWISH,
    "hardsigmoid": ACT_HARDSIGMOID,
}


@numba.njit(cache=True, inline="always")
def sigmoid_f32(v):
    """Sigmoid that never exponentiates a positive number (no overflow for large |v|)."""
    e = np.float32(math.exp(-abs(v)))
    if v >= 0:
        return np.float32(1.0) / (np.float32(1.0) + e)
    return e / (np.float32(1.0) + e)


@numba.njit(cache=True)
def act_range(buf, start, n, code, a, b):
    """Apply activation ``code`` in place to ``buf[start:start+n]`` (1-D float32).

    The branch on ``code`` sits outside the loops so that each loop vectorises.  Comparisons are
    written so that NaN passes through, as in numpy and ONNX Runtime.
    """
    if code == ACT_NONE:
        return
    fa = np.float32(a)
    fb = np.float32(b)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    six = np.float32(6.0)
    stop = start + n
    if code == ACT_RELU:
        for i in range(start, stop):
            v = buf[i]
            buf[i] = zero if v < zero else v
    elif code == ACT_RELU6:
        for i in range(start, stop):
            v = buf[i]
            v = zero if v < zero else v
            buf[i] = six if v > six else v
    elif code == ACT_CLIP:
        for i in range(start, stop):
            v = buf[i]
            v = fa if v < fa else v
            buf[i] = fb if v > fb else v
    elif code == ACT_LEAKY_RELU:
        for i in range(start, stop):
            v = buf[i]
            buf[i] = v if v >= zero else v * fa
    elif code == ACT_SIGMOID:
        for i in range(start, stop):
            buf[i] = sigmoid_f32(buf[i])
    elif code == ACT_TANH:
        for i in range(start, stop):
            buf[i] = np.float32(math.tanh(buf[i]))
    elif code == ACT_SILU:
        for i in range(start, stop):
            v = buf[i]
            buf[i] = v * sigmoid_f32(v)
    elif code == ACT_HARDSWISH:
        for i in range(start, stop):
            v = buf[i]
            r = v + np.float32(3.0)
            r = r if r > zero else zero
            r = r if r < six else six
            buf[i] = v * r / six
    elif code == ACT_HARDSIGMOID:
        for i in range(start, stop):
            v = fa * buf[i] + fb
            v = v if v > zero else zero
            buf[i] = v if v < one else one
