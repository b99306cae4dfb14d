"""Input data for `cnnc run`: .npy / .npz arrays, images and folders of images, checked against the
network's declared inputs, and streamed in batches so memory stays bounded by the batch."""

from __future__ import annotations

import os
import sys

import numpy as np

from .errors import CnncError, Diagnostic

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _err(message: str, hint: str | None = None) -> CnncError:
    return CnncError(Diagnostic("E401", message, None, hint))


def _shape(per_sample) -> str:
    return "(N, " + ", ".join(str(d) for d in per_sample) + ")"


def check_array(name: str, a: np.ndarray, per_sample: tuple, source: str, strict: bool, warn) -> np.ndarray:
    """A batch for input `name`: right rank and shape, a numeric dtype, finite values (or a warning)."""
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiub":
        raise _err(f"{source}: input '{name}' has dtype {getattr(a, 'dtype', type(a).__name__)}, expected float32",
                   "save the array as float32")
    if a.ndim == len(per_sample):  # a single sample: add the batch axis
        a = a[None]
    if a.ndim != len(per_sample) + 1 or tuple(a.shape[1:]) != tuple(per_sample):
        raise _err(f"{source}: input '{name}' has shape {tuple(a.shape)}, expected {_shape(per_sample)}",
                   "the batch N may be any size; the other sizes are fixed by the spec (change them with --set)")
    if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).sum())
        if strict:
            raise _err(f"{source}: input '{name}' holds {bad} NaN/Inf value{'s' if bad > 1 else ''}",
                       "clean the data, or run without --strict to continue with a warning")
        warn(f"{source}: input '{name}' holds {bad} NaN/Inf value{'s' if bad > 1 else ''}; outputs may be NaN")
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
        return _arrays_source(data)
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
        try:
            a = np.load(path, mmap_mode="r", allow_pickle=False)  # mapped: large files stream from disk
        except (ValueError, OSError, EOFError) as err:
            raise _err(f"{path}: not a readable .npy array ({err})", "is the file truncated?") from None
        a = check_array(name, a, declared[name], path, strict, warn)
        return _arrays_source({name: a})
    if lower.endswith(".npz"):
        from .fileio import load_arrays
        arrays = load_arrays(path)
        missing = [n for n in declared if n not in arrays]
        extra = [n for n in arrays if n not in declared]
        if missing or extra:
            raise _err(f"{path}: arrays {sorted(arrays)} do not match the inputs {list(declared)}"
                       + (f" (missing {', '.join(missing)})" if missing else "")
                       + (f" (unexpected {', '.join(extra)})" if extra else ""))
        data = {n: check_array(n, arrays[n], declared[n], path, strict, warn) for n in declared}
        counts = {len(a) for a in data.values()}
        if len(counts) > 1:
            raise _err(f"{path}: inputs have different batch sizes {sorted(counts)}")
        return _arrays_source(data)
    raise _err(f"{path}: unknown input format", "inputs are .npy, .npz, PNG/JPEG images or a folder of images")


def _arrays_source(data: dict[str, np.ndarray]) -> Source:
    count = len(next(iter(data.values())))

    def batches(size):
        for start in range(0, count, size):
            yield {k: np.ascontiguousarray(v[start:start + size], dtype=np.float32) for k, v in data.items()}
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
