"""Explicit 16-float vector operations for Numba kernels.

Numba leaves LLVM's SLP vectoriser off (it miscompiled in some LLVM versions), so straight-line code
over 16 consecutive floats -- a fully unrolled loop -- stays scalar: one ``vmovss`` per float. Where a
kernel stores a register tile that way (the c16 epilogue of the blocked convolution), these intrinsics
emit the <16 x float> loads, add and store themselves.

Indices are element offsets into 1-D float32 arrays; nothing is bounds-checked (the callers' loops
guarantee the ranges).
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic
from numba.np.arrayobj import make_array

__all__ = ["add16_store", "add16_clamp_store", "clamp16_store", "clamp16_res_store"]

_V16 = ir.VectorType(ir.FloatType(), 16)


def _vec_ptr(context, builder, arrty, arr, index):
    data = make_array(arrty)(context, builder, arr).data
    ptr = builder.gep(data, [index])
    return builder.bitcast(ptr, _V16.as_pointer())


def _typed(arrays, ints, floats) -> bool:
    return (all(isinstance(t, types.Array) and t.dtype == types.float32 and t.ndim == 1 for t in arrays)
            and all(isinstance(t, types.Integer) for t in ints) and all(isinstance(t, types.Float) for t in floats))


@intrinsic
def add16_store(typingctx, dst, di, a, ai, b, bi):
    """dst[di:di+16] = a[ai:ai+16] + b[bi:bi+16] as one vector load of each operand and one store."""
    if not _typed((dst, a, b), (di, ai, bi), ()):
        return None

    def codegen(context, builder, signature, args):
        d, dix, x, xi, y, yi = args
        dix, xi, yi = (context.cast(builder, v, t, types.intp) for v, t in zip((dix, xi, yi), signature.args[1::2]))
        vx = builder.load(_vec_ptr(context, builder, signature.args[2], x, xi), align=4)
        vy = builder.load(_vec_ptr(context, builder, signature.args[4], y, yi), align=4)
        builder.store(builder.fadd(vx, vy), _vec_ptr(context, builder, signature.args[0], d, dix), align=4)
        return context.get_dummy_value()

    return types.none(dst, di, a, ai, b, bi), codegen


def _splat(builder, value):
    vec = ir.Constant(_V16, None)
    for lane in range(16):
        vec = builder.insert_element(vec, value, ir.Constant(ir.IntType(32), lane))
    return vec


def _clamp16(context, builder, signature, v, args, lo_hi_at):
    """min(max(v, lo), hi) with ordered comparisons (NaN passes), lo and hi the arguments at `lo_hi_at`."""
    lo, hi = (_splat(builder, context.cast(builder, args[k], signature.args[k], types.float32)) for k in lo_hi_at)
    v = builder.select(builder.fcmp_ordered("<", v, lo), lo, v)
    return builder.select(builder.fcmp_ordered(">", v, hi), hi, v)


@intrinsic
def add16_clamp_store(typingctx, dst, di, a, ai, b, bi, lo, hi):
    """dst[di:di+16] = min(max(a[ai:ai+16] + b[bi:bi+16], lo), hi) (ordered comparisons: NaN passes)."""
    if not _typed((dst, a, b), (di, ai, bi), (lo, hi)):
        return None

    def codegen(context, builder, signature, args):
        sig = signature.args
        dix, xi, yi = (context.cast(builder, args[k], sig[k], types.intp) for k in (1, 3, 5))
        vx = builder.load(_vec_ptr(context, builder, sig[2], args[2], xi), align=4)
        vy = builder.load(_vec_ptr(context, builder, sig[4], args[4], yi), align=4)
        v = _clamp16(context, builder, signature, builder.fadd(vx, vy), args, (6, 7))
        builder.store(v, _vec_ptr(context, builder, sig[0], args[0], dix), align=4)
        return context.get_dummy_value()

    return types.none(dst, di, a, ai, b, bi, lo, hi), codegen


@intrinsic
def clamp16_store(typingctx, dst, di, a, ai, bv, lo, hi):
    """dst[di:di+16] = min(max(a[ai:ai+16] + bv, lo), hi) (ordered comparisons: NaN passes)."""
    if not _typed((dst, a), (di, ai), (bv, lo, hi)):
        return None

    def codegen(context, builder, signature, args):
        sig = signature.args
        dix, xi = (context.cast(builder, args[k], sig[k], types.intp) for k in (1, 3))
        b = _splat(builder, context.cast(builder, args[4], sig[4], types.float32))
        v = builder.fadd(builder.load(_vec_ptr(context, builder, sig[2], args[2], xi), align=4), b)
        v = _clamp16(context, builder, signature, v, args, (5, 6))
        builder.store(v, _vec_ptr(context, builder, sig[0], args[0], dix), align=4)
        return context.get_dummy_value()

    return types.none(dst, di, a, ai, bv, lo, hi), codegen


@intrinsic
def clamp16_res_store(typingctx, dst, di, a, ai, bv, r, ri, lo, hi):
    """dst[di:di+16] = min(max((a[ai:ai+16] + bv) + r[ri:ri+16], lo), hi); ``r`` may be ``dst`` (read first)."""
    if not _typed((dst, a, r), (di, ai, ri), (bv, lo, hi)):
        return None

    def codegen(context, builder, signature, args):
        sig = signature.args
        dix, xi, rix = (context.cast(builder, args[k], sig[k], types.intp) for k in (1, 3, 6))
        b = _splat(builder, context.cast(builder, args[4], sig[4], types.float32))
        v = builder.fadd(builder.load(_vec_ptr(context, builder, sig[2], args[2], xi), align=4), b)
        v = builder.fadd(v, builder.load(_vec_ptr(context, builder, sig[5], args[5], rix), align=4))
        v = _clamp16(context, builder, signature, v, args, (7, 8))
        builder.store(v, _vec_ptr(context, builder, sig[0], args[0], dix), align=4)
        return context.get_dummy_value()

    return types.none(dst, di, a, ai, bv, r, ri, lo, hi), codegen
