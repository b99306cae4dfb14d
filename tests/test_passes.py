"""The pass manager and each pass: what it changes (snapshots), where it must not fire, and that the
network computes the same function with the pass on and off."""

import importlib

import numpy as np
import pytest

from cnnc import plan as plan_mod
from cnnc.compiler import build_graph, compile_spec
from cnnc.errors import CnncError
from cnnc.passes import PASS_NAMES, PIPELINE, PassContext, dce, infer_shapes, run_pipeline, verify
from cnnc.passes.memory import OPTIONS as MEMORY_OPTIONS
from cnnc.runtime.executor import Program
from cnnc.weights import initialise, seeded_fixture_weights
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
    assert PASS_NAMES == ["expand", "infer_shapes", "dce", "drop_identities", "fold_batchnorm", "fuse_activation",
                          "pool_first", "fuse_residual", "fuse_elementwise", "layout", "memory", "concat_in_place",
                          "in_place"]


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


IDENTITIES = """\
network identities() {
    input x: (N, 4, 6, 6)
    a = conv(x, 8, 3, padding=1)
    d = dropout(a, 0.3)
    r = relu(d)                         # fused into a once the dropout is gone
    p = adaptive_avgpool(r, 6)          # 6x6 -> 6x6: removed
    q = adaptive_avgpool(p, 3)          # kept: it pools
    i = identity(x)                     # kept: a network output that is the network input
    o = dropout(q)                      # removed: the output is q
    z = identity(q)                     # kept: q is an output now (outputs stay distinct tensors)
    output y = o, i, z
}
"""


def _pass_applied(name: str, path: str, **compile_args):
    """A spec compiled up to a pass (`compile_args`: `stop_after` or `disabled`), then pass `name` run on it, which
    must change the graph and leave it valid: (the graph, its dump before the pass)."""
    graph = compile_spec(path, **compile_args).graph
    before = graph.dump()
    assert importlib.import_module(f"cnnc.passes.{name}").run(graph, PassContext()) is True
    verify.run(graph, name)
    return graph, before


def _check_pass_snapshot(name: str, snapshot: str, graph, before: str) -> None:
    """The graph before and after pass `name` against `snapshot`; a second run of the pass changes nothing."""
    check_snapshot(snapshot, before + f"--- after {name} ---\n" + graph.dump())
    assert importlib.import_module(f"cnnc.passes.{name}").run(graph, PassContext()) is False


def test_drop_identities_snapshot_and_where_it_must_not_fire(write_spec):
    path = write_spec(IDENTITIES)
    graph, before = _pass_applied("drop_identities", path, stop_after="dce")
    assert {graph.node(n)["op"] for n in graph.op_nodes()} == {"conv", "relu", "adaptive_avgpool", "identity"}
    assert graph.node("r")["inputs"] == ["a"] and graph.node("q")["inputs"] == ["r"]
    assert graph.outputs == {"y": "q", "i": "i", "z": "z"}
    _check_pass_snapshot("drop_identities", "drop_identities.txt", graph, before)
    fused = compile_spec(path).graph
    assert fused.node("a")["attrs"]["act"][0] == "relu" and "r" not in fused.g  # the relu fused into the conv
    plans = [plan_mod.from_graph(compile_spec(path, disabled=d).graph) for d in ((), ("drop_identities",))]
    w = seeded_fixture_weights(plans[1]["constants"])
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32)
    ref = Program(plans[1], w).run({"x": x})
    for target in ("reference", "cpu"):
        out = Program(plans[0], w, target=target).run({"x": x})
        for k in ref:
            assert np.max(np.abs(out[k] - ref[k])) <= 1e-5 * max(1.0, np.max(np.abs(ref[k]))), (target, k)


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
    assert set(ctx.timings) == {"infer_shapes", "dce", "drop_identities", "fold_batchnorm", "fuse_activation",
                                "pool_first", "fuse_residual", "fuse_elementwise", "layout", "memory"}


FUSABLE = """\
network fusable() {
    input x: (N, 3, 16, 16)
    a = conv(8, 3, padding=1, bias=false)
    bn_a = batchnorm()
    relu()                              # conv + batchnorm + relu -> one conv
    two = conv(8, 1)
    side = relu(two)                    # the conv has a second user: its batchnorm stays
    bn_two = batchnorm(two)
    left = relu(bn_two)                 # bn_two has two users: no activation fused into it
    right = sigmoid(bn_two)
    s = add(left, right, side)
    s6 = relu6()                        # add + relu6 -> one add
    p = maxpool(s6, 2)
    pr = relu(p)                        # relu after a pool: stays
    after_relu = batchnorm(pr)          # batchnorm after a relu: stays
    d = flatten(after_relu) -> dense(5) -> tanh()
    output d, pr
}
"""


def test_fusion_passes_snapshot_and_where_they_must_not_fire(write_spec):
    from cnnc.passes import fold_batchnorm, fuse_activation
    g, _ = build_graph(write_spec(FUSABLE))
    before = g.dump()
    ctx = PassContext()
    assert fold_batchnorm.run(g, ctx) is True
    verify.run(g, "fold_batchnorm")
    assert "bn_a" not in g.g and g.node("a")["attrs"]["bn_eps"] == 1e-5
    assert g.constants["bn_a.weight"].owner == "a"  # weight names unchanged: weight files still match
    assert "bn_two" in g.g and "after_relu" in g.g  # two users; follows a relu
    after_fold = g.dump()
    assert fuse_activation.run(g, ctx) is True
    verify.run(g, "fuse_activation")
    assert g.node("a")["attrs"]["act"] == ("relu", ())
    assert g.node("s")["attrs"]["act"] == ("relu6", ())
    assert "left" in g.g and "right" in g.g and "side" in g.g  # bn_two and two have two users
    assert g.node("p")["op"] == "maxpool" and "act" not in g.node("p")["attrs"] and "pr" in g.g
    check_snapshot("fusion_passes.txt", before + "--- after fold_batchnorm ---\n" + after_fold
                   + "--- after fuse_activation ---\n" + g.dump())
    assert fold_batchnorm.run(g, ctx) is False and fuse_activation.run(g, ctx) is False


def test_fused_graph_computes_the_same_function(write_spec):
    path = write_spec(FUSABLE)
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    outs = {}
    for label, disabled, target in (("plain", ("fold_batchnorm", "fuse_activation"), "reference"),
                                    ("fused-ref", (), "reference"), ("fused-cpu", (), "cpu")):
        plan = plan_mod.from_graph(compile_spec(path, disabled=disabled).graph)
        w = initialise(plan["constants"], seed=5)
        for c in plan["constants"]:
            if c["name"].endswith(("running_mean", "running_var", "bias")):
                w[c["name"]] = np.random.default_rng(len(c["name"])).uniform(0.5, 1.5, c["shape"]).astype(np.float32)
        outs[label] = Program(plan, w, target=target).run({"x": x})
    for label in ("fused-ref", "fused-cpu"):
        for k, ref in outs["plain"].items():
            assert np.max(np.abs(outs[label][k] - ref)) <= 1e-5 * max(1.0, np.max(np.abs(ref))), (label, k)


OPTIMISING_PASSES = [p.name for p in PIPELINE if not p.required] + list(MEMORY_OPTIONS)
# Where each pass changes a library model's graph or memory plan: what the architectures hold (dropout; batchnorm
# after a convolution; activations; an average pool after a pointwise convolution, DenseNet's transitions; residual
# adds, which the convolutions they are fused into write over the skip; convolutions, all of which the layout pass
# gives their layouts; channel concatenations).
FIRES = {
    "lenet5": {"fuse_activation", "layout"},
    "alexnet": {"drop_identities", "fuse_activation", "layout"},
    "vgg16": {"drop_identities", "fuse_activation", "layout"},
    "googlenet": {"drop_identities", "fold_batchnorm", "fuse_activation", "layout", "concat_in_place"},
    "resnet18": {"fold_batchnorm", "fuse_activation", "fuse_residual", "layout", "in_place"},
    "resnet50": {"fold_batchnorm", "fuse_activation", "fuse_residual", "layout", "in_place"},
    "densenet121": {"fold_batchnorm", "fuse_activation", "pool_first", "layout", "concat_in_place"},
    "mobilenet_v2": {"drop_identities", "fold_batchnorm", "fuse_activation", "fuse_residual", "layout",
                     "in_place"},
    "efficientnet_b0": {"drop_identities", "fold_batchnorm", "fuse_activation", "fuse_residual", "layout",
                        "in_place"},
    "yolov3_tiny": {"fold_batchnorm", "fuse_activation", "layout", "concat_in_place"},
    "unet": {"fold_batchnorm", "fuse_activation", "layout", "concat_in_place"},
    "dcgan_generator": {"fold_batchnorm", "fuse_activation", "layout"},
    "dcgan_discriminator": {"fold_batchnorm", "fuse_activation", "layout"},
}


def test_every_pass_fires_somewhere_in_the_library():
    """Each optimising pass is tested on and off on some library model below, but `dce` and `fuse_elementwise`:
    the library has no dead layers (`test_dce_does_not_fire_on_the_library`) and, once activations are fused
    into the layers before them, no chains of elementwise ops; their equivalence is tested on specs that have
    some."""
    assert set(FIRES) == set(MODELS)
    assert set().union(*FIRES.values()) == set(OPTIMISING_PASSES) - {"dce", "fuse_elementwise"}


@pytest.mark.parametrize("model", MODELS)
def test_library_same_function_with_each_pass_on_and_off(model):
    """The CPU runtime computes the same function (zoo seeded weights and input) with every pass, with none of
    the optimising passes, and with each one of them left out alone, wherever leaving it out changes the
    graph: `FIRES` says where that must be."""
    from conftest import zoo_meta
    meta = zoo_meta(model)
    spec = str(SPECS / f"{model}.cnn")
    x = np.random.default_rng(1).standard_normal([1, *meta["input_shape"][1:]]).astype(np.float32)
    def compiled(disabled=()):  # the graph and its memory plan
        graph = compile_spec(spec, disabled=disabled).graph
        memory = plan_mod.from_graph(graph)["memory"]
        return graph.dump(), {k: v for k, v in memory.items() if k != "options"}

    everything = compiled()
    fires = {p for p in OPTIMISING_PASSES if compiled((p,)) != everything}
    assert fires == FIRES[model]

    def run(disabled):
        plan = plan_mod.from_graph(compile_spec(spec, disabled=disabled).graph)
        return Program(plan, seeded_fixture_weights(plan["constants"]), target="cpu").run(
            {plan["inputs"][0]["name"]: x})

    ref = run(tuple(OPTIMISING_PASSES))
    # (VGG-16's passes are AlexNet's, on 20x the work: each left out alone is run on AlexNet only)
    for disabled in [()] + ([(p,) for p in sorted(fires)] if model != "vgg16" else []):
        out = run(disabled)
        for k in ref:
            if model == "yolov3_tiny" and k == "output":
                assert np.all(np.abs(out[k] - ref[k]) <= 1e-3 * np.abs(ref[k]) + 1e-3), (disabled, k)
            else:
                assert np.max(np.abs(out[k] - ref[k])) <= 1e-4 * np.max(np.abs(ref[k])), (disabled, k)


POOL_FIRST = """\
network poolfirst() {
    input x: (N, 8, 13, 13)
    a = conv(x, 16, 1)
    pa = avgpool(a, 3, stride=2)                    # pooled first
    b = conv(x, 16, 1, bias=false)
    bnb = batchnorm(b)
    pb = avgpool(bnb, 3, stride=2)                  # pooled first: the batchnorm folded into b keeps it affine
    c = conv(x, 16, 1)
    rc = relu(c)
    pc = avgpool(rc, 3, stride=2)                   # kept: an activation in between
    d = conv(x, 16, 1)
    pd = avgpool(d, 3, stride=2, padding=1)         # kept: padding would average zeros, not conv(0) = bias
    e = conv(x, 16, 1)
    pe = avgpool(e, 2, stride=2, ceil_mode=true)    # kept: the last window is clipped to one pixel
    f = conv(x, 16, 3, padding=1)
    pf = avgpool(f, 3, stride=2)                    # kept: not pointwise
    g = conv(x, 16, 1)
    pg = avgpool(g, 3, stride=2)                    # kept: g is also a network output
    h = conv(x, 16, 1)
    gh = global_avgpool(h)                          # pooled first
    output y = pa, pb, pc, pd, pe, pf, pg, g, gh
}
"""


def test_pool_first_snapshot_and_where_it_must_not_fire(write_spec):
    path = write_spec(POOL_FIRST)
    graph, before = _pass_applied("pool_first", path, stop_after="fuse_activation")
    swapped = {p: c for p, c in (("pa", "a"), ("pb", "b"), ("gh", "h"))}
    for pool, conv in swapped.items():
        assert graph.node(pool)["inputs"] == ["x"] and graph.node(conv)["inputs"] == [pool]
        assert graph.nodes().index(pool) < graph.nodes().index(conv)
    assert graph.outputs["y"] == "a" and graph.outputs["gh"] == "h"
    assert graph.node("a")["shape"] == (16, 6, 6) and graph.node("pa")["shape"] == (8, 6, 6)
    for pool in ("pc", "pd", "pe", "pf", "pg"):
        assert graph.node(graph.node(pool)["inputs"][0])["op"] == "conv"
    _check_pass_snapshot("pool_first", "pool_first.txt", graph, before)
    # the MACs the plan runs: a and b on 6x6 pixels instead of 13x13, h on one
    assert graph.macs() == compile_spec(path, disabled=("pool_first",)).graph.macs() - 2 * 16 * 8 * (169 - 36) \
        - 16 * 8 * (169 - 1)


def test_pool_first_computes_the_same_function(write_spec):
    """With and without the pass, on the reference and CPU targets, batch 2."""
    path = write_spec(POOL_FIRST)
    plans = [plan_mod.from_graph(compile_spec(path, disabled=d).graph) for d in ((), ("pool_first",))]
    w = seeded_fixture_weights(plans[1]["constants"])  # (non-zero biases and batchnorm statistics)
    x = np.random.default_rng(0).standard_normal((2, 8, 13, 13)).astype(np.float32)
    ref = Program(plans[1], w).run({"x": x})
    for plan in plans:
        for target in ("reference", "cpu"):
            out = Program(plan, w, target=target).run({"x": x})
            for k in ref:
                assert np.max(np.abs(out[k] - ref[k])) <= 1e-5 * max(1.0, np.max(np.abs(ref[k]))), (target, k)


RESIDUAL = """\
network residual() {
    input x: (N, 8, 12, 12)
    a = conv(x, 8, 3, padding=1)
    s1 = add(a, x)
    r1 = relu(s1)                       # conv + skip + relu -> one conv (never written over the input x)
    b = conv(r1, 8, 3, padding=1, bias=false)
    bn_b = batchnorm(b)
    s2 = add(r1, bn_b)                  # operand order does not matter; bn folded first
    c = conv(s2, 8, 1)
    s3 = add(c, s2)                     # 1x1 (pointwise kernel)
    p1 = conv(s3, 8, 3, padding=1)
    p2 = conv(p1, 8, 1)
    s3p = add(p2, s3)                   # s3 dies here: the 1x1 conv writes over it
    q1 = conv(s3p, 8, 1)
    q2 = conv(q1, 8, 3, padding=1)
    s3q = add(s3p, q2)                  # s3p dies here: the 3x3 conv writes over it
    used_twice = conv(s3q, 8, 1)
    s4 = add(used_twice, s3q)           # the conv has a second user below: stays an add
    extra = relu(used_twice)
    d = conv(s4, 8, 3, padding=1, groups=8)
    s5 = add(d, s4)                     # depthwise: stays an add
    e = conv(s5, 8, 1)
    er = relu(e)
    s6 = add(er, s5)                    # the conv already has an activation: stays an add
    g = conv(s6, 8, 1)
    pooled = global_avgpool(s6)
    s7 = add(g, pooled)                 # broadcast operand: stays an add
    h = conv(s7, 8, 1)
    s8 = add(h, s7, s6)                 # three operands: stays an add
    output y = s8, extra
}
"""


def test_fuse_residual_snapshot_and_where_it_must_not_fire(write_spec):
    graph, before = _pass_applied("fuse_residual", write_spec(RESIDUAL), disabled=("fuse_residual",))
    fused = {n for n in graph.op_nodes() if graph.node(n)["attrs"].get("residual")}
    assert fused == {"a", "b", "c", "p2", "q2"}
    assert graph.node("a")["inputs"] == ["x", "x"] and graph.node("a")["attrs"]["act"] == ("relu", ())
    assert graph.node("b")["inputs"] == ["a", "a"] and graph.node("b")["attrs"]["bn_eps"] == 1e-5
    assert {"s4", "s5", "s6", "s7", "s8"} <= set(graph.g)
    _check_pass_snapshot("fuse_residual", "fuse_residual.txt", graph, before)
    plan = plan_mod.from_graph(graph)
    # a conv never writes over its own input (b, c read their skip as input too), nor over the network input
    assert {"a", "b", "c"}.isdisjoint(plan["memory"]["in_place"])
    assert plan["memory"]["in_place"]["p2"] == "c" and plan["memory"]["in_place"]["q2"] == "c"


def test_fuse_residual_computes_the_same_function(write_spec):
    path = write_spec(RESIDUAL)
    x = np.random.default_rng(2).standard_normal((3, 8, 12, 12)).astype(np.float32)
    outs = {}
    for label, disabled, target in (("plain", ("fuse_residual",), "reference"), ("fused-ref", (), "reference"),
                                    ("fused-cpu", (), "cpu"), ("plain-cpu", ("fuse_residual",), "cpu")):
        plan = plan_mod.from_graph(compile_spec(path, disabled=disabled).graph)
        w = seeded_fixture_weights(plan["constants"])  # (non-zero biases and batchnorm statistics)
        outs[label] = Program(plan, w, target=target).run({"x": x})
    for label in ("fused-ref", "fused-cpu", "plain-cpu"):
        for k, ref in outs["plain"].items():
            assert np.max(np.abs(outs[label][k] - ref)) <= 1e-5 * max(1.0, np.max(np.abs(ref))), (label, k)


DEPTHWISE_CHAINS = """\
network chains() {
    input x: (N, 3, 20, 20)
    stem = conv(x, 24, 3, stride=2, padding=1, bias=false)
    stem_act = batchnorm(stem) -> relu6()
    dw1 = conv(stem_act, 24, 3, padding=1, groups=24)           # stem and dw1 blocked
    dw1_act = silu(dw1)
    pooled = global_avgpool(dw1_act)
    scale = conv(pooled, 24, 1) -> sigmoid()
    se = mul(dw1_act, scale)                                    # blocked too: read by a 1x1 conv only
    proj = conv(se, 16, 1, bias=false) -> batchnorm()
    side = conv(x, 16, 3, stride=2, padding=1)
    skip = add(proj, side)
    e2 = conv(skip, 40, 1)
    dw2 = conv(e2, 40, 5, stride=2, padding=2, groups=40)       # e2, dw2 blocked: 40 is not a multiple of 16
    p2 = conv(dw2, 24, 1)
    e3 = conv(p2, 24, 1)
    dw3 = conv(e3, 24, 3, padding=1, groups=24)                 # e3 has two users: stays plain
    e3r = relu(e3)
    e4 = conv(e3r, 24, 1)
    dw4 = conv(e4, 24, 3, padding=1, groups=24)                 # read by a 3x3 conv: stays plain
    c4 = conv(dw4, 8, 3, padding=1)
    e5 = conv(c4, 16, 1)
    dw5 = conv(e5, 16, 3, padding=1, groups=16)                 # a network output: stays plain
    output y = c4, dw3, dw5
}
"""


def test_layout_snapshot_and_where_it_must_not_fire(write_spec):
    graph, before = _pass_applied("layout", write_spec(DEPTHWISE_CHAINS), disabled=("layout",))
    blocked = {n for n in graph.op_nodes() if graph.node(n)["attrs"].get("layout") == "c16"}
    # depthwise chains, and the dense-chain rule: p2 is read by the 1x1 e3 only; `side` (which adds the skip
    # `conv#2`, the add fused into it) stays plain: e2, the expansion of a depthwise chain, reads it
    assert blocked == {"stem", "dw1", "se", "e2", "dw2", "p2"}
    _check_pass_snapshot("layout", "layout.txt", graph, before)


def _assert_layout_keeps_values(path: str, image: tuple) -> None:
    """The plan with and without the layout pass, run by the CPU target, agree with the reference target
    (plain plan) at batch 1 and 3."""
    plans = {label: plan_mod.from_graph(compile_spec(path, disabled=disabled).graph)
             for label, disabled in (("blocked", ()), ("plain", ("layout",)))}
    w = seeded_fixture_weights(plans["plain"]["constants"])  # (non-zero biases and batchnorm statistics)
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, *image)).astype(np.float32)
        ref = Program(plans["plain"], w).run({"x": x})
        for label, plan in plans.items():
            out = Program(plan, w, target="cpu").run({"x": x})
            for k in ref:
                assert np.max(np.abs(out[k] - ref[k])) <= 1e-5 * max(1.0, np.max(np.abs(ref[k]))), (label, n, k)


def test_layout_computes_the_same_function(write_spec):
    """Blocked chains on the CPU agree with the reference and with the plain-layout plan, batch 1 and 3."""
    _assert_layout_keeps_values(write_spec(DEPTHWISE_CHAINS), (3, 20, 20))


DENSE_CHAINS = """\
network dense() {
    input x: (N, 3, 24, 24)
    stem = conv(x, 16, 3, stride=2, padding=1) -> relu()        # blocked, no halo: a max pool reads it
    pool = maxpool(stem, 3, stride=2, padding=1)                 # blocked with its input; b's skip: halo 2
    a = conv(pool, 24, 1) -> relu()                              # blocked, halo 1 (b's padding)
    b = conv(a, 16, 3, padding=1)
    s = add(b, pool) -> relu()                                   # fused into b; read by 3x3, 5x5, 1x1: halo 2
    c = conv(s, 16, 3, padding=1)                                # blocked: p reads it into the plain layout
    c5 = conv(s, 16, 5, padding=2) -> relu()                     # plain: a global pool and a padded conv read it
    d = conv(s, 8, 1, stride=2)                                  # plain: a concat reads it
    e = conv(c, 8, 1, stride=2)
    cat = concat(d, e)
    g = global_avgpool(c5)
    h = conv(c5, 8, 3, padding=1)                                # plain: a network output
    p = maxpool(c, 2, stride=2)                                  # plain: flattened
    f = flatten(p)
    output y = cat, g, f, h
}
"""


def test_layout_dense_chains_snapshot_and_where_they_stop(write_spec):
    graph, before = _pass_applied("layout", write_spec(DENSE_CHAINS), disabled=("layout",))
    attrs = {n: graph.node(n)["attrs"] for n in graph.op_nodes()}
    blocked = {n for n, a in attrs.items() if a.get("layout") == "c16"}
    assert blocked == {"conv#1", "pool", "conv#2", "b", "c"}  # stem, pool, a, b with the skip add fused, c
    assert attrs["b"]["residual"] and graph.node("b")["inputs"][1] == "pool"
    # widest padding per side among the convolutions reading it; the same across the residual pair
    assert {n: attrs[n].get("halo") for n in blocked} == {"conv#1": None, "pool": (2, 2, 2, 2),
                                                          "conv#2": (1, 1, 1, 1), "b": (2, 2, 2, 2), "c": None}
    _check_pass_snapshot("layout", "layout_dense_chains.txt", graph, before)


def test_layout_dense_chains_compute_the_same_function(write_spec):
    """Blocked dense chains (halos wider than a reader's padding, a blocked skip added in place, max pools) on
    the CPU agree with the reference target, batch 1 and 3."""
    _assert_layout_keeps_values(write_spec(DENSE_CHAINS), (3, 24, 24))


BLOCKED_CONCATS = """\
network inception() {
    input x: (N, 3, 20, 20)
    stem = conv(x, 32, 3, padding=1)
    a = conv(stem, 16, 1)
    b = conv(stem, 32, 3, padding=1)
    p = maxpool(stem, 3, stride=1, padding=1)
    cat = concat(a, b, p)                   # blocked: whole blocks of blocked producers; halo 1 (c's padding)
    c = conv(cat, 32, 3, padding=1)
    d = conv(cat, 16, 1)
    q = maxpool(cat, 3, stride=2, ceil_mode=true)
    cat2 = concat(c, d, b)                  # blocked, halo 1 (h's); b is read by two concats
    h = conv(cat2, 16, 3, padding=1)        # plain: a network output
    e = conv(q, 16, 1)
    f = conv(q, 32, 3, padding=1)
    cat3 = concat(e, f)                     # blocked, no halo: a global pool reads it
    g = global_avgpool(cat3)
    k = conv(q, 8, 1)
    e2 = conv(q, 16, 1)
    cat4 = concat(e2, k)                    # plain: k's 8 channels are not a whole block (and an output)
    output y = h, g, cat4
}
"""


def test_layout_blocks_concatenations_of_whole_blocks(write_spec):
    graph, before = _pass_applied("layout", write_spec(BLOCKED_CONCATS), disabled=("layout",))
    attrs = {n: graph.node(n)["attrs"] for n in graph.op_nodes()}
    blocked = {n for n, a in attrs.items() if a.get("layout") == "c16"}
    assert blocked == {"stem", "a", "b", "p", "cat", "c", "d", "q", "cat2", "e", "f", "cat3"}
    # a concatenation and its inputs share one halo: the widest padding among the readers of any of them
    assert {n for n in blocked if attrs[n].get("halo") == (1, 1, 1, 1)} == {
        "stem", "a", "b", "p", "cat", "c", "d", "q", "cat2"}
    _check_pass_snapshot("layout", "layout_concats.txt", graph, before)


def test_layout_blocked_concatenations_compute_the_same_function(write_spec):
    """Blocked concatenations (in place and copied, inside halos, read by convolutions, max pools and a
    global pool) on the CPU agree with the reference target, batch 1 and 3."""
    _assert_layout_keeps_values(write_spec(BLOCKED_CONCATS), (3, 20, 20))


DENSE_BLOCKS = """\
network dense_block() {
    input x: (N, 3, 20, 20)
    stem = conv(x, 32, 3, padding=1)
    p0 = maxpool(stem, 3, stride=2, padding=1)
    n1 = batchnorm(p0) -> relu()                    # blocked: read by a 1x1 convolution
    c1 = conv(n1, 32, 1)
    c2 = conv(c1, 16, 3, padding=1)
    cat1 = concat(p0, c2)                           # blocked, a prefix of cat2 (one buffer)
    n2 = batchnorm(cat1) -> relu()
    d1 = conv(n2, 32, 1)
    d2 = conv(d1, 16, 3, padding=1)
    cat2 = concat(p0, c2, d2)
    t = batchnorm(cat2) -> relu()                   # a transition: pooled before its 1x1 convolution
    tc = conv(t, 32, 1)
    tp = avgpool(tc, 2, stride=2)
    n3 = batchnorm(tp) -> relu()                    # plain, and so is tc: q below is
    g = global_avgpool(n3)
    q = avgpool(n3, 3, stride=1, padding=1, count_include_pad=false)  # plain: h is
    h = batchnorm(q) -> relu()                      # plain: a padded convolution reads it (no halo here)
    k = conv(h, 16, 3, padding=1)
    output y = g, k
}
"""


def test_layout_blocks_batchnorms_and_average_pools(write_spec):
    graph, before = _pass_applied("layout", write_spec(DENSE_BLOCKS), disabled=("layout",))
    ops = {n: graph.node(n)["op"] for n in graph.op_nodes()}
    blocked = {n for n in graph.op_nodes() if graph.node(n)["attrs"].get("layout") == "c16"}
    assert {n for n in blocked if ops[n] == "batchnorm"} == {"batchnorm#1", "batchnorm#2", "batchnorm#3"}
    assert {n for n in blocked if ops[n] == "avgpool"} == {"tp"} and "q" not in blocked
    assert not {"tc", "batchnorm#4", "batchnorm#5", "k"} & blocked
    assert all(graph.node(n)["attrs"].get("halo") is None for n in blocked if ops[n] in ("batchnorm", "avgpool"))
    _check_pass_snapshot("layout", "layout_dense_blocks.txt", graph, before)


def test_layout_blocked_batchnorms_and_pools_compute_the_same_function(write_spec):
    _assert_layout_keeps_values(write_spec(DENSE_BLOCKS), (3, 20, 20))


UP_AND_DOWN = """\
network up_and_down() {
    input x: (N, 3, 12, 12)
    a = conv(x, 32, 3, padding=1) -> relu()             # blocked, halo 1: a run of cat's blocks
    p = maxpool(a, 2, stride=2)                          # blocked with its input, halo 1 (b's padding)
    b = conv(p, 32, 3, padding=1) -> relu()
    u = conv_transpose(b, 32, 2, stride=2)               # blocked from blocked: cat's other blocks
    cat = concat(a, u)                                   # blocked, halo 1 (c's padding)
    c = conv(cat, 16, 3, padding=1) -> relu()
    s = upsample(c, 2)                                   # blocked with its input, halo 1 (e's padding)
    e = conv(s, 16, 3, padding=1)                        # blocked: only a transposed convolution reads it
    g = conv_transpose(e, 3, 4, stride=2, padding=1) -> tanh()   # from blocked into plain: an output
    h = conv(b, 32, 1)                                   # plain: a grouped transposed convolution reads it
    k = conv_transpose(h, 16, 2, stride=2, groups=2)     # plain: groups
    v = upsample(k, 2)                                   # plain: its input is
    m = conv(p, 16, 1)                                   # plain: an upsample read by an add reads it
    w = upsample(m, 4)                                   # plain: an add reads it
    z = add(v, w)
    output y = g, z
}
"""


def test_layout_blocks_transposed_convolutions_and_upsamples(write_spec):
    graph, before = _pass_applied("layout", write_spec(UP_AND_DOWN), disabled=("layout",))
    attrs = {n: graph.node(n)["attrs"] for n in graph.op_nodes()}
    blocked = {n for n, a in attrs.items() if a.get("layout") == "c16"}
    # a, b and c (their ReLUs fused) are conv#1, conv#2 and conv#3; g's transposed convolution is plain
    assert blocked == {"conv#1", "p", "conv#2", "u", "cat", "conv#3", "s", "e"}
    assert attrs["conv_transpose#1"]["act"] == ("tanh", ())
    assert {n for n in blocked if attrs[n].get("halo") == (1, 1, 1, 1)} == {"conv#1", "p", "u", "cat", "s"}
    _check_pass_snapshot("layout", "layout_up_and_down.txt", graph, before)


def test_layout_blocked_transposed_convolutions_and_upsamples_compute_the_same_function(write_spec):
    """Blocked transposed convolutions (from either layout, into a concatenation's run of blocks or into the
    plain layout) and upsamples inside halos on the CPU agree with the reference target, batch 1 and 3."""
    _assert_layout_keeps_values(write_spec(UP_AND_DOWN), (3, 12, 12))


def test_layout_keeps_winograd_convolutions_plain():
    """VGG-16's convolutions that the CPU target computes with Winograd read and write the plain layout; its
    other convolutions form blocked chains."""
    from cnnc.passes.layout import _winograd
    graph = compile_spec(str(SPECS / "vgg16.cnn")).graph
    wino = [n for n in graph.op_nodes() if graph.node(n)["op"] == "conv" and _winograd(graph, n)]
    assert len(wino) == 4
    for n in wino:
        assert graph.node(n)["attrs"].get("layout") is None
        assert graph.node(graph.node(n)["inputs"][0])["attrs"].get("layout") is None
    assert sum(graph.node(n)["attrs"].get("layout") == "c16" for n in graph.op_nodes()) >= 6


def test_layout_leaves_squeeze_and_excitation_products_plain():
    """EfficientNet-B0's squeeze-and-excitation convolutions (1x1 planes: matrix-vector products) stay plain."""
    graph = compile_spec(str(SPECS / "efficientnet_b0.cnn")).graph
    one_by_one = [n for n in graph.op_nodes() if graph.node(n)["op"] == "conv" and
                  tuple(graph.node(n)["shape"][1:]) == (1, 1)]
    assert len(one_by_one) == 32
    assert not any(graph.node(n)["attrs"].get("layout") for n in one_by_one)


MEMORY = """\
network mem() {
    input x: (N, 16, 8, 8)
    r = relu(x)                         # not over x: a network input is the caller's array
    a = conv(r, 16, 3, padding=1)
    b = conv(r, 16, 1)
    c = concat(a, b)                    # a and b written into their channels of c
    d = conv(c, 32, 1)
    m = mul(d, c)                       # over d, which dies here (c is a concatenation's buffer: never)
    g = global_avgpool(m)
    output y = flatten(g)               # a view of g
}
"""


def test_memory_stage_snapshot_switches_and_function(write_spec, capsys):
    """`cnnc inspect --after memory` shows where each tensor lives; `--disable concat_in_place` and `--disable
    in_place` (and -O0) take those parts out, and every variant computes what the reference does."""
    from cnnc.cli import main
    from cnnc.passes.memory import describe
    path = write_spec(MEMORY)
    texts = []
    for flags in ([], ["--disable", "concat_in_place"], ["--disable", "in_place"], ["-O0"]):
        assert main(["inspect", path, "--after", "memory", *flags]) == 0
        out = capsys.readouterr().out
        texts.append(f"--- {' '.join(flags) or '-O2'} ---\n" + out[out.index("memory plan"):])
    check_snapshot("memory_stage.txt", "".join(texts))
    plans = {flags: plan_mod.from_graph(compile_spec(path, disabled=flags).graph)
             for flags in ((), ("concat_in_place",), ("in_place",))}
    memory = plans[()]["memory"]
    assert memory["slices"] == {"a": ("c", 0), "b": ("c", 16)} and memory["in_place"] == {"m": "d"}
    assert memory["views"] == {"y": "g"}
    assert plans[("concat_in_place",)]["memory"]["slices"] == {}
    assert plans[("in_place",)]["memory"]["in_place"] == {}
    assert describe(plans[()]).startswith("memory plan of mem")
    x = np.random.default_rng(3).standard_normal((2, 16, 8, 8)).astype(np.float32)
    w = seeded_fixture_weights(plans[()]["constants"])
    ref = Program(plans[()], w, target="reference").run({"x": x})["y"]
    for flags, plan in plans.items():
        for batch in (x[:1], x):  # (batches over one plan their memory again, keeping what was compiled)
            out = Program(plan, dict(w), target="cpu").run({"x": batch})["y"]
            np.testing.assert_allclose(out, ref[:len(batch)], rtol=1e-5, atol=1e-5, err_msg=str(flags))


CHAINS = """\
network chains() {
    input x: (N, 8, 6, 6)
    input b: (N, 8, 6, 6)
    input s: (N, 1, 1, 1)
    input p: (N, 1, 6, 6)
    g = global_avgpool(x) -> sigmoid()
    t = tanh(x)
    u = relu6(t)
    v = mul(u, g)                  # one value per channel
    w = add(b, v)                  # the chained value second: add commutes
    z = mul(w, s)                  # one value per sample: the third other input
    y1 = add(z, x)                 # a fourth: not chained (the add keeps its sigmoid)
    y2 = sigmoid(y1)
    k = tanh(b)                    # read twice: the chain starts after it
    k2 = relu(k)
    k3 = mul(k2, k)                # (k is its first input and an operand: never written over)
    m = clip(x, 0.0, 1.0)          # a network output: not chained into the next
    m2 = tanh(m)
    d = relu(b)
    d2 = tanh(d)
    d3 = add(d2, d2)               # the same tensor twice: not chained
    e = relu(b)                    # a per-pixel operand (1, 6, 6) is not one the kernels broadcast
    e2 = add(e, p)
    e3 = tanh(e2)
    q = conv(x, 8, 1)              # read twice: its activation is not fused into it
    qa = global_avgpool(q)
    q1 = tanh(q)
    q2 = mul(q1, qa)               # a chain written over q, which dies there
    output o = y2, k3, m, m2, d3, e3, q2
}
"""


def test_fuse_elementwise_snapshot_and_where_it_must_not_fire(write_spec):
    path = write_spec(CHAINS)
    graph, before = _pass_applied("fuse_elementwise", path, stop_after="fuse_residual")
    chains = {n: graph.node(n) for n in graph.op_nodes() if graph.node(n)["op"] == "eltwise_chain"}
    assert set(chains) == {"z", "k3", "d2", "q2"}
    assert chains["z"]["inputs"] == ["x", "sigmoid#1", "b", "s"]
    assert [op for op, _, _ in chains["z"]["attrs"]["chain"]] == ["tanh", "relu6", "mul", "add", "mul"]
    assert graph.node("y1")["op"] == "add" and graph.node("y1")["inputs"] == ["z", "x"]
    assert graph.node("k")["op"] == "tanh" and chains["k3"]["inputs"] == ["k", "k"]
    assert graph.node("m")["op"] == "clip" and graph.node("m2")["inputs"] == ["m"]
    assert graph.node("d3")["op"] == "add" and graph.node("e2")["op"] == "add" and graph.node("e")["op"] == "relu"
    _check_pass_snapshot("fuse_elementwise", "fuse_elementwise.txt", graph, before)


def test_fuse_elementwise_computes_the_same_function(write_spec):
    """The CPU kernel and the reference, on the chains above, against the unchained graph: batch 1 and 3, one
    chain written over its first input, one (whose first input is also an operand) not."""
    path = write_spec(CHAINS)
    plans = [plan_mod.from_graph(compile_spec(path, disabled=d).graph) for d in ((), ("fuse_elementwise",))]
    memory = plans[0]["memory"]["in_place"]
    assert memory.get("q2") == "q" and "k3" not in memory
    w = seeded_fixture_weights(plans[1]["constants"])
    for batch in (1, 3):
        rng = np.random.default_rng(batch)
        x = {i["name"]: 2 * rng.standard_normal((batch, *i["shape"])).astype(np.float32) for i in plans[1]["inputs"]}
        want = Program(plans[1], dict(w), target="reference").run(x)
        for target in ("reference", "cpu"):
            got = Program(plans[0], dict(w), target=target).run(x)
            for k, ref in want.items():
                np.testing.assert_allclose(got[k], ref, rtol=1e-5, atol=1e-6, err_msg=f"{target} {k}")


def test_internal_ops_are_not_in_the_language(write_spec, capsys):
    from cnnc.cli import main
    path = write_spec("network n() {\n    input x: (N, 2, 3, 3)\n    eltwise_chain(x)\n}\n")
    assert main(["inspect", path]) == 1
    assert "unknown op or block 'eltwise_chain'" in capsys.readouterr().err
    assert main(["ops"]) == 0 and "eltwise_chain" not in capsys.readouterr().out
