# ruff: noqa: FURB136  -- explicit selects: NaN handled as on the CPU (CUDA max/min would drop it)
"""Elementwise and normalisation kernels (float32, flat arrays, grid-stride loops).

Each output element is computed and written by the thread that reads its inputs at the same index, so
every kernel here except ``lrn`` (which reads neighbouring channels) is correct when ``out`` is one of
its full-size inputs: the memory planner may run them in place. ``softmax`` too: one thread owns a
whole reduced line and reads each value before it overwrites it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ._common import activate, device, kernel

OP_ADD = 0
OP_MUL = 1


@device
def combine(a, b, op):
    return a + b if op == OP_ADD else a * b


@kernel("aa i iff")
def activation(x, out, count, act, act_a, act_b):
    """out = act(x)."""
    for i in range(cuda.grid(1), count, cuda.gridsize(1)):
        out[i] = activate(x[i], act, act_a, act_b)


@kernel("aaaa iii iff")
def scale_shift(x, scale, shift, out, count, C, S, act, act_a, act_b):
    """out[n, c, s] = act(x * scale[c] + shift[c]): batchnorm and affine, folded per channel on the host."""
    for i in range(cuda.grid(1), count, cuda.gridsize(1)):
        c = (i // S) % C
        out[i] = activate(x[i] * scale[c] + shift[c], act, act_a, act_b)


@kernel("aaa i i iff")
def binary_same(a, b, out, count, op, act, act_a, act_b):
    """out = act(a op b) for operands of one shape; op 0 add, 1 mul."""
    for i in range(cuda.grid(1), count, cuda.gridsize(1)):
        out[i] = activate(combine(a[i], b[i], op), act, act_a, act_b)


@kernel("aaa iiii i iff")
def binary_channel(a, s, out, count, C, S, s_batch_stride, op, act, act_a, act_b):
    """out[n, c, :] = act(a[n, c, :] op s[n*s_batch_stride + c]) with S values per (n, c): a per-channel
    operand (N, C, 1, 1) (stride C) or (1, C, 1, 1) (stride 0), and a scalar (C = 1, S = count)."""
    for i in range(cuda.grid(1), count, cuda.gridsize(1)):
        nc = i // S
        n = nc // C
        v = s[n * s_batch_stride + nc - n * C]
        out[i] = activate(combine(a[i], v, op), act, act_a, act_b)


@kernel("aaaa aa a iii")
def eltwise_chain(x, s0, s1, s2, stages, operands, out, count, C, S):
    """A chain of elementwise stages (fuse_elementwise), each element in a register from load to store.
    ``stages``: 4 floats per stage: the `_act` code of an activation (>= 0) or -1 add / -2 mul, the
    activation's two arguments, the operand (0-2: s0-s2). ``operands``: 3 floats per operand: whether it is
    laid out like ``x``, else its batch and channel strides (one value per sample and channel). ``out`` may
    be ``x`` or an operand: each thread reads its element of each before it stores."""
    for i in range(cuda.grid(1), count, cuda.gridsize(1)):
        nc = i // S
        n = nc // C
        c = nc - n * C
        v = x[i]
        for st in range(stages.size // 4):
            code = int(stages[4 * st])
            if code >= 0:
                v = activate(v, code, stages[4 * st + 1], stages[4 * st + 2])
                continue
            k = int(stages[4 * st + 3])
            j = i if operands[3 * k] != 0 else n * int(operands[3 * k + 1]) + c * int(operands[3 * k + 2])
            w = s0[j] if k == 0 else (s1[j] if k == 1 else s2[j])
            v = v + w if code == -1 else v * w
        out[i] = v


@kernel("aaa iiii iiii iiii i iff")
def binary_broadcast(a, b, out, D0, D1, D2, D3, as0, as1, as2, as3, bs0, bs1, bs2, bs3, op, act, act_a, act_b):
    """Any numpy broadcast up to rank 4: out (D0, D1, D2, D3); each operand read through its strides
    (0 along a broadcast axis)."""
    for i in range(cuda.grid(1), D0 * D1 * D2 * D3, cuda.gridsize(1)):
        i3 = i % D3
        t = i // D3
        i2 = t % D2
        t = t // D2
        i1 = t % D1
        i0 = t // D1
        va = a[i0 * as0 + i1 * as1 + i2 * as2 + i3 * as3]
        vb = b[i0 * bs0 + i1 * bs1 + i2 * bs2 + i3 * bs3]
        out[i] = activate(combine(va, vb, op), act, act_a, act_b)


@kernel("aa iii")
def softmax(x, out, O, L, I):
    """Softmax over the middle axis of x (O, L, I): one thread per (o, i) line, consecutive threads on
    consecutive i (coalesced); the maximum subtracted, the sum in float64 as on the CPU."""
    for t in range(cuda.grid(1), O * I, cuda.gridsize(1)):
        o = t // I
        base = o * L * I + t - o * I
        m = np.float32(-math.inf)
        for j in range(L):
            v = x[base + j * I]
            m = v if v > m else m
        total = 0.0
        for j in range(L):
            total += math.exp(np.float64(x[base + j * I]) - m)
        for j in range(L):
            out[base + j * I] = np.float32(math.exp(np.float64(x[base + j * I]) - m) / total)


@kernel("aa iii i fff")
def lrn(x, out, N, C, S, size, alpha, beta, k):
    """Local response normalisation across channels of x (N, C, S), the ONNX window: channels
    c - (size-1)//2 .. c + size//2, clipped; sums in float64."""
    before = (size - 1) // 2
    after = size - 1 - before
    coef = alpha / size
    for i in range(cuda.grid(1), N * C * S, cuda.gridsize(1)):
        s = i % S
        nc = i // S
        n = nc // C
        c = nc - n * C
        total = 0.0
        for cc in range(max(0, c - before), min(C - 1, c + after) + 1):
            v = np.float64(x[(n * C + cc) * S + s])
            total += v * v
        out[i] = np.float32(x[i] / (k + coef * total) ** beta)
