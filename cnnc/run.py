"""`cnnc run`: stream inputs through a model in batches, write the outputs atomically, report."""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from .errors import CnncError, Diagnostic
from .fileio import atomic_write


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a few plain lines otherwise."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.done = total, enabled, 0
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.last_pct = -1

    def update(self, n: int):
        self.done += n
        if not self.enabled:
            return
        pct = int(100 * self.done / max(1, self.total))
        rate = self.done / max(1e-9, time.perf_counter() - self.t0)
        bar = "#" * (pct // 4) + "." * (25 - pct // 4)
        line = f"[{bar}] {self.done}/{self.total} samples, {rate:.1f}/s"
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif pct // 25 != self.last_pct // 25 or self.done == self.total:
            print(line, file=sys.stderr, flush=True)
        self.last_pct = pct

    def close(self):
        if self.enabled and self.tty:
            print(file=sys.stderr)


def _labels_for(args, model, spec_path: str) -> list[str] | None:
    path = args.labels
    if path is None:
        info = model.plan["inputs"][0].get("info", {}) if model.plan["inputs"] else {}
        path = info.get("labels")
        if path is None:
            return None
        if not os.path.isabs(path):
            from .expand import library_dir
            for base in (os.path.dirname(os.path.abspath(spec_path)), library_dir()):
                if os.path.isfile(os.path.join(base, path)):
                    path = os.path.join(base, path)
                    break
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as err:
        raise CnncError(Diagnostic("E404", f"{path}: cannot read labels: {err.strerror}", None)) from None


def write_outputs(path: str, outputs: dict[str, np.ndarray]) -> None:
    lower = path.lower()
    if lower.endswith(".npy"):
        if len(outputs) != 1:
            raise CnncError(Diagnostic("E403", f"{path}: the network has {len(outputs)} outputs "
                                       f"({', '.join(outputs)}); a .npy holds one", None,
                                       "write an .npz (one array per output name)"))
        with atomic_write(path) as f:
            np.save(f, next(iter(outputs.values())), allow_pickle=False)
    elif lower.endswith(".npz"):
        with atomic_write(path) as f:
            np.savez(f, **outputs)
    else:
        raise CnncError(Diagnostic("E403", f"{path}: outputs are written as .npy or .npz", None))


def run_command(args) -> int:
    from .compiler import parse_overrides
    from .inputs import open_source
    from .model import load

    if args.threads is not None and args.threads < 1:
        raise CnncError(Diagnostic("E203", "--threads must be at least 1", None))
    if args.batch_size is not None and args.batch_size < 1:
        raise CnncError(Diagnostic("E203", "--batch-size must be at least 1", None))
    if args.output and not args.output.lower().endswith((".npy", ".npz")):
        raise CnncError(Diagnostic("E403", f"{args.output}: outputs are written as .npy or .npz", None))
    t_start = time.perf_counter()
    overrides = parse_overrides(args.set)
    model = load(args.spec, weights=args.weights, target=args.target, threads=args.threads,
                 allow_missing=args.allow_missing, seed=args.seed, network=args.network,
                 include=tuple(args.include), memory_limit=0 if args.no_memory_check else None, **overrides)
    t_loaded = time.perf_counter()
    if args.weights is None:
        print(f"cnnc: no --weights: running on {model.weights_source}", file=sys.stderr)
    batch_size = args.batch_size or (1 if args.input is None else 16)
    source = open_source(args.input, model.plan["inputs"], strict=args.strict, seed=1, batch=batch_size)
    if args.input is None:
        print(f"cnnc: no --input: running on a seeded synthetic batch of {batch_size}", file=sys.stderr)
    progress = Progress(source.count, enabled=source.count > batch_size)
    collected: dict[str, list[np.ndarray]] = {name: [] for name in model.output_names}
    batch_times = []
    for batch in source.batches(batch_size):
        t0 = time.perf_counter()
        out = model.run_checked(batch)
        batch_times.append(time.perf_counter() - t0)
        for name, a in out.items():
            collected[name].append(a)
        progress.update(len(next(iter(batch.values()))))
    progress.close()
    outputs = {name: np.concatenate(parts) if len(parts) > 1 else parts[0] for name, parts in collected.items()}
    if args.output:
        write_outputs(args.output, outputs)
    total = time.perf_counter() - t_start
    for name, a in outputs.items():
        print(f"{name}: shape {a.shape}, min {a.min():.4g}, max {a.max():.4g}, mean {a.mean():.4g}")
    first = outputs[model.output_names[0]]
    if len(outputs) == 1 and first.ndim == 2 and first.shape[1] >= 2 and args.top > 0:
        labels = _labels_for(args, model, args.spec)
        k = min(args.top, first.shape[1])
        for i, row in enumerate(first[:20]):
            name = os.path.basename(source.names[i]) if source.names else f"#{i}"
            top = np.argsort(-row, kind="stable")[:k]
            items = ", ".join(f"{c}{' ' + labels[c] if labels and c < len(labels) else ''} ({row[c]:.3f})" for c in top)
            print(f"{name}: top-{k}: {items}")
        if len(first) > 20:
            print(f"... ({len(first) - 20} more inputs)")
    per_batch = sorted(batch_times)[len(batch_times) // 2]
    print(f"time: {total:.3f} s total ({t_loaded - t_start:.3f} s to load and compile, "
          f"{per_batch * 1000:.1f} ms per batch of {batch_size} (median of {len(batch_times)}), "
          f"{source.count / max(1e-9, sum(batch_times)):.1f} samples/s)", file=sys.stderr)
    if args.output:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
