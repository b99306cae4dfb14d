"""Padding modes and the source index of a padded position, shared by the CPU and CUDA targets.

`pad_source_index` and `inside_taps` are plain Python: each target compiles them for itself (Numba's njit
on the CPU, a device function on the GPU), so both read the same rule.
"""

from __future__ import annotations

PAD_CONSTANT = 0
PAD_REFLECT = 1
PAD_REPLICATE = 2
PAD_MODES = {"constant": PAD_CONSTANT, "reflect": PAD_REFLECT, "replicate": PAD_REPLICATE, "edge": PAD_REPLICATE}


def pad_source_index(i, n, mode):
    """Source index along an axis of length ``n`` for padded position ``i``, or -1 for the constant fill.
    Reflect does not repeat the edge and folds repeatedly (as numpy does) when the pad exceeds n - 1."""
    if i >= 0 and i < n:
        return i
    if mode == PAD_CONSTANT:
        return -1
    if mode == PAD_REPLICATE:
        return 0 if i < 0 else n - 1
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i = i % period
    if i < 0:
        i += period
    return i if i < n else period - i


def inside_taps(start, taps, dilation, n):
    """The taps k of a window, [lo, hi), whose positions start + k * dilation lie inside [0, n): the rest
    read padding (a window entirely outside gives lo >= hi)."""
    if dilation == 1:  # (no divisions: kernels call this for every row of output, some for every pixel)
        return (0 if start >= 0 else min(taps, -start)), (0 if start > n - 1 else min(taps, n - start))
    lo = 0 if start >= 0 else min(taps, (dilation - 1 - start) // dilation)
    hi = 0 if start > n - 1 else min(taps, (n - 1 - start) // dilation + 1)
    return lo, hi
