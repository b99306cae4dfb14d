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

from ..padding import inside_taps as _inside_taps

U = np.uint64  # index cast that removes Numba's negative-index wraparound code
inside_taps = numba.njit(cache=True, error_model="numpy", inline="always")(_inside_taps)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _col_range(kw_off, pl, sw, W, OW):
    """Output columns ow with 0 <= ow*sw - pl + kw_off < W, as [lo, hi)."""
    a = pl - kw_off  # ow*sw >= a
    lo = 0 if a <= 0 else (a + sw - 1) // sw
    b = W + pl - kw_off  # ow*sw < b
    hi = 0 if b <= 0 else (b + sw - 1) // sw
    hi = min(hi, OW)
    return lo, max(lo, hi)


@numba.njit(cache=True, error_model="numpy", inline="always")
def bordered_row(out, o, Wp, xf, i, inside, pl, W, fill):
    """out[o:o + Wp] = the W values xf[i:i + W] placed from column pl (cut off at Wp), ``fill`` around them;
    all ``fill`` when not ``inside`` (a row above or below the plane: ``i`` is then not read)."""
    if not inside:
        for q in range(Wp):
            out[U(o + q)] = fill
        return
    for q in range(min(pl, Wp)):
        out[U(o + q)] = fill
    for q in range(min(W, Wp - pl)):
        out[U(o + pl + q)] = xf[U(i + q)]
    for q in range(min(pl + W, Wp), Wp):
        out[U(o + q)] = fill


MAX_CHUNKS = 16  # parallel chunks of planes for max pooling, each with its own buffers


@numba.njit(cache=True, error_model="numpy", inline="always")
def max_rows_into(vm, vo, xf, i, step, rows, n):
    """vm[vo:vo + n] = the maximum of ``rows`` (at least 1) input runs of n floats, xf[i:], xf[i + step:], ...
    (``v if v > m else m``: the first row's NaN stays, later NaNs are passed over). One contiguous loop per
    row: a max pool's window rows, of a plain plane or of a channel-blocked one (W * 16 floats)."""
    if rows == 3:  # (3-row windows: one pass, the running maximum in a register)
        j1, j2 = i + step, i + 2 * step
        for q in range(n):
            m = xf[U(i + q)]
            v = xf[U(j1 + q)]
            m = v if v > m else m
            v = xf[U(j2 + q)]
            vm[U(vo + q)] = v if v > m else m
        return
    for q in range(n):
        vm[U(vo + q)] = xf[U(i + q)]
    for r in range(1, rows):
        j = i + r * step
        for q in range(n):
            v = xf[U(j + q)]
            m = vm[U(vo + q)]
            vm[U(vo + q)] = v if v > m else m


@numba.njit(cache=True, error_model="numpy", inline="always")
def _max_cols(vm, o, of, OW, KW, SW, dw):
    """of[o + ow] = max over kw of vm[ow * SW + kw * dw]; called with a literal SW so that LLVM sees the
    constant stride (stride 2 then loads whole vectors and shuffles instead of gathering)."""
    for ow in range(OW):
        of[U(o + ow)] = vm[U(ow * SW)]
    for kw in range(1, KW):
        d = kw * dw
        for ow in range(OW):
            v = vm[U(ow * SW + d)]
            m = of[U(o + ow)]
            of[U(o + ow)] = v if v > m else m


@numba.njit(cache=True, error_model="numpy", parallel=True)
def _max_pool_3x3_same(x, out):
    """3x3 max pooling, stride 1, padding 1 (the output as large as the input: GoogLeNet's inception pools)
    in two passes over each plane, each one long loop: the maximum of three rows (x shifted by -W, 0, +W
    in the flattened plane), then of three columns (shifted by -1, 0, +1); only the first and last rows
    and the ends of every row, where a shift reaches outside the window, are redone."""
    N, C, H, W = x.shape
    xf = x.reshape(-1)
    of = out.reshape(-1)
    P = H * W
    nchunk = min(N * C, MAX_CHUNKS)
    rows = np.empty((nchunk, P), np.float32)
    for chunk in prange(nchunk):
        vb = rows[chunk]
        for nc in range(chunk * (N * C) // nchunk, (chunk + 1) * (N * C) // nchunk):
            b = nc * P
            for i in range(W, P - W):
                u = xf[U(b + i - W)]
                v = xf[U(b + i)]
                m = v if v > u else u
                v = xf[U(b + i + W)]
                vb[U(i)] = v if v > m else m
            for q in range(W):  # first and last rows: two rows of the window inside the plane
                m = xf[U(b + q)]
                if H > 1:
                    v = xf[U(b + W + q)]
                    m = v if v > m else m
                vb[U(q)] = m
                m = xf[U(b + P - W + q)]
                if H > 1:
                    v = xf[U(b + P - 2 * W + q)]
                    m = v if v > m else m
                vb[U(P - W + q)] = m
            for i in range(1, P - 1):
                u = vb[U(i - 1)]
                v = vb[U(i)]
                m = v if v > u else u
                v = vb[U(i + 1)]
                of[U(b + i)] = v if v > m else m
            for r in range(H):  # the ends of each row: two columns of the window inside the plane
                first = r * W
                last = first + W - 1
                m = vb[U(first)]
                if W > 1:
                    v = vb[U(first + 1)]
                    m = v if v > m else m
                of[U(b + first)] = m
                m = vb[U(last)]
                if W > 1:
                    v = vb[U(last - 1)]
                    m = v if v > m else m
                of[U(b + last)] = m


@numba.njit(cache=True, error_model="numpy", parallel=True)
def _max_pool_whole_plane(x, KH, KW, sh, sw, pt, pl, dh, dw, out):
    """``max_pool2d_kernel`` for stride-1 rows (GoogLeNet's 3x3 pools on 28x28 and 14x14 planes), separable
    and vectorised per plane: the plane is copied into a buffer bordered
    with -inf (so no tap needs a bounds test), the maximum over each row window is taken along the
    whole flattened buffer at once (contiguous loops, one per tap column), then the maximum over the
    column window for each output row. Long loops over the whole plane: on planes of 14 or 28
    columns, loops over single rows spend their time in vector remainders.
    """
    N, C, H, W = x.shape
    _, _, OH, OW = out.shape
    xf = x.reshape(-1)
    of = out.reshape(-1)
    ninf = np.float32(-np.inf)
    HQ = (OH - 1) * sh + (KH - 1) * dh + 1  # buffer rows the windows cover
    Wp = max((OW - 1) * sw + (KW - 1) * dw + 1, pl + W)  # buffer columns
    span = HQ * Wp - (KW - 1) * dw  # flat positions whose row window stays inside the buffer
    nchunk = min(N * C, MAX_CHUNKS)
    # two buffers per chunk: in one array, LLVM cannot tell the row-maximum loops' reads and writes apart
    # and leaves them scalar
    padded = np.empty((nchunk, HQ * Wp), np.float32)
    rowmax = np.empty((nchunk, HQ * Wp), np.float32)
    for chunk in prange(nchunk):
        buf = padded[chunk]
        hm = rowmax[chunk]
        for nc in range(chunk * (N * C) // nchunk, (chunk + 1) * (N * C) // nchunk):
            xb = nc * H * W
            for r in range(HQ):  # the plane at (pt, pl), -inf around it
                ih = r - pt
                bordered_row(buf, r * Wp, Wp, xf, xb + ih * W, ih >= 0 and ih < H, pl, W, ninf)
            for i in range(span):
                hm[U(i)] = buf[U(i)]
            for kw in range(1, KW):
                d = kw * dw
                for i in range(span):
                    v = buf[U(i + d)]
                    m = hm[U(i)]
                    hm[U(i)] = v if v > m else m
            for oh in range(OH):
                o = (nc * OH + oh) * OW
                r0 = oh * sh * Wp
                for ow in range(OW):
                    of[U(o + ow)] = hm[U(r0 + ow * sw)]
                for kh in range(1, KH):
                    r = r0 + kh * dh * Wp
                    for ow in range(OW):
                        v = hm[U(r + ow * sw)]
                        m = of[U(o + ow)]
                        of[U(o + ow)] = v if v > m else m


def max_pool2d_kernel(x, KH, KW, sh, sw, pt, pl, dh, dw, out):
    """out[n,c,oh,ow] = max over taps of x[n,c,oh*sh-pt+kh*dh, ow*sw-pl+kw*dw] (in-image taps only).

    The output size (ceil_mode, end padding) is given by ``out``; a window with no in-image tap
    yields -inf. Chooses one of three compiled kernels here, in Python, so that a process compiles only
    those its pools use (the three together took about 7 s of a cold start): 3x3 windows of stride 1 and
    padding 1 (``_max_pool_3x3_same``), other stride-1 rows (``_max_pool_whole_plane``), and the rest
    (``max_pool_rows_kernel``).
    """
    N, C, H, W = x.shape
    _, _, OH, OW = out.shape
    if KH == 3 and KW == 3 and sh == 1 and sw == 1 and pt == 1 and pl == 1 and dh == 1 and dw == 1 \
            and OH == H and OW == W:
        _max_pool_3x3_same(x, out)
    elif sw == 1:
        _max_pool_whole_plane(x, KH, KW, sh, sw, pt, pl, dh, dw, out)
    else:
        max_pool_rows_kernel(x, KH, KW, sh, sw, pt, pl, dh, dw, out)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def max_pool_rows_kernel(x, KH, KW, sh, sw, pt, pl, dh, dw, out):
    """``max_pool2d_kernel`` for strides over 1 (any window).

    Separable, one output row at a time: the maximum over the window's in-image input
    rows goes into a row buffer bordered with -inf (contiguous loops, the input read once per tap row),
    then the maximum over each window's columns of the buffer. (Taking row maxima over a padded copy of
    the whole plane first read and wrote the plane three times: 3.5x ONNX Runtime's time on ResNet's
    stem pool.)
    """
    N, C, H, W = x.shape
    _, _, OH, OW = out.shape
    xf = x.reshape(-1)
    of = out.reshape(-1)
    ninf = np.float32(-np.inf)
    Wp = max((OW - 1) * sw + (KW - 1) * dw + 1, pl + W)  # buffer columns the windows cover
    q1 = min(W, Wp - pl)  # input columns inside the buffer
    nchunk = min(N * C, MAX_CHUNKS)
    rows = np.empty((nchunk, Wp), np.float32)
    for chunk in prange(nchunk):
        vm = rows[chunk]
        for q in range(Wp):
            vm[U(q)] = ninf
        for nc in range(chunk * (N * C) // nchunk, (chunk + 1) * (N * C) // nchunk):
            xb = nc * H * W
            for oh in range(OH):
                o = (nc * OH + oh) * OW
                ih0 = oh * sh - pt
                kh_lo, kh_hi = inside_taps(ih0, KH, dh, H)
                if kh_hi <= kh_lo:
                    for ow in range(OW):
                        of[U(o + ow)] = ninf
                    continue
                max_rows_into(vm, pl, xf, xb + (ih0 + kh_lo * dh) * W, dh * W, kh_hi - kh_lo, q1)
                if sw == 2:
                    _max_cols(vm, o, of, OW, KW, 2, dw)
                else:
                    _max_cols(vm, o, of, OW, KW, sw, dw)


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
    if KH == 2 and KW == 2 and sh == 2 and sw == 2 and pt == 0 and pl == 0 and 2 * OH <= H and 2 * OW <= W:
        _avg_pool_2x2_stride2(xf, N * C, H, W, OH, OW, of)  # DenseNet's transitions: every window whole
        return
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


@numba.njit(cache=True, error_model="numpy", parallel=True)
def _avg_pool_2x2_stride2(xf, NC, H, W, OH, OW, of):
    """2x2 windows at stride 2, none past the plane: each output is the mean of two pairs of neighbours, added
    in the general kernel's order (row by row) and scaled by 1/4 (exact), in one pass whose even/odd column
    loads vectorise (the general kernel's strided passes ran at a fifth of this speed)."""
    quarter = np.float32(0.25)
    for nc in prange(NC):
        for oh in range(OH):
            r0 = nc * H * W + 2 * oh * W
            r1 = r0 + W
            o = (nc * OH + oh) * OW
            for ow in range(OW):
                c = 2 * ow
                of[U(o + ow)] = (xf[U(r0 + c)] + xf[U(r0 + c + 1)] + xf[U(r1 + c)] + xf[U(r1 + c + 1)]) * quarter


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
