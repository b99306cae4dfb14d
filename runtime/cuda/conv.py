"""Convolution kernels (float32, NCHW, flat arrays): direct, GEMM, depthwise, generic, col2im.

Every convolution kernel ends in the same fused epilogue, per output element and in the thread that
writes it: bias (with a folded batchnorm in it), then the residual (read just before the write, so the
output may be the residual's own buffer), then the activation.

- ``conv2d_direct``: any kernel size, stride, padding, dilation and groups. A block computes a tile of
  output columns x rows x channels of one group; per chunk of input channels it stages the input patch
  (with its halo) and the weights in shared memory, so every input value is loaded from global memory
  once and reused KH*KW times per output channel. Register blocking: each thread accumulates
  DIRECT_ROWS output rows x DIRECT_CHANNELS output channels (32 values) in registers; the weights it
  reads are the same for a whole warp (a shared-memory broadcast).
- ``gemm``: C = A B per (sample, group), tiled BM x BN x GEMM_BK in shared memory, each thread a
  GEMM_TM x GEMM_TN register tile strided by the block size (so loads and stores are coalesced and
  shared-memory reads conflict-free). B and C are addressed through strides, so the same kernel is the
  1x1 convolution (B = the input planes), the dense layer (B = the input rows, transposed) and the first
  half of a transposed convolution.
- ``conv2d_depthwise``: groups with one input channel (or few output channels) each: a block per output
  channel and spatial tile, its input patch in shared memory, DW_ROWS rows per thread.
- ``conv2d_generic``: one thread per output, no shared memory: the fallback for a window too large to
  stage.
- ``col2im``: the second half of a transposed convolution, as a gather (each output sums the taps that
  land on it: no atomics).
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from ._common import activate, kernel, store_epilogue

DIRECT_ROWS = 4  # output rows per thread (register tile)
DIRECT_CHANNELS = 8  # output channels per thread (register tile)
DIRECT_SMEM_X = 4096  # floats of shared memory for the input patches of a chunk of input channels
DIRECT_SMEM_W = 4096  # floats for their weights
DIRECT_TILE = DIRECT_ROWS * DIRECT_CHANNELS  # accumulators per thread (sizes must be literal constants)

GEMM_TM = 4  # rows of C per thread
GEMM_TN = 4  # columns of C per thread
GEMM_BK = 8  # depth of a shared-memory tile
GEMM_MAX_BM = 128  # shared capacity: blockDim.y * GEMM_TM <= GEMM_MAX_BM
GEMM_MAX_BN = 128  # blockDim.x * GEMM_TN <= GEMM_MAX_BN
GEMM_SMEM_A = GEMM_BK * GEMM_MAX_BM
GEMM_SMEM_B = GEMM_BK * GEMM_MAX_BN
GEMM_TILE = GEMM_TM * GEMM_TN

DW_ROWS = 4  # output rows per thread of the depthwise kernel
DW_SMEM = 4096  # floats for one input channel's patch


@kernel("aaaaa iiiiiii iiiiiiii iii i iff")
def conv2d_direct(x, w, bias, res, out,
                  CIN, H, W, COUT, OH, OW, G,
                  KH, KW, sh, sw, pt, pl, dh, dw,
                  ci_chunk, tiles_w, co_tiles,
                  has_res, act, act_a, act_b):
    """out = act(conv(x, w) + bias (+ res)). w packed (G, CIN/G, KH, KW, COUT/G): the channels of a
    tap are contiguous, so staging them is coalesced. Grid: (row tiles * column tiles, G * channel
    tiles, N); block: (columns, rows / DIRECT_ROWS, channels / DIRECT_CHANNELS)."""
    s_x = cuda.shared.array(DIRECT_SMEM_X, np.float32)
    s_w = cuda.shared.array(DIRECT_SMEM_W, np.float32)
    acc = cuda.local.array(DIRECT_TILE, np.float32)
    wv = cuda.local.array(DIRECT_CHANNELS, np.float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tz = cuda.threadIdx.z
    TW = cuda.blockDim.x
    TH = cuda.blockDim.y * DIRECT_ROWS
    TC = cuda.blockDim.z * DIRECT_CHANNELS
    tid = tx + cuda.blockDim.x * (ty + cuda.blockDim.y * tz)
    nthreads = cuda.blockDim.x * cuda.blockDim.y * cuda.blockDim.z
    COG = COUT // G
    CG = CIN // G
    oh0 = (cuda.blockIdx.x // tiles_w) * TH
    ow0 = (cuda.blockIdx.x % tiles_w) * TW
    g = cuda.blockIdx.y // co_tiles
    co0 = (cuda.blockIdx.y % co_tiles) * TC
    n = cuda.blockIdx.z
    PH = (TH - 1) * sh + (KH - 1) * dh + 1  # the input patch this tile reads
    PW = (TW - 1) * sw + (KW - 1) * dw + 1
    patch = PH * PW
    ih0 = oh0 * sh - pt
    iw0 = ow0 * sw - pl
    KK = KH * KW
    my_co = co0 + tz * DIRECT_CHANNELS
    my_oh = oh0 + ty * DIRECT_ROWS
    ow = ow0 + tx
    busy = my_co < COG and my_oh < OH and ow < OW  # the others only help to stage
    for i in range(DIRECT_TILE):
        acc[i] = np.float32(0.0)
    x_base = (n * CIN + g * CG) * H * W
    for c0 in range(0, CG, ci_chunk):
        nc = min(ci_chunk, CG - c0)
        for idx in range(tid, nc * patch, nthreads):
            ci = idx // patch
            r = idx - ci * patch
            py = r // PW
            ih = ih0 + py
            iw = iw0 + r - py * PW
            v = np.float32(0.0)
            if ih >= 0 and ih < H and iw >= 0 and iw < W:
                v = x[x_base + ((c0 + ci) * H + ih) * W + iw]
            s_x[idx] = v
        for idx in range(tid, nc * KK * TC, nthreads):
            rest = idx // TC  # input channel * KK + tap
            co = co0 + idx - rest * TC
            v = np.float32(0.0)
            if co < COG:
                v = w[((g * CG + c0) * KK + rest) * COG + co]
            s_w[idx] = v
        cuda.syncthreads()
        if busy:
            for ci in range(nc):
                for kh in range(KH):
                    for kw in range(KW):
                        wb = ((ci * KH + kh) * KW + kw) * TC + tz * DIRECT_CHANNELS
                        for c in range(DIRECT_CHANNELS):
                            wv[c] = s_w[wb + c]
                        xb = ci * patch + (ty * DIRECT_ROWS * sh + kh * dh) * PW + tx * sw + kw * dw
                        for r in range(DIRECT_ROWS):
                            xv = s_x[xb + r * sh * PW]
                            for c in range(DIRECT_CHANNELS):
                                acc[r * DIRECT_CHANNELS + c] += xv * wv[c]
        cuda.syncthreads()
    if not busy:
        return
    for r in range(DIRECT_ROWS):
        oh = my_oh + r
        if oh < OH:
            for c in range(DIRECT_CHANNELS):
                co = my_co + c
                if co < COG:
                    oc = g * COG + co
                    o = ((n * COUT + oc) * OH + oh) * OW + ow
                    store_epilogue(out, res, o, acc[r * DIRECT_CHANNELS + c] + bias[oc], has_res, act, act_a, act_b)


@kernel("aaaaa iiii iiiiii i iff")
def gemm(a, b, bias, res, out,
         M, P, K, G,
         b_sn, b_sk, b_sp, c_sn, c_sm, c_sp,
         has_res, act, act_a, act_b):
    """For z = n * G + g: C[m, p] = act(sum_k A[m, k] B[k, p] + bias[g*M + m] (+ res)).

    A = a[(g*M + m)*K + k] (row-major per group); B[k, p] = b[n*b_sn + (g*K + k)*b_sk + p*b_sp];
    C[m, p] = out[n*c_sn + (g*M + m)*c_sm + p*c_sp]. Grid: (P tiles, M tiles, N * G); block
    (BN / GEMM_TN, BM / GEMM_TM).
    """
    s_a = cuda.shared.array(GEMM_SMEM_A, np.float32)  # [k][m]
    s_b = cuda.shared.array(GEMM_SMEM_B, np.float32)  # [k][p]
    acc = cuda.local.array(GEMM_TILE, np.float32)
    ar = cuda.local.array(GEMM_TM, np.float32)
    br = cuda.local.array(GEMM_TN, np.float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    bx = cuda.blockDim.x
    by = cuda.blockDim.y
    BN = bx * GEMM_TN
    BM = by * GEMM_TM
    tid = tx + bx * ty
    nthreads = bx * by
    n = cuda.blockIdx.z // G
    g = cuda.blockIdx.z - n * G
    m0 = cuda.blockIdx.y * BM
    p0 = cuda.blockIdx.x * BN
    a_base = g * M * K
    b_base = n * b_sn + g * K * b_sk
    for i in range(GEMM_TILE):
        acc[i] = np.float32(0.0)
    for k0 in range(0, K, GEMM_BK):
        for idx in range(tid, BM * GEMM_BK, nthreads):
            mm = idx // GEMM_BK
            kk = idx - mm * GEMM_BK
            v = np.float32(0.0)
            if m0 + mm < M and k0 + kk < K:
                v = a[a_base + (m0 + mm) * K + k0 + kk]
            s_a[kk * BM + mm] = v
        for idx in range(tid, GEMM_BK * BN, nthreads):
            kk = idx // BN
            pp = idx - kk * BN
            v = np.float32(0.0)
            if p0 + pp < P and k0 + kk < K:
                v = b[b_base + (k0 + kk) * b_sk + (p0 + pp) * b_sp]
            s_b[kk * BN + pp] = v
        cuda.syncthreads()
        for kk in range(GEMM_BK):
            for i in range(GEMM_TM):
                ar[i] = s_a[kk * BM + ty + i * by]
            for j in range(GEMM_TN):
                br[j] = s_b[kk * BN + tx + j * bx]
            for i in range(GEMM_TM):
                for j in range(GEMM_TN):
                    acc[i * GEMM_TN + j] += ar[i] * br[j]
        cuda.syncthreads()
    for i in range(GEMM_TM):
        m = m0 + ty + i * by
        if m < M:
            oc = g * M + m
            for j in range(GEMM_TN):
                p = p0 + tx + j * bx
                if p < P:
                    o = n * c_sn + oc * c_sm + p * c_sp
                    store_epilogue(out, res, o, acc[i * GEMM_TN + j] + bias[oc], has_res, act, act_a, act_b)


@kernel("aaaaa iiiiiii iiiiiiii i i iff")
def conv2d_depthwise(x, w, bias, res, out,
                     CIN, H, W, COUT, OH, OW, G,
                     KH, KW, sh, sw, pt, pl, dh, dw,
                     tiles_w,
                     has_res, act, act_a, act_b):
    """Grouped convolution with few channels per group (depthwise: one), w as given (COUT, CIN/G, KH,
    KW). Grid: (row tiles * column tiles, COUT, N); block: (columns, rows / DW_ROWS)."""
    s_x = cuda.shared.array(DW_SMEM, np.float32)
    acc = cuda.local.array(DW_ROWS, np.float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    TW = cuda.blockDim.x
    TH = cuda.blockDim.y * DW_ROWS
    tid = tx + TW * ty
    nthreads = TW * cuda.blockDim.y
    COG = COUT // G
    CG = CIN // G
    oh0 = (cuda.blockIdx.x // tiles_w) * TH
    ow0 = (cuda.blockIdx.x % tiles_w) * TW
    co = cuda.blockIdx.y
    g = co // COG
    n = cuda.blockIdx.z
    PH = (TH - 1) * sh + (KH - 1) * dh + 1
    PW = (TW - 1) * sw + (KW - 1) * dw + 1
    ih0 = oh0 * sh - pt
    iw0 = ow0 * sw - pl
    my_oh = oh0 + ty * DW_ROWS
    ow = ow0 + tx
    busy = my_oh < OH and ow < OW
    for r in range(DW_ROWS):
        acc[r] = np.float32(0.0)
    for ci in range(CG):
        x_base = ((n * CIN + g * CG + ci) * H) * W
        for idx in range(tid, PH * PW, nthreads):
            py = idx // PW
            ih = ih0 + py
            iw = iw0 + idx - py * PW
            v = np.float32(0.0)
            if ih >= 0 and ih < H and iw >= 0 and iw < W:
                v = x[x_base + ih * W + iw]
            s_x[idx] = v
        cuda.syncthreads()
        if busy:
            w_base = (co * CG + ci) * KH * KW
            for kh in range(KH):
                for kw in range(KW):
                    wk = w[w_base + kh * KW + kw]  # one address for the whole block: a broadcast
                    xb = (ty * DW_ROWS * sh + kh * dh) * PW + tx * sw + kw * dw
                    for r in range(DW_ROWS):
                        acc[r] += s_x[xb + r * sh * PW] * wk
        cuda.syncthreads()
    if not busy:
        return
    for r in range(DW_ROWS):
        oh = my_oh + r
        if oh < OH:
            o = ((n * COUT + co) * OH + oh) * OW + ow
            store_epilogue(out, res, o, acc[r] + bias[co], has_res, act, act_a, act_b)


@kernel("aaaaa iiiiiiii iiiiiiii i iff")
def conv2d_generic(x, w, bias, res, out,
                   N, CIN, H, W, COUT, OH, OW, G,
                   KH, KW, sh, sw, pt, pl, dh, dw,
                   has_res, act, act_a, act_b):
    """Any convolution, one thread per output (grid-stride), w as given (COUT, CIN/G, KH, KW)."""
    COG = COUT // G
    CG = CIN // G
    total = N * COUT * OH * OW
    for o in range(cuda.grid(1), total, cuda.gridsize(1)):
        ow = o % OW
        t = o // OW
        oh = t % OH
        t = t // OH
        oc = t % COUT
        n = t // COUT
        g = oc // COG
        s = np.float32(0.0)
        for ci in range(CG):
            x_base = (n * CIN + g * CG + ci) * H * W
            w_base = (oc * CG + ci) * KH * KW
            for kh in range(KH):
                ih = oh * sh - pt + kh * dh
                if ih >= 0 and ih < H:
                    for kw in range(KW):
                        iw = ow * sw - pl + kw * dw
                        if iw >= 0 and iw < W:
                            s += x[x_base + ih * W + iw] * w[w_base + kh * KW + kw]
        store_epilogue(out, res, o, s + bias[oc], has_res, act, act_a, act_b)


@kernel("aaa iiiiiii iiiiiii iff")
def col2im(cols, bias, out,
           N, COUT, H, W, OH, OW, KH,
           KW, sh, sw, pt, pl, dh, dw,
           act, act_a, act_b):
    """out[n, co, oh, ow] = act(bias[co] + sum of cols[n, co*KH*KW + kh*KW + kw, ih, iw] over the taps
    with ih*sh + kh*dh - pt = oh and iw*sw + kw*dw - pl = ow). cols (N, COUT*KH*KW, H, W) comes from
    the GEMM with the weight of runtime/cpu/conv.py::transpose_as_pointwise_weight."""
    KK = KH * KW
    total = N * COUT * OH * OW
    for o in range(cuda.grid(1), total, cuda.gridsize(1)):
        ow = o % OW
        t = o // OW
        oh = t % OH
        t = t // OH
        co = t % COUT
        n = t // COUT
        s = bias[co]
        base = (n * COUT + co) * KK
        for kh in range(KH):
            y = oh + pt - kh * dh
            if y >= 0 and y % sh == 0 and y // sh < H:
                ih = y // sh
                for kw in range(KW):
                    xx = ow + pl - kw * dw
                    if xx >= 0 and xx % sw == 0 and xx // sw < W:
                        s += cols[((base + kh * KW + kw) * H + ih) * W + xx // sw]
        out[o] = activate(s, act, act_a, act_b)
