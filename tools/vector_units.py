"""Measure the CPU kernels of each vector unit (runtime/cpu/isa.py) on this machine; write the README table.

    python tools/vector_units.py [--models resnet18,mobilenet_v2] [--threads 2]

Numba compiles for the target that NUMBA_CPU_NAME / NUMBA_CPU_FEATURES name, and cnnc builds that target's
register tiles, so one AVX-512 machine runs all three kernel sets: AVX-512 (the host), AVX-512 with 256-bit
vectors (NUMBA_CPU_NAME=skylake-avx512: how LLVM vectorises for Intel's AVX-512 cores) and AVX2
(NUMBA_CPU_NAME=haswell, AVX-512 features off). Each runs `cnnc bench` at batch 1 in its own process. The
peer of the same instruction set is OpenBLAS's sgemm (numpy matmul of 2048 x 2048 float32 matrices) with
OPENBLAS_CORETYPE=Haswell (its AVX2 kernel) and with the variable unset (its kernel for this CPU): a
compute-bound GEMM, close to what each instruction set can do here. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

from readme_block import replace_block

ROOT = pathlib.Path(__file__).resolve().parent.parent
UNITS = [  # (key, the environment that selects it)
    ("avx512", {}),
    ("avx512-ymm", {"NUMBA_CPU_NAME": "skylake-avx512"}),
    ("avx2", {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "+avx,+avx2,+fma,+f16c,+bmi,+bmi2,+popcnt"}),
]
MODELS = "alexnet,vgg16,googlenet,resnet18,resnet50,densenet121,mobilenet_v2,efficientnet_b0"
GEMM = """
import time, numpy as np
a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
a @ a
ts = []
for _ in range(7):
    t = time.perf_counter(); a @ a; ts.append(time.perf_counter() - t)
print(2 * 2048 ** 3 / sorted(ts)[3] / 1e9)
"""


def gemm_gflops(coretype: str | None, threads: int) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    done = subprocess.run([sys.executable, "-c", GEMM], env=env, check=True, capture_output=True, text=True)
    return float(done.stdout)


def bench(model: str, env_extra: dict, threads: int) -> dict:
    env = dict(os.environ, **env_extra)
    cmd = [sys.executable, "-m", "cnnc", "bench", str(ROOT / "specs" / f"{model}.cnn"), "--threads", str(threads),
           "--repeat", "20", "--format", "json"]
    subprocess.run(cmd[:-4] + ["--repeat", "1"], env=env, check=True, capture_output=True)  # compile once
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    models = args.models.split(",")
    gemm = {"avx512": gemm_gflops(None, args.threads), "avx2": gemm_gflops("Haswell", args.threads)}
    rows = {}
    for key, env in UNITS:
        for model in models:
            report = bench(model, env, args.threads)
            assert report["vector_unit"] == key, (report["vector_unit"], key)
            ms = report["results"][0]["median_ms"]
            rows.setdefault(model, {})[key] = (ms, 2 * report["gmacs_per_sample"] / ms * 1e3)
            print(model, key, f"{ms:.2f} ms", file=sys.stderr)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} by `tools/vector_units.py` on this AMD Zen 5 machine ({args.threads} "
        "threads, batch 1, median of 20 runs): ms and GFLOP/s of each kernel set.", "",
        "| model | AVX-512 | AVX-512, 256-bit vectors | AVX2 |", "| --- | --- | --- | --- |"]
    for model in models:
        cells = [f"{ms:.1f} ms, {gf:.0f}" for ms, gf in (rows[model][k] for k, _ in UNITS)]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", f"OpenBLAS sgemm (2048^3, {args.threads} threads), the same machine: {gemm['avx512']:.0f} GFLOP/s "
              f"with its own kernel for this CPU, {gemm['avx2']:.0f} GFLOP/s with OPENBLAS_CORETYPE=Haswell (AVX2)."]
    table = "\n".join(lines) + "\n"
    replace_block("units", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
