"""Plain-numpy reference implementations of every cnnc operator.

These functions are the semantic ground truth the compiled kernels are
checked against.  They favour clarity over speed, but are vectorised: the
only Python loops are over kernel taps (kh * kw), channel-window taps, or
adaptive-pooling bins along one axis.

Conventions
-----------
* Tensors are float32 numpy arrays in NCHW layout (batch first).
* Every function returns a *new* float32 array and never mutates its inputs.
  Inputs may be non-contiguous views.
* Spatial ``pads`` are ONNX-ordered: ``(top, left, bottom, right)``, i.e. all
  begins then all ends.
* Pooling follows PyTorch semantics (ONNX Runtime agrees on every case the
  oracle tests exercise): with ``ceil_mode`` a last window that would start
  inside the bottom/right padding is dropped.
* Reductions (conv, dense, pooling sums, LRN) accumulate in float64 and
  round once to float32 at the end.

Only numpy is imported here so the module stays import-light.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._args import pads4 as _pads4
from ._args import pair as _pair

__all__ = [
    "conv2d",
    "conv_transpose2d",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool",
    "global_max_pool",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "dense",
    "batchnorm",
    "relu",
    "relu6",
    "clip",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "silu",
    "hardswish",
    "hardsigmoid",
    "softmax",
    "identity",
    "dropout",
    "add",
    "mul",
    "concat",
    "upsample_nearest",
    "pad",
    "lrn",
    "flatten",
    "reshape",
    "yolo_decode",
]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _f32(a) -> np.ndarray:
    """Return a float32 *copy* of ``a`` (never a view of the caller's data)."""
    return np.array(a, dtype=np.float32, copy=True)


def _f64(a) -> np.ndarray:
    """Float64 working copy/view for accurate accumulation (read-only use)."""
    return np.asarray(a, dtype=np.float64)


def _conv_out(size: int, k: int, stride: int, pad_begin: int, pad_end: int, dilation: int) -> int:
    """Output length of a conv along one axis (floor rule)."""
    span = dilation * (k - 1) + 1
    out = (size + pad_begin + pad_end - span) // stride + 1
    if out < 1:
        raise ValueError(
            f"empty output: size={size} kernel={k} stride={stride} "
            f"pads=({pad_begin},{pad_end}) dilation={dilation}"
        )
    return out


def _pool_out(size: int, k: int, stride: int, pad_begin: int, pad_end: int,
              dilation: int, ceil_mode: bool) -> int:
    """Output length of a pooling op along one axis (PyTorch rule)."""
    span = dilation * (k - 1) + 1
    num = size + pad_begin + pad_end - span
    out = (-(-num // stride) if ceil_mode else num // stride) + 1
    # PyTorch: the last window must start inside the input or the *left* pad.
    if ceil_mode and (out - 1) * stride >= size + pad_begin:
        out -= 1
    if out < 1:
        raise ValueError(
            f"empty output: size={size} kernel={k} stride={stride} "
            f"pads=({pad_begin},{pad_end}) dilation={dilation}"
        )
    return out


def _pad_hw(x: np.ndarray, top: int, left: int, bottom: int, right: int, value: float) -> np.ndarray:
    """Constant-pad the last two axes; negative amounts crop."""
    h, w = x.shape[-2], x.shape[-1]
    x = x[..., max(-top, 0): h - max(-bottom, 0), max(-left, 0): w - max(-right, 0)]
    widths = [(0, 0)] * (x.ndim - 2) + [(max(top, 0), max(bottom, 0)), (max(left, 0), max(right, 0))]
    return np.pad(x, widths, mode="constant", constant_values=value)


def _tap(xp: np.ndarray, i0: int, j0: int, out_h: int, out_w: int, sh: int, sw: int) -> np.ndarray:
    """Strided window of a padded tensor: element [.., oh, ow] = xp[.., i0 + oh*sh, j0 + ow*sw]."""
    return xp[..., i0: i0 + (out_h - 1) * sh + 1: sh, j0: j0 + (out_w - 1) * sw + 1: sw]


# ---------------------------------------------------------------------------
# convolutions
# ---------------------------------------------------------------------------

def conv2d(x, weight, bias=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """2-D cross-correlation (ONNX Conv / torch conv2d).

    x: (N, Cin, H, W); weight: (Cout, Cin/groups, kh, kw); bias: (Cout,) or None.
    pads = (top, left, bottom, right), may be asymmetric.
    """
    x = _f64(x)
    weight = _f64(weight)
    n, cin, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    g = int(groups)
    if cin % g or cout % g or cin // g != cin_g:
        raise ValueError(f"bad groups={g} for x channels {cin}, weight {weight.shape}")
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    pt, pl, pb, pr = _pads4(pads)
    out_h = _conv_out(h, kh, sh, pt, pb, dh)
    out_w = _conv_out(w, kw, sw, pl, pr, dw)

    xp = _pad_hw(x, pt, pl, pb, pr, 0.0).reshape(n, g, cin_g, h + pt + pb, w + pl + pr)
    wg = weight.reshape(g, cout // g, cin_g, kh, kw)
    out = np.zeros((n, g, cout // g, out_h, out_w), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = _tap(xp, i * dh, j * dw, out_h, out_w, sh, sw)  # (n, g, cin_g, oh, ow)
            out += np.einsum("ngchw,goc->ngohw", patch, wg[:, :, :, i, j])
    out = out.reshape(n, cout, out_h, out_w)
    if bias is not None:
        out += _f64(bias).reshape(1, cout, 1, 1)
    return out.astype(np.float32)


def conv_transpose2d(x, weight, bias=None, stride=(1, 1), pads=(0, 0, 0, 0), output_padding=(0, 0),
                     dilation=(1, 1), groups=1):
    """2-D transposed convolution (ONNX ConvTranspose / torch conv_transpose2d).

    x: (N, Cin, H, W); weight: (Cin, Cout/groups, kh, kw).
    Output size per axis: (in-1)*stride - pad_begin - pad_end + dilation*(k-1) + output_padding + 1.
    Each input pixel (ih, iw) scatters into output position
    (ih*sh + i*dh - pad_top, iw*sw + j*dw - pad_left) for every tap (i, j).
    """
    x = _f64(x)
    weight = _f64(weight)
    n, cin, h, w = x.shape
    cin_w, cout_g, kh, kw = weight.shape
    g = int(groups)
    if cin != cin_w or cin % g:
        raise ValueError(f"bad groups={g} for x channels {cin}, weight {weight.shape}")
    cin_g = cin // g
    cout = cout_g * g
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    oph, opw = _pair(output_padding)
    pt, pl, pb, pr = _pads4(pads)

    full_h = (h - 1) * sh + dh * (kh - 1) + 1  # un-cropped extent
    full_w = (w - 1) * sw + dw * (kw - 1) + 1
    out_h = full_h - pt - pb + oph
    out_w = full_w - pl - pr + opw
    if out_h < 1 or out_w < 1:
        raise ValueError("conv_transpose2d: empty output")

    # Buffer index = output index + pad_begin; large enough for both the full
    # scatter extent and the (output_padding-extended) output window.
    buf = np.zeros((n, g, cout_g, max(full_h, pt + out_h), max(full_w, pl + out_w)), dtype=np.float64)
    xg = x.reshape(n, g, cin_g, h, w)
    wg = weight.reshape(g, cin_g, cout_g, kh, kw)
    for i in range(kh):
        for j in range(kw):
            contrib = np.einsum("ngchw,gco->ngohw", xg, wg[:, :, :, i, j])
            buf[..., i * dh: i * dh + (h - 1) * sh + 1: sh, j * dw: j * dw + (w - 1) * sw + 1: sw] += contrib
    out = buf[..., pt: pt + out_h, pl: pl + out_w].reshape(n, cout, out_h, out_w)
    if bias is not None:
        out = out + _f64(bias).reshape(1, cout, 1, 1)
    return out.astype(np.float32)


# ---------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------

def max_pool2d(x, kernel, stride, pads=(0, 0, 0, 0), dilation=(1, 1), ceil_mode=False):
    """Max pooling; padding (and any ceil_mode overhang) is -inf."""
    x = np.asarray(x, dtype=np.float32)
    h, w = x.shape[-2:]
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride if stride is not None else kernel)
    dh, dw = _pair(dilation)
    pt, pl, pb, pr = _pads4(pads)
    out_h = _pool_out(h, kh, sh, pt, pb, dh, ceil_mode)
    out_w = _pool_out(w, kw, sw, pl, pr, dw, ceil_mode)
    # Extend the end padding so every window (including ceil overhang) fits.
    need_b = (out_h - 1) * sh + dh * (kh - 1) + 1 - (h + pt)
    need_r = (out_w - 1) * sw + dw * (kw - 1) + 1 - (w + pl)
    xp = _pad_hw(x, pt, pl, max(pb, need_b), max(pr, need_r), -np.inf)
    out = np.full(x.shape[:-2] + (out_h, out_w), -np.inf, dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            np.maximum(out, _tap(xp, i * dh, j * dw, out_h, out_w, sh, sw), out=out)
    return out


def _avg_divisor_1d(size: int, k: int, stride: int, pad_begin: int, pad_end: int, out: int,
                    count_include_pad: bool) -> np.ndarray:
    """Per-output-position divisor along one axis, PyTorch's rule.

    start = o*stride - pad_begin; end = min(start + k, size + pad_end).
    With count_include_pad the divisor is end - start (padded positions count,
    ceil overhang past the padded input does not); otherwise only real input
    positions count: min(end, size) - max(start, 0).
    """
    start = np.arange(out) * stride - pad_begin
    end = np.minimum(start + k, size + pad_end)
    if count_include_pad:
        return (end - start).astype(np.float64)
    return (np.minimum(end, size) - np.maximum(start, 0)).astype(np.float64)


def avg_pool2d(x, kernel, stride, pads=(0, 0, 0, 0), ceil_mode=False, count_include_pad=True):
    """Average pooling with PyTorch avg_pool2d semantics (no dilation)."""
    x = _f64(x)
    h, w = x.shape[-2:]
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride if stride is not None else kernel)
    pt, pl, pb, pr = _pads4(pads)
    out_h = _pool_out(h, kh, sh, pt, pb, 1, ceil_mode)
    out_w = _pool_out(w, kw, sw, pl, pr, 1, ceil_mode)
    need_b = (out_h - 1) * sh + kh - (h + pt)
    need_r = (out_w - 1) * sw + kw - (w + pl)
    xp = _pad_hw(x, pt, pl, max(pb, need_b), max(pr, need_r), 0.0)
    total = np.zeros(x.shape[:-2] + (out_h, out_w), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            total += _tap(xp, i, j, out_h, out_w, sh, sw)
    div_h = _avg_divisor_1d(h, kh, sh, pt, pb, out_h, count_include_pad)
    div_w = _avg_divisor_1d(w, kw, sw, pl, pr, out_w, count_include_pad)
    return (total / np.outer(div_h, div_w)).astype(np.float32)


def global_avg_pool(x):
    """Mean over H and W -> (N, C, 1, 1)."""
    return _f64(x).mean(axis=(2, 3), keepdims=True).astype(np.float32)


def global_max_pool(x):
    """Max over H and W -> (N, C, 1, 1)."""
    return _f32(np.max(np.asarray(x, dtype=np.float32), axis=(2, 3), keepdims=True))


def _adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch adaptive bins: [floor(i*in/out), ceil((i+1)*in/out))."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def _adaptive_reduce(x: np.ndarray, output_size, reduce) -> np.ndarray:
    oh, ow = _pair(output_size)
    h, w = x.shape[-2:]
    # Rectangular bins make both max and mean separable: reduce rows, then cols.
    rows = np.stack([reduce(x[..., a:b, :], axis=-2) for a, b in _adaptive_bins(h, oh)], axis=-2)
    return np.stack([reduce(rows[..., a:b], axis=-1) for a, b in _adaptive_bins(w, ow)], axis=-1)


def adaptive_avg_pool2d(x, output_size):
    """Adaptive average pooling (torch.nn.functional.adaptive_avg_pool2d)."""
    return _adaptive_reduce(_f64(x), output_size, np.mean).astype(np.float32)


def adaptive_max_pool2d(x, output_size):
    """Adaptive max pooling (torch.nn.functional.adaptive_max_pool2d)."""
    return _f32(_adaptive_reduce(np.asarray(x, dtype=np.float32), output_size, np.max))


# ---------------------------------------------------------------------------
# dense / normalisation
# ---------------------------------------------------------------------------

def dense(x, weight, bias=None):
    """Fully connected: x (N, K) @ weight (M, K)^T + bias (M,) -> (N, M)."""
    out = _f64(x) @ _f64(weight).T
    if bias is not None:
        out = out + _f64(bias)
    return out.astype(np.float32)


def batchnorm(x, weight, bias, running_mean, running_var, eps=1e-5):
    """Inference batch norm over channel axis 1 (x rank 2 or 4)."""
    x = _f64(x)
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    scale = _f64(weight) / np.sqrt(_f64(running_var) + eps)
    shift = _f64(bias) - _f64(running_mean) * scale
    return (x * scale.reshape(shape) + shift.reshape(shape)).astype(np.float32)


def lrn(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """Local response normalisation across channels (ONNX LRN).

    b[c] = a[c] / (k + alpha/size * sum_{c'} a[c']^2)^beta with c' ranging over
    c - floor((size-1)/2) .. c + ceil((size-1)/2), clipped to valid channels.
    (For odd ``size`` this is identical to torch LocalResponseNorm; for even
    ``size`` torch puts the extra channel *before* c, ONNX after -- we follow ONNX.)
    """
    x = _f64(x)
    size = int(size)
    before = (size - 1) // 2
    after = size - 1 - before
    sq = x * x
    widths = [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2)
    sq = np.pad(sq, widths)
    c = x.shape[1]
    ssum = np.zeros_like(x)
    for t in range(size):
        ssum += sq[:, t: t + c]
    return (x / (k + (alpha / size) * ssum) ** beta).astype(np.float32)


# ---------------------------------------------------------------------------
# activations (elementwise)
# ---------------------------------------------------------------------------

def relu(x):
    return _f32(np.maximum(np.asarray(x, dtype=np.float32), 0.0))


def relu6(x):
    return _f32(np.clip(np.asarray(x, dtype=np.float32), 0.0, 6.0))


def clip(x, min=None, max=None):  # noqa: A002 - names mirror ONNX Clip
    out = _f32(x)
    if min is not None:
        np.maximum(out, np.float32(min), out=out)
    if max is not None:
        np.minimum(out, np.float32(max), out=out)
    return out


def leaky_relu(x, slope=0.01):
    x = np.asarray(x, dtype=np.float32)
    return _f32(np.where(x >= 0, x, x * np.float32(slope)))


def sigmoid(x):
    """Logistic sigmoid, stable for large |x| (never exponentiates a positive number)."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(-np.abs(x))  # in (0, 1], cannot overflow
    return _f32(np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)))


def tanh(x):
    return _f32(np.tanh(np.asarray(x, dtype=np.float32)))


def silu(x):
    """x * sigmoid(x) (a.k.a. swish)."""
    return _f32(np.asarray(x, dtype=np.float32) * sigmoid(x))


def hardswish(x):
    """x * relu6(x + 3) / 6."""
    x = np.asarray(x, dtype=np.float32)
    return _f32(x * np.clip(x + np.float32(3.0), 0.0, 6.0) / np.float32(6.0))


def hardsigmoid(x, alpha=1.0 / 6.0, beta=0.5):
    """clip(alpha*x + beta, 0, 1)."""
    x = np.asarray(x, dtype=np.float32)
    return _f32(np.clip(np.float32(alpha) * x + np.float32(beta), 0.0, 1.0))


def softmax(x, axis=1):
    """Numerically stable softmax along ``axis``."""
    x = _f64(x)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return (e / np.sum(e, axis=axis, keepdims=True)).astype(np.float32)


def identity(x):
    return _f32(x)


def dropout(x, p=0.5):
    """Inference-time dropout is the identity."""
    return _f32(x)


# ---------------------------------------------------------------------------
# tensor plumbing
# ---------------------------------------------------------------------------

def add(a, b):
    return _f32(np.add(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)))


def mul(a, b):
    return _f32(np.multiply(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)))


def concat(xs, axis=1):
    return _f32(np.concatenate([np.asarray(t, dtype=np.float32) for t in xs], axis=axis))


def upsample_nearest(x, scale=(2, 2)):
    """Nearest-neighbour upsampling by integer factors on H and W."""
    fh, fw = _pair(scale)
    x = np.asarray(x, dtype=np.float32)
    return _f32(np.repeat(np.repeat(x, fh, axis=-2), fw, axis=-1))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "edge": "edge"}


def pad(x, pads=(0, 0, 0, 0), value=0.0, mode="constant"):
    """Pad H and W; pads = (top, left, bottom, right); negative amounts crop.

    Modes: "constant" (fill ``value``), "reflect" (mirror without repeating the
    edge, ONNX/torch "reflect"), "replicate" (repeat the edge, ONNX "edge").
    Negative pads are applied (cropped) before positive ones are added.
    """
    if mode not in _PAD_MODES:
        raise ValueError(f"unknown pad mode {mode!r}")
    x = np.asarray(x, dtype=np.float32)
    pt, pl, pb, pr = _pads4(pads)
    if mode == "constant":
        return _f32(_pad_hw(x, pt, pl, pb, pr, value))
    h, w = x.shape[-2:]
    x = x[..., max(-pt, 0): h - max(-pb, 0), max(-pl, 0): w - max(-pr, 0)]
    widths = [(0, 0)] * (x.ndim - 2) + [(max(pt, 0), max(pb, 0)), (max(pl, 0), max(pr, 0))]
    return _f32(np.pad(x, widths, mode=_PAD_MODES[mode]))


def flatten(x, start=1):
    """Collapse axes ``start..`` into one."""
    x = np.asarray(x, dtype=np.float32)
    return _f32(x.reshape(x.shape[:start] + (-1,)))


def reshape(x, shape: Sequence[int]):
    """Reshape keeping the batch dim; ``shape`` excludes batch, one -1 allowed."""
    x = np.asarray(x, dtype=np.float32)
    return _f32(x.reshape((x.shape[0],) + tuple(int(s) for s in shape)))


# ---------------------------------------------------------------------------
# detection head
# ---------------------------------------------------------------------------

def yolo_decode(x, anchors, classes, image_size):
    """Decode a YOLO (v2/v3-style) head into boxes.

    x: (N, A*(5+classes), H, W); anchors: [(w, h), ...] in pixels;
    image_size: (img_h, img_w).  Per cell and anchor:
      bx = (sigmoid(tx) + col) * img_w / W,   by = (sigmoid(ty) + row) * img_h / H,
      bw = exp(tw) * anchor_w,                bh = exp(th) * anchor_h,
      objectness and class scores = sigmoid.
    Returns (N, A*H*W, 5+classes) with rows ordered (anchor, row, col).
    """
    x = np.asarray(x, dtype=np.float32)
    n, ch, h, w = x.shape
    a = len(anchors)
    d = 5 + int(classes)
    if ch != a * d:
        raise ValueError(f"yolo_decode: channels {ch} != {a} anchors * {d}")
    img_h, img_w = image_size
    p = x.reshape(n, a, d, h, w).transpose(0, 1, 3, 4, 2)  # (N, A, H, W, D)
    anc = np.asarray(anchors, dtype=np.float32).reshape(1, a, 1, 1, 2)
    cols = np.arange(w, dtype=np.float32).reshape(1, 1, 1, w)
    rows = np.arange(h, dtype=np.float32).reshape(1, 1, h, 1)

    out = np.empty(p.shape, dtype=np.float32)
    out[..., 0] = (sigmoid(p[..., 0]) + cols) * np.float32(img_w / w)
    out[..., 1] = (sigmoid(p[..., 1]) + rows) * np.float32(img_h / h)
    out[..., 2] = np.exp(p[..., 2]) * anc[..., 0]
    out[..., 3] = np.exp(p[..., 3]) * anc[..., 1]
    out[..., 4:] = sigmoid(p[..., 4:])
    return out.reshape(n, a * h * w, d)
