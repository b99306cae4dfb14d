"""The CUDA target: a plan bound to the numba.cuda kernels of runtime/cuda/ over one device arena.

Binding (once per plan and weights): the device is checked first (a missing package, driver or GPU is
one DeviceUnavailableError saying what was looked for and what was found). Every step gets a runner
with its weights prepared on the host exactly as the CPU target prepares them (the same batchnorm
folding and activation arguments, imported from cpu_program.py) and uploaded once; they stay on the
device. flatten/reshape/identity/dropout are views.
Per batch size (once per size, then cached): one device arena sized from the memory plan's per-sample
offsets, pinned host buffers for the inputs and outputs, and every tensor's flat device view (all from
one lookup, `_locate`).
A run copies the inputs in, launches every kernel on one stream with no host synchronisation between
them, copies the outputs out and waits once, for the whole batch.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from dataclasses import dataclass, field

import numpy as np

from .cpu.conv import transpose_as_pointwise_weight
from .padding import PAD_MODES
from .cpu_program import _act_args, bound_params, chain_tables
from .executor import DeviceUnavailableError, PlanError
from .memory import VIEW_OPS, blocked_tensors, check_fits, plan_memory, storage_owner

_NO_ACT = (0, 0.0, 0.0)
_ACTIVATION_OPS = ("relu", "relu6", "clip", "leaky_relu", "sigmoid", "tanh", "silu", "hardswish", "hardsigmoid")


def _one_line(err: BaseException) -> str:
    """A driver error as one short line (numba-cuda's are several, with advice we replace)."""
    text = " ".join(str(err).split()).removeprefix("Error at driver init:").strip(" :")
    first = text.split(". ")[0].rstrip(".")
    return first or type(err).__name__


def require_device():
    """numba.cuda, once a CUDA GPU can be used here (or Numba's CUDA simulator is on)."""
    if importlib.util.find_spec("numba_cuda") is None:
        import numba
        raise DeviceUnavailableError(
            f"--target cuda needs the numba-cuda package: looked for it beside numba {numba.__version__}, found it "
            "not installed; install it with `pip install -e .[cuda]`")
    version = importlib.metadata.version("numba-cuda")
    try:
        from numba import cuda
    except Exception as err:  # noqa: BLE001  (any import failure: e.g. the CUDA Python bindings missing)
        raise DeviceUnavailableError(f"--target cuda: numba-cuda {version} is installed but does not import "
                                     f"({_one_line(err)}); reinstall it with `pip install -e .[cuda]`") from None
    import numba
    if numba.config.ENABLE_CUDASIM:
        return cuda
    try:
        device = cuda.get_current_device()
        cc = tuple(device.compute_capability)
    except Exception as err:  # noqa: BLE001  (CudaSupportError, CudaDriverError: no driver, no device, too old)
        raise DeviceUnavailableError(
            f"--target cuda found no usable NVIDIA GPU: looked for the CUDA driver (libcuda) and a device through "
            f"numba-cuda {version}, found: {_one_line(err)}; run on a machine with an NVIDIA GPU and its driver "
            "(R525 or newer for CUDA 12), or use --target cpu") from None
    if cc < (5, 0):
        raise DeviceUnavailableError(f"--target cuda found a GPU of compute capability {cc[0]}.{cc[1]}; numba-cuda "
                                     "needs 5.0 or newer; use --target cpu")
    return cuda


def _conv_over_input(plan: dict, memory: dict) -> bool:
    """Whether the memory plan puts a convolution's output over its own (first) input."""
    in_place = memory.get("in_place", {})
    return any(s["op"] == "conv" and s["inputs"] and in_place.get(s["output"]) == storage_owner(memory, s["inputs"][0])
               for s in plan["steps"])


def _device_free_bytes(cuda) -> int | None:
    try:
        free = cuda.current_context().get_memory_info()[0]
    except Exception:  # noqa: BLE001  (not reported: the free memory is then unknown)
        return None
    return int(free) if math.isfinite(free) else None


@dataclass
class _Batch:
    """Everything sized for one batch size: device buffers, pinned staging, and each step's arguments."""

    arena: object
    inputs: dict  # input name -> flat device buffer
    input_staging: dict  # input name -> pinned host array (n, *shape)
    output_staging: dict  # output name -> pinned host array (n, *shape)
    views: dict  # tensor -> flat device view
    calls: list = field(default_factory=list)  # (step index, runner, inputs, output, scratch)


class CudaProgram:
    def __init__(self, plan: dict, weights: dict[str, np.ndarray], memory_limit: int | None = None):
        self.cuda = require_device()
        from .cuda import KERNELS, grid_1d  # imports numba.cuda: only now that it is known to work

        self.kernels = KERNELS
        self._grid = grid_1d  # (blocks, threads) of a grid-stride launch over a count
        self.plan = plan
        self.memory_limit = memory_limit  # bytes; None: what the device has free; 0: no check
        self.shapes = {k: tuple(v) for k, v in plan["tensors"].items()}
        self.input_names = [i["name"] for i in plan["inputs"]]
        self.outputs = [(o["name"], o["tensor"]) for o in plan["outputs"]]
        memory = plan.get("memory") or plan_memory(plan)
        if memory.get("slices") or blocked_tensors(plan) or _conv_over_input(plan, memory) or memory.get("workspace"):
            # A channel slice of a batched buffer is strided across the samples, and these kernels take
            # every tensor as one contiguous range: re-plan the arena with concatenations copying instead.
            # Likewise channel-blocked storage (the layout pass): these kernels keep every tensor plain; and
            # a convolution written over its own input (the CPU's banded kernel): these read it while storing;
            # and the CPU's Winograd workspaces, which these kernels do not use.
            memory = plan_memory(plan, concat_in_place=False, layouts=False, conv_in_place=False, workspaces=False)
        # the tensor that owns each tensor's storage: itself, what it is a view of, or the buffer it was
        # planned over (in place)
        self.root: dict[str, str] = {t: storage_owner(memory, t) for t in self.shapes}
        self.offsets = dict(memory["offsets"])
        self.arena_per_sample = int(memory["per_sample"])
        self.no_reuse_per_sample = int(memory["no_reuse"])
        # the tensors the steps and outputs use (the plan's table may also list tensors fused away)
        self._used = {t for step in plan["steps"] for t in (*step["inputs"], step["output"])}
        self._used |= {t for _, t in self.outputs}
        self.stream = self.cuda.stream()
        self._scratch_per_sample: dict[str, int] = {}  # conv_transpose output -> floats per sample
        self._keep: list = []  # host arrays whose upload may still be in flight
        self.runners = [self._bind(step, weights) for step in plan["steps"]]
        self.stream.synchronize()
        self._keep.clear()
        self._per_batch: dict[int, _Batch] = {}

    # ---- binding -----------------------------------------------------------------------------------

    def _upload(self, a: np.ndarray):
        host = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
        self._keep.append(host)
        return self.cuda.to_device(host, stream=self.stream)

    def _launch(self, name: str, grid, block, *args) -> None:
        self.kernels[name].launch(grid, block, self.stream, *args)

    def _bind(self, step: dict, weights: dict[str, np.ndarray]):
        """A runner ``(n, inputs, output, scratch) -> None`` for the step (None for a view)."""
        op, a = step["op"], step["attrs"]
        if op in VIEW_OPS:
            return None
        p, act, weight, bias = bound_params(step, weights)
        residual = bool(a.get("residual"))
        if residual and (op != "conv" or len(step["inputs"]) != 2
                         or self.shapes[step["inputs"][1]] != self.shapes[step["output"]]):
            raise PlanError(f"step {step['name']}: a residual needs a conv with a second input of its output's shape")
        in_shape = self.shapes[step["inputs"][0]]
        out_shape = self.shapes[step["output"]]
        if op == "conv":
            return self._bind_conv(weight, bias, a, in_shape, out_shape, act, residual)
        if op == "conv_transpose":
            return self._bind_conv_transpose(step["output"], weight, bias, a, in_shape, out_shape, act)
        if op == "dense":
            return self._bind_dense(weight, bias, act)
        if op in ("batchnorm", "affine"):
            return self._bind_scale_shift(op, p, a, in_shape, act)
        if op in _ACTIVATION_OPS:
            code, x1, x2 = _act_args(op, a)
            return lambda n, xs, out, s: self._launch("activation", *self._grid(out.size), xs[0], out, out.size,
                                                      code, x1, x2)
        if op in ("add", "mul"):
            return self._bind_binary(op, step, act)
        if op == "eltwise_chain":
            return self._bind_chain(step)
        if op in ("maxpool", "avgpool", "global_avgpool", "global_maxpool", "adaptive_avgpool", "adaptive_maxpool"):
            return self._bind_pool(op, a, in_shape, out_shape)
        if op == "softmax":
            rank = len(in_shape) + 1
            axis = a["axis"] % rank

            def run_softmax(n, xs, out, s):
                full = (n, *in_shape)
                outer, inner = math.prod(full[:axis]), math.prod(full[axis + 1:])
                self._launch("softmax", *self._grid(outer * inner), xs[0], out, outer, full[axis], inner)
            return run_softmax
        if op == "lrn":
            c, spatial = in_shape[0], math.prod(in_shape[1:])
            args = (int(a["size"]), float(a["alpha"]), float(a["beta"]), float(a["k"]))
            return lambda n, xs, out, s: self._launch("lrn", *self._grid(out.size), xs[0], out, n, c, spatial, *args)
        if op == "concat":
            return self._bind_concat(step, a)
        if op == "upsample":
            c, h, w = in_shape
            fh, fw = (int(v) for v in a["scale"])
            return lambda n, xs, out, s: self._launch("upsample_nearest", *self._grid(out.size), xs[0], out,
                                                      n * c, h, w, fh, fw)
        if op == "pad":
            h, w = in_shape[-2:]
            oh, ow = out_shape[-2:]
            planes = math.prod(in_shape[:-2])
            pads = tuple(int(v) for v in a["pads"])
            mode, value = PAD_MODES[a["mode"]], float(a["value"])
            return lambda n, xs, out, s: self._launch("pad", *self._grid(out.size), xs[0], out, n * planes, h, w,
                                                      oh, ow, *pads, mode, value)
        if op == "yolo":
            anchors = np.asarray(a["anchors"], np.float32).reshape(-1, 2)
            d_anchors = self._upload(anchors)
            ch, h, w = in_shape
            na = anchors.shape[0]
            img_h, img_w = (float(v) for v in a["image_size"])
            return lambda n, xs, out, s: self._launch("yolo_decode", *self._grid(out.size), xs[0], d_anchors, out,
                                                      n, na, ch // na, h, w, img_h, img_w)
        raise KeyError(op)

    def _bias(self, bias, count: int):
        return self._upload(np.zeros(count, np.float32) if bias is None else bias)

    def _bind_conv(self, weight, bias, a, in_shape, out_shape, act, residual):
        from .cuda import conv as C
        from .cuda._common import SIMULATOR, cdiv, pow2_at_least

        cout, cg, kh, kw = weight.shape
        groups = int(a["groups"])
        cog = cout // groups
        cin, h, w = in_shape
        _, oh, ow = out_shape
        sh, sw = (int(v) for v in a["stride"])
        dh, dw = (int(v) for v in a["dilation"])
        pt, pl, pb, pr = (int(v) for v in a["pads"])
        geometry = (kh, kw, sh, sw, pt, pl, dh, dw)
        d_bias = self._bias(bias, cout)
        has_res = int(residual)

        def res_of(xs, out):  # without a residual the kernel never reads it: any float32 array will do
            return xs[1] if residual else out

        strategy = "direct"
        if groups > 1 and (cg == 1 or cog < C.DIRECT_CHANNELS):
            strategy = "depthwise"
        elif (kh, kw, sh, sw, pt, pl, pb, pr) == (1, 1, 1, 1, 0, 0, 0, 0):
            strategy = "pointwise"

        if strategy == "pointwise":
            d_w = self._upload(weight)
            m, k, pix = cog, cg, oh * ow
            block = self._gemm_block(m, pix)
            bm, bn = block[1] * C.GEMM_TM, block[0] * C.GEMM_TN

            def run_pointwise(n, xs, out, s):
                self._launch("gemm", (cdiv(pix, bn), cdiv(m, bm), n * groups), block, d_w, xs[0], d_bias,
                             res_of(xs, out), out, m, pix, k, groups, cin * pix, pix, 1, cout * pix, pix, 1,
                             has_res, *act)
            return run_pointwise

        if strategy == "depthwise":
            bx = pow2_at_least(ow, 4 if SIMULATOR else 32)
            by = 1 if SIMULATOR else pow2_at_least(cdiv(oh, C.DW_ROWS), max(1, 128 // bx))
            th = by * C.DW_ROWS
            patch = ((th - 1) * sh + (kh - 1) * dh + 1) * ((bx - 1) * sw + (kw - 1) * dw + 1)
            if patch <= C.DW_SMEM:
                d_w = self._upload(weight)
                tiles_w = cdiv(ow, bx)
                tiles = cdiv(oh, th) * tiles_w

                def run_depthwise(n, xs, out, s):
                    self._launch("conv2d_depthwise", (tiles, cout, n), (bx, by), xs[0], d_w, d_bias,
                                 res_of(xs, out), out, cin, h, w, cout, oh, ow, groups, *geometry, tiles_w,
                                 has_res, *act)
                return run_depthwise
            strategy = "generic"

        if strategy == "direct":
            if SIMULATOR:
                bx, by, bz = 4, 1, 1
            else:
                bx = 8 if ow <= 8 else 16
                by = 1 if oh <= C.DIRECT_ROWS else 2
                bz = max(1, min(128 // (bx * by), cdiv(cog, C.DIRECT_CHANNELS)))
            th, tc = by * C.DIRECT_ROWS, bz * C.DIRECT_CHANNELS
            patch = ((th - 1) * sh + (kh - 1) * dh + 1) * ((bx - 1) * sw + (kw - 1) * dw + 1)
            # Input channels staged per step: as many as the shared arrays hold (two in the simulator, so
            # that its tests go through several chunks and a partial last one).
            ci_chunk = min(cg, C.DIRECT_SMEM_X // patch, C.DIRECT_SMEM_W // (kh * kw * tc), 2 if SIMULATOR else cg)
            if ci_chunk >= 1:
                packed = weight.reshape(groups, cog, cg, kh, kw).transpose(0, 2, 3, 4, 1)  # (G, CG, KH, KW, COG)
                d_w = self._upload(packed)
                tiles_w, co_tiles = cdiv(ow, bx), cdiv(cog, tc)
                grid_xy = (cdiv(oh, th) * tiles_w, groups * co_tiles)

                def run_direct(n, xs, out, s):
                    self._launch("conv2d_direct", (*grid_xy, n), (bx, by, bz), xs[0], d_w, d_bias, res_of(xs, out),
                                 out, cin, h, w, cout, oh, ow, groups, *geometry, ci_chunk, tiles_w, co_tiles,
                                 has_res, *act)
                return run_direct

        d_w = self._upload(weight)  # generic: any window, no staging

        def run_generic(n, xs, out, s):
            self._launch("conv2d_generic", *self._grid(out.size), xs[0], d_w, d_bias, res_of(xs, out), out,
                         n, cin, h, w, cout, oh, ow, groups, *geometry, has_res, *act)
        return run_generic

    def _gemm_block(self, m: int, cols: int) -> tuple[int, int]:
        """(blockDim.x, blockDim.y) of the GEMM for an M x P product: up to 256 threads, no wider than needed."""
        from .cuda import conv as C
        from .cuda._common import SIMULATOR, cdiv, pow2_at_least
        if SIMULATOR:
            return pow2_at_least(cdiv(cols, C.GEMM_TN), 2), pow2_at_least(cdiv(m, C.GEMM_TM), 2)
        bx = pow2_at_least(cdiv(cols, C.GEMM_TN), C.GEMM_MAX_BN // C.GEMM_TN // 2)
        by = pow2_at_least(cdiv(m, C.GEMM_TM), min(C.GEMM_MAX_BM // C.GEMM_TM, max(1, 256 // bx)))
        return bx, by

    def _bind_conv_transpose(self, output, weight, bias, a, in_shape, out_shape, act):
        """A GEMM forms every (output channel, tap) product at the input's resolution into a scratch buffer,
        then col2im gathers the taps of each output (the CPU's lowering, without its scatter)."""
        from .cuda import conv as C
        from .cuda._common import cdiv

        cin, cog, kh, kw = weight.shape
        groups = int(a["groups"])
        cout = cog * groups
        _, h, w = in_shape
        _, oh, ow = out_shape
        sh, sw = (int(v) for v in a["stride"])
        dh, dw = (int(v) for v in a["dilation"])
        pt, pl = (int(v) for v in a["pads"][:2])
        d_wt = self._upload(transpose_as_pointwise_weight(weight, groups))
        m, k, pix = cog * kh * kw, cin // groups, h * w
        d_zero = self._bias(None, groups * m)
        d_bias = self._bias(bias, cout)
        self._scratch_per_sample[output] = cout * kh * kw * pix
        block = self._gemm_block(m, pix)
        bm, bn = block[1] * C.GEMM_TM, block[0] * C.GEMM_TN

        def run(n, xs, out, cols):
            self._launch("gemm", (cdiv(pix, bn), cdiv(m, bm), n * groups), block, d_wt, xs[0], d_zero, cols, cols,
                         m, pix, k, groups, cin * pix, pix, 1, groups * m * pix, pix, 1, 0, *_NO_ACT)
            self._launch("col2im", *self._grid(out.size), cols, d_bias, out, n, cout, h, w, oh, ow, kh, kw, sh, sw,
                         pt, pl, dh, dw, *act)
        return run

    def _bind_dense(self, weight, bias, act):
        from .cuda import conv as C
        from .cuda._common import cdiv

        m, k = weight.shape
        d_w, d_bias = self._upload(weight), self._bias(bias, m)

        def run(n, xs, out, s):  # C (M, batch) = W (M, K) @ x^T: the batch is the GEMM's column axis
            bx, by = self._gemm_block(m, n)
            self._launch("gemm", (cdiv(n, bx * C.GEMM_TN), cdiv(m, by * C.GEMM_TM), 1), (bx, by), d_w, xs[0], d_bias,
                         out, out, m, n, k, 1, 0, 1, k, 0, 1, m, 0, *act)
        return run

    def _bind_scale_shift(self, op, p, a, in_shape, act):
        c, size = in_shape[0], math.prod(in_shape[1:])
        weight = p.get("weight", np.ones(c, np.float32)).astype(np.float64)
        bias = p.get("bias", np.zeros(c, np.float32)).astype(np.float64)
        if op == "batchnorm":  # folded per channel in float64, as the CPU kernel does
            scale = weight / np.sqrt(p["running_var"].astype(np.float64) + float(a["eps"]))
            shift = bias - p["running_mean"].astype(np.float64) * scale
        else:
            scale, shift = weight, bias
        d_scale, d_shift = self._upload(scale), self._upload(shift)
        return lambda n, xs, out, s: self._launch("scale_shift", *self._grid(out.size), xs[0], d_scale, d_shift, out,
                                                  out.size, c, size, *act)

    def _bind_binary(self, op, step, act):
        """add/mul of two or more tensors, folded left to right (the activation after the last), with the
        broadcasts of the CPU target: equal shapes, a per-channel or scalar operand, any other numpy one."""
        code = 0 if op == "add" else 1
        names = list(step["inputs"])
        # The output may share storage with an input (planned in place); folding writes the output before
        # it reads the third input on, so an input that is the output's own buffer goes first.
        for i in range(2, len(names)):
            if self._same_storage(names[i], step["output"]):
                names.insert(0, names.pop(i))
                break
        order = [step["inputs"].index(t) for t in names]
        shapes = [self.shapes[t] for t in names]
        out_shape = self.shapes[step["output"]]

        def run(n, xs, out, s):
            xs = [xs[i] for i in order]
            acc, acc_shape = xs[0], (n, *shapes[0])
            for i in range(1, len(xs)):
                last = i == len(xs) - 1
                self._binary(acc, acc_shape, xs[i], (n, *shapes[i]), out, (n, *out_shape), code,
                             act if last else _NO_ACT)
                acc, acc_shape = out, (n, *out_shape)
        return run

    def _bind_chain(self, step):
        """An elementwise chain (fuse_elementwise): its stages and operands (`chain_tables`) as the kernel's two
        float tables."""
        c, plane, stages, operands = chain_tables(step, self.shapes)
        d_stages, d_operands = (self._upload(np.array([float(v) for row in table for v in row], np.float32))
                                for table in (stages, operands))
        none = self._upload(np.zeros(1, np.float32))

        def run(n, xs, out, s):
            ops = list(xs[1:]) + [none] * (3 - len(operands))
            self._launch("eltwise_chain", *self._grid(out.size), xs[0], *ops, d_stages, d_operands, out, out.size,
                         c, plane)
        return run

    def _binary(self, a, a_shape, b, b_shape, out, out_shape, code, act) -> None:
        if a_shape == b_shape:
            self._launch("binary_same", *self._grid(out.size), a, b, out, out.size, code, *act)
            return
        if b.size > a.size:  # add and mul commute: the full-size operand first
            a, a_shape, b, b_shape = b, b_shape, a, a_shape
        if a_shape == out_shape:
            if b.size == 1:
                self._launch("binary_channel", *self._grid(out.size), a, b, out, out.size, 1, out.size, 0, code, *act)
                return
            n, c = a_shape[:2]
            if (len(b_shape) == len(a_shape) and b_shape[1] == c and all(d == 1 for d in b_shape[2:])
                    and b_shape[0] in (1, n)):
                stride = c if b_shape[0] == n else 0
                self._launch("binary_channel", *self._grid(out.size), a, b, out, out.size, c, out.size // (n * c),
                             stride, code, *act)
                return
        if len(out_shape) > 4:
            raise PlanError(f"broadcast of rank {len(out_shape)} (at most 4 on the cuda target)")
        dims = (1,) * (4 - len(out_shape)) + tuple(out_shape)
        self._launch("binary_broadcast", *self._grid(out.size), a, b, out, *dims,
                     *_broadcast_strides(a_shape, dims), *_broadcast_strides(b_shape, dims), code, *act)

    def _bind_pool(self, op, a, in_shape, out_shape):
        c, h, w = in_shape
        _, oh, ow = out_shape
        if op == "maxpool":
            args = (*a["kernel"], *a["stride"], *a["pads"][:2], *a["dilation"])
            args = tuple(int(v) for v in args)
            return lambda n, xs, out, s: self._launch("max_pool2d", *self._grid(out.size), xs[0], out, n * c, h, w,
                                                      oh, ow, *args)
        if op == "avgpool":
            args = tuple(int(v) for v in (*a["kernel"], *a["stride"], *a["pads"])) + (int(bool(a["count_include_pad"])),)
            return lambda n, xs, out, s: self._launch("avg_pool2d", *self._grid(out.size), xs[0], out, n * c, h, w,
                                                      oh, ow, *args)
        if op in ("global_avgpool", "global_maxpool"):
            from .cuda._common import SIMULATOR, pow2_at_least
            from .cuda.pool import GLOBAL_POOL_MAX_THREADS
            threads = pow2_at_least(h * w, 4 if SIMULATOR else GLOBAL_POOL_MAX_THREADS)
            is_max = int(op == "global_maxpool")
            return lambda n, xs, out, s: self._launch("global_pool", (1 if SIMULATOR else min(n * c, 65535),),
                                                      (threads,), xs[0], out, n * c, h * w, is_max)
        is_max = int(op == "adaptive_maxpool")
        return lambda n, xs, out, s: self._launch("adaptive_pool2d", *self._grid(out.size), xs[0], out, n * c, h, w,
                                                  oh, ow, is_max)

    def _bind_concat(self, step, a):
        out_shape = self.shapes[step["output"]]
        axis = a["axis"] % (len(out_shape) + 1)
        in_shapes = [self.shapes[t] for t in step["inputs"]]

        def run(n, xs, out, s):
            outer = math.prod((n, *out_shape)[:axis])
            cols_out = out.size // outer
            offset = 0
            for x, shape in zip(xs, in_shapes):
                cols = x.size // outer
                self._launch("copy_into", *self._grid(x.size), x, out, outer, cols, cols_out, offset)
                offset += cols
        return run

    # ---- storage: where every tensor lives -----------------------------------------------------------

    def _same_storage(self, t1: str, t2: str) -> bool:
        """Whether two tensors' storage overlaps (views of one owner, or arena ranges that overlap)."""
        o1, o2 = self.root.get(t1, t1), self.root.get(t2, t2)
        if o1 == o2:
            return True
        if o1 not in self.offsets or o2 not in self.offsets:
            return False
        s1, s2 = self.offsets[o1], self.offsets[o2]
        return s1 < s2 + math.prod(self.shapes[o2]) and s2 < s1 + math.prod(self.shapes[o1])

    def _locate(self, t: str, n: int, arena, inputs: dict):
        """The flat device array of tensor ``t`` at batch ``n``: every tensor lookup goes through here."""
        owner = self.root.get(t, t)
        if owner in inputs:
            return inputs[owner]
        start = self.offsets[owner] * n
        return arena[start: start + math.prod(self.shapes[owner]) * n]

    def _buffers(self, n: int) -> _Batch:
        cached = self._per_batch.get(n)
        if cached is not None:
            return cached
        self._per_batch.clear()  # release the previous batch size's buffers before sizing new ones
        cuda = self.cuda
        per_sample = (self.arena_per_sample + sum(self._scratch_per_sample.values())
                      + sum(math.prod(self.shapes[t]) for t in self.input_names)
                      + sum(math.prod(self.shapes[t]) for _, t in self.outputs))
        limit = self.memory_limit
        if limit is None:
            limit = _device_free_bytes(cuda) or 0
        check_fits(4 * n * per_sample, n, limit)
        arena = cuda.device_array(max(1, self.arena_per_sample * n), np.float32)
        inputs = {t: cuda.device_array(math.prod(self.shapes[t]) * n, np.float32) for t in self.input_names}
        batch = _Batch(
            arena=arena,
            inputs=inputs,
            input_staging={t: cuda.pinned_array((n, *self.shapes[t]), np.float32) for t in self.input_names},
            output_staging={name: cuda.pinned_array((n, *self.shapes[t]), np.float32) for name, t in self.outputs},
            views={t: self._locate(t, n, arena, inputs) for t in self._used},
        )
        scratch = {t: cuda.device_array(size * n, np.float32) for t, size in self._scratch_per_sample.items()}
        for i, (step, runner) in enumerate(zip(self.plan["steps"], self.runners)):
            if runner is not None:
                batch.calls.append((i, runner, [batch.views[t] for t in step["inputs"]], batch.views[step["output"]],
                                    scratch.get(step["output"])))
        self._per_batch[n] = batch
        return batch

    # ---- running -------------------------------------------------------------------------------------

    def run(self, inputs: dict[str, np.ndarray], profile: list | None = None) -> dict[str, np.ndarray]:
        """Run one batch. With ``profile`` (a list), append (step index, seconds) for every kernel, timed
        with CUDA events on the stream (read once the batch is done)."""
        n = len(next(iter(inputs.values())))
        batch = self._buffers(n)
        cuda, stream = self.cuda, self.stream
        for name in self.input_names:
            staging = batch.input_staging[name]
            np.copyto(staging, np.asarray(inputs[name]).reshape(staging.shape), casting="same_kind")
            batch.inputs[name].copy_to_device(staging.reshape(-1), stream=stream)
        events = []
        for i, runner, xs, out, scratch in batch.calls:
            if profile is not None:
                start = cuda.event()
                start.record(stream)
            runner(n, xs, out, scratch)
            if profile is not None:
                end = cuda.event()
                end.record(stream)
                events.append((i, start, end))
        for name, t in self.outputs:
            batch.views[t].copy_to_host(batch.output_staging[name].reshape(-1), stream=stream)
        stream.synchronize()  # the one wait of the batch
        if profile is not None:
            profile.extend((i, max(0.0, start.elapsed_time(end)) / 1000) for i, start, end in events)
        return {name: batch.output_staging[name].copy() for name, _ in self.outputs}


def _broadcast_strides(shape: tuple, dims: tuple) -> tuple[int, ...]:
    """Element strides of a C-contiguous operand of ``shape`` read as ``dims`` (right-aligned, rank 4):
    0 along the axes it broadcasts."""
    shape = (1,) * (len(dims) - len(shape)) + tuple(shape)
    strides, step = [], 1
    for d, full in zip(reversed(shape), reversed(dims)):
        strides.append(step if d == full and d != 1 else 0)
        step *= d
    return tuple(reversed(strides))
