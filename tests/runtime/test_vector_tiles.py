"""Register tiles chosen from the CPU (cnnc.runtime.cpu.isa): every tile set's kernels against ONNX Runtime.

A process builds only its own CPU's tile set into the library's kernels; here the kernel factories build
the others too (AVX-512, AVX-512 with 256-bit vectors, AVX2), so that each one's edge paths -- tiles
straddling rows, the overlapping last tile, planes smaller than a tile, partial channel blocks, residuals
stored in place, channel-blocked inputs and outputs -- are checked on any machine. Which set a process
chooses is checked by running the choice under Numba's own target settings.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from cnnc.runtime.cpu import ACTIVATIONS
from cnnc.runtime.cpu import c16 as cpu_c16
from cnnc.runtime.cpu import conv as cpu_conv
from cnnc.runtime.cpu import isa

from test_cpu_kernels import assert_close, ort_run, rand

TILE_SETS = [isa.AVX512, isa.AVX512_YMM, isa.AVX2]
_NO_RES = np.empty(0, np.float32)


@pytest.fixture(scope="module", params=TILE_SETS, ids=lambda unit: unit.key)
def tiles(request):
    unit = request.param
    return {
        "unit": unit,
        "blocked": cpu_conv._make_blocked_core(cpu_conv.OCB, unit.conv_tile_pixels, unit.shuffled_plane_stores,
                                               unit.half_tiles),
        "pointwise": cpu_conv._make_pointwise_kernel(*unit.pointwise_tile),
        "depthwise": cpu_conv._make_depthwise_kernel(unit.depthwise_lanes),
        "c16_depthwise": cpu_c16._make_depthwise_c16_kernel(unit.c16_depthwise_pixels),
    }


def _packed(wt, groups=1):
    wp = np.empty(cpu_conv.blocked_weight_shape(wt.shape, groups), np.float32)
    cpu_conv.conv_pack_weight_kernel(wt, wp)
    return wp


def _blocked(core, x, wt, bias, stride, pads, dil, groups=1, act="identity", res=None, out=None):
    """Run a tile set's blocked core on ``x`` zero-padded here (the banded padding is tile-independent)."""
    n, c, h, w = x.shape
    cout, _, kh, kw = wt.shape
    pt, pl, pb, pr = pads
    xp = np.ascontiguousarray(np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr))))
    oh = (h + pt + pb - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + pl + pr - dil[1] * (kw - 1) - 1) // stride[1] + 1
    if out is None:
        out = np.full((n, cout, oh, ow), np.nan, np.float32)
    core(xp.reshape(-1), n, c, h + pt + pb, w + pl + pr, False, _packed(wt, groups), bias, kh, kw, *stride, *dil,
         ACTIVATIONS[act], 0.0, 0.0, _NO_RES if res is None else res.reshape(-1), out.reshape(-1), cout, oh, ow,
         False, 0, 0, oh, ow, oh * ow, 0, 0, 0)
    return out


def _ort_conv(x, wt, bias, stride=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1), groups=1):
    t, left, b, r = pads
    return ort_run("Conv", {"x": x, "w": wt, "b": bias}, kernel_shape=list(wt.shape[2:]), strides=list(stride),
                   pads=[t, left, b, r], dilations=list(dil), group=groups)


# (N, C, H, W, COUT, k, stride, pads, dilation, groups)
BLOCKED_CASES = [
    pytest.param(2, 5, 9, 11, 40, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, id="3x3-partial-block-rows-straddled"),
    pytest.param(1, 3, 23, 19, 70, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1, id="7x7-stride2-stem"),
    pytest.param(1, 8, 13, 10, 32, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 2, id="dilated-groups2"),
    pytest.param(1, 6, 1, 2, 33, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, id="plane-smaller-than-a-tile"),
    pytest.param(3, 16, 4, 5, 64, (3, 3), (2, 1), (1, 0, 1, 2), (1, 1), 1, id="asymmetric-stride-and-pads"),
]


@pytest.mark.parametrize("n,c,h,w,cout,k,stride,pads,dil,groups", BLOCKED_CASES)
def test_blocked_convolution_tiles(tiles, n, c, h, w, cout, k, stride, pads, dil, groups):
    x = rand(n, c, h, w)
    wt = rand(cout, c // groups, *k, scale=0.3)
    bias = rand(cout)
    y = _blocked(tiles["blocked"], x, wt, bias, stride, pads, dil, groups)
    assert_close(y, _ort_conv(x, wt, bias, stride, pads, dil, groups))


@pytest.mark.parametrize("act", ["relu", "silu"])
def test_blocked_convolution_tiles_residual_stored_in_place(tiles, act):
    """The residual's buffer is the output: tiles that overlap the one before store only new pixels, each
    after reading its residual (a pixel stored twice would add its residual twice)."""
    x = rand(2, 12, 7, 9)  # 63 pixels: no tile size here divides them
    wt = rand(36, 12, 3, 3, scale=0.3)
    bias = rand(36)
    skip = rand(2, 36, 7, 9, scale=3.0)
    y = _ort_conv(x, wt, bias, pads=(1, 1, 1, 1)) + skip
    ref = np.maximum(y, 0) if act == "relu" else y / (1 + np.exp(-y))
    out = skip.copy()
    _blocked(tiles["blocked"], x, wt, bias, (1, 1), (1, 1, 1, 1), (1, 1), act=act, res=out, out=out)
    assert_close(out, ref)


def test_blocked_convolution_tiles_between_channel_blocked_layouts(tiles):
    """A c16 input (MobileNet's projection) into a c16 output stored inside a zero halo."""
    n, c, h, w, cout, halo = 2, 24, 5, 6, 40, 1
    x = rand(n, c, h, w)
    wt = rand(cout, c, 1, 1, scale=0.3)
    bias = rand(cout)
    nb = -(-cout // cpu_conv.OCB)
    bias_padded = np.zeros(nb * cpu_conv.OCB, np.float32)
    bias_padded[:cout] = bias
    hs, ws = h + 2 * halo, w + 2 * halo
    stored = np.zeros((n, cpu_c16.blocks(cout), hs, ws, 16), np.float32)
    tiles["blocked"](cpu_c16.to_c16(x).reshape(-1), n, c, h, w, True, cpu_conv.pack_c16_input_weight(wt), bias_padded,
                     1, 1, 1, 1, 1, 1, ACTIVATIONS["relu6"], 0.0, 0.0, _NO_RES, stored.reshape(-1), cout, h, w, True,
                     halo, halo, hs, ws, h * w, 0, 0, 0)
    assert (stored[:, :, 0] == 0).all() and (stored[:, :, :, 0] == 0).all()
    inner = np.ascontiguousarray(stored[:, :, halo:-halo, halo:-halo])
    assert_close(cpu_c16.from_c16(inner, cout), np.clip(_ort_conv(x, wt, bias), 0, 6))


def test_blocked_convolution_tiles_read_a_halo_and_add_a_blocked_residual_in_place(tiles):
    """ResNet's blocked chains: a c16 input stored inside a zero halo two pixels wide, read by a 3x3
    convolution with padding 1 from one pixel into it; a c16 residual in the output's own buffer (64 pixels,
    which no tile size divides: overlapping last tiles must not add it twice)."""
    n, c, h, w, cout, halo = 2, 20, 8, 8, 36, 2
    x = rand(n, c, h, w)
    wt = rand(cout, c, 3, 3, scale=0.3)
    bias = rand(cout)
    skip = rand(n, cout, h, w, scale=3.0)
    nb = -(-cout // cpu_conv.OCB)
    bias_padded = np.zeros(nb * cpu_conv.OCB, np.float32)
    bias_padded[:cout] = bias
    hs, ws = h + 2 * halo, w + 2 * halo
    xin = np.zeros((n, cpu_c16.blocks(c), hs, ws, 16), np.float32)
    xin[:, :, halo:-halo, halo:-halo] = cpu_c16.to_c16(x)
    out = cpu_c16.to_c16(skip)
    tiles["blocked"](xin.reshape(-1), n, c, hs, ws, True, cpu_conv.pack_c16_input_weight(wt), bias_padded,
                     3, 3, 1, 1, 1, 1, ACTIVATIONS["relu"], 0.0, 0.0, out.reshape(-1), out.reshape(-1), cout, h, w,
                     True, 0, 0, h, w, h * w, ((halo - 1) * ws + halo - 1) * 16, 0, 0)
    ref = np.maximum(_ort_conv(x, wt, bias, pads=(1, 1, 1, 1)) + skip, 0)
    assert_close(cpu_c16.from_c16(out, cout), ref)


@pytest.mark.parametrize(
    "n,c,h,w,cout,groups,act,residual",
    [
        pytest.param(2, 16, 12, 14, 13, 1, "relu6", True, id="tail-tile-partial-block-residual"),
        pytest.param(1, 8, 20, 20, 32, 2, "identity", False, id="groups2"),
        pytest.param(1, 24, 6, 6, 40, 1, "silu", True, id="few-pixels-staged-activation"),
    ],
)
def test_pointwise_convolution_tiles(tiles, n, c, h, w, cout, groups, act, residual):
    mr, pixels = tiles["unit"].pointwise_tile
    assert h * w >= pixels  # the kernel's precondition (smaller planes take the blocked kernel)
    x = rand(n, c, h, w)
    wt = rand(cout, c // groups, 1, 1, scale=0.3)
    bias = rand(cout)
    skip = rand(n, cout, h, w, scale=3.0)
    y = _ort_conv(x, wt, bias, groups=groups) + (skip if residual else 0)
    ref = {"identity": y, "relu6": np.clip(y, 0, 6), "silu": y / (1 + np.exp(-y))}[act]
    wq = np.zeros((groups, -(-(cout // groups) // mr), c // groups, mr), np.float32)
    cpu_conv.conv_pack_pointwise_kernel(wt, wq)
    out = skip.copy() if residual else np.full(skip.shape, np.nan, np.float32)
    tiles["pointwise"](x, wq, bias, ACTIVATIONS[act], 0.0, 0.0, out.reshape(-1) if residual else _NO_RES, out)
    assert_close(out, ref)


@pytest.mark.parametrize(
    "n,c,h,w,mult,k,stride,pads,dil",
    [
        pytest.param(2, 6, 9, 20, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), id="3x3"),
        pytest.param(1, 5, 17, 35, 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), id="stride2"),
        pytest.param(1, 4, 6, 18, 1, (5, 5), (1, 1), (2, 1, 2, 3), (1, 1), id="5x5-asym"),
        pytest.param(1, 3, 9, 9, 2, (3, 3), (1, 3), (2, 2, 2, 2), (2, 2), id="mult2-dil-stride3"),
        pytest.param(1, 4, 2, 3, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), id="tiny-plane"),
    ],
)
def test_depthwise_convolution_tiles(tiles, n, c, h, w, mult, k, stride, pads, dil):
    x = rand(n, c, h, w)
    wt = rand(c * mult, 1, *k, scale=0.3)
    bias = rand(c * mult)
    ref = _ort_conv(x, wt, bias, stride, pads, dil, groups=c)
    out = np.full(ref.shape, np.nan, np.float32)
    tiles["depthwise"](x, wt, bias, *stride, *pads, *dil, ACTIVATIONS["identity"], 0.0, 0.0, out)
    assert_close(out, ref)


@pytest.mark.parametrize(
    "n,c,h,w,k,stride,pad,act",
    [
        pytest.param(1, 32, 6, 19, 3, 1, 1, "relu6", id="3x3-rows-not-whole-tiles"),
        pytest.param(2, 24, 9, 9, 3, 2, 1, "identity", id="stride2-partial-channel-block"),
        pytest.param(1, 16, 7, 11, 5, 2, 2, "silu", id="5x5-stride2-staged-activation"),
        pytest.param(1, 16, 5, 3, 3, 1, 1, "relu", id="plane-narrower-than-a-tile"),
    ],
)
def test_channel_blocked_depthwise_tiles(tiles, n, c, h, w, k, stride, pad, act):
    x = rand(n, c, h, w, scale=4.0)
    wt = rand(c, 1, k, k)
    bias = rand(c)
    y = _ort_conv(x, wt, bias, (stride, stride), (pad,) * 4, groups=c)
    ref = {"identity": y, "relu": np.maximum(y, 0), "relu6": np.clip(y, 0, 6), "silu": y / (1 + np.exp(-y))}[act]
    w16, b16 = cpu_c16.pack_depthwise(wt, bias)
    oh, ow = ref.shape[2:]
    out = np.full((n, cpu_c16.blocks(c), oh, ow, 16), np.nan, np.float32)
    # (SiLU's own variant applies it row by row, independently of the tile: test_cpu_kernels runs it; compiling
    # it for AVX2 here too cost 28 s of the suite)
    tiles["c16_depthwise"](cpu_c16.to_c16(x).reshape(-1), h, w, w16, b16, stride, stride, pad, pad, 1, 1,
                           ACTIVATIONS[act], 0.0, 0.0, out.reshape(-1), oh, ow)
    assert np.isfinite(out).all()  # padding lanes written too
    assert_close(cpu_c16.from_c16(out, c), ref)


@pytest.mark.parametrize(
    "cpu_name,features,expected",
    [
        ("znver5", "+avx,+avx2,+fma,+avx512f,+avx512vl,+avx512bw", isa.AVX512),
        ("skylake-avx512", "+avx,+avx2,+fma,+avx512f,+avx512vl", isa.AVX512_YMM),
        ("sapphirerapids", "+avx2,+avx512f", isa.AVX512_YMM),
        ("haswell", "+avx,+avx2,+fma", isa.AVX2),
        ("znver5", "+avx,+avx2,+fma,-avx512f,-avx512vl", isa.AVX2),  # AVX-512 switched off by the features
        ("x86-64", "+sse2", isa.AVX2),
    ],
)
def test_vector_unit_from_the_compile_target(cpu_name, features, expected):
    assert isa.vector_unit_for(cpu_name, features) is expected


@pytest.mark.parametrize(
    "env,expected",
    [
        ({"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "+avx,+avx2,+fma"}, isa.AVX2),
        ({"NUMBA_CPU_NAME": "skylake-avx512", "NUMBA_CPU_FEATURES": "+avx2,+fma,+avx512f,+avx512vl"}, isa.AVX512_YMM),
        ({"NUMBA_ENABLE_AVX": "0"}, isa.AVX2),  # Numba's switch that takes every AVX feature off the host's
    ],
)
def test_a_process_builds_the_tiles_of_the_target_numba_compiles_for(env, expected):
    """The kernels' tile sizes follow NUMBA_CPU_NAME / NUMBA_CPU_FEATURES (no kernel is compiled here)."""
    probe = ("from cnnc.runtime.cpu import c16, conv, isa; "
             "print(isa.VECTOR_UNIT.name, conv.TP, conv.PW_MR, conv.PW_PV, conv.DW_LANES, c16.DW_TP, sep='|')")
    done = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().split("|") == [expected.name, str(expected.conv_tile_pixels),
                                              *map(str, expected.pointwise_tile), str(expected.depthwise_lanes),
                                              str(expected.c16_depthwise_pixels)]
