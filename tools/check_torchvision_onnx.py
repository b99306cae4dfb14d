#!/usr/bin/env python3
"""Fill the weightless torchvision ONNX fixtures with seeded random weights and run them.

For each ``tests/fixtures/onnx_torchvision/<name>.onnx`` (made by
``tools/make_torchvision_onnx.py``) every initializer that holds no data gets
seeded random values of its recorded dims and dtype: normal(0, 0.05), except the
variance input of BatchNormalization, which gets uniform(0.5, 1.5).  Initializers
that kept their data (integer shape/index tensors) are left alone.  ONNX Runtime
then runs the model on a seeded normal input; the output must be finite and of
shape (1, 1000), and the same for a batch of 2 (the batch axis is symbolic).

Needs numpy, onnx and onnxruntime (the main environment)::

    python3 tools/check_torchvision_onnx.py              # every file in the folder
    python3 tools/check_torchvision_onnx.py resnet18 vgg11
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "onnx_torchvision")


def is_empty(init) -> bool:
    """True when the initializer holds no data (it was stripped)."""
    if len(init.dims) and int(np.prod(init.dims)) == 0:
        return False  # a genuinely empty tensor
    return not (init.raw_data or init.float_data or init.double_data or init.int32_data
                or init.int64_data or init.uint64_data or init.string_data or len(init.external_data))


def fill_initializers(model, seed: int = 0) -> int:
    """Fills every stripped initializer of ``model`` (an onnx.ModelProto) in place.

    Float tensors: normal(0, 0.05); BatchNormalization variances: uniform(0.5, 1.5).
    The values depend only on ``seed`` and the order of the initializers.  Returns
    how many were filled.  Raises ValueError for a stripped non-float initializer.
    """
    from onnx import helper, numpy_helper

    bn_var = {n.input[4] for n in model.graph.node
              if n.op_type == "BatchNormalization" and len(n.input) > 4}
    rng = np.random.default_rng(seed)
    filled = 0
    for init in model.graph.initializer:
        if not is_empty(init):
            continue
        np_dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
        if not np.issubdtype(np_dtype, np.floating):
            raise ValueError(f"initializer {init.name} of type {np_dtype} holds no data")
        shape = tuple(int(d) for d in init.dims)
        if init.name in bn_var:
            values = rng.uniform(0.5, 1.5, size=shape)
        else:
            values = rng.normal(0.0, 0.05, size=shape)
        init.CopyFrom(numpy_helper.from_array(values.astype(np_dtype), init.name))
        filled += 1
    return filled


def check(path: str, seed: int = 0):
    """Returns (filled, seconds) or raises AssertionError describing the failure."""
    import onnx
    import onnxruntime as ort

    t0 = time.time()
    model = onnx.load(path)
    filled = fill_initializers(model, seed)
    assert all(not is_empty(i) for i in model.graph.initializer)
    onnx.checker.check_model(model, full_check=True)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    rng = np.random.default_rng(seed + 1)
    for batch in (1, 2):
        x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
        (y,) = sess.run(None, {in_name: x})
        assert y.shape == (batch, 1000), f"batch {batch}: output shape {y.shape}"
        assert np.isfinite(y).all(), f"batch {batch}: non-finite output"
        assert float(np.abs(y).max()) > 0, f"batch {batch}: all-zero output"
    return filled, time.time() - t0, float(np.abs(y).max())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help="model names (default: every .onnx in the folder)")
    ap.add_argument("--dir", default=FIXTURES, help="fixtures folder (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    names = args.models or sorted(f[:-5] for f in os.listdir(args.dir) if f.endswith(".onnx"))
    failed = []
    for name in names:
        try:
            filled, secs, peak = check(os.path.join(args.dir, f"{name}.onnx"), args.seed)
            print(f"ok    {name}: {filled} initializers filled, max |logit| {peak:.3g}, {secs:.1f}s",
                  flush=True)
        except Exception as e:  # report every model, then fail
            failed.append(name)
            print(f"FAIL  {name}: {type(e).__name__}: {e}", flush=True)
    print(f"{len(names) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
