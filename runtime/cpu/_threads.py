"""The thread count a parallel kernel's loops will be split over, read inside the kernel.

``numba.get_num_threads()`` compiled into a kernel calls the threading layer through a ctypes pointer,
which Numba's cache refuses ("dynamic globals"); this calls the same C function by the symbol name the
threading layer registers with LLVM, as Numba's own parallel loops do. Use it only in functions with a
parallel loop: loading one of those from the cache starts the threading layer (and registers the symbol)
before the code is linked.
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic


@intrinsic
def loop_threads(typingctx):
    """The number of threads the calling kernel's parallel loops are split over (numba.set_num_threads)."""
    def codegen(context, builder, signature, args):
        intp = context.get_value_type(types.intp)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(intp, []), "get_num_threads")
        return builder.call(fn, [])
    return types.intp(), codegen
