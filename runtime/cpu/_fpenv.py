"""Denormals flushed to zero while the CPU kernels run (x86-64: the FTZ and DAZ bits of MXCSR).

Arithmetic on denormal floats (|x| < 1.2e-38) is up to a hundred times slower on x86, and a network's
activations drift into that range in long chains of small values. With FTZ a result that would be
denormal is written as zero; with DAZ a denormal input is read as zero.

MXCSR belongs to each thread. The runtime's worker threads only ever run cnnc kernels, so their flags
are set once (`flush_denormals_in_workers`); the calling thread's are set for the duration of a run and
restored after it (`DenormalsFlushed`), so the user's own numpy code keeps IEEE behaviour.
"""

from __future__ import annotations

import platform

import numba
from llvmlite import ir
from numba import prange
from numba.core import cgutils, types
from numba.extending import intrinsic

FTZ_DAZ = 0x8040  # MXCSR bit 15 (flush to zero) | bit 6 (denormals are zero)
SUPPORTED = platform.machine().lower() in ("x86_64", "amd64")


def _mxcsr_call(builder, name: str, slot):
    fnty = ir.FunctionType(ir.VoidType(), [ir.PointerType(ir.IntType(8))])
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    builder.call(fn, [builder.bitcast(slot, ir.PointerType(ir.IntType(8)))])


@intrinsic
def _get_mxcsr(typingctx):
    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        _mxcsr_call(builder, "llvm.x86.sse.stmxcsr", slot)
        return builder.zext(builder.load(slot), ir.IntType(64))
    return types.int64(), codegen


@intrinsic
def _set_mxcsr(typingctx, value):
    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        builder.store(builder.trunc(args[0], ir.IntType(32)), slot)
        _mxcsr_call(builder, "llvm.x86.sse.ldmxcsr", slot)
        return context.get_dummy_value()
    return types.void(types.int64), codegen


@numba.njit(cache=True)
def get_mxcsr():
    return _get_mxcsr()


@numba.njit(cache=True)
def set_mxcsr(value):
    _set_mxcsr(value)


@numba.njit(cache=True, parallel=True)
def _flush_all_threads(items):
    for _ in prange(items):  # static scheduling hands every thread of the pool some items
        _set_mxcsr(_get_mxcsr() | FTZ_DAZ)


def flush_denormals_in_workers() -> None:
    """Set FTZ/DAZ in every worker thread of Numba's pool (the pool is created once per process)."""
    if not SUPPORTED:
        return
    current = numba.get_num_threads()
    caller = get_mxcsr()  # the calling thread works in the pool too: keep its own flags
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    try:
        _flush_all_threads(numba.config.NUMBA_NUM_THREADS * 16)
    finally:
        numba.set_num_threads(current)
        set_mxcsr(caller)


class DenormalsFlushed:
    """Context manager: FTZ/DAZ on the calling thread inside, its previous MXCSR restored after."""

    def __enter__(self):
        if SUPPORTED:
            self.saved = get_mxcsr()
            set_mxcsr(self.saved | FTZ_DAZ)
        return self

    def __exit__(self, *exc):
        if SUPPORTED:
            set_mxcsr(self.saved)
        return False
