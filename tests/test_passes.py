"""The pass manager and each pass: what it changes (snapshots), where it must not fire, and that the
network computes the same function with the pass on and off."""

import numpy as np
import pytest

from cnnc import plan as plan_mod
from cnnc.compiler import build_graph, compile_spec
from cnnc.errors import CnncError
from cnnc.passes import PASS_NAMES, PassContext, dce, infer_shapes, run_pipeline, verify
from cnnc.runtime.executor import Program
from cnnc.weights import initialise
from conftest import MODELS, SPECS, check_snapshot

DEAD_BRANCH = """\
network dead() {
    input x: (N, 3, 8, 8)
    a = conv(4, 3, padding=1)
    unused = conv(a, 2, 1)        # feeds nothing
    relu(a)
    b = maxpool(2)
    also_unused = relu(b)
    output y = b
}
"""


def test_pipeline_names():
    assert PASS_NAMES == ["expand", "infer_shapes", "dce"]


def test_dce_removes_dead_layers_and_their_weights(write_spec):
    g, _ = build_graph(write_spec(DEAD_BRANCH))
    before = g.dump()
    ctx = PassContext()
    assert dce.run(g, ctx) is True
    verify.run(g, "dce")
    assert "unused" not in g.g and "also_unused" not in g.g
    assert "unused.weight" not in g.constants and "a.weight" in g.constants
    assert [w.code for w in ctx.warnings] == ["W101"]  # only the dead layer with weights is reported
    check_snapshot("dce_dead_branch.txt", before + "--- after dce ---\n" + g.dump())


@pytest.mark.parametrize("model", MODELS)
def test_dce_does_not_fire_on_the_library(model):
    g, _ = build_graph(str(SPECS / f"{model}.cnn"))
    n = g.g.number_of_nodes()
    assert dce.run(g, PassContext()) is False
    assert g.g.number_of_nodes() == n


def test_dce_keeps_outputs_computing_the_same_function(write_spec):
    path = write_spec(DEAD_BRANCH)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    outs = []
    for disabled in ((), ("dce",)):
        plan = plan_mod.from_graph(compile_spec(path, disabled=disabled).graph)
        w = initialise(plan["constants"], seed=3)
        outs.append(Program(plan, w).run({"x": x})["y"])
    assert np.array_equal(outs[0], outs[1])


def test_infer_shapes_is_a_no_op_on_a_fresh_graph():
    g, _ = build_graph(str(SPECS / "resnet18.cnn"))
    assert infer_shapes.run(g, PassContext()) is False


def test_infer_shapes_recomputes_after_a_rewrite(write_spec):
    g, _ = build_graph(write_spec("network n() {\n input x: (N, 3, 16, 16)\n c = conv(4, 3)\n p = maxpool(2)\n}\n"))
    g.node("c")["attrs"]["stride"] = (2, 2)  # a pass rewrote the conv
    assert infer_shapes.run(g, PassContext()) is True
    assert g.node("c")["shape"] == (4, 7, 7) and g.node("p")["shape"] == (4, 3, 3)


def test_infer_shapes_reports_broken_parameters(write_spec):
    g, _ = build_graph(write_spec("network n() {\n input x: (N, 3, 16, 16)\n c = conv(4, 3)\n}\n"))
    g.constants["c.weight"].shape = (4, 2, 3, 3)
    with pytest.raises(CnncError) as e:
        infer_shapes.run(g, PassContext())
    assert e.value.diagnostics[0].span.line == 3


def test_verifier_catches_broken_graphs(write_spec):
    path = write_spec("network n() {\n input x: (N, 3, 8, 8)\n a = relu()\n b = relu()\n}\n")
    g, _ = build_graph(path)
    g.g.add_edge("b", "a", key=1)  # a cycle that bypasses the inputs list
    with pytest.raises(verify.VerifyError, match="cycle"):
        verify.run(g, "test")
    g, _ = build_graph(path)
    g.node("b")["inputs"] = ["x"]  # inputs list disagrees with the edges
    with pytest.raises(verify.VerifyError, match="disagree"):
        verify.run(g, "test")
    g, _ = build_graph(path)
    g.node("a")["shape"] = None
    with pytest.raises(verify.VerifyError, match="no shape"):
        verify.run(g, "test")


def test_stop_after_and_levels(write_spec):
    path = write_spec(DEAD_BRANCH)
    assert "unused" in compile_spec(path, stop_after="expand").graph.g
    assert "unused" in compile_spec(path, opt_level=0).graph.g  # dce is an -O1 pass
    assert "unused" not in compile_spec(path).graph.g
    with pytest.raises(CnncError, match="unknown pass"):
        compile_spec(path, disabled=("fold",))
    with pytest.raises(CnncError, match="required"):
        compile_spec(path, disabled=("infer_shapes",))


def test_pipeline_records_timings(write_spec):
    g, _ = build_graph(write_spec(DEAD_BRANCH))
    ctx = PassContext()
    run_pipeline(g, ctx)
    assert set(ctx.timings) == {"infer_shapes", "dce"}
