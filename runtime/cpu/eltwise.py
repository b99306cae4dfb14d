"""Elementwise and normalisation kernels (float32).

Flat kernels take 1-D C-contiguous views (callers reshape), so one compiled signature serves
every rank.  Large arrays are split into ``BLOCK``-element pieces processed in parallel; each
piece is written and then post-processed (activation) while it is still in L1.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from ._act import act_range

U = np.uint64  # index cast that removes Numba's negative-index wraparound code
BLOCK = 4096  # elements per parallel piece of a flat kernel

OP_ADD = 0
OP_MUL = 1
BINARY_OPS = {"add": OP_ADD, "mul": OP_MUL}


@numba.njit(cache=True, error_model="numpy", parallel=True)
def activation_kernel(x, act, act_a, act_b, out):
    """out = act(x) for 1-D arrays of equal length (see ``_act`` for the codes)."""
    n = x.shape[0]
    nb = (n + BLOCK - 1) // BLOCK
    for blk in prange(nb):
        s = blk * BLOCK
        e = min(s + BLOCK, n)
        for i in range(s, e):
            out[U(i)] = x[U(i)]
        act_range(out, s, e - s, act, act_a, act_b)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def binary_kernel(a, b, op, act, act_a, act_b, out):
    """out = act(a op b) for 1-D arrays of equal length; op: 0 add, 1 mul."""
    n = a.shape[0]
    nb = (n + BLOCK - 1) // BLOCK
    for blk in prange(nb):
        s = blk * BLOCK
        e = min(s + BLOCK, n)
        if op == OP_ADD:
            for i in range(s, e):
                out[U(i)] = a[U(i)] + b[U(i)]
        else:
            for i in range(s, e):
                out[U(i)] = a[U(i)] * b[U(i)]
        act_range(out, s, e - s, act, act_a, act_b)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def channel_binary_kernel(a, s, N, C, S, s_batch_stride, op, act, act_a, act_b, out):
    """out[n, c, :] = act(a[n, c, :] op s[n*s_batch_stride + c]) on flat arrays.

    ``a``/``out`` hold N*C*S elements; ``s`` holds one value per (n, c) (``s_batch_stride`` = C)
    or per channel shared by the batch (``s_batch_stride`` = 0).  Serves squeeze-and-excitation
    scaling, per-channel bias and scalar broadcasting (C = 1).
    """
    for nc in prange(N * C):
        n = nc // C
        c = nc - n * C
        v = s[n * s_batch_stride + c]
        b = nc * S
        if op == OP_ADD:
            for i in range(S):
                out[U(b + i)] = a[U(b + i)] + v
        else:
            for i in range(S):
                out[U(b + i)] = a[U(b + i)] * v
        act_range(out, b, S, act, act_a, act_b)


CHAIN_ADD = -1  # chain stages: an activation's `_act` code (>= 0), or combine with an operand
CHAIN_MUL = -2
CHAIN_OPERANDS = 3  # operand arrays a chain kernel takes (fuse_elementwise.MAX_SIDES)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def chain_kernel(x, N, C, S, codes, args_a, args_b, operand, s0, s1, s2, full, batch_stride, channel_stride, out):
    """A chain of elementwise stages (fuse_elementwise) over flat arrays of N*C*S elements: a piece of at
    most ``BLOCK`` elements of one channel plane is copied to ``out``, then every stage runs over it while
    it is in L1. Stage i: ``codes[i]`` >= 0 applies that activation (arguments ``args_a[i]``, ``args_b[i]``);
    CHAIN_ADD / CHAIN_MUL combine with operand ``operand[i]`` (0-2: s0-s2), which is either laid out like
    ``x`` (``full[k]``) or holds one value per sample and channel: s[n * batch_stride[k] + c *
    channel_stride[k]]. ``out`` may be ``x`` (but no operand: each piece of ``x`` is read before it is
    written, an operand after)."""
    per_plane = (S + BLOCK - 1) // BLOCK
    for item in prange(N * C * per_plane):
        nc = item // per_plane
        s = nc * S + (item % per_plane) * BLOCK
        e = min(s + BLOCK, (nc + 1) * S)
        for i in range(s, e):
            out[U(i)] = x[U(i)]
        n = nc // C
        c = nc - n * C
        for st in range(codes.shape[0]):
            code = codes[st]
            if code >= 0:
                act_range(out, s, e - s, code, args_a[st], args_b[st])
                continue
            k = operand[st]
            side = s0 if k == 0 else (s1 if k == 1 else s2)
            if full[k]:
                if code == CHAIN_ADD:
                    for i in range(s, e):
                        out[U(i)] += side[U(i)]
                else:
                    for i in range(s, e):
                        out[U(i)] *= side[U(i)]
            else:
                v = side[U(n * batch_stride[k] + c * channel_stride[k])]
                if code == CHAIN_ADD:
                    for i in range(s, e):
                        out[U(i)] += v
                else:
                    for i in range(s, e):
                        out[U(i)] *= v


@numba.njit(cache=True, error_model="numpy", parallel=True)
def batchnorm_kernel(x, weight, bias, mean, var, eps, act, act_a, act_b, out):
    """Inference batch norm on x (N, C, S): y = (x - mean) * weight / sqrt(var + eps) + bias.

    Folded per channel (in float64) into one multiply-add.
    """
    N, C, S = x.shape
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for nc in prange(N * C):
        c = nc % C
        sc64 = weight[c] / math.sqrt(var[c] + eps)
        scale = np.float32(sc64)
        shift = np.float32(bias[c] - mean[c] * sc64)
        b = nc * S
        for i in range(S):
            of[U(b + i)] = xf[U(b + i)] * scale + shift
        act_range(of, b, S, act, act_a, act_b)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def softmax_kernel(x, out):
    """Softmax over axis 1 of x (outer, L, inner): stable (max subtracted), sums in float64."""
    O, L, I = x.shape
    xf = x.reshape(-1)
    of = out.reshape(-1)
    nb = (I + 255) // 256
    for item in prange(O * nb):
        o = item // nb
        i0 = (item - o * nb) * 256
        i1 = min(i0 + 256, I)
        m = np.full(256, -np.inf, np.float32)
        ssum = np.zeros(256, np.float64)
        for ll in range(L):
            b = (o * L + ll) * I
            for i in range(i0, i1):
                m[i - i0] = max(m[i - i0], xf[U(b + i)])
        for ll in range(L):
            b = (o * L + ll) * I
            for i in range(i0, i1):
                e = math.exp(np.float64(xf[U(b + i)]) - m[i - i0])
                of[U(b + i)] = e
                ssum[i - i0] += e
        for ll in range(L):
            b = (o * L + ll) * I
            for i in range(i0, i1):
                of[U(b + i)] = of[U(b + i)] / ssum[i - i0]


@numba.njit(cache=True, error_model="numpy", parallel=True)
def lrn_kernel(x, size, alpha, beta, k, out):
    """Local response normalisation across channels of x (N, C, S).

    y[c] = x[c] / (k + alpha/size * sum_{c'} x[c']^2)^beta with c' from c - (size-1)//2 to
    c + size//2 (clipped): the ONNX window, which equals PyTorch's for odd ``size``.
    """
    N, C, S = x.shape
    before = (size - 1) // 2
    after = size - 1 - before
    xf = x.reshape(-1)
    of = out.reshape(-1)
    coef = alpha / size
    for nc in prange(N * C):
        n = nc // C
        c = nc - n * C
        c0 = max(0, c - before)
        c1 = min(C - 1, c + after)
        acc = np.zeros(S, np.float64)
        for cc in range(c0, c1 + 1):
            b = (n * C + cc) * S
            for i in range(S):
                v = np.float64(xf[U(b + i)])
                acc[i] += v * v
        b = nc * S
        for i in range(S):
            of[U(b + i)] = xf[U(b + i)] / (k + coef * acc[i]) ** beta
