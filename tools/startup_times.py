"""Measure cnnc's start-up (cold and warm Numba cache) and steady-state latency; write the README table.

    python tools/startup_times.py [--models resnet18,resnet50] [--threads 2]   (default: the eight ImageNet models)

Cold: `cnnc run specs/MODEL.cnn` with a fresh, empty NUMBA_CACHE_DIR (every kernel compiles). Warm: the
same command again (kernels load from that cache). Both are whole-process wall times: Python start,
parse, compile, weight initialisation and packing, the first batch. Steady state: `cnnc bench` median at
batch 1. A benchmark, not a test: run it on an otherwise idle machine. The figures are also written to
benchmarks/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from bench_library import MODELS
from readme_block import replace_block

ROOT = pathlib.Path(__file__).resolve().parent.parent


def timed_run(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    rows = []
    results: dict[str, dict] = {}
    for model in args.models.split(","):
        spec = str(ROOT / "specs" / f"{model}.cnn")
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache, NUMBA_NUM_THREADS=str(args.threads))
            run = [sys.executable, "-m", "cnnc", "run", spec, "--threads", str(args.threads)]
            cold = timed_run(run, env)
            warm = timed_run(run, env)
            bench = subprocess.run([sys.executable, "-m", "cnnc", "bench", spec, "--threads", str(args.threads),
                                    "--repeat", "20", "--format", "json"], env=env, check=True, capture_output=True,
                                   text=True)
            steady = json.loads(bench.stdout)["results"][0]["median_ms"]
        results[model] = {"cold_s": cold, "warm_s": warm, "steady_ms": steady}
        rows.append(f"| {model} | {cold:.1f} s | {warm:.1f} s | {steady:.{1 if steady < 10 else 0}f} ms |")
        print(rows[-1], file=sys.stderr)
    table = "\n".join([
        f"Measured {time.strftime('%Y-%m-%d')} by `tools/startup_times.py` ({args.threads} threads, batch 1).", "",
        "| model | first-ever `cnnc run` (cold Numba cache) | second `cnnc run` (warm cache) | steady state per batch |",
        "| --- | --- | --- | --- |", *rows]) + "\n"
    out = ROOT / "benchmarks" / "startup.json"  # the raw figures beside the table
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "threads": args.threads, "models": results},
                              indent=1) + "\n")
    replace_block("startup", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
