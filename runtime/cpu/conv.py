"""Convolution kernels (float32, NCHW).

Three strategies, chosen by the wrappers in ``ops.py`` (and by a runtime at plan time):

* ``conv2d_blocked_kernel`` -- every dense or grouped convolution with at least a few output
  channels per group.  The weight is repacked once (``conv_pack_weight_kernel``) into blocks of
  ``OCB`` = 32 output channels laid out as ``(group, block, tap, 32)`` where a *tap* ``r`` runs over
  ``(cin, kh, kw)``.  The reduction is a single loop over taps using a table of input offsets, so
  kernel size, stride and dilation cost nothing extra and 1x1 convolutions need no special case.
  The register tile is ``TP`` = 7 output *pixels* x 32 output channels: 14 AVX-512 accumulators,
  filled by one broadcast of each pixel's input value and two vector loads of weights per tap.
  Pixels are taken in row-major order over the whole output plane (tiles may straddle rows), so
  the tile never has to divide the output width; the last tile of a work item overlaps the one
  before it instead of falling back to a slower remainder path.  Work items are (batch, group,
  channel block, chunk of ``CHUNK`` pixels) and run in parallel.
* ``conv2d_depthwise_kernel`` -- groups == cin (any channel multiplier) and other convolutions
  with very few channels per group.  Parallel over (batch, output channel); each output row is
  accumulated tap by tap in a stack buffer with the innermost loop contiguous along the row.
* ``conv_transpose2d_kernel`` -- zero-inserts and pads the input into scratch and runs the blocked
  convolution with the flipped, transposed weight (``conv_transpose_pack_weight_kernel``).

Padding is materialised: a zero-bordered copy of the input is made in scratch (a few percent of
a 3x3 convolution's time) so that the inner loops never test bounds.

All array indices in inner loops are cast to unsigned: Numba emits negative-index wraparound
code for signed indices, which turns vector loads into gathers.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ._act import act_range
from ._stack import stack_f32, stack_i64

OCB = 32  # output channels per register tile (two AVX-512 vectors)
TP = 7  # output pixels per register tile
CHUNK = 56  # output pixels per parallel work item (a multiple of TP)
U = np.uint64  # index cast that removes Numba's negative-index wraparound code

_FM = {"contract"}  # allow FMA contraction only; no reassociation


def blocked_weight_shape(weight_shape, groups):
    """Shape of the packed weight for ``conv2d_blocked_kernel``: (G, NB, CG*KH*KW, OCB)."""
    cout, cg, kh, kw = weight_shape
    cog = cout // groups
    return (groups, -(-cog // OCB), cg * kh * kw, OCB)


def transpose_blocked_weight_shape(weight_shape, groups):
    """Packed weight shape for a ConvTranspose weight (CIN, COUT/G, KH, KW)."""
    cin, cog, kh, kw = weight_shape
    return (groups, -(-cog // OCB), (cin // groups) * kh * kw, OCB)


@numba.njit(cache=True)
def conv_pack_weight_kernel(w, out):
    """Pack a Conv weight (COUT, CG, KH, KW) into ``out`` (G, NB, CG*KH*KW, OCB), zero padded."""
    COUT, CG, KH, KW = w.shape
    G, NB, R, B = out.shape
    COG = COUT // G
    out[...] = 0.0
    for g in range(G):
        for oc in range(COG):
            b = oc // B
            j = oc - b * B
            for ci in range(CG):
                for kh in range(KH):
                    for kw in range(KW):
                        out[g, b, (ci * KH + kh) * KW + kw, j] = w[g * COG + oc, ci, kh, kw]


@numba.njit(cache=True)
def conv_transpose_pack_weight_kernel(w, out):
    """Pack a ConvTranspose weight (CIN, COG, KH, KW) as the equivalent Conv weight.

    The equivalent convolution (over the zero-inserted input) uses the spatially flipped kernel
    with input and output channels swapped within each group.
    """
    CIN, COG, KH, KW = w.shape
    G, NB, R, B = out.shape
    CG = CIN // G
    out[...] = 0.0
    for g in range(G):
        for oc in range(COG):
            b = oc // B
            j = oc - b * B
            for ci in range(CG):
                for kh in range(KH):
                    for kw in range(KW):
                        out[g, b, (ci * KH + kh) * KW + kw, j] = w[g * CG + ci, oc, KH - 1 - kh, KW - 1 - kw]


@numba.njit(cache=True, parallel=True)
def pad_zero_kernel(x, pt, pl, out):
    """Copy ``x`` (N, C, H, W) into ``out`` (N, C, Hp, Wp) at offset (pt, pl); zero the border.

    ``pt``/``pl`` and the implied bottom/right amounts may be negative (cropping).
    """
    N, C, H, W = x.shape
    _, _, Hp, Wp = out.shape
    xf = x.reshape(-1)
    of = out.reshape(-1)
    zero = np.float32(0.0)
    q0 = min(max(0, pl), Wp)  # first output column that receives data
    q1 = max(min(Wp, W + pl), q0)  # one past the last
    for nc in prange(N * C):
        for r in range(Hp):
            ih = r - pt
            o = (nc * Hp + r) * Wp
            if ih < 0 or ih >= H:
                for q in range(Wp):
                    of[U(o + q)] = zero
                continue
            for q in range(q0):
                of[U(o + q)] = zero
            i = (nc * H + ih) * W - pl
            for q in range(q0, q1):
                of[U(o + q)] = xf[U(i + q)]
            for q in range(q1, Wp):
                of[U(o + q)] = zero


@numba.njit(cache=True, parallel=True)
def dilate_pad_kernel(x, sh, sw, pt, pl, out):
    """Zero-insert ``x`` with strides (sh, sw) and place it at offset (pt, pl) in ``out``.

    out[n, c, pt + ih*sh, pl + iw*sw] = x[n, c, ih, iw]; everything else is zero.  Negative
    offsets crop.  Used to lower a transposed convolution to a direct one.
    """
    N, C, H, W = x.shape
    _, _, Hp, Wp = out.shape
    for nc in prange(N * C):
        n = nc // C
        c = nc - n * C
        for r in range(Hp):
            for q in range(Wp):
                out[n, c, r, q] = 0.0
        for ih in range(H):
            r = pt + ih * sh
            if r < 0 or r >= Hp:
                continue
            for iw in range(W):
                q = pl + iw * sw
                if q >= 0 and q < Wp:
                    out[n, c, r, q] = x[n, c, ih, iw]


@numba.njit(cache=True, parallel=True, fastmath=_FM)
def _conv_blocked_core(xp, wp, bias, KH, KW, sh, sw, dh, dw, act, act_a, act_b, out):
    """Blocked direct convolution of an already padded input ``xp`` (see the module docstring)."""
    N, C, Hp, Wp = xp.shape
    G, NB, R, _ = wp.shape
    _, COUT, OH, OW = out.shape
    CG = C // G
    COG = COUT // G
    P = OH * OW
    HWp = Hp * Wp
    # input offset of every tap relative to the top-left input pixel of an output pixel
    xoff = np.empty(R, np.int64)
    for ci in range(CG):
        for kh in range(KH):
            for kw in range(KW):
                xoff[(ci * KH + kh) * KW + kw] = ci * HWp + kh * dh * Wp + kw * dw
    xf = xp.reshape(-1)
    wf = wp.reshape(-1)
    of = out.reshape(-1)
    nch = max(1, P // CHUNK)
    for item in prange(N * G * NB * nch):
        ch = item % nch
        rest = item // nch
        b = rest % NB
        rest = rest // NB
        g = rest % G
        n = rest // G
        p_begin = ch * CHUNK
        p_end = P if ch == nch - 1 else p_begin + CHUNK
        xbase = (n * C + g * CG) * HWp
        obase = (n * COUT + g * COG + b * OCB) * P
        wbase = (g * NB + b) * R * OCB
        bbase = g * COG + b * OCB
        nvalid = min(OCB, COG - b * OCB)
        acc = stack_f32(224)
        pb = stack_i64(7)  # input base offset of each pixel of the tile
        pq = stack_i64(7)  # output pixel index of each pixel of the tile
        p0 = p_begin
        while p0 < p_end:
            ps = p0
            if ps + TP > p_end:  # last tile: overlap the previous one rather than run short
                ps = max(p_end - TP, p_begin)
            oh = ps // OW
            ow = ps - oh * OW
            for t in range(TP):
                q = ps + t
                if q < p_end:
                    pq[t] = q
                    pb[t] = xbase + oh * sh * Wp + ow * sw
                    ow += 1
                    if ow == OW:
                        ow = 0
                        oh += 1
                else:  # fewer than TP pixels in the whole item: repeat the last one
                    pq[t] = pq[t - 1]
                    pb[t] = pb[t - 1]
            b0 = pb[0]
            b1 = pb[1]
            b2 = pb[2]
            b3 = pb[3]
            b4 = pb[4]
            b5 = pb[5]
            b6 = pb[6]
            for j in range(224):
                acc[j] = 0.0
            for r in range(R):
                o = xoff[r]
                x0 = xf[U(b0 + o)]
                x1 = xf[U(b1 + o)]
                x2 = xf[U(b2 + o)]
                x3 = xf[U(b3 + o)]
                x4 = xf[U(b4 + o)]
                x5 = xf[U(b5 + o)]
                x6 = xf[U(b6 + o)]
                wo = wbase + r * OCB
                for j in range(OCB):
                    wj = wf[U(wo + j)]
                    acc[j] += x0 * wj
                    acc[32 + j] += x1 * wj
                    acc[64 + j] += x2 * wj
                    acc[96 + j] += x3 * wj
                    acc[128 + j] += x4 * wj
                    acc[160 + j] += x5 * wj
                    acc[192 + j] += x6 * wj
            for j in range(nvalid):
                bv = bias[bbase + j]
                oj = obase + j * P
                for t in range(TP):
                    of[U(oj + pq[t])] = acc[t * 32 + j] + bv
            p0 = ps + TP
        if act != 0:
            for j in range(nvalid):
                act_range(of, obase + j * P + p_begin, p_end - p_begin, act, act_a, act_b)


@numba.njit(cache=True)
def conv2d_blocked_kernel(x, wp, bias, KH, KW, sh, sw, pt, pl, pb, pr, dh, dw, act, act_a, act_b, out):
    """Dense/grouped convolution with a packed weight (``conv_pack_weight_kernel``).

    x (N, C, H, W); wp (G, NB, C/G*KH*KW, OCB); bias (COUT,); out (N, COUT, OH, OW).
    pads = (pt, pl, pb, pr); the activation (act, act_a, act_b) is applied to the output.
    """
    N, C, H, W = x.shape
    if pt == 0 and pl == 0 and pb == 0 and pr == 0:
        _conv_blocked_core(x, wp, bias, KH, KW, sh, sw, dh, dw, act, act_a, act_b, out)
    else:
        xp = np.empty((N, C, H + pt + pb, W + pl + pr), np.float32)
        pad_zero_kernel(x, pt, pl, xp)
        _conv_blocked_core(xp, wp, bias, KH, KW, sh, sw, dh, dw, act, act_a, act_b, out)


@numba.njit(cache=True)
def conv_transpose2d_kernel(x, wp, bias, KH, KW, sh, sw, pt, pl, dh, dw, act, act_a, act_b, out):
    """Transposed convolution with a weight packed by ``conv_transpose_pack_weight_kernel``.

    x (N, CIN, H, W); out (N, COUT, OH, OW) whose size already includes ``output_padding``.
    Lowered to a stride-1 convolution over the zero-inserted input padded by
    ``dh*(KH-1) - pt`` on top (and whatever makes the output size come out right at the bottom).
    """
    N, C, H, W = x.shape
    OH = out.shape[2]
    OW = out.shape[3]
    qt = dh * (KH - 1) - pt
    ql = dw * (KW - 1) - pl
    Hp = OH + dh * (KH - 1)
    Wp = OW + dw * (KW - 1)
    xp = np.empty((N, C, Hp, Wp), np.float32)
    dilate_pad_kernel(x, sh, sw, qt, ql, xp)
    _conv_blocked_core(xp, wp, bias, KH, KW, 1, 1, dh, dw, act, act_a, act_b, out)


@numba.njit(cache=True)
def _pad_plane(xf, xoff, H, W, pt, pl, Hp, Wp, dst, doff):
    """Write plane ``xf[xoff:xoff+H*W]`` (H, W) zero-padded into ``dst[doff:]`` as (Hp, Wp).

    The plane lands at row ``pt``, column ``pl``; columns past ``pl + W`` and rows past
    ``pt + H`` are zero (pads are non-negative, Hp >= pt + H, Wp >= pl + W).
    """
    zero = np.float32(0.0)
    for r in range(pt):
        o = doff + r * Wp
        for q in range(Wp):
            dst[U(o + q)] = zero
    for ih in range(H):
        o = doff + (pt + ih) * Wp
        for q in range(pl):
            dst[U(o + q)] = zero
        o2 = o + pl
        i = xoff + ih * W
        for q in range(W):
            dst[U(o2 + q)] = xf[U(i + q)]
        for q in range(pl + W, Wp):
            dst[U(o + q)] = zero
    for r in range(pt + H, Hp):
        o = doff + r * Wp
        for q in range(Wp):
            dst[U(o + q)] = zero


DW_LANES = 16  # output columns per vector strip of the depthwise kernel
DW_ROWS = 4  # output rows accumulated together (share tap offsets and weight broadcasts)
DW_CHUNKS = 64  # parallel chunks of (batch, group) items, each with its own scratch buffer


@numba.njit(cache=True, parallel=True, fastmath=_FM)
def conv2d_depthwise_kernel(x, w, bias, sh, sw, pt, pl, pb, pr, dh, dw, act, act_a, act_b, out):
    """Depthwise-style grouped convolution, parallel over (batch, group).

    x (N, C, H, W); w (COUT, C/G, KH, KW) unpacked; bias (COUT,); out (N, COUT, OH, OW).  Meant
    for groups == C (any channel multiplier) and groups with very few channels.

    Each work item first copies its group's input planes into a private, zero-padded buffer (in
    L1/L2) with the columns split into ``sw`` phases (column ``q*sw + ph`` goes to phase ``ph``,
    position ``q``), so that for any stride the DW_LANES input values feeding DW_LANES adjacent
    outputs are contiguous.  A tile is DW_ROWS rows x DW_LANES columns of one output channel;
    the reduction runs over a table of tap offsets.  The last strip/row block overlaps the
    previous one instead of running short; lanes past the plane read the buffer's slack and are
    never stored.
    """
    N, C, H, W = x.shape
    COUT, CG, KH, KW = w.shape
    _, _, OH, OW = out.shape
    G = C // CG
    COG = COUT // G
    Hp = H + pt + pb
    Wp = W + pl + pr
    Wq = (Wp + sw - 1) // sw  # width of one column phase
    phase = Hp * Wq
    plane = sw * phase  # buffer floats per input channel
    R = CG * KH * KW
    toff = np.empty(R, np.int64)
    for ci in range(CG):
        for kh in range(KH):
            for kw in range(KW):
                c = kw * dw
                toff[(ci * KH + kh) * KW + kw] = ci * plane + (c % sw) * phase + kh * dh * Wq + c // sw
    xf = x.reshape(-1)
    wf = w.reshape(-1)
    of = out.reshape(-1)
    zero = np.float32(0.0)
    nstrip = (OW + DW_LANES - 1) // DW_LANES
    nrblk = (OH + DW_ROWS - 1) // DW_ROWS
    # Scratch: one buffer per chunk of work items.  Allocated here, outside the parallel loop, it
    # reaches the loop body as an argument, which LLVM knows cannot alias the stack tile (a buffer
    # allocated inside would keep the tile in memory).  Chunks rather than threads because
    # ``numba.get_num_threads()`` cannot be cached.
    nitems = N * G
    nchunk = min(nitems, DW_CHUNKS)
    scratch = np.empty((nchunk, CG * plane + 2 * DW_LANES), np.float32)
    scratch2 = np.empty((nchunk, plane if sw > 1 else 1), np.float32)
    for chunk in prange(nchunk):
        loc = scratch[chunk]
        tmp = scratch2[chunk]
        for item in range(chunk * nitems // nchunk, (chunk + 1) * nitems // nchunk):
            n = item // G
            g = item - n * G
            # ---- fill the padded, phase-split copy of this group's input planes
            for ci in range(CG):
                xc = (n * C + g * CG + ci) * H * W
                if sw == 1:
                    _pad_plane(xf, xc, H, W, pt, pl, Hp, Wq, loc, ci * plane)
                else:
                    # pad into ``tmp`` with rows of sw*Wq columns, then split the columns into
                    # phases in one long flat pass (row length is a multiple of sw)
                    _pad_plane(xf, xc, H, W, pt, pl, Hp, sw * Wq, tmp, 0)
                    o = ci * plane
                    if sw == 2:
                        for k in range(phase):
                            loc[U(o + k)] = tmp[U(2 * k)]
                            loc[U(o + phase + k)] = tmp[U(2 * k + 1)]
                    else:
                        for k in range(phase):
                            for ph in range(sw):
                                loc[U(o + ph * phase + k)] = tmp[U(sw * k + ph)]
            for q in range(CG * plane, CG * plane + 2 * DW_LANES):
                loc[q] = zero
            # ---- convolve
            acc = stack_f32(64)  # DW_ROWS x DW_LANES
            stg = stack_f32(64)
            for j in range(COG):
                oc = g * COG + j
                bv = bias[oc]
                wo = oc * R
                obase = (n * COUT + oc) * OH * OW
                for rb in range(nrblk):
                    oh0 = rb * DW_ROWS
                    if oh0 + DW_ROWS > OH:
                        oh0 = max(OH - DW_ROWS, 0)
                    # row offsets of the DW_ROWS rows (clamped when OH < DW_ROWS)
                    r1 = min(oh0 + 1, OH - 1)
                    r2 = min(oh0 + 2, OH - 1)
                    r3 = min(oh0 + 3, OH - 1)
                    d1 = (r1 - oh0) * sh * Wq
                    d2 = (r2 - oh0) * sh * Wq
                    d3 = (r3 - oh0) * sh * Wq
                    for s in range(nstrip):
                        c0 = s * DW_LANES
                        if OW >= DW_LANES and c0 + DW_LANES > OW:
                            c0 = OW - DW_LANES
                        base = oh0 * sh * Wq + c0
                        for i in range(64):
                            acc[i] = bv
                        for r in range(R):
                            wv = wf[U(wo + r)]
                            o = base + toff[r]
                            for i in range(DW_LANES):
                                acc[i] += wv * loc[U(o + i)]
                                acc[16 + i] += wv * loc[U(o + d1 + i)]
                                acc[32 + i] += wv * loc[U(o + d2 + i)]
                                acc[48 + i] += wv * loc[U(o + d3 + i)]
                        ob = obase + oh0 * OW + c0
                        o1 = ob + (r1 - oh0) * OW
                        o2 = ob + (r2 - oh0) * OW
                        o3 = ob + (r3 - oh0) * OW
                        if OW >= DW_LANES:  # one loop per row: each becomes a single vector store
                            for i in range(DW_LANES):
                                of[U(ob + i)] = acc[i]
                            for i in range(DW_LANES):
                                of[U(o1 + i)] = acc[16 + i]
                            for i in range(DW_LANES):
                                of[U(o2 + i)] = acc[32 + i]
                            for i in range(DW_LANES):
                                of[U(o3 + i)] = acc[48 + i]
                        else:
                            # narrow plane: stage the tile so that ``acc`` is only ever indexed by
                            # constants (a variable-length loop over it would keep it out of registers)
                            for i in range(64):
                                stg[i] = acc[i]
                            for i in range(OW):
                                of[U(ob + i)] = stg[i]
                                of[U(o1 + i)] = stg[16 + i]
                                of[U(o2 + i)] = stg[32 + i]
                                of[U(o3 + i)] = stg[48 + i]
                if act != 0:
                    act_range(of, obase, OH * OW, act, act_a, act_b)
