# ruff: noqa: FURB136  -- explicit selects: NaN passes as in act_range, and they vectorise
"""Kernels over channel-blocked tensors ("c16": (N, ceil(C/16), H, W, 16), the 16 channels of a block
contiguous for each pixel), for the chains the `layout` pass marks: a dense convolution writes c16
(``conv.conv2d_c16_kernel``), a depthwise convolution reads and writes it, squeeze-and-excitation pools
and scales it, and a 1x1 convolution reads it back into the plain layout; in dense chains (ResNet, VGG)
convolutions read and write it, adding a c16 residual, and max pools (``max_pool_c16_kernel``) pool it.
A tensor may be stored inside a zero halo (``zero_halo_c16_kernel``): its readers take their padding from
it in place.

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

from ._act import ACT_NONE, ACT_SILU, act_range, clamp_f32, register_clamp
from ._stack import stack_f32
from .isa import VECTOR_UNIT
from .pool import inside_taps, max_rows_into
from ._vec import max16_store, max2x2_16_store, max3_run16, max_window16, silu16

U = np.uint64  # index cast that removes Numba's negative-index wraparound code
C16 = 16
DW_TP = VECTOR_UNIT.c16_depthwise_pixels  # output pixels per register tile of the depthwise kernel
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


@numba.njit(cache=True, error_model="numpy", fastmath=_FM, inline="always")
def _dw_taps(acc, src, base, rstride, cstride, kstride, kh_lo, kh_hi, KW, wf, wb, TPX):
    """acc (TPX x 16, TPX at most 8) += the taps of rows [kh_lo, kh_hi): tap (kh, kw) of pixel t is the 16 channels at
    ``src[base + kh * rstride + kw * kstride + t * cstride]``. Called with literal ``KW``, ``cstride`` and
    ``kstride`` for the common shapes: LLVM then unrolls the taps of a row and loads each input vector
    once for all the (pixel, tap) pairs that read it, instead of once per pair."""
    for kh in range(kh_lo, kh_hi):
        rowb = base + kh * rstride
        wr = wb + kh * KW * C16
        for kw in range(KW):
            wo = wr + kw * C16
            b0 = rowb + kw * kstride
            for j in range(C16):
                wj = wf[U(wo + j)]
                acc[j] += src[U(b0 + j)] * wj
                if TPX > 1:
                    acc[16 + j] += src[U(b0 + cstride + j)] * wj
                if TPX > 2:
                    acc[32 + j] += src[U(b0 + 2 * cstride + j)] * wj
                if TPX > 3:
                    acc[48 + j] += src[U(b0 + 3 * cstride + j)] * wj
                if TPX > 4:
                    acc[64 + j] += src[U(b0 + 4 * cstride + j)] * wj
                if TPX > 5:
                    acc[80 + j] += src[U(b0 + 5 * cstride + j)] * wj
                if TPX > 6:
                    acc[96 + j] += src[U(b0 + 6 * cstride + j)] * wj
                if TPX > 7:
                    acc[112 + j] += src[U(b0 + 7 * cstride + j)] * wj


@numba.njit(cache=True, error_model="numpy", fastmath=_FM, inline="always")
def _dw_tile(src, base, rstride, cstride, kstride, kh_lo, kh_hi, KW, wf, wb, bias16, bb, act, act_a, act_b,
             lo, hi, in_regs, out, o, npix, TPX, TAPS):
    """One depthwise tile: TPX (a constant where inlined) output pixels x 16 channels, TPX independent accumulators (see
    ``_dw_taps``); rows kh outside [kh_lo, kh_hi) are padding and skipped. ``TAPS`` (a constant, see
    ``depthwise_taps``): 3 for windows 3 wide, 35 for windows 3 or 5 wide, of column stride 1 or 2 and no column
    dilation only; 0 for any. Bias, taps and the activation
    (``register_clamp``'s lo, hi, in_regs) stay in registers; the first ``npix`` pixels are stored at
    ``out[o:]``."""
    acc = stack_f32(128)
    for t in range(TPX):
        for j in range(C16):
            acc[t * C16 + j] = bias16[bb + j]
    if TAPS == 3 or (TAPS == 35 and KW == 3):  # (kernels for windows 3 (and 5) wide of stride 1 or 2 only:
        if cstride == C16:  # the other branches are not compiled)
            _dw_taps(acc, src, base, rstride, C16, C16, kh_lo, kh_hi, 3, wf, wb, TPX)
        else:
            _dw_taps(acc, src, base, rstride, 2 * C16, C16, kh_lo, kh_hi, 3, wf, wb, TPX)
    elif TAPS == 35:
        if cstride == C16:
            _dw_taps(acc, src, base, rstride, C16, C16, kh_lo, kh_hi, 5, wf, wb, TPX)
        else:
            _dw_taps(acc, src, base, rstride, 2 * C16, C16, kh_lo, kh_hi, 5, wf, wb, TPX)
    elif KW == 3 and kstride == C16 and cstride == C16:
        _dw_taps(acc, src, base, rstride, C16, C16, kh_lo, kh_hi, 3, wf, wb, TPX)
    elif KW == 3 and kstride == C16 and cstride == 2 * C16:
        _dw_taps(acc, src, base, rstride, 2 * C16, C16, kh_lo, kh_hi, 3, wf, wb, TPX)
    elif KW == 5 and kstride == C16 and cstride == C16:
        _dw_taps(acc, src, base, rstride, C16, C16, kh_lo, kh_hi, 5, wf, wb, TPX)
    elif KW == 5 and kstride == C16 and cstride == 2 * C16:
        _dw_taps(acc, src, base, rstride, 2 * C16, C16, kh_lo, kh_hi, 5, wf, wb, TPX)
    else:
        _dw_taps(acc, src, base, rstride, cstride, kstride, kh_lo, kh_hi, KW, wf, wb, TPX)
    if npix == TPX:
        for j in range(TPX * C16):
            out[U(o + j)] = clamp_f32(acc[j], lo, hi)
        if in_regs:
            return
    else:  # stage, so that ``acc`` is only indexed by constants
        stg = stack_f32(128)
        for j in range(TPX * C16):
            stg[j] = acc[j]
        for j in range(npix * C16):
            out[U(o + j)] = stg[j]
    if act != ACT_NONE:
        act_range(out, o, npix * C16, act, act_a, act_b)


def _make_depthwise_c16_kernel(DW_TP, SILU=False, TAPS=0):
    """``depthwise_c16_kernel`` with tiles of ``DW_TP`` (at most 8) output pixels; with ``SILU``, SiLU is applied
    to each output row's vectors while the row is in L1 (``_vec.silu16``) instead of by ``act_range`` per tile,
    which cost more than the math. Both are constants of the compiled kernel (closure cells, which Numba's cache
    keys on): the row loop's exp polynomial, compiled into the kernel, slowed every depthwise tile by about 8%,
    SiLU or not (MobileNet-V2 at batch 16), so it has a kernel of its own. Either computes every activation.
    ``TAPS`` (see ``depthwise_taps``), also a constant: 3 or 35 for a kernel that takes only windows 3 (or 3 and
    5) wide, of column stride 1 or 2 and no column dilation, and compiles the unrolled taps of those shapes
    alone (3: 11 s on a cold cache against 15.5 s for the kernel for any window, 0, which compiles four
    unrolled shapes and the general taps; MobileNet-V2 has 3-wide windows only, EfficientNet-B0 3 and 5)."""

    @numba.njit(cache=True, error_model="numpy", parallel=True, fastmath=_FM)
    def depthwise_c16_kernel(x, H, W, w16, bias16, sh, sw, pt, pl, dh, dw, act, act_a, act_b, out, OH, OW):
        """Depthwise convolution (one input channel per output channel) of c16 ``x`` (flat (N, CB, H, W, 16))
        into c16 ``out`` (flat (N, CB, OH, OW, 16)); ``w16`` (CB, KH, KW, 16), ``bias16`` (CB * 16).

        Work items are (sample, channel block, DW_ROWS output rows, the last block fewer); every output row runs
        in tiles of DW_TP pixels (the last overlaps the one before it; planes narrower than a tile store only
        their pixels).
        A tile whose input columns lie inside the plane reads the input where it is, skipping the taps of
        rows above or below the plane; only a tile that reaches into the left or right padding first copies
        the few columns it reads into a small zero-bordered buffer. (Copying whole padded rows cost as much
        as the arithmetic for stride 2.)
        """
        CB, KH, KW, _ = w16.shape
        N = x.size // (CB * C16 * H * W)
        wf = w16.reshape(-1)
        zero = np.float32(0.0)
        lo, hi, in_regs = register_clamp(act)
        silu_rows = SILU and act == ACT_SILU
        tile_act = ACT_NONE if silu_rows else act
        tiles = (OW + DW_TP - 1) // DW_TP
        span = (DW_TP - 1) * sw + (KW - 1) * dw + 1  # input columns a tile reads
        nrb = (OH + DW_ROWS - 1) // DW_ROWS
        nitems = N * CB * nrb
        nchunk = min(nitems, DW_CHUNKS)
        # One edge buffer per chunk of items, allocated here so the loop body cannot alias it with the tile.
        scratch = np.empty((nchunk, KH * span * C16), np.float32)
        for chunk in prange(nchunk):
            buf = scratch[chunk]
            for item in range(chunk * nitems // nchunk, (chunk + 1) * nitems // nchunk):
                rb = item % nrb
                rest = item // nrb
                cb = rest % CB
                n = rest // CB
                oh0 = rb * DW_ROWS  # (a last block of fewer rows: blocks overlapping the one before it, run by
                # another thread at the same time, applied SiLU twice to the rows both stored)
                xb = (n * CB + cb) * H * W * C16
                wb = cb * KH * KW * C16
                for oh in range(oh0, min(oh0 + DW_ROWS, OH)):
                    ih0 = oh * sh - pt
                    kh_lo, kh_hi = inside_taps(ih0, KH, dh, H)
                    ob = ((n * CB + cb) * OH + oh) * OW * C16
                    for tile in range(tiles):
                        ow0 = tile * DW_TP
                        if ow0 + DW_TP > OW and OW >= DW_TP:
                            ow0 = OW - DW_TP
                        npix = min(DW_TP, OW - ow0)
                        iw0 = ow0 * sw - pl
                        base = xb + (ih0 * W + iw0) * C16
                        # Read in place when the tile's pixels read inside the plane's rows. A tile narrower
                        # than DW_TP (planes under DW_TP wide) computes its unused pixels from whatever follows
                        # the row, provided that lies inside ``x``; their results are never stored.
                        last = iw0 + (npix - 1) * sw + (KW - 1) * dw + 1  # one past the last column used
                        if iw0 >= 0 and last <= W and (npix == DW_TP or kh_hi <= kh_lo or base + (kh_hi - 1) * dh * W * C16
                                                       + (DW_TP - 1) * sw * C16 + (KW - 1) * dw * C16 + C16 <= x.size):
                            _dw_tile(x, base, dh * W * C16, sw * C16, dw * C16, kh_lo, kh_hi, KW, wf, wb, bias16,
                                     cb * C16, tile_act, act_a, act_b, lo, hi, in_regs, out, ob + ow0 * C16, npix,
                                     DW_TP, TAPS)
                            continue
                        for kh in range(kh_lo, kh_hi):  # the columns this tile reads, zero outside the plane
                            src = xb + (ih0 + kh * dh) * W * C16
                            for c in range(span):
                                iw = iw0 + c
                                d = (kh * span + c) * C16
                                if iw < 0 or iw >= W:
                                    for j in range(C16):
                                        buf[U(d + j)] = zero
                                else:
                                    for j in range(C16):
                                        buf[U(d + j)] = x[U(src + iw * C16 + j)]
                        _dw_tile(buf, 0, span * C16, sw * C16, dw * C16, kh_lo, kh_hi, KW, wf, wb, bias16, cb * C16,
                                 tile_act, act_a, act_b, lo, hi, in_regs, out, ob + ow0 * C16, npix, DW_TP, TAPS)
                    if silu_rows:  # the row's vectors, while in L1
                        for q in range(OW):
                            silu16(out, ob + q * C16)

    return depthwise_c16_kernel


depthwise_c16_kernel = _make_depthwise_c16_kernel(DW_TP)
depthwise_c16_3x3_kernel = _make_depthwise_c16_kernel(DW_TP, TAPS=3)  # MobileNet-V2's
depthwise_c16_silu_3x3_5x5_kernel = _make_depthwise_c16_kernel(DW_TP, SILU=True, TAPS=35)  # EfficientNet-B0's


def depthwise_taps(widths_strides_dilations) -> int:
    """The narrowest ``TAPS`` of the depthwise kernels that take every one of these (kernel width, column
    stride, column dilation): 3, 35 or 0 (any)."""
    shapes = set(widths_strides_dilations)
    if all(s in (1, 2) and d == 1 for _, s, d in shapes):
        widths = {k for k, _, _ in shapes}
        if widths <= {3}:
            return 3
        if widths <= {3, 5}:
            return 35
    return 0


def depthwise_kernel(silu: bool, taps: int):
    """The compiled depthwise kernel for SiLU outputs or the others that takes the shapes of ``taps``
    (``depthwise_taps``) and compiles the fewest. Three kernels in all (each one more adds 15-40 s of compiling
    to the test suite's cold run): SiLU outputs of other windows take the kernel for any window, which applies
    SiLU tile by tile."""
    if silu and taps != 0:
        return depthwise_c16_silu_3x3_5x5_kernel
    return depthwise_c16_3x3_kernel if taps == 3 and not silu else depthwise_c16_kernel


@numba.njit(cache=True, error_model="numpy", parallel=True)
def zero_halo_c16_kernel(out, N, CB, OS, HS, WS, ht, hl, hb, hr):
    """Zero the halo of the ``CB`` c16 planes of (HS, WS) stored pixels of each of ``N`` samples in flat ``out``
    (sample n's planes from ``n * OS``: ``OS`` is CB * HS * WS * 16, or more for a channel slice of a larger
    tensor): the top ``ht`` and bottom ``hb`` rows and the ``hl`` / ``hr`` edge pixels of the rows between.

    A tensor stored inside a zero halo is a padded tensor its producer writes in place: the depthwise
    convolution that reads it then needs no bounds tests and no padded copy. The producer zeroes the
    halo on every run because the arena it lives in is shared with other tensors."""
    zero = np.float32(0.0)
    row = WS * C16
    for pl_ in prange(N * CB):
        base = (pl_ // CB) * OS + (pl_ % CB) * HS * row
        for r in range(HS):
            o = base + r * row
            if r < ht or r >= HS - hb:
                for q in range(row):
                    out[U(o + q)] = zero
            else:
                for q in range(hl * C16):
                    out[U(o + q)] = zero
                for q in range((WS - hr) * C16, row):
                    out[U(o + q)] = zero


@numba.njit(cache=True, error_model="numpy", parallel=True)
def global_avg_pool_c16_kernel(x, C, HW, out, N, XS):
    """Mean over each plane of c16 ``x`` (flat (N, CB, HW, 16), sample n from ``n * XS``: CB * HW * 16, or more
    for a channel slice of a larger tensor) into plain ``out`` (flat (N, C)).

    A block's plane is summed as 128-float rows (8 pixels) into 8 partial sums per channel: written
    per pixel, LLVM vectorises across pixels with gathers instead."""
    CB = (C + C16 - 1) // C16
    inv = np.float32(1.0) / np.float32(HW)
    for item in prange(N * CB):
        cb = item % CB
        n = item // CB
        acc = stack_f32(128)
        for j in range(128):
            acc[j] = 0.0
        xb = n * XS + cb * HW * C16
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


MAX_POOL_CHUNKS = 16  # parallel chunks of output rows for max pooling, each with its own row buffer


@numba.njit(cache=True, error_model="numpy", inline="always")
def _max_pool_columns(out, ob, vm, ow_begin, ow_end, KW, sw, pl, dw, W):
    """Output vectors ow_begin .. ow_end - 1 of a max-pool row from ``vm``, the maximum of the window's rows for
    each input column (16 floats a column): the maximum over each window's columns in the image, -inf where
    it has none."""
    for ow in range(ow_begin, ow_end):
        o = ob + ow * C16
        iw0 = ow * sw - pl
        kw_lo, kw_hi = inside_taps(iw0, KW, dw, W)
        if kw_hi <= kw_lo:
            for c in range(C16):
                out[U(o + c)] = -np.inf
            continue
        f = (iw0 + kw_lo * dw) * C16
        max16_store(out, o, vm, f, vm, f)
        for kw in range(kw_lo + 1, kw_hi):
            max16_store(out, o, out, o, vm, (iw0 + kw * dw) * C16)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _edge_window(out, ob, x, src, rstride, rows, ow, KW, sw, pl, dw, W):
    """Output vector ``ow`` of a max-pool row of windows at most 3 x 3 whose columns the image clips (``rows``
    window rows in the image, the first at ``src``): the maximum over its columns in the image, -inf if none."""
    iw0 = ow * sw - pl
    kw_lo, kw_hi = inside_taps(iw0, KW, dw, W)
    o = ob + ow * C16
    if kw_hi <= kw_lo:
        for c in range(C16):
            out[U(o + c)] = -np.inf
    else:
        max_window16(out, o, x, src + (iw0 + kw_lo * dw) * C16, rstride, rows, dw * C16, kw_hi - kw_lo)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def max_pool_c16_kernel(x, CB, HS, WS, it, il, H, W, KH, KW, sh, sw, pt, pl, dh, dw, out, OH, OW, OHS, OWS, ot, ol,
                        N, XS, OS, out_c16, C):
    """Max pooling of a channel-blocked tensor into a channel-blocked one, or with ``out_c16`` False into the plain
    layout (a pool whose readers need it: the flatten before a classifier).

    ``x`` flat (N, CB, HS, WS, 16): planes stored HS x WS, the H x W image at row ``it``, column ``il`` (inside a
    halo, which is not read); ``out`` flat (N, CB, OHS, OWS, 16) with the OH x OW result at (``ot``, ``ol``) (its
    halo is left to ``zero_halo_c16_kernel``), or plain (N, C, OH, OW) (then OHS, OWS = OH, OW and ot = ol = 0:
    each row is pooled into a buffer, then its ``C`` channels are stored into their planes); sample n of ``x``
    starts at ``n * XS``, of ``out`` at ``n * OS`` (the sizes of a sample, or more for channel slices of
    larger tensors). Windows are clipped to the image
    (padding and ceil-mode overhang are skipped, as in ``pool.max_pool2d_kernel``; a window with no pixel in
    the image yields -inf).
    One output row at a time. Windows of at most 3 x 3, stride 1 or 2 (GoogLeNet's, ResNet's, DenseNet's): the windows
    inside the image's columns as one run (``max3_run16``: each input column's maximum over the rows in a
    register, shared with the next window: GoogLeNet's 13 pools took 0.68 ms on one thread with the separate
    passes below, 0.40 ms so), the clipped ones at the edges as other windows. 2x2 windows inside the image (YOLO's and
    U-Net's): each output vector from its four input vectors. Other windows: separable, the maximum over the
    window's image rows into a row buffer, one long contiguous loop (an image row of a block is W * 16
    contiguous floats), then over each window's columns, one 16-lane vector per tap -- whatever the plane size
    or stride (the plain kernel's rows of 14 or 28 pixels spent their time in vector remainders)."""
    ninf = np.float32(-np.inf)
    items = N * CB * OH
    nchunk = min(items, MAX_POOL_CHUNKS)
    runs = KW == 3 and KH <= 3 and dw == 1 and (sw == 1 or sw == 2)
    rows = np.empty((nchunk, 0 if runs else W * C16), np.float32)  # (windows run from the input need none)
    pooled = np.empty((nchunk, 0 if out_c16 else OW * C16), np.float32)  # a row for a plain output
    two_by_two = KH == 2 and KW == 2 and pl == 0 and (OW - 1) * sw + dw < W
    ow_lo = min(-(-pl // sw), OW)  # output columns whose window lies inside the image's: [ow_lo, ow_hi)
    ow_hi = max(min(OW, (W - 1 - (KW - 1) * dw + pl) // sw + 1), ow_lo)
    rstride = dh * WS * C16
    for chunk in prange(nchunk):
        vm = rows[chunk]
        dst = out if out_c16 else pooled[chunk]
        i0 = chunk * items // nchunk
        oh = i0 % OH  # (the row, block and sample advance with the item: no divisions per row)
        n = i0 // OH // CB
        cb = i0 // OH - n * CB
        for _item in range(i0, (chunk + 1) * items // nchunk):
            xb = n * XS + cb * HS * WS * C16
            ob = n * OS + (cb * OHS * OWS + (oh + ot) * OWS + ol) * C16 if out_c16 else 0  # the row in ``dst``
            ih0 = oh * sh - pt
            kh_lo, kh_hi = inside_taps(ih0, KH, dh, H)
            src = xb + ((ih0 + kh_lo * dh + it) * WS + il) * C16
            if two_by_two and kh_lo == 0 and kh_hi == 2:
                right = dw * C16
                for ow in range(OW):
                    f = src + ow * sw * C16
                    max2x2_16_store(dst, ob + ow * C16, x, f, f + rstride, f + right, f + rstride + right)
            elif kh_hi <= kh_lo:
                for q in range(OW * C16):
                    dst[U(ob + q)] = ninf
            elif runs:
                for ow in range(ow_lo):  # the left edge's windows, clipped
                    _edge_window(dst, ob, x, src, rstride, kh_hi - kh_lo, ow, KW, sw, pl, dw, W)
                if ow_hi > ow_lo:
                    max3_run16(dst, ob + ow_lo * C16, x, src + (ow_lo * sw - pl) * C16, rstride, kh_hi - kh_lo,
                               ow_hi - ow_lo, sw * C16)
                for ow in range(ow_hi, OW):  # the right edge's
                    _edge_window(dst, ob, x, src, rstride, kh_hi - kh_lo, ow, KW, sw, pl, dw, W)
            else:
                max_rows_into(vm, 0, x, src, rstride, kh_hi - kh_lo, W * C16)
                _max_pool_columns(dst, ob, vm, 0, OW, KW, sw, pl, dw, W)
            if not out_c16:  # the row's channels (past C: padding) into their planes
                for j in range(min(C16, C - cb * C16)):
                    o = n * OS + ((cb * C16 + j) * OH + oh) * OW
                    for ow in range(OW):
                        out[U(o + ow)] = dst[U(ow * C16 + j)]
            oh += 1
            if oh == OH:
                oh = 0
                cb += 1
                if cb == CB:
                    cb = 0
                    n += 1


@numba.njit(cache=True, error_model="numpy", parallel=True)
def affine_c16_kernel(x, scale, shift, HW, act, act_a, act_b, out, N, XS, OS):
    """out = act(x * scale + shift) per channel (an inference batchnorm folded to one multiply-add): ``x``,
    ``out`` c16 (flat (N, CB, HW, 16), no halo; ``out`` may be ``x``; sample n from ``n * XS`` and ``n * OS``:
    CB * HW * 16, or more for channel slices of larger tensors), ``scale``, ``shift`` (CB * 16,), zero in the
    padding lanes. Rows of 8 pixels against the block's values repeated 8 times (see the pools above)."""
    CB = scale.size // C16
    for item in prange(N * CB):
        cb = item % CB
        sc = stack_f32(128)
        sh = stack_f32(128)
        for t in range(8):
            for j in range(C16):
                sc[t * C16 + j] = scale[U(cb * C16 + j)]
                sh[t * C16 + j] = shift[U(cb * C16 + j)]
        n = item // CB
        xb = n * XS + cb * HW * C16
        ob = n * OS + cb * HW * C16
        rows = (HW * C16) // 128
        for k in range(rows):
            for j in range(128):
                out[U(ob + k * 128 + j)] = x[U(xb + k * 128 + j)] * sc[j] + sh[j]
        for i in range(rows * 128, HW * C16):
            out[U(ob + i)] = x[U(xb + i)] * sc[i % C16] + sh[i % C16]
        if act != 0:
            act_range(out, ob, HW * C16, act, act_a, act_b)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def avg_pool_c16_kernel(x, CB, H, W, KH, KW, sh, sw, pt, pl, pb, pr, count_include_pad, out, OH, OW, N, XS, OS):
    """Average pooling of a channel-blocked tensor (flat (N, CB, H, W, 16), no halo) into one (flat (N, CB,
    OH, OW, 16)), with PyTorch's divisor rule as ``pool.avg_pool2d_kernel``: start = o * s - pad_begin,
    end = min(start + k, size + pad_end); the divisor is (end - start) per axis with ``count_include_pad``,
    else the number of in-image positions. Separable like ``max_pool_c16_kernel``: the sum of the window's
    image rows (one contiguous loop), then of each window's columns, 16 lanes at a time. Sample n of ``x``
    starts at ``n * XS``, of ``out`` at ``n * OS`` (as ``max_pool_c16_kernel``)."""
    items = N * CB * OH
    nchunk = min(items, MAX_POOL_CHUNKS)
    rows = np.empty((nchunk, W * C16), np.float32)
    for chunk in prange(nchunk):
        vm = rows[chunk]
        for item in range(chunk * items // nchunk, (chunk + 1) * items // nchunk):
            oh = item % OH
            plane = item // OH  # n * CB + cb
            n, cb = plane // CB, plane % CB
            xb = n * XS + cb * H * W * C16
            ob = n * OS + (cb * OH + oh) * OW * C16
            hs = oh * sh - pt
            he = min(hs + KH, H + pb)
            h0, h1 = max(hs, 0), min(he, H)
            hdiv = he - hs if count_include_pad != 0 else h1 - h0
            for q in range(W * C16):
                vm[q] = 0.0
            for ih in range(h0, h1):
                i = xb + ih * W * C16
                for q in range(W * C16):
                    vm[q] += x[U(i + q)]
            for ow in range(OW):
                o = ob + ow * C16
                ws = ow * sw - pl
                we = min(ws + KW, W + pr)
                w0, w1 = max(ws, 0), min(we, W)
                wdiv = we - ws if count_include_pad != 0 else w1 - w0
                for c in range(C16):
                    out[U(o + c)] = 0.0
                for iw in range(w0, w1):
                    for c in range(C16):
                        out[U(o + c)] += vm[iw * C16 + c]
                d = np.float32(hdiv) * np.float32(wdiv)
                for c in range(C16):
                    out[U(o + c)] = out[U(o + c)] / d


@numba.njit(cache=True, error_model="numpy", parallel=True)
def upsample_c16_kernel(x, CB, HS, WS, it, il, H, W, fh, fw, out, OHS, OWS, ot, ol, N, XS, OS):
    """Nearest-neighbour upsampling by integer factors of a channel-blocked tensor into one: output pixel
    (oh, ow) is input pixel (oh // fh, ow // fw), 16 lanes at a time. ``x`` flat (N, CB, HS, WS, 16) with the
    H x W image at (``it``, ``il``) inside its halo; ``out`` flat (N, CB, OHS, OWS, 16) with the (H * fh) x
    (W * fw) result at (``ot``, ``ol``) (its halo is left to ``zero_halo_c16_kernel``); sample n of ``x`` from
    ``n * XS``, of ``out`` from ``n * OS`` (as ``max_pool_c16_kernel``). One input row per work item: it writes
    its first output row, then copies that row fh - 1 times."""
    row = W * fw * C16
    for item in prange(N * CB * H):
        ih = item % H
        plane = item // H  # n * CB + cb
        n, cb = plane // CB, plane % CB
        src = n * XS + ((cb * HS + ih + it) * WS + il) * C16
        dst = n * OS + ((cb * OHS + ih * fh + ot) * OWS + ol) * C16
        for iw in range(W):
            for k in range(fw):
                o = dst + (iw * fw + k) * C16
                for c in range(C16):
                    out[U(o + c)] = x[U(src + iw * C16 + c)]
        for r in range(1, fh):
            d = dst + r * OWS * C16
            for q in range(row):
                out[U(d + q)] = out[U(dst + q)]


@numba.njit(cache=True, error_model="numpy", parallel=True)
def col2im_c16_kernel(cols, H, W, bias, KH, KW, sh, sw, pt, pl, dh, dw, act, act_a, act_b, out, OCB, OH, OW, OHS,
                      OWS, ot, ol, N, OS):
    """Second half of a channel-blocked transposed convolution (``ops.ConvTransposeC16``): add each tap's
    products into place, per output row.

    ``cols`` flat (N, KH * KW * OCB, H, W, 16), from the 1x1 convolution: block ``(kh * KW + kw) * OCB + ob``
    holds tap (kh, kw)'s products for output block ob at every input pixel. Input pixel (ih, iw) and tap
    (kh, kw) land on output (ih * sh + kh * dh - pt, iw * sw + kw * dw - pl). ``out`` flat (N, OCB, OHS, OWS,
    16), the OH x OW result at (``ot``, ``ol``) inside its halo (left to ``zero_halo_c16_kernel``), sample n
    from ``n * OS``; ``bias`` (OCB * 16,), zero in the padding lanes, then the fused activation. One output row
    of one block per work item gathers from the taps that reach it, so no two items write the same element."""
    KK = KH * KW
    plane_floats = H * W * C16
    for item in prange(N * OCB * OH):
        oh = item % OH
        plane = item // OH  # n * OCB + ob
        n, ob = plane // OCB, plane % OCB
        o0 = n * OS + ((ob * OHS + oh + ot) * OWS + ol) * C16
        for ow in range(OW):
            for c in range(C16):
                out[U(o0 + ow * C16 + c)] = bias[ob * C16 + c]
        for kh in range(KH):
            r = oh + pt - kh * dh  # = ih * sh for the input row this tap brings here
            if r < 0 or r % sh != 0 or r // sh >= H:
                continue
            for kw in range(KW):
                shift = kw * dw - pl  # ow = iw * sw + shift
                lo = 0 if shift >= 0 else (-shift + sw - 1) // sw
                hi = min(W, (OW - shift + sw - 1) // sw) if OW > shift else 0
                src = ((n * KK + kh * KW + kw) * OCB + ob) * plane_floats + (r // sh) * W * C16
                for iw in range(lo, hi):
                    o = o0 + (iw * sw + shift) * C16
                    s = src + iw * C16
                    for c in range(C16):
                        out[U(o + c)] += cols[U(s + c)]
        if act != 0:
            act_range(out, o0, OW * C16, act, act_a, act_b)
