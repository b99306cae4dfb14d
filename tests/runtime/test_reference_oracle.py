"""Oracle tests for cnnc.runtime.reference.

Every reference op is checked against an INDEPENDENT implementation:
ONNX Runtime executing a small ONNX graph (opset 17) built with onnx.helper.
Where ONNX has no matching op the test says so and uses either a small graph
of primitive ONNX ops, a hand-derived example whose numbers are worked out in
the comments, or (optionally, skipped when absent) PyTorch.

Pooling ceil_mode: PyTorch drops a last window that would start inside the
bottom/right padding ((out-1)*stride >= in + pad_begin -> out -= 1).  The
reference follows that rule.  ONNX Runtime (checked on 1.32, opsets 17/19/22)
computes the same output sizes and values, though ONNX's static shape
inference predicts the un-dropped size (hence sessions run with warnings muted).
The rule is additionally pinned by hand-derived examples.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cnnc.runtime import reference as R  # noqa: E402

OPSET = 17
RNG = np.random.default_rng(20240517)


# ---------------------------------------------------------------------------
# oracle plumbing
# ---------------------------------------------------------------------------

def run_graph(nodes, inputs: dict, initializers: dict | None = None, outputs=("y",)):
    """Run an ONNX graph in ONNX Runtime; ``inputs`` are fed, ``initializers`` baked in."""
    initializers = initializers or {}
    graph = helper.make_graph(
        nodes,
        "oracle",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), name=k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # opset 17 <-> IR 8
    so = ort.SessionOptions()
    so.log_severity_level = 3  # mute ONNX-vs-ORT ceil_mode shape-inference warnings
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
    res = sess.run(list(outputs), feeds)
    return res[0] if len(outputs) == 1 else res


def run_node(op, inputs: dict, initializers: dict | None = None, input_names=None, **attrs):
    """One-node graph. ``input_names`` fixes the node's input order (``""`` = omitted)."""
    names = list(input_names) if input_names is not None else list(inputs) + list(initializers or {})
    node = helper.make_node(op, names, ["y"], **attrs)
    return run_graph([node], inputs, initializers)


def assert_close(y, ref):
    y = np.asarray(y)
    ref = np.asarray(ref)
    assert y.shape == ref.shape, f"shape {y.shape} != oracle {ref.shape}"
    err = float(np.max(np.abs(y.astype(np.float64) - ref))) if y.size else 0.0
    tol = 1e-5 * max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
    assert err <= tol, f"max abs err {err:.3g} > tol {tol:.3g}"


def noncontig(a):
    """Same values, non-contiguous strides (every other element of a wider buffer)."""
    a = np.asarray(a)
    if a.ndim == 0:
        return a
    buf = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    buf[..., ::2] = a
    view = buf[..., ::2]
    assert a.shape[-1] <= 1 or not view.flags.c_contiguous
    return view


def _map_arrays(args, fn):
    out = []
    for a in args:
        if isinstance(a, np.ndarray):
            out.append(fn(a))
        elif isinstance(a, list) and a and all(isinstance(t, np.ndarray) for t in a):
            out.append([fn(t) for t in a])
        else:
            out.append(a)
    return out


def _arrays_in(args):
    for a in args:
        if isinstance(a, np.ndarray):
            yield a
        elif isinstance(a, list):
            yield from (t for t in a if isinstance(t, np.ndarray))


def check(fn, args, expected, **kwargs):
    """Run ``fn`` on contiguous and non-contiguous copies of ``args``; compare to oracle.

    Also asserts: float32 result, inputs unchanged, result owns fresh memory.
    """
    for variant in (lambda a: a.copy(), noncontig):
        call_args = _map_arrays(args, variant)
        before = [a.copy() for a in _arrays_in(call_args)]
        y = fn(*call_args, **kwargs)
        assert isinstance(y, np.ndarray) and y.dtype == np.float32
        assert_close(y, expected)
        for a, b in zip(_arrays_in(call_args), before):
            np.testing.assert_array_equal(a, b)  # input not mutated
            assert not np.shares_memory(y, a), "result aliases an input"
    return y


def randn(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------------------
# conv2d  (ONNX Conv)
# ---------------------------------------------------------------------------

CONV_CASES = {
    # name: (x shape, w shape, kwargs)
    "basic_pad1_batch2": ((2, 3, 7, 7), (4, 3, 3, 3), dict(pads=(1, 1, 1, 1))),
    "asym_pads_rect": ((1, 3, 6, 5), (5, 3, 3, 2), dict(pads=(1, 0, 2, 1), stride=(2, 1))),
    "stride_gt_kernel": ((2, 2, 9, 8), (3, 2, 2, 2), dict(stride=(3, 3))),
    "dilation": ((1, 3, 9, 9), (4, 3, 3, 3), dict(dilation=(2, 3), pads=(2, 3, 2, 3))),
    "groups2": ((2, 4, 6, 6), (6, 2, 3, 3), dict(groups=2, pads=(1, 1, 1, 1))),
    "depthwise_s2": ((2, 4, 5, 5), (4, 1, 3, 3), dict(groups=4, pads=(1, 1, 1, 1), stride=(2, 2))),
    "depthwise_mult2": ((1, 3, 5, 5), (6, 1, 3, 3), dict(groups=3)),
    "spatial_1x1_input": ((2, 3, 1, 1), (4, 3, 3, 3), dict(pads=(1, 1, 1, 1))),
    "kernel_1x1_batch3": ((3, 5, 4, 4), (2, 5, 1, 1), dict()),
    "asym_stride_dil_groups": ((2, 6, 8, 7), (4, 3, 3, 2), dict(groups=2, stride=(2, 3), dilation=(1, 2),
                                                               pads=(0, 2, 1, 0))),
}


def _onnx_conv(x, w, b, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    inits = {"w": w} if b is None else {"w": w, "b": b}
    return run_node("Conv", {"x": x}, inits, kernel_shape=list(w.shape[2:]), strides=list(stride),
                    pads=list(pads), dilations=list(dilation), group=groups)


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv2d(name, with_bias):
    xs, ws, kw = CONV_CASES[name]
    x, w = randn(*xs), randn(*ws)
    b = randn(ws[0]) if with_bias else None
    ref = _onnx_conv(x, w, b, **kw)
    if with_bias:
        check(R.conv2d, [x, w, b], ref, **kw)
    else:
        check(R.conv2d, [x, w], ref, **kw)


def test_conv2d_transposed_view_input():
    # x is a transposed (non-contiguous) view of an (N, C, W, H) buffer.
    base = randn(2, 3, 6, 5)
    x = base.transpose(0, 1, 3, 2)
    assert not x.flags.c_contiguous
    w, b = randn(4, 3, 3, 3), randn(4)
    ref = _onnx_conv(np.ascontiguousarray(x), w, b, pads=(1, 0, 0, 1))
    assert_close(R.conv2d(x, w, b, pads=(1, 0, 0, 1)), ref)


# ---------------------------------------------------------------------------
# conv_transpose2d  (ONNX ConvTranspose)
# ---------------------------------------------------------------------------

CONVT_CASES = {
    "basic": ((1, 3, 4, 4), (3, 2, 3, 3), dict()),
    "s2_p1_outpad1_batch2": ((2, 4, 3, 3), (4, 3, 3, 3), dict(stride=(2, 2), pads=(1, 1, 1, 1),
                                                              output_padding=(1, 1))),
    "groups2_asym_pads_outpad": ((1, 4, 4, 5), (4, 2, 3, 2), dict(stride=(2, 3), pads=(0, 1, 1, 0),
                                                                  output_padding=(1, 2), groups=2)),
    "dilation_s3": ((1, 2, 3, 3), (2, 2, 2, 3), dict(stride=(3, 3), dilation=(2, 2), pads=(1, 1, 1, 1),
                                                     output_padding=(1, 1))),
    "depthwise_s2": ((2, 3, 4, 4), (3, 1, 3, 3), dict(stride=(2, 2), pads=(1, 1, 1, 1), groups=3)),
    "spatial_1x1_input": ((2, 3, 1, 1), (3, 4, 3, 3), dict(stride=(2, 2))),
    "stride_gt_kernel": ((1, 2, 3, 4), (2, 3, 2, 2), dict(stride=(3, 4))),
    "big_pads_crop": ((1, 2, 5, 5), (2, 2, 4, 4), dict(stride=(2, 2), pads=(2, 3, 3, 1))),
}


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name", list(CONVT_CASES))
def test_conv_transpose2d(name, with_bias):
    xs, ws, kw = CONVT_CASES[name]
    x, w = randn(*xs), randn(*ws)
    groups = kw.get("groups", 1)
    b = randn(ws[1] * groups) if with_bias else None
    inits = {"w": w} if b is None else {"w": w, "b": b}
    ref = run_node("ConvTranspose", {"x": x}, inits, kernel_shape=list(ws[2:]),
                   strides=list(kw.get("stride", (1, 1))), pads=list(kw.get("pads", (0, 0, 0, 0))),
                   output_padding=list(kw.get("output_padding", (0, 0))),
                   dilations=list(kw.get("dilation", (1, 1))), group=groups)
    # ONNX ConvTranspose output size formula, checked independently of the reference:
    s, p, op, d = (kw.get(k, dflt) for k, dflt in
                   (("stride", (1, 1)), ("pads", (0, 0, 0, 0)), ("output_padding", (0, 0)), ("dilation", (1, 1))))
    for ax in range(2):
        expect = (xs[2 + ax] - 1) * s[ax] - p[ax] - p[ax + 2] + d[ax] * (ws[2 + ax] - 1) + op[ax] + 1
        assert ref.shape[2 + ax] == expect
    args = [x, w] if b is None else [x, w, b]
    check(R.conv_transpose2d, args, ref, **kw)


# ---------------------------------------------------------------------------
# max_pool2d / avg_pool2d  (ONNX MaxPool / AveragePool)
# ---------------------------------------------------------------------------

POOL_CASES = {
    # name: (x shape, kernel, stride, pads, ceil_mode)
    "k3s2p1": ((2, 3, 7, 7), (3, 3), (2, 2), (1, 1, 1, 1), False),
    "asym_pads": ((1, 2, 6, 7), (2, 3), (2, 2), (0, 1, 1, 0), False),
    "asym_pads_ceil": ((1, 2, 6, 7), (2, 3), (2, 2), (1, 0, 0, 1), True),
    "ceil_keeps_overhang": ((1, 2, 6, 6), (3, 3), (2, 2), (1, 1, 1, 1), True),
    "ceil_drops_window_in_pad": ((1, 1, 5, 5), (2, 2), (2, 2), (1, 1, 1, 1), True),
    "ceil_no_pad": ((2, 2, 8, 9), (3, 3), (2, 2), (0, 0, 0, 0), True),
    "ceil_rect": ((1, 3, 10, 7), (3, 2), (3, 2), (1, 1, 1, 1), True),
    "stride_gt_kernel": ((2, 2, 9, 10), (2, 2), (3, 4), (0, 0, 0, 0), False),
    "stride_gt_kernel_ceil": ((1, 2, 9, 10), (2, 2), (3, 4), (1, 1, 1, 1), True),
    "spatial_1x1_k1": ((3, 2, 1, 1), (1, 1), (1, 1), (0, 0, 0, 0), False),
    "spatial_1x1_k3p1": ((2, 2, 1, 1), (3, 3), (1, 1), (1, 1, 1, 1), False),
}

MAXPOOL_EXTRA = {
    # name: (x shape, kernel, stride, pads, dilation, ceil_mode)
    "dilation2": ((1, 2, 9, 9), (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), False),
    "dilation_rect_ceil": ((2, 2, 8, 9), (2, 3), (2, 2), (1, 0, 1, 1), (2, 1), True),
}


def _maxpool_case(name):
    if name in POOL_CASES:
        xs, k, s, p, c = POOL_CASES[name]
        return xs, k, s, p, (1, 1), c
    return MAXPOOL_EXTRA[name]


@pytest.mark.parametrize("name", list(POOL_CASES) + list(MAXPOOL_EXTRA))
def test_max_pool2d(name):
    xs, k, s, p, d, c = _maxpool_case(name)
    x = randn(*xs)
    ref = run_node("MaxPool", {"x": x}, kernel_shape=list(k), strides=list(s), pads=list(p),
                   dilations=list(d), ceil_mode=int(c))
    check(R.max_pool2d, [x], ref, kernel=k, stride=s, pads=p, dilation=d, ceil_mode=c)


@pytest.mark.parametrize("count_include_pad", [True, False], ids=["incl_pad", "excl_pad"])
@pytest.mark.parametrize("name", list(POOL_CASES))
def test_avg_pool2d(name, count_include_pad):
    xs, k, s, p, c = POOL_CASES[name]
    x = randn(*xs)
    ref = run_node("AveragePool", {"x": x}, kernel_shape=list(k), strides=list(s), pads=list(p),
                   ceil_mode=int(c), count_include_pad=int(count_include_pad))
    check(R.avg_pool2d, [x], ref, kernel=k, stride=s, pads=p, ceil_mode=c,
          count_include_pad=count_include_pad)


def _x_1_to(n):
    # (1, 1, n, n) tensor with x[r, c] = r*n + c + 1
    return np.arange(1, n * n + 1, dtype=np.float32).reshape(1, 1, n, n)


def test_max_pool2d_ceil_drops_window_starting_in_padding_hand_derived():
    # in=5, k=2, s=2, pad=1: ceil((5+2-2)/2)+1 = 4 windows, but the 4th would start at
    # 3*2-1 = 5 = first bottom-pad row -> dropped (PyTorch rule), so 3.
    # Window rows: {-1,0}->{0}, {1,2}, {3,4}; the max sits at the last real index: 0, 2, 4.
    # value = r*5 + c + 1 for (r, c) in {0,2,4}^2.
    y = R.max_pool2d(_x_1_to(5), kernel=(2, 2), stride=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True)
    np.testing.assert_array_equal(y[0, 0], [[1, 3, 5], [11, 13, 15], [21, 23, 25]])
    # without ceil_mode: floor((5+2-2)/2)+1 = 3 as well, same windows
    y2 = R.max_pool2d(_x_1_to(5), kernel=(2, 2), stride=(2, 2), pads=(1, 1, 1, 1), ceil_mode=False)
    np.testing.assert_array_equal(y, y2)


def test_pool_ceil_overhang_hand_derived():
    # in=6, k=3, s=2, pad=1, ceil: ceil((6+2-3)/2)+1 = 4; last start 3*2-1 = 5 < 6+1 -> kept.
    # Window rows/cols: {-1,0,1}, {1,2,3}, {3,4,5}, {5,6,7} where -1 and 6 are padding and 7 is
    # ceil overhang.  Look at the last output row: only real row is 5 -> values 31..36.
    x = _x_1_to(6)
    kw = dict(kernel=(3, 3), stride=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True)
    # column sums over real cols: {0,1}: 31+32=63, {1,2,3}: 32+33+34=99, {3,4,5}: 34+35+36=105, {5}: 36
    # count_include_pad: divisor per axis is min(start+k, in+pad_end) - start: 3,3,3,2
    #   (the padded position counts, the overhang does not) -> last row divisor 2*[3,3,3,2]
    y = R.avg_pool2d(x, count_include_pad=True, **kw)
    np.testing.assert_allclose(y[0, 0, -1], [63 / 6, 99 / 6, 105 / 6, 36 / 4], rtol=1e-6)
    # exclude pad: only real positions: rows {5} -> 1, cols 2,3,3,1
    y = R.avg_pool2d(x, count_include_pad=False, **kw)
    np.testing.assert_allclose(y[0, 0, -1], [63 / 2, 99 / 3, 105 / 3, 36 / 1], rtol=1e-6)
    y = R.max_pool2d(x, **kw)
    np.testing.assert_array_equal(y[0, 0, -1], [32, 34, 36, 36])
    assert y.shape == (1, 1, 4, 4)


# --- optional PyTorch cross-check of pooling semantics --------------------

TORCH_POOL_GRID = [
    # (H, W, k, s, p)  symmetric pads only (torch), p <= k/2
    (5, 5, 2, 2, 1), (6, 6, 3, 2, 1), (7, 8, 3, 3, 1), (9, 7, 4, 3, 2), (4, 4, 3, 2, 0),
    (10, 11, 3, 4, 1), (1, 1, 1, 1, 0), (3, 3, 2, 2, 1),
]


@pytest.mark.parametrize("hw_k_s_p", TORCH_POOL_GRID)
def test_pools_match_torch(hw_k_s_p):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    h, w, k, s, p = hw_k_s_p
    x = randn(2, 3, h, w)
    t = torch.from_numpy(x)
    for ceil in (False, True):
        for cip in (False, True):
            ref = F.avg_pool2d(t, k, s, p, ceil_mode=ceil, count_include_pad=cip).numpy()
            assert_close(R.avg_pool2d(x, (k, k), (s, s), (p,) * 4, ceil_mode=ceil, count_include_pad=cip), ref)
        for d in (1, 2):
            if (k - 1) * d + 1 > h + 2 * p:
                continue
            ref = F.max_pool2d(t, k, s, p, dilation=d, ceil_mode=ceil).numpy()
            assert_close(R.max_pool2d(x, (k, k), (s, s), (p,) * 4, dilation=(d, d), ceil_mode=ceil), ref)


# ---------------------------------------------------------------------------
# global / adaptive pooling
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 1, 1), (3, 2, 8, 8)])
def test_global_pools(shape):
    x = randn(*shape)
    check(R.global_avg_pool, [x], run_node("GlobalAveragePool", {"x": x}))
    check(R.global_max_pool, [x], run_node("GlobalMaxPool", {"x": x}))


@pytest.mark.parametrize("shape,out", [((2, 3, 8, 6), (4, 3)), ((1, 2, 6, 6), (1, 1)), ((2, 2, 4, 4), (4, 4))])
def test_adaptive_pools_divisible_vs_onnx(shape, out):
    # ONNX has no adaptive pooling.  When in % out == 0 the adaptive bins are exactly a
    # non-overlapping pool with kernel = stride = in/out, which ONNX does have.
    x = randn(*shape)
    k = [shape[2] // out[0], shape[3] // out[1]]
    check(R.adaptive_avg_pool2d, [x], run_node("AveragePool", {"x": x}, kernel_shape=k, strides=k), output_size=out)
    check(R.adaptive_max_pool2d, [x], run_node("MaxPool", {"x": x}, kernel_shape=k, strides=k), output_size=out)


def test_adaptive_pools_non_divisible_hand_derived():
    # in=5 -> out=3 bins [floor(i*5/3), ceil((i+1)*5/3)): [0,2), [1,4), [3,5)  (overlapping)
    row = np.array([1, 2, 3, 4, 5], dtype=np.float32).reshape(1, 1, 1, 5)
    np.testing.assert_allclose(R.adaptive_avg_pool2d(row, (1, 3))[0, 0, 0], [1.5, 3.0, 4.5], rtol=1e-6)
    np.testing.assert_array_equal(R.adaptive_max_pool2d(row, (1, 3))[0, 0, 0], [2, 4, 5])
    col = np.array([5, 1, 4, 2, 3], dtype=np.float32).reshape(1, 1, 5, 1)
    np.testing.assert_allclose(R.adaptive_avg_pool2d(col, (3, 1))[0, 0, :, 0], [3.0, 7 / 3, 2.5], rtol=1e-6)
    np.testing.assert_array_equal(R.adaptive_max_pool2d(col, (3, 1))[0, 0, :, 0], [5, 4, 3])
    # upsampling case in=2 -> out=3: bins [0,1), [0,2), [1,2)
    y = R.adaptive_avg_pool2d(np.array([[[[2.0, 6.0]]]], dtype=np.float32), (1, 3))
    np.testing.assert_allclose(y[0, 0, 0], [2.0, 4.0, 6.0], rtol=1e-6)


@pytest.mark.parametrize("shape,out", [((2, 3, 7, 5), (3, 2)), ((1, 2, 5, 9), (4, 7)), ((1, 1, 3, 2), (5, 5))])
def test_adaptive_pools_match_torch(shape, out):
    torch = pytest.importorskip("torch")
    x = randn(*shape)
    t = torch.from_numpy(x)
    check(R.adaptive_avg_pool2d, [x], torch.nn.functional.adaptive_avg_pool2d(t, out).numpy(), output_size=out)
    check(R.adaptive_max_pool2d, [x], torch.nn.functional.adaptive_max_pool2d(t, out).numpy(), output_size=out)


# ---------------------------------------------------------------------------
# dense / batchnorm / lrn
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("with_bias", [True, False])
def test_dense(with_bias):
    x, w, b = randn(3, 20), randn(7, 20), randn(7)
    inits = {"w": w, "b": b} if with_bias else {"w": w}
    ref = run_node("Gemm", {"x": x}, inits, transB=1)
    check(R.dense, [x, w, b] if with_bias else [x, w], ref)


@pytest.mark.parametrize("shape", [(2, 4, 5, 3), (5, 6), (1, 3, 1, 1)])
def test_batchnorm(shape):
    c = shape[1]
    x = randn(*shape)
    gamma, beta, mean = randn(c), randn(c), randn(c)
    var = (RNG.random(c) + 0.1).astype(np.float32)
    ref = run_node("BatchNormalization", {"x": x}, {"g": gamma, "b": beta, "m": mean, "v": var}, epsilon=1e-3)
    check(R.batchnorm, [x, gamma, beta, mean, var], ref, eps=1e-3)


@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_lrn(size):
    x = randn(2, 7, 3, 4, scale=3.0)
    kw = dict(alpha=2e-2, beta=0.75, k=2.0)
    ref = run_node("LRN", {"x": x}, size=size, alpha=kw["alpha"], beta=kw["beta"], bias=kw["k"])
    check(R.lrn, [x], ref, size=size, **kw)


@pytest.mark.parametrize("size,expected", [
    # ONNX Runtime rejects even sizes, so these are hand-derived.  x[c] = c+1 (C=5, 1x1 spatial),
    # squares 1,4,9,16,25; alpha=size (so alpha/size=1), beta=1, k=1 -> y[c] = x[c] / (1 + window sum).
    # size=4: window c-1 .. c+2 -> sums 14, 30, 54, 50, 41
    (4, [1 / 15, 2 / 31, 3 / 55, 4 / 51, 5 / 42]),
    # size=2: window c .. c+1 -> sums 5, 13, 25, 41, 25
    (2, [1 / 6, 2 / 14, 3 / 26, 4 / 42, 5 / 26]),
])
def test_lrn_even_size_hand_derived(size, expected):
    # (torch.nn.LocalResponseNorm would centre the window the other way, c-2 .. c+1 for size 4;
    #  the reference follows ONNX.)
    x = np.arange(1, 6, dtype=np.float32).reshape(1, 5, 1, 1)
    y = R.lrn(x, size, alpha=float(size), beta=1.0, k=1.0)
    np.testing.assert_allclose(y.ravel(), expected, rtol=1e-6)


@pytest.mark.parametrize("size", [3, 5])
def test_lrn_matches_torch_odd_size(size):
    # For odd sizes torch.nn.LocalResponseNorm and ONNX LRN coincide.
    torch = pytest.importorskip("torch")
    x = randn(2, 6, 3, 3, scale=3.0)
    ref = torch.nn.functional.local_response_norm(torch.from_numpy(x), size, alpha=1e-2, beta=0.5, k=1.5).numpy()
    assert_close(R.lrn(x, size, alpha=1e-2, beta=0.5, k=1.5), ref)


# ---------------------------------------------------------------------------
# elementwise activations
# ---------------------------------------------------------------------------

X_ACT = randn(2, 3, 4, 5, scale=4.0)
# plant the kinks of relu6 / hardswish / hardsigmoid and some saturating values
X_ACT.reshape(-1)[:9] = [0.0, -0.0, 3.0, -3.0, 6.0, -6.0, 1e-8, 30.0, -30.0]


def test_relu():
    check(R.relu, [X_ACT], run_node("Relu", {"x": X_ACT}))


def test_relu6():
    ref = run_node("Clip", {"x": X_ACT}, {"lo": np.float32(0), "hi": np.float32(6)})
    check(R.relu6, [X_ACT], ref)


@pytest.mark.parametrize("lo,hi", [(-1.5, 2.0), (None, 0.5), (-0.25, None), (None, None)])
def test_clip(lo, hi):
    inits, names = {}, ["x", "", ""]
    if lo is not None:
        inits["lo"], names[1] = np.float32(lo), "lo"
    if hi is not None:
        inits["hi"], names[2] = np.float32(hi), "hi"
    while names[-1] == "":
        names.pop()
    ref = run_node("Clip", {"x": X_ACT}, inits, input_names=names)
    check(R.clip, [X_ACT], ref, min=lo, max=hi)


@pytest.mark.parametrize("slope", [0.01, 0.2])
def test_leaky_relu(slope):
    check(R.leaky_relu, [X_ACT], run_node("LeakyRelu", {"x": X_ACT}, alpha=slope), slope=slope)


def test_sigmoid_and_large_inputs():
    check(R.sigmoid, [X_ACT], run_node("Sigmoid", {"x": X_ACT}))
    big = np.array([-1e4, -1000.0, -100.0, -88.0, 0.0, 88.0, 100.0, 1000.0, 1e4, 3e38, -3e38],
                   np.float32).reshape(1, 11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # underflow of exp(-|x|) to 0 is harmless and expected; overflow/invalid are not
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            y = R.sigmoid(big)
    assert np.all(np.isfinite(y))
    assert_close(y, run_node("Sigmoid", {"x": big}))


def test_tanh():
    check(R.tanh, [X_ACT], run_node("Tanh", {"x": X_ACT}))


def test_silu():
    # ONNX has no SiLU op: oracle is the 2-node graph y = x * Sigmoid(x).
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])]
    check(R.silu, [X_ACT], run_graph(nodes, {"x": X_ACT}))


def test_hardswish():
    check(R.hardswish, [X_ACT], run_node("HardSwish", {"x": X_ACT}))


@pytest.mark.parametrize("alpha,beta", [(1 / 6, 0.5), (0.2, 0.5), (0.3, 0.1)])
def test_hardsigmoid(alpha, beta):
    ref = run_node("HardSigmoid", {"x": X_ACT}, alpha=alpha, beta=beta)
    check(R.hardsigmoid, [X_ACT], ref, alpha=alpha, beta=beta)


def test_hardsigmoid_default_is_torch_hardsigmoid():
    # defaults alpha=1/6, beta=0.5 (PyTorch's), not ONNX's 0.2
    ref = run_node("HardSigmoid", {"x": X_ACT}, alpha=1 / 6, beta=0.5)
    assert_close(R.hardsigmoid(X_ACT), ref)


@pytest.mark.parametrize("shape,axis", [((2, 5, 3, 3), 1), ((4, 10), 1), ((4, 10), -1), ((2, 3, 4, 5), 3)])
def test_softmax(shape, axis):
    x = randn(*shape, scale=5.0)
    x.ravel()[0] = 500.0  # would overflow a naive exp in float32
    ref = run_node("Softmax", {"x": x}, axis=axis)
    with np.errstate(over="raise"):
        check(R.softmax, [x], ref, axis=axis)


def test_softmax_default_axis_is_1():
    x = randn(2, 4, 3, 3)
    assert_close(R.softmax(x), run_node("Softmax", {"x": x}, axis=1))


def test_identity_and_dropout():
    check(R.identity, [X_ACT], run_node("Identity", {"x": X_ACT}))
    # ONNX Dropout without training_mode is inference: identity.
    ref = run_node("Dropout", {"x": X_ACT}, {"r": np.float32(0.5)})
    check(R.dropout, [X_ACT], ref, p=0.5)
    check(R.dropout, [X_ACT], ref)


# ---------------------------------------------------------------------------
# binary / structural
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("sa,sb", [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), (2, 3, 1, 1)),
                                   ((2, 3, 1, 1), (2, 3, 4, 5)), ((2, 3, 4, 5), (1, 3, 1, 5)), ((4, 6), (6,))])
@pytest.mark.parametrize("op", ["add", "mul"])
def test_add_mul_broadcast(op, sa, sb):
    a, b = randn(*sa), randn(*sb)
    ref = run_node("Add" if op == "add" else "Mul", {"a": a, "b": b})
    check(getattr(R, op), [a, b], ref)


@pytest.mark.parametrize("axis", [1, 2, 3])
def test_concat(axis):
    shapes = []
    for c in (2, 3, 1):
        s = [2, 4, 3, 5]
        s[axis] = c
        shapes.append(s)
    xs = {f"x{i}": randn(*s) for i, s in enumerate(shapes)}
    ref = run_node("Concat", xs, axis=axis)
    check(R.concat, [list(xs.values())], ref, axis=axis)


@pytest.mark.parametrize("scale", [(2, 2), (3, 1), (1, 4), (2, 3)])
def test_upsample_nearest(scale):
    x = randn(2, 3, 3, 4)
    scales = np.array([1, 1, scale[0], scale[1]], np.float32)
    ref = run_node("Resize", {"x": x}, {"scales": scales}, input_names=["x", "", "scales"], mode="nearest",
                   coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    check(R.upsample_nearest, [x], ref, scale=scale)


PAD_CASES = [
    ("constant", (1, 2, 0, 3), 0.0),
    ("constant", (2, 0, 1, 1), -1.5),
    ("constant", (-1, 2, 1, -2), 0.5),   # negative pads crop
    ("constant", (-1, -1, -1, -1), 0.0),
    ("reflect", (1, 2, 2, 1), 0.0),
    ("reflect", (3, 0, 0, 3), 0.0),
    ("replicate", (2, 1, 3, 0), 0.0),
    ("replicate", (0, 4, 1, 2), 0.0),
    # mixed negative/positive pads in the non-constant modes: crop first, then pad
    # (ONNX Runtime does the same; a different order would reflect/replicate other values)
    ("reflect", (-1, 2, 1, -2), 0.0),
    ("reflect", (2, -2, -1, 1), 0.0),
    ("replicate", (-1, -1, 2, 2), 0.0),
    ("replicate", (2, -2, -1, 1), 0.0),
]


@pytest.mark.parametrize("mode,pads,value", PAD_CASES)
def test_pad(mode, pads, value):
    x = randn(2, 3, 5, 6)
    t, l, b, r = pads
    onnx_pads = np.array([0, 0, t, l, 0, 0, b, r], np.int64)
    onnx_mode = {"replicate": "edge"}.get(mode, mode)
    ref = run_node("Pad", {"x": x}, {"pads": onnx_pads, "v": np.float32(value)}, mode=onnx_mode)
    check(R.pad, [x], ref, pads=pads, value=value, mode=mode)


@pytest.mark.parametrize("start", [1, 2, 3])
def test_flatten(start):
    # flatten keeps axes [0, start) and collapses the rest (torch.flatten(start_dim) semantics).
    # ONNX Flatten always yields 2-D, so it is the oracle only for start=1; for start>1 the oracle
    # is ONNX Reshape with `start` zeros (copy those dims) followed by -1.
    x = randn(2, 3, 4, 5)
    if start == 1:
        ref = run_node("Flatten", {"x": x}, axis=1)
        check(R.flatten, [x], ref)
    else:
        ref = run_node("Reshape", {"x": x}, {"s": np.array([0] * start + [-1], np.int64)})
    check(R.flatten, [x], ref, start=start)


@pytest.mark.parametrize("shape", [(60,), (5, -1), (-1, 3, 4), (3, 2, 10)])
def test_reshape_keeps_batch(shape):
    x = randn(3, 3, 4, 5)
    # ONNX Reshape with a leading 0 copies the batch dim from the input.
    ref = run_node("Reshape", {"x": x}, {"s": np.array((0,) + shape, np.int64)})
    check(R.reshape, [x], ref, shape=shape)


# ---------------------------------------------------------------------------
# yolo_decode
# ---------------------------------------------------------------------------

def _onnx_yolo(x, anchors, classes, image_size):
    # ONNX has no YOLO decode op: the oracle is a graph of primitive ops
    # Reshape -> Transpose -> Slice -> {Sigmoid+Add(grid)*scale, Exp*anchors, Sigmoid} -> Concat -> Reshape.
    n, _, h, w = x.shape
    a, d = len(anchors), 5 + classes
    img_h, img_w = image_size
    gy, gx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    grid = np.stack([gx, gy], axis=-1).astype(np.float32).reshape(1, 1, h, w, 2)  # (col, row)
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    inits = {
        "shape5": i64(n, a, d, h, w), "shape3": i64(n, a * h * w, d),
        "s0": i64(0), "s2": i64(2), "s4": i64(4), "send": i64(d), "ax": i64(-1),
        "grid": grid, "scale": np.array([img_w / w, img_h / h], np.float32),
        "anchors": np.asarray(anchors, np.float32).reshape(1, a, 1, 1, 2),
    }
    nodes = [
        helper.make_node("Reshape", ["x", "shape5"], ["r5"]),
        helper.make_node("Transpose", ["r5"], ["p"], perm=[0, 1, 3, 4, 2]),
        helper.make_node("Slice", ["p", "s0", "s2", "ax"], ["txy"]),
        helper.make_node("Slice", ["p", "s2", "s4", "ax"], ["twh"]),
        helper.make_node("Slice", ["p", "s4", "send", "ax"], ["tcls"]),
        helper.make_node("Sigmoid", ["txy"], ["sxy"]),
        helper.make_node("Add", ["sxy", "grid"], ["gxy"]),
        helper.make_node("Mul", ["gxy", "scale"], ["bxy"]),
        helper.make_node("Exp", ["twh"], ["ewh"]),
        helper.make_node("Mul", ["ewh", "anchors"], ["bwh"]),
        helper.make_node("Sigmoid", ["tcls"], ["scls"]),
        helper.make_node("Concat", ["bxy", "bwh", "scls"], ["cat"], axis=-1),
        helper.make_node("Reshape", ["cat", "shape3"], ["y"]),
    ]
    return run_graph(nodes, {"x": x}, inits)


@pytest.mark.parametrize("n,anchors,classes,hw,img", [
    (2, [(10, 13), (16, 30), (33, 23)], 4, (3, 5), (96, 160)),
    (1, [(5, 7)], 1, (4, 4), (64, 64)),
    (1, [(12, 6), (3, 9)], 0, (1, 1), (32, 32)),
])
def test_yolo_decode_vs_onnx_graph(n, anchors, classes, hw, img):
    x = randn(n, len(anchors) * (5 + classes), *hw, scale=1.5)
    check(R.yolo_decode, [x], _onnx_yolo(x, anchors, classes, img), anchors=anchors, classes=classes, image_size=img)


def test_yolo_decode_hand_derived():
    # A=2 anchors (w,h) = (10,7), (5,9); 1 class; H=1, W=2; image (h, w) = (32, 64) -> cell is 32x32.
    # Channel order per anchor: tx, ty, tw, th, obj, cls.
    ln = math.log
    x = np.zeros((1, 12, 1, 2), np.float32)
    x[0, 0:6, 0, 0] = [0.0, 0.0, ln(2), 0.0, 0.0, ln(3)]            # anchor 0, col 0
    x[0, 0:6, 0, 1] = [0.0, 0.0, 0.0, ln(3), ln(3), 0.0]            # anchor 0, col 1
    x[0, 6:12, 0, 0] = [ln(3), -ln(3), 0.0, ln(0.5), ln(1 / 3), 0.0]  # anchor 1, col 0
    x[0, 6:12, 0, 1] = [ln(3), ln(3), ln(4), 0.0, 0.0, -ln(3)]        # anchor 1, col 1
    # sigmoid(0)=1/2, sigmoid(ln3)=3/4, sigmoid(-ln3)=1/4, sigmoid(ln(1/3))=1/4
    expected = np.array([
        # bx = (s+col)*32, by = (s+0)*32, bw = e^tw*aw, bh = e^th*ah, obj, cls
        [0.5 * 32, 0.5 * 32, 2 * 10, 1 * 7, 0.5, 0.75],          # a0 (row 0, col 0)
        [1.5 * 32, 0.5 * 32, 1 * 10, 3 * 7, 0.75, 0.5],          # a0 (row 0, col 1)
        [0.75 * 32, 0.25 * 32, 1 * 5, 0.5 * 9, 0.25, 0.5],       # a1 (row 0, col 0)
        [1.75 * 32, 0.75 * 32, 4 * 5, 1 * 9, 0.5, 0.25],         # a1 (row 0, col 1)
    ], np.float32)[None]
    y = R.yolo_decode(x, anchors=[(10, 7), (5, 9)], classes=1, image_size=(32, 64))
    assert_close(y, expected)


def test_yolo_decode_row_col_order_hand_derived():
    # A=1, no classes, H=2, W=3, image 60x90 (cell 30x30); all logits 0 -> sigmoid 1/2, exp 1.
    # Rows must be ordered (row, col): centre = ((col+0.5)*30, (row+0.5)*30).
    x = np.zeros((1, 5, 2, 3), np.float32)
    y = R.yolo_decode(x, anchors=[(4, 8)], classes=0, image_size=(60, 90))
    expected = [[(c + 0.5) * 30, (r + 0.5) * 30, 4, 8, 0.5] for r in range(2) for c in range(3)]
    assert_close(y, np.array(expected, np.float32)[None])


# ---------------------------------------------------------------------------
# module hygiene
# ---------------------------------------------------------------------------

def test_module_is_numpy_only():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(R))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported <= {"numpy", "typing", "__future__", "math"}, imported
