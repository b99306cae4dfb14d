"""The vector unit the CPU kernels are compiled for, and the register tiles that fit it.

The kernels keep a tile of accumulators in vector registers; how many fit depends on the vector width
LLVM vectorises with and on the number of registers:

* 512-bit vectors, 32 registers (AVX-512 on AMD Zen 4 / Zen 5 and other targets LLVM vectorises
  512 bits wide);
* 256-bit vectors, 32 registers (AVX-512 on Intel cores up to now: LLVM tunes them to prefer 256-bit
  vectors, but AVX-512VL still gives it ymm0-ymm31);
* 256-bit vectors, 16 registers (AVX2);
* anything older is served by the AVX2 tiles (correct, slower).

The answer is read from the same place Numba reads its code-generation target (``NUMBA_CPU_NAME``,
``NUMBA_CPU_FEATURES`` or the host), so a kernel's tile always matches the code it was compiled to,
and Numba's cache, which keys compiled code on that target, never hands a kernel compiled for one tile
to a process that chose another. ``NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=+avx2,+fma`` makes an
AVX-512 machine build and run the AVX2 kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import llvmlite.binding as ll
from numba.core import config
from numba.core.codegen import get_host_cpu_features

# LLVM's x86 processor models tuned to prefer 256-bit vectors although they have AVX-512 (Intel's
# server and client cores since Skylake-SP): on them the loop vectoriser emits ymm code.
_PREFER_256_BIT = frozenset({
    "skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client", "icelake-server",
    "rocketlake", "tigerlake", "sapphirerapids", "emeraldrapids", "graniterapids", "graniterapids-d",
    "diamondrapids", "x86-64-v4",
})


@dataclass(frozen=True)
class VectorUnit:
    key: str  # short name (`cnnc bench --format json`, test ids)
    name: str  # how `cnnc bench` names it
    vector_bits: int  # the width LLVM vectorises the kernels' loops with
    registers: int  # vector registers
    conv_tile_pixels: int  # blocked convolution: output pixels per register tile (x 32 output channels)
    pointwise_tile: tuple[int, int]  # pointwise convolution: (output channels, pixels) per register tile
    depthwise_lanes: int  # plain-layout depthwise convolution: output columns per accumulator row
    c16_depthwise_pixels: int  # channel-blocked depthwise convolution: output pixels (x 16 channels) per tile
    # blocked convolution into channel planes: the tile transposed with shuffles and stored as vectors
    # (``_vec.store_tile_planes``), or float by float. Measured with Numba compiling for each unit, ResNet-50 /
    # MobileNet-V2 at batch 1: AVX-512 2-3% faster with the shuffles, AVX2 even to 5% faster, AVX-512 with
    # 256-bit vectors 1.5x slower (33.8-34.1 -> 50.8-51.2 ms, 3.4-3.5 -> 5.0-5.1 ms): the whole kernel, hot
    # loop included, ran slower with the shuffles in it.
    shuffled_plane_stores: bool
    # blocked convolution: a last block of at most 16 output channels runs a 16-channel tile (skipping the
    # padding's FMAs). Measured alone, 32 -> 16 channels on 112x112: AVX-512 0.073 -> 0.058 ms, AVX-512 with
    # 256-bit vectors 0.203 -> 0.106 ms; AVX2 0.141 -> 0.639 ms (LLVM left that tile's 16 channels unvectorised
    # there), so AVX2 keeps computing the padding.
    half_tiles: bool


# Tile sizes measured here (see the README): each one the fastest of those tried for its unit, with
# Numba compiling for that unit (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES) on this AMD Zen 5 machine.
AVX512 = VectorUnit("avx512", "AVX-512", 512, 32, 7, (8, 32), 16, 8, True, True)
AVX512_YMM = VectorUnit("avx512-ymm", "AVX-512 (256-bit vectors)", 256, 32, 5, (4, 32), 16, 8, False, True)
AVX2 = VectorUnit("avx2", "AVX2", 256, 16, 3, (3, 32), 8, 4, True, False)


def target_cpu() -> tuple[str, str]:
    """(CPU name, feature string) that Numba compiles for, as Numba's own code generator works them out."""
    name = config.CPU_NAME or ll.get_host_cpu_name()
    features = config.CPU_FEATURES
    if features is None:  # Numba's own reading of the host (it honours NUMBA_ENABLE_AVX)
        features = get_host_cpu_features()
    return name, features


def vector_unit_for(cpu_name: str, features: str) -> VectorUnit:
    """The tile set for code compiled for ``cpu_name`` with the LLVM ``features`` string."""
    enabled = {f[1:] for f in features.split(",") if f.startswith("+")}
    if "avx512f" in enabled:
        return AVX512_YMM if cpu_name in _PREFER_256_BIT else AVX512
    return AVX2


VECTOR_UNIT = vector_unit_for(*target_cpu())
