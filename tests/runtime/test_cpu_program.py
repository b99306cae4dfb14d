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
