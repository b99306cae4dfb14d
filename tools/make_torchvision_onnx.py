#!/usr/bin/env python3
"""Export torchvision classification models to ONNX and keep only their graphs.

Each model is built with ``weights=None`` in eval mode, exported with the
TorchScript ONNX exporter (``torch.onnx.export(..., dynamo=False)``) at opset 17
for a 1x3x224x224 float input with a symbolic batch axis, and then stripped:
every floating-point initializer keeps its name, dtype and dims but loses its
data.  Non-float initializers (shape and index tensors) and Constant nodes are
kept as exported.  The result is written to
``tests/fixtures/onnx_torchvision/<name>.onnx`` and a README describing the
files is regenerated from whatever .onnx files that folder then holds.

Before export the float parameters and buffers are perturbed with seeded noise
(running variances set to uniform(0.5, 1.5)).  A freshly built model has
constant BatchNorm parameters (1, 0, 0, 1) and zero biases; exported as they
are, the exporter de-duplicates the many equal tensors into Identity nodes
(resnet18: 16 of them, densenet121: 245), which a trained model never shows.
The noise makes the exported graph the one a trained model of the same
architecture gives; the values themselves are stripped anyway.  ``--raw-init``
skips it.

Needs torch, torchvision and onnx; it is meant to run in a separate virtual
environment, e.g.::

    python3 -m venv /tmp/tvenv
    /tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 onnx numpy
    /tmp/tvenv/bin/python tools/make_torchvision_onnx.py            # all models
    /tmp/tvenv/bin/python tools/make_torchvision_onnx.py resnet18   # some
    /tmp/tvenv/bin/python tools/make_torchvision_onnx.py --readme-only

``tools/check_torchvision_onnx.py`` (main environment: onnx, onnxruntime)
fills the stripped files with seeded random weights and runs them.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "onnx_torchvision")

OPSET = 17
INPUT_SHAPE = (1, 3, 224, 224)
PERTURB_SEED = 0

MODELS = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "vgg11", "vgg11_bn", "vgg13", "vgg16", "vgg16_bn", "vgg19",
    "densenet121", "densenet161", "densenet169", "densenet201",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "googlenet",
    "squeezenet1_0", "squeezenet1_1",
    "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
]

# Extra builder arguments.  googlenet: no auxiliary heads, no init pass (the
# weights are stripped anyway).  Its transform_input stays at the weights=None
# default, False; torchvision turns it on only when pretrained weights are
# loaded, which would add a per-channel scale/shift + Concat in front.
BUILD_KWARGS = {
    "googlenet": {"aux_logits": False, "init_weights": False},
}

FLOAT_TYPES = None  # filled lazily: onnx TensorProto float data types


def _float_types():
    global FLOAT_TYPES
    if FLOAT_TYPES is None:
        from onnx import TensorProto as TP
        FLOAT_TYPES = {TP.FLOAT, TP.DOUBLE, TP.FLOAT16, TP.BFLOAT16}
    return FLOAT_TYPES


# --------------------------------------------------------------------------- export

def build(name: str, raw_init: bool = False):
    import torch
    import torchvision

    model = getattr(torchvision.models, name)(weights=None, **BUILD_KWARGS.get(name, {}))
    model.eval()
    if not raw_init:
        gen = torch.Generator().manual_seed(PERTURB_SEED)
        with torch.no_grad():
            tensors = list(model.named_parameters()) + list(model.named_buffers())
            for tname, t in tensors:
                if not t.is_floating_point():
                    continue  # e.g. BatchNorm num_batches_tracked
                if tname.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype) + 0.5)
                else:
                    t.add_(torch.randn(t.shape, generator=gen, dtype=t.dtype) * 0.01)
    return model


def export(name: str, raw_init: bool = False):
    """Returns the exported onnx.ModelProto (weights still inside)."""
    import onnx
    import torch

    model = build(name, raw_init)
    x = torch.randn(*INPUT_SHAPE, generator=torch.Generator().manual_seed(1))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), buf,
            dynamo=False,                      # the TorchScript exporter
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            do_constant_folding=True,
            export_params=True,
        )
    return onnx.load_from_string(buf.getvalue())


def strip(model, name: str, versions: dict):
    """Drops the data of every float initializer in place; returns the count stripped."""
    n = 0
    floats = _float_types()
    graphs = [model.graph]
    while graphs:  # (no subgraphs in these models, but be thorough)
        g = graphs.pop()
        for init in g.initializer:
            if init.data_location != 0 or len(init.external_data):
                raise RuntimeError(f"{name}: initializer {init.name} uses external data")
            if init.data_type not in floats:
                continue
            init.raw_data = b""
            for field in ("float_data", "double_data", "int32_data", "int64_data",
                          "uint64_data", "string_data"):
                init.ClearField(field)
            n += 1
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
    del model.metadata_props[:]
    for key, value in (
        ("source", f"torchvision.models.{name}(weights=None{_kw_text(name)}).eval()"),
        ("exported_with", _versions_text(versions) + f"; torch.onnx.export(dynamo=False, opset_version={OPSET})"),
        ("stripped", "float initializers keep name, dtype and dims but hold no data; "
                     "fill them before running (tools/check_torchvision_onnx.py)"),
    ):
        p = model.metadata_props.add()
        p.key, p.value = key, value
    return n


def _kw_text(name):
    return "".join(f", {k}={v!r}" for k, v in BUILD_KWARGS.get(name, {}).items())


def check_small_constants(model, name):
    """Warns about big float tensors hiding in Constant nodes (they would not be stripped)."""
    import numpy as np
    for node in model.graph.node:
        if node.op_type != "Constant":
            continue
        for attr in node.attribute:
            if attr.HasField("t") and attr.t.data_type in _float_types():
                size = int(np.prod(attr.t.dims)) if len(attr.t.dims) else 1
                if size > 16:
                    print(f"  warning: {name}: Constant {node.output[0]} holds {size} floats",
                          file=sys.stderr)


# --------------------------------------------------------------------------- README

def _versions():
    import onnx
    import torch
    import torchvision
    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "onnx": onnx.__version__}


def _versions_text(versions):
    return ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))


def summarize(path):
    import onnx
    m = onnx.load(path)
    ops = collections.Counter(n.op_type for n in m.graph.node)
    return {
        "nodes": len(m.graph.node),
        "initializers": len(m.graph.initializer),
        "stripped": sum(1 for i in m.graph.initializer if i.data_type in _float_types()),
        "ops": ops,
        "opset": next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None),
        "size": os.path.getsize(path),
        "exported_with": {p.key: p.value for p in m.metadata_props}.get("exported_with", "?").split(";")[0],
    }


def write_readme(out_dir):
    names = [n for n in MODELS if os.path.exists(os.path.join(out_dir, f"{n}.onnx"))]
    extra = sorted(f[:-5] for f in os.listdir(out_dir) if f.endswith(".onnx") and f[:-5] not in MODELS)
    names += extra
    rows, union, used_by, total = [], collections.Counter(), collections.Counter(), 0
    made_with = collections.Counter()
    for n in names:
        s = summarize(os.path.join(out_dir, f"{n}.onnx"))
        made_with[s["exported_with"]] += 1
        total += s["size"]
        union.update(s["ops"])
        used_by.update(s["ops"].keys())
        ops = ", ".join(f"{op} {c}" for op, c in sorted(s["ops"].items()))
        rows.append(f"| {n} | {s['nodes']} | {s['initializers']} | {ops} | {s['size'] / 1024:.1f} KiB |")
    ver = "; ".join(made_with) if made_with else "?"
    text = f"""# Weightless ONNX graphs of torchvision classification models

Each `<name>.onnx` here is the graph that torchvision's `<name>` exports to, with
its weights removed: every floating-point initializer keeps its name, dtype and
dims but holds no data (no `raw_data`, no typed data, no external data).  Integer
initializers and `Constant` nodes are kept as exported.  A test fills the empty
initializers with seeded random values (see `tools/check_torchvision_onnx.py`,
`fill_initializers`) and can then compare an importer against ONNX Runtime.

## How they were made

```
python3 -m venv /tmp/tvenv
/tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 onnx numpy
/tmp/tvenv/bin/python tools/make_torchvision_onnx.py
python3 tools/check_torchvision_onnx.py        # main environment: onnx + onnxruntime
```

- versions: {ver}
- exporter: the TorchScript exporter, `torch.onnx.export(..., dynamo=False)`,
  `do_constant_folding=True`, `export_params=True`
- opset: {OPSET} (default domain)
- input `input`: float32 `[batch, 3, 224, 224]` (224x224 for every model, the
  EfficientNets included); output `logits`: float32 `[batch, 1000]`; `batch` is a
  symbolic dim (`dynamic_axes`)
- models: `torchvision.models.<name>(weights=None).eval()`; googlenet with
  `aux_logits=False, init_weights=False` and `transform_input` left at its
  `weights=None` default, False (with pretrained weights torchvision turns it
  on, which would put a per-channel scale/shift and a Concat before conv1)
- before export, float parameters and buffers get seeded noise (running
  variances uniform(0.5, 1.5)), so the exporter sees the model as it would a
  trained one: with the fresh-init constants (BatchNorm 1/0/0/1, zero biases)
  it de-duplicates the equal tensors into `Identity` nodes (resnet18: 16,
  densenet121: 245).  `--raw-init` exports without the noise.
- in eval mode the exporter folds every BatchNorm that follows a Conv into
  that Conv (weight and bias), so most graphs have no `BatchNormalization`;
  only BatchNorms with no Conv right before them (DenseNet's pre-activation
  ones) remain.  Dropout is gone (eval).  VGG's `AdaptiveAvgPool2d((7, 7))`
  on the 7x7 map at 224x224 becomes `AveragePool` with a 1x1 kernel;
  ReLU6 becomes `Clip` with scalar `Constant` bounds (mobilenet_v2).
- filled with normal(0, 0.05) weights, the deep ResNets and VGGs give large
  logits (max |logit| about 1e3 for resnet18/50, 1e9 for resnet152, 3e5 for
  vgg19; about 0.2 to 0.8 for the rest), still finite; compare outputs with a
  tolerance relative to their magnitude.
- why not the dynamo exporter (the default in this torch): asked for opset 17
  it exports at 18 and its down-conversion fails (ReduceMean `axes` adapter),
  leaving the model at opset 18; it also lowers global average pooling to
  `ReduceMean` + `Reshape`.

## Files

{len(names)} files, {total / 1024:.1f} KiB in all.  Columns: nodes, initializers,
op types with their counts, file size.

| model | nodes | inits | op types | size |
| --- | ---: | ---: | --- | ---: |
""" + "\n".join(rows) + f"""

## Op types across all files

| op type | nodes | models using it |
| --- | ---: | ---: |
""" + "\n".join(f"| {op} | {c} | {used_by[op]} |" for op, c in sorted(union.items(), key=lambda kv: (-kv[1], kv[0]))) + "\n"
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(text)
    return total, union


# --------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help=f"models to export (default: all {len(MODELS)})")
    ap.add_argument("--out", default=OUT_DIR, help="output folder (default: %(default)s)")
    ap.add_argument("--raw-init", action="store_true",
                    help="export the fresh-init values as they are (no seeded perturbation)")
    ap.add_argument("--readme-only", action="store_true", help="only regenerate README.md")
    args = ap.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    if not args.readme_only:
        import onnx
        import torch
        torch.manual_seed(0)
        versions = _versions()
        for name in args.models or MODELS:
            if name not in MODELS:
                ap.error(f"unknown model {name!r}")
            t0 = time.time()
            model = export(name, args.raw_init)
            check_small_constants(model, name)
            n = strip(model, name, versions)
            path = os.path.join(args.out, f"{name}.onnx")
            onnx.save(model, path)
            print(f"{name}: {len(model.graph.node)} nodes, {n} initializers stripped, "
                  f"{os.path.getsize(path) / 1024:.1f} KiB, {time.time() - t0:.1f}s", flush=True)
    total, _ = write_readme(args.out)
    print(f"README.md written; fixtures total {total / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
