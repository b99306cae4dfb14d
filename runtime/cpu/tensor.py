"""Data-movement kernels (concat, upsample, pad), the fully connected layer and the YOLO decoder."""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from ..padding import PAD_MODES, pad_source_index  # noqa: F401 (PAD_MODES: the codes of pad_kernel)
from ._act import act_range, sigmoid_f32
from ._stack import stack_f32

U = np.uint64  # index cast that removes Numba's negative-index wraparound code
BLOCK = 16384  # elements per parallel piece of a copy

_pad_index = numba.njit(cache=True, error_model="numpy")(pad_source_index)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def copy_into_kernel(x, col_offset, out):
    """out[o, col_offset + j] = x[o, j] for 2-D x (O, J) and out (O, J_out).

    Concatenation along axis ``a`` of NCHW tensors is a copy per input with O = prod(shape[:a])
    and J = prod(shape[a:]); identity/flatten/reshape use O = 1.
    """
    O, J = x.shape
    JO = out.shape[1]
    xf = x.reshape(-1)
    of = out.reshape(-1)
    nb = (J + BLOCK - 1) // BLOCK
    for item in prange(O * nb):
        o = item // nb
        s = (item - o * nb) * BLOCK
        e = min(s + BLOCK, J)
        src = o * J
        dst = o * JO + col_offset
        for j in range(s, e):
            of[U(dst + j)] = xf[U(src + j)]


@numba.njit(cache=True, error_model="numpy", parallel=True)
def upsample_nearest_kernel(x, fh, fw, out):
    """Nearest-neighbour upsampling by integer factors: out[.., oh, ow] = x[.., oh//fh, ow//fw]."""
    N, C, H, W = x.shape
    OW = W * fw
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for nc in prange(N * C):
        for ih in range(H):
            src = (nc * H + ih) * W
            dst = (nc * H * fh + ih * fh) * OW
            for iw in range(W):
                v = xf[U(src + iw)]
                for k in range(fw):
                    of[U(dst + iw * fw + k)] = v
            for r in range(1, fh):
                d = dst + r * OW
                for q in range(OW):
                    of[U(d + q)] = of[U(dst + q)]


@numba.njit(cache=True, error_model="numpy", parallel=True)
def pad_kernel(x, pt, pl, pb, pr, mode, value, out):
    """Pad (or, for negative amounts, crop) H and W; mode 0 constant, 1 reflect, 2 replicate.

    Negative amounts crop first; positive ones then pad the cropped image (numpy/ONNX order).
    """
    N, C, H, W = x.shape
    _, _, OH, OW = out.shape
    ct = max(-pt, 0)
    cl = max(-pl, 0)
    Hc = H - ct - max(-pb, 0)
    Wc = W - cl - max(-pr, 0)
    rows = np.empty(OH, np.int64)
    cols = np.empty(OW, np.int64)
    for r in range(OH):
        s = _pad_index(r - max(pt, 0), Hc, mode)
        rows[r] = s + ct if s >= 0 else -1
    for q in range(OW):
        s = _pad_index(q - max(pl, 0), Wc, mode)
        cols[q] = s + cl if s >= 0 else -1
    fill = np.float32(value)
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for nc in prange(N * C):
        for r in range(OH):
            o = (nc * OH + r) * OW
            ih = rows[r]
            if ih < 0:
                for q in range(OW):
                    of[U(o + q)] = fill
                continue
            src = (nc * H + ih) * W
            for q in range(OW):
                iw = cols[q]
                of[U(o + q)] = xf[U(src + iw)] if iw >= 0 else fill


DENSE_TILE = 4  # batch rows x output features per register tile of the batched dense kernel


@numba.njit(cache=True, error_model="numpy", parallel=True, fastmath={"contract"})
def _dense_tiled(x, w, bias, out):
    """out = x @ w.T + bias for N >= DENSE_TILE: each work item computes a tile of 4 batch rows x 4 output
    features as 16 dot products at once, 16 lanes of k per step (8 vector loads for 16 FMAs); lanes are
    summed at the end. Edge tiles overlap their neighbours (they store the same values)."""
    N, K = x.shape
    M = w.shape[0]
    T = DENSE_TILE
    xf = x.reshape(-1)
    wf = w.reshape(-1)
    of = out.reshape(-1)
    nmb = (M + T - 1) // T
    nnb = (N + T - 1) // T
    k16 = K - K % 16
    for item in prange(nmb * nnb):
        mb = item // nnb
        nb = item - mb * nnb
        m0 = min(mb * T, M - T) if M >= T else 0
        n0 = min(nb * T, N - T)
        acc = stack_f32(256)
        for i in range(256):
            acc[i] = 0.0
        xa = n0 * K
        wa = m0 * K
        for k0 in range(0, k16, 16):
            for j in range(16):
                x0 = xf[U(xa + k0 + j)]
                x1 = xf[U(xa + K + k0 + j)]
                x2 = xf[U(xa + 2 * K + k0 + j)]
                x3 = xf[U(xa + 3 * K + k0 + j)]
                w0 = wf[U(wa + k0 + j)]
                w1 = wf[U(wa + K + k0 + j)] if M >= 2 else w0
                w2 = wf[U(wa + 2 * K + k0 + j)] if M >= 3 else w0
                w3 = wf[U(wa + 3 * K + k0 + j)] if M >= 4 else w0
                acc[j] += x0 * w0
                acc[16 + j] += x0 * w1
                acc[32 + j] += x0 * w2
                acc[48 + j] += x0 * w3
                acc[64 + j] += x1 * w0
                acc[80 + j] += x1 * w1
                acc[96 + j] += x1 * w2
                acc[112 + j] += x1 * w3
                acc[128 + j] += x2 * w0
                acc[144 + j] += x2 * w1
                acc[160 + j] += x2 * w2
                acc[176 + j] += x2 * w3
                acc[192 + j] += x3 * w0
                acc[208 + j] += x3 * w1
                acc[224 + j] += x3 * w2
                acc[240 + j] += x3 * w3
        for a in range(T):
            for b in range(min(T, M)):
                s = np.float32(0.0)
                for j in range(16):
                    s += acc[(a * T + b) * 16 + j]
                for k in range(k16, K):
                    s += xf[U(xa + a * K + k)] * wf[U(wa + b * K + k)]
                of[U((n0 + a) * M + m0 + b)] = s + bias[m0 + b]


@numba.njit(cache=True, error_model="numpy", parallel=True, fastmath={"reassoc", "contract"})
def _dense_rows(x, w, bias, out):
    """out = x @ w.T + bias for small N: parallel over blocks of 8 output features; each weight row is read
    once and dotted with every batch row while in cache (vectorised, reassociated float32 sums)."""
    N, K = x.shape
    M = w.shape[0]
    xf = x.reshape(-1)
    wf = w.reshape(-1)
    of = out.reshape(-1)
    nb = (M + 7) // 8
    for blk in prange(nb):
        for m in range(blk * 8, min(blk * 8 + 8, M)):
            wb = m * K
            for n in range(N):
                xb = n * K
                s = np.float32(0.0)
                for k in range(K):
                    s += xf[U(xb + k)] * wf[U(wb + k)]
                of[U(n * M + m)] = s + bias[m]


@numba.njit(cache=True, error_model="numpy")
def dense_kernel(x, w, bias, act, act_a, act_b, out):
    """out = act(x @ w.T + bias): x (N, K), w (M, K), bias (M,), out (N, M). A batch of a few rows is
    bound by reading the weights (one pass, rows dotted with every sample); larger batches by arithmetic
    (register tiles of 4 samples x 4 features)."""
    N = x.shape[0]
    if N >= DENSE_TILE:
        _dense_tiled(x, w, bias, out)
    else:
        _dense_rows(x, w, bias, out)
    if act != 0:
        act_range(out.reshape(-1), np.int64(0), out.size, act, act_a, act_b)  # (a literal 0: a compile of its own)


YOLO_PIXELS = 64  # pixels per work item of the YOLO decoder


@numba.njit(cache=True, error_model="numpy", parallel=True)
def yolo_decode_kernel(x, anchors, img_h, img_w, out):
    """Decode a YOLO head x (N, A*D, H, W) into out (N, A*H*W, D), rows in (anchor, row, col) order.

    bx = (sigmoid(tx) + col) * img_w / W, by = (sigmoid(ty) + row) * img_h / H,
    bw = exp(tw) * anchor_w, bh = exp(th) * anchor_h, objectness and classes = sigmoid.
    anchors: (A, 2) float32 (w, h) in pixels.
    A work item is a run of YOLO_PIXELS pixels of one anchor: the sigmoids and exps run along each channel's
    contiguous plane into a (D, pixels) tile, which is then written out transposed, pixel by pixel (computed
    in the output's order, each value was a strided read and a scalar sigmoid). Runs balance the threads
    (anchors alone are 3 work items).
    """
    N, CH, H, W = x.shape
    A = anchors.shape[0]
    D = CH // A
    HW = H * W
    xf = x.reshape(-1)
    of = out.reshape(-1)
    sx = np.float32(img_w / W)
    sy = np.float32(img_h / H)
    runs = (HW + YOLO_PIXELS - 1) // YOLO_PIXELS
    for item in prange(N * A * runs):
        na = item // runs
        p0 = (item - na * runs) * YOLO_PIXELS
        m = min(HW - p0, YOLO_PIXELS)
        n = na // A
        a = na - n * A
        src = (n * CH + a * D) * HW + p0  # this anchor's channels, from pixel p0
        tile = np.empty((D, YOLO_PIXELS), np.float32)
        for d in range(D):
            s = src + d * HW
            if d == 2 or d == 3:
                for j in range(m):
                    tile[d, j] = np.float32(math.exp(xf[U(s + j)]))
            else:
                for j in range(m):
                    tile[d, j] = sigmoid_f32(xf[U(s + j)])
        aw = anchors[a, 0]
        ah = anchors[a, 1]
        for j in range(m):
            p = p0 + j
            row = p // W
            col = p - row * W
            o = (na * HW + p) * D
            of[U(o)] = (tile[0, j] + np.float32(col)) * sx
            of[U(o + 1)] = (tile[1, j] + np.float32(row)) * sy
            of[U(o + 2)] = tile[2, j] * aw
            of[U(o + 3)] = tile[3, j] * ah
            for d in range(4, D):
                of[U(o + d)] = tile[d, j]
