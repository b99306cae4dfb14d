"""Stack-allocated scratch arrays for register tiles inside Numba kernels.

``np.empty`` inside a kernel returns heap memory; LLVM cannot prove that it does not alias the
kernel's inputs, so an accumulator tile kept there is loaded and stored on every iteration.  An
``alloca`` in the function's entry block is private to the function, so LLVM keeps the tile in
registers.

``stack_f32(n)`` / ``stack_i64(n)`` must be called with an integer *literal* ``n``; the array must
not escape the function that calls it (it has no memory-manager owner and dies with the frame).
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

__all__ = ["stack_f32", "stack_i64"]


def _stack_array(dtype):
    arrty = types.Array(dtype, 1, "C")

    def impl(typingctx, n):
        if not isinstance(n, types.IntegerLiteral):
            return None
        size = int(n.literal_value)

        def codegen(context, builder, signature, args):
            elty = context.get_data_type(dtype)
            ptr = cgutils.alloca_once(builder, elty, size=size)
            ary = make_array(arrty)(context, builder)
            intp = context.get_value_type(types.intp)
            itemsize = context.get_abi_sizeof(elty)
            populate_array(
                ary,
                data=ptr,
                shape=[ir.Constant(intp, size)],
                strides=[ir.Constant(intp, itemsize)],
                itemsize=ir.Constant(intp, itemsize),
                meminfo=None,
            )
            return ary._getvalue()

        return arrty(n), codegen

    impl.__name__ = impl.__qualname__ = f"stack_{dtype}"
    return impl


stack_f32 = intrinsic(prefer_literal=True)(_stack_array(types.float32))
stack_f32.__doc__ = "1-D float32 array of ``n`` (a literal int) elements on the stack."
stack_i64 = intrinsic(prefer_literal=True)(_stack_array(types.int64))
stack_i64.__doc__ = "1-D int64 array of ``n`` (a literal int) elements on the stack."
