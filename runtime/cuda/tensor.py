"""Data-movement kernels (concatenation, upsampling, padding) and the YOLO decoder: one thread per
output element (grid-stride), so writes are coalesced."""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ..padding import pad_source_index
from ._common import device, kernel, sigmoid


@kernel("aa iiii")
def copy_into(x, out, O, J, JO, col_offset):
    """out[o, col_offset + j] = x[o, j] for x (O, J) and out (O, JO): one input of a concatenation along
    an axis, with O the product of the sizes before it."""
    for i in range(cuda.grid(1), O * J, cuda.gridsize(1)):
        o = i // J
        out[o * JO + col_offset + i - o * J] = x[i]


@kernel("aa iiiii")
def upsample_nearest(x, out, NC, H, W, fh, fw):
    """out[.., oh, ow] = x[.., oh // fh, ow // fw]."""
    OH = H * fh
    OW = W * fw
    for o in range(cuda.grid(1), NC * OH * OW, cuda.gridsize(1)):
        ow = o % OW
        t = o // OW
        oh = t % OH
        plane = t // OH
        out[o] = x[(plane * H + oh // fh) * W + ow // fw]


pad_source = device(pad_source_index)


@kernel("aa iiiii iiii i f")
def pad(x, out, NC, H, W, OH, OW, pt, pl, pb, pr, mode, value):
    """Pad (or, for negative amounts, crop) H and W; mode 0 constant, 1 reflect, 2 replicate. Negative
    amounts crop first, positive ones then pad the cropped image (numpy/ONNX order)."""
    ct = max(-pt, 0)
    cl = max(-pl, 0)
    HC = H - ct - max(-pb, 0)
    WC = W - cl - max(-pr, 0)
    fill = np.float32(value)
    for o in range(cuda.grid(1), NC * OH * OW, cuda.gridsize(1)):
        ow = o % OW
        t = o // OW
        oh = t % OH
        plane = t // OH
        r = pad_source(oh - max(pt, 0), HC, mode)
        c = pad_source(ow - max(pl, 0), WC, mode)
        if r < 0 or c < 0:
            out[o] = fill
        else:
            out[o] = x[(plane * H + r + ct) * W + c + cl]


@kernel("aaa iiiii ff")
def yolo_decode(x, anchors, out, N, A, D, H, W, img_h, img_w):
    """Decode a YOLO head x (N, A*D, H, W) into out (N, A*H*W, D), rows in (anchor, row, col) order:
    bx = (sigmoid(tx) + col) * img_w / W, by = (sigmoid(ty) + row) * img_h / H, bw = exp(tw) * anchor_w,
    bh = exp(th) * anchor_h, objectness and classes = sigmoid. anchors: (A, 2) (w, h) in pixels."""
    HW = H * W
    sx = np.float32(img_w / W)
    sy = np.float32(img_h / H)
    for o in range(cuda.grid(1), N * A * HW * D, cuda.gridsize(1)):
        d = o % D
        t = o // D
        p = t % HW
        na = t // HW
        a = na % A
        v = x[(na * D + d) * HW + p]  # channel a*D + d of sample n
        if d == 0:
            r = (sigmoid(v) + np.float32(p % W)) * sx
        elif d == 1:
            r = (sigmoid(v) + np.float32(p // W)) * sy
        elif d == 2:
            r = np.float32(math.exp(np.float64(v))) * anchors[2 * a]
        elif d == 3:
            r = np.float32(math.exp(np.float64(v))) * anchors[2 * a + 1]
        else:
            r = sigmoid(v)
        out[o] = r
