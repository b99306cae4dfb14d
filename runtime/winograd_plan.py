"""Where the CPU target computes a convolution with Winograd F(2x2, 3x3), and the workspace it needs.

Pure Python (no Numba): the memory planner reads it to give each such convolution a workspace in the
arena, and to keep its output off its input (the transform reads input rows that earlier bands' outputs
would already have replaced); the CPU kernels (``cpu/winograd.py``) read it to split the work.

The rule, measured in models on this machine (2 threads, AVX-512; per-layer profiles, alternating runs):
3x3, stride 1, no dilation, no groups, at least 128 input and 128 output channels, and an output plane of
at least MIN_PLANE_TILES tiles (56x56). Isolated layers gain from 28x28 and 14x14 planes too (1.1-1.4x),
but inside a network at batch 1 those layers stream their weights from memory on every run, and the
transformed weights are 16/9 as large: ResNet-18's 28x28 and 14x14 layers came out even, and their
workspace would have grown ResNet-50's arena. Below 128 channels the transforms cost more than the 2.25x
fewer multiplications save (64 channels at 56x56: 0.6-0.7x the direct kernel). VGG-16's four 3x3 layers
at 112x112 and 56x56 with 128-256 channels: 1.2-1.6x faster at batch 1.
"""

from __future__ import annotations

MIN_CHANNELS = 128
MIN_TILES = 32  # tiles per GEMM: the pointwise kernel's pixel tile
MIN_PLANE_TILES = 784  # 2x2 tiles of the output plane: 56x56 and larger
ROW_CAPACITY = 257  # tile columns + 1 the input transform's row buffers hold: outputs up to 512 pixels wide
WORKSPACE_BYTES = 1 << 23  # transformed input and GEMM output of one band of tile rows, per sample


def tiles(oh: int, ow: int) -> tuple[int, int]:
    """Tile rows and columns covering an (oh, ow) output."""
    return -(-oh // 2), -(-ow // 2)


def bands(c: int, k: int, oh: int, ow: int) -> list[tuple[int, int]]:
    """Tile-row bands (first, end) computed one after another: each holds at least MIN_TILES tiles, and
    as many rows as fit WORKSPACE_BYTES; [] when the output has fewer than MIN_TILES tiles."""
    th, tw = tiles(oh, ow)
    rows_min = -(-MIN_TILES // tw)
    if rows_min > th:
        return []
    rows_cap = max(rows_min, WORKSPACE_BYTES // (4 * 16 * (c + k) * tw))
    nb = max(1, min(th // rows_min, -(-th // rows_cap)))
    return [(th * i // nb, th * (i + 1) // nb) for i in range(nb)]


def applies(weight_shape, groups: int, stride, dilation, out_hw) -> bool:
    """Whether the CPU target computes this convolution with Winograd F(2x2, 3x3)."""
    k, cg, kh, kw = weight_shape
    return ((kh, kw) == (3, 3) and groups == 1 and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)
            and cg >= MIN_CHANNELS and k >= MIN_CHANNELS and tiles(*out_hw)[1] + 1 <= ROW_CAPACITY
            and bool(bands(cg, k, *out_hw)) and tiles(*out_hw)[0] * tiles(*out_hw)[1] >= MIN_PLANE_TILES)


def workspace_floats(c: int, k: int, oh: int, ow: int) -> int:
    """Floats of workspace per sample: the largest band's transformed input (16, C, tiles) and GEMM output
    (16, K, tiles)."""
    tw = tiles(oh, ow)[1]
    return 16 * (c + k) * tw * max(end - first for first, end in bands(c, k, oh, ow))


def step_workspace(step: dict, shapes: dict) -> int:
    """Workspace floats per sample of a plan step (0: none)."""
    if step["op"] != "conv":
        return 0
    a = step["attrs"]
    c = shapes[step["inputs"][0]][0]
    k, oh, ow = shapes[step["output"]]
    groups = a.get("groups", 1)
    if not applies((k, c // groups, *a["kernel"]), groups, a["stride"], a.get("dilation", (1, 1)), (oh, ow)):
        return 0
    return workspace_floats(c, k, oh, ow)
