# ruff: noqa: FURB136  -- explicit selects: NaN handled as on the CPU (CUDA max/min would drop it)
"""Pooling kernels (float32, NCHW planes flattened to N*C planes).

Sliding-window and adaptive pools: one thread per output (grid-stride; consecutive threads write
consecutive columns, so stores are coalesced). Positions outside the image (padding, ceil_mode
overhang) are skipped, as on the CPU: -inf for max, nothing added for the average, whose divisor
follows PyTorch's rule. Global pools: one block per plane, a tree reduction in shared memory.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ._common import kernel

GLOBAL_POOL_MAX_THREADS = 256  # shared capacity of the reduction; blockDim.x is a power of two <= this


@kernel("aa iiiii iiiiiiii")
def max_pool2d(x, out, NC, H, W, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw):
    """out = max over the in-image taps of each window (-inf when there is none)."""
    for o in range(cuda.grid(1), NC * OH * OW, cuda.gridsize(1)):
        ow = o % OW
        t = o // OW
        oh = t % OH
        plane = t // OH
        m = np.float32(-math.inf)
        base = plane * H * W
        for kh in range(KH):
            ih = oh * sh - pt + kh * dh
            if ih >= 0 and ih < H:
                for kw in range(KW):
                    iw = ow * sw - pl + kw * dw
                    if iw >= 0 and iw < W:
                        v = x[base + ih * W + iw]
                        m = v if v > m else m
        out[o] = m


@kernel("aa iiiii iiiiiiii i")
def avg_pool2d(x, out, NC, H, W, OH, OW, KH, KW, sh, sw, pt, pl, pb, pr, count_include_pad):
    """Average of each window: start = o*s - pad_begin, end = min(start + k, size + pad_end); the
    divisor is (end - start) per axis with count_include_pad, else the number of in-image positions."""
    for o in range(cuda.grid(1), NC * OH * OW, cuda.gridsize(1)):
        ow = o % OW
        t = o // OW
        oh = t % OH
        plane = t // OH
        hs = oh * sh - pt
        he = min(hs + KH, H + pb)
        ws = ow * sw - pl
        we = min(ws + KW, W + pr)
        if count_include_pad != 0:
            div = (he - hs) * (we - ws)
        else:
            div = (min(he, H) - max(hs, 0)) * (min(we, W) - max(ws, 0))
        s = np.float32(0.0)
        base = plane * H * W
        for ih in range(max(hs, 0), min(he, H)):
            for iw in range(max(ws, 0), min(we, W)):
                s += x[base + ih * W + iw]
        out[o] = s / np.float32(div)


@kernel("aa ii i")
def global_pool(x, out, NC, HW, is_max):
    """out[plane] = mean (is_max 0) or max (1) of each of the NC planes of HW values. One block per
    plane (grid-stride over planes); each thread reduces a strided part, then a tree in shared memory."""
    s_red = cuda.shared.array(GLOBAL_POOL_MAX_THREADS, np.float32)
    tid = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    for plane in range(cuda.blockIdx.x, NC, cuda.gridDim.x):
        base = plane * HW
        if is_max != 0:
            acc = np.float32(-math.inf)
            for i in range(tid, HW, nthreads):
                v = x[base + i]
                acc = v if v > acc else acc
        else:
            acc = np.float32(0.0)
            for i in range(tid, HW, nthreads):
                acc += x[base + i]
        s_red[tid] = acc
        cuda.syncthreads()
        step = nthreads // 2
        while step > 0:
            if tid < step:
                a = s_red[tid]
                b = s_red[tid + step]
                if is_max != 0:
                    s_red[tid] = b if b > a else a
                else:
                    s_red[tid] = a + b
            cuda.syncthreads()
            step //= 2
        if tid == 0:
            out[plane] = s_red[0] if is_max != 0 else s_red[0] / np.float32(HW)
        cuda.syncthreads()  # s_red is reused by the next plane


@kernel("aa iiiii i")
def adaptive_pool2d(x, out, NC, H, W, OH, OW, is_max):
    """Adaptive average (is_max 0) or max pooling: bin i of an axis of n covers
    [floor(i*n/o), ceil((i+1)*n/o)) (PyTorch); averages summed in float64 as on the CPU."""
    for o in range(cuda.grid(1), NC * OH * OW, cuda.gridsize(1)):
        ow = o % OW
        t = o // OW
        oh = t % OH
        plane = t // OH
        h0 = (oh * H) // OH
        h1 = ((oh + 1) * H + OH - 1) // OH
        w0 = (ow * W) // OW
        w1 = ((ow + 1) * W + OW - 1) // OW
        base = plane * H * W
        if is_max != 0:
            m = np.float32(-math.inf)
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    v = x[base + ih * W + iw]
                    m = v if v > m else m
            out[o] = m
        else:
            s = 0.0
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    s += x[base + ih * W + iw]
            out[o] = np.float32(s / ((h1 - h0) * (w1 - w0)))
