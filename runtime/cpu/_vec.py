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

__all__ = ["add16_store"]

_V16 = ir.VectorType(ir.FloatType(), 16)


def _vec_ptr(context, builder, arrty, arr, index):
    data = make_array(arrty)(context, builder, arr).data
    ptr = builder.gep(data, [index])
    return builder.bitcast(ptr, _V16.as_pointer())


@intrinsic
def add16_store(typingctx, dst, di, a, ai, b, bi):
    """dst[di:di+16] = a[ai:ai+16] + b[bi:bi+16] as one vector load of each operand and one store."""
    if not all(isinstance(t, types.Array) and t.dtype == types.float32 and t.ndim == 1 for t in (dst, a, b)):
        return None
    if not all(isinstance(t, types.Integer) for t in (di, ai, bi)):
        return None

    def codegen(context, builder, signature, args):
        d, dix, x, xi, y, yi = args
        dix, xi, yi = (context.cast(builder, v, t, types.intp) for v, t in zip((dix, xi, yi), signature.args[1::2]))
        vx = builder.load(_vec_ptr(context, builder, signature.args[2], x, xi), align=4)
        vy = builder.load(_vec_ptr(context, builder, signature.args[4], y, yi), align=4)
        builder.store(builder.fadd(vx, vy), _vec_ptr(context, builder, signature.args[0], d, dix), align=4)
        return context.get_dummy_value()

    return types.none(dst, di, a, ai, b, bi), codegen
