"""The CPU target as a whole: memory planning, determinism, threads and batch independence."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnc import plan as plan_mod
from cnnc.compiler import compile_spec
from cnnc.runtime.executor import Program
from cnnc.runtime.memory import Interval, plan_arena, plan_memory
from cnnc.weights import seeded_fixture_weights
from conftest import MODELS, SPECS, zoo_meta


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 500), st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=40))
def test_arena_never_overlaps_live_tensors(spec):
    ivs = [Interval(f"t{i}", size, min(a, b), max(a, b)) for i, (size, a, b) in enumerate(spec)]
    offsets, total = plan_arena(ivs)
    for i, x in enumerate(ivs):
        assert offsets[x.name] % 16 == 0 and offsets[x.name] + x.size <= total
        for y in ivs[i + 1:]:
            live_together = not (x.last < y.first or y.last < x.first)
            apart = offsets[x.name] + x.size <= offsets[y.name] or offsets[y.name] + y.size <= offsets[x.name]
            assert apart or not live_together
    assert total <= sum(-(-iv.size // 16) * 16 for iv in ivs)


def _program(model, threads=None):
    g = compile_spec(str(SPECS / f"{model}.cnn")).graph
    plan = plan_mod.from_graph(g)
    return plan, Program(plan, seeded_fixture_weights(plan["constants"]), target="cpu", threads=threads)


def _agree(model, key, y, ref):
    """The fixtures' agreement rule (the YOLO rule for its decoded boxes)."""
    if model == "yolov3_tiny" and key == "output":
        return np.all(np.abs(y - ref) <= 1e-3 * np.abs(ref) + 1e-3)
    return np.max(np.abs(y - ref)) <= 1e-4 * np.max(np.abs(ref))


@pytest.mark.parametrize("model", MODELS)
def test_bitwise_deterministic_batch_independent_and_thread_counts_agree(model):
    """Per model: the same run twice is bitwise identical; batch 1 run twice equals batch 2 run once;
    1 and 2 threads agree (by the fixtures' agreement rule)."""
    plan, two = _program(model, threads=2)
    _, one = _program(model, threads=1)
    name = plan["inputs"][0]["name"]
    x = np.random.default_rng(7).standard_normal((2, *zoo_meta(model)["input_shape"][1:])).astype(np.float32)
    a = two.run({name: x})
    b = two.run({name: x})
    singles = [two.run({name: x[i:i + 1]}) for i in range(2)]
    threads1 = one.run({name: x})
    for k in a:
        assert np.array_equal(a[k], b[k]), k
        assert _agree(model, k, np.concatenate([s[k] for s in singles]), a[k]), k
        assert _agree(model, k, threads1[k], a[k]), k


@pytest.mark.parametrize("model", ["googlenet", "densenet121", "resnet50"])
def test_arena_is_the_most_ever_alive_at_once(model, monkeypatch):
    """The arena of a library model is as small as any can be: the largest sum of (aligned) tensor sizes
    alive at one step, counted here step by step from the planned lifetimes. (Largest-first placement alone
    left GoogLeNet 3.88 MB per sample for 3.83 and DenseNet-121 7.77 for 7.38.)"""
    from cnnc.runtime import memory
    seen = {}
    place = memory.plan_arena

    def spy(intervals, align=16):
        seen["intervals"] = intervals
        return place(intervals, align)
    monkeypatch.setattr(memory, "plan_arena", spy)
    plan = plan_mod.from_graph(compile_spec(str(SPECS / f"{model}.cnn")).graph)
    arena = plan_memory(plan)["per_sample"]
    ivs = seen["intervals"]
    steps = range(min(iv.first for iv in ivs), max(iv.last for iv in ivs) + 1)
    most = max(sum(-(-iv.size // 16) * 16 for iv in ivs if iv.first <= s <= iv.last) for s in steps)
    assert arena == most


def test_arena_is_smaller_than_no_reuse():
    _, prog = _program("densenet121")
    assert prog.cpu.arena_per_sample * 10 < prog.cpu.no_reuse_per_sample


CONV_OVER_INPUT = """\
network over() {
    input x: (N, 3, 20, 24)
    a = conv(x, 16, 3, padding=1)
    b = conv(a, 16, 3, padding=1)             # a dies here: b is written over it
    c = conv(b, 16, 3, padding=1)             # b is read again below: not over it
    d = conv(c, 16, 3, stride=2, padding=1)   # stride 2: a smaller output
    e = conv(d, 32, 3, padding=1)             # more channels
    f = conv(e, 32, 1)
    b2 = conv(b, 32, 1, stride=2)
    g = add(f, b2)
    output y = g
}
"""


def test_convolutions_written_over_their_input(write_spec):
    """The memory plan puts a stride-1 'same' convolution over its input where that input dies, and only there;
    the CPU program then computes the same values as the reference target, batch 1 and 3."""
    from cnnc.runtime.memory import banded_in_place

    # (plain layout: blocked tensors are never written over by a convolution that reads them)
    plan = plan_mod.from_graph(compile_spec(write_spec(CONV_OVER_INPUT), disabled=("layout",)).graph)
    in_place = plan["memory"]["in_place"]
    over = {s["name"] for s in plan["steps"] if s["op"] == "conv" and in_place.get(s["output"]) == s["inputs"][0]}
    assert over == {"b"}
    shapes = plan["tensors"]
    assert [s["name"] for s in plan["steps"] if banded_in_place(s, shapes)] == ["b", "c"]  # c's input lives on
    w = seeded_fixture_weights(plan["constants"])
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 3, 20, 24)).astype(np.float32)
        ref = Program(plan, w).run({"x": x})["y"]
        out = Program(plan, w, target="cpu").run({"x": x})["y"]
        assert np.max(np.abs(out - ref)) <= 1e-4 * np.max(np.abs(ref))


def test_vgg_arena_shrinks_with_convolutions_over_their_input():
    # plain layout (a blocked convolution reads its input's halo in place and is never planned over its input;
    # with the layout pass VGG's arena is 25.9 MB per sample)
    plan = plan_mod.from_graph(compile_spec(str(SPECS / "vgg16.cnn"), disabled=("layout",)).graph)
    # without the Winograd workspaces (whose convolutions are kept off their input): 16.1 vs 25.7 MB per sample
    with_over = plan_memory(plan, workspaces=False)["per_sample"]
    without = plan_memory(plan, workspaces=False, conv_in_place=False)["per_sample"]
    assert with_over * 3 < without * 2
    # with them the direct layers still write over their inputs: 20.2 MB
    assert plan_memory(plan)["per_sample"] * 5 < without * 4


def test_read_only_and_non_contiguous_inputs():
    plan, prog = _program("lenet5")
    x = np.random.default_rng(0).standard_normal((32, 32, 4, 1)).astype(np.float32).transpose(2, 3, 0, 1)
    x.flags.writeable = False
    y = prog.run({"x": x})["output"]
    ref = Program(plan, seeded_fixture_weights(plan["constants"])).run({"x": np.ascontiguousarray(x)})["output"]
    assert np.max(np.abs(y - ref)) <= 1e-5 * np.max(np.abs(ref))


CONCAT_EDGE_CASES = """\
network concats() {
    input x: (N, 4, 6, 6)
    a = conv(x, 8, 3, padding=1)
    b = conv(x, 4, 1)
    c1 = concat(a, b)                   # b written in place (a is copied: see below)
    c2 = concat(x, c1)                  # the network input is copied
    f = flatten(a)                      # a is read through a view: never placed
    c3 = concat(a, c2, a)               # a repeated input is copied; c2 lives inside c3
    d = conv(c3, 8, 1)
    up = conv_transpose(d, 4, 2, stride=2)
    s = conv(d, 4, 1) -> upsample(2)
    c4 = concat(up, s)                  # the transposed convolution and the upsample written in place
    output y = c4, f
}
"""


def _cpu_and_copying(path_or_model, seed=3):
    spec = str(SPECS / f"{path_or_model}.cnn") if "/" not in str(path_or_model) else path_or_model
    plan = plan_mod.from_graph(compile_spec(spec).graph)
    w = seeded_fixture_weights(plan["constants"])
    copying = dict(plan, memory=plan_memory(plan, concat_in_place=False))
    return plan, Program(plan, w, target="cpu"), Program(copying, w, target="cpu"), Program(plan, w)


@pytest.mark.parametrize("model", ["densenet121", "googlenet", "unet", "yolov3_tiny"])
def test_concat_without_copies_on_the_library(model):
    """Every channel concat of DenseNet (whole dense blocks in one buffer), GoogLeNet (inception branches),
    U-Net (the transposed convolution and the skip) and YOLO (the route: upsample and skip) becomes a no-op
    at any batch size: they are all channel-blocked, and over one sample the kernels step over the rest of
    the buffer from sample to sample. Outputs are bitwise those of the copying plan, at batch 1 and 3."""
    plan, sliced, copying, _ = _cpu_and_copying(model)
    concats = [i for i, s in enumerate(plan["steps"]) if s["op"] == "concat"
               and len(plan["tensors"][s["output"]]) == 3]  # (not YOLO's concat of the detections)
    assert concats and all(sliced.cpu.runners[i] is None for i in concats)
    assert all(sliced.cpu.copying_runners[i] is None for i in concats)
    name = plan["inputs"][0]["name"]
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, *zoo_meta(model)["input_shape"][1:])).astype(np.float32)
        a, b = sliced.run({name: x}), copying.run({name: x})
        assert all(np.array_equal(a[k], b[k]) for k in a)


def _assert_agree_with_reference(programs, reference, x) -> None:
    ref = reference.run({"x": x})
    for prog in programs:
        out = prog.run({"x": x})
        for k in ref:
            assert np.max(np.abs(out[k] - ref[k])) <= 1e-5 * np.max(np.abs(ref[k])), (len(x), k)


def test_concat_slices_edge_cases(write_spec):
    plan, sliced, copying, reference = _cpu_and_copying(write_spec(CONCAT_EDGE_CASES))
    slices = {t: tuple(v) for t, v in plan["memory"]["slices"].items()}
    # nested: c2 and c1 are themselves written into c3, so b lands in c3 too
    assert slices == {"c2": ("c3", 8), "c1": ("c3", 12), "b": ("c3", 20), "up": ("c4", 0), "upsample#1": ("c4", 4)}
    for n in (1, 2):
        x = np.random.default_rng(n).standard_normal((n, 4, 6, 6)).astype(np.float32)
        _assert_agree_with_reference((sliced, copying), reference, x)


def test_blocked_concat_slices(write_spec):
    """Channel-blocked concatenations (the layout pass's) hold their inputs as runs of whole blocks, written in
    place (an input already placed in a later concat is copied, by blocks) at batch 1 and at batch 2, where
    the kernels step over the rest of the buffer from sample to sample; the plan that copies every concat
    agrees."""
    from test_passes import BLOCKED_CONCATS
    plan, sliced, copying, reference = _cpu_and_copying(write_spec(BLOCKED_CONCATS))
    slices = {t: tuple(v) for t, v in plan["memory"]["slices"].items()}
    assert {t: v for t, v in slices.items() if v[0] != "cat4"} == {
        "a": ("cat", 0), "p": ("cat", 48), "c": ("cat2", 0), "d": ("cat2", 32), "b": ("cat2", 48),
        "e": ("cat3", 0), "f": ("cat3", 16)}
    runners = {s["output"]: r for s, r in zip(plan["steps"], sliced.cpu.runners)}
    assert runners["cat"] is not None and runners["cat2"] is None and runners["cat3"] is None
    for n in (1, 2):
        x = np.random.default_rng(n).standard_normal((n, 3, 20, 20)).astype(np.float32)
        _assert_agree_with_reference((sliced, copying), reference, x)


def test_squeeze_excitation_has_no_full_size_temporaries():
    """EfficientNet's SE blocks: pool -> 1x1 conv + silu -> 1x1 conv + sigmoid (activations fused, the convs
    run as matrix-vector products) -> channel multiply written over the features it scales."""
    plan = plan_mod.from_graph(compile_spec(str(SPECS / "efficientnet_b0.cnn")).graph)
    shapes = plan["tensors"]
    se_muls = [s for s in plan["steps"] if s["op"] == "mul"
               and sorted(shapes[t][1:] == [1, 1] for t in s["inputs"]) == [False, True]]
    assert len(se_muls) == 16
    for s in se_muls:
        full = next(t for t in s["inputs"] if shapes[t][1:] != [1, 1])
        assert plan["memory"]["in_place"][s["output"]] == plan["memory"]["in_place"].get(full, full)
    assert not any(s["op"] in ("sigmoid", "silu") for s in plan["steps"])


def test_denormals_are_flushed_in_the_kernels_only(write_spec):
    """Inside a CPU run, denormal results and inputs are zero (FTZ/DAZ); the caller's numpy keeps IEEE
    denormals after the run."""
    import platform

    import cnnc
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("FTZ/DAZ are x86-64 flags")
    path = write_spec("network n() {\n input x: (N, 2, 1, 1)\n y = conv(x, 2, 1, bias=false)\n output y\n}\n")
    weights = {"y.weight": np.eye(2, dtype=np.float32).reshape(2, 2, 1, 1)}
    x = np.array([1e-39, 0.5], np.float32).reshape(1, 2, 1, 1)
    assert cnnc.load(path, weights=weights, target="reference").run({"x": x})["y"][0, 0, 0, 0] == np.float32(1e-39)
    y = cnnc.load(path, weights=weights).run({"x": x})["y"]
    assert y[0, 0, 0, 0] == 0.0 and y[0, 1, 0, 0] == np.float32(0.5)
    assert np.float32(1e-39) * np.float32(1.0) != 0.0  # this thread's flags were restored
