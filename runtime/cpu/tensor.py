"""Data-movement kernels (concat, upsample, pad), the fully connected layer and the YOLO decoder."""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from ._act import act_range, sigmoid_f32

U = np.uint64  # index cast that removes Numba's negative-index wraparound code
BLOCK = 16384  # elements per parallel piece of a copy

PAD_CONSTANT = 0
PAD_REFLECT = 1
PAD_REPLICATE = 2
PAD_MODES = {"constant": PAD_CONSTANT, "reflect": PAD_REFLECT, "replicate": PAD_REPLICATE, "edge": PAD_REPLICATE}


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


@numba.njit(cache=True, error_model="numpy")
def _pad_index(i, n, mode):
    """Source index along an axis of length ``n`` for padded position ``i`` (-1: constant)."""
    if 0 <= i < n:
        return i
    if mode == PAD_CONSTANT:
        return -1
    if mode == PAD_REPLICATE:
        return 0 if i < 0 else n - 1
    # reflect without repeating the edge; folds repeatedly like numpy when the pad exceeds n - 1
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i = i % period
    if i < 0:
        i += period
    return i if i < n else period - i


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


@numba.njit(cache=True, error_model="numpy", parallel=True, fastmath={"reassoc", "contract"})
def dense_kernel(x, w, bias, act, act_a, act_b, out):
    """out = act(x @ w.T + bias): x (N, K), w (M, K), bias (M,), out (N, M).

    Parallel over blocks of 8 output features; each weight row is read once and dotted with every
    batch row while in cache.  Dot products are vectorised (reassociated) float32 sums.
    """
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
    if act != 0:
        act_range(of, 0, N * M, act, act_a, act_b)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def yolo_decode_kernel(x, anchors, img_h, img_w, out):
    """Decode a YOLO head x (N, A*D, H, W) into out (N, A*H*W, D), rows in (anchor, row, col) order.

    bx = (sigmoid(tx) + col) * img_w / W, by = (sigmoid(ty) + row) * img_h / H,
    bw = exp(tw) * anchor_w, bh = exp(th) * anchor_h, objectness and classes = sigmoid.
    anchors: (A, 2) float32 (w, h) in pixels.
    """
    N, CH, H, W = x.shape
    A = anchors.shape[0]
    D = CH // A
    HW = H * W
    xf = x.reshape(-1)
    of = out.reshape(-1)
    sx = np.float32(img_w / W)
    sy = np.float32(img_h / H)
    for na in prange(N * A):
        n = na // A
        a = na - n * A
        aw = anchors[a, 0]
        ah = anchors[a, 1]
        src = (n * CH + a * D) * HW  # channel block of this anchor
        dst = (n * A + a) * HW * D
        for p in range(HW):
            row = p // W
            col = p - row * W
            o = dst + p * D
            of[U(o)] = (sigmoid_f32(xf[U(src + p)]) + np.float32(col)) * sx
            of[U(o + 1)] = (sigmoid_f32(xf[U(src + HW + p)]) + np.float32(row)) * sy
            of[U(o + 2)] = np.float32(math.exp(xf[U(src + 2 * HW + p)])) * aw
            of[U(o + 3)] = np.float32(math.exp(xf[U(src + 3 * HW + p)])) * ah
            for d in range(4, D):
                of[U(o + d)] = sigmoid_f32(xf[U(src + d * HW + p)])
