"""Input data for `cnnc run`: .npy / .npz arrays, images and folders of images, checked against the
network's declared inputs, and streamed in batches so memory stays bounded by the batch."""

from __future__ import annotations

import os
import sys

import numpy as np

from .errors import CnncError, Diagnostic
from .fileio import READ_ERRORS, describe

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _err(message: str, hint: str | None = None) -> CnncError:
    return CnncError(Diagnostic("E401", message, None, hint))


def _shape(per_sample) -> str:
    return "(N, " + ", ".join(str(d) for d in per_sample) + ")"


def check_layout(name: str, dtype, shape: tuple, per_sample: tuple, source: str) -> tuple:
    """The batch shape of input `name` (a single sample gains the batch axis): a numeric dtype, the
    right rank and per-sample shape."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "fiub":
        raise _err(f"{source}: input '{name}' has dtype {dtype}, expected float32", "save the array as float32")
    shape = tuple(shape)
    if len(shape) == len(per_sample):  # a single sample: add the batch axis
        shape = (1, *shape)
    if len(shape) != len(per_sample) + 1 or shape[1:] != tuple(per_sample):
        raise _err(f"{source}: input '{name}' has shape {shape}, expected {_shape(per_sample)}",
                   "the batch N may be any size; the other sizes are fixed by the spec (change them with --set)")
    return shape


def count_nonfinite(name: str, a: np.ndarray, source: str, strict: bool) -> int:
    """NaN/Inf values in (a batch of) input `name`: refused with `strict`, else counted."""
    if a.dtype.kind != "f" or not a.size or np.isfinite(a).all():
        return 0
    bad = int(a.size - np.count_nonzero(np.isfinite(a)))
    if strict:
        raise _err(f"{source}: input '{name}' holds {bad} NaN/Inf value{'s' if bad > 1 else ''}",
                   "clean the data, or run without --strict to continue with a warning")
    return bad


def _nonfinite_warning(source: str, name: str, bad: int) -> str:
    return f"{source}: input '{name}' holds {bad} NaN/Inf value{'s' if bad > 1 else ''}; outputs may be NaN"


def check_array(name: str, a: np.ndarray, per_sample: tuple, source: str, strict: bool, warn) -> np.ndarray:
    """A batch for input `name`: right rank and shape, a numeric dtype, finite values (or a warning)."""
    if not isinstance(a, np.ndarray):
        raise _err(f"{source}: input '{name}' has dtype {type(a).__name__}, expected float32",
                   "save the array as float32")
    a = a.reshape(check_layout(name, a.dtype, a.shape, per_sample, source))
    bad = count_nonfinite(name, a, source, strict)
    if bad:
        warn(_nonfinite_warning(source, name, bad))
    return a


def load_image(path: str, info: dict, per_sample: tuple) -> np.ndarray:
    """Decode, resize to the declared (H, W), scale to [0, 1] (or by `scale`), normalise by mean/std."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - pillow is a dependency
        raise _err("reading images needs Pillow (pip install pillow)") from None
    if len(per_sample) != 3 or per_sample[0] not in (1, 3):
        raise _err(f"{path}: an image cannot feed an input of shape {_shape(per_sample)}",
                   "images feed (N, 1 or 3, H, W) inputs")
    c, h, w = per_sample
    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if c == 3 else "L").resize((w, h), Image.BILINEAR)
            a = np.asarray(img, dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise _err(f"{path}: unreadable image ({err})", "is the file a complete PNG or JPEG?") from None
    a = a.reshape(h, w, c).transpose(2, 0, 1)
    a = a * float(info.get("scale", 1.0 / 255.0))
    if "mean" in info:
        a = a - np.asarray(info["mean"], np.float32)[:, None, None]
    if "std" in info:
        a = a / np.asarray(info["std"], np.float32)[:, None, None]
    return np.ascontiguousarray(a, dtype=np.float32)


class Source:
    """Batches of named input arrays, with a count of samples known up front."""

    def __init__(self, count: int, batches, names: list[str] | None = None):
        self.count = count
        self._batches = batches
        self.names = names  # image file names, for reporting

    def batches(self, batch_size: int):
        return self._batches(batch_size)


def open_source(path: str | None, inputs: list[dict], strict: bool = False, seed: int = 1, batch: int = 1,
                warn=lambda m: print(f"cnnc: warning: {m}", file=sys.stderr)) -> Source:
    """Where the run's data comes from. `inputs`: the plan's input declarations."""
    declared = {i["name"]: tuple(i["shape"]) for i in inputs}
    if path is None:
        from .runtime.memory import MemoryLimitError, check_fits
        try:  # the synthetic batch itself must fit (float64 while drawn, then float32)
            check_fits(12 * batch * sum(int(np.prod(s)) for s in declared.values()), batch, None)
        except MemoryLimitError as err:
            raise CnncError(Diagnostic("E405", f"not enough memory for a synthetic input: {err}", None,
                                       "use a smaller --batch-size")) from None
        rng = np.random.default_rng(seed)
        data = {name: rng.standard_normal((batch, *shape)).astype(np.float32) for name, shape in declared.items()}
        return _arrays_source(data, "synthetic input", strict, warn)
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise _err(f"{path}: no images in this folder", "images end in .png, .jpg or .jpeg")
        return _image_source([os.path.join(path, f) for f in files], inputs)
    if not os.path.exists(path):
        raise CnncError(Diagnostic("E404", f"{path}: cannot read: no such file", None))
    lower = path.lower()
    if lower.endswith(IMAGE_EXTENSIONS):
        return _image_source([path], inputs)
    if lower.endswith(".npy"):
        if len(declared) != 1:
            raise _err(f"{path}: the network has {len(declared)} inputs ({', '.join(declared)}); a .npy holds one",
                       "pass an .npz with one array per input name")
        name = next(iter(declared))
        return _arrays_source({name: _NpyRows.open(path, name, declared[name])}, path, strict, warn)
    if lower.endswith(".npz"):
        from .fileio import load_arrays
        try:
            arrays = load_arrays(path)
        except CnncError as err:  # the shared reader speaks of weights (E400): this is input data
            if err.code != "E400":
                raise
            raise _err(err.diagnostics[0].message, "is the file truncated, or not an .npz?") from None
        missing = [n for n in declared if n not in arrays]
        extra = [n for n in arrays if n not in declared]
        if missing or extra:
            raise _err(f"{path}: arrays {sorted(arrays)} do not match the inputs {list(declared)}"
                       + (f" (missing {', '.join(missing)})" if missing else "")
                       + (f" (unexpected {', '.join(extra)})" if extra else ""))
        data = {n: arrays[n].reshape(check_layout(n, arrays[n].dtype, arrays[n].shape, declared[n], path))
                for n in declared}
        counts = {len(a) for a in data.values()}
        if len(counts) > 1:
            raise _err(f"{path}: inputs have different batch sizes {sorted(counts)}")
        return _arrays_source(data, path, strict, warn)
    raise _err(f"{path}: unknown input format", "inputs are .npy, .npz, PNG/JPEG images or a folder of images")


class _NpyRows:
    """A .npy array read a batch of rows at a time with plain file reads. Not memory-mapped: the pages of
    a mapping stay resident as a stream reads on, so the process's memory would grow with the file."""

    def __init__(self, path: str, shape: tuple, dtype: np.dtype, offset: int):
        self.path, self.shape, self.dtype, self.offset = path, shape, dtype, offset
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    @classmethod
    def open(cls, path: str, name: str, per_sample: tuple):
        fmt = np.lib.format
        try:
            with open(path, "rb") as f:
                version = fmt.read_magic(f)
                if version not in ((1, 0), (2, 0), (3, 0)):
                    raise ValueError(f"format version {version[0]}.{version[1]} is not supported")
                read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, fortran_order, dtype = read_header(f)
                offset = f.tell()
            size = os.path.getsize(path)
        except READ_ERRORS as err:
            raise _err(f"{path}: not a readable .npy array ({describe(err)})", "is the file truncated?") from None
        shape = check_layout(name, dtype, shape, per_sample, path)
        needed = offset + int(np.prod(shape, dtype=object)) * dtype.itemsize
        if size < needed:
            raise _err(f"{path}: not a readable .npy array (truncated: {size:,} bytes, its header "
                       f"promises {needed:,})", "is the file truncated?")
        if fortran_order:  # rows are not contiguous: map it instead (memory then grows as it is read)
            return np.load(path, mmap_mode="r", allow_pickle=False).reshape(shape)
        return cls(path, shape, dtype, offset)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        n = max(0, stop - start)
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * self.row_bytes)
            data = f.read(n * self.row_bytes)
        if len(data) != n * self.row_bytes:
            raise _err(f"{self.path}: the file ended while reading samples {start}-{stop - 1}",
                       "was it truncated while cnnc ran?")
        return np.frombuffer(data, self.dtype).reshape((n, *self.shape[1:]))


def _arrays_source(data: dict, source: str, strict: bool, warn) -> Source:
    """Batches of the arrays in `data` (numpy arrays or `_NpyRows`), each checked for NaN/Inf as it is
    read; without `strict` one warning at the end counts them all."""
    count = len(next(iter(data.values())))
    if count == 0:
        raise _err(f"{source}: holds no samples (the batch axis has size 0)")

    def batches(size):
        bad = dict.fromkeys(data, 0)
        for start in range(0, count, size):
            batch = {k: np.ascontiguousarray(v[start:start + size], dtype=np.float32) for k, v in data.items()}
            last = start + len(next(iter(batch.values()))) - 1
            where = f"{source} (sample {start})" if last == start else f"{source} (samples {start}-{last})"
            for k, a in batch.items():
                bad[k] += count_nonfinite(k, a, where, strict)
            yield batch
        for k, n in bad.items():
            if n:
                warn(_nonfinite_warning(source, k, n))
    return Source(count, batches)


def _image_source(files: list[str], inputs: list[dict]) -> Source:
    if len(inputs) != 1:
        raise _err("images can feed a network with one input only")
    inp = inputs[0]
    shape = tuple(inp["shape"])
    info = inp.get("info", {})

    def batches(size):
        for start in range(0, len(files), size):
            chunk = files[start:start + size]
            yield {inp["name"]: np.stack([load_image(f, info, shape) for f in chunk])}
    return Source(len(files), batches, names=files)
