"""`cnnc run`: stream inputs through a model in batches, write the outputs atomically, report."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
import zipfile

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


class OutputStream:
    """The outputs of a run, taken batch by batch: written on as they come (to the destination's temporary
    file, or for an .npz to one unnamed temporary file per output, zipped at the end) and summarised
    (shape, min, max, mean, the first rows), so memory stays one batch however many inputs stream through.
    Nothing appears at the destination until `finish`: an interrupted run leaves no partial file."""

    HEAD = 20  # rows kept for the report

    def __init__(self, path: str | None, names: list[str], count: int, stack: contextlib.ExitStack):
        self.path, self.names, self.count = path, names, count
        self.head = {n: [] for n in names}
        self.stats = {n: [np.inf, -np.inf, 0.0, 0] for n in names}  # min, max, sum, elements
        self.shapes: dict[str, tuple] = {}
        self.dtypes: dict[str, np.dtype] = {}
        self.files: dict[str, object] = {}
        self._npz = None
        if path is None:
            return
        lower = path.lower()
        if lower.endswith(".npy"):
            if len(names) != 1:
                raise CnncError(Diagnostic("E403", f"{path}: the network has {len(names)} outputs "
                                           f"({', '.join(names)}); a .npy holds one", None,
                                           "write an .npz (one array per output name)"))
            self.files[names[0]] = stack.enter_context(atomic_write(path))
        elif lower.endswith(".npz"):
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                raise CnncError(Diagnostic("E403", f"cannot write {path}: folder {directory} does not exist", None))
            try:
                for n in names:
                    self.files[n] = stack.enter_context(tempfile.TemporaryFile(prefix=".cnnc-", dir=directory))
            except OSError as err:
                raise CnncError(Diagnostic("E403", f"cannot write {path}: {err.strerror or err}", None)) from None
            self._npz = path
        else:
            raise CnncError(Diagnostic("E403", f"{path}: outputs are written as .npy or .npz", None))

    def add(self, outputs: dict[str, np.ndarray]) -> None:
        for n in self.names:
            a = np.ascontiguousarray(outputs[n], dtype=self.dtypes.get(n))
            if n not in self.shapes:  # the first batch fixes the dtype and per-sample shape
                self.shapes[n], self.dtypes[n] = (self.count, *a.shape[1:]), a.dtype
                if n in self.files:
                    header = {"descr": np.lib.format.dtype_to_descr(a.dtype), "fortran_order": False,
                              "shape": self.shapes[n]}
                    np.lib.format.write_array_header_1_0(self.files[n], header)
            if n in self.files:
                self.files[n].write(a.tobytes())
            st = self.stats[n]
            if a.size:
                st[0], st[1] = np.minimum(st[0], a.min()), np.maximum(st[1], a.max())  # NaN propagates
                st[2] += float(a.sum(dtype=np.float64))
                st[3] += a.size
            kept = sum(len(h) for h in self.head[n])
            if kept < self.HEAD:
                self.head[n].append(a[:self.HEAD - kept].copy())

    def finish(self) -> None:
        """Put the written file in place (the .npy's temporary file is renamed when its context closes)."""
        if self._npz is None:
            return
        with atomic_write(self._npz) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for n, spool in self.files.items():
                spool.seek(0)
                with z.open(f"{n}.npy", "w", force_zip64=True) as entry:
                    shutil.copyfileobj(spool, entry, 1 << 20)

    def first_rows(self, name: str) -> np.ndarray:
        return np.concatenate(self.head[name]) if self.head[name] else np.zeros((0,), np.float32)


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
                 include=tuple(args.include), memory_limit=0 if args.no_memory_check else None,
                 opt_level=args.opt_level, disabled=tuple(args.disable), **overrides)
    t_loaded = time.perf_counter()
    if args.weights is None:
        print(f"cnnc: no --weights: running on {model.weights_source}", file=sys.stderr)
    batch_size = args.batch_size or (1 if args.input is None else 16)
    source = open_source(args.input, model.plan["inputs"], strict=args.strict, seed=1, batch=batch_size)
    if args.input is None:
        print(f"cnnc: no --input: running on a seeded synthetic batch of {batch_size}", file=sys.stderr)
    progress = Progress(source.count, enabled=source.count > batch_size)
    batch_times = []
    with contextlib.ExitStack() as stack:  # outputs stream to disk: memory stays one batch
        stream = OutputStream(args.output, model.output_names, source.count, stack)
        for batch in source.batches(batch_size):
            t0 = time.perf_counter()
            out = model.run_checked(batch)
            batch_times.append(time.perf_counter() - t0)
            stream.add(out)
            progress.update(len(next(iter(batch.values()))))
        progress.close()
        stream.finish()
    total = time.perf_counter() - t_start
    for name in model.output_names:
        lo, hi, total_sum, n = stream.stats[name]
        print(f"{name}: shape {stream.shapes[name]}, min {lo:.4g}, max {hi:.4g}, mean {total_sum / max(1, n):.4g}")
    first = stream.first_rows(model.output_names[0])
    if len(model.output_names) == 1 and first.ndim == 2 and first.shape[1] >= 2 and args.top > 0:
        labels = _labels_for(args, model, args.spec)
        k = min(args.top, first.shape[1])
        for i, row in enumerate(first):
            name = os.path.basename(source.names[i]) if source.names else f"#{i}"
            top = np.argsort(-row, kind="stable")[:k]
            items = ", ".join(f"{c}{' ' + labels[c] if labels and c < len(labels) else ''} ({row[c]:.3f})" for c in top)
            print(f"{name}: top-{k}: {items}")
        if source.count > len(first):
            print(f"... ({source.count - len(first)} more inputs)")
    per_batch = sorted(batch_times)[len(batch_times) // 2]
    print(f"time: {total:.3f} s total ({t_loaded - t_start:.3f} s to load and compile, "
          f"{per_batch * 1000:.1f} ms per batch of {batch_size} (median of {len(batch_times)}), "
          f"{source.count / max(1e-9, sum(batch_times)):.1f} samples/s)", file=sys.stderr)
    if args.output:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
