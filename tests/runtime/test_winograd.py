"""Winograd F(2x2, 3x3) on the CPU target: the kernels against ONNX Runtime, where the rule applies, and the
workspaces the memory plan gives it."""

from __future__ import annotations

import numpy as np
import pytest

from cnnc import plan as plan_mod
from cnnc.compiler import compile_spec
from cnnc.runtime import cpu
from cnnc.runtime import winograd_plan
from cnnc.runtime.cpu import conv as cpu_conv
from cnnc.runtime.cpu import winograd as cpu_wino
from cnnc.runtime.cpu_program import CpuProgram
from cnnc.runtime.memory import plan_memory, workspace_key
from cnnc.weights import seeded_fixture_weights
from conftest import SPECS
from test_cpu_kernels import assert_close, ort_run, rand


def _winograd(x, wt, bias, pads, act="identity", residual=None, out=None):
    """The Winograd path on any shape (the rule only decides where the CPU program takes it)."""
    n, c, h, w = x.shape
    k = wt.shape[0]
    oh, ow = h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2
    u = cpu_wino.transform_weight(wt)
    wq = np.empty(cpu_conv.pointwise_weight_shape(u.shape, 16), np.float32)
    cpu_conv.conv_pack_pointwise_kernel(u, wq)
    if out is None:
        out = np.full((n, k, oh, ow), np.nan, np.float32)
    workspace = np.full(n * winograd_plan.workspace_floats(c, k, oh, ow), np.nan, np.float32)
    res = np.empty(0, np.float32) if residual is None else residual.reshape(-1)
    cpu_wino.winograd_conv(x, wq, bias, np.zeros(16 * k, np.float32), pads[:2],
                           (cpu.ACTIVATIONS[act], 0.0, 0.0), res, out, workspace)
    return out


def _ort_conv(x, wt, bias, pads):
    return ort_run("Conv", {"x": x, "w": wt, "b": bias}, kernel_shape=[3, 3], pads=list(pads))


@pytest.mark.parametrize(
    "n,c,h,w,k,pads",
    [
        pytest.param(1, 8, 12, 12, 16, (1, 1, 1, 1), id="same-even"),
        pytest.param(2, 5, 13, 17, 7, (1, 1, 1, 1), id="odd-output-rows-and-columns-batch2"),
        pytest.param(1, 6, 11, 70, 9, (0, 0, 0, 0), id="unpadded"),
        pytest.param(1, 4, 9, 34, 5, (2, 0, 1, 2), id="asymmetric-pads"),
        pytest.param(1, 3, 3, 64, 4, (1, 1, 1, 1), id="one-tile-row-band"),
    ],
)
def test_winograd_matches_onnxruntime(n, c, h, w, k, pads):
    x = rand(n, c, h, w)
    wt = rand(k, c, 3, 3, scale=0.3)
    bias = rand(k)
    assert_close(_winograd(x, wt, bias, pads), _ort_conv(x, wt, bias, pads))


@pytest.mark.parametrize("act", ["relu", "relu6", "silu"])
def test_winograd_residual_in_place_and_activation(act):
    x = rand(2, 6, 14, 40, scale=2.0)
    wt = rand(10, 6, 3, 3, scale=0.3)
    bias = rand(10)
    skip = rand(2, 10, 14, 40, scale=3.0)
    y = _ort_conv(x, wt, bias, (1, 1, 1, 1)) + skip
    ref = {"relu": np.maximum(y, 0), "relu6": np.clip(y, 0, 6), "silu": y / (1 + np.exp(-y))}[act]
    out = skip.copy()
    _winograd(x, wt, bias, (1, 1, 1, 1), act, residual=out, out=out)
    assert_close(out, ref)


def test_winograd_in_several_bands(monkeypatch):
    """A small workspace splits the tile rows into bands, each transformed, multiplied and written alone."""
    monkeypatch.setattr(winograd_plan, "WORKSPACE_BYTES", 4 * 16 * (4 + 6) * 20 * 2)  # two tile rows a band
    x = rand(2, 4, 21, 40)
    wt = rand(6, 4, 3, 3, scale=0.3)
    bias = rand(6)
    assert len(winograd_plan.bands(4, 6, 21, 40)) == 5  # 11 tile rows: bands of 2 and 3 rows
    assert_close(_winograd(x, wt, bias, (1, 1, 1, 1)), _ort_conv(x, wt, bias, (1, 1, 1, 1)))


def test_every_band_fills_the_gemm_pixel_tile_of_every_vector_unit():
    """The pointwise kernel needs at least its pixel tile per GEMM; winograd_plan (no Numba) states it as MIN_TILES."""
    from cnnc.runtime.cpu import isa
    assert winograd_plan.MIN_TILES >= max(u.pointwise_tile[1] for u in (isa.AVX512, isa.AVX512_YMM, isa.AVX2))


def test_the_cpu_kernels_take_winograd_where_the_rule_says():
    x = rand(1, 128, 56, 56)
    wt = rand(128, 128, 3, 3, scale=0.05)
    bias = rand(128)
    plan = cpu.pack_conv2d(wt, bias, pads=(1, 1, 1, 1), act=cpu.ACTIVATIONS["relu"])
    assert plan.strategy(x.shape) == "winograd"
    out = np.full((1, 128, 56, 56), np.nan, np.float32)
    plan.run(x, out)
    assert_close(out, np.maximum(_ort_conv(x, wt, bias, (1, 1, 1, 1)), 0))


@pytest.mark.parametrize(
    "weight_shape,groups,stride,dilation,out_hw",
    [
        pytest.param((128, 64, 3, 3), 1, (1, 1), (1, 1), (56, 56), id="64-input-channels"),
        pytest.param((128, 128, 3, 3), 1, (1, 1), (1, 1), (28, 28), id="28x28-plane"),
        pytest.param((128, 128, 3, 3), 1, (2, 2), (1, 1), (56, 56), id="stride2"),
        pytest.param((128, 128, 3, 3), 1, (1, 1), (2, 2), (56, 56), id="dilated"),
        pytest.param((256, 64, 3, 3), 2, (1, 1), (1, 1), (56, 56), id="grouped"),
        pytest.param((128, 128, 5, 5), 1, (1, 1), (1, 1), (56, 56), id="5x5"),
        pytest.param((128, 128, 3, 3), 1, (1, 1), (1, 1), (40, 600), id="wider-than-the-row-buffers"),
    ],
)
def test_winograd_does_not_apply(weight_shape, groups, stride, dilation, out_hw):
    assert not winograd_plan.applies(weight_shape, groups, stride, dilation, out_hw)
    assert cpu.conv_strategy(weight_shape, groups, stride, (1, 1, 1, 1), out_hw, dilation=dilation) != "winograd"


def test_memory_plan_gives_winograd_steps_a_workspace_and_keeps_them_off_their_input():
    plan = plan_mod.from_graph(compile_spec(str(SPECS / "vgg16.cnn")).graph)
    shapes = {t: tuple(s) for t, s in plan["tensors"].items()}
    memory = plan_memory(plan)
    wino = [s for s in plan["steps"] if winograd_plan.step_workspace(s, shapes)]
    assert [s["name"] for s in wino] == ["features.7", "features.10", "features.12", "features.14"]
    for s in wino:
        assert memory["workspace"][s["output"]] == winograd_plan.step_workspace(s, shapes)
        assert s["output"] not in memory["in_place"]  # the transform reads rows a band's output would replace
        start, size = memory["offsets"][workspace_key(s["output"])], memory["workspace"][s["output"]]
        for t in (s["output"], *s["inputs"]):  # apart from the step's own operands
            owner = memory["in_place"].get(t, t)
            other = memory["offsets"][owner]
            assert start + size <= other or other + np.prod(shapes[t]) <= start
    # without workspaces (the CUDA target) the same 'same' convolutions may be planned over their input again
    plain = plan_memory(plan, workspaces=False)
    assert plain["workspace"] == {} and any(s["output"] in plain["in_place"] for s in wino)


def test_cpu_program_runs_winograd_steps_in_their_arena_workspace():
    plan = plan_mod.from_graph(compile_spec(str(SPECS / "vgg16.cnn")).graph)
    program = CpuProgram(plan, seeded_fixture_weights(plan["constants"]))
    arena, views, mode, calls = program._buffers(2)
    by_step = {i: work for i, _, _, _, work in calls}
    for i, step in enumerate(plan["steps"]):
        if step["output"] in mode.workspace:
            work = by_step[i]
            assert work.base is arena or work.base is arena.base  # a view of the arena, not its own allocation
            assert work.size == 2 * mode.workspace[step["output"]]
