"""Allocating wrappers with the signatures of ``cnnc.runtime.reference``.

Each wrapper normalises its arguments (writeable float32 C-contiguous arrays, Python ints and
floats, so that every kernel compiles exactly one signature), allocates the output and calls the
kernel.

A runtime that places outputs in an arena prepares each convolution once (``pack_conv2d`` ->
``ConvPlan``, ``ConvTransposePlan``: kernel choice and weight packing) and calls ``plan.run(x,
out)``, and calls the other ``*_kernel`` functions directly with its own ``out`` (and the same
argument normalisation: a read-only or non-contiguous array, an np.float32 scalar where a float
is expected, would compile a second signature).
"""

from __future__ import annotations

import numpy as np

from .._args import pads4 as _pads4
from .._args import pair as _pair

from .. import winograd_plan as _wino_plan
from . import c16 as _c16
from . import conv as _conv
from . import winograd as _wino
from . import eltwise as _elt
from . import pool as _pool
from . import tensor as _ten
from ._act import (
    ACT_CLIP,
    ACT_HARDSIGMOID,
    ACT_HARDSWISH,
    ACT_LEAKY_RELU,
    ACT_NONE,
    ACT_RELU,
    ACT_RELU6,
    ACT_SIGMOID,
    ACT_SILU,
    ACT_TANH,
)

__all__ = [
    "ConvPlan",
    "ConvTransposeC16",
    "ConvTransposePlan",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "add",
    "avg_pool2d",
    "batchnorm",
    "clip",
    "concat",
    "conv2d",
    "conv_strategy",
    "conv_transpose2d",
    "dense",
    "dropout",
    "flatten",
    "global_avg_pool",
    "global_max_pool",
    "hardsigmoid",
    "hardswish",
    "identity",
    "leaky_relu",
    "lrn",
    "max_pool2d",
    "mul",
    "pack_conv2d",
    "pad",
    "relu",
    "relu6",
    "reshape",
    "sigmoid",
    "silu",
    "softmax",
    "tanh",
    "upsample_nearest",
    "yolo_decode",
]

# A group with fewer output channels than this does not fill a 32-channel register tile well
# enough for the blocked kernel; the depthwise kernel (vectorised along the width) takes it.
MIN_BLOCKED_COUT_PER_GROUP = 8
# A 1x1 convolution over at least this many output pixels uses the pointwise (GEMM) kernel.
MIN_POINTWISE_PIXELS = 400
# ... and one that adds a residual from this many: the blocked kernel adds it element by element as it
# stores its tile, the pointwise kernel as whole vectors (ResNet-50's 14x14 expansions with their skip
# add, 1x1 256->1024: 2.9 -> 2.1 ms over the stage at batch 1, 36 -> 27 ms at batch 16; without a
# residual the two kernels tie on 14x14 planes, and the pointwise kernel loses on 7x7 ones).
MIN_POINTWISE_PIXELS_RESIDUAL = 196


# ---------------------------------------------------------------------------
# argument normalisation
# ---------------------------------------------------------------------------


def _f32(a) -> np.ndarray:
    """float32, C-contiguous and writeable (Numba types read-only arrays separately)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a if a.flags.writeable else a.copy()


def _bias(bias, n: int) -> np.ndarray:
    if bias is None:
        return np.zeros(n, np.float32)
    return _f32(bias).reshape(n)


def _conv_out(size, k, s, p0, p1, d) -> int:
    out = (size + p0 + p1 - d * (k - 1) - 1) // s + 1
    if out < 1:
        raise ValueError("convolution output would be empty")
    return out


def _pool_out(size, k, s, p0, p1, d, ceil_mode) -> int:
    num = size + p0 + p1 - d * (k - 1) - 1
    out = (-(-num // s) if ceil_mode else num // s) + 1
    if ceil_mode and (out - 1) * s >= size + p0:  # last window would start in the end padding
        out -= 1
    if out < 1:
        raise ValueError("pooling output would be empty")
    return out


# ---------------------------------------------------------------------------
# convolutions
# ---------------------------------------------------------------------------


_NO_RESIDUAL = np.empty(0, np.float32)


def conv_strategy(weight_shape, groups: int, stride=(1, 1), pads=(0, 0, 0, 0), out_hw=None,
                  residual: bool = False, dilation=(1, 1)) -> str:
    """Which convolution kernel serves this convolution: 'depthwise', 'pointwise', 'dense', 'winograd' (a
    3x3 convolution with many channels: ``winograd_plan.applies``) or 'blocked'.

    ``out_hw`` (output height, width) matters only for 1x1 convolutions: the pointwise kernel
    tiles 32 pixels of the flattened plane and wins once the plane is large enough that its
    overlapping last tile costs little (sooner when a ``residual`` is added), or when few output
    channels per group would leave most of the blocked kernel's 32-channel tile empty.
    """
    cout, cg, kh, kw = weight_shape
    cog = cout // groups
    if groups > 1 and (cg == 1 or cog < MIN_BLOCKED_COUT_PER_GROUP):
        return "depthwise"
    if (groups == 1 and (kh, kw) == (1, 1) and tuple(stride) == (1, 1) and not any(pads)
            and out_hw is not None and tuple(out_hw) == (1, 1)):
        return "dense"  # a 1x1 conv of a 1x1 plane (squeeze-and-excitation) is a matrix-vector product
    if out_hw is not None and _wino_plan.applies(weight_shape, groups, stride, dilation, out_hw):
        return "winograd"
    if (kh, kw) == (1, 1) and tuple(stride) == (1, 1) and not any(pads) and out_hw is not None:
        p = out_hw[0] * out_hw[1]
        enough = MIN_POINTWISE_PIXELS_RESIDUAL if residual else MIN_POINTWISE_PIXELS
        if p >= _conv.PW_PV and (p >= enough or (cog < _conv.OCB and p >= 2 * _conv.PW_PV)):
            return "pointwise"
    return "blocked"


class ConvPlan:
    """A convolution with its weight prepared once; ``run(x, out)`` computes into ``out``.

    The kernel is chosen per input size (``conv_strategy``) and the weight packed for it on first
    use.  ``act`` is a fused activation code (``cnnc.runtime.cpu.ACTIVATIONS``) with parameters
    ``act_a``, ``act_b``.
    """

    def __init__(self, weight, bias, stride, pads, dilation, groups, act=ACT_NONE, act_a=0.0, act_b=0.0):
        self.weight = _f32(weight)
        self.cout, self.cg, self.kh, self.kw = self.weight.shape
        self.groups = int(groups)
        if self.cout % self.groups:
            raise ValueError(f"groups={groups} does not divide {self.cout} output channels")
        self.stride = _pair(stride)
        self.pads = _pads4(pads)
        if min(self.pads) < 0:
            raise ValueError(f"negative convolution padding {self.pads} is not supported")
        self.dilation = _pair(dilation)
        self.bias = _bias(bias, self.cout)
        self.act = (int(act), float(act_a), float(act_b))
        self._packed = {}
        self._bias_c16 = None

    def out_shape(self, x_shape):
        n, c, h, w = x_shape
        if c != self.cg * self.groups:
            raise ValueError(f"input has {c} channels, weight expects {self.cg * self.groups}")
        pt, pl, pb, pr = self.pads
        oh = _conv_out(h, self.kh, self.stride[0], pt, pb, self.dilation[0])
        ow = _conv_out(w, self.kw, self.stride[1], pl, pr, self.dilation[1])
        return (n, self.cout, oh, ow)

    def strategy(self, x_shape, residual: bool = False) -> str:
        shape = (self.cout, self.cg, self.kh, self.kw)
        return conv_strategy(shape, self.groups, self.stride, self.pads, self.out_shape(x_shape)[2:], residual,
                             self.dilation)

    def prepare(self, x_shape, residual: bool = False, layouts: tuple[bool, bool] = (False, False)) -> None:
        """Pack the weight for inputs of ``x_shape`` (and the layouts ``run_c16`` will be called with) now and
        release the unpacked copy (a runtime that knows its shapes keeps one copy of each weight, not two)."""
        strategy = self.strategy(x_shape, residual)
        if any(layouts):
            self.packed_weight("c16_input" if layouts[0] else "blocked")
        else:
            self.packed_weight("blocked" if strategy == "dense" and residual else strategy)
        if strategy != "depthwise":  # the depthwise kernel reads the unpacked weight
            self.weight = None

    def run_c16(self, x, x_shape, in_c16: bool, out, out_c16: bool, residual=None, halo=(0, 0, 0, 0),
                in_halo=(0, 0, 0, 0)):
        """A dense convolution (groups == 1) between layouts: ``x`` and ``out`` flat, each plain or
        channel-blocked (``cpu/c16.py``); ``x_shape`` the input's (N, C, H, W). A blocked input is stored inside a
        zero ``in_halo`` (top, left, bottom, right pixels) at least as wide as the padding, which it provides; a
        ``residual`` (flat) is stored like the output and may be its buffer; a blocked output may be stored
        inside a zero ``halo`` for its consumers' padding."""
        self.c16_runner(x_shape[1:], in_c16, out_c16, residual is not None, halo, in_halo)(x, out, residual,
                                                                                             x_shape[0])
        return out

    def c16_runner(self, x_shape, in_c16: bool, out_c16: bool, residual: bool, halo=(0, 0, 0, 0),
                   in_halo=(0, 0, 0, 0)):
        """``run_c16`` for inputs of per-sample shape ``x_shape`` (C, H, W), with every argument but the arrays
        fixed now: a callable ``(x, out, residual or None, n, x_step=0, out_step=0)`` (flat arrays, ``n``
        samples; a c16 operand's steps are the floats from one sample to the next when it is a channel slice of
        a larger tensor, 0 for its own size) that calls the kernel directly (a network's small layers took a
        few microseconds each to work their arguments out again per call)."""
        pads = tuple(self.pads)
        if self.groups != 1 or (in_c16 and any(p > h for p, h in zip(pads, in_halo))) or (
                not in_c16 and any(in_halo)):
            raise ValueError("channel-blocked convolution needs groups == 1 and a blocked input stored inside a "
                             "halo at least as wide as the padding")
        c, h, w = x_shape
        _, _, oh, ow = self.out_shape((1, *x_shape))
        origin = (0, 0)
        if in_c16:  # the kernel sees the stored planes; the padded input starts inside the halo
            origin = (in_halo[0] - pads[0], in_halo[1] - pads[1])
            h, w = h + in_halo[0] + in_halo[2], w + in_halo[1] + in_halo[3]
            pads = (0, 0, 0, 0)
        wp = self.packed_weight("c16_input" if in_c16 else "blocked")
        if self._bias_c16 is None:  # every lane of a blocked output is written: biases for the padding too
            self._bias_c16 = np.zeros(-(-self.cout // _conv.OCB) * _conv.OCB, np.float32)
            self._bias_c16[: self.cout] = self.bias
        head = (bool(in_c16), c, h, w, wp, self._bias_c16, self.kh, self.kw, *self.stride, *pads,
                *self.dilation, *self.act)
        tail = (self.cout, oh, ow, bool(out_c16), *(int(v) for v in halo), *origin)
        kernel = _conv.conv2d_c16_kernel

        def run(x, out, res, n, x_step=0, out_step=0):
            kernel(x, *head, _NO_RESIDUAL if res is None else res, out, *tail, n, x_step, out_step)
        return run

    def packed_weight(self, strategy: str) -> np.ndarray:
        """The weight in the layout of ``strategy``'s kernel (packed once, then cached)."""
        if strategy not in self._packed:
            if self.weight is None:
                raise ValueError(f"weight released after packing for another input size (no '{strategy}' packing)")
            if strategy == "blocked":
                wp = np.empty(_conv.blocked_weight_shape(self.weight.shape, self.groups), np.float32)
                _conv.conv_pack_weight_kernel(self.weight, wp)
            elif strategy == "pointwise":
                wp = np.empty(_conv.pointwise_weight_shape(self.weight.shape, self.groups), np.float32)
                _conv.conv_pack_pointwise_kernel(self.weight, wp)
            elif strategy == "dense":
                wp = np.ascontiguousarray(self.weight.reshape(self.cout, -1))
            elif strategy == "c16_input":
                wp = _conv.pack_c16_input_weight(self.weight)
            elif strategy == "winograd":
                u = _wino.transform_weight(self.weight)
                wp = np.empty(_conv.pointwise_weight_shape(u.shape, 16), np.float32)
                _conv.conv_pack_pointwise_kernel(u, wp)
                self._zero_bias16 = np.zeros(16 * self.cout, np.float32)
            else:
                wp = self.weight
            self._packed[strategy] = wp
        return self._packed[strategy]

    def workspace_floats(self, x_shape) -> int:
        """Workspace floats per sample ``run`` needs for inputs of ``x_shape`` (only the Winograd path has one)."""
        if self.strategy(x_shape) != "winograd":
            return 0
        _, _, oh, ow = self.out_shape(x_shape)
        return _wino_plan.workspace_floats(x_shape[1], self.cout, oh, ow)

    def run(self, x, out, residual=None, workspace=None):
        """out = act(conv(x) + bias [+ residual]); ``out`` may be ``residual``'s buffer. ``workspace``: flat, at
        least N * ``workspace_floats`` (allocated here when None)."""
        sh, sw = self.stride
        dh, dw = self.dilation
        pt, pl, pb, pr = self.pads
        strategy = self.strategy(x.shape, residual is not None)
        if strategy == "dense" and residual is not None:
            strategy = "blocked"
        wp = self.packed_weight(strategy)
        res = _NO_RESIDUAL if residual is None else residual.reshape(-1)
        if strategy == "winograd":
            if workspace is None:
                workspace = np.empty(x.shape[0] * self.workspace_floats(x.shape), np.float32)
            _wino.winograd_conv(x, wp, self.bias, self._zero_bias16, (pt, pl), self.act, res, out, workspace)
        elif strategy == "blocked":
            _conv.conv2d_blocked_kernel(
                x, wp, self.bias, self.kh, self.kw, sh, sw, pt, pl, pb, pr, dh, dw, *self.act, res, out
            )
        elif strategy == "pointwise":
            _conv.conv2d_pointwise_kernel(x, wp, self.bias, *self.act, res, out)
        elif strategy == "dense":
            n = x.shape[0]
            _ten.dense_kernel(x.reshape(n, -1), wp, self.bias, *self.act, out.reshape(n, -1))
        elif residual is None:
            _conv.conv2d_depthwise_kernel(x, wp, self.bias, sh, sw, pt, pl, pb, pr, dh, dw, *self.act, out)
        else:
            raise ValueError("a residual operand needs a dense convolution (groups == 1)")
        return out


def pack_conv2d(weight, bias=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, **act):
    """Prepare a convolution once (weight packing, kernel choice) for repeated ``run`` calls."""
    return ConvPlan(weight, bias, stride, pads, dilation, groups, **act)


def conv2d(x, weight, bias=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    x = _f32(x)
    plan = ConvPlan(weight, bias, stride, pads, dilation, groups)
    out = np.empty(plan.out_shape(x.shape), np.float32)
    return plan.run(x, out)


class ConvTransposePlan:
    """A transposed convolution prepared once; ``run(x, out)`` computes into ``out``.

    Lowered to a 1x1 convolution (a ``ConvPlan``, so any 1x1 kernel) that forms every (output
    channel, tap) product, followed by ``col2im_kernel`` which adds the taps into place.  The
    intermediate has COUT*KH*KW channels at the input's resolution.
    """

    def __init__(
        self, weight, bias, stride, pads, output_padding, dilation, groups, act=ACT_NONE, act_a=0.0, act_b=0.0
    ):
        weight = _f32(weight)
        self.cin, self.cog, self.kh, self.kw = weight.shape
        self.groups = int(groups)
        if self.cin % self.groups:
            raise ValueError(f"groups={groups} does not divide {self.cin} input channels")
        self.cout = self.cog * self.groups
        self.stride = _pair(stride)
        self.pads = _pads4(pads)
        self.output_padding = _pair(output_padding)
        self.dilation = _pair(dilation)
        self.bias = _bias(bias, self.cout)
        self.act = (int(act), float(act_a), float(act_b))
        self.gemm = ConvPlan(self._pointwise_weight(weight), None, 1, 0, 1, self.groups)

    def _pointwise_weight(self, weight):
        return _conv.transpose_as_pointwise_weight(weight, self.groups)

    def out_shape(self, x_shape):
        n, c, h, w = x_shape
        if c != self.cin:
            raise ValueError(f"input has {c} channels, weight expects {self.cin}")
        (sh, sw), (dh, dw), (oph, opw) = self.stride, self.dilation, self.output_padding
        pt, pl, pb, pr = self.pads
        oh = (h - 1) * sh + dh * (self.kh - 1) + 1 - pt - pb + oph
        ow = (w - 1) * sw + dw * (self.kw - 1) + 1 - pl - pr + opw
        if oh < 1 or ow < 1:
            raise ValueError("conv_transpose2d: empty output")
        return (n, self.cout, oh, ow)

    def c16_input_runner(self, x_shape, in_halo=(0, 0, 0, 0)):
        """For a channel-blocked input of per-sample shape ``x_shape`` (C, H, W) inside ``in_halo`` and a plain
        output (groups == 1): a callable ``(x, cols, out, n, x_step=0)`` (``x`` flat; ``cols`` the
        ``gemm.out_shape`` scratch and ``out`` (N, COUT, OH, OW)); the 1x1 convolution reads the blocked layout
        and writes plain ``cols``."""
        if self.groups != 1:
            raise ValueError("a transposed convolution reading the channel-blocked layout needs groups == 1")
        self.gemm.prepare((1, *x_shape), layouts=(True, False))
        gemm = self.gemm.c16_runner(x_shape, True, False, False, (0, 0, 0, 0), in_halo)
        tail = (self.bias, self.kh, self.kw, *self.stride, *self.pads[:2], *self.dilation, *self.act)

        def run(x, cols, out, n, x_step=0):
            gemm(x, cols.reshape(-1), None, n, x_step, 0)
            _conv.col2im_kernel(cols, *tail, out)
        return run

    def run(self, x, out, cols=None):
        """``cols`` (N, COUT*KH*KW, H, W) is scratch; allocated when not given."""
        if cols is None:
            cols = np.empty(self.gemm.out_shape(x.shape), np.float32)
        self.gemm.run(x, cols)
        (sh, sw), (dh, dw) = self.stride, self.dilation
        pt, pl = self.pads[:2]
        _conv.col2im_kernel(cols, self.bias, self.kh, self.kw, sh, sw, pt, pl, dh, dw, *self.act, out)
        return out


class ConvTransposeC16(ConvTransposePlan):
    """A transposed convolution (groups == 1) writing the channel-blocked layout, from either layout.

    The same lowering as ``ConvTransposePlan``, with the 1x1 convolution's output channels ordered tap-major
    and each tap's channels padded to whole blocks (channel ``(kh * KW + kw) * OCB * 16 + oc``), so that it
    writes channel-blocked ``cols`` with the blocked kernel (reading a blocked input inside its halo, or a
    plain one); ``c16.col2im_c16_kernel`` then gathers each output row's taps, adds the bias and applies the
    activation, into an output that may lie inside a halo or be a run of blocks of a larger tensor."""

    def __init__(self, weight, bias, stride, pads, output_padding, dilation, groups, act=ACT_NONE, act_a=0.0,
                 act_b=0.0):
        if int(groups) != 1:
            raise ValueError("a channel-blocked transposed convolution needs groups == 1")
        super().__init__(weight, bias, stride, pads, output_padding, dilation, groups, act, act_a, act_b)
        self.bias16 = np.zeros(_c16.blocks(self.cout) * _c16.C16, np.float32)
        self.bias16[: self.cout] = self.bias

    def _pointwise_weight(self, weight):
        cin, cout, kh, kw = weight.shape
        w = np.zeros((kh, kw, _c16.blocks(cout) * _c16.C16, cin), np.float32)
        w[:, :, :cout] = weight.transpose(2, 3, 1, 0)
        return w.reshape(-1, cin, 1, 1)

    def c16_runner(self, x_shape, in_c16: bool, in_halo=(0, 0, 0, 0), halo=(0, 0, 0, 0)):
        """For inputs of per-sample shape ``x_shape`` (C, H, W): a callable ``(x, cols, out, n, x_step=0,
        out_step=0)`` on flat arrays (``cols``: the ``gemm.out_shape`` scratch; steps as
        ``ConvPlan.c16_runner``'s). A blocked input lies inside ``in_halo``; the output inside ``halo``, which
        is zeroed."""
        _, h, w = x_shape
        _, _, oh, ow = self.out_shape((1, *x_shape))
        self.gemm.prepare((1, *x_shape), layouts=(in_c16, True))
        gemm = self.gemm.c16_runner(x_shape, in_c16, True, False, (0, 0, 0, 0), in_halo)
        ocb = _c16.blocks(self.cout)
        ht, hl, hb, hr = (int(v) for v in halo)
        ohs, ows = oh + ht + hb, ow + hl + hr
        head = (h, w, self.bias16, self.kh, self.kw, *self.stride, *self.pads[:2], *self.dilation, *self.act)

        def run(x, cols, out, n, x_step=0, out_step=0):
            gemm(x, cols, None, n, x_step, 0)
            step = out_step or ocb * ohs * ows * _c16.C16
            _c16.col2im_c16_kernel(cols, *head, out, ocb, oh, ow, ohs, ows, ht, hl, n, step)
            if ht or hl or hb or hr:
                _c16.zero_halo_c16_kernel(out, n, ocb, step, ohs, ows, ht, hl, hb, hr)
        return run


def conv_transpose2d(
    x, weight, bias=None, stride=(1, 1), pads=(0, 0, 0, 0), output_padding=(0, 0), dilation=(1, 1), groups=1
):
    x = _f32(x)
    plan = ConvTransposePlan(weight, bias, stride, pads, output_padding, dilation, groups)
    out = np.empty(plan.out_shape(x.shape), np.float32)
    return plan.run(x, out)


# ---------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------


def max_pool2d(x, kernel, stride, pads=(0, 0, 0, 0), dilation=(1, 1), ceil_mode=False):
    x = _f32(x)
    n, c, h, w = x.shape
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride if stride is not None else kernel)
    dh, dw = _pair(dilation)
    pt, pl, pb, pr = _pads4(pads)
    oh = _pool_out(h, kh, sh, pt, pb, dh, ceil_mode)
    ow = _pool_out(w, kw, sw, pl, pr, dw, ceil_mode)
    out = np.empty((n, c, oh, ow), np.float32)
    _pool.max_pool2d_kernel(x, kh, kw, sh, sw, pt, pl, dh, dw, out)
    return out


def avg_pool2d(x, kernel, stride, pads=(0, 0, 0, 0), ceil_mode=False, count_include_pad=True):
    x = _f32(x)
    n, c, h, w = x.shape
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride if stride is not None else kernel)
    pt, pl, pb, pr = _pads4(pads)
    oh = _pool_out(h, kh, sh, pt, pb, 1, ceil_mode)
    ow = _pool_out(w, kw, sw, pl, pr, 1, ceil_mode)
    out = np.empty((n, c, oh, ow), np.float32)
    _pool.avg_pool2d_kernel(x, kh, kw, sh, sw, pt, pl, pb, pr, int(bool(count_include_pad)), out)
    return out


def global_avg_pool(x):
    x = _f32(x)
    out = np.empty(x.shape[:2] + (1, 1), np.float32)
    _pool.global_avg_pool_kernel(x, out)
    return out


def global_max_pool(x):
    x = _f32(x)
    out = np.empty(x.shape[:2] + (1, 1), np.float32)
    _pool.global_max_pool_kernel(x, out)
    return out


def _adaptive(x, output_size, is_max):
    x = _f32(x)
    oh, ow = _pair(output_size)
    out = np.empty(x.shape[:2] + (oh, ow), np.float32)
    _pool.adaptive_pool2d_kernel(x, is_max, out)
    return out


def adaptive_avg_pool2d(x, output_size):
    return _adaptive(x, output_size, 0)


def adaptive_max_pool2d(x, output_size):
    return _adaptive(x, output_size, 1)


# ---------------------------------------------------------------------------
# dense / normalisation
# ---------------------------------------------------------------------------


def dense(x, weight, bias=None):
    x = _f32(x)
    weight = _f32(weight)
    m = weight.shape[0]
    out = np.empty((x.shape[0], m), np.float32)
    _ten.dense_kernel(x, weight, _bias(bias, m), ACT_NONE, 0.0, 0.0, out)
    return out


def batchnorm(x, weight, bias, running_mean, running_var, eps=1e-5):
    x = _f32(x)
    n, c = x.shape[:2]
    x3 = x.reshape(n, c, -1)
    out = np.empty_like(x)
    _elt.batchnorm_kernel(
        x3,
        _f32(weight),
        _f32(bias),
        _f32(running_mean),
        _f32(running_var),
        float(eps),
        ACT_NONE,
        0.0,
        0.0,
        out.reshape(x3.shape),
    )
    return out


def lrn(x, size, alpha=1e-4, beta=0.75, k=1.0):
    x = _f32(x)
    n, c = x.shape[:2]
    x3 = x.reshape(n, c, -1)
    out = np.empty_like(x)
    _elt.lrn_kernel(x3, int(size), float(alpha), float(beta), float(k), out.reshape(x3.shape))
    return out


# ---------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------


def _activation(x, code, a=0.0, b=0.0):
    x = _f32(x)
    out = np.empty_like(x)
    _elt.activation_kernel(x.reshape(-1), code, float(a), float(b), out.reshape(-1))
    return out


def relu(x):
    return _activation(x, ACT_RELU)


def relu6(x):
    return _activation(x, ACT_RELU6)


def clip(x, min=None, max=None):  # names mirror ONNX Clip and the reference
    lo = -np.inf if min is None else float(np.float32(min))
    hi = np.inf if max is None else float(np.float32(max))
    return _activation(x, ACT_CLIP, lo, hi)


def leaky_relu(x, slope=0.01):
    return _activation(x, ACT_LEAKY_RELU, slope)


def sigmoid(x):
    return _activation(x, ACT_SIGMOID)


def tanh(x):
    return _activation(x, ACT_TANH)


def silu(x):
    return _activation(x, ACT_SILU)


def hardswish(x):
    return _activation(x, ACT_HARDSWISH)


def hardsigmoid(x, alpha=1.0 / 6.0, beta=0.5):
    return _activation(x, ACT_HARDSIGMOID, alpha, beta)


def softmax(x, axis=1):
    x = _f32(x)
    axis = axis % x.ndim
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x.shape[axis + 1 :], dtype=np.int64))
    x3 = x.reshape(outer, x.shape[axis], inner)
    out = np.empty_like(x)
    _elt.softmax_kernel(x3, out.reshape(x3.shape))
    return out


# ---------------------------------------------------------------------------
# binary ops
# ---------------------------------------------------------------------------


def _per_channel(small_shape, big_shape):
    """(N_or_1, C, 1, ...) against (N, C, ...): return the batch stride of the small one, or None."""
    if len(small_shape) != len(big_shape) or len(big_shape) < 2:
        return None
    if any(d != 1 for d in small_shape[2:]) or small_shape[1] != big_shape[1]:
        return None
    if small_shape[0] == big_shape[0]:
        return big_shape[1]
    if small_shape[0] == 1:
        return 0
    return None


def _binary(a, b, op):
    a = _f32(a)
    b = _f32(b)
    if a.shape == b.shape:
        out = np.empty_like(a)
        _elt.binary_kernel(a.reshape(-1), b.reshape(-1), op, ACT_NONE, 0.0, 0.0, out.reshape(-1))
        return out
    if a.size < b.size:  # add and mul commute: put the full-size operand first
        a, b = b, a
    if b.size == 1 and b.ndim <= a.ndim:
        out = np.empty_like(a)
        _elt.channel_binary_kernel(
            a.reshape(-1), b.reshape(-1), 1, 1, a.size, 0, op, ACT_NONE, 0.0, 0.0, out.reshape(-1)
        )
        return out
    stride = _per_channel(b.shape, a.shape)
    if stride is not None:
        n, c = a.shape[:2]
        out = np.empty_like(a)
        _elt.channel_binary_kernel(
            a.reshape(-1), b.reshape(-1), n, c, a.size // (n * c), stride, op, ACT_NONE, 0.0, 0.0, out.reshape(-1)
        )
        return out
    # any other numpy broadcast: materialise both operands, then the equal-shape kernel
    shape = np.broadcast_shapes(a.shape, b.shape)
    a = np.ascontiguousarray(np.broadcast_to(a, shape))
    b = np.ascontiguousarray(np.broadcast_to(b, shape))
    return _binary(a, b, op)


def add(a, b):
    return _binary(a, b, _elt.OP_ADD)


def mul(a, b):
    return _binary(a, b, _elt.OP_MUL)


# ---------------------------------------------------------------------------
# tensor plumbing
# ---------------------------------------------------------------------------


def _copy(x, shape):
    x = _f32(x)
    out = np.empty(shape, np.float32)
    _ten.copy_into_kernel(x.reshape(1, -1), 0, out.reshape(1, -1))
    return out


def identity(x):
    x = _f32(x)
    return _copy(x, x.shape)


def dropout(x, p=0.5):
    return identity(x)


def flatten(x, start=1):
    x = _f32(x)
    return _copy(x, x.shape[:start] + (int(np.prod(x.shape[start:], dtype=np.int64)),))


def reshape(x, shape):
    x = _f32(x)
    return _copy(x, x.reshape((x.shape[0],) + tuple(int(s) for s in shape)).shape)


def concat(xs, axis=1):
    xs = [_f32(t) for t in xs]
    ndim = xs[0].ndim
    axis = axis % ndim
    shape = list(xs[0].shape)
    shape[axis] = sum(t.shape[axis] for t in xs)
    out = np.empty(shape, np.float32)
    concat_into(xs, axis, out)
    return out


def concat_into(xs, axis: int, out) -> None:
    """Copy each of `xs` into its slice of `out` along `axis` (all C-contiguous float32)."""
    outer = int(np.prod(out.shape[:axis], dtype=np.int64))
    o2 = out.reshape(outer, -1)
    off = 0
    for t in xs:
        t2 = t.reshape(outer, -1)
        _ten.copy_into_kernel(t2, off, o2)
        off += t2.shape[1]


def upsample_nearest(x, scale=(2, 2)):
    x = _f32(x)
    fh, fw = _pair(scale)
    n, c, h, w = x.shape
    out = np.empty((n, c, h * fh, w * fw), np.float32)
    _ten.upsample_nearest_kernel(x, fh, fw, out)
    return out


def pad(x, pads=(0, 0, 0, 0), value=0.0, mode="constant"):
    if mode not in _ten.PAD_MODES:
        raise ValueError(f"unknown pad mode {mode!r}")
    x = _f32(x)
    pt, pl, pb, pr = _pads4(pads)
    lead = x.shape[:-2]
    h, w = x.shape[-2:]
    x4 = x.reshape((-1, 1, h, w))
    oh = h + pt + pb
    ow = w + pl + pr
    if oh < 1 or ow < 1:
        raise ValueError("pad: empty output")
    out = np.empty(lead + (oh, ow), np.float32)
    _ten.pad_kernel(x4, pt, pl, pb, pr, _ten.PAD_MODES[mode], float(value), out.reshape(x4.shape[0], 1, oh, ow))
    return out


def yolo_decode(x, anchors, classes, image_size):
    x = _f32(x)
    n, ch, h, w = x.shape
    anc = np.ascontiguousarray(np.asarray(anchors, dtype=np.float32).reshape(-1, 2))
    a = anc.shape[0]
    d = 5 + int(classes)
    if ch != a * d:
        raise ValueError(f"yolo_decode: channels {ch} != {a} anchors * {d}")
    img_h, img_w = image_size
    out = np.empty((n, a * h * w, d), np.float32)
    _ten.yolo_decode_kernel(x, anc, float(img_h), float(img_w), out)
    return out
