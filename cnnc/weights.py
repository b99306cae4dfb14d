"""Weights: matching named arrays to a network's parameters and buffers, and seeded initialisation."""

from __future__ import annotations

import math

import numpy as np

from .errors import CnncError, Diagnostic
from .fileio import load_arrays

# PyTorch state dicts carry this counter for every batchnorm; it plays no part in inference.
IGNORED_SUFFIXES = (".num_batches_tracked",)


def _non_finite(a: np.ndarray, chunk: int = 1 << 20) -> int:
    """How many NaN/Inf values `a` holds, counted a chunk at a time (no array-sized temporary)."""
    flat = a.reshape(-1)
    parts = (flat[i:i + chunk] for i in range(0, flat.size, chunk))
    return sum(int(part.size - np.isfinite(part).sum()) for part in parts)


def match(constants: list[dict], arrays: dict[str, np.ndarray], source: str = "weights",
          allow_missing: bool = False, copy: bool = True) -> tuple[dict[str, np.ndarray], list[str]]:
    """Check `arrays` against the declared constants ([{name, shape}, ...]); return float32 arrays, copies
    unless `copy` is False (arrays just read from a file: a float32 one is then used as it is, so a model's
    weights are never held twice while it loads).

    Every missing, unexpected, wrong-shaped, non-float or non-finite tensor is reported in one error.
    With allow_missing, missing tensors are left out (the caller fills them) and listed in the result."""
    expected = {c["name"]: tuple(c["shape"]) for c in constants}
    problems, missing = [], []
    out = {}
    for name, shape in expected.items():
        if name not in arrays:
            missing.append(name)
            continue
        a = arrays[name]
        if not isinstance(a, np.ndarray) or not np.issubdtype(a.dtype, np.floating):
            problems.append(f"{name}: dtype {getattr(a, 'dtype', type(a).__name__)}, expected a float type")
            continue
        if tuple(a.shape) != shape:
            problems.append(f"{name}: shape {tuple(a.shape)}, expected {shape}")
            continue
        a = a.astype(np.float32, copy=copy)
        bad = _non_finite(a)
        if bad:
            problems.append(f"{name}: {bad} NaN/Inf value{'s' if bad > 1 else ''}")
            continue
        out[name] = np.ascontiguousarray(a)
    unexpected = [k for k in arrays if k not in expected and not k.endswith(IGNORED_SUFFIXES)]
    lines = []
    if missing and not allow_missing:
        lines += [f"missing {n} {expected[n]}" for n in missing]
    lines += [f"unexpected {n} {tuple(np.shape(arrays[n]))}" for n in unexpected]
    lines += problems
    if lines:
        shown = lines[:40] + ([f"... and {len(lines) - 40} more"] if len(lines) > 40 else [])
        counts = []
        if missing and not allow_missing:
            counts.append(f"{len(missing)} missing")
        if unexpected:
            counts.append(f"{len(unexpected)} unexpected")
        if problems:
            counts.append(f"{len(problems)} wrong")
        hint = "`cnnc inspect SPEC --format json` lists the expected names and shapes"
        if missing and not allow_missing:
            hint += "; --allow-missing runs with missing tensors initialised"
        raise CnncError(Diagnostic("E400", f"{source} do not match the network ({', '.join(counts)}):\n    "
                                   + "\n    ".join(shown), None, hint))
    return out, missing


def load(path: str, constants: list[dict], allow_missing: bool = False):
    return match(constants, load_arrays(path), path, allow_missing, copy=False)


def initialise(constants: list[dict], seed: int = 0) -> dict[str, np.ndarray]:
    """A proper initialisation: He (Kaiming normal, fan-in) for conv and dense weights, zero biases,
    identity batchnorm (weight 1, bias 0, mean 0, var 1). Deterministic for a seed.

    Refused before allocating (E405) when the weights cannot fit in the memory available."""
    sizes = [math.prod(tuple(c["shape"])) for c in constants]
    needed = 4 * sum(sizes) + 8 * _DRAW_CHUNK  # float32 results, one float64 chunk drawn at a time
    from .runtime.memory import available_bytes
    available = available_bytes()
    if available is not None and needed > available:
        raise CnncError(Diagnostic("E405", f"the network's {sum(sizes):,} weights need about {needed / 2**30:.2f} GiB "
                                   f"to initialise, {available / 2**30:.2f} GiB available", None,
                                   "check the layer sizes (`cnnc inspect SPEC`)"))
    rng = np.random.default_rng(seed)
    out = {}
    for c in constants:
        shape = tuple(c["shape"])
        init = c.get("init", "zeros")
        if init == "he":
            fan_in = math.prod(shape[1:])
            v = _drawn(rng.normal, (0.0, math.sqrt(2.0 / fan_in)), shape)
        elif init == "he_transpose":  # (Cin, Cout/g, kh, kw): the fan-in of an output is Cin/g*kh*kw ~ shape[0]*kh*kw
            fan_in = shape[0] * math.prod(shape[2:])
            v = _drawn(rng.normal, (0.0, math.sqrt(2.0 / fan_in)), shape)
        elif init == "ones":
            v = np.ones(shape, np.float32)
        else:
            v = np.zeros(shape, np.float32)
        out[c["name"]] = v
    return out


_DRAW_CHUNK = 1 << 20


def _drawn(draw, args: tuple, shape: tuple) -> np.ndarray:
    """A float32 array of `draw(*args, n)` values (float64 draws, rounded), drawn a chunk at a time: the same
    values as one draw of the whole shape (the generator's stream is consumed in the same order), without a
    float64 array as large as the weight."""
    out = np.empty(shape, np.float32)
    flat = out.reshape(-1)
    for i in range(0, flat.size, _DRAW_CHUNK):
        flat[i:i + _DRAW_CHUNK] = draw(*args, min(_DRAW_CHUNK, flat.size - i))
    return out


def seeded_fixture_weights(constants: list[dict]) -> dict[str, np.ndarray]:
    """The model zoo's seeded weights (shared/fixtures/zoo/README.md), by name and definition order."""
    rng = np.random.default_rng(0)
    out = {}
    for c in constants:
        name, shape = c["name"], tuple(c["shape"])
        if name.endswith("running_mean"):
            v = _drawn(rng.normal, (0.0, 0.1), shape)
        elif name.endswith("running_var"):
            v = _drawn(rng.uniform, (0.5, 1.5), shape)
        elif len(shape) == 1 and name.endswith("weight"):
            v = _drawn(rng.uniform, (0.5, 1.5), shape)
        elif len(shape) <= 1:
            v = _drawn(rng.normal, (0.0, 0.1), shape)
        else:
            v = _drawn(rng.normal, (0.0, math.sqrt(2 / math.prod(shape[1:]))), shape)
        out[name] = v
    return out
