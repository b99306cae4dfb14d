"""`cnnc bench`: latency, throughput and memory of a network on the CPU target (or, with `--target cuda`,
the GPU), with the same architecture and weights run by its peers in the same process (ONNX Runtime
through cnnc's own ONNX export; PyTorch eager through torch.nn.functional, where torch is installed, on
the same device), and a per-kernel profile."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

import numpy as np

from .errors import CnncError, Diagnostic
from .runtime.memory import return_freed_memory


def _status_mb(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), MB; None where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Current resident memory of this process, MB (0 where unavailable)."""
    return _status_mb("VmRSS") or 0.0


def peak_rss_mb() -> float | None:
    """This process's peak resident memory since the last `reset_peak_rss` (VmHWM), MB; None if unknown."""
    return _status_mb("VmHWM")


def reset_peak_rss() -> bool:
    """Start a new peak (VmHWM := the current resident size); False where Linux's counter is missing."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: reset VmHWM to the current resident size
        return True
    except OSError:
        return False


def interleaved(fns: list, warmup: int, repeat: int, blocks: int = 3) -> tuple[list[list[float]], list[float | None]]:
    """Time several engines on the same batch in `blocks` rounds; in each round every engine runs once
    untimed (its threads wake, its caches refill) and then its share of the timed runs back to back. A
    burst of load on a shared machine so hits them alike, while no engine is timed right after another's
    threads (which keep spinning for a while after their last run). Returns each engine's times and the
    peak memory its warm-up runs add (MB: the highest resident size during them minus the size before;
    first runs allocate arenas and workspaces; the heap's free memory is handed back to the system first, so
    that a run reusing memory its engine freed while building still counts); engines are built (weights
    loaded, cnnc's kernels loaded) before. Peaks are None where Linux's counter is missing."""
    peaks: list[float | None] = []
    for fn in fns:
        return_freed_memory()
        base = rss_mb()
        reset = reset_peak_rss()
        for _ in range(max(1, warmup)):
            fn()
        peak = peak_rss_mb() if reset else None
        peaks.append(None if peak is None else max(0.0, peak - base))
    times: list[list[float]] = [[] for _ in fns]
    blocks = max(1, min(blocks, repeat))
    for b in range(blocks):
        share = repeat // blocks + (1 if b < repeat % blocks else 0)
        for i, fn in enumerate(fns):
            fn()
            for _ in range(share):
                t0 = time.perf_counter()
                fn()
                times[i].append(time.perf_counter() - t0)
    return times, peaks


def summary(times: list[float], batch: int) -> dict:
    ms = sorted(t * 1000 for t in times)
    q = lambda p: ms[min(len(ms) - 1, int(p * len(ms)))]  # noqa: E731
    median = statistics.median(ms)
    return {"median_ms": median, "p10_ms": q(0.1), "p90_ms": q(0.9), "min_ms": ms[0],
            "throughput": batch / (median / 1000)}


# ---- PyTorch eager: the plan's steps as torch.nn.functional calls, with the same weights --------------

def torch_runner(plan: dict, weights: dict[str, np.ndarray], threads: int, device: str = "cpu"):
    """The plan run by PyTorch eager on `device` ("cpu" or "cuda": weights moved there once; a run copies
    its input in and its outputs out, and waits for the GPU, like the cnnc cuda target)."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    W = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in weights.items()}

    def act(y, a):
        spec = a.get("act")
        if spec is None:
            return y
        return ACTS[spec[0]](y, dict(spec[1]))

    ACTS = {
        "relu": lambda y, a: F.relu(y), "relu6": lambda y, a: F.relu6(y), "sigmoid": lambda y, a: torch.sigmoid(y),
        "tanh": lambda y, a: torch.tanh(y), "silu": lambda y, a: F.silu(y), "hardswish": lambda y, a: F.hardswish(y),
        "hardsigmoid": lambda y, a: torch.clamp(a["alpha"] * y + a["beta"], 0, 1),
        "leaky_relu": lambda y, a: F.leaky_relu(y, a["slope"]),
        "clip": lambda y, a: torch.clamp(y, a["min"], a["max"]),
        "identity": lambda y, a: y, "dropout": lambda y, a: y,
    }

    def bn(y, p, prefix, eps):
        return F.batch_norm(y, p[prefix + "running_mean"], p[prefix + "running_var"], p.get(prefix + "weight"),
                            p.get(prefix + "bias"), False, 0.0, eps)

    def pad4(x, pads, value=0.0, mode="constant"):
        t, l, b, r = pads
        return F.pad(x, (l, r, t, b), mode=mode, value=value) if mode == "constant" else F.pad(x, (l, r, t, b), mode=mode)

    def step_fn(step):
        op, a = step["op"], step["attrs"]
        p = {role: W[name] for role, name in step["params"].items()}

        def conv(xs):
            x = xs[0]
            t, l, b, r = a["pads"]
            if (t, l) != (b, r):
                x, pads = pad4(x, a["pads"]), 0
            else:
                pads = (t, l)
            return F.conv2d(x, p["weight"], p.get("bias"), a["stride"], pads, a["dilation"], a["groups"])

        def conv_t(xs):
            t, l, b, r = a["pads"]
            y = F.conv_transpose2d(xs[0], p["weight"], p.get("bias"), a["stride"], 0, a["output_padding"],
                                   a["groups"], a["dilation"])
            return y[:, :, t:y.shape[2] - b, l:y.shape[3] - r]

        def pool(xs, kind):
            x, (t, l, b, r) = xs[0], a["pads"]
            if kind == "max":
                if (t, l) != (b, r):
                    return F.max_pool2d(pad4(x, a["pads"], float("-inf")), a["kernel"], a["stride"], 0, a["dilation"],
                                        ceil_mode=a["ceil_mode"])
                return F.max_pool2d(x, a["kernel"], a["stride"], (t, l), a["dilation"], ceil_mode=a["ceil_mode"])
            return F.avg_pool2d(x, a["kernel"], a["stride"], (t, l), a["ceil_mode"], a["count_include_pad"])

        def binary(xs, fn):
            y = xs[0]
            for x in xs[1:]:
                y = fn(y, x)
            return y

        def yolo(xs):
            x = xs[0]
            anchors = torch.tensor(a["anchors"], dtype=torch.float32, device=device)
            na, nc = len(a["anchors"]), a["classes"]
            n, _, h, w = x.shape
            y = x.reshape(n, na, 5 + nc, h, w).permute(0, 1, 3, 4, 2)
            rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
            bx = (torch.sigmoid(y[..., 0]) + cols) * (a["image_size"][1] / w)
            by = (torch.sigmoid(y[..., 1]) + rows) * (a["image_size"][0] / h)
            bw = torch.exp(y[..., 2]) * anchors[:, 0].reshape(1, na, 1, 1)
            bh = torch.exp(y[..., 3]) * anchors[:, 1].reshape(1, na, 1, 1)
            rest = torch.sigmoid(y[..., 4:])
            return torch.cat([bx[..., None], by[..., None], bw[..., None], bh[..., None], rest], -1).reshape(n, -1, 5 + nc)

        table = {
            "conv": conv, "conv_transpose": conv_t,
            "maxpool": lambda xs: pool(xs, "max"), "avgpool": lambda xs: pool(xs, "avg"),
            "global_avgpool": lambda xs: F.adaptive_avg_pool2d(xs[0], 1),
            "global_maxpool": lambda xs: F.adaptive_max_pool2d(xs[0], 1),
            "adaptive_avgpool": lambda xs: F.adaptive_avg_pool2d(xs[0], a["size"]),
            "adaptive_maxpool": lambda xs: F.adaptive_max_pool2d(xs[0], a["size"]),
            "dense": lambda xs: F.linear(xs[0], p["weight"], p.get("bias")),
            "batchnorm": lambda xs: bn(xs[0], p, "", a["eps"]),
            "affine": lambda xs: xs[0] * p.get("weight", torch.ones(xs[0].shape[1], device=device)).reshape(
                (1, -1) + (1,) * (xs[0].dim() - 2)) + p.get("bias", torch.zeros(xs[0].shape[1], device=device)).reshape(
                (1, -1) + (1,) * (xs[0].dim() - 2)),
            "lrn": lambda xs: F.local_response_norm(xs[0], a["size"], a["alpha"], a["beta"], a["k"]),
            "softmax": lambda xs: F.softmax(xs[0], a["axis"]),
            "add": lambda xs: binary(xs, torch.add), "mul": lambda xs: binary(xs, torch.mul),
            "concat": lambda xs: torch.cat(xs, a["axis"]),
            "upsample": lambda xs: F.interpolate(xs[0], scale_factor=a["scale"], mode="nearest"),
            "pad": lambda xs: pad4(xs[0], a["pads"], a["value"], {"replicate": "replicate", "reflect": "reflect"}.get(
                a["mode"], "constant")),
            "flatten": lambda xs: torch.flatten(xs[0], a["start"]),
            "reshape": lambda xs: xs[0].reshape(xs[0].shape[0], *a["shape"]),
            "yolo": yolo,
        }
        if op in ACTS:
            fn = lambda xs: ACTS[op](xs[0], a)  # noqa: E731
        else:
            fn = table[op]
        eps = a.get("bn_eps")

        def epilogue(xs):
            y = fn(xs)
            if eps is not None:
                y = bn(y, p, "bn_", eps)
            if a.get("residual"):
                y = y + xs[1]
            return act(y, a)
        return epilogue

    steps = [(s["output"], s["inputs"], step_fn(s)) for s in plan["steps"]]
    outputs = [o["tensor"] for o in plan["outputs"]]

    def run(x: np.ndarray):
        with torch.inference_mode():
            env = {plan["inputs"][0]["name"]: torch.from_numpy(x).to(device)}
            for out, ins, fn in steps:
                env[out] = fn([env[i] for i in ins])
            result = [env[o].cpu().numpy() for o in outputs]
            if device == "cuda":
                torch.cuda.synchronize()
            return result
    return run


def ort_runner(graph, weights, threads: int, tmpdir: str):
    """ONNX Runtime on cnnc's export of `graph` (written under `tmpdir`, read once by the session)."""
    import onnxruntime as ort
    from .onnx_export import export, save
    path = os.path.join(tmpdir, "model.onnx")
    save(export(graph, weights), path, full_check=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    # Its worker threads keep spinning after a run (for up to a second, waiting for the next one) and took a
    # core from the engine timed next in this process: cnnc's batch-1 runs right after an ONNX Runtime block
    # were up to 3x slower. They still spin within a run, so ONNX Runtime's own times are unchanged.
    so.add_session_config_entry("session.force_spinning_stop", "1")
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})


def run_bench(args) -> int:
    from . import plan as plan_mod
    from .compiler import compile_spec, parse_overrides
    from .model import load
    try:
        batches = [int(b) for b in str(args.batch_size).split(",")]
    except ValueError:
        batches = [0]
    if any(b < 1 for b in batches):
        raise CnncError(Diagnostic("E203", f"--batch-size must be positive integers, found {args.batch_size}", None))
    import numba
    threads = args.threads or numba.config.NUMBA_NUM_THREADS
    peers = [p for p in (args.compare.split(",") if args.compare else []) if p]
    for p in peers:
        if p not in ("onnxruntime", "torch"):
            raise CnncError(Diagnostic("E201", f"unknown peer '{p}'", None, "peers: onnxruntime, torch"))
    overrides = parse_overrides(args.set)
    t0 = time.perf_counter()
    target = getattr(args, "target", "cpu")
    model = load(args.spec, weights=args.weights, target=target, threads=threads, seed=0, network=args.network,
                 include=tuple(args.include), opt_level=args.opt_level, disabled=tuple(args.disable), **overrides)
    load_s = time.perf_counter() - t0
    if model.program.cpu is not None:  # load the compiled kernels (once per process) before measuring memory
        model.program.run({i["name"]: np.zeros((1, *i["shape"]), np.float32) for i in model.plan["inputs"]})
        model.program.cpu.release()
    plan = model.plan
    if len(plan["inputs"]) != 1:
        raise CnncError(Diagnostic("E241", "cnnc bench measures networks with one input", None))
    shape = tuple(plan["inputs"][0]["shape"])
    name = plan["inputs"][0]["name"]
    macs = sum(s.get("macs", 0) for s in plan["steps"])
    report = {"network": plan["network"], "target": target, "threads": threads, "gmacs_per_sample": macs / 1e9, "load_s": load_s,
              "opt_level": args.opt_level, "disabled": sorted(args.disable), "steps": len(plan["steps"]), "results": []}
    if target == "cpu":  # which register tiles the CPU kernels were built with (runtime/cpu/isa.py)
        from .runtime.cpu.isa import VECTOR_UNIT
        report["vector_unit"] = VECTOR_UNIT.key
    unfused = None
    with tempfile.TemporaryDirectory() as tmp:
        for batch in batches:
            x = np.random.default_rng(1).standard_normal((batch, *shape)).astype(np.float32)
            names, fns = ["cnnc"], [lambda: model.program.run({name: x})]
            for peer in peers:
                try:
                    if unfused is None:
                        res = compile_spec(args.spec, overrides, args.network, tuple(args.include), stop_after="dce")
                        unfused = (res.graph, plan_mod.from_graph(res.graph), _weights_for(model, args))
                    graph, uplan, wts = unfused
                    if peer == "onnxruntime":
                        run = ort_runner(graph, wts, threads, tmp)
                    else:
                        run = torch_runner(uplan, wts, threads, "cuda" if target == "cuda" else "cpu")
                except ImportError as err:
                    report["results"].append({"engine": peer, "batch": batch, "error": f"not installed ({err.name})"})
                    continue
                names.append(peer)
                fns.append(lambda run=run: run(x))
            times, peaks = interleaved(fns, args.warmup, args.repeat)
            rows = [{"engine": e, "batch": batch, **summary(t, batch), "run_peak_mb": pk}
                    for e, t, pk in zip(names, times, peaks)]
            for r in rows[1:]:
                r["cnnc_ratio"] = rows[0]["median_ms"] / r["median_ms"]
            report["results"].extend(rows)
    if args.profile:
        report["profile"] = [row for batch in batches for row in _profile(model, name, shape, batch, args)]
    if args.format == "json":
        print(json.dumps(report, indent=1))
    else:
        _print_report(report, macs)
    return 0


def _weights_for(model, args) -> dict:
    from .weights import initialise
    from .weights import load as load_weights
    if args.weights:
        return load_weights(args.weights, model.plan["constants"])[0]
    return initialise(model.plan["constants"], 0)


def _profile(model, name, shape, batch, args) -> list[dict]:
    x = np.random.default_rng(1).standard_normal((batch, *shape)).astype(np.float32)
    cpu = model.program.cpu or model.program.cuda  # either target's program takes `profile`
    for _ in range(max(1, args.warmup)):
        cpu.run({name: x})
    per_step: dict[int, list[float]] = {}
    for _ in range(args.repeat):
        prof: list = []
        cpu.run({name: x}, profile=prof)
        for i, t in prof:
            per_step.setdefault(i, []).append(t)
    total = sum(statistics.median(v) for v in per_step.values())
    rows = []
    for i, ts in per_step.items():
        s = model.plan["steps"][i]
        t = statistics.median(ts)
        op = (s["op"] + ("+bn" if "bn_eps" in s["attrs"] else "") + ("+add" if s["attrs"].get("residual") else "")
              + (f"+{s['attrs']['act'][0]}" if "act" in s["attrs"] else ""))
        macs = s.get("macs", 0) * batch
        rows.append({"batch": batch, "step": s["name"], "op": op, "shape": [batch, *model.plan["tensors"][s["output"]]],
                     "ms": t * 1000, "gflops": 2 * macs / t / 1e9 if t > 0 and macs else 0.0,
                     "share": t / total if total else 0.0})
    rows.sort(key=lambda r: -r["ms"])
    return rows


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _print_report(report: dict, macs: int) -> None:
    unit = f", {report['vector_unit']} kernels" if "vector_unit" in report else ""
    print(f"{report['network']}: {report['gmacs_per_sample']:.2f} GMACs per sample, {report['threads']} threads{unit}, "
          f"loaded in {report['load_s']:.2f} s")
    print(f"{'engine':12s} {'batch':>5s} {'median ms':>10s} {'p10-p90 ms':>15s} {'samples/s':>10s} {'GFLOP/s':>8s} "
          f"{'peak +MB':>8s} {'cnnc/peer':>9s}")
    for r in report["results"]:
        if "error" in r:
            print(f"{r['engine']:12s} {r['batch']:>5d} {r['error']}")
            continue
        gflops = 2 * macs * r["batch"] / (r["median_ms"] / 1000) / 1e9
        ratio = f"{r['cnnc_ratio']:.2f}" if "cnnc_ratio" in r else ""
        print(f"{r['engine']:12s} {r['batch']:>5d} {r['median_ms']:>10.2f} {r['p10_ms']:>7.2f}-{r['p90_ms']:<7.2f} "
              f"{r['throughput']:>10.1f} {gflops:>8.1f} {_mb(r['run_peak_mb']):>8s} {ratio:>9s}")
    for batch in dict.fromkeys(r["batch"] for r in report.get("profile", [])):  # one table per batch size
        print()
        print(f"{'step':40s} {'op':22s} {'shape':22s} {'ms':>8s} {'GFLOP/s':>8s} {'share':>6s}")
        for r in (r for r in report["profile"] if r["batch"] == batch):
            print(f"{r['step'][:40]:40s} {r['op'][:22]:22s} {str(tuple(r['shape']))[:22]:22s} {r['ms']:>8.3f} "
                  f"{r['gflops']:>8.1f} {100 * r['share']:>5.1f}%")

