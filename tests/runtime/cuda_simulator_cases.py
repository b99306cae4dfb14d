"""The CUDA target under Numba's CUDA simulator: every kernel and fusion against the reference target.

Run by test_cuda_simulator.py in a subprocess with NUMBA_ENABLE_CUDASIM=1 (the simulator is chosen when
numba.cuda is first imported, so it cannot share a process with the rest of the suite). Each case
compiles a tiny spec (or edits a compiled plan where a fusion or an in-place placement must be forced),
runs it on the cuda target and on the reference target, and compares. The simulator runs every CUDA
thread as a Python thread, so shapes are tiny; the program launches small blocks there (see
runtime/cuda/_common.py) and every launch is checked against its kernel's declared signature.
"""

import copy
import math
import os
import sys

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("run by test_cuda_simulator.py with NUMBA_ENABLE_CUDASIM=1", allow_module_level=True)

import cnnc
from cnnc import plan as plan_mod
from cnnc.compiler import compile_spec
from cnnc.runtime.executor import Program
from cnnc.weights import seeded_fixture_weights
from conftest import SPECS

# Simulated threads meet at every syncthreads; the default 5 ms GIL switch interval would make each
# barrier cost milliseconds.
sys.setswitchinterval(1e-5)


def _serialise_shared_allocation() -> None:
    """The simulator gives a block's threads one shared array per source line by looking it up and, if
    missing, creating it, with no lock: two threads switched between the two steps get two different
    arrays, and each then reads the other's half as uninitialised memory (garbage values, in a case
    chosen by chance; the short switch interval above makes it likely). Here the look-up and creation are
    one locked step, keyed as the simulator keys them (the kernel's file and line)."""
    import threading

    import numba.np.numpy_support
    from numba.cuda.simulator import kernelapi

    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:
            return original(self, shape, dtype, alignment)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            found = self._allocations.get(key)
            if found is None:
                if isinstance(dtype, numba.types.Type):
                    dtype = numba.np.numpy_support.as_dtype(dtype)
                found = self._allocations[key] = np.empty(shape, dtype)
        return found

    original = kernelapi.FakeCUDAShared.array
    kernelapi.FakeCUDAShared.array = array


_serialise_shared_allocation()

BATCH = 2
ACTIVATIONS = ["relu()", "relu6()", "sigmoid()", "tanh()", "silu()", "hardswish()", "hardsigmoid(0.2, 0.4)",
               "leaky_relu(0.2)", "clip(min=-0.3, max=0.6)", "clip(max=0.25)"]


def compile_plan(tmp_path, inputs: dict, body: str, disabled: tuple = ()) -> dict:
    """The plan of a network with `inputs` (name -> per-sample shape) and the statements of `body` (passes in
    `disabled` skipped)."""
    decl = "\n".join(f"    input {name}: (N, {', '.join(map(str, shape))})" for name, shape in inputs.items())
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    path = tmp_path / "case.cnn"
    path.write_text(f"network case() {{\n{decl}\n{lines}\n}}\n")
    return plan_mod.from_graph(compile_spec(str(path), disabled=disabled).graph)


def feeds(plan: dict, seed: int = 0, batch: int = BATCH) -> dict:
    rng = np.random.default_rng(seed)
    return {i["name"]: rng.standard_normal((batch, *i["shape"])).astype(np.float32) for i in plan["inputs"]}


def assert_matches_reference(plan: dict, weights: dict | None = None, seed: int = 0) -> None:
    weights = seeded_fixture_weights(plan["constants"]) if weights is None else weights
    x = feeds(plan, seed)
    got = Program(plan, weights, target="cuda").run(x)
    want = Program(plan, weights, target="reference").run(x)
    for name, ref in want.items():
        assert got[name].shape == ref.shape, name
        err = float(np.max(np.abs(got[name] - ref)))
        assert err <= 1e-4 * max(1.0, float(np.max(np.abs(ref)))), f"{name}: max error {err}"


def step_of(plan: dict, op: str) -> dict:
    return next(s for s in plan["steps"] if s["op"] == op)


# ---- every op, one small network each -------------------------------------------------------------

OP_CASES = {
    # convolution: each kernel (strategy) and the shapes that stress its tiling
    "conv_direct": ({"x": (3, 9, 10)}, "conv(16, 3, padding=1)"),
    "conv_direct_strided_dilated_asymmetric": (
        {"x": (4, 11, 13)}, "conv(12, (3, 5), stride=2, padding=(1, 2, 0, 1), dilation=(2, 1), bias=false)"),
    "conv_direct_grouped": ({"x": (4, 6, 6)}, "conv(16, 3, groups=2, padding=1)"),
    "conv_direct_7x7_stride2": ({"x": (3, 12, 12)}, "conv(8, 7, stride=2, padding=3)"),
    "conv_direct_strided_1x1": ({"x": (5, 7, 7)}, "conv(9, 1, stride=2)"),
    "conv_pointwise": ({"x": (6, 5, 7)}, "conv(10, 1)"),
    "conv_pointwise_grouped": ({"x": (4, 3, 3)}, "conv(16, 1, groups=2)"),
    "conv_depthwise": ({"x": (6, 9, 9)}, "conv(6, 3, groups=6, padding=1, stride=2)"),
    "conv_depthwise_multiplier": ({"x": (3, 6, 6)}, "conv(6, 3, groups=3, dilation=2, padding=(0, 1, 1, 0))"),
    "conv_few_channels_per_group": ({"x": (8, 5, 5)}, "conv(8, 3, groups=4, padding=1)"),
    "conv_generic_window_too_large_to_stage": ({"x": (1, 84, 84)}, "conv(2, 3, dilation=40)"),
    # the folded batchnorm and the fused activation, on each convolution kernel
    "conv_direct_bn_relu": ({"x": (3, 6, 6)}, "conv(8, 3, padding=1, bias=false)\nbatchnorm()\nrelu()"),
    "conv_pointwise_bn_relu6": ({"x": (4, 4, 4)}, "conv(8, 1)\nbatchnorm()\nrelu6()"),
    "conv_depthwise_bn_hardswish": ({"x": (4, 5, 5)}, "conv(4, 3, groups=4, padding=1)\nbatchnorm()\nhardswish()"),
    "conv_generic_bn_silu": ({"x": (1, 84, 84)}, "conv(2, 3, dilation=40)\nbatchnorm()\nsilu()"),
    "conv_transpose": ({"x": (3, 4, 4)}, "conv_transpose(4, 3, stride=2, padding=1, output_padding=1)"),
    "conv_transpose_grouped_dilated_bn_act": (
        {"x": (4, 3, 3)}, "conv_transpose(4, 3, stride=2, groups=2, dilation=2)\nbatchnorm()\nleaky_relu(0.2)"),
    "maxpool_ceil_padded": ({"x": (2, 7, 7)}, "maxpool(3, stride=2, padding=1, ceil_mode=true)"),
    "maxpool_dilated": ({"x": (2, 8, 8)}, "maxpool(2, stride=1, dilation=2)"),
    "avgpool_ceil_exclude_pad": (
        {"x": (2, 7, 7)}, "avgpool(3, stride=2, padding=1, ceil_mode=true, count_include_pad=false)"),
    "avgpool_include_pad": ({"x": (2, 6, 5)}, "avgpool(3, stride=2, padding=1)"),
    "global_avgpool": ({"x": (3, 5, 5)}, "global_avgpool()"),
    "global_maxpool": ({"x": (3, 5, 5)}, "global_maxpool()"),
    "adaptive_avgpool": ({"x": (2, 7, 5)}, "adaptive_avgpool((2, 3))"),
    "adaptive_maxpool": ({"x": (2, 7, 5)}, "adaptive_maxpool(3)"),
    "dense": ({"x": (3, 2, 2)}, "flatten()\ndense(7)"),
    "dense_no_bias": ({"x": (11,)}, "dense(9, bias=false)"),
    "batchnorm": ({"x": (3, 4, 5)}, "batchnorm(eps=1e-3)"),
    "batchnorm_fused_act": ({"x": (3, 4, 5)}, "batchnorm()\nsigmoid()"),
    "affine": ({"x": (3, 4, 5)}, "affine()"),
    "softmax_channels": ({"x": (4, 3, 2)}, "softmax()"),
    "softmax_last_axis": ({"x": (4, 3, 2)}, "softmax(axis=3)"),
    "softmax_classes": ({"x": (6,)}, "dense(5)\nsoftmax()"),
    "lrn": ({"x": (5, 3, 3)}, "lrn(3, alpha=0.1, beta=0.75, k=2)"),
    "lrn_even_size": ({"x": (5, 2, 3)}, "lrn(4, alpha=0.5)"),
    "add_same_shape_fused_act": ({"a": (3, 4, 4), "b": (3, 4, 4)}, "add(a, b)\nrelu()"),
    "add_three": ({"a": (2, 3, 3), "b": (2, 3, 3), "c": (2, 3, 3)}, "add(a, b, c)"),
    "mul_per_channel": ({"x": (3, 4, 4)}, "gate = global_avgpool(x) -> sigmoid()\nmul(x, gate)"),
    "add_per_channel_first": ({"x": (3, 4, 4)}, "m = global_maxpool(x)\nadd(m, x)"),
    "mul_scalar_per_sample": ({"x": (3, 4, 4), "s": (1, 1, 1)}, "mul(x, s)"),
    "eltwise_chain": ({"x": (3, 4, 4), "b": (3, 4, 4), "s": (1, 1, 1)},
                      "t = tanh(x)\nu = relu6(t)\ng = global_avgpool(x) -> sigmoid()\nv = mul(u, g)\nw = add(v, b)\n"
                      "z = mul(w, s)\nleaky_relu(0.1)"),
    "concat": ({"a": (2, 3, 3), "b": (3, 3, 3), "c": (1, 3, 3)}, "concat(a, b, c)"),
    "concat_of_computed_tensors": ({"x": (3, 4, 4)}, ("a = conv(x, 2, 1)\nb = relu(x)\nc = concat(a, b)\n"
                                                      "d = conv(c, 2, 1)\nconcat(c, d, x)")),
    "concat_rows": ({"a": (2, 3, 3), "b": (2, 1, 3)}, "concat(a, b, axis=2)"),
    "upsample": ({"x": (2, 3, 2)}, "upsample((2, 3))"),
    "pad_constant": ({"x": (2, 3, 4)}, "pad((1, 2, 0, 1), value=0.5)"),
    "pad_reflect": ({"x": (2, 3, 4)}, 'pad((2, 1, 2, 3), mode="reflect")'),
    "pad_replicate_crop": ({"x": (2, 3, 4)}, 'pad((-1, 2, 1, -1), mode="replicate")'),
    "yolo": ({"x": (14, 3, 4)}, "yolo([(10, 14), (23, 27)], 2, (32, 48))"),
}


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_op_matches_reference(tmp_path, case):
    inputs, body = OP_CASES[case]
    plan = compile_plan(tmp_path, inputs, body)
    if case == "concat_of_computed_tensors":  # the memory plan makes its inputs slices of its output
        assert plan["memory"].get("slices")
    if case == "eltwise_chain":  # one step: per-channel, same-shape and per-sample operands
        assert [s["op"] for s in plan["steps"]][-1] == "eltwise_chain" and len(plan["steps"][-1]["inputs"]) == 4
    assert_matches_reference(plan)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_every_activation_standalone_and_fused(tmp_path, act):
    """The elementwise kernel, and the same device function as a GEMM epilogue (dense + act)."""
    plan = compile_plan(tmp_path, {"x": (6,)}, f"a = {act}\nd = dense(a, 5) -> {act}\noutput a, d")
    assert "act" in step_of(plan, "dense")["attrs"]
    assert_matches_reference(plan)


def test_conv_planned_over_its_input_is_replanned(tmp_path):
    """The memory plan may put a 'same' convolution over its own input (the CPU's banded kernel allows it);
    the CUDA kernels read their input while storing, so the CUDA program plans that tensor apart."""
    from cnnc.runtime.cuda_program import CudaProgram

    # (plain layout: the CPU plan puts only plain convolutions over their input)
    plan = compile_plan(tmp_path, {"x": (3, 6, 7)}, "a = conv(x, 4, 3, padding=1)\nconv(a, 4, 3, padding=1)",
                        disabled=("layout",))
    second = plan["steps"][1]
    assert plan["memory"]["in_place"].get(second["output"]) == second["inputs"][0]
    prog = CudaProgram(plan, seeded_fixture_weights(plan["constants"]))
    assert prog.root[second["output"]] != prog.root[second["inputs"][0]]
    assert_matches_reference(plan)


def test_conv_strategies_are_the_ones_the_cases_name(tmp_path):
    """The strategy cases above reach the kernel they are named after."""
    from cnnc.runtime.cuda_program import CudaProgram

    launched = []
    for case in ("conv_direct", "conv_pointwise", "conv_depthwise", "conv_generic_window_too_large_to_stage"):
        plan = compile_plan(tmp_path, *OP_CASES[case])
        prog = CudaProgram(plan, seeded_fixture_weights(plan["constants"]))
        prog._launch = lambda name, *args, _l=launched: _l.append(name)
        prog.run(feeds(plan))
    assert launched == ["conv2d_direct", "gemm", "conv2d_depthwise", "conv2d_generic"]


# ---- fusions the compiler may not produce yet, and in-place placements, by editing plans -----------

def _private_memory(plan: dict, alias: dict[str, str]) -> dict:
    """A memory plan with a region per tensor, except `alias` (tensor -> the tensor whose storage it takes)."""
    offsets, cursor = {}, 0
    for step in plan["steps"]:
        t = step["output"]
        if t in alias:
            offsets[t] = offsets[alias[t]]
            continue
        offsets[t] = cursor
        cursor += -(-math.prod(plan["tensors"][t]) // 16) * 16
    return {"views": {}, "offsets": offsets, "per_sample": cursor, "no_reuse": cursor}


@pytest.mark.parametrize("kind", ["direct", "pointwise", "depthwise", "generic"])
def test_residual_conv_in_place(tmp_path, kind):
    """act(bn(conv(x)) + r) with the output placed on the residual's own buffer."""
    conv, shape = {
        "direct": ("conv(6, 3, padding=1, bias=false)", (4, 5, 5)),
        "pointwise": ("conv(6, 1)", (4, 5, 5)),
        "depthwise": ("conv(6, 3, groups=6, padding=1)", (6, 5, 5)),
        "generic": ("conv(6, 3, dilation=40, padding=40)", (1, 5, 5)),
    }[kind]
    plan = compile_plan(tmp_path, {"x": shape, "r": (6, 5, 5)},
                        f"skip = clip(r)\ny = conv(x, {conv[5:]}\nbn = batchnorm()\nz = add(bn, skip)\nrelu()",
                        ("fuse_elementwise",))  # (else the clip, the add and the relu become one chain)
    conv_step = step_of(plan, "conv")
    add_step = next((s for s in plan["steps"] if s["op"] == "add"), None)
    if add_step is not None:  # fold the add into the conv by hand, as the residual fusion does
        assert "bn_eps" in conv_step["attrs"] and "act" in add_step["attrs"] and "act" not in conv_step["attrs"]
        conv_step["inputs"] = [conv_step["inputs"][0], "skip"]
        conv_step["attrs"] = {**conv_step["attrs"], "residual": True, "act": add_step["attrs"]["act"]}
        conv_step["output"] = add_step["output"]
        plan["steps"].remove(add_step)
    assert conv_step["attrs"].get("residual") and conv_step["inputs"][1] == "skip"
    plan["memory"] = _private_memory(plan, {conv_step["output"]: "skip"})
    assert_matches_reference(plan)


@pytest.mark.parametrize("body, aliased", [
    ("t = clip(x)\ny = relu(t)", "t"),
    ("t = clip(x)\ny = batchnorm(t)\nrelu()", "t"),
    ("t = clip(x)\nu = clip(x, max=0.1)\ny = add(t, u)\nrelu()", "t"),
    ("t = clip(x)\nu = clip(x, max=0.1)\ny = add(t, u)", "u"),
    ("t = clip(x)\ng = global_avgpool(t)\ny = mul(t, g)", "t"),
    ("t = clip(x)\nu = clip(x, min=0.1)\nv = clip(x, max=0.2)\ny = add(t, u, v)", "v"),
    ("t = clip(x)\ny = softmax(t)", "t"),
    ("t = clip(x)\ng = global_avgpool(t)\nu = tanh(t)\ny = mul(u, g)", "t"),  # a chain over its first input
])
def test_elementwise_in_place(tmp_path, body, aliased):
    """Elementwise steps whose output is one of their inputs' buffers (as the memory planner may place them);
    the single ops unchained, but the last case."""
    chain = "tanh(t)" in body
    plan = compile_plan(tmp_path, {"x": (3, 4, 4)}, body + "\noutput y", () if chain else ("fuse_elementwise",))
    assert (plan["steps"][-1]["op"] == "eltwise_chain") == chain
    last = plan["steps"][-1]["output"]
    plan["memory"] = _private_memory(plan, {last: aliased})
    assert_matches_reference(plan)


def test_production_geometry(tmp_path, monkeypatch):
    """The launch shapes used on a GPU (bigger blocks, no channel-chunk cap) on shapes that keep them small."""
    from cnnc.runtime.cuda import _common
    monkeypatch.setattr(_common, "SIMULATOR", False)
    plan = compile_plan(tmp_path, {"x": (3, 4, 8)}, "a = conv(x, 8, 3, padding=1)\nb = conv(a, 8, 1)\n"
                        "c = conv(b, 8, 3, groups=8, padding=1)\nd = global_avgpool(c)\nflatten()\ndense(3)")
    assert_matches_reference(plan)


# ---- whole networks through the public API ----------------------------------------------------------

TINY_RESNET = """
import "blocks/resnet.cnn"
network tiny_resnet() {
    input x: (N, 3, 8, 8)
    conv1 = conv(4, 3, padding=1, bias=false)
    bn1 = batchnorm()
    relu()
    layer1 = basic(4)
    layer2 = basic(8, stride=2)
    global_avgpool()
    flatten()
    fc = dense(5)
}
"""


# A MobileNet/EfficientNet-style chain: the CPU stores it channel-blocked (the layout pass) and writes the
# concat's inputs in place; this target keeps every tensor plain and must re-plan its arena accordingly.
TINY_MBCONV = """
network tiny_mbconv() {
    input x: (N, 3, 8, 8)
    stem = conv(x, 16, 3, stride=2, padding=1) -> silu()
    dw = conv(stem, 16, 3, padding=1, groups=16) -> silu()
    s = global_avgpool(dw) -> conv(4, 1) -> silu() -> conv(16, 1) -> sigmoid()
    se = mul(dw, s)
    p = conv(se, 8, 1)
    q = conv(x, 8, 3, stride=2, padding=1)
    c = concat(p, q)
    output y = c
}
"""


@pytest.mark.parametrize("spec", ["lenet5", "tiny_resnet", "tiny_mbconv"])
def test_network_end_to_end(tmp_path, spec):
    if spec == "lenet5":
        path = SPECS / "lenet5.cnn"
    else:
        path = tmp_path / f"{spec}.cnn"
        path.write_text({"tiny_resnet": TINY_RESNET, "tiny_mbconv": TINY_MBCONV}[spec])
    gpu = cnnc.load(str(path), target="cuda")
    ref = cnnc.load(str(path), target="reference")
    x = np.random.default_rng(3).standard_normal((BATCH, *gpu.inputs["x"])).astype(np.float32)
    got, want = gpu.run({"x": x}), ref.run({"x": x})
    if spec == "tiny_mbconv":  # the plan does carry a blocked chain and concat slices
        assert any(s["attrs"].get("layout") for s in gpu.plan["steps"]) and gpu.plan["memory"]["slices"]
    for name in want:
        assert np.max(np.abs(got[name] - want[name])) <= 1e-4 * np.max(np.abs(want[name])), name
    again = gpu.run({"x": x[:1]})  # a second batch size re-plans the buffers; results do not depend on it
    for name in want:
        assert np.max(np.abs(again[name] - want[name][:1])) <= 1e-4 * np.max(np.abs(want[name])), name


def test_profile_lists_every_kernel_step(tmp_path):
    plan = compile_plan(tmp_path, *OP_CASES["dense"])
    prof: list = []
    Program(plan, seeded_fixture_weights(plan["constants"]), target="cuda").cuda.run(feeds(plan), profile=prof)
    assert [i for i, _ in prof] == [i for i, s in enumerate(plan["steps"]) if s["op"] != "flatten"]
    assert all(t >= 0 for _, t in prof)


def test_launch_arguments_are_checked_against_the_declared_signature():
    from cnnc.runtime.cuda import KERNELS
    from numba import cuda
    x = cuda.to_device(np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="argument 2"):
        KERNELS["activation"].launch(1, 1, 0, x, x, 4.0, 0, 0.0, 0.0)


def test_unknown_op_is_a_plan_error(tmp_path):
    from cnnc.runtime.executor import PlanError
    plan = compile_plan(tmp_path, {"x": (2, 2, 2)}, "relu()")
    plan = copy.deepcopy(plan)
    plan["steps"][0]["op"] = "no_such_op"
    with pytest.raises(PlanError, match="no_such_op"):
        Program(plan, {}, target="cuda")
