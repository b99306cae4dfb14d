"""Benchmark the library's ImageNet models against ONNX Runtime and PyTorch and write the README table.

    python tools/bench_library.py [--batch-sizes 1,16] [--repeat 20] [--threads 2] [--models M,..] [--update]

Each model runs in its own `cnnc bench ... --compare onnxruntime,torch --format json` process (cnnc and
its peers in the same process, same weights and input); peak memory is measured in fresh processes, one
per engine and batch size; the raw results go to benchmarks/results.json and the table between the
README's bench markers is rewritten. A benchmark, not a test: run it on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import os
import pathlib
import subprocess
import sys
import time

from readme_block import replace_block

ROOT = pathlib.Path(__file__).resolve().parent.parent
MEMORY_SAMPLES = 3  # fresh processes per engine and batch size; the table shows their median
MODELS = ["alexnet", "vgg16", "googlenet", "resnet18", "resnet50", "densenet121", "mobilenet_v2", "efficientnet_b0"]


def peak_child(engine: str, model_path: str, batch: int, threads: int, measure: str) -> None:
    """In a fresh process: build one engine from its model file (a .cnnplan with its weights bundled, or the
    .onnx file), run the batch 5 times and print, in MB as JSON, with ``measure`` == "process" the process's
    peak resident memory (VmHWM), building included, as a user's process has it; with "run" the peak during
    the runs and the resident memory before them, once the input was made and the C heap's freed memory handed
    back to the system (a run reusing what its engine freed while building would otherwise count nothing; that
    hand-back also lowers the process's later resident size, hence a process of each kind)."""
    import numpy as np

    from cnnc.bench import peak_rss_mb, reset_peak_rss, rss_mb
    from cnnc.runtime.memory import return_freed_memory
    if engine == "cnnc":
        from cnnc import load
        model = load(model_path, threads=threads)
        name, shape = model.input_names[0], model.plan["inputs"][0]["shape"]
        run = lambda x: model.run({name: x})  # noqa: E731
    else:
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
        name, shape = sess.get_inputs()[0].name, sess.get_inputs()[0].shape[1:]
        run = lambda x: sess.run(None, {name: x})  # noqa: E731
    x = np.random.default_rng(1).standard_normal((batch, *shape)).astype(np.float32)  # the caller's, not the run's
    if measure == "process":
        for _ in range(5):
            run(x)
        print(json.dumps({"peak_mb": peak_rss_mb()}))
        return
    return_freed_memory()
    built = rss_mb()
    if not reset_peak_rss():  # the runs' own peak (building may peak higher: cnnc packs weights, then frees)
        raise SystemExit("needs Linux's /proc/self/clear_refs to measure the runs' peak")
    for _ in range(5):
        run(x)
    print(json.dumps({"built_mb": built, "run_peak_mb": peak_rss_mb()}))


def peak_memory(model: str, batches: list[int], threads: int) -> dict:
    """Peak resident memory of a whole process running `model` with cnnc and with ONNX Runtime (the same
    architecture through cnnc's ONNX export), per batch size: what a user's process needs. Each engine
    loads the same weights from its own model file, as a deployment would: a compiled .cnnplan with the
    weights bundled, and the .onnx file."""
    import tempfile
    spec = str(ROOT / "specs" / f"{model}.cnn")
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, f"{model}.safetensors")
        paths = {"cnnc": os.path.join(tmp, f"{model}.cnnplan"), "onnxruntime": os.path.join(tmp, f"{model}.onnx")}
        for args in (["init", spec, "-o", weights], ["compile", spec, "-o", paths["cnnc"], "--weights", weights],
                     ["export", spec, "-o", paths["onnxruntime"], "--weights", weights]):
            subprocess.run([sys.executable, "-m", "cnnc", *args], check=True, capture_output=True)
        for engine in ("cnnc", "onnxruntime"):  # unmeasured: a kernel missing from Numba's cache compiles here
            subprocess.run([sys.executable, __file__, "--peak-child", engine, paths[engine], "1", str(threads),
                            "process"], capture_output=True)
        for batch in batches:
            for engine in ("cnnc", "onnxruntime"):
                figures = {}
                for measure in ("process", "run"):
                    samples = []
                    for _ in range(MEMORY_SAMPLES):  # the resident-size counters of one process vary by a few MB
                        r = subprocess.run([sys.executable, __file__, "--peak-child", engine, paths[engine],
                                            str(batch), str(threads), measure], capture_output=True, text=True)
                        if r.returncode == 0:
                            samples.append(json.loads(r.stdout.strip().splitlines()[-1]))
                    if samples:
                        figures.update({key: statistics.median(s[key] for s in samples) for key in samples[0]})
                if {"peak_mb", "run_peak_mb"} <= set(figures):
                    out.setdefault(str(batch), {})[engine] = figures
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--peak-child":
        engine, model_path, batch, threads, measure = sys.argv[2:7]
        peak_child(engine, model_path, int(batch), int(threads), measure)
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--memory-only", action="store_true",
                    help="keep the timings of benchmarks/results.json and measure the memory again")
    ap.add_argument("--update", action="store_true",
                    help="measure the --models again and keep the other models' rows (the table says which)")
    args = ap.parse_args()
    out = ROOT / "benchmarks" / "results.json"
    batches = [int(b) for b in args.batch_sizes.split(",")]
    if args.update:  # a row that a burst of load spoiled, measured again; the rest as they were
        previous = json.loads(out.read_text())
        meta, results = previous["meta"], previous["models"]
        meta.setdefault("remeasured", {}).update({m: time.strftime("%Y-%m-%d %H:%M") for m in args.models.split(",")})
    elif args.memory_only:  # the other models' rows stay as they were
        previous = json.loads(out.read_text())
        meta, results = previous["meta"], previous["models"]
        meta["memory_date"] = time.strftime("%Y-%m-%d")
        missing = [m for m in args.models.split(",") if m not in results]
        if missing:
            raise SystemExit(f"--memory-only: {out} has no timings for {', '.join(missing)}")
    else:
        meta = {"date": time.strftime("%Y-%m-%d"), "threads": args.threads, "repeat": args.repeat,
                "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
        results = {}
    for model in args.models.split(","):
        t0 = time.time()
        if not args.memory_only:
            cmd = [sys.executable, "-m", "cnnc", "bench", str(ROOT / "specs" / f"{model}.cnn"), "--compare",
                   "onnxruntime,torch", "--batch-size", args.batch_sizes, "--repeat", str(args.repeat), "--warmup",
                   str(args.warmup), "--threads", str(args.threads), "--format", "json"]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                print(f"{model}: failed\n{r.stderr}", file=sys.stderr)
                continue
            results[model] = json.loads(r.stdout)
        results[model]["peak_memory"] = peak_memory(model, batches, meta["threads"])
        print(f"{model}: done in {time.time() - t0:.0f} s", file=sys.stderr)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "models": results}, indent=1) + "\n")
    table = render(results, meta)
    replace_block("bench", table)
    print(table)
    return 0


def render(results: dict, meta: dict) -> str:
    again = "".join(f"; {m} measured again {when} (`--update`)" for m, when in meta.get("remeasured", {}).items())
    lines = [f"Measured {meta['date']} by `tools/bench_library.py` ({meta['threads']} threads, median of "
             f"{meta['repeat']} runs after warm-up; ratio = cnnc / peer, below 1 means cnnc is faster{again}).", "",
             "| model | batch | cnnc ms | ONNX Runtime ms | PyTorch ms | cnnc/ORT | cnnc/PyTorch | run MB cnnc / ORT "
             "| process peak MB cnnc / ORT |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    ratios: dict[int, dict[str, list]] = {}
    for model, rep in results.items():
        by = {}
        for r in rep["results"]:
            by.setdefault(r["batch"], {})[r["engine"]] = r
        for batch, engines in sorted(by.items()):
            c = engines["cnnc"]["median_ms"]
            cells = [model, str(batch), f"{c:.1f}"]
            rs = []
            for peer in ("onnxruntime", "torch"):
                p = engines.get(peer, {})
                cells.append(f"{p['median_ms']:.1f}" if "median_ms" in p else "n/a")
                rs.append(c / p["median_ms"] if "median_ms" in p else None)
                if "median_ms" in p:
                    ratios.setdefault(batch, {}).setdefault(peer, []).append(c / p["median_ms"])
            cells += [f"{x:.2f}" if x else "n/a" for x in rs]
            mem = rep.get("peak_memory", {}).get(str(batch), {})
            if "cnnc" in mem and "onnxruntime" in mem:
                run = {e: mem[e]["run_peak_mb"] - mem[e]["built_mb"] for e in ("cnnc", "onnxruntime")}
                cells.append(f"{run['cnnc']:.0f} / {run['onnxruntime']:.0f}")
                cells.append(f"{mem['cnnc']['peak_mb']:.0f} / {mem['onnxruntime']['peak_mb']:.0f}")
            else:
                cells += ["n/a", "n/a"]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Memory, the median of {MEMORY_SAMPLES} fresh processes per engine, each loading the model from its "
                 "file (a `.cnnplan` with the weights bundled; the `.onnx` export of the same weights) and running "
                 "the batch five times: *process "
                 "peak* is its peak resident memory, building included (VmHWM: libraries, weights, packing, "
                 "activations); *run*, measured in processes of its own, is the peak during the runs minus the "
                 "resident memory once the engine was built, the input made and the C heap's free memory handed back "
                 "to the system (`malloc_trim`: a run that reuses memory its engine freed while building would "
                 "otherwise count nothing) -- activations and workspace, as both engines load their kernels while "
                 "building.")
    lines.append("")
    for batch, peers in sorted(ratios.items()):
        parts = [f"{peer} {math.exp(sum(map(math.log, v)) / len(v)):.2f}" for peer, v in peers.items()]
        lines.append(f"Geometric mean of cnnc/peer at batch {batch}: " + ", ".join(parts) + ".")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
