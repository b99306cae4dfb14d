"""The CPU target as a whole: memory planning, determinism, threads and batch independence."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnc import plan as plan_mod
from cnnc.compiler import compile_spec
from cnnc.runtime.executor import Program
from cnnc.runtime.memory import Interval, plan_arena
from cnnc.weights import seeded_fixture_weights
from conftest import SPECS


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


@pytest.mark.parametrize("model", ["resnet18", "mobilenet_v2", "googlenet"])
def test_bitwise_deterministic_and_batch_independent(model):
    plan, prog = _program(model)
    name = plan["inputs"][0]["name"]
    x = np.random.default_rng(7).standard_normal((3, *plan["inputs"][0]["shape"])).astype(np.float32)
    a = prog.run({name: x})["output"]
    b = prog.run({name: x})["output"]
    assert np.array_equal(a, b)  # same thread count: bitwise identical
    singles = np.concatenate([prog.run({name: x[i:i + 1]})["output"] for i in range(3)])
    assert np.max(np.abs(singles - a)) <= 1e-4 * np.max(np.abs(a))  # batch 1 three times == batch 3 once


def test_thread_counts_agree():
    plan, one = _program("resnet18", threads=1)
    _, two = _program("resnet18", threads=2)
    x = np.random.default_rng(3).standard_normal((2, 3, 224, 224)).astype(np.float32)
    a, b = one.run({"x": x})["output"], two.run({"x": x})["output"]
    assert np.max(np.abs(a - b)) <= 1e-4 * np.max(np.abs(a))
    assert np.array_equal(a, one.run({"x": x})["output"])


def test_arena_is_smaller_than_no_reuse():
    _, prog = _program("densenet121")
    assert prog.cpu.arena_per_sample * 10 < prog.cpu.no_reuse_per_sample


def test_read_only_and_non_contiguous_inputs():
    plan, prog = _program("lenet5")
    x = np.random.default_rng(0).standard_normal((32, 32, 4, 1)).astype(np.float32).transpose(2, 3, 0, 1)
    x.flags.writeable = False
    y = prog.run({"x": x})["output"]
    ref = Program(plan, seeded_fixture_weights(plan["constants"])).run({"x": np.ascontiguousarray(x)})["output"]
    assert np.max(np.abs(y - ref)) <= 1e-5 * np.max(np.abs(ref))
