"""Explicit 16-float vector operations for Numba kernels.

Numba leaves LLVM's SLP vectoriser off (it miscompiled in some LLVM versions), so straight-line code
over 16 consecutive floats -- a fully unrolled loop -- stays scalar: one ``vmovss`` per float. Where a
kernel stores a register tile that way (the c16 epilogue of the blocked convolution), these intrinsics
emit the <16 x float> loads, add and store themselves.

Indices are element offsets into 1-D float32 arrays; nothing is bounds-checked (the callers' loops
guarantee the ranges).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic
from numba.np.arrayobj import make_array

from . import _act

__all__ = ["add16_store", "add16_clamp_store", "add16_res_clamp_store", "clamp16_store", "clamp16_res_store",
           "max16_store", "max2x2_16_store", "max3_run16", "max_window16", "silu16", "store_tile_planes"]

_V16 = ir.VectorType(ir.FloatType(), 16)


def _vec_ptr(context, builder, arrty, arr, index):
    return _at16(builder, make_array(arrty)(context, builder, arr).data, index)


def _at16(builder, data, index):
    """A <16 x float> pointer to data[index:]."""
    return builder.bitcast(builder.gep(data, [index]), _V16.as_pointer())


def _data(context, builder, signature, args, k):
    """The data pointer of the array argument ``k``."""
    return make_array(signature.args[k])(context, builder, args[k]).data


def _intp_args(context, builder, signature, args, positions):
    """The integer arguments at ``positions``, as intp values."""
    return tuple(context.cast(builder, args[k], signature.args[k], types.intp) for k in positions)


def _typed(arrays, ints, floats) -> bool:
    return (all(isinstance(t, types.Array) and t.dtype == types.float32 and t.ndim == 1 for t in arrays)
            and all(isinstance(t, types.Integer) for t in ints) and all(isinstance(t, types.Float) for t in floats))


def _load16(context, builder, signature, args, k, at=None):
    """The 16 floats of the array argument ``k`` from the index argument ``at`` (default ``k + 1``), as one
    vector load."""
    at = k + 1 if at is None else at
    index = context.cast(builder, args[at], signature.args[at], types.intp)
    return builder.load(_vec_ptr(context, builder, signature.args[k], args[k], index), align=4)


def _max16(builder, m, v):
    """``v if v > m else m`` lane by lane (ordered: a NaN in ``m`` stays, a NaN in ``v`` is passed over)."""
    return builder.select(builder.fcmp_ordered(">", v, m), v, m)


def _store16(context, builder, signature, args, value):
    """Store the vector ``value`` into the array argument 0 from the index argument 1."""
    index = context.cast(builder, args[1], signature.args[1], types.intp)
    builder.store(value, _vec_ptr(context, builder, signature.args[0], args[0], index), align=4)


def _splat(builder, value, vtype=_V16):
    """``value`` in every lane of a ``vtype`` vector."""
    v = builder.insert_element(ir.Constant(vtype, None), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), vtype.count), [0] * vtype.count))


def _splat_arg(context, builder, signature, args, k):
    """The float argument ``k`` in all 16 lanes."""
    return _splat(builder, context.cast(builder, args[k], signature.args[k], types.float32))


def _clamp16(context, builder, signature, v, args, lo_hi_at):
    """min(max(v, lo), hi) with ordered comparisons (NaN passes), lo and hi the arguments at `lo_hi_at`."""
    lo, hi = (_splat_arg(context, builder, signature, args, k) for k in lo_hi_at)
    v = builder.select(builder.fcmp_ordered("<", v, lo), lo, v)
    return builder.select(builder.fcmp_ordered(">", v, hi), hi, v)


@intrinsic
def add16_store(typingctx, dst, di, a, ai, b, bi):
    """dst[di:di+16] = a[ai:ai+16] + b[bi:bi+16] as one vector load of each operand and one store."""
    if not _typed((dst, a, b), (di, ai, bi), ()):
        return None

    def codegen(context, builder, signature, args):
        load = lambda k: _load16(context, builder, signature, args, k)  # noqa: E731
        _store16(context, builder, signature, args, builder.fadd(load(2), load(4)))
        return context.get_dummy_value()

    return types.none(dst, di, a, ai, b, bi), codegen


@intrinsic
def max16_store(typingctx, dst, di, a, ai, b, bi):
    """dst[di:di+16] = (b if b > a else a) lane by lane, for a[ai:ai+16] and b[bi:bi+16] (the running maximum
    ``a`` keeps a NaN, a NaN in ``b`` is passed over, as the plain pooling kernels compare)."""
    if not _typed((dst, a, b), (di, ai, bi), ()):
        return None

    def codegen(context, builder, signature, args):
        va, vb = (_load16(context, builder, signature, args, k) for k in (2, 4))
        _store16(context, builder, signature, args, _max16(builder, va, vb))
        return context.get_dummy_value()

    return types.none(dst, di, a, ai, b, bi), codegen


@intrinsic
def max2x2_16_store(typingctx, dst, di, a, i00, i10, i01, i11):
    """dst[di:di+16] = the maximum of a 2x2 window's vectors, in registers: each column's maximum of its two
    rows (a[i00:], a[i10:]; a[i01:], a[i11:]), then of the two columns -- the order of ``max_rows_into``
    followed by ``max16_store``, so NaNs go the same way."""
    if not _typed((dst, a), (di, i00, i10, i01, i11), ()):
        return None

    def codegen(context, builder, signature, args):
        load = lambda at: _load16(context, builder, signature, args, 2, at)  # noqa: E731
        left, right = (_max16(builder, load(top), load(bottom)) for top, bottom in ((3, 4), (5, 6)))
        _store16(context, builder, signature, args, _max16(builder, left, right))
        return context.get_dummy_value()

    return types.none(dst, di, a, i00, i10, i01, i11), codegen


def _rolled_loop(builder, count, step):
    """``step(k)`` for k < ``count``, a loop LLVM is told not to unroll (``llvm.loop.unroll.disable``)."""
    intp = count.type
    before = builder.block
    head, body, end = (builder.append_basic_block(f"rolled.{part}") for part in ("head", "body", "end"))
    builder.branch(head)
    builder.position_at_end(head)
    k = builder.phi(intp)
    k.add_incoming(ir.Constant(intp, 0), before)
    builder.cbranch(builder.icmp_signed("<", k, count), body, end)
    builder.position_at_end(body)
    step(k)
    k.add_incoming(builder.add(k, ir.Constant(intp, 1)), builder.block)
    latch = builder.branch(head)
    module = builder.module
    disable = module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])
    loop_id = module.add_metadata([disable, ir.MetaDataString(module, f"rolled.{len(module.metadata)}")])
    loop_id.operands = (loop_id, disable)  # (a loop ID's first operand is the node itself)
    latch.set_metadata("llvm.loop", loop_id)
    builder.position_at_end(end)


@intrinsic
def max3_run16(typingctx, dst, di, x, xi, rstride, rows, count, sstep):
    """A row of 3x3 max-pool windows of stride 1 or 2 (``sstep`` 16 or 32 floats) over a channel-blocked plane,
    each column's maximum kept in a register for the next window.

    For k < ``count`` (at least 1): dst[di + 16 k : +16] = the maximum of the adjacent columns c(k sstep),
    c(k sstep + 16), c(k sstep + 32), where c(j) is the maximum over the ``rows`` (1 to 3) input rows of
    x[xi + j + r rstride : +16], all inside the image. The order of ``max_rows_into`` followed by
    ``max16_store`` per column (rows first, then columns left to right), so NaNs go the same way; a row past ``rows``
    reads an earlier one again, which changes nothing. The columns two windows share (two of three at stride
    1, one at stride 2) are carried to the next, so an output vector costs 3 (stride 1) or 6 (stride 2) vector
    loads and no row buffer: the separate passes cost 6 loads and 2 stores (stride 1), 9 and 3 (stride 2)."""
    if not _typed((dst, x), (di, xi, rstride, rows, count, sstep), ()):
        return None

    def codegen(context, builder, signature, args):
        intp = context.get_value_type(types.intp)
        di_, xi_, rstride_, rows_, count_, sstep_ = _intp_args(context, builder, signature, args, (1, 3, 4, 5, 6, 7))
        dst_data, x_data = (_data(context, builder, signature, args, k) for k in (0, 2))
        const = lambda v: ir.Constant(intp, v)  # noqa: E731
        rows_at = _offsets(builder, intp, rows_, rstride_)

        def column(j):
            return _max_over(builder, x_data, builder.add(xi_, j), rows_at)

        def store(k, value):
            builder.store(value, _at16(builder, dst_data, builder.add(di_, builder.mul(k, const(16)))), align=4)

        # constant offsets: with runtime steps LLVM unrolled the loop into one induction variable per load,
        # spilled to the stack (2.5x slower)
        c16, c32 = const(16), const(32)
        carried_a = cgutils.alloca_once(builder, _V16)
        carried_b = cgutils.alloca_once(builder, _V16)
        with builder.if_else(builder.icmp_signed("==", sstep_, c16)) as (stride1, stride2):
            with stride1:  # columns k+1, k+2 of window k are columns k, k+1 of window k+1
                builder.store(column(const(0)), carried_a)
                builder.store(column(c16), carried_b)
                def stride1_step(k):
                    a, b = builder.load(carried_a), builder.load(carried_b)
                    c = column(builder.add(builder.mul(k, c16), c32))
                    store(k, _running_max(builder, [a, b, c]))
                    builder.store(b, carried_a)
                    builder.store(c, carried_b)
                _rolled_loop(builder, count_, stride1_step)
            with stride2:  # the last column of window k is the first of window k+1
                builder.store(column(const(0)), carried_a)
                def stride2_step(k):
                    base = builder.mul(k, c32)
                    b, c = column(builder.add(base, c16)), column(builder.add(base, c32))
                    store(k, _running_max(builder, [builder.load(carried_a), b, c]))
                    builder.store(c, carried_a)
                _rolled_loop(builder, count_, stride2_step)
        return context.get_dummy_value()

    return types.none(dst, di, x, xi, rstride, rows, count, sstep), codegen


@intrinsic
def max_window16(typingctx, dst, di, x, xi, rstride, rows, dstep, cols):
    """dst[di:di+16] = the maximum over ``cols`` (1 to 3) columns x[xi + c dstep:], each column's the maximum over
    its ``rows`` (1 to 3) rows r rstride apart: one window of ``max3_run16``'s, clipped to fewer columns (a
    window at the image's edge). A column or row past the count reads an earlier one again, which changes
    nothing."""
    if not _typed((dst, x), (di, xi, rstride, rows, dstep, cols), ()):
        return None

    def codegen(context, builder, signature, args):
        intp = context.get_value_type(types.intp)
        di_, xi_, rstride_, rows_, dstep_, cols_ = _intp_args(context, builder, signature, args, (1, 3, 4, 5, 6, 7))
        x_data = _data(context, builder, signature, args, 2)
        rows_at = _offsets(builder, intp, rows_, rstride_)
        columns = [_max_over(builder, x_data, builder.add(xi_, c), rows_at)
                   for c in _offsets(builder, intp, cols_, dstep_)]  # (rows of a column, then the next column)
        builder.store(_running_max(builder, columns), _at16(builder, _data(context, builder, signature, args, 0), di_),
                      align=4)
        return context.get_dummy_value()

    return types.none(dst, di, x, xi, rstride, rows, dstep, cols), codegen


def _offsets(builder, intp, count, step):
    """The offsets of items 0, 1, 2 of ``count`` (1 to 3) items ``step`` apart, an item past the count at the
    last one's: a window's rows or columns, of which the maximum is taken (a repeat changes nothing)."""
    last = builder.mul(builder.sub(count, ir.Constant(intp, 1)), step)
    return [ir.Constant(intp, 0)] + [builder.select(builder.icmp_signed(">", count, ir.Constant(intp, k)),
                                                    builder.mul(step, ir.Constant(intp, k)), last) for k in (1, 2)]


def _max_over(builder, data, at, offsets):
    """The running maximum of the vectors data[at + offset:] for the offsets (``_running_max``)."""
    return _running_max(builder, [builder.load(_at16(builder, data, builder.add(at, offset)), align=4)
                                  for offset in offsets])


def _running_max(builder, vectors):
    """``_max16`` of the vectors, first to last: the NaN order of the max-pool kernels."""
    m = vectors[0]
    for v in vectors[1:]:
        m = _max16(builder, m, v)
    return m


def _fconst(value):
    return ir.Constant(_V16, [float(np.float32(value))] * 16)


def _fma16(builder, a, b, c):
    """a * b + c in one rounding (llvm.fma: an FMA instruction on every x86 target with FMA)."""
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16, [_V16] * 3), "llvm.fma.v16f32")
    return builder.call(fma, [a, b, c])


@intrinsic
def silu16(typingctx, dst, di):
    """dst[di:di+16] = x / (1 + exp(-x)) in place, as vector operations: ``_act.act_range``'s SiLU (the same
    clamped exp polynomial and one division; FMAs where that one contracts) on one 16-float vector, so a
    kernel applies it to a tile it has just stored, while it is in L1, without a pass or a call per row."""
    if not _typed((dst,), (di,), ()):
        return None

    def codegen(context, builder, signature, args):
        x = _load16(context, builder, signature, args, 0)
        v = builder.fsub(_fconst(0.0), x)  # -x
        lo, hi = _fconst(_act._EXP_MIN), _fconst(_act._EXP_MAX)
        v = builder.select(builder.fcmp_ordered("<", v, lo), lo, v)
        v = builder.select(builder.fcmp_ordered(">", v, hi), hi, v)
        t = _fma16(builder, v, _fconst(_act._LOG2E), _fconst(_act._ROUND))
        n = builder.fsub(t, _fconst(_act._ROUND))
        r = builder.fsub(builder.fsub(v, builder.fmul(n, _fconst(_act._LN2_HI))), builder.fmul(n, _fconst(_act._LN2_LO)))
        p = _fconst(_act._EXP_P[0])
        for c in _act._EXP_P[1:]:
            p = _fma16(builder, p, r, _fconst(c))
        p = builder.fadd(_fma16(builder, p, builder.fmul(r, r), r), _fconst(1.0))
        i32x16 = ir.VectorType(ir.IntType(32), 16)
        bits = builder.shl(builder.add(builder.bitcast(t, i32x16), ir.Constant(i32x16, [127] * 16)),
                           ir.Constant(i32x16, [23] * 16))
        e = builder.fmul(p, builder.bitcast(bits, _V16))
        _store16(context, builder, signature, args, builder.fdiv(x, builder.fadd(_fconst(1.0), e)))
        return context.get_dummy_value()

    return types.none(dst, di), codegen


@intrinsic
def add16_clamp_store(typingctx, dst, di, a, ai, b, bi, lo, hi):
    """dst[di:di+16] = min(max(a[ai:ai+16] + b[bi:bi+16], lo), hi) (ordered comparisons: NaN passes)."""
    if not _typed((dst, a, b), (di, ai, bi), (lo, hi)):
        return None

    def codegen(context, builder, signature, args):
        load = lambda k: _load16(context, builder, signature, args, k)  # noqa: E731
        v = _clamp16(context, builder, signature, builder.fadd(load(2), load(4)), args, (6, 7))
        _store16(context, builder, signature, args, v)
        return context.get_dummy_value()

    return types.none(dst, di, a, ai, b, bi, lo, hi), codegen


@intrinsic
def add16_res_clamp_store(typingctx, dst, di, a, ai, b, bi, r, ri, lo, hi):
    """dst[di:di+16] = min(max((a[ai:ai+16] + b[bi:bi+16]) + r[ri:ri+16], lo), hi) (ordered comparisons: NaN
    passes); ``r`` may be ``dst`` (read first)."""
    if not _typed((dst, a, b, r), (di, ai, bi, ri), (lo, hi)):
        return None

    def codegen(context, builder, signature, args):
        load = lambda k: _load16(context, builder, signature, args, k)  # noqa: E731
        v = builder.fadd(builder.fadd(load(2), load(4)), load(6))
        _store16(context, builder, signature, args, _clamp16(context, builder, signature, v, args, (8, 9)))
        return context.get_dummy_value()

    return types.none(dst, di, a, ai, b, bi, r, ri, lo, hi), codegen


@intrinsic
def clamp16_store(typingctx, dst, di, a, ai, bv, lo, hi):
    """dst[di:di+16] = min(max(a[ai:ai+16] + bv, lo), hi) (ordered comparisons: NaN passes)."""
    if not _typed((dst, a), (di, ai), (bv, lo, hi)):
        return None

    def codegen(context, builder, signature, args):
        v = builder.fadd(_load16(context, builder, signature, args, 2),
                         _splat_arg(context, builder, signature, args, 4))
        _store16(context, builder, signature, args, _clamp16(context, builder, signature, v, args, (5, 6)))
        return context.get_dummy_value()

    return types.none(dst, di, a, ai, bv, lo, hi), codegen


@intrinsic
def clamp16_res_store(typingctx, dst, di, a, ai, bv, r, ri, lo, hi):
    """dst[di:di+16] = min(max((a[ai:ai+16] + bv) + r[ri:ri+16], lo), hi); ``r`` may be ``dst`` (read first)."""
    if not _typed((dst, a, r), (di, ai, ri), (bv, lo, hi)):
        return None

    def codegen(context, builder, signature, args):
        v = builder.fadd(_load16(context, builder, signature, args, 2),
                         _splat_arg(context, builder, signature, args, 4))
        v = builder.fadd(v, _load16(context, builder, signature, args, 5))
        _store16(context, builder, signature, args, _clamp16(context, builder, signature, v, args, (7, 8)))
        return context.get_dummy_value()

    return types.none(dst, di, a, ai, bv, r, ri, lo, hi), codegen

# ---- storing a pixel-major register tile into channel planes (the blocked convolution's plain output)

_V8 = ir.VectorType(ir.FloatType(), 8)
_M8 = ir.VectorType(ir.IntType(1), 8)
_I32 = ir.IntType(32)


def _transpose_network(builder, vectors):
    """Eight <16 x float> vectors, vector t holding (pixel t, channel j) in lane j (None: no pixel t), as eight
    vectors k holding channels 2k and 2k + 1 of pixels 0..7 in lanes j0 * 8 + t: three stages of two-source
    shuffles (24 in all), each gathering a channel's pixels from twice as many vectors. Lanes of absent
    pixels hold arbitrary values."""
    undef = ir.Constant(_V16, None)
    # a vector: (value, its 16 lane labels (pixel, channel), which labels hold real data)
    regs = [(v if v is not None else undef, [(t, j) for j in range(16)], v is not None) for t, v in enumerate(vectors)]

    def merge(a, b, keep):
        labels = sorted((lab for lab in a[1] + b[1] if keep(lab)), key=lambda lab: (lab[1], lab[0]))
        if not (a[2] or b[2]):
            return undef, labels, False
        index = {lab: i for i, lab in enumerate(a[1]) if a[2]}
        index.update({lab: 16 + i for i, lab in enumerate(b[1]) if b[2]})
        mask = ir.Constant(ir.VectorType(_I32, 16), [index.get(lab, 0) for lab in labels])
        return builder.shuffle_vector(a[0], b[0], mask), labels, True

    def stage(pairs, bit):  # each pair's lanes split by one bit of the channel
        return [merge(a, b, lambda lab, h=h: (lab[1] >> bit) & 1 == h) for a, b in pairs for h in (0, 1)]

    s1 = stage([(regs[2 * a], regs[2 * a + 1]) for a in range(4)], 3)  # index 2a + g: pixels 2a, 2a+1
    s2 = stage([(s1[4 * b + g], s1[4 * b + 2 + g]) for b in range(2) for g in range(2)], 2)  # 4b + 2g + h
    s3 = stage([(s2[2 * g + h], s2[4 + 2 * g + h]) for g in range(2) for h in range(2)], 1)  # 4g + 2h + m
    return [value for value, _labels, _real in s3]


def _masked_store(builder, value, ptr, mask):
    fnty = ir.FunctionType(ir.VoidType(), [_V8, ptr.type, _I32, _M8])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.store.v8f32.p0")
    builder.call(fn, [value, ptr, ir.Constant(_I32, 4), mask])


def _masked_load(builder, ptr, mask):
    fnty = ir.FunctionType(_V8, [ptr.type, _I32, _M8, _V8])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.load.v8f32.p0")
    return builder.call(fn, [ptr, ir.Constant(_I32, 4), mask, ir.Constant(_V8, [0.0] * 8)])


@intrinsic(prefer_literal=True)
def store_tile_planes(typingctx, dst, o, plane, acc, a0, astride, pixels, first, count, rows, bias, bi, res,
                      has_res, lo, hi):
    """Store 16 channels of a pixel-major register tile into channel planes, as whole vectors.

    For channel j < min(16, rows) and pixel t in [first, count):
    ``dst[o + j * plane + t] = clamp(acc[a0 + t * astride + j] + bias[bi + j] (+ res[o + j * plane + t]), lo, hi)``
    (``res`` is read only when ``has_res``, and may be ``dst``; the clamp lets NaN through). ``a0``, ``astride``
    and ``pixels`` (the tile's pixels, at most 8; count <= pixels) are literals: the tile is read at constant
    offsets and stays in registers. The tile is transposed with shuffles (``_transpose_network``), then each
    channel's pixels get the bias, the residual (a masked load) and the clamp as one 8-lane vector, stored
    with a masked store. Written out float by float, as Numba compiles a loop over the tile, this store took
    7-20% of a convolution's time (20% on ResNet's 7x7 stem, 13% on a 1x1 256 -> 256 on 14x14)."""
    if not all(isinstance(t, types.IntegerLiteral) for t in (a0, astride, pixels)):
        return None
    if not (_typed((dst, acc, bias, res), (o, plane, first, count, rows, bi), (lo, hi))
            and isinstance(has_res, types.Boolean)):
        return None
    A0, STRIDE, TP = (int(t.literal_value) for t in (a0, astride, pixels))
    if not 1 <= TP <= 8:
        return None

    def codegen(context, builder, signature, args):
        sig = signature.args
        intp = context.get_value_type(types.intp)
        o_, plane_, first_, count_, rows_, bi_ = _intp_args(context, builder, signature, args, (1, 2, 7, 8, 9, 11))
        accp = _data(context, builder, signature, args, 3)
        vectors = [builder.load(_at16(builder, accp, ir.Constant(intp, A0 + t * STRIDE)), align=4) if t < TP else None
                   for t in range(8)]
        pairs = _transpose_network(builder, vectors)
        lanes = ir.Constant(ir.VectorType(intp, 8), list(range(8)))
        mask = builder.and_(builder.icmp_signed(">=", lanes, _splat(builder, first_, ir.VectorType(intp, 8))),
                            builder.icmp_signed("<", lanes, _splat(builder, count_, ir.VectorType(intp, 8))))
        dst_data, bias_data, res_data = (_data(context, builder, signature, args, k) for k in (0, 10, 12))
        has_res_ = args[13]
        lo8 = _splat(builder, context.cast(builder, args[14], sig[14], types.float32), _V8)
        hi8 = _splat(builder, context.cast(builder, args[15], sig[15], types.float32), _V8)
        for k, vec in enumerate(pairs):
            for j0 in (0, 1):
                j = 2 * k + j0
                lanes_j = ir.Constant(ir.VectorType(_I32, 8), [j0 * 8 + t for t in range(8)])
                row = builder.shuffle_vector(vec, vec, lanes_j)
                with builder.if_then(builder.icmp_signed("<", ir.Constant(intp, j), rows_)):
                    b = builder.load(builder.gep(bias_data, [builder.add(bi_, ir.Constant(intp, j))]), align=4)
                    v = builder.fadd(row, _splat(builder, b, _V8))
                    off = builder.add(o_, builder.mul(plane_, ir.Constant(intp, j)))
                    before = builder.block
                    with builder.if_then(has_res_):
                        with_res = builder.fadd(v, _masked_load(builder, builder.gep(res_data, [off]), mask))
                        res_end = builder.block
                    merged = builder.phi(_V8)
                    merged.add_incoming(with_res, res_end)
                    merged.add_incoming(v, before)
                    v = builder.select(builder.fcmp_ordered("<", merged, lo8), lo8, merged)
                    v = builder.select(builder.fcmp_ordered(">", v, hi8), hi8, v)
                    _masked_store(builder, v, builder.gep(dst_data, [off]), mask)
        return context.get_dummy_value()

    return types.none(dst, o, plane, acc, a0, astride, pixels, first, count, rows, bias, bi, res, has_res, lo, hi), \
        codegen
