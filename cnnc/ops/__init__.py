"""The op registry: for every op, side by side, its attributes, shape rule, parameter layout, cost
(MACs), reference (numpy) implementation and the names of its kernels.

Shapes here are per-sample: the batch dimension N is implicit and symbolic, so `(64, 56, 56)` is a
tensor of shape (N, 64, 56, 56). Adding an op means adding one `OpDef` in one of the family modules
(conv, pool, elementwise, tensor, norm, detect) and, when it runs, its kernels under runtime/.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

REQUIRED = object()


class ShapeError(Exception):
    """A shape rule's complaint: a message, an optional hint and an error code."""

    def __init__(self, message: str, hint: str | None = None, code: str = "E300"):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


class AttrError(Exception):
    def __init__(self, message: str, code: str = "E202", hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint


# ---- attribute kinds: each normalises a user value or raises AttrError ----------------------------

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _describe(v) -> str:
    if isinstance(v, bool):
        return f"boolean {str(v).lower()}"
    if _is_int(v):
        return f"integer {v}"
    if isinstance(v, float):
        return f"number {v}"
    if isinstance(v, str):
        return f'string "{v}"'
    if isinstance(v, (tuple, list)):
        return f"tuple {tuple(v)}"
    if v is None:
        return "none"
    return type(v).__name__


def k_int(v, name):
    if not _is_int(v):
        raise AttrError(f"'{name}' must be an integer, found {_describe(v)}")
    return v


def k_float(v, name):
    if not _is_num(v):
        raise AttrError(f"'{name}' must be a number, found {_describe(v)}")
    return float(v)


def k_opt_float(v, name):
    return None if v is None else k_float(v, name)


def k_bool(v, name):
    if not isinstance(v, bool):
        raise AttrError(f"'{name}' must be true or false, found {_describe(v)}")
    return v


def k_str(v, name):
    if not isinstance(v, str):
        raise AttrError(f"'{name}' must be a string, found {_describe(v)}")
    return v


def k_pair(v, name):
    """An int for both spatial axes, or (h, w)."""
    if _is_int(v):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(x) for x in v):
        return tuple(v)
    raise AttrError(f"'{name}' must be an integer or a pair (h, w), found {_describe(v)}")


def k_pads(v, name):
    """Padding: an int, (h, w), (top, left, bottom, right), or "same" (resolved by the shape rule)."""
    if v == "same" or v == "valid":
        return v
    if _is_int(v):
        return (v, v, v, v)
    if isinstance(v, (tuple, list)) and all(_is_int(x) for x in v):
        if len(v) == 2:
            return (v[0], v[1], v[0], v[1])
        if len(v) == 4:
            return tuple(v)
    raise AttrError(f"'{name}' must be an integer, (h, w), (top, left, bottom, right) or \"same\", "
                    f"found {_describe(v)}")


def k_ints(v, name):
    if isinstance(v, (tuple, list)) and all(_is_int(x) for x in v):
        return tuple(v)
    if _is_int(v):
        return (v,)
    raise AttrError(f"'{name}' must be a tuple of integers, found {_describe(v)}")


def k_anchors(v, name):
    if isinstance(v, (tuple, list)) and v and all(
            isinstance(a, (tuple, list)) and len(a) == 2 and all(_is_num(x) for x in a) for a in v):
        return tuple((float(a[0]), float(a[1])) for a in v)
    raise AttrError(f"'{name}' must be a list of (width, height) pairs, found {_describe(v)}")


def positive(v, name):
    vals = v if isinstance(v, tuple) else (v,)
    if any(x <= 0 for x in vals):
        raise AttrError(f"'{name}' must be positive, found {v}", "E203")


def non_negative(v, name):
    if isinstance(v, str):
        return
    vals = v if isinstance(v, tuple) else (v,)
    if any(x < 0 for x in vals):
        raise AttrError(f"'{name}' must not be negative, found {v}", "E203")


def in_range(lo, hi, hi_inclusive=False):
    def check(v, name):
        if not (lo <= v and (v <= hi if hi_inclusive else v < hi)):
            raise AttrError(f"'{name}' must be in [{lo}, {hi}{']' if hi_inclusive else ')'}, found {v}", "E203")
    return check


def one_of(*choices):
    def check(v, name):
        if v not in choices:
            raise AttrError(f"'{name}' must be one of {', '.join(map(repr, choices))}, found {v!r}", "E203")
    return check


@dataclass
class Attr:
    name: str
    kind: Callable
    default: object = REQUIRED
    checks: tuple = ()
    doc: str = ""


@dataclass
class ParamSpec:
    role: str  # the last component of the weight name: weight, bias, running_mean, ...
    shape: tuple
    learnable: bool = True  # False for buffers such as batchnorm statistics
    init: str = "zeros"  # how `cnnc init` fills it: he, uniform_fan_in, ones, zeros


@dataclass
class OpDef:
    name: str
    doc: str
    inputs: tuple[int, int | None] = (1, 1)  # (min, max); max None = any number
    attrs: list[Attr] = field(default_factory=list)
    # shape(in_shapes, attrs) -> (out_shape, resolved_attrs_update); raises ShapeError
    shape: Callable | None = None
    # params(in_shapes, attrs) -> [ParamSpec]
    params: Callable = lambda shapes, attrs: []
    # macs(in_shapes, out_shape, attrs) -> multiply-accumulates per sample
    macs: Callable = lambda shapes, out, attrs: 0
    # name of the numpy reference function in cnnc.runtime.reference
    reference: str | None = None
    elementwise: bool = False  # one output element from the same element of the input
    category: str = "other"
    # Where it goes next: a training pass looks up the op's gradient rule here (none yet).
    gradient: Callable | None = None
    internal: bool = False  # made by a pass, never written in a spec (not in the language or `cnnc ops`)

    def bind(self, positional: list, keywords: dict, spans=None):
        """Map call arguments to attributes. Returns {name: normalised value}.

        Raises AttrError carrying the offending argument's index or name in `.where`."""
        values: dict[str, object] = {}
        if len(positional) > len(self.attrs):
            err = AttrError(f"{self.name}() takes at most {len(self.attrs)} argument(s) besides its "
                            f"inputs, {len(positional)} given", "E205")
            err.where = len(self.attrs)
            raise err
        for i, v in enumerate(positional):
            values[self.attrs[i].name] = (v, i)
        by_name = {a.name: a for a in self.attrs}
        for k, v in keywords.items():
            if k not in by_name:
                close = _closest(k, list(by_name))
                err = AttrError(f"{self.name}() has no argument '{k}'", "E201",
                                f"did you mean '{close}'?" if close else
                                ("its arguments are: " + ", ".join(by_name) if by_name else
                                 f"{self.name}() takes no arguments"))
                err.where = k
                raise err
            if k in values:
                err = AttrError(f"argument '{k}' of {self.name}() given twice", "E211")
                err.where = k
                raise err
            values[k] = (v, k)
        out = {}
        for a in self.attrs:
            if a.name in values:
                raw, where = values[a.name]
                try:
                    v = a.kind(raw, a.name)
                    for check in a.checks:
                        check(v, a.name)
                except AttrError as err:
                    err.where = where
                    raise
                out[a.name] = v
            elif a.default is REQUIRED:
                err = AttrError(f"{self.name}() needs argument '{a.name}'", "E204",
                                f"for example {self.name}({a.name}=...)" + (f"; {a.doc}" if a.doc else ""))
                err.where = None
                raise err
            else:
                out[a.name] = a.default if a.default is None else a.kind(a.default, a.name)
        return out


def _closest(word: str, options: list[str]) -> str | None:
    import difflib
    m = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return m[0] if m else None


REGISTRY: dict[str, OpDef] = {}
ALIASES: dict[str, str] = {}


def register(op: OpDef, aliases: tuple[str, ...] = ()) -> OpDef:
    assert op.name not in REGISTRY, op.name
    REGISTRY[op.name] = op
    for a in aliases:
        ALIASES[a] = op.name
    return op


def lookup(name: str, internal: bool = True) -> OpDef | None:
    """The op called `name` (or an alias); `internal`=False: only ops a spec may call."""
    op = REGISTRY.get(ALIASES.get(name, name))
    return op if op is not None and (internal or not op.internal) else None


def numel(shape) -> int:
    return int(math.prod(shape))


def fmt_shape(shape) -> str:
    if shape is None:
        return "(?)"
    return "(" + ", ".join(["N"] + [str(d) for d in shape]) + ")"


from . import conv, detect, elementwise, norm, pool, tensor  # noqa: E402,F401  (registration)
