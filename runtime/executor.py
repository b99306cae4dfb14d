"""Executes a compiled plan (the dict of `cnnc.plan`): the runtime's only input is the plan format.

A `Program` binds a plan to its weights once, then runs batches. Targets:
  reference  the plain numpy implementations of runtime/reference.py, one step after another, each
             intermediate freed after its last use (the oracle the other targets are tested against);
  cpu        the Numba kernels over a planned arena (runtime/cpu_program.py);
  cuda       the numba.cuda kernels over a planned device arena (runtime/cuda_program.py).
"""

from __future__ import annotations

import numpy as np

from . import reference as R


def step_table(K) -> dict:
    """op -> (takes a list of inputs?, function(inputs, params, attrs)), over a module K with the
    signatures of runtime/reference.py (the reference itself; runtime/cpu/ops.py has the same ones)."""

    def conv(x, p, a):
        return K.conv2d(x, p["weight"], p.get("bias"), a["stride"], a["pads"], a["dilation"], a["groups"])

    def conv_transpose(x, p, a):
        return K.conv_transpose2d(x, p["weight"], p.get("bias"), a["stride"], a["pads"], a["output_padding"],
                                  a["dilation"], a["groups"])

    def batchnorm(x, p, a):
        c = x.shape[1]
        weight = p.get("weight", np.ones(c, np.float32))
        bias = p.get("bias", np.zeros(c, np.float32))
        return K.batchnorm(x, weight, bias, p["running_mean"], p["running_var"], a["eps"])

    def affine(x, p, a):  # batchnorm with identity statistics: x * w + b exactly
        c = x.shape[1]
        weight = p.get("weight", np.ones(c, np.float32))
        bias = p.get("bias", np.zeros(c, np.float32))
        return K.batchnorm(x, weight, bias, np.zeros(c, np.float32), np.ones(c, np.float32), 0.0)

    def fold(fn):
        def run(xs, p, a):
            out = xs[0]
            for x in xs[1:]:
                out = fn(out, x)
            return out
        return run

    table = {
        "conv": (False, conv),
        "conv_transpose": (False, conv_transpose),
        "maxpool": (False, lambda x, p, a: K.max_pool2d(x, a["kernel"], a["stride"], a["pads"], a["dilation"],
                                                        a["ceil_mode"])),
        "avgpool": (False, lambda x, p, a: K.avg_pool2d(x, a["kernel"], a["stride"], a["pads"], a["ceil_mode"],
                                                        a["count_include_pad"])),
        "global_avgpool": (False, lambda x, p, a: K.global_avg_pool(x)),
        "global_maxpool": (False, lambda x, p, a: K.global_max_pool(x)),
        "adaptive_avgpool": (False, lambda x, p, a: K.adaptive_avg_pool2d(x, a["size"])),
        "adaptive_maxpool": (False, lambda x, p, a: K.adaptive_max_pool2d(x, a["size"])),
        "dense": (False, lambda x, p, a: K.dense(x, p["weight"], p.get("bias"))),
        "batchnorm": (False, batchnorm),
        "affine": (False, affine),
        "lrn": (False, lambda x, p, a: K.lrn(x, a["size"], a["alpha"], a["beta"], a["k"])),
        "relu": (False, lambda x, p, a: K.relu(x)),
        "relu6": (False, lambda x, p, a: K.relu6(x)),
        "sigmoid": (False, lambda x, p, a: K.sigmoid(x)),
        "tanh": (False, lambda x, p, a: K.tanh(x)),
        "silu": (False, lambda x, p, a: K.silu(x)),
        "hardswish": (False, lambda x, p, a: K.hardswish(x)),
        "hardsigmoid": (False, lambda x, p, a: K.hardsigmoid(x, a["alpha"], a["beta"])),
        "leaky_relu": (False, lambda x, p, a: K.leaky_relu(x, a["slope"])),
        "clip": (False, lambda x, p, a: K.clip(x, a["min"], a["max"])),
        "softmax": (False, lambda x, p, a: K.softmax(x, a["axis"])),
        "identity": (False, lambda x, p, a: K.identity(x)),
        "dropout": (False, lambda x, p, a: K.dropout(x, a["p"])),
        "add": (True, fold(K.add)),
        "mul": (True, fold(K.mul)),
        "concat": (True, lambda xs, p, a: K.concat(xs, a["axis"])),
        "upsample": (False, lambda x, p, a: K.upsample_nearest(x, a["scale"])),
        "pad": (False, lambda x, p, a: K.pad(x, a["pads"], a["value"], a["mode"])),
        "flatten": (False, lambda x, p, a: K.flatten(x, a["start"])),
        "reshape": (False, lambda x, p, a: K.reshape(x, a["shape"])),
        "yolo": (False, lambda x, p, a: K.yolo_decode(x, a["anchors"], a["classes"], a["image_size"])),
    }

    def eltwise_chain(xs, p, a):  # the chained ops one after another, as the unfused graph runs them
        y = xs[0]
        for op, attrs, other in a["chain"]:
            y = table[op][1]([y, xs[other]] if other >= 0 else y, {}, dict(attrs))
        return y

    table["eltwise_chain"] = (True, eltwise_chain)
    return table


REFERENCE_STEPS = step_table(R)

_ACT_STEPS = {op: fn for op, (_, fn) in REFERENCE_STEPS.items()
              if op in ("relu", "relu6", "clip", "leaky_relu", "sigmoid", "tanh", "silu", "hardswish", "hardsigmoid")}


def with_epilogue(listed: bool, fn, attrs: dict, params: dict):
    """The reference meaning of fused attributes, applied after the op exactly as the unfused graph would
    (so the reference stays the oracle): the folded batchnorm, then the residual operand (`residual`: the
    step's second input is added), then the activation. Returns (takes a list of inputs?, function)."""
    bn = attrs.get("bn_eps")
    act = attrs.get("act")
    residual = bool(attrs.get("residual"))
    if bn is None and act is None and not residual:
        return listed, fn
    bn_params = {k[3:]: v for k, v in params.items() if k.startswith("bn_")}
    act_fn, act_attrs = (_ACT_STEPS[act[0]], dict(act[1])) if act else (None, None)

    def run(xs, p, a):
        y = fn(xs, p, a) if listed else fn(xs[0], p, a)
        if bn is not None:
            y = R.batchnorm(y, bn_params["weight"], bn_params["bias"], bn_params["running_mean"],
                            bn_params["running_var"], bn)
        if residual:
            y = R.add(y, xs[1])
        if act_fn is not None:
            y = act_fn(y, {}, act_attrs)
        return y
    return True, run


class PlanError(Exception):
    """A plan that this runtime cannot execute (unknown op, missing weight)."""


class DeviceUnavailableError(PlanError):
    """A target whose device cannot be used here (no GPU, no driver, package missing); the one-line
    message says what was looked for, what was found and what to do."""


def _table(target: str) -> dict:
    if target == "reference":
        return REFERENCE_STEPS
    raise PlanError(f"unknown target {target!r} (targets: cpu, cuda, reference)")


def set_threads(threads: int | None) -> None:
    """Numba's thread count for the parallel kernels (default: all cores)."""
    import numba
    n = numba.config.NUMBA_NUM_THREADS if threads is None else min(threads, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(max(1, n))


class Program:
    def __init__(self, plan: dict, weights: dict[str, np.ndarray], target: str = "reference",
                 threads: int | None = None, memory_limit: int | None = None, release_weights: bool = False):
        self.cpu = None
        self.cuda = None
        self.memory_limit = memory_limit
        self.target = target
        self.threads = threads
        self.plan = plan
        self.steps = []
        if target == "cpu":
            from .cpu_program import CpuProgram
            try:
                self.cpu = CpuProgram(plan, weights, memory_limit, release_weights)
            except KeyError as err:
                raise PlanError(f"missing weight or op without a cpu kernel: {err.args[0]}") from None
            set_threads(threads)
            self.cpu.load_kernels()
            return
        if target == "cuda":
            from .cuda_program import CudaProgram
            try:
                self.cuda = CudaProgram(plan, weights, memory_limit)
            except KeyError as err:
                raise PlanError(f"missing weight or op without a cuda kernel: {err.args[0]}") from None
            return
        from .memory import plan_memory
        table = _table(target)
        self.no_reuse_per_sample = (plan.get("memory") or plan_memory(plan))["no_reuse"]
        for step in plan["steps"]:
            if step["op"] not in table:
                raise PlanError(f"op {step['op']} has no {target} kernel")
            listed, fn = table[step["op"]]
            try:
                params = {role: weights[name] for role, name in step["params"].items()}
            except KeyError as err:
                raise PlanError(f"missing weight {err.args[0]}") from None
            listed, fn = with_epilogue(listed, fn, step["attrs"], params)
            self.steps.append((step["output"], step["inputs"], listed, fn, params, step["attrs"]))
        # The last step that reads each tensor: intermediates are dropped right after it.
        outputs = {o["tensor"] for o in plan["outputs"]}
        self.last_use: dict[int, list[str]] = {}
        seen = set()
        for i in range(len(self.steps) - 1, -1, -1):
            for t in self.steps[i][1]:
                if t not in seen and t not in outputs:
                    seen.add(t)
                    self.last_use.setdefault(i, []).append(t)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.cpu is not None:
            set_threads(self.threads)
            return self.cpu.run(inputs)
        if self.cuda is not None:
            return self.cuda.run(inputs)
        from .memory import check_fits
        n = len(next(iter(inputs.values())))
        check_fits(4 * n * self.no_reuse_per_sample, n, self.memory_limit)  # the reference may keep every tensor
        env = {k: np.asarray(v, dtype=np.float32) for k, v in inputs.items()}
        for i, (out, ins, listed, fn, params, attrs) in enumerate(self.steps):
            args = [env[t] for t in ins]
            env[out] = fn(args, params, attrs) if listed else fn(args[0], params, attrs)
            for t in self.last_use.get(i, ()):
                del env[t]
        return {o["name"]: env[o["tensor"]] for o in self.plan["outputs"]}
