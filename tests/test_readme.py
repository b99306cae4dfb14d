"""Every .cnn example in the README compiles, and the printed example output is what cnnc prints."""

import re

import pytest

from cnnc.cli import main
from cnnc.compiler import compile_spec
from conftest import ROOT

README = (ROOT / "README.md").read_text()
EXAMPLES = re.findall(r"```cnn\n(.*?)```", README, re.S)


def test_there_are_examples():
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_example_compiles(index, tmp_path):
    path = tmp_path / f"example{index}.cnn"
    path.write_text(EXAMPLES[index])
    text = EXAMPLES[index]
    if "network " not in text:  # a file of blocks: check it parses and its blocks load
        from cnnc.expand import Loader
        loader = Loader()
        loader.load(str(path))
        assert not loader.diagnostics
        return
    result = compile_spec(str(path))
    assert result.graph.op_nodes()
    assert result.warnings == []


def test_small_resnet_example_names(tmp_path):
    text = next(e for e in EXAMPLES if "small_resnet" in e)
    path = tmp_path / "s.cnn"
    path.write_text(text)
    names = list(compile_spec(str(path)).graph.constants)
    for claimed in ("stem.0.weight", "stage2.body.0.1.running_mean", "stage2.downsample.0.weight", "fc.bias"):
        assert claimed in names


def test_first_spec_output_is_what_the_readme_shows(tmp_path, capsys):
    first = EXAMPLES[0]
    (tmp_path / "tiny.cnn").write_text(first)
    shown = README.split("    $ cnnc inspect tiny.cnn\n", 1)[1].split("\n\n", 1)[0]
    shown = "\n".join(line[4:] for line in shown.splitlines())
    assert main(["inspect", str(tmp_path / "tiny.cnn")]) == 0
    assert capsys.readouterr().out.rstrip("\n") == shown


def test_python_api_example_runs(tmp_path, monkeypatch):
    code = re.findall(r"```python\n(.*?)```", README, re.S)[0]
    (tmp_path / "specs").symlink_to(ROOT / "specs")
    monkeypatch.chdir(tmp_path)
    assert main(["init", "specs/resnet50.cnn", "-o", "r50.safetensors"]) == 0
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["logits"].shape == (4, 1000)
