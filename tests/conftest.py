import json
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
ZOO = pathlib.Path(__file__).resolve().parent / "fixtures" / "zoo"
SNAPSHOTS = pathlib.Path(__file__).resolve().parent / "snapshots"

MODELS = ["lenet5", "alexnet", "vgg16", "googlenet", "resnet18", "resnet50", "densenet121", "mobilenet_v2",
          "efficientnet_b0", "yolov3_tiny", "unet", "dcgan_generator", "dcgan_discriminator"]


def zoo_meta(model):
    return json.loads((ZOO / model / "meta.json").read_text())


def zoo_keys(model):
    return json.loads((ZOO / model / "keys.json").read_text())


def check_snapshot(name: str, text: str):
    """Compare with tests/snapshots/NAME; UPDATE_SNAPSHOTS=1 rewrites it (then review the diff)."""
    path = SNAPSHOTS / name
    if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not path.exists():
        if os.environ.get("CI") and not path.exists():
            pytest.fail(f"snapshot {name} missing")
        path.write_text(text)
    assert text == path.read_text(), f"snapshot {name} changed; rerun with UPDATE_SNAPSHOTS=1 and review the diff"


@pytest.fixture
def write_spec(tmp_path):
    def write(text, name="net.cnn"):
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return str(p)
    return write
