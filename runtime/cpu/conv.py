"""Convolution kernels (float32, NCHW).

Four kernels, chosen by the wrappers in ``ops.py`` (and by a runtime at plan time):

* ``conv2d_blocked_kernel`` -- every dense or grouped convolution with at least a few output
  channels per group.  The weight is repacked once (``conv_pack_weight_kernel``) into blocks of
  ``OCB`` = 32 output channels laid out as ``(group, block, tap, 32)`` where a *tap* ``r`` runs over
  ``(cin, kh, kw)``.  The reduction is a single loop over taps using a table of input offsets, so
  kernel size, stride and dilation cost nothing extra and 1x1 convolutions need no special case.
  The register tile is ``TP`` output *pixels* x 32 output channels, filled by one broadcast of each
  pixel's input value and the 32 weights' vector loads per tap: with AVX-512, 7 pixels (14 accumulators
  of the 32 zmm registers); with AVX2, 3 (12 of the 16 ymm registers: 7 spilled them and ran at half the
  speed) -- see ``isa.py``. With AVX-512, a last block with at most 16 valid channels (16, 48, 80, 112, 144 output
  channels; MobileNet's and EfficientNet's projections, YOLO's stem) fills only the first 16 of them:
  the half it skipped was padding (measured alone: 32 -> 16 on 112x112 0.073 -> 0.058 ms, 240 -> 40 on
  28x28 0.056 -> 0.047 ms, 8 groups of 16 0.13 -> 0.095 ms).
  Pixels are taken in row-major order over the whole output plane (tiles may straddle rows), so
  the tile never has to divide the output width; the last tile of a work item overlaps the one
  before it instead of falling back to a slower remainder path.  Work items are (batch, group,
  channel block, chunk of about ``CHUNK`` pixels) and run in parallel; where equal chunks would leave one
  thread more tiles than the others (small planes, few blocks), the chunk size that balances the threads
  best is taken (``pixel_chunk_tiles``).
* ``conv2d_depthwise_kernel`` -- groups == cin (any channel multiplier) and grouped convolutions
  with very few output channels per group.  Parallel over (batch, group): the group's input
  planes are copied zero-padded (and, for stride 2, split into even/odd column phases) into a
  private buffer, then tiles of 8 output rows x ``DW_LANES`` columns (16; 8 with AVX2) accumulate
  tap by tap with the innermost loop contiguous along the row.

Each kernel with a register tile is built by a factory (``_make_*``) whose tile sizes are constants of
the compiled code; the module builds the tiles of the vector unit Numba compiles for (``isa.py``).
* ``conv2d_pointwise_kernel`` -- 1x1 stride-1 convolutions over planes of a few hundred pixels or
  more: a GEMM per group with a register tile of ``PW_MR`` output channels x 32 pixels (8 with AVX-512,
  3 with AVX2), vectorised along the pixels so that results are stored as whole vectors.
* transposed convolutions are a 1x1 convolution (``transpose_as_pointwise_weight``; any of the
  kernels above) producing every (output channel, tap) product, then ``col2im_kernel`` adds the
  taps into place: no multiplications by inserted zeros.

Padding is materialised so that inner loops never test bounds: a channel-blocked input is stored inside a
zero halo by its producer (the layout pass), which the blocked kernel reads as its padding; for a plain input
it makes a zero-bordered copy of the input rows one band of output rows at a time (a few percent of a 3x3
convolution's time); the depthwise kernel pads each plane into its buffer.

All array indices in inner loops are cast to unsigned: Numba emits negative-index wraparound
code for signed indices, which turns vector loads into gathers.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ._act import ACT_SILU, act_range, clamp_f32, register_clamp
from .c16 import zero_halo_c16_kernel
from .isa import VECTOR_UNIT
from .pool import bordered_row
from ._stack import stack_f32, stack_i64
from ._threads import loop_threads
from ._vec import (add16_clamp_store, add16_res_clamp_store, clamp16_res_store, clamp16_store, silu16,
                   store_tile_planes)

OCB = 32  # output channels per register tile (two AVX-512 vectors, four AVX2 ones)
TP = VECTOR_UNIT.conv_tile_pixels  # output pixels per register tile: 7 with AVX-512, 3 with AVX2
TP_MAX = 7  # the most a tile may have
CHUNK = 56  # output pixels per parallel work item (rounded down to whole tiles)
U = np.uint64  # index cast that removes Numba's negative-index wraparound code

_FM = {"contract"}  # allow FMA contraction only; no reassociation
PIXEL_MAJOR_WEIGHT_BYTES = 1 << 19  # blocked conv: up to this much packed weight per group, pixel-major items


def blocked_weight_shape(weight_shape, groups):
    """Shape of the packed weight for ``conv2d_blocked_kernel``: (G, NB, CG*KH*KW, OCB)."""
    cout, cg, kh, kw = weight_shape
    cog = cout // groups
    return (groups, -(-cog // OCB), cg * kh * kw, OCB)


@numba.njit(cache=True, error_model="numpy")
def conv_pack_weight_kernel(w, out):
    """Pack a Conv weight (COUT, CG, KH, KW) into ``out`` (G, NB, CG*KH*KW, OCB), zero padded."""
    COUT, CG, KH, KW = w.shape
    G = out.shape[0]
    B = out.shape[3]
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


@numba.njit(cache=True, error_model="numpy", fastmath=_FM, inline="always")
def _tile_fma(acc, xf, wf, xoff, R, wbase, OCB, J, TP, b0, b1, b2, b3, b4, b5, b6):
    """The register tile of ``_conv_blocked_core``: ``acc[t * J + j]`` = sum over the ``R`` taps ``r`` of
    ``xf[b_t + xoff[r]] * wf[wbase + r * OCB + j]`` for pixels t < TP (input bases b0..b6) and channels j < J
    (J = OCB, or 16 for a last block of at most 16 channels, whose packed rows are OCB wide). J and TP are
    literals at every call, so the loops unroll and the tile stays in registers."""
    for j in range(J * TP):
        acc[j] = 0.0
    for r in range(R):
        o = xoff[r]
        x0 = xf[U(b0 + o)]
        x1 = xf[U(b1 + o)] if TP > 1 else x0
        x2 = xf[U(b2 + o)] if TP > 2 else x0
        x3 = xf[U(b3 + o)] if TP > 3 else x0
        x4 = xf[U(b4 + o)] if TP > 4 else x0
        x5 = xf[U(b5 + o)] if TP > 5 else x0
        x6 = xf[U(b6 + o)] if TP > 6 else x0
        wo = wbase + r * OCB
        for j in range(J):
            wj = wf[U(wo + j)]
            acc[j] += x0 * wj
            if TP > 1:
                acc[J + j] += x1 * wj
            if TP > 2:
                acc[2 * J + j] += x2 * wj
            if TP > 3:
                acc[3 * J + j] += x3 * wj
            if TP > 4:
                acc[4 * J + j] += x4 * wj
            if TP > 5:
                acc[5 * J + j] += x5 * wj
            if TP > 6:
                acc[6 * J + j] += x6 * wj


@numba.njit(cache=True, error_model="numpy", fastmath=_FM, inline="always")
def _store_tile_c16(of, acc, astride, halves, TP, OCB, b, OB, o_sample, PS, ps16, bias, res, has_res, first, count,
                    lo, hi):
    """Store ``_tile_fma``'s tile (channel stride ``astride``, ``halves`` blocks of 16) into block(s) 2b, 2b + 1
    of a channel-blocked output (those below ``OB``) at stored pixels ``ps16``, with bias and clamp; with a
    residual (read where it is stored) only pixels ``first`` .. ``count`` - 1. ``astride``, ``halves`` and
    ``TP`` are literals at every call (the tile is read at constant offsets and stays in registers). Written
    as a loop of floats, LLVM stored each float alone: Numba leaves its SLP vectoriser off."""
    for half in range(halves):
        ob = OCB // 16 * b + half
        if ob < OB and not has_res:
            for t in range(TP):
                o = o_sample + (ob * PS + ps16[t]) * 16
                add16_clamp_store(of, o, acc, t * astride + half * 16, bias, b * OCB + half * 16, lo, hi)
        elif ob < OB:
            for t in range(TP):
                if t >= first and t < count:
                    o = o_sample + (ob * PS + ps16[t]) * 16
                    add16_res_clamp_store(of, o, acc, t * astride + half * 16, bias, b * OCB + half * 16, res, o,
                                          lo, hi)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _silu_tile_c16(of, halves, OCB, b, OB, o_sample, PS, ps16, has_res, first, count):
    """SiLU in place, once each, on the vectors ``_store_tile_c16`` has just stored (``_vec.silu16``: the same
    values as ``act_range``'s), while they are in L1. Called after the store, not inside it: the exp polynomial
    inside the store loop made LLVM compile every blocked convolution's tile worse, SiLU or not (MobileNet-V2's
    1x1 layers at batch 16: 25.5 -> 34.4 ms)."""
    for half in range(halves):
        ob = OCB // 16 * b + half
        if ob < OB:
            for t in range(count):  # (slots from ``count`` on repeat the last pixel: once is enough)
                if not has_res or t >= first:  # (with a residual, the pixels before ``first`` were not stored)
                    silu16(of, o_sample + (ob * PS + ps16[t]) * 16)


@numba.njit(cache=True, error_model="numpy")
def thread_items(items, threads, t):
    """The items [lo, hi) of thread ``t`` when a parallel loop of ``items`` iterations is split over
    ``threads``, as Numba splits it: equal runs, the first ``items % threads`` threads one item more."""
    base = items // threads
    extra = items % threads
    lo = t * base + min(t, extra)
    return lo, lo + base + (1 if t < extra else 0)


@numba.njit(cache=True, error_model="numpy")
def _busiest_thread(Q, k, blocks, stride, threads, item_cost):
    """The most any thread gets, as 10 x its tiles + ``item_cost`` x its items, when a plane of ``Q`` tiles is
    cut into chunks of ``k`` (the last one the remainder), each chunk ``blocks`` work items, a chunk's index
    advancing every ``stride`` items, and the items are split over ``threads`` (``thread_items``)."""
    nch = -(-Q // k)
    short = k - (Q - (nch - 1) * k)  # tiles the last chunk lacks
    items = blocks * nch
    period = stride * nch
    worst = 0
    for t in range(threads):
        lo, hi = thread_items(items, threads, t)
        # items before x that are a last chunk: whole periods, then those past (nch - 1) * stride in the last
        last_lo = lo // period * stride + max(0, lo % period - (nch - 1) * stride)
        last_hi = hi // period * stride + max(0, hi % period - (nch - 1) * stride)
        tiles = (hi - lo) * k - (last_hi - last_lo) * short
        worst = max(worst, 10 * tiles + item_cost * (hi - lo))
    return worst


@numba.njit(cache=True, error_model="numpy")
def pixel_chunk_tiles(Q, K, blocks, stride, threads):
    """Tiles per work item of a blocked convolution over a plane of ``Q`` tiles, ``blocks`` items per chunk
    of the plane (samples x groups x channel blocks), a chunk's index advancing every ``stride`` items in the
    loop's order (the blocks, when they are innermost, or 1), split over ``threads``.

    By default a chunk is k = ceil(Q / floor(Q / K)) tiles (K to 2K - 1 where Q >= K; the last chunk the
    remainder), so a chunk's input stays in cache while the blocks read it. Where that leaves the busiest
    thread more than 3% above the mean, the size from 1 to 2K - 1 tiles that gives it the fewest tiles is
    taken (an item counting as a tenth of a tile, larger chunks on ties): fixed chunks of K with a longer last
    one gave one thread up to a third more work than the other at 2 threads (MobileNet-V2's 14x14 layers: 54
    items of 8, 8 and 12 tiles, the last chunk's 18 all on one thread), and planes with few blocks have few
    items to share."""
    k = min(K, Q)
    k = -(-Q // max(1, Q // k))
    if threads <= 1:
        return k
    if _busiest_thread(Q, k, blocks, stride, threads, np.int64(0)) * threads * 100 <= 10 * blocks * Q * 103:
        return k
    best_k, best = k, -1
    for kk in range(min(Q, 2 * K - 1), 0, -1):
        cost = _busiest_thread(Q, kk, blocks, stride, threads, np.int64(1))  # (not a literal: see _plain_constants)
        if best < 0 or cost < best:
            best_k, best = kk, cost
    return best_k


def _make_blocked_core(OCB, TP, SHUFFLED, HALF):
    """``_conv_blocked_core`` for a register tile of ``TP`` output pixels (at most TP_MAX) x ``OCB`` output
    channels (a multiple of 16), storing a plain output's tile with shuffles (``SHUFFLED``, see
    ``isa.VectorUnit.shuffled_plane_stores``) or float by float, and running a last block of at most 16
    channels as a 16-channel tile (``HALF``, ``isa.VectorUnit.half_tiles``); these are constants of the
    compiled kernel (closure cells, which Numba's cache keys on), so each variant is its own cached kernel."""
    ACC = OCB * TP
    ITEM_PIXELS = CHUNK // TP * TP  # pixels per work item: whole tiles

    @numba.njit(cache=True, error_model="numpy", parallel=True, fastmath=_FM)
    def _conv_blocked_core(xf, N, C, Hp, Wp, in_c16, wp, bias, KH, KW, sh, sw, dh, dw, act, act_a, act_b, res,
                           of, COUT, OH, OW, out_c16, ht, hl, OHs, OWs, PO, xo, XS, OS):
        """Blocked direct convolution of an already padded input (see the module docstring), over flat arrays.

        Layouts: the input ``xf`` is (N, C, Hp, Wp), or with ``in_c16`` channel-blocked (N, ceil(C/16), Hp, Wp,
        16) (then groups == 1 and ``wp`` packed by ``pack_c16_input_weight``); the output ``of`` is (N, COUT,
        OH, OW), or with ``out_c16`` (N, ceil(COUT/16), OH, OW, 16) with every lane written (padding channels
        get bias 0: ``bias`` then holds NB * 32 values).
        A c16 output may be stored inside a zero halo (see ``zero_halo_c16_kernel``): its planes are then (OHs, OWs)
        with pixel (oh, ow) at (oh + ht, ow + hl); without one, ht = hl = 0 and (OHs, OWs) = (OH, OW).
        ``res``: empty, or the residual operand (flat, the output's size, plain layout) added before the
        activation. relu and relu6 are applied as the tile is stored (``register_clamp``); the other
        activations in a pass over each work item's pixels after its tiles are stored. ``out`` may be the
        residual's buffer: each output element is then stored exactly once (tiles that overlap their
        predecessor skip the pixels already stored), reading its residual first.
        ``PO``: pixels between a plain output's (and the residual's) channel planes; OH * OW, or more when
        this call computes a band of OH rows of a taller output (``_conv_padded_in_bands``).
        ``xo``: where the padded input begins inside each stored plane, in floats (a channel-blocked input
        stored inside a zero halo wider than this convolution's padding; 0 otherwise).
        ``XS``, ``OS``: floats from one sample to the next of the input and of a c16 output (and its residual);
        0 for the size of a sample, more for a channel slice of a larger tensor (a concatenation's block run).
        A residual of a c16 output is stored like the output (same halo): it is read at the output's index.
        """
        G, NB, R, _ = wp.shape
        CG = C // G
        COG = COUT // G
        P = OH * OW
        HWp = Hp * Wp
        OB = (COUT + 15) // 16
        PS = OHs * OWs  # stored pixels of a c16 output plane
        # input offset of every tap relative to the top-left input pixel of an output pixel
        xoff = np.empty(R, np.int64)
        if in_c16:
            pix = 16  # floats per pixel of a channel block
            for cb in range(R // (KH * KW * 16)):
                for kh in range(KH):
                    for kw in range(KW):
                        for ci in range(16):
                            xoff[((cb * KH + kh) * KW + kw) * 16 + ci] = (cb * HWp + kh * dh * Wp + kw * dw) * 16 + ci
            sample = ((C + 15) // 16) * 16 * HWp
        else:
            pix = 1
            for ci in range(CG):
                for kh in range(KH):
                    for kw in range(KW):
                        xoff[(ci * KH + kh) * KW + kw] = ci * HWp + kh * dh * Wp + kw * dw
            sample = C * HWp
        if XS > 0:
            sample = XS
        osample = OS if OS > 0 else OB * PS * 16
        wf = wp.reshape(-1)
        has_res = res.size > 0
        lo, hi, in_regs = register_clamp(act)  # none, relu, relu6: clamped as stored; others: a pass after
        silu_stores = out_c16 and act == ACT_SILU  # SiLU vector by vector as a blocked tile is stored
        # Work items in pixel-major order (every channel block of a pixel chunk one after another, so the chunk's
        # input is read once from memory) when a group's packed weights fit in L2 beside it; otherwise
        # block-major (a block's weights stay in cache over all its chunks).
        pixel_major = NB * R * OCB * 4 <= PIXEL_MAJOR_WEIGHT_BYTES
        tiles = pixel_chunk_tiles(-(-P // TP), ITEM_PIXELS // TP, N * G * NB, NB if pixel_major else 1,
                                  loop_threads())
        chunk = tiles * TP
        nch = -(-P // chunk)
        for item in prange(N * G * NB * nch):
            if pixel_major:
                b = item % NB
                rest = item // NB
                ch = rest % nch
                rest = rest // nch
            else:
                ch = item % nch
                rest = item // nch
                b = rest % NB
                rest = rest // NB
            g = rest % G
            n = rest // G
            p_begin = ch * chunk
            p_end = P if ch == nch - 1 else p_begin + chunk
            xbase = n * sample + g * CG * HWp + xo
            obase = (n * COUT + g * COG + b * OCB) * PO
            wbase = (g * NB + b) * R * OCB
            bbase = g * COG + b * OCB
            nvalid = min(OCB, COG - b * OCB)
            acc = stack_f32(ACC)
            pb = stack_i64(TP_MAX)  # input base offset of each pixel of the tile
            pq = stack_i64(TP_MAX)  # output pixel index of each pixel of the tile
            ps16 = stack_i64(TP_MAX)  # where a c16 output stores it (inside the halo)
            p0 = p_begin
            while p0 < p_end:
                ps = p0
                if ps + TP > p_end:  # last tile: overlap the previous one rather than run short
                    ps = max(p_end - TP, p_begin)
                oh = ps // OW
                ow = ps - oh * OW
                for t in range(TP_MAX):  # (slots past TP repeat the last pixel: read, never used)
                    q = ps + t
                    if q < p_end and t < TP:
                        pq[t] = q
                        ps16[t] = (oh + ht) * OWs + ow + hl
                        pb[t] = xbase + (oh * sh * Wp + ow * sw) * pix
                        ow += 1
                        if ow == OW:
                            ow = 0
                            oh += 1
                    else:  # fewer than TP pixels in the whole item: repeat the last one
                        pq[t] = pq[t - 1]
                        ps16[t] = ps16[t - 1]
                        pb[t] = pb[t - 1]
                b0 = pb[0]
                b1 = pb[1]
                b2 = pb[2]
                b3 = pb[3]
                b4 = pb[4]
                b5 = pb[5]
                b6 = pb[6]
                if HALF and OCB > 16 and nvalid <= 16:  # a last block of at most 16 channels: half the FMAs
                    _tile_fma(acc, xf, wf, xoff, R, wbase, OCB, 16, TP, b0, b1, b2, b3, b4, b5, b6)
                    astride = 16
                else:
                    _tile_fma(acc, xf, wf, xoff, R, wbase, OCB, OCB, TP, b0, b1, b2, b3, b4, b5, b6)
                    astride = OCB
                if out_c16:  # each pixel's 16 channels of a block are contiguous: whole-vector stores
                    first = p0 - ps  # pixels stored before and repeated slots of a short tile are skipped
                    count = min(TP, p_end - ps)  # where a residual is added (each pixel's once)
                    if astride == 16:
                        _store_tile_c16(of, acc, 16, 1, TP, OCB, b, OB, n * osample, PS, ps16, bias, res, has_res,
                                        first, count, lo, hi)
                    else:
                        _store_tile_c16(of, acc, OCB, OCB // 16, TP, OCB, b, OB, n * osample, PS, ps16, bias, res,
                                        has_res, first, count, lo, hi)
                    if silu_stores:  # (reads memory, not the tile: the halves need not be literals here)
                        _silu_tile_c16(of, astride // 16, OCB, b, OB, n * osample, PS, ps16, has_res, first, count)
                elif SHUFFLED:  # channel planes: the tile transposed in registers, each channel's pixels stored
                    # as one vector (only pixels not stored before: each with its residual, read first)
                    first = p0 - ps
                    count = min(TP, p_end - ps)
                    o = obase + ps
                    if astride == 16:
                        store_tile_planes(of, o, PO, acc, 0, 16, TP, first, count, nvalid, bias, bbase, res, has_res,
                                          lo, hi)
                    else:
                        store_tile_planes(of, o, PO, acc, 0, OCB, TP, first, count, nvalid, bias, bbase, res,
                                          has_res, lo, hi)
                    if OCB > 16 and nvalid > 16:
                        store_tile_planes(of, o + 16 * PO, PO, acc, 16, OCB, TP, first, count, nvalid - 16, bias,
                                          bbase + 16, res, has_res, lo, hi)
                else:  # channel planes, float by float: pixels not stored before, each plus its residual
                    first = p0 - ps if has_res else 0
                    count = min(TP, p_end - ps)
                    for j in range(nvalid):
                        bv = bias[bbase + j]
                        oj = obase + j * PO + ps
                        if has_res:
                            for t in range(first, count):
                                of[U(oj + t)] = clamp_f32(acc[t * astride + j] + bv + res[U(oj + t)], lo, hi)
                        else:
                            for t in range(first, count):
                                of[U(oj + t)] = clamp_f32(acc[t * astride + j] + bv, lo, hi)
                p0 = ps + TP
            if not in_regs and not silu_stores:
                if out_c16:  # the item's pixels, row by row (rows lie apart inside a halo)
                    for ob in range(OCB // 16 * b, min(OCB // 16 * (b + 1), OB)):
                        for r in range(p_begin // OW, (p_end - 1) // OW + 1):
                            c0 = max(p_begin - r * OW, 0)
                            c1 = min(p_end - r * OW, OW)
                            act_range(of, n * osample + (ob * PS + (r + ht) * OWs + hl + c0) * 16, (c1 - c0) * 16,
                                      act, act_a, act_b)
                else:
                    for j in range(nvalid):
                        act_range(of, obase + j * PO + p_begin, p_end - p_begin, act, act_a, act_b)

    return _conv_blocked_core


_conv_blocked_core = _make_blocked_core(OCB, TP, VECTOR_UNIT.shuffled_plane_stores, VECTOR_UNIT.half_tiles)


PW_MR, PW_PV = VECTOR_UNIT.pointwise_tile  # pointwise kernel's register tile: output channels x pixels
PW_TILES = 4  # pixel tiles per parallel work item
PW_MIN_ITEMS = 16  # split the channel blocks of a pixel chunk until there are this many items


def pointwise_weight_shape(weight_shape, groups):
    """Packed weight shape for ``conv2d_pointwise_kernel``: (G, NB, CG, PW_MR)."""
    cout, cg = weight_shape[:2]
    return (groups, -(-(cout // groups) // PW_MR), cg, PW_MR)


@numba.njit(cache=True, error_model="numpy")
def conv_pack_pointwise_kernel(w, out):
    """Pack a 1x1 Conv weight (COUT, CG, 1, 1) into out (G, NB, CG, PW_MR): block b holds output
    channels b*PW_MR.. of each group, transposed so one input channel's PW_MR weights are
    adjacent; channels past COG are zero."""
    COUT = w.shape[0]
    G, _, CG, MR = out.shape
    COG = COUT // G
    out[...] = 0.0
    for g in range(G):
        for oc in range(COG):
            b = oc // MR
            for ci in range(CG):
                out[g, b, ci, oc - b * MR] = w[g * COG + oc, ci, 0, 0]


@numba.njit(cache=True, error_model="numpy", inline="always")
def _pw_store_row(acc, row, pixels, bv, res, has_res, lo, hi, of, o):
    """Store one output channel's PW_PV pixels of the pointwise tile (``acc[row:row + PW_PV]``) at ``of[o:]``:
    plus the bias, plus the residual read from the same place, clamped to [lo, hi] (no activation, relu or
    relu6), as two explicit 16-float vectors: the staged path's variable row index kept the epilogue
    scalar (a residual conv ran at half the speed of a plain one), and loops here, vectorised with alias
    checks in eight inlined copies, took the kernel's compile time from 4 to 17 seconds."""
    if has_res:
        clamp16_res_store(of, o, acc, row, bv, res, o, lo, hi)
        if pixels == 32:
            clamp16_res_store(of, o + 16, acc, row + 16, bv, res, o + 16, lo, hi)
    else:
        clamp16_store(of, o, acc, row, bv, lo, hi)
        if pixels == 32:
            clamp16_store(of, o + 16, acc, row + 16, bv, lo, hi)


def _make_pointwise_kernel(PW_MR, PW_PV):
    """``conv2d_pointwise_kernel`` for a register tile of ``PW_MR`` (at most 8) output channels x ``PW_PV`` (16
    or 32) pixels, constants of the compiled kernel (closure cells, which Numba's cache keys on)."""
    ACC = PW_MR * PW_PV

    @numba.njit(cache=True, error_model="numpy", parallel=True, fastmath=_FM)
    def conv2d_pointwise_kernel(x, wq, bias, act, act_a, act_b, res, out):
        """1x1, stride-1, unpadded convolution as a GEMM per group: out[oc, p] = sum_ci w[oc, ci] x[ci, p].

        x (N, C, H, W) with H*W >= PW_PV; wq from ``conv_pack_pointwise_kernel``; out (N, COUT, H, W).
        The register tile is PW_MR output channels x PW_PV pixels: per input channel, PW_PV / lanes
        vector loads of the input row, PW_MR weight broadcasts, PW_MR * PW_PV / lanes FMAs; results are
        stored as whole vectors along the output rows, so no transposition is needed.  The last
        pixel tile overlaps its predecessor instead of running short; the last channel block is
        zero-padded and stores only its valid rows.  ``res`` (empty, or the residual operand, flat) is
        added before the activation; with it, the overlapping last tile stores only pixels that no other
        tile stores, so ``out`` may be the residual's buffer.
        """
        N, C, H, W = x.shape
        G, nob, CG, _ = wq.shape
        COUT = out.shape[1]
        COG = COUT // G
        P = H * W
        ntile = (P + PW_PV - 1) // PW_PV
        npch = (ntile + PW_TILES - 1) // PW_TILES
        # Each item runs all channel blocks over its pixel tiles, so the input tile is fetched once
        # and reused from L1; only when there are few pixel chunks are the blocks split over items.
        nocc = min(nob, max(1, PW_MIN_ITEMS // (N * G * npch)))
        bpi = (nob + nocc - 1) // nocc  # blocks per item
        xf = x.reshape(-1)
        wf = wq.reshape(-1)
        of = out.reshape(-1)
        has_res = res.size > 0
        lo, hi, in_regs = register_clamp(act)
        for item in prange(N * G * npch * nocc):
            occ = item % nocc
            rest = item // nocc
            pch = rest % npch
            rest = rest // npch
            g = rest % G
            n = rest // G
            acc = stack_f32(ACC)  # PW_MR x PW_PV
            stg = stack_f32(ACC)
            xg = (n * C + g * CG) * P
            t_end = min(pch * PW_TILES + PW_TILES, ntile)
            b_end = min(occ * bpi + bpi, nob)
            for b in range(occ * bpi, b_end):
                for t in range(pch * PW_TILES, t_end):
                    p0 = min(t * PW_PV, P - PW_PV)
                    oc0 = b * PW_MR
                    wb = (g * nob + b) * CG * PW_MR
                    for i in range(PW_MR * PW_PV):
                        acc[i] = 0.0
                    for ci in range(CG):
                        xo = xg + ci * P + p0
                        wo = wb + ci * PW_MR
                        w0 = wf[U(wo)]
                        w1 = wf[U(wo + 1)] if PW_MR > 1 else w0
                        w2 = wf[U(wo + 2)] if PW_MR > 2 else w0
                        w3 = wf[U(wo + 3)] if PW_MR > 3 else w0
                        w4 = wf[U(wo + 4)] if PW_MR > 4 else w0
                        w5 = wf[U(wo + 5)] if PW_MR > 5 else w0
                        w6 = wf[U(wo + 6)] if PW_MR > 6 else w0
                        w7 = wf[U(wo + 7)] if PW_MR > 7 else w0
                        for v in range(PW_PV):
                            xv = xf[U(xo + v)]
                            acc[v] += w0 * xv
                            if PW_MR > 1:
                                acc[1 * PW_PV + v] += w1 * xv
                            if PW_MR > 2:
                                acc[2 * PW_PV + v] += w2 * xv
                            if PW_MR > 3:
                                acc[3 * PW_PV + v] += w3 * xv
                            if PW_MR > 4:
                                acc[4 * PW_PV + v] += w4 * xv
                            if PW_MR > 5:
                                acc[5 * PW_PV + v] += w5 * xv
                            if PW_MR > 6:
                                acc[6 * PW_PV + v] += w6 * xv
                            if PW_MR > 7:
                                acc[7 * PW_PV + v] += w7 * xv
                    # Epilogue.  Every loop below indexes ``acc`` with constants only (a loop over a
                    # variable row index would keep ``acc`` out of registers for the whole kernel).
                    bb = g * COG + oc0
                    nv = min(PW_MR, COG - oc0)
                    if nv == PW_MR and p0 == t * PW_PV and in_regs:
                        # a full tile overlapping no other, an activation done in registers: straight out
                        o = (n * COUT + bb) * P + p0
                        _pw_store_row(acc, 0, PW_PV, bias[bb], res, has_res, lo, hi, of, o)
                        if PW_MR > 1:
                            _pw_store_row(acc, 1 * PW_PV, PW_PV, bias[bb + 1], res, has_res, lo, hi, of, o + P)
                        if PW_MR > 2:
                            _pw_store_row(acc, 2 * PW_PV, PW_PV, bias[bb + 2], res, has_res, lo, hi, of, o + 2 * P)
                        if PW_MR > 3:
                            _pw_store_row(acc, 3 * PW_PV, PW_PV, bias[bb + 3], res, has_res, lo, hi, of, o + 3 * P)
                        if PW_MR > 4:
                            _pw_store_row(acc, 4 * PW_PV, PW_PV, bias[bb + 4], res, has_res, lo, hi, of, o + 4 * P)
                        if PW_MR > 5:
                            _pw_store_row(acc, 5 * PW_PV, PW_PV, bias[bb + 5], res, has_res, lo, hi, of, o + 5 * P)
                        if PW_MR > 6:
                            _pw_store_row(acc, 6 * PW_PV, PW_PV, bias[bb + 6], res, has_res, lo, hi, of, o + 6 * P)
                        if PW_MR > 7:
                            _pw_store_row(acc, 7 * PW_PV, PW_PV, bias[bb + 7], res, has_res, lo, hi, of, o + 7 * P)
                        continue
                    # Otherwise stage with bias and activation applied, then store the valid rows.
                    # The activation must be applied before storing: overlapping tiles of other work
                    # items then store identical final values, so the overlap is race-free.
                    last = g * COG + COG - 1  # padded rows of the last block reuse a valid bias
                    b0 = bias[min(bb, last)]
                    b1 = bias[min(bb + 1, last)]
                    b2 = bias[min(bb + 2, last)]
                    b3 = bias[min(bb + 3, last)]
                    b4 = bias[min(bb + 4, last)]
                    b5 = bias[min(bb + 5, last)]
                    b6 = bias[min(bb + 6, last)]
                    b7 = bias[min(bb + 7, last)]
                    for v in range(PW_PV):
                        stg[v] = acc[v] + b0
                        if PW_MR > 1:
                            stg[1 * PW_PV + v] = acc[1 * PW_PV + v] + b1
                        if PW_MR > 2:
                            stg[2 * PW_PV + v] = acc[2 * PW_PV + v] + b2
                        if PW_MR > 3:
                            stg[3 * PW_PV + v] = acc[3 * PW_PV + v] + b3
                        if PW_MR > 4:
                            stg[4 * PW_PV + v] = acc[4 * PW_PV + v] + b4
                        if PW_MR > 5:
                            stg[5 * PW_PV + v] = acc[5 * PW_PV + v] + b5
                        if PW_MR > 6:
                            stg[6 * PW_PV + v] = acc[6 * PW_PV + v] + b6
                        if PW_MR > 7:
                            stg[7 * PW_PV + v] = acc[7 * PW_PV + v] + b7
                    v0 = 0
                    if has_res:
                        v0 = t * PW_PV - p0  # pixels before t * PW_PV belong to the previous tile
                        for k in range(nv):
                            o = (n * COUT + bb + k) * P + p0
                            for v in range(v0, PW_PV):
                                stg[k * PW_PV + v] += res[U(o + v)]
                    if act != 0:
                        act_range(stg, np.int64(0), PW_MR * PW_PV, act, act_a, act_b)
                    for k in range(nv):
                        o = (n * COUT + bb + k) * P + p0
                        for v in range(v0, PW_PV):
                            of[U(o + v)] = stg[k * PW_PV + v]

    return conv2d_pointwise_kernel


conv2d_pointwise_kernel = _make_pointwise_kernel(PW_MR, PW_PV)


PAD_BAND_BYTES = 1 << 19  # the zero-bordered copy of a padded convolution's input is made this much at a time


@numba.njit(cache=True, error_model="numpy", inline="always")
def _plain_constants():
    """0, 1 and False typed int64 / bool, for calls into the big kernels: a literal argument (``0``) is typed
    ``Literal[int](0)`` and makes Numba compile the callee once more for it, at 8-12 s a time here."""
    return np.int64(0), np.int64(1), np.bool_(False)


@numba.njit(cache=True, error_model="numpy")
def _conv_padded_in_bands(xf, N, C, H, W, wp, bias, KH, KW, sh, sw, pt, pl, pb, pr, dh, dw, act, act_a, act_b,
                          res, of, COUT, OH, OW, out_c16, ht, hl, OHs, OWs, OS):
    """``_conv_blocked_core`` of a plain input that needs padding, one band of output rows at a time: the input
    rows a band reads are copied, zero-bordered, into one buffer of about ``PAD_BAND_BYTES`` (all channels),
    and the band is computed from it. A zero-bordered copy of the whole input (of the whole batch, as this
    was first written) was as large as the input, so it set the peak memory of ResNet-50 (1.7 MB beside a
    5 MB arena at batch 1); at batch 16 it came fresh from the system at every call (page faults) and left
    the cache before it was read (VGG-16's first 3x3 layers ran at 290 GFLOP/s that way). A band stays in L2.
    ``xf``, ``res`` (empty or the residual) and ``of`` are flat; layouts as in ``_conv_blocked_core``; ``OS`` as
    there (a c16 output's sample stride, 0 for its size).

    A stride-1 convolution whose output has the input's shape may write over its input (the memory plan's
    `in_place`, ``memory.banded_in_place``): a band's output rows replace input rows only after the band was
    copied, and the ``pt`` input rows above the next band, which the next band still reads, are kept aside
    (``carry``) before they are overwritten."""
    ZERO, ONE, NO = _plain_constants()
    Wp = W + pl + pr
    span = (KH - 1) * dh + 1  # input rows one output row reads
    rows = max(1, min(OH, (PAD_BAND_BYTES // (4 * C * Wp) - span) // sh + 1))  # output rows per band
    carrying = sh == 1 and pt > 0 and not out_c16 and COUT == C and OH == H and OW == W
    if carrying:
        rows = max(rows, min(OH, pt))  # the carried rows all come from the band before
    rows = -(-OH // -(-OH // rows))  # equal bands
    band_h = (rows - 1) * sh + span
    band = np.empty(C * band_h * Wp, np.float32)
    carry = np.empty(C * pt * W if carrying else 0, np.float32)
    x_sample = C * H * W
    o_sample = ((COUT + 15) // 16) * 16 * OHs * OWs if out_c16 else COUT * OH * OW
    has_res = res.size > 0
    for n in range(N):
        x_n = xf[n * x_sample:(n + 1) * x_sample]
        for r0 in range(0, OH, rows):
            r1 = min(OH, r0 + rows)
            bh = (r1 - r0 - 1) * sh + span
            b_flat = band[:C * bh * Wp]
            pad_rows_kernel(x_n, C, H, W, r0 * sh - pt, pl, b_flat, bh, Wp)
            if carrying:
                if r0 > 0:  # input rows r0 - pt .. r0 - 1 as they were before the last band's output replaced them
                    for c in range(C):
                        for j in range(pt):
                            bordered_row(b_flat, (c * bh + j) * Wp, Wp, carry, (c * pt + j) * W, True, pl, W,
                                         np.float32(0.0))
                if r1 < OH:  # keep the rows above the next band before this band's output lands on them
                    for c in range(C):
                        src = (c * H + r1 - pt) * W
                        for j in range(pt * W):  # (a slice assignment compiles its error message: 3 s)
                            carry[c * pt * W + j] = x_n[src + j]
            if out_c16:  # the band's rows, found through the row offset of the halo
                o_step = OS if OS > 0 else o_sample
                o_band = of[n * o_step:n * o_step + o_sample]
                r_band = res[n * o_step:n * o_step + o_sample] if has_res else res[:0]
                row_off = ht + r0
            else:  # plain: the band starts r0 rows into every channel plane, planes OH * OW apart
                o_band = of[n * o_sample + r0 * OW:(n + 1) * o_sample]
                r_band = res[n * o_sample + r0 * OW:(n + 1) * o_sample] if has_res else res[:0]
                row_off = 0
            _conv_blocked_core(b_flat, ONE, C, bh, Wp, NO, wp, bias, KH, KW, sh, sw, dh, dw, act, act_a, act_b,
                               r_band, o_band, COUT, r1 - r0, OW, out_c16, row_off, hl, OHs, OWs, OH * OW, ZERO, ZERO,
                               ZERO)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def pad_rows_kernel(xf, C, H, W, top, pl, out, rows, Wp):
    """Copy input rows top .. top + rows - 1 of every channel of one sample ``xf`` (C, H, W, flat) into ``out``
    (C, rows, Wp, flat) at column offset ``pl``; rows outside 0 .. H - 1 and the columns around are zero."""
    zero = np.float32(0.0)
    for cr in prange(C * rows):
        c = cr // rows
        ih = top + cr - c * rows
        bordered_row(out, cr * Wp, Wp, xf, (c * H + ih) * W, ih >= 0 and ih < H, pl, W, zero)


@numba.njit(cache=True, error_model="numpy")
def conv2d_blocked_kernel(x, wp, bias, KH, KW, sh, sw, pt, pl, pb, pr, dh, dw, act, act_a, act_b, res, out):
    """Dense/grouped convolution with a packed weight (``conv_pack_weight_kernel``).

    x (N, C, H, W); wp (G, NB, C/G*KH*KW, OCB); bias (COUT,); out (N, COUT, OH, OW).
    pads = (pt, pl, pb, pr); ``res`` (empty, or the residual operand, flattened) is added, then the
    activation (act, act_a, act_b) is applied to the output.
    """
    N, C, H, W = x.shape
    _, COUT, OH, OW = out.shape
    ZERO, ONE, NO = _plain_constants()
    if pt == 0 and pl == 0 and pb == 0 and pr == 0:
        _conv_blocked_core(x.reshape(-1), N, C, H, W, NO, wp, bias, KH, KW, sh, sw, dh, dw, act, act_a, act_b,
                           res, out.reshape(-1), COUT, OH, OW, NO, ZERO, ZERO, OH, OW, OH * OW, ZERO, ZERO, ZERO)
    else:
        _conv_padded_in_bands(x.reshape(-1), N, C, H, W, wp, bias, KH, KW, sh, sw, pt, pl, pb, pr, dh, dw, act,
                               act_a, act_b, res, out.reshape(-1), COUT, OH, OW, NO, ZERO, ZERO, OH, OW, ZERO)


@numba.njit(cache=True, error_model="numpy")
def conv2d_c16_kernel(x, in_c16, C, H, W, wp, bias, KH, KW, sh, sw, pt, pl, pb, pr, dh, dw, act, act_a, act_b,
                      res, out, COUT, OH, OW, out_c16, ht, hl, hb, hr, xt, xl, N, XS, OS):
    """A dense convolution (groups == 1) between layouts: x flat, plain (N, C, H, W) or channel-blocked
    (``in_c16``: (N, CB, H, W, 16) as stored, pads must be 0: a padded convolution reads the zero halo its
    input is stored in, starting ``xt`` rows and ``xl`` columns into the stored plane); out flat, plain or
    channel-blocked (``out_c16``), the latter optionally inside a zero halo of (ht, hl, hb, hr) pixels
    (``c16.zero_halo_c16_kernel``). ``wp`` from ``conv_pack_weight_kernel`` (plain input) or
    ``pack_c16_input_weight``; ``bias`` padded to NB * 32; ``res`` empty or the residual operand, stored like
    the output (a c16 residual in the same halo), possibly in the output's buffer. ``N`` samples; ``XS``,
    ``OS``: floats from one sample to the next of a c16 input and of a c16 output, 0 for a sample's size
    (more for channel slices of larger tensors: ``_conv_blocked_core``)."""
    OHs = OH + ht + hb
    OWs = OW + hl + hr
    x_step = XS if in_c16 else 0  # (computed apart: Numba cannot compile conditionals inside this long call)
    o_step = OS if out_c16 else 0
    xo = (xt * W + xl) * (16 if in_c16 else 1)
    if pt == 0 and pl == 0 and pb == 0 and pr == 0:
        _conv_blocked_core(x, N, C, H, W, in_c16, wp, bias, KH, KW, sh, sw, dh, dw, act, act_a, act_b, res,
                           out, COUT, OH, OW, out_c16, ht, hl, OHs, OWs, OH * OW, xo, x_step, o_step)
    else:
        _conv_padded_in_bands(x, N, C, H, W, wp, bias, KH, KW, sh, sw, pt, pl, pb, pr, dh, dw, act, act_a, act_b,
                               res, out, COUT, OH, OW, out_c16, ht, hl, OHs, OWs, o_step)
    if out_c16 and (ht > 0 or hl > 0 or hb > 0 or hr > 0):
        OB = (COUT + 15) // 16
        zero_halo_c16_kernel(out, N, OB, OS if OS > 0 else OB * OHs * OWs * 16, OHs, OWs, ht, hl, hb, hr)


def pack_c16_input_weight(weight):
    """Pack a dense Conv weight (COUT, C, KH, KW) for a channel-blocked input: (1, NB, CB*KH*KW*16, OCB) with
    the taps ordered (channel block, kh, kw, channel in block); padding channels and rows are zero."""
    cout, c, kh, kw = weight.shape
    cb = -(-c // 16)
    nb = -(-cout // OCB)
    packed = np.zeros((1, nb, cb, kh, kw, 16, OCB), np.float32)
    for b in range(nb):  # one block of output channels at a time (whole-weight temporaries were 3x its size)
        o0, o1 = b * OCB, min(cout, (b + 1) * OCB)
        w = np.zeros((o1 - o0, cb * 16, kh, kw), np.float32)
        w[:, :c] = weight[o0:o1]
        packed[0, b, ..., : o1 - o0] = w.reshape(o1 - o0, cb, 16, kh, kw).transpose(1, 3, 4, 2, 0)
    return packed.reshape(1, nb, cb * kh * kw * 16, OCB)


def transpose_as_pointwise_weight(weight, groups):
    """ConvTranspose weight (CIN, COG, KH, KW) -> equivalent 1x1 Conv weight (COUT*KH*KW, CG, 1, 1).

    Output channel ``(g*COG + oc)*KH*KW + kh*KW + kw`` of the 1x1 convolution (with ``groups``)
    is the contribution of every input pixel to tap (kh, kw) of output channel g*COG + oc;
    ``col2im_kernel`` then adds the taps into place.
    """
    cin, cog, kh, kw = weight.shape
    cg = cin // groups
    w = weight.reshape(groups, cg, cog, kh, kw).transpose(0, 2, 3, 4, 1)  # (G, COG, KH, KW, CG)
    return np.ascontiguousarray(w.reshape(groups * cog * kh * kw, cg, 1, 1), dtype=np.float32)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def col2im_kernel(cols, bias, KH, KW, sh, sw, pt, pl, dh, dw, act, act_a, act_b, out):
    """Second half of a transposed convolution: scatter-add per-tap products into the output.

    cols (N, COUT*KH*KW, H, W) from the 1x1 convolution of ``transpose_as_pointwise_weight``;
    out (N, COUT, OH, OW) with OH, OW including any output_padding.  Input pixel (ih, iw) and
    tap (kh, kw) land on output (ih*sh + kh*dh - pt, iw*sw + kw*dw - pl); positions that
    receive nothing hold the bias.  Parallel over output planes, so no two threads add to the
    same element.
    """
    N, _, H, W = cols.shape
    _, COUT, OH, OW = out.shape
    KK = KH * KW
    cf = cols.reshape(-1)
    of = out.reshape(-1)
    for item in prange(N * COUT):
        n = item // COUT
        oc = item - n * COUT
        ob = item * OH * OW
        bv = bias[oc]
        for i in range(OH * OW):
            of[U(ob + i)] = bv
        for kh in range(KH):
            for kw in range(KW):
                src = ((n * COUT + oc) * KK + kh * KW + kw) * H * W
                c = kw * dw - pl  # ow = iw*sw + c
                lo = 0 if c >= 0 else (-c + sw - 1) // sw
                hi = min(W, (OW - c + sw - 1) // sw) if OW > c else 0
                for ih in range(H):
                    oh = ih * sh + kh * dh - pt
                    if oh < 0 or oh >= OH:
                        continue
                    o = ob + oh * OW + c
                    s = src + ih * W
                    if sw == 1:
                        for iw in range(lo, hi):
                            of[U(o + iw)] += cf[U(s + iw)]
                    else:
                        for iw in range(lo, hi):
                            of[U(o + iw * sw)] += cf[U(s + iw)]
        if act != 0:
            act_range(of, ob, OH * OW, act, act_a, act_b)


@numba.njit(cache=True, error_model="numpy")
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


DW_LANES = VECTOR_UNIT.depthwise_lanes  # output columns per vector strip of the depthwise kernel
DW_ROWS = 8  # output rows accumulated together (share tap offsets and weight broadcasts)
DW_CHUNKS = 16  # parallel chunks of (batch, group) items, each with its own scratch buffer


def _make_depthwise_kernel(DW_LANES):
    """``conv2d_depthwise_kernel`` with tiles of DW_ROWS rows x ``DW_LANES`` columns (a constant of the compiled
    kernel: a closure cell, which Numba's cache keys on)."""
    ACC = DW_ROWS * DW_LANES

    @numba.njit(cache=True, error_model="numpy", parallel=True, fastmath=_FM)
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
        rs = sh * Wq  # buffer distance between the inputs of two adjacent output rows
        # Scratch: one buffer per chunk of work items.  Allocated here, outside the parallel loop, it
        # reaches the loop body as an argument, which LLVM knows cannot alias the stack tile (a buffer
        # allocated inside would keep the tile in memory).  Chunks rather than threads because
        # ``numba.get_num_threads()`` cannot be cached.
        nitems = N * G
        nchunk = min(nitems, DW_CHUNKS)
        # per column phase, the range [qa, qb) of positions holding input columns (outside: padding);
        # computed once here -- integer divisions inside the row loop would dominate the copy
        qa_ph = np.empty(sw, np.int64)
        qb_ph = np.empty(sw, np.int64)
        for ph in range(sw):
            qa_ph[ph] = (pl - ph + sw - 1) // sw if pl > ph else 0
            qb_ph[ph] = max(qa_ph[ph], min(Wq, (pl + W - ph + sw - 1) // sw))
        pe = pl % 2
        pl2 = pl // 2
        pl2b = (pl + 1) // 2
        # Tiles of a plane smaller than the tile read past the plane: slack, zeroed once.
        slack = (DW_ROWS * sh + 1) * Wq + 2 * DW_LANES
        scratch = np.empty((nchunk, CG * plane + slack), np.float32)
        for chunk in prange(nchunk):
            loc = scratch[chunk]
            for q in range(CG * plane, CG * plane + slack):
                loc[q] = zero
            acc = stack_f32(ACC)  # DW_ROWS x DW_LANES
            stg = stack_f32(ACC)
            for item in range(chunk * nitems // nchunk, (chunk + 1) * nitems // nchunk):
                n = item // G
                g = item - n * G
                # ---- fill the padded, phase-split copy of this group's input planes
                for ci in range(CG):
                    xc = (n * C + g * CG + ci) * H * W
                    if sw == 1:
                        _pad_plane(xf, xc, H, W, pt, pl, Hp, Wq, loc, ci * plane)
                        continue
                    for r in range(Hp):
                        o = ci * plane + r * Wq  # row r of phase 0; phase ph is ``ph * phase`` further
                        ih = r - pt
                        if ih < 0 or ih >= H:
                            for ph in range(sw):
                                for q in range(Wq):
                                    loc[U(o + ph * phase + q)] = zero
                            continue
                        i = xc + ih * W
                        for ph in range(sw):  # zero the padding columns: q outside [qa, qb)
                            op = o + ph * phase
                            for q in range(qa_ph[ph]):
                                loc[U(op + q)] = zero
                            for q in range(qb_ph[ph], Wq):
                                loc[U(op + q)] = zero
                        if sw == 2:
                            # input columns in aligned pairs (2m, 2m+1): padded column 2m + pl lands in
                            # phase pe at q = m + pl//2, column 2m + 1 + pl in phase 1 - pe at m + (pl+1)//2
                            oe = o + pe * phase + pl2
                            oo = o + (1 - pe) * phase + pl2b
                            for m in range(W // 2):
                                loc[U(oe + m)] = xf[U(i + 2 * m)]
                                loc[U(oo + m)] = xf[U(i + 2 * m + 1)]
                            if W % 2 == 1:
                                loc[U(oe + W // 2)] = xf[U(i + W - 1)]
                        else:
                            for iw in range(W):
                                c = iw + pl
                                loc[U(o + (c % sw) * phase + c // sw)] = xf[U(i + iw)]
                # ---- convolve
                for j in range(COG):
                    oc = g * COG + j
                    bv = bias[oc]
                    wo = oc * R
                    obase = (n * COUT + oc) * OH * OW
                    for rb in range(nrblk):
                        oh0 = rb * DW_ROWS
                        if oh0 + DW_ROWS > OH:
                            oh0 = max(OH - DW_ROWS, 0)  # overlap the previous block
                        for s in range(nstrip):
                            c0 = s * DW_LANES
                            if OW >= DW_LANES and c0 + DW_LANES > OW:
                                c0 = OW - DW_LANES  # overlap the previous strip
                            base = oh0 * rs + c0
                            for i in range(DW_ROWS * DW_LANES):
                                acc[i] = bv
                            for r in range(R):
                                wv = wf[U(wo + r)]
                                o = base + toff[r]
                                for i in range(DW_LANES):
                                    acc[i] += wv * loc[U(o + i)]
                                    acc[1 * DW_LANES + i] += wv * loc[U(o + rs + i)]
                                    acc[2 * DW_LANES + i] += wv * loc[U(o + 2 * rs + i)]
                                    acc[3 * DW_LANES + i] += wv * loc[U(o + 3 * rs + i)]
                                    acc[4 * DW_LANES + i] += wv * loc[U(o + 4 * rs + i)]
                                    acc[5 * DW_LANES + i] += wv * loc[U(o + 5 * rs + i)]
                                    acc[6 * DW_LANES + i] += wv * loc[U(o + 6 * rs + i)]
                                    acc[7 * DW_LANES + i] += wv * loc[U(o + 7 * rs + i)]
                            ob = obase + oh0 * OW + c0
                            if OW >= DW_LANES and OH >= DW_ROWS:
                                # full tile: one loop per row, each a single vector store
                                for i in range(DW_LANES):
                                    of[U(ob + i)] = acc[i]
                                for i in range(DW_LANES):
                                    of[U(ob + OW + i)] = acc[1 * DW_LANES + i]
                                for i in range(DW_LANES):
                                    of[U(ob + 2 * OW + i)] = acc[2 * DW_LANES + i]
                                for i in range(DW_LANES):
                                    of[U(ob + 3 * OW + i)] = acc[3 * DW_LANES + i]
                                for i in range(DW_LANES):
                                    of[U(ob + 4 * OW + i)] = acc[4 * DW_LANES + i]
                                for i in range(DW_LANES):
                                    of[U(ob + 5 * OW + i)] = acc[5 * DW_LANES + i]
                                for i in range(DW_LANES):
                                    of[U(ob + 6 * OW + i)] = acc[6 * DW_LANES + i]
                                for i in range(DW_LANES):
                                    of[U(ob + 7 * OW + i)] = acc[7 * DW_LANES + i]
                            else:
                                # small plane: stage the tile so that ``acc`` is only ever indexed by
                                # constants (a variable-length loop over it keeps it out of registers)
                                for i in range(DW_ROWS * DW_LANES):
                                    stg[i] = acc[i]
                                nw = min(OW, DW_LANES)
                                for k in range(min(OH, DW_ROWS)):
                                    for i in range(nw):
                                        of[U(ob + k * OW + i)] = stg[k * DW_LANES + i]
                    if act != 0:
                        act_range(of, obase, OH * OW, act, act_a, act_b)

    return conv2d_depthwise_kernel


conv2d_depthwise_kernel = _make_depthwise_kernel(DW_LANES)
