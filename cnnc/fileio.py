"""Files cnnc writes and reads: atomic writes, and pickle-free loading of arrays (.npy/.npz/.safetensors)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import tempfile
import tokenize
import zipfile
import zlib

import numpy as np

from .errors import CnncError, Diagnostic

# What numpy and zipfile raise on a damaged file (a header that does not parse, data cut short, a bad
# compressed stream, an unknown compression method): each means "not a readable file", never a traceback.
READ_ERRORS = (ValueError, OSError, EOFError, SyntaxError, TypeError, KeyError, NotImplementedError, OverflowError,
               tokenize.TokenError, zipfile.BadZipFile, zlib.error)


def describe(err: BaseException) -> str:
    """A read error in words (numpy reports a header that does not parse as a tokenizer error)."""
    if isinstance(err, (SyntaxError, tokenize.TokenError)):
        return "its header does not parse"
    return str(err) or type(err).__name__


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb"):
    """Write to a temporary file beside `path`, then rename it into place: a crash or a kill leaves
    either the old file or the complete new one, never a truncated file."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(directory):
        raise CnncError(Diagnostic("E403", f"cannot write {path}: folder {directory} does not exist", None))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".cnnc-", suffix=".tmp", dir=directory)
    except OSError as err:
        raise CnncError(Diagnostic("E403", f"cannot write {path}: {err.strerror}", None)) from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _bad(path: str, what: str, hint: str | None = None) -> CnncError:
    return CnncError(Diagnostic("E404" if "cannot read" in what else "E400", f"{path}: {what}", None, hint))


def load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise _bad(path, "cannot read: no such file") from None
    except READ_ERRORS as err:
        raise CnncError(Diagnostic("E401", f"{path}: not a readable .npy array ({describe(err)})", None,
                                   "is the file truncated or not a numpy array?")) from None


def load_arrays(path: str) -> dict[str, np.ndarray]:
    """Named arrays from .npz or .safetensors, without pickle."""
    if not os.path.isfile(path):
        raise _bad(path, "cannot read: no such file")
    lower = path.lower()
    if lower.endswith(".safetensors"):
        return load_safetensors(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            return {k: data[k] for k in data.files}
    except READ_ERRORS as err:
        raise CnncError(Diagnostic("E400", f"{path}: not a readable .npz archive ({describe(err)})", None,
                                   "weights are .npz or .safetensors files")) from None


_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": None, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def load_safetensors(path: str) -> dict[str, np.ndarray]:
    """A small, strict reader of the safetensors format (8-byte header length, JSON header, raw data). Each
    tensor is read straight into its own array: the file is never held in memory a second time."""
    def bad(what):
        return CnncError(Diagnostic("E400", f"{path}: not a valid .safetensors file ({what})", None,
                                    "is the file truncated?"))
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise bad("shorter than its header")
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise bad(f"header of {n} bytes exceeds the file")
            try:
                header = json.loads(f.read(n))
            except (ValueError, UnicodeDecodeError):
                raise bad("header is not JSON") from None
            if not isinstance(header, dict):
                raise bad("header is not a JSON object")
            body, body_size = 8 + n, size - 8 - n
            out = {}
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                try:
                    dtype = _ST_DTYPES[info["dtype"]]
                    shape = tuple(int(s) for s in info["shape"])
                    start, end = (int(o) for o in info["data_offsets"])
                except (KeyError, TypeError, ValueError, OverflowError):
                    raise bad(f"entry {name!r} is malformed") from None
                if any(d < 0 for d in shape):
                    raise bad(f"{name}: negative dimension in shape {shape}")
                if dtype is None:
                    raise bad(f"{name}: dtype {info['dtype']} is not supported; save float32")
                if not 0 <= start <= end <= body_size:
                    raise bad(f"{name}: data offsets outside the file")
                count = math.prod(shape)  # (Python integers: a huge shape cannot wrap around)
                if (end - start) != count * np.dtype(dtype).itemsize:
                    raise bad(f"{name}: {end - start} bytes do not hold shape {shape}")
                array = np.empty(shape, dtype)
                f.seek(body + start)
                if f.readinto(array.reshape(-1).view(np.uint8)) != end - start:
                    raise bad(f"{name}: the file ends inside its data")
                out[name] = array
    except OSError as err:
        raise _bad(path, f"cannot read: {err.strerror}") from None
    return out


def save_arrays(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write named arrays atomically, as .safetensors or .npz by extension."""
    if path.lower().endswith(".safetensors"):
        header, offset, chunks = {}, 0, []
        for name, a in arrays.items():
            a = np.ascontiguousarray(a, dtype=np.float32)
            b = a.tobytes()
            header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
            offset += len(b)
            chunks.append(b)
        h = json.dumps(header, separators=(",", ":")).encode()
        h += b" " * (-len(h) % 8)
        with atomic_write(path) as f:
            f.write(struct.pack("<Q", len(h)))
            f.write(h)
            for c in chunks:
                f.write(c)
        return
    with atomic_write(path) as f:
        np.savez(f, **arrays)
