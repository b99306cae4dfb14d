"""Argument normalisation shared by the runtime's implementations (reference and CPU)."""

from __future__ import annotations

import numpy as np


def pair(v) -> tuple[int, int]:
    """An int for both spatial axes, or (h, w)."""
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def pads4(pads) -> tuple[int, int, int, int]:
    """Padding as (top, left, bottom, right), from an int, (h, w) or four values."""
    if isinstance(pads, (int, np.integer)):
        p = int(pads)
        return p, p, p, p
    p = tuple(int(v) for v in pads)
    if len(p) == 2:  # symmetric (ph, pw) shorthand
        return p[0], p[1], p[0], p[1]
    if len(p) != 4:
        raise ValueError(f"pads must have 4 entries (top, left, bottom, right), got {pads}")
    return p  # type: ignore[return-value]
