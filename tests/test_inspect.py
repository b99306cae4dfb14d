"""`cnnc inspect` renderings, as reviewed snapshots (tests/snapshots/)."""

import json

from cnnc.cli import main
from conftest import SPECS, check_snapshot

BLOCKS = """\
block pair(x, c) {
    a = conv(c, 3, padding=1)
    relu()
    b = conv(c, 1)
}
network blocks() {
    input x: (N, 3, 16, 16)
    stem = seq {
        pair(8)
        maxpool(2)
    }
    head = pair(4)
}
"""


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_table_lenet5(capsys):
    code, out, err = run(capsys, "inspect", str(SPECS / "lenet5.cnn"))
    assert code == 0 and err == ""
    check_snapshot("inspect_lenet5.txt", out)


def test_table_depth_resnet18(capsys):
    code, out, _ = run(capsys, "inspect", str(SPECS / "resnet18.cnn"), "--depth", "1")
    assert code == 0
    check_snapshot("inspect_resnet18_depth1.txt", out)
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("layer")}
    assert set(rows) == {"layer1", "layer2", "layer3", "layer4"}
    # layer3: 3x3 convs 128*256*9 + 3 * 256*256*9, projection 128*256, five batchnorms of 256 (2 * 256 each)
    assert f"{128*256*9 + 3*256*256*9 + 128*256 + 5*2*256:,}" in rows["layer3"]


def test_table_depth_2(capsys):
    code, out, _ = run(capsys, "inspect", str(SPECS / "resnet18.cnn"), "--depth", "2")
    names = [line.split()[0] for line in out.splitlines()]
    assert "layer2.0" in names and "layer2.1" in names and "layer2.0.conv1" not in names


def test_json_lenet5(capsys, monkeypatch):
    monkeypatch.chdir(SPECS.parent)  # source locations in the snapshot are relative to the checkout
    code, out, _ = run(capsys, "inspect", "specs/lenet5.cnn", "--format", "json")
    data = json.loads(out)
    assert data["parameters"] == 61706 and data["macs"] == 416520
    assert data["weights"][0] == {"name": "conv1.weight", "shape": [6, 1, 5, 5], "learnable": True}
    assert [n["name"] for n in data["nodes"]][:3] == ["x", "conv1", "tanh#1"]
    check_snapshot("inspect_lenet5.json", out)


def test_dot_has_clusters(capsys, write_spec):
    code, out, _ = run(capsys, "inspect", write_spec(BLOCKS), "--format", "dot")
    assert code == 0
    assert out.count("subgraph cluster_") == 3  # stem, stem.0, head
    check_snapshot("inspect_blocks.dot", out)


def test_after_expand_dump(capsys, write_spec):
    code, out, _ = run(capsys, "inspect", write_spec(BLOCKS), "--after", "expand")
    assert code == 0
    # the dump names the spec's own path in no line: stable across machines
    check_snapshot("after_expand_blocks.txt", out)
    assert "stem.0.a = conv(x;" in out


def test_after_unknown_pass(capsys, write_spec):
    code, _, err = run(capsys, "inspect", write_spec(BLOCKS), "--after", "fusion")
    assert code == 1 and "unknown pass 'fusion'" in err and "expand, infer_shapes, dce" in err


def test_memory_figures_are_those_of_the_plan_compiled_at_the_level_asked(capsys, tmp_path):
    """The table lists the network as written, but its memory line, like the JSON's `arena_bytes`, is the
    plan's that `cnnc compile` writes with the same flags: at -O0 ResNet-18 keeps its batchnorms and
    activations as steps (one output each), at -O2 they are folded and fused away."""
    from cnnc import plan as plan_mod
    spec = str(SPECS / "resnet18.cnn")
    for flags in (["-O0"], ["--disable", "fuse_residual"], []):
        code, out, _ = run(capsys, "inspect", spec, "--format", "json", *flags)
        assert code == 0
        data = json.loads(out)
        path = tmp_path / "r.cnnplan"
        assert run(capsys, "compile", spec, "-o", str(path), *flags)[0] == 0
        plan, _ = plan_mod.load(str(path))
        assert data["plan_steps"] == len(plan["steps"])
        assert data["arena_bytes"] == 4 * plan["memory"]["per_sample"]
        assert data["plan_no_reuse_bytes"] == 4 * plan["memory"]["no_reuse"]
        assert data["arena_bytes"] < data["plan_no_reuse_bytes"]
        if flags == ["-O0"]:
            assert data["plan_steps"] == len([n for n in data["nodes"] if n["op"] != "input"])
        if not flags:  # 20 convolutions (batchnorm, relu and the residual adds in them), 2 pools, flatten, fc
            assert data["plan_steps"] == 24
