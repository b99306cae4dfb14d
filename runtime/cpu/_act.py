# ruff: noqa: FURB136  -- explicit selects: NaN handling as documented, and they vectorise
"""Activation codes shared by the elementwise kernel and the fused epilogues of other kernels.

An activation is ``(code, a, b)``: ``a`` and ``b`` are the only parameters any of them takes.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

U = np.uint64

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


@intrinsic
def _bits_to_f32(typingctx, i):
    """Reinterpret the low 32 bits of an integer as a float32 (vectorisable, unlike ``math.ldexp``)."""
    if not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = args[0]
        if i.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(i), codegen


@intrinsic
def _f32_bits(typingctx, x):
    """The bits of a float32 as an int32 (the inverse of ``_bits_to_f32``)."""
    if not isinstance(x, types.Float) or x.bitwidth != 32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(x), codegen


# exp(x) = 2**n * exp(r), n = round(x / ln 2), r = x - n ln 2 (ln 2 split in two for accuracy), and
# exp(r) on [-ln2/2, ln2/2] by the degree-7 polynomial of the classic Cephes ``expf`` (relative
# error about 1e-7).  Branch-free, so loops over it vectorise without a vector math library.
# n is rounded by adding 1.5 * 2**23: the sum's low mantissa bits then hold n, so 2**n is built from
# them with integer operations and no float-integer conversion (Numba widens int32 arithmetic to
# int64, and the int64 -> float32 conversion it then needed took half the vector instructions:
# 0.28 -> 0.17 ns per element, same results).
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_ROUND = np.float32(12582912.0)  # 1.5 * 2**23
_EXP_P = (
    np.float32(1.9875691500e-4),
    np.float32(1.3981999507e-3),
    np.float32(8.3334519073e-3),
    np.float32(4.1665795894e-2),
    np.float32(1.6666665459e-1),
    np.float32(5.0000001201e-1),
)
_EXP_MAX = np.float32(88.3)  # exp(88.3) ~ 2.1e38; keeps 2**n a normal float
_EXP_MIN = np.float32(-87.3)


@numba.njit(cache=True, error_model="numpy", inline="always")
def exp_f32(x):
    """exp of a float32, clamped to [exp(-87.3), exp(88.3)] (no inf, no denormals)."""
    x = _EXP_MIN if x < _EXP_MIN else x
    x = _EXP_MAX if x > _EXP_MAX else x
    t = x * _LOG2E + _ROUND  # round(x log2 e) + 1.5 * 2**23, exactly (|n| <= 128)
    n = t - _ROUND
    r = x - n * _LN2_HI - n * _LN2_LO
    p = _EXP_P[0]
    p = p * r + _EXP_P[1]
    p = p * r + _EXP_P[2]
    p = p * r + _EXP_P[3]
    p = p * r + _EXP_P[4]
    p = p * r + _EXP_P[5]
    p = p * (r * r) + r + np.float32(1.0)
    # the bits of t are those of 1.5 * 2**23 plus n; shifted into the exponent field, the former drop out
    return p * _bits_to_f32((_f32_bits(t) + np.int32(127)) << np.int32(23))


_TANH_P = (
    np.float32(-5.70498872745e-3),
    np.float32(2.06390887954e-2),
    np.float32(-5.37397155531e-2),
    np.float32(1.33314422036e-1),
    np.float32(-3.33332819422e-1),
)


@numba.njit(cache=True, error_model="numpy", inline="always")
def tanh_f32(v):
    """tanh of a float32, branch-free: an odd polynomial (Cephes ``tanhf``) for |v| < 0.625,
    else sign(v) * (1 - e) / (1 + e) with e = exp(-2|v|)."""
    a = abs(v)
    e = exp_f32(np.float32(-2.0) * a)
    big = (np.float32(1.0) - e) / (np.float32(1.0) + e)
    big = -big if v < np.float32(0.0) else big
    z = v * v
    p = _TANH_P[0]
    p = p * z + _TANH_P[1]
    p = p * z + _TANH_P[2]
    p = p * z + _TANH_P[3]
    p = p * z + _TANH_P[4]
    small = p * z * v + v
    return small if a < np.float32(0.625) else big


@numba.njit(cache=True, error_model="numpy", inline="always")
def sigmoid_f32(v):
    """1 / (1 + exp(-v)); exp is clamped, so no overflow for large |v| and no branches."""
    return np.float32(1.0) / (np.float32(1.0) + exp_f32(-v))


@numba.njit(cache=True, error_model="numpy", inline="always")
def register_clamp(code):
    """An activation a kernel applies to its tile in registers, as a clamp to [lo, hi] with comparisons that
    let NaN through (``lo if v < lo else v``, then ``hi if v > hi else v``): (lo, hi, True) for none, relu
    and relu6; for the others (-inf, inf, False), and the kernel calls ``act_range`` after storing."""
    zero = np.float32(0.0)
    ninf = np.float32(-np.inf)
    pinf = np.float32(np.inf)
    if code == ACT_NONE:
        return ninf, pinf, True
    if code == ACT_RELU:
        return zero, pinf, True
    if code == ACT_RELU6:
        return zero, np.float32(6.0), True
    return ninf, pinf, False


@numba.njit(cache=True, error_model="numpy", inline="always")
def clamp_f32(v, lo, hi):
    """min(max(v, lo), hi) in the comparisons ``register_clamp`` describes (NaN passes)."""
    v = lo if v < lo else v
    return hi if v > hi else v


@numba.njit(cache=True, error_model="numpy", fastmath={"contract"})  # FMAs in the polynomials
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
    # unsigned indices: Numba's negative-index wraparound code would block vectorisation
    start = U(start)
    stop = U(stop)
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
            buf[i] = tanh_f32(buf[i])
    elif code == ACT_SILU:
        for i in range(start, stop):  # x / (1 + exp(-x)): one division, no reciprocal then product
            v = buf[i]
            buf[i] = v / (one + exp_f32(-v))
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
