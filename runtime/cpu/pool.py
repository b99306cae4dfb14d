# ruff: noqa: FURB136  -- explicit selects vectorise and ignore NaN like the comparisons they are
"""Pooling kernels (float32, NCHW), parallel over (batch x channel) planes.

Sliding-window pools work row by row: for each window tap (kh, kw) the range of output columns
whose input column is inside the image is computed once, so the innermost loop runs over output
columns without bounds tests (contiguous when the stride is 1).  Positions outside the image
(padding, ceil_mode overhang) are skipped: -inf for max, 0 for the sum of avg.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

U = np.uint64  # index cast that removes Numba's negative-index wraparound code


@numba.njit(cache=True, error_model="numpy", inline="always")
def _col_range(kw_off, pl, sw, W, OW):
    """Output columns ow with 0 <= ow*sw - pl + kw_off < W, as [lo, hi)."""
    a = pl - kw_off  # ow*sw >= a
    lo = 0 if a <= 0 else (a + sw - 1) // sw
    b = W + pl - kw_off  # ow*sw < b
    hi = 0 if b <= 0 else (b + sw - 1) // sw
    hi = min(hi, OW)
    return lo, max(lo, hi)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def max_pool2d_kernel(x, KH, KW, sh, sw, pt, pl, dh, dw, out):
    """out[n,c,oh,ow] = max over taps of x[n,c,oh*sh-pt+kh*dh, ow*sw-pl+kw*dw] (in-image taps only).

    The output size (ceil_mode, end padding) is given by ``out``; a window with no in-image tap
    yields -inf.
    """
    N, C, H, W = x.shape
    _, _, OH, OW = out.shape
    xf = x.reshape(-1)
    of = out.reshape(-1)
    ninf = np.float32(-np.inf)
    for nc in prange(N * C):
        xb = nc * H * W
        for oh in range(OH):
            o = (nc * OH + oh) * OW
            for ow in range(OW):
                of[U(o + ow)] = ninf
            for kh in range(KH):
                ih = oh * sh - pt + kh * dh
                if ih < 0 or ih >= H:
                    continue
                for kw in range(KW):
                    lo, hi = _col_range(kw * dw, pl, sw, W, OW)
                    i = xb + ih * W - pl + kw * dw
                    for ow in range(lo, hi):
                        v = xf[U(i + ow * sw)]
                        m = of[U(o + ow)]
                        of[U(o + ow)] = v if v > m else m


@numba.njit(cache=True, error_model="numpy", parallel=True)
def avg_pool2d_kernel(x, KH, KW, sh, sw, pt, pl, pb, pr, count_include_pad, out):
    """Average pooling with PyTorch's divisor rule.

    start = o*s - pad_begin, end = min(start + k, size + pad_end); with count_include_pad the
    divisor is (end - start) per axis (padding counts, ceil_mode overhang does not), otherwise
    the number of in-image positions.
    """
    N, C, H, W = x.shape
    _, _, OH, OW = out.shape
    xf = x.reshape(-1)
    of = out.reshape(-1)
    # per-column divisor factor (the row factor is applied per row)
    wdiv = np.empty(OW, np.float32)
    for ow in range(OW):
        ws = ow * sw - pl
        we = min(ws + KW, W + pr)
        if count_include_pad != 0:
            wdiv[ow] = we - ws
        else:
            wdiv[ow] = min(we, W) - max(ws, 0)
    for nc in prange(N * C):
        xb = nc * H * W
        for oh in range(OH):
            o = (nc * OH + oh) * OW
            hs = oh * sh - pt
            he = min(hs + KH, H + pb)
            if count_include_pad != 0:
                hdiv = he - hs
            else:
                hdiv = min(he, H) - max(hs, 0)
            for ow in range(OW):
                of[U(o + ow)] = 0.0
            for kh in range(KH):
                ih = hs + kh
                if ih < 0 or ih >= H:
                    continue
                for kw in range(KW):
                    lo, hi = _col_range(kw, pl, sw, W, OW)
                    i = xb + ih * W - pl + kw
                    for ow in range(lo, hi):
                        of[U(o + ow)] += xf[U(i + ow * sw)]
            hd = np.float32(hdiv)
            for ow in range(OW):
                of[U(o + ow)] = of[U(o + ow)] / (hd * wdiv[ow])


@numba.njit(cache=True, error_model="numpy", parallel=True, fastmath={"reassoc", "contract"})
def global_avg_pool_kernel(x, out):
    """Mean of each (n, c) plane: x (N, C, H, W) -> out (N, C, 1, 1)."""
    N, C, H, W = x.shape
    HW = H * W
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for nc in prange(N * C):
        s = np.float32(0.0)
        b = nc * HW
        for i in range(HW):
            s += xf[U(b + i)]
        of[nc] = s / np.float32(HW)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def global_max_pool_kernel(x, out):
    """Max of each (n, c) plane: x (N, C, H, W) -> out (N, C, 1, 1)."""
    N, C, H, W = x.shape
    HW = H * W
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for nc in prange(N * C):
        b = nc * HW
        m = np.float32(-np.inf)
        for i in range(HW):
            v = xf[U(b + i)]
            m = v if v > m else m
        of[nc] = m


@numba.njit(cache=True, error_model="numpy", parallel=True)
def adaptive_pool2d_kernel(x, is_max, out):
    """Adaptive average (is_max == 0) or max pooling to out's (OH, OW).

    Bin i along an axis of length ``n`` covers [floor(i*n/o), ceil((i+1)*n/o)) (PyTorch).
    """
    N, C, H, W = x.shape
    _, _, OH, OW = out.shape
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for nc in prange(N * C):
        xb = nc * H * W
        for oh in range(OH):
            h0 = (oh * H) // OH
            h1 = ((oh + 1) * H + OH - 1) // OH
            for ow in range(OW):
                w0 = (ow * W) // OW
                w1 = ((ow + 1) * W + OW - 1) // OW
                if is_max != 0:
                    m = np.float32(-np.inf)
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            v = xf[U(xb + ih * W + iw)]
                            m = v if v > m else m
                    of[U((nc * OH + oh) * OW + ow)] = m
                else:
                    s = 0.0  # float64 accumulator
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            s += xf[U(xb + ih * W + iw)]
                    of[U((nc * OH + oh) * OW + ow)] = s / ((h1 - h0) * (w1 - w0))
