"""The CPU target: a plan bound to Numba kernels over one planned memory arena.

Binding (once per plan and weights): every step gets a runner with its weights prepared (convolution
weights packed for their kernel); flatten/reshape/identity/dropout become views of their input.
Per batch size (once per size, then cached): the arena is allocated from the per-sample offsets of the
memory plan, and every tensor is a view into it. A run copies inputs in, calls one kernel per step
and copies the outputs out. Kernels are compiled once (cache=True) and serve every batch size.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np

from .cpu import eltwise as _elt
from .cpu import pool as _pool
from .cpu import c16 as _c16
from .cpu._fpenv import DenormalsFlushed, flush_denormals_in_workers
from .cpu import tensor as _ten
from .cpu._act import ACTIVATIONS, ACT_CLIP, ACT_NONE, ACT_SILU
from .cpu.ops import ConvPlan, ConvTransposeC16, ConvTransposePlan, concat_into
from .executor import PlanError
from .memory import (VIEW_OPS, MemoryLimitError, blocked_tensors, check_fits, plan_memory, return_freed_memory,
                     slice_of, storage_owner, storage_shape, tensor_halos, workspace_key)


def _f32(a) -> np.ndarray:
    return np.require(np.asarray(a, dtype=np.float32), requirements=["C", "W"])


def _act_args(op: str, attrs: dict) -> tuple[int, float, float]:
    if op == "clip":
        lo = -np.inf if attrs["min"] is None else float(np.float32(attrs["min"]))
        hi = np.inf if attrs["max"] is None else float(np.float32(attrs["max"]))
        return ACT_CLIP, lo, hi
    if op == "leaky_relu":
        return ACTIVATIONS[op], float(attrs["slope"]), 0.0
    if op == "hardsigmoid":
        return ACTIVATIONS[op], float(attrs["alpha"]), float(attrs["beta"])
    return ACTIVATIONS[op], 0.0, 0.0


def chain_tables(step: dict, shapes: dict) -> tuple[int, int, list[tuple], list[tuple]]:
    """An `eltwise_chain` step (fuse_elementwise) as its kernels' tables, for either target: the carried
    value's channels and elements per channel, per stage (code, a, b, operand) -- an activation's `_act` code
    and arguments, or CHAIN_ADD / CHAIN_MUL and the other input it combines with (0 for the first) -- and per
    other input (laid out like the value, batch stride, channel stride): one value per sample and channel
    (C, 1, 1), or per sample, is read at n * batch stride + c * channel stride."""
    value = tuple(shapes[step["inputs"][0]])
    c, plane = (value[0], math.prod(value[1:])) if len(value) > 1 else (1, value[0])
    stages = [((_elt.CHAIN_ADD if op == "add" else _elt.CHAIN_MUL), 0.0, 0.0, other - 1) if other >= 0 else
              (*_act_args(op, dict(attrs)), 0) for op, attrs, other in step["attrs"]["chain"]]
    operands = []
    for t in step["inputs"][1:]:
        per_channel = len(shapes[t]) > 1 and shapes[t][0] == c > 1
        operands.append((tuple(shapes[t]) == value, c if per_channel else 1, int(per_channel)))
    return c, plane, stages, operands


def _epilogue_act(attrs: dict) -> tuple[int, float, float]:
    """The fused activation of a step (`act` from the fuse_activation pass) as kernel arguments."""
    act = attrs.get("act")
    if act is None:
        return ACT_NONE, 0.0, 0.0
    return _act_args(act[0], dict(act[1]))


def _fold_bn(weight: np.ndarray, bias: np.ndarray | None, p: dict, eps: float, axis: int, groups: int = 1):
    """Fold a batchnorm (the `bn_*` params) into a layer's weight and bias, in float64, once.
    `axis`: the weight axis of the output channels (0 for conv/dense, 1 for conv_transpose)."""
    scale = p["bn_weight"].astype(np.float64) / np.sqrt(p["bn_running_var"].astype(np.float64) + eps)
    cout = scale.shape[0]
    w = np.empty(weight.shape, np.float32)
    # a few rows of the weight at a time: the float64 products of a whole 9 MB weight took 36 MB while binding
    rows = max(1, (1 << 18) // max(1, weight[0].size))
    if axis == 0:
        for c0 in range(0, cout, rows):
            c1 = min(cout, c0 + rows)
            w[c0:c1] = weight[c0:c1].astype(np.float64) * scale[c0:c1].reshape((-1,) + (1,) * (w.ndim - 1))
    else:  # conv_transpose: (Cin, Cout/g, kh, kw), output channel = group * Cout/g + j
        cin, cog = w.shape[:2]
        per_group = cin // groups
        for g in range(groups):
            group_scale = scale[g * cog:(g + 1) * cog].reshape(1, cog, 1, 1)
            for r0 in range(g * per_group, (g + 1) * per_group, rows):
                r1 = min(r0 + rows, (g + 1) * per_group)
                w[r0:r1] = weight[r0:r1].astype(np.float64) * group_scale
    b = np.zeros(cout) if bias is None else bias.astype(np.float64)
    b = (b - p["bn_running_mean"]) * scale + p["bn_bias"]
    return w, _f32(b)


def _normalisation(step: dict, p: dict, c: int):
    """A batchnorm's or affine map's (weight, bias, mean, var, eps) for `c` channels: y = (x - mean) * weight
    / sqrt(var + eps) + bias (an affine map: mean 0, var 1, eps 0; absent weight and bias: 1 and 0)."""
    weight = p.get("weight", np.ones(c, np.float32))
    bias = p.get("bias", np.zeros(c, np.float32))
    if step["op"] == "batchnorm":
        return weight, bias, p["running_mean"], p["running_var"], float(step["attrs"]["eps"])
    return weight, bias, np.zeros(c, np.float32), np.ones(c, np.float32), 0.0


def bound_params(step: dict, weights: dict[str, np.ndarray]):
    """A step's weights as float32 (role -> array), its fused activation as kernel arguments, and its
    weight and bias with a folded batchnorm applied (`bn_eps`): what every target binds a step with."""
    a = step["attrs"]
    p = {role: _f32(weights[name]) for role, name in step["params"].items()}
    weight, bias = p.get("weight"), p.get("bias")
    if "bn_eps" in a:  # folded once, at bind time: the plan keeps the original weights and names
        axis = 1 if step["op"] == "conv_transpose" else 0
        weight, bias = _fold_bn(weight, bias, p, float(a["bn_eps"]), axis, a.get("groups", 1))
    return p, _epilogue_act(a), weight, bias


def _binary_into(a: np.ndarray, b: np.ndarray, op: int, out: np.ndarray, act=(ACT_NONE, 0.0, 0.0)) -> None:
    """out = act(a (op) b) with the broadcasts CNNs use; `out` may be `a`."""
    if a.shape == b.shape:
        _elt.binary_kernel(a.reshape(-1), b.reshape(-1), op, *act, out.reshape(-1))
        return
    if a.size < b.size:  # add and mul commute: the full-size operand first
        a, b = b, a
    if a.shape != out.shape:
        raise ValueError("broadcast of both operands")  # not produced by the shape rules (checked at bind)
    if b.size == 1:
        _elt.channel_binary_kernel(a.reshape(-1), b.reshape(-1), 1, 1, a.size, 0, op, *act, out.reshape(-1))
        return
    n, c = a.shape[:2]
    if b.ndim == a.ndim and b.shape[1] == c and all(d == 1 for d in b.shape[2:]) and b.shape[0] in (1, n):
        stride = c if b.shape[0] == n else 0
        _elt.channel_binary_kernel(a.reshape(-1), b.reshape(-1), n, c, a.size // (n * c), stride, op, *act,
                                   out.reshape(-1))
        return
    np.add(a, b, out=out) if op == _elt.OP_ADD else np.multiply(a, b, out=out)
    if act[0] != ACT_NONE:
        _elt.activation_kernel(out.reshape(-1), *act, out.reshape(-1))


_workers_flushed = False


def _flush_denormals_once() -> None:
    global _workers_flushed
    if not _workers_flushed:
        flush_denormals_in_workers()
        _workers_flushed = True


class CpuProgram:
    def __init__(self, plan: dict, weights: dict[str, np.ndarray], memory_limit: int | None = None,
                 release_weights: bool = False):
        """`release_weights`: the program owns `weights` and removes each array from it once the last step that
        reads it is bound (its packed copy replaces it), so that a model's weights are held about once while
        it is built, not twice."""
        self.plan = plan
        self.memory_limit = memory_limit  # bytes; None: what the system has available; 0: no check
        self.shapes = {k: tuple(v) for k, v in plan["tensors"].items()}
        self.input_names = [i["name"] for i in plan["inputs"]]
        self.outputs = [(o["name"], o["tensor"]) for o in plan["outputs"]]
        # tensors stored channel-blocked (the layout pass): (ceil(C/16), H, W, 16) per sample
        self.blocked = blocked_tensors(plan)
        # The memory plan decided at compile time (plans from `cnnc compile` carry it). It may place concat
        # inputs as channel slices of the concat's buffer; a slice of a batch is not contiguous (its samples
        # lie a whole buffer apart), so that plan serves batches of one. Larger batches keep the channel-blocked
        # slices, whose kernels take a sample stride (`_C16`), and copy into the plain concatenations (a
        # per-sample loop would starve the threads) -- or copy every concat where a step that touches a blocked
        # slice has no strided kernel.
        memory = plan.get("memory")
        if memory is None or "workspace" not in memory:  # none, or planned before steps had workspaces
            memory = plan_memory(plan)
        self.modes = {True: _Placement(memory)}
        self.modes[False] = self.modes[True]
        if memory.get("slices"):
            in_place = memory.get("options", {}).get("in_place", True)  # as compiled (`--disable in_place`)
            batched = plan_memory(plan, concat_in_place="blocked", in_place=in_place)
            if not self._strided_kernels_for(batched["slices"]):
                batched = plan_memory(plan, concat_in_place=False, in_place=in_place)
            self.modes[False] = _Placement(batched)
        self.halos = tensor_halos(plan)  # blocked tensors stored inside a zero halo for a depthwise consumer
        self.storage = {t: storage_shape(s, t in self.blocked, self.halos.get(t, (0, 0, 0, 0)))
                        for t, s in self.shapes.items()}
        self.no_reuse_per_sample = int(memory["no_reuse"])
        self.arena_per_sample = self.modes[True].arena_per_sample
        # conv_transpose steps need a scratch buffer per batch: output -> (its GEMM plan, input shape)
        self._scratch_shapes: dict[str, tuple] = {}
        last_reader = {name: i for i, step in enumerate(plan["steps"]) for name in step["params"].values()}
        # one depthwise kernel for all the plan's shapes (with SiLU and without), the one compiling the fewest
        # unrolled tap shapes: the one for 3-wide windows compiles in 11 s, the one for any window in 15.5
        depthwise = {False: [], True: []}
        for s in plan["steps"]:
            a = s["attrs"]
            if s["op"] == "conv" and a.get("groups", 1) > 1 and s["output"] in self.blocked:
                depthwise[_epilogue_act(a)[0] == ACT_SILU].append((a["kernel"][1], a["stride"][1], a["dilation"][1]))
        self._depthwise_taps = {silu: _c16.depthwise_taps(shapes) for silu, shapes in depthwise.items()}
        self.runners = []
        untrimmed = 0  # bytes of weights bound since freed memory was last handed back
        for i, step in enumerate(plan["steps"]):
            self.runners.append(self._bind(step, weights))
            untrimmed += sum(weights[name].nbytes for name in step["params"].values() if name in weights)
            if release_weights:
                for name in step["params"].values():
                    if last_reader[name] == i:
                        weights.pop(name, None)
            if untrimmed > 1 << 22:  # (glibc keeps freed temporaries resident: they added up to 2x the weights)
                return_freed_memory()
                untrimmed = 0
        # concat steps of the placement of batches over one (the other steps are the same in both)
        self.copying_runners = [self._bind_concat(step, self.modes[False].slices) if step["op"] == "concat"
                                else runner for step, runner in zip(plan["steps"], self.runners)]
        return_freed_memory()  # the unpacked and unfolded weight copies made while binding
        self._per_batch: dict[int, tuple] = {}
        _flush_denormals_once()

    def _strided_kernels_for(self, slices: dict) -> bool:
        """Whether every step that reads or writes one of these (channel-blocked) slices has a kernel taking a
        sample stride: dense convolutions without a residual, max and average pools, batchnorms, global
        average pools, concatenations, transposed convolutions and upsamples (the depthwise and
        channel-multiply kernels have none)."""
        sliced = set(slices) | {buf for buf, _ in slices.values()}
        for step in self.plan["steps"]:
            if not sliced & {*step["inputs"], step["output"]}:
                continue
            a, op = step["attrs"], step["op"]
            if op == "conv" and (a.get("groups", 1) != 1 or a.get("residual")):
                return False
            if op not in ("conv", "maxpool", "avgpool", "batchnorm", "affine", "global_avgpool", "concat",
                          "conv_transpose", "upsample"):
                return False
        return True

    # ---- binding: one runner per step, weights prepared once
    def _bind(self, step: dict, weights: dict[str, np.ndarray]):
        op, a = step["op"], step["attrs"]
        if op in VIEW_OPS:
            return None
        p, act, weight, bias = bound_params(step, weights)
        in_c16 = bool(step["inputs"]) and step["inputs"][0] in self.blocked
        out_c16 = step["output"] in self.blocked
        if op == "conv" and (in_c16 or out_c16):
            return self._bind_c16_conv(step, weight, bias, act, in_c16, out_c16)
        if op == "global_avgpool" and in_c16:
            c, h, w = self.shapes[step["inputs"][0]]
            return lambda xs, out, s: _c16.global_avg_pool_c16_kernel(xs[0].flat, c, h * w, out.reshape(-1),
                                                                       out.shape[0], xs[0].step)
        if op == "mul" and out_c16:
            full = 0 if step["inputs"][0] in self.blocked else 1
            c, h, w = self.shapes[step["output"]]
            return lambda xs, out, s: _c16.channel_mul_c16_kernel(xs[full].flat, xs[1 - full].reshape(-1), c,
                                                                   h * w, *act, out.flat)
        if op == "conv":
            conv = ConvPlan(weight, bias, a["stride"], a["pads"], a["dilation"], a["groups"], *act)
            conv.prepare((1, *self.shapes[step["inputs"][0]]), bool(a.get("residual")))
            # `scratch`: the step's workspace in the arena (Winograd), or None (allocated by the kernel)
            if a.get("residual"):
                return lambda xs, out, scratch: conv.run(xs[0], out, xs[1], scratch)
            return lambda xs, out, scratch: conv.run(xs[0], out, None, scratch)
        if op == "conv_transpose" and out_c16:
            return self._bind_c16_conv_transpose(step, weight, bias, act, in_c16)
        if op == "upsample" and (in_c16 or out_c16):
            return self._bind_c16_upsample(step, in_c16, out_c16)
        if op == "conv_transpose":
            convt = ConvTransposePlan(weight, bias, a["stride"], a["pads"], a["output_padding"],
                                      a["dilation"], a["groups"], *act)
            self._scratch_shapes[step["output"]] = (convt.gemm, self.shapes[step["inputs"][0]])
            if in_c16:  # into the plain layout (the network's output, or for a plain consumer)
                if a["groups"] != 1:
                    raise PlanError(f"step {step['name']}: a transposed convolution reading the channel-blocked "
                                    "layout needs groups == 1")
                run = convt.c16_input_runner(self.shapes[step["inputs"][0]],
                                             self.halos.get(step["inputs"][0], (0, 0, 0, 0)))
                return lambda xs, out, cols: run(xs[0].flat, cols, out, len(out), xs[0].step)
            convt.gemm.prepare((1, *self.shapes[step["inputs"][0]]))  # packed now: run would keep both copies
            return lambda xs, out, scratch: convt.run(xs[0], out, scratch)
        if op == "maxpool" and (in_c16 or out_c16):
            return self._bind_c16_maxpool(step, in_c16, out_c16)
        if op in ("avgpool", "batchnorm", "affine") and (in_c16 or out_c16):
            return self._bind_c16_pointwise(step, p, act, in_c16, out_c16)
        if op == "maxpool":
            (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["stride"], a["dilation"]
            pt, pl = a["pads"][:2]
            return lambda xs, out, s: _pool.max_pool2d_kernel(xs[0], kh, kw, sh, sw, pt, pl, dh, dw, out)
        if op == "avgpool":
            (kh, kw), (sh, sw) = a["kernel"], a["stride"]
            pt, pl, pb, pr = a["pads"]
            cip = int(bool(a["count_include_pad"]))
            return lambda xs, out, s: _pool.avg_pool2d_kernel(xs[0], kh, kw, sh, sw, pt, pl, pb, pr, cip, out)
        if op == "global_avgpool":
            return lambda xs, out, s: _pool.global_avg_pool_kernel(xs[0], out)
        if op == "global_maxpool":
            return lambda xs, out, s: _pool.global_max_pool_kernel(xs[0], out)
        if op in ("adaptive_avgpool", "adaptive_maxpool"):
            is_max = int(op == "adaptive_maxpool")
            return lambda xs, out, s: _pool.adaptive_pool2d_kernel(xs[0], is_max, out)
        if op == "dense":
            w = weight
            bias = bias if bias is not None else np.zeros(w.shape[0], np.float32)
            return lambda xs, out, s: _ten.dense_kernel(xs[0], w, bias, *act, out)
        if op in ("batchnorm", "affine"):
            c = self.shapes[step["inputs"][0]][0]
            weight, bias, mean, var, eps = _normalisation(step, p, c)

            def run_bn(xs, out, s):
                n = xs[0].shape[0]
                _elt.batchnorm_kernel(xs[0].reshape(n, c, -1), weight, bias, mean, var, eps, *act,
                                      out.reshape(n, c, -1))
            return run_bn
        if op in ACTIVATIONS or op in ("clip", "leaky_relu", "hardsigmoid"):
            code, x1, x2 = _act_args(op, a)
            return lambda xs, out, s: _elt.activation_kernel(xs[0].reshape(-1), code, x1, x2, out.reshape(-1))
        if op == "softmax":
            axis = a["axis"]

            def run_softmax(xs, out, s):
                x = xs[0]
                outer = math.prod(x.shape[:axis])
                inner = math.prod(x.shape[axis + 1:])
                _elt.softmax_kernel(x.reshape(outer, x.shape[axis], inner), out.reshape(outer, x.shape[axis], inner))
            return run_softmax
        if op == "lrn":
            size, alpha, beta, k = int(a["size"]), float(a["alpha"]), float(a["beta"]), float(a["k"])

            def run_lrn(xs, out, s):
                n, c = xs[0].shape[:2]
                _elt.lrn_kernel(xs[0].reshape(n, c, -1), size, alpha, beta, k, out.reshape(n, c, -1))
            return run_lrn
        if op in ("add", "mul"):
            code = _elt.OP_ADD if op == "add" else _elt.OP_MUL

            def run_binary(xs, out, s):
                last = len(xs) - 2
                _binary_into(xs[0], xs[1], code, out, act if last == 0 else (ACT_NONE, 0.0, 0.0))
                for i, x in enumerate(xs[2:], start=1):
                    _binary_into(out, x, code, out, act if i == last else (ACT_NONE, 0.0, 0.0))
            return run_binary
        if op == "eltwise_chain":
            return self._bind_chain(step)
        if op == "concat":
            return self._bind_concat(step, self.modes[True].slices)
        if op == "upsample":
            fh, fw = a["scale"]
            return lambda xs, out, s: _ten.upsample_nearest_kernel(xs[0], fh, fw, out)
        if op == "pad":
            pt, pl, pb, pr = a["pads"]
            mode, value = _ten.PAD_MODES[a["mode"]], float(a["value"])

            def run_pad(xs, out, s):
                x = xs[0]
                n, c, h, w = x.shape
                _ten.pad_kernel(x.reshape(n * c, 1, h, w), pt, pl, pb, pr, mode, value,
                                out.reshape(n * c, 1, out.shape[2], out.shape[3]))
            return run_pad
        if op == "yolo":
            anchors = np.ascontiguousarray(np.asarray(a["anchors"], np.float32).reshape(-1, 2))
            img_h, img_w = (float(v) for v in a["image_size"])
            return lambda xs, out, s: _ten.yolo_decode_kernel(xs[0], anchors, img_h, img_w, out)
        raise KeyError(op)

    def _bind_chain(self, step):
        """An elementwise chain (fuse_elementwise) as one `chain_kernel` call (`chain_tables`)."""
        c, plane, stages, operands = chain_tables(step, self.shapes)
        codes, operand = (np.array([st[k] for st in stages], np.int64) for k in (0, 3))
        args_a, args_b = (np.array([st[k] for st in stages], np.float32) for k in (1, 2))
        pad = _elt.CHAIN_OPERANDS - len(operands)
        full, batch_stride, channel_stride = (np.array([o[k] for o in operands] + [fill] * pad, dtype)
                                              for k, fill, dtype in ((0, True, np.bool_), (1, 0, np.int64),
                                                                     (2, 0, np.int64)))
        none = np.zeros(1, np.float32)

        def run_chain(xs, out, s):
            n = xs[0].shape[0]
            flat = [x.reshape(-1) for x in xs[1:]] + [none] * pad
            _elt.chain_kernel(xs[0].reshape(-1), n, c, plane, codes, args_a, args_b, operand, *flat, full,
                              batch_stride, channel_stride, out.reshape(-1))
        return run_chain

    def _bind_concat(self, step, slices: dict):
        """A concatenation; with `slices` (tensor -> (buffer, channel offset)), inputs that their producers
        wrote in place are not copied again (None: nothing left to copy)."""
        axis = step["attrs"]["axis"]
        if step["output"] in self.blocked:
            return self._bind_c16_concat(step, slices)
        if axis != 1 or not slices:
            return lambda xs, out, s: concat_into(xs, axis, out)
        copies = self._concat_copies(step, slices)
        if not copies:
            return None

        def run_concat(xs, out, s):
            for i, off, c in copies:
                np.copyto(out[:, off:off + c], xs[i])
        return run_concat

    def _bind_c16_concat(self, step, slices: dict):
        """A channel-blocked concatenation: each input is a run of whole blocks of the output, stored inside
        the same halo; inputs that their producers wrote in place (`slices`) are not copied again."""
        out = step["output"]
        for t in step["inputs"]:
            if t not in self.blocked or self.shapes[t][0] % 16 or self.halos.get(t) != self.halos.get(out):
                raise PlanError(f"step {step['name']}: input {t} of a channel-blocked concatenation is not "
                                f"stored as whole blocks inside the output's halo")
        copies = [(i, off // 16, c // 16) for i, off, c in self._concat_copies(step, slices)]  # (in blocks)
        if not copies:
            return None

        def run_concat(xs, out, s):
            for i, first, cb in copies:
                np.copyto(out.view[:, first:first + cb], xs[i].view)  # (the halo too: zeros, from the producer)
        return run_concat

    def _concat_copies(self, step, slices: dict) -> list[tuple[int, int, int]]:
        """(input index, channel offset, channels) of each input of a concatenation that its producer did not
        write in place (`slices`: tensor -> (buffer, channel offset))."""
        buf, base = slices.get(step["output"], (step["output"], 0))
        copies, offset = [], 0
        for i, t in enumerate(step["inputs"]):
            c = self.shapes[t][0]
            if slices.get(t) != (buf, base + offset):
                copies.append((i, offset, c))
            offset += c
        return copies

    def _bind_c16_conv(self, step, weight, bias, act, in_c16: bool, out_c16: bool):
        """A convolution reading or writing the channel-blocked layout (see cpu/c16.py)."""
        a = step["attrs"]
        x_shape = self.shapes[step["inputs"][0]]
        oc, oh, ow = self.shapes[step["output"]]
        if a["groups"] > 1:  # depthwise, blocked in and out (the layout pass's guarantee)
            w16, b16 = _c16.pack_depthwise(weight, np.zeros(oc, np.float32) if bias is None else bias)
            (sh, sw), (dh, dw), (pt, pl) = a["stride"], a["dilation"], a["pads"][:2]
            _, h, w = x_shape
            halo = self.halos.get(step["inputs"][0])
            if halo is not None:  # the input is stored padded: read its halo as the padding
                if tuple(halo) != tuple(a["pads"]):  # a plan the layout pass did not write
                    raise PlanError(f"step {step['name']}: its input {step['inputs'][0]} is stored with halo "
                                    f"{list(halo)}, expected its padding {list(a['pads'])}")
                h, w, pt, pl = h + halo[0] + halo[2], w + halo[1] + halo[3], 0, 0

            silu = act[0] == ACT_SILU
            kernel = _c16.depthwise_kernel(silu, self._depthwise_taps[silu])

            def run_depthwise(xs, out, s):
                kernel(xs[0].flat, h, w, w16, b16, sh, sw, pt, pl, dh, dw, *act, out.flat, oh, ow)
            return run_depthwise
        conv = ConvPlan(weight, bias, a["stride"], a["pads"], a["dilation"], a["groups"], *act)
        conv.prepare((1, *x_shape), layouts=(in_c16, out_c16))
        residual = bool(a.get("residual"))
        run = conv.c16_runner(x_shape, in_c16, out_c16, residual, self.halos.get(step["output"], (0, 0, 0, 0)),
                              self.halos.get(step["inputs"][0], (0, 0, 0, 0)))

        def run_conv(xs, out, s):
            x = xs[0].flat if in_c16 else xs[0].reshape(-1)
            o = out.flat if out_c16 else out.reshape(-1)
            res = (xs[1].flat if out_c16 else xs[1].reshape(-1)) if residual else None
            run(x, o, res, len(out.view if out_c16 else out), xs[0].step if in_c16 else 0,
                out.step if out_c16 else 0)
        return run_conv

    def _bind_c16_maxpool(self, step, in_c16: bool, out_c16: bool):
        """Max pooling of a channel-blocked tensor, each operand inside its halo (if any), into a channel-blocked
        one or (readers that need it) a plain one."""
        if not in_c16:  # the layout pass blocks a pool's output only with its input
            raise PlanError(f"step {step['name']}: max pooling from the plain into the channel-blocked layout")
        a = step["attrs"]
        (kh, kw), (sh, sw), (dh, dw), (pt, pl) = a["kernel"], a["stride"], a["dilation"], a["pads"][:2]
        i = self._frame(step["inputs"][0])
        if out_c16:
            o = self._frame(step["output"])

            def run_maxpool(xs, out, s):
                n = len(out.view)
                _c16.max_pool_c16_kernel(xs[0].flat, i.cb, i.hs, i.ws, i.top, i.left, i.h, i.w, kh, kw, sh, sw, pt,
                                         pl, dh, dw, out.flat, o.h, o.w, o.hs, o.ws, o.top, o.left, n, xs[0].step,
                                         out.step, True, 0)
                o.zero_halo(out, n)
            return run_maxpool
        c, oh, ow = self.shapes[step["output"]]

        def run_maxpool_to_plain(xs, out, s):
            _c16.max_pool_c16_kernel(xs[0].flat, i.cb, i.hs, i.ws, i.top, i.left, i.h, i.w, kh, kw, sh, sw, pt, pl,
                                     dh, dw, out.reshape(-1), oh, ow, oh, ow, 0, 0, len(out), xs[0].step,
                                     c * oh * ow, False, c)
        return run_maxpool_to_plain

    def _frame(self, t: str) -> _Frame:
        """Where a channel-blocked tensor's image lies in its stored planes (inside its halo, if any)."""
        _, h, w = self.shapes[t]
        cb, hs, ws, _ = self.storage[t]
        return _Frame(cb, h, w, hs, ws, tuple(self.halos.get(t, (0, 0, 0, 0))))

    def _bind_c16_conv_transpose(self, step, weight, bias, act, in_c16: bool):
        """A transposed convolution (groups == 1) into the channel-blocked layout, from either layout; its
        output may lie inside a halo or be a run of blocks of a concatenation (``ops.ConvTransposeC16``)."""
        a = step["attrs"]
        src, dst = step["inputs"][0], step["output"]
        if a["groups"] != 1:
            raise PlanError(f"step {step['name']}: a channel-blocked transposed convolution needs groups == 1")
        convt = ConvTransposeC16(weight, bias, a["stride"], a["pads"], a["output_padding"], a["dilation"], 1, *act)
        self._scratch_shapes[dst] = (convt.gemm, self.shapes[src])
        run = convt.c16_runner(self.shapes[src], in_c16, self.halos.get(src, (0, 0, 0, 0)),
                               self.halos.get(dst, (0, 0, 0, 0)))

        def run_conv_transpose(xs, out, cols):
            x, x_step = (xs[0].flat, xs[0].step) if in_c16 else (xs[0].reshape(-1), 0)
            run(x, cols.reshape(-1), out.flat, len(out.view), x_step, out.step)
        return run_conv_transpose

    def _bind_c16_upsample(self, step, in_c16: bool, out_c16: bool):
        """Nearest upsampling of a channel-blocked tensor into a channel-blocked one, each inside its halo."""
        if not (in_c16 and out_c16):  # the layout pass blocks an upsample's input and output together
            raise PlanError(f"step {step['name']}: upsampling between the plain and channel-blocked layouts")
        fh, fw = step["attrs"]["scale"]
        i, o = self._frame(step["inputs"][0]), self._frame(step["output"])

        def run_upsample(xs, out, s):
            n = len(out.view)
            _c16.upsample_c16_kernel(xs[0].flat, i.cb, i.hs, i.ws, i.top, i.left, i.h, i.w, fh, fw, out.flat, o.hs,
                                     o.ws, o.top, o.left, n, xs[0].step, out.step)
            o.zero_halo(out, n)
        return run_upsample

    def _bind_c16_pointwise(self, step, p: dict, act, in_c16: bool, out_c16: bool):
        """An average pool or a batchnorm (affine) from the channel-blocked layout into it, without halos."""
        src, dst = step["inputs"][0], step["output"]
        if not (in_c16 and out_c16) or self.halos.get(src) or self.halos.get(dst):
            raise PlanError(f"step {step['name']}: {step['op']} between the plain and channel-blocked layouts, "
                            "or inside a halo")
        a = step["attrs"]
        c, h, w = self.shapes[src]
        cb = _c16.blocks(c)
        if step["op"] == "avgpool":
            (kh, kw), (sh, sw) = a["kernel"], a["stride"]
            pt, pl, pb, pr = a["pads"]
            cip = int(bool(a["count_include_pad"]))
            _, oh, ow = self.shapes[dst]
            return lambda xs, out, s: _c16.avg_pool_c16_kernel(xs[0].flat, cb, h, w, kh, kw, sh, sw, pt, pl, pb, pr,
                                                                 cip, out.flat, oh, ow, len(out.view), xs[0].step,
                                                                 out.step)
        weight, bias, mean, var, eps = (np.asarray(v, np.float64) for v in _normalisation(step, p, c))
        scale = weight / np.sqrt(var + eps)  # folded in float64, as the plain kernel does
        shift = bias - mean * scale
        scale16, shift16 = np.zeros(cb * 16, np.float32), np.zeros(cb * 16, np.float32)
        scale16[:c], shift16[:c] = scale, shift
        return lambda xs, out, s: _c16.affine_c16_kernel(xs[0].flat, scale16, shift16, h * w, *act, out.flat,
                                                         len(out.view), xs[0].step, out.step)

    # ---- per batch size: the arena and every tensor's view into it
    def _buffers(self, n: int):
        cached = self._per_batch.get(n)
        if cached is not None:
            return cached
        self._per_batch.clear()  # release the previous batch size's arena before sizing a new one
        mode = self.modes[n == 1]
        scratch_per_sample = sum(math.prod(g.out_shape((1, *shape))) for g, shape in
                                 self._scratch_shapes.values())
        outputs_per_sample = sum(math.prod(self.shapes[t]) for _, t in self.outputs)
        check_fits(4 * n * (mode.arena_per_sample + scratch_per_sample + outputs_per_sample), n, self.memory_limit)
        arena = np.empty(mode.arena_per_sample * n, np.float32)
        views = {}
        for t, off in mode.offsets.items():
            if t in mode.workspace_of:  # a step's workspace (Winograd), flat
                views[t] = arena[off * n: (off + mode.workspace_of[t]) * n]
                continue
            size = math.prod(self.storage[t])
            views[t] = arena[off * n: (off + size) * n].reshape(n, *self.storage[t])
        for t, (buf, off) in mode.slices.items():  # channel slices (over one sample: blocked ones only)
            if t in self.blocked:  # (whole blocks: the memory plan's guarantee)
                views[t] = views[buf][:, off // 16:off // 16 + _c16.blocks(self.shapes[t][0])]
            else:
                views[t] = views[buf][:, off:off + self.shapes[t][0]]
        scratch = {out: views[workspace_key(out)] for out in mode.workspace}
        for out_name, (gemm, in_shape) in self._scratch_shapes.items():
            scratch[out_name] = np.empty(gemm.out_shape((n, *in_shape)), np.float32)
        runners = self.runners if n == 1 else self.copying_runners
        # Each step's operand views, made once per batch size; steps reading a network input (a new array
        # every run) get theirs at run time (None here).
        inputs = set(self.input_names)
        calls = []
        for i, (step, runner) in enumerate(zip(self.plan["steps"], runners)):
            if runner is None:
                continue
            tensors = (*step["inputs"], step["output"])
            if any(t not in mode.slices and mode.root.get(t, t) in inputs for t in tensors):
                calls.append((i, runner, None, None, scratch.get(step["output"])))
                continue
            xs = [self.operand(arena, views, {}, t, n, mode) for t in step["inputs"]]
            calls.append((i, runner, xs, self.operand(arena, views, {}, step["output"], n, mode),
                          scratch.get(step["output"])))
        self._per_batch[n] = (arena, views, mode, calls)
        return self._per_batch[n]

    def load_kernels(self) -> None:
        """Run one sample of zeros and free its arena again: every kernel the plan uses is compiled or loaded
        from Numba's cache now, at build, rather than inside the first run (which then took as long as a
        start-up and added the kernels' code to that run's memory). Skipped when one sample does not fit
        the memory limit: the run itself reports that."""
        try:
            self._buffers(1)
        except (MemoryLimitError, MemoryError):
            return
        self.run({i["name"]: np.zeros((1, *i["shape"]), np.float32) for i in self.plan["inputs"]})
        self.release()
        return_freed_memory()

    def release(self) -> None:
        """Free the arena and scratch of the batch size run last (the next run allocates them again)."""
        self._per_batch.clear()

    def operand(self, arena, views, inputs, t: str, n: int, mode):
        """What a step's runner gets for tensor `t`: its view, or for a channel-blocked tensor a `_C16`."""
        v = self.view(views, inputs, t, n, mode)
        return _C16.of(v, arena) if t in self.blocked else v

    def view(self, views, inputs, t: str, n: int, mode) -> np.ndarray:
        if t in mode.slices:
            return views[t]
        owner = mode.root.get(t, t)
        base = inputs[owner] if owner in inputs else views[owner]
        return base.reshape(n, *self.storage[t])

    def run(self, inputs: dict[str, np.ndarray], profile: list | None = None) -> dict[str, np.ndarray]:
        """Run one batch. With `profile` (a list), append (step index, seconds) for every kernel call."""
        n = len(next(iter(inputs.values())))
        arena, views, mode, calls = self._buffers(n)
        feeds = {k: _f32(v) for k, v in inputs.items()}
        steps = self.plan["steps"]
        clock = time.perf_counter
        with DenormalsFlushed():  # results below 1.2e-38 are zero: no slow denormal arithmetic
            for i, runner, xs, out, work in calls:
                if xs is None:  # reads a network input
                    step = steps[i]
                    xs = [self.operand(arena, views, feeds, t, n, mode) for t in step["inputs"]]
                    out = self.operand(arena, views, feeds, step["output"], n, mode)
                if profile is None:
                    runner(xs, out, work)
                else:
                    t0 = clock()
                    runner(xs, out, work)
                    profile.append((i, clock() - t0))
        return {name: self.view(views, feeds, t, n, mode).copy() for name, t in self.outputs}


class _C16(NamedTuple):
    """A channel-blocked operand: its view (N, CB, H, W, 16), the flat array from its first element, and the
    floats from one sample to the next: a sample's size, or more for a channel slice of a larger tensor at a
    batch over one (a concatenation's run of blocks, each sample's run contiguous)."""
    view: np.ndarray
    flat: np.ndarray
    step: int

    @staticmethod
    def of(view: np.ndarray, arena: np.ndarray) -> _C16:
        if view.flags.c_contiguous:
            return _C16(view, view.reshape(-1), view[0].size if len(view) else 0)
        if not view[0].flags.c_contiguous or view.base is None:
            raise PlanError("a channel-blocked operand whose samples are not contiguous runs of blocks")
        start = (view.__array_interface__["data"][0] - arena.__array_interface__["data"][0]) // 4
        return _C16(view, arena[start:], view.strides[0] // 4)


class _Frame(NamedTuple):
    """A channel-blocked tensor's storage: ``cb`` blocks of planes stored ``hs`` x ``ws`` pixels, the ``h`` x
    ``w`` image inside a zero ``halo`` (top, left, bottom, right)."""
    cb: int
    h: int
    w: int
    hs: int
    ws: int
    halo: tuple

    @property
    def top(self) -> int:
        return self.halo[0]

    @property
    def left(self) -> int:
        return self.halo[1]

    def zero_halo(self, out: _C16, n: int) -> None:
        """Zero the halo (if any) of ``n`` samples of ``out`` stored in this frame (its producer's last act)."""
        if any(self.halo):
            _c16.zero_halo_c16_kernel(out.flat, n, self.cb, out.step, self.hs, self.ws, *self.halo)


class _Placement:
    """Where a memory plan puts every tensor: its storage owner (`root`), the owners' offsets, the arena
    size per sample, and channel slices of concat buffers."""

    def __init__(self, memory: dict):
        self.root = {t: storage_owner(memory, t) for t in set(memory["offsets"]) | set(memory["views"])
                     | set(memory.get("in_place", {}))}
        self.slices = {t: slice_of(memory, t) for t in memory.get("slices", {})}
        self.offsets = dict(memory["offsets"])
        self.arena_per_sample = int(memory["per_sample"])
        self.workspace = dict(memory.get("workspace", {}))  # step output -> workspace floats per sample
        self.workspace_of = {workspace_key(out): floats for out, floats in self.workspace.items()}
