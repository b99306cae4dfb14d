"""Kernels over channel-blocked tensors ("c16": (N, ceil(C/16), H, W, 16), the 16 channels of a block
contiguous for each pixel), for the chains the `layout` pass marks: a dense convolution writes c16
(``conv.conv2d_c16_kernel``), a depthwise convolution reads and writes it, squeeze-and-excitation pools
and scales it, and a 1x1 convolution reads it back into the plain layout.

In this layout a depthwise convolution is a vector operation over 16 channels: each tap is one vector
load of input and one of weights per output pixel, with no plane copies and no transposes, whatever
the plane size (the plain-layout kernel wastes most of its tile on 7x7 and 14x14 planes).

Padding channels (past C in the last block) are written with finite values (weights and biases are zero
there) and never read back as data: consumers pack zero weights for them or skip them.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ._act import act_range
from ._stack import stack_f32

U = np.uint64  # index cast that removes Numba's negative-index wraparound code
C16 = 16
DW_TP = 8  # output pixels per register tile of the depthwise kernel (8 vectors of 16 channels)
DW_ROWS = 8  # output rows per work item of the depthwise kernel
DW_CHUNKS = 16  # parallel chunks of work items, each with its own row buffer
_FM = {"contract"}


def blocks(c: int) -> int:
    return -(-c // C16)


def to_c16(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, CB, H, W, 16), padding channels zero (tests and reorders)."""
    n, c, h, w = x.shape
    y = np.zeros((n, blocks(c) * C16, h, w), np.float32)
    y[:, :c] = x
    return np.ascontiguousarray(y.reshape(n, blocks(c), C16, h, w).transpose(0, 1, 3, 4, 2))


def from_c16(y: np.ndarray, c: int) -> np.ndarray:
    """(N, CB, H, W, 16) -> (N, C, H, W)."""
    n, cb, h, w, _ = y.shape
    return np.ascontiguousarray(y.transpose(0, 1, 4, 2, 3).reshape(n, cb * C16, h, w)[:, :c])


def pack_depthwise(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A depthwise weight (C, 1, KH, KW) and bias (C,) as (CB, KH, KW, 16) and (CB * 16,), zero padded."""
    c, _, kh, kw = weight.shape
    w = np.zeros((blocks(c) * C16, kh, kw), np.float32)
    w[:c] = weight[:, 0]
    b = np.zeros(blocks(c) * C16, np.float32)
    b[:c] = bias
    return np.ascontiguousarray(w.reshape(blocks(c), C16, kh, kw).transpose(0, 2, 3, 1)), b


@numba.njit(cache=True, error_model="numpy", parallel=True, fastmath=_FM)
def depthwise_c16_kernel(x, H, W, w16, bias16, sh, sw, pt, pl, dh, dw, act, act_a, act_b, out, OH, OW):
    """Depthwise convolution (one input channel per output channel) of c16 ``x`` (flat (N, CB, H, W, 16))
    into c16 ``out`` (flat (N, CB, OH, OW, 16)); ``w16`` (CB, KH, KW, 16), ``bias16`` (CB * 16).

    Work items are (sample, channel block, DW_ROWS output rows). An item copies the input rows it reads
    into a zero-bordered buffer (whole-vector row copies), then every output row runs in tiles of DW_TP
    pixels x 16 channels, eight independent accumulators, with no bounds tests; the last tile of a row
    overlaps the one before it (planes narrower than a tile store only their pixels).
    """
    CB, KH, KW, _ = w16.shape
    N = x.size // (CB * C16 * H * W)
    wf = w16.reshape(-1)
    zero = np.float32(0.0)
    tiles = (OW + DW_TP - 1) // DW_TP
    span = (tiles * DW_TP - 1) * sw + (KW - 1) * dw + 1  # buffer columns a row of tiles reads
    Wb = max(span, W + pl)
    rows_in = (DW_ROWS - 1) * sh + (KH - 1) * dh + 1
    row_floats = Wb * C16
    nrb = (OH + DW_ROWS - 1) // DW_ROWS
    nitems = N * CB * nrb
    nchunk = min(nitems, DW_CHUNKS)
    # One buffer per chunk of items, allocated here so the loop body cannot alias it with the tile.
    scratch = np.empty((nchunk, rows_in * row_floats), np.float32)
    st = sw * C16
    for chunk in prange(nchunk):
        buf = scratch[chunk]
        acc = stack_f32(128)  # DW_TP pixels x 16 channels
        stg = stack_f32(128)
        for item in range(chunk * nitems // nchunk, (chunk + 1) * nitems // nchunk):
            rb = item % nrb
            rest = item // nrb
            cb = rest % CB
            n = rest // CB
            oh0 = rb * DW_ROWS
            if oh0 + DW_ROWS > OH:
                oh0 = max(OH - DW_ROWS, 0)  # overlap the previous block
            nrows = min(DW_ROWS, OH - oh0)
            ih0 = oh0 * sh - pt
            xb = (n * CB + cb) * H * W * C16
            for r in range((nrows - 1) * sh + (KH - 1) * dh + 1):
                o = r * row_floats
                ih = ih0 + r
                if ih < 0 or ih >= H:
                    for q in range(row_floats):
                        buf[U(o + q)] = zero
                    continue
                for q in range(pl * C16):
                    buf[U(o + q)] = zero
                src = xb + ih * W * C16
                dst = o + pl * C16
                for q in range(W * C16):
                    buf[U(dst + q)] = x[U(src + q)]
                for q in range((pl + W) * C16, row_floats):
                    buf[U(o + q)] = zero
            wb = cb * KH * KW * C16
            for orow in range(nrows):
                ob = ((n * CB + cb) * OH + oh0 + orow) * OW * C16
                for tile in range(tiles):
                    ow0 = tile * DW_TP
                    if ow0 + DW_TP > OW and OW >= DW_TP:
                        ow0 = OW - DW_TP
                    for t in range(DW_TP):
                        for j in range(C16):
                            acc[t * C16 + j] = bias16[cb * C16 + j]
                    for kh in range(KH):
                        rowb = (orow * sh + kh * dh) * row_floats + ow0 * st
                        for kw in range(KW):
                            wo = wb + (kh * KW + kw) * C16
                            base = rowb + kw * dw * C16
                            for j in range(C16):
                                wj = wf[U(wo + j)]
                                acc[j] += buf[U(base + j)] * wj
                                acc[16 + j] += buf[U(base + st + j)] * wj
                                acc[32 + j] += buf[U(base + 2 * st + j)] * wj
                                acc[48 + j] += buf[U(base + 3 * st + j)] * wj
                                acc[64 + j] += buf[U(base + 4 * st + j)] * wj
                                acc[80 + j] += buf[U(base + 5 * st + j)] * wj
                                acc[96 + j] += buf[U(base + 6 * st + j)] * wj
                                acc[112 + j] += buf[U(base + 7 * st + j)] * wj
                    o = ob + ow0 * C16
                    if OW >= DW_TP:
                        for j in range(DW_TP * C16):
                            out[U(o + j)] = acc[j]
                    else:  # stage, so that ``acc`` is only indexed by constants
                        for j in range(DW_TP * C16):
                            stg[j] = acc[j]
                        for j in range(OW * C16):
                            out[U(o + j)] = stg[j]
                if act != 0:
                    act_range(out, ob, OW * C16, act, act_a, act_b)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def global_avg_pool_c16_kernel(x, C, HW, out):
    """Mean over each plane of c16 ``x`` (flat (N, CB, HW, 16)) into plain ``out`` (flat (N, C)).

    A block's plane is summed as 128-float rows (8 pixels) into 8 partial sums per channel: written
    per pixel, LLVM vectorises across pixels with gathers instead."""
    CB = (C + C16 - 1) // C16
    N = x.size // (CB * C16 * HW)
    inv = np.float32(1.0) / np.float32(HW)
    for item in prange(N * CB):
        cb = item % CB
        n = item // CB
        acc = stack_f32(128)
        for j in range(128):
            acc[j] = 0.0
        xb = item * HW * C16
        rows = (HW * C16) // 128
        for k in range(rows):
            o = xb + k * 128
            for j in range(128):
                acc[j] += x[U(o + j)]
        for i in range(rows * 128, HW * C16):
            acc[i % C16] += x[U(xb + i)]
        for j in range(min(C16, C - cb * C16)):
            total = acc[j] + acc[16 + j] + acc[32 + j] + acc[48 + j] + acc[64 + j] + acc[80 + j] + acc[96 + j]
            out[U(n * C + cb * C16 + j)] = (total + acc[112 + j]) * inv


@numba.njit(cache=True, error_model="numpy", parallel=True)
def channel_mul_c16_kernel(x, s, C, HW, act, act_a, act_b, out):
    """out = act(x * s) per channel: ``x``, ``out`` c16 (flat (N, CB, HW, 16); ``out`` may be ``x``), ``s``
    plain (flat (N, C)), or one value per channel for every sample when it holds C values (padding lanes
    get scale 0). Rows of 8 pixels against the block's scales repeated 8 times (see the pool above)."""
    CB = (C + C16 - 1) // C16
    N = x.size // (CB * C16 * HW)
    per_sample = s.size != C
    for item in prange(N * CB):
        cb = item % CB
        n = item // CB
        scale = stack_f32(128)
        sb = (n * C if per_sample else 0) + cb * C16
        for j in range(C16):
            v = s[U(sb + j)] if cb * C16 + j < C else np.float32(0.0)
            for t in range(8):
                scale[t * C16 + j] = v
        xb = item * HW * C16
        rows = (HW * C16) // 128
        for k in range(rows):
            o = xb + k * 128
            for j in range(128):
                out[U(o + j)] = x[U(o + j)] * scale[j]
        for i in range(rows * 128, HW * C16):
            out[U(xb + i)] = x[U(xb + i)] * scale[i % C16]
        if act != 0:
            act_range(out, xb, HW * C16, act, act_a, act_b)
