"""Benchmark the library's ImageNet models against ONNX Runtime and PyTorch and write the README table.

    python tools/bench_library.py [--batch-sizes 1,16] [--repeat 20] [--threads 2]

Each model runs in its own `cnnc bench ... --compare onnxruntime,torch --format json` process (cnnc and
its peers in the same process, same weights and input); the raw results go to benchmarks/results.json
and the table between the README's bench markers is rewritten. A benchmark, not a test: run it on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ["alexnet", "vgg16", "googlenet", "resnet18", "resnet50", "densenet121", "mobilenet_v2", "efficientnet_b0"]
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    results = {}
    for model in args.models.split(","):
        cmd = [sys.executable, "-m", "cnnc", "bench", str(ROOT / "specs" / f"{model}.cnn"), "--compare",
               "onnxruntime,torch", "--batch-size", args.batch_sizes, "--repeat", str(args.repeat), "--warmup",
               str(args.warmup), "--threads", str(args.threads), "--format", "json"]
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            print(f"{model}: failed\n{r.stderr}", file=sys.stderr)
            continue
        results[model] = json.loads(r.stdout)
        print(f"{model}: done in {time.time() - t0:.0f} s", file=sys.stderr)
    out = ROOT / "benchmarks" / "results.json"
    out.parent.mkdir(exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "threads": args.threads, "repeat": args.repeat,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
    out.write_text(json.dumps({"meta": meta, "models": results}, indent=1) + "\n")
    table = render(results, meta)
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + START + "\n" + table + END + rest.split(END, 1)[1]
        readme.write_text(text)
    print(table)
    return 0


def render(results: dict, meta: dict) -> str:
    lines = [f"Measured {meta['date']} by `tools/bench_library.py` ({meta['threads']} threads, median of "
             f"{meta['repeat']} runs after warm-up; ratio = cnnc / peer, below 1 means cnnc is faster).", "",
             "| model | batch | cnnc ms | ONNX Runtime ms | PyTorch ms | cnnc/ORT | cnnc/PyTorch |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
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
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for batch, peers in sorted(ratios.items()):
        parts = [f"{peer} {math.exp(sum(map(math.log, v)) / len(v)):.2f}" for peer, v in peers.items()]
        lines.append(f"Geometric mean of cnnc/peer at batch {batch}: " + ", ".join(parts) + ".")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
