"""Numba-compiled CPU kernels for every cnnc operator (float32, NCHW, C-contiguous).

Two layers:

* ``*_kernel`` functions (modules ``conv``, ``winograd``, ``c16``, ``pool``, ``eltwise``, ``tensor``): ``@njit`` kernels
  that write into a preallocated ``out`` passed last, take shapes from their arrays and every
  other parameter as a separate int or float (one compiled signature per kernel), and where it
  makes sense a fused activation ``(act, act_a, act_b)`` (codes in ``ACTIVATIONS``).
* wrappers (module ``ops``, re-exported here) with exactly the signatures of
  ``cnnc.runtime.reference``: they allocate the output and call the kernel.  Tests use these.

Kernels compile lazily on first call and are cached on disk (``cache=True``). Their register tiles
fit the vector unit Numba compiles for (``isa``).
"""

from . import ops
from ._act import ACTIVATIONS
from .ops import *

__all__ = ["ACTIVATIONS", *ops.__all__]  # noqa: PLE0604
