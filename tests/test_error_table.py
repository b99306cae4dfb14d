"""The README's error table, audited: every code it lists exists, every code cnnc has is listed, and every
row is reproduced through the real command line.

Each reproduction writes its inputs (a spec, weights, data, a damaged file), runs `cnnc.cli.main` in this
process (as tests/test_cli.py does: no interpreter start-up per case), and checks what a user sees: the
exit status (1 for an error, 0 for a warning), the code, `file:line:col` computed here from the text of
the spec whenever the problem has a place in a source file (the file's name otherwise), no Python
traceback or "internal error", and no output file left behind where the command would have written one.

`REPROS` is keyed by code: a new code in `cnnc.errors` without a reproduction here (or without a row in
the README) fails `test_every_code_has_a_reproduction` / `test_readme_table_lists_exactly_the_codes`.
The issue's list of error classes (syntax, names, ranges, cycles, limits, imports, weights, inputs,
damaged files, plan versions, unwritable outputs) is covered by the several cases per code below.
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cnnc import plan as plan_mod
from cnnc.cli import main
from cnnc.compiler import compile_spec
from cnnc.errors import CODES, WARNING_CODES
from cnnc.fileio import save_arrays
from cnnc.weights import initialise
from conftest import ROOT, SPECS

LENET = str(SPECS / "lenet5.cnn")
README = ROOT / "README.md"


@dataclass
class Repro:
    """One reproduction: the command line, and what must (not) be true after it ran."""

    argv: list
    at: tuple[str, int] | None = None  # (spec path, character offset): the expected file:line:col
    words: tuple[str, ...] = ()  # in the diagnostic's message
    absent: Path | None = None  # the output the command would write: must not exist afterwards
    setup: object = None  # called with pytest's monkeypatch before the run (to hide an installed package)


REPROS: dict[str, list] = {}  # code -> [(label, builder)]


def repro(code: str, label: str):
    def register(builder):
        REPROS.setdefault(code, []).append((label, builder))
        return builder
    return register


def spec(tmp: Path, text: str | bytes, name: str = "net.cnn") -> str:
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return str(p)


def net(body: str, params: str = "", header: str = "", shape: str = "(N, 3, 32, 32)") -> str:
    lines = "\n".join("    " + ln if ln else "" for ln in body.strip("\n").split("\n"))
    return f"{header}network t({params}) {{\n    input x: {shape}\n{lines}\n}}\n"


def find(text: str, needle: str, nth: int = 1, after: str | None = None, shift: int = 0) -> int:
    """Offset of the nth occurrence of `needle` (after the first `after`), plus `shift`."""
    i = text.index(after) if after is not None else 0
    i -= 1
    for _ in range(nth):
        i = text.index(needle, i + 1)
    return i + shift


def inspect(tmp, text, needle, *words, nth=1, after=None, shift=0, name="net.cnn"):
    """`cnnc inspect` of a spec whose error is at the nth occurrence of `needle`."""
    path = spec(tmp, text, name)
    return Repro(["inspect", path], at=(path, find(text, needle, nth, after, shift)), words=words)


# ---- fixtures shared by the file cases (built once) -------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """LeNet-5's weights (.npz, .safetensors), a valid input batch and a compiled plan."""
    d = tmp_path_factory.mktemp("files")
    constants = plan_mod.from_graph(compile_spec(LENET).graph)["constants"]
    w = initialise(constants, seed=0)
    np.savez(d / "w.npz", **w)
    save_arrays(str(d / "w.safetensors"), w)
    x = np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(np.float32)
    np.save(d / "x.npy", x)
    assert main(["compile", LENET, "-o", str(d / "lenet.cnnplan")]) == 0
    return {"dir": d, "w": w, "x": x}


def _weights(tmp, files, edit, name="bad.npz"):
    w = dict(files["w"])
    edit(w)
    np.savez(tmp / name, **w)
    out = tmp / "y.npy"
    return Repro(["run", LENET, "--weights", tmp / name, "-i", files["dir"] / "x.npy", "-o", out, "--target",
                  "reference"], absent=out)


def _inputs(tmp, files, data: np.ndarray | bytes, name="in.npy", *extra, spec_path=LENET):
    p = tmp / name
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        np.save(p, data)
    out = tmp / "y.npy"
    return Repro(["run", spec_path, "-i", p, "-o", out, "--target", "reference", *extra], absent=out)


def _npy_bytes(a: np.ndarray) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _plan(tmp, files, damage, name="bad.cnnplan"):
    src = files["dir"] / "lenet.cnnplan"
    p = tmp / name
    p.write_bytes(damage(src.read_bytes(), src))
    out = tmp / "y.npy"
    return Repro(["run", p, "-o", out, "--target", "reference"], words=(str(p),), absent=out)


def _rezip(data: bytes, src: Path, edit) -> bytes:
    import io
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    plan = json.loads(members["plan.json"])
    edit(plan)
    members["plan.json"] = json.dumps(plan).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    return buf.getvalue()


# ---- E1xx: text -------------------------------------------------------------------------------------------


@repro("E100", "syntax error: '=' for '=='")
def _(tmp, files):
    return inspect(tmp, net("if a = 1 {\n    relu()\n}", params="a=1"), "= 1", "unexpected '='")


@repro("E100", "unclosed brace")
def _(tmp, files):
    text = "network t() {\n    input x: (N, 3, 32, 32)\n    conv(8, 3)\n"
    return inspect(tmp, text, "conv(8, 3)", "unexpected end of file", shift=len("conv(8, 3)"))


@repro("E100", "bad command line")
def _(tmp, files):
    return Repro(["inspect"], words=("required",))


@repro("E101", "invalid UTF-8")
def _(tmp, files):
    data = b"network t() {\n    input x: (N, 3, 32, 32)\n    relu()  # caf\xe9\n}\n"
    path = spec(tmp, data)
    return Repro(["inspect", path], at=(path, data.index(b"\xe9")), words=("invalid UTF-8", "0xe9"))  # ASCII before it


@repro("E101", "NUL byte")
def _(tmp, files):
    return inspect(tmp, net("conv(8,\x00 3)"), "\x00", "NUL")


# ---- E2xx: names and arguments --------------------------------------------------------------------------------


@repro("E200", "unknown op")
def _(tmp, files):
    return inspect(tmp, net("cnv(8, 3)"), "cnv", "unknown op or block 'cnv'")


@repro("E201", "unknown keyword argument")
def _(tmp, files):
    return inspect(tmp, net("conv(8, 3, strid=2)"), "strid", "no argument 'strid'")


@repro("E201", "unknown --set parameter")
def _(tmp, files):
    return Repro(["inspect", LENET, "--set", "clases=3"], words=("no parameter 'clases'",))


@repro("E202", "wrong argument type")
def _(tmp, files):
    return inspect(tmp, net('conv(8, kernel="3")'), "kernel=", "'kernel' must be an integer or a pair")


@repro("E203", "zero kernel")
def _(tmp, files):
    return inspect(tmp, net("conv(8, 0)"), "0)", "'kernel' must be positive")


@repro("E203", "negative kernel")
def _(tmp, files):
    return inspect(tmp, net("conv(8, -1)"), "-1", "'kernel' must be positive")


@repro("E203", "stride 0")
def _(tmp, files):
    return inspect(tmp, net("conv(8, 3, stride=0)"), "stride=", "'stride' must be positive")


@repro("E203", "groups not dividing the channels")
def _(tmp, files):
    return inspect(tmp, net("conv(8, 3, groups=2)"), "conv(", "groups=2 does not divide the 3 input channels")


@repro("E204", "missing argument")
def _(tmp, files):
    return inspect(tmp, net("conv()"), "conv()", "needs argument 'filters'")


@repro("E205", "too many arguments")
def _(tmp, files):
    return inspect(tmp, net("conv(8, 3, 1, 0, 1, 1, true, 5)"), "5)", "at most 7 argument(s)")


@repro("E210", "undefined name")
def _(tmp, files):
    return inspect(tmp, net("features = conv(8, 3)\nrelu(featres)"), "featres", "undefined name 'featres'")


@repro("E210", "name used before its definition")
def _(tmp, files):
    return inspect(tmp, net("a = relu(b)\nb = relu(x)"), "b)", "'b' is used before it is defined (line 4)")


@repro("E211", "duplicate instance name")
def _(tmp, files):
    return inspect(tmp, net("conv1 = conv(8, 3)\nrelu()\nconv1 = conv(8, 3)"), "conv(8, 3)",
                   "duplicate instance name 'conv1'", nth=2)


@repro("E212", "shadowed network parameter")
def _(tmp, files):
    return inspect(tmp, net("classes = conv(8, 3)", params="classes=10"), "classes =",
                   "'classes' shadows the network parameter")


@repro("E212", "block named like an op")
def _(tmp, files):
    return inspect(tmp, "block relu(x) {\n    conv(8, 3)\n}\n" + net("relu()"), "block relu",
                   "block 'relu' shadows the built-in op 'relu'")


@repro("E213", "a value where a layer is expected")
def _(tmp, files):
    return inspect(tmp, net("k = x -> 3"), "3", "layer or block", after="->")


@repro("E220", "cycle")
def _(tmp, files):
    return inspect(tmp, net("a = add(x, b)\nb = relu(a)"), "b)", "cycle: a -> b -> a")


@repro("E220", "a layer reading itself")
def _(tmp, files):
    return inspect(tmp, net("a = add(x, a)"), "a)", "'a' reads itself")


@repro("E221", "a block that instantiates itself")
def _(tmp, files):
    return inspect(tmp, "block forever(x) {\n    forever(x)\n}\n" + net("forever()"), "forever(x)",
                   "nests deeper than 64 levels", after="{")


@repro("E221", "repeat 1000000000")
def _(tmp, files):
    return inspect(tmp, net("repeat 1000000000 {\n    relu()\n}"), "1000000000", "limit of 100000")


@repro("E221", "10,000-deep nesting")
def _(tmp, files):
    text = net("k = " + "(" * 10_000 + "1" + ")" * 10_000 + "\nconv(8, k)")
    # the network's brace is the first level: the 100th parenthesis is one too many
    return inspect(tmp, text, "((", "nesting deeper than 100", shift=99)


@repro("E230", "import not found")
def _(tmp, files):
    return inspect(tmp, net("relu()", header='import "nothere.cnn"\n'), "import", 'cannot find import "nothere.cnn"')


@repro("E231", "import cycle")
def _(tmp, files):
    b_text = 'import "a.cnn"\nblock bb(x) {\n    relu()\n}\n'
    b = spec(tmp, b_text, "b.cnn")
    a = spec(tmp, net("bb()", header='import "b.cnn"\n'), "a.cnn")
    # the import that closes the cycle, in b.cnn, by its resolved path
    return Repro(["inspect", a], at=(str(Path(b).resolve()), find(b_text, 'import "a.cnn"')), words=("import cycle",))


@repro("E232", "import outside the allowed folders")
def _(tmp, files):
    spec(tmp, "block b(x) {\n    relu()\n}\n", "outside/x.cnn")
    return inspect(tmp, net("b()", header='import "../outside/x.cnn"\n'), "import", "outside the allowed folders",
                   name="proj/main.cnn")


@repro("E240", "failed assert")
def _(tmp, files):
    text = "network t(size=100) {\n    assert size % 32 == 0, \"a multiple of 32\"\n    input x: (N, 3, size, size)\n" \
           "    relu()\n}\n"
    return inspect(tmp, text, "assert", "a multiple of 32")


@repro("E241", "network without output")
def _(tmp, files):
    text = "network t() {\n    k = 3\n}\n"
    return inspect(tmp, text, "network", "produces no output")


@repro("E241", "input in a block")
def _(tmp, files):
    return inspect(tmp, "block b(x) {\n    input y: (N, 3, 8, 8)\n    relu()\n}\n" + net("b()"), "input y",
                   "`input` may only appear in a network")


# ---- E3xx: shapes -----------------------------------------------------------------------------------------------


@repro("E300", "shape mismatch at add")
def _(tmp, files):
    return inspect(tmp, net("a = conv(16, 3, padding=1)\nb = conv(a, 8, 1)\ns = add(a, b)"), "add(",
                   "incompatible shapes")


@repro("E301", "kernel larger than the input")
def _(tmp, files):
    return inspect(tmp, net("conv(16, 11, padding=1)", shape="(N, 3, 8, 8)"), "conv(", "larger than the padded input")


@repro("E302", "dense on a feature map")
def _(tmp, files):
    return inspect(tmp, net("conv(8, 3)\nfc = dense(10)"), "dense(", "dense needs a (N, features) input")


# ---- E400: weights (and model files) ------------------------------------------------------------------------------


@repro("E400", "weights: missing tensor")
def _(tmp, files):
    r = _weights(tmp, files, lambda w: w.pop("conv1.bias"))
    r.words = ("missing conv1.bias (6,)",)
    return r


@repro("E400", "weights: unexpected tensor")
def _(tmp, files):
    r = _weights(tmp, files, lambda w: w.update(extra=np.zeros(3, np.float32)))
    r.words = ("unexpected extra (3,)",)
    return r


@repro("E400", "weights: wrong shape")
def _(tmp, files):
    r = _weights(tmp, files, lambda w: w.update({"fc3.weight": w["fc3.weight"][:5]}))
    r.words = ("fc3.weight: shape (5, 84), expected (10, 84)",)
    return r


@repro("E400", "weights: wrong dtype")
def _(tmp, files):
    r = _weights(tmp, files, lambda w: w.update({"conv1.weight": w["conv1.weight"].astype(np.int32)}))
    r.words = ("conv1.weight: dtype int32, expected a float type",)
    return r


@repro("E400", "weights: NaN")
def _(tmp, files):
    r = _weights(tmp, files, lambda w: w.update({"fc3.bias": np.full(10, np.nan, np.float32)}))
    r.words = ("fc3.bias: 10 NaN/Inf values",)
    return r


@repro("E400", "truncated .npz weights")
def _(tmp, files):
    data = (files["dir"] / "w.npz").read_bytes()
    (tmp / "t.npz").write_bytes(data[: len(data) // 3])
    out = tmp / "l.cnnplan"
    return Repro(["compile", LENET, "--weights", tmp / "t.npz", "-o", out], words=("not a readable .npz",), absent=out)


@repro("E400", "truncated .safetensors weights")
def _(tmp, files):
    data = (files["dir"] / "w.safetensors").read_bytes()
    (tmp / "t.safetensors").write_bytes(data[:-100])
    out = tmp / "y.npy"
    return Repro(["run", LENET, "--weights", tmp / "t.safetensors", "-o", out, "--target", "reference"],
                 words=("not a valid .safetensors",), absent=out)


@repro("E400", "corrupted .safetensors header")
def _(tmp, files):
    data = bytearray((files["dir"] / "w.safetensors").read_bytes())
    data[8:20] = b"{not json!!!"
    (tmp / "c.safetensors").write_bytes(bytes(data))
    return Repro(["export", LENET, "--weights", tmp / "c.safetensors", "-o", tmp / "m.onnx"],
                 words=("header is not JSON",), absent=tmp / "m.onnx")


@repro("E400", "truncated .onnx model")
def _(tmp, files):
    pytest.importorskip("onnx")
    model = tmp / "m.onnx"
    assert main(["export", LENET, "-o", str(model)]) == 0
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])
    out = tmp / "m.cnn"
    return Repro(["import", model, "-o", out, "--weights-out", tmp / "m.npz"], words=("not a readable ONNX model",),
                 absent=out)


@repro("E400", "corrupted .onnx model")
def _(tmp, files):
    pytest.importorskip("onnx")
    (tmp / "junk.onnx").write_bytes(b"\x08\x07" + bytes(range(256)) * 8)
    out = tmp / "m.cnn"
    return Repro(["import", tmp / "junk.onnx", "-o", out], words=("junk.onnx",), absent=out)


# ---- E401: input data -----------------------------------------------------------------------------------------------


@repro("E401", "input of the wrong rank")
def _(tmp, files):
    r = _inputs(tmp, files, np.zeros((32, 32), np.float32))
    r.words = ("has shape (32, 32), expected (N, 1, 32, 32)",)
    return r


@repro("E401", "input of the wrong shape")
def _(tmp, files):
    r = _inputs(tmp, files, np.zeros((2, 1, 28, 28), np.float32))
    r.words = ("has shape (2, 1, 28, 28), expected (N, 1, 32, 32)",)
    return r


@repro("E401", "input of the wrong dtype")
def _(tmp, files):
    r = _inputs(tmp, files, np.full((2, 1, 32, 32), "a"))
    r.words = ("dtype <U1, expected float32",)
    return r


@repro("E401", "NaN/Inf input with --strict")
def _(tmp, files):
    x = files["x"].copy()
    x[2, 0, 5, 5], x[3, 0, 0, 0] = np.nan, np.inf
    r = _inputs(tmp, files, x, "in.npy", "--strict", "-b", "1")
    r.words = ("holds 1 NaN/Inf value",)
    return r


@repro("E401", "unreadable image")
def _(tmp, files):
    spec_path = spec(tmp, "network im() {\n    input x: (N, 3, 8, 8)\n    global_avgpool()\n    flatten()\n}\n")
    r = _inputs(tmp, files, b"\xff\xd8\xff not really a JPEG", "photo.jpg", spec_path=spec_path)
    r.words = ("unreadable image",)
    return r


@repro("E401", "truncated .npy")
def _(tmp, files):
    data = _npy_bytes(files["x"])
    r = _inputs(tmp, files, data[: len(data) // 2])
    r.words = ("truncated",)
    return r


@repro("E401", "corrupted .npy header")
def _(tmp, files):
    data = bytearray(_npy_bytes(files["x"]))
    data[10:40] = b"{'descr': '<f4', 'shape': ((( "
    r = _inputs(tmp, files, bytes(data))
    r.words = ("not a readable .npy array",)
    return r


@repro("E401", "truncated .npz input")
def _(tmp, files):
    np.savez(tmp / "in.npz", x=files["x"])
    data = (tmp / "in.npz").read_bytes()
    (tmp / "t.npz").write_bytes(data[: len(data) // 2])
    out = tmp / "y.npy"
    return Repro(["run", LENET, "-i", tmp / "t.npz", "-o", out, "--target", "reference"], words=("t.npz",),
                 absent=out)


@repro("E401", "no samples")
def _(tmp, files):
    r = _inputs(tmp, files, files["x"][:0])
    r.words = ("holds no samples",)
    return r


# ---- E402: plans --------------------------------------------------------------------------------------------------------


@repro("E402", "truncated .cnnplan")
def _(tmp, files):
    return _plan(tmp, files, lambda data, src: data[: len(data) // 2])


@repro("E402", "corrupted .cnnplan (checksum)")
def _(tmp, files):
    r = _plan(tmp, files, lambda data, src: _rezip(data, src, lambda p: p["steps"][0]["attrs"].update(filters=7)))
    r.words += ("checksum",)
    return r


@repro("E402", "plan from another format version")
def _(tmp, files):
    r = _plan(tmp, files, lambda data, src: _rezip(data, src, lambda p: p.update(version=99)))
    r.words += ("version 99",)
    return r


@repro("E402", "not a plan at all")
def _(tmp, files):
    return _plan(tmp, files, lambda data, src: b"hello, world\n" * 10)


# ---- E403 / E404 / E405: files and resources -----------------------------------------------------------------------------


@repro("E403", "output folder does not exist")
def _(tmp, files):
    out = tmp / "no" / "such" / "dir" / "l.cnnplan"
    return Repro(["compile", LENET, "-o", out], words=("does not exist",), absent=out)


@repro("E403", "run output folder does not exist")
def _(tmp, files):
    out = tmp / "missing" / "y.npz"
    return Repro(["run", LENET, "-i", files["dir"] / "x.npy", "-o", out, "--target", "reference"], words=("y.npz",),
                 absent=out)


@repro("E403", "output of the wrong kind")
def _(tmp, files):
    out = tmp / "w.txt"
    return Repro(["init", LENET, "-o", out], words=(".npz or .safetensors",), absent=out)


@repro("E404", "spec not found")
def _(tmp, files):
    out = tmp / "x.cnnplan"
    return Repro(["compile", tmp / "nothere.cnn", "-o", out], words=("nothere.cnn",), absent=out)


@repro("E404", "input not found")
def _(tmp, files):
    out = tmp / "y.npy"
    return Repro(["run", LENET, "-i", tmp / "nothere.npy", "-o", out, "--target", "reference"],
                 words=("nothere.npy",), absent=out)


@repro("E405", "a batch larger than memory")
def _(tmp, files):
    out = tmp / "y.npy"
    return Repro(["run", LENET, "--batch-size", "1000000000", "-o", out, "--target", "reference"],
                 words=("GiB",), absent=out)


@repro("E405", "weights larger than memory")
def _(tmp, files):
    path = spec(tmp, net("conv(1000000000000, 3)"))
    out = tmp / "w.npz"
    return Repro(["init", path, "-o", out], words=("weights need about",), absent=out)


@repro("E406", "--target cuda without its package (or without a GPU)")
def _(tmp, files):
    import importlib.util
    real = importlib.util.find_spec

    def hide_numba_cuda(mp):  # the same refusal as on a machine without a GPU: at once, before compiling
        mp.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numba_cuda" else real(name, *a))
    out = tmp / "y.npy"
    return Repro(["run", LENET, "--target", "cuda", "-o", out], words=("--target cuda", "numba-cuda"), absent=out,
                 setup=hide_numba_cuda)


# ---- E900 and warnings ----------------------------------------------------------------------------------------------------


@repro("E900", "a missing optional dependency (onnx for export)")
def _(tmp, files):
    out = tmp / "m.onnx"
    return Repro(["export", LENET, "-o", out], words=("needs the onnx package",), absent=out,
                 setup=lambda mp: mp.setitem(sys.modules, "onnx", None))


@repro("W100", "rows never read")
def _(tmp, files):
    return inspect(tmp, net("maxpool(3)"), "maxpool", "never read")


@repro("W101", "a layer with weights feeding no output")
def _(tmp, files):
    return inspect(tmp, net("side = conv(x, 4, 3)\nmain = conv(x, 8, 3)\noutput main"), "conv(x, 4",
                   "feeds no output")


# ---- the tests ----------------------------------------------------------------------------------------------------------


def _location(path: str, i: int) -> str:
    text = Path(path).read_bytes().decode("utf-8", "replace")
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return f"{path}:{line}:{col}"


def _readme_codes() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Errors"):text.index("### Limits and safety")]
    rows = re.findall(r"^\| *([EW]\d{3}) *\|", section, flags=re.MULTILINE)
    assert rows, "no error table found in the README's Errors section"
    return rows


def test_readme_table_lists_exactly_the_codes():
    rows = _readme_codes()
    assert len(rows) == len(set(rows)), f"codes listed twice: {sorted(c for c in rows if rows.count(c) > 1)}"
    known = set(CODES) | set(WARNING_CODES)
    assert set(rows) - known == set(), "documented but unknown to cnnc.errors"
    assert known - set(rows) == set(), "in cnnc.errors but missing from the README's table"


def test_every_code_has_a_reproduction():
    assert set(REPROS) == set(CODES) | set(WARNING_CODES)


CASES = [(code, label, builder) for code, items in sorted(REPROS.items()) for label, builder in items]


@pytest.mark.parametrize("code, label, builder", CASES, ids=[f"{c}-{label}" for c, label, _ in CASES])
def test_reproduce(code, label, builder, tmp_path, files, capsys, monkeypatch):
    r = builder(tmp_path, files)
    if r.setup is not None:
        r.setup(monkeypatch)
    status = main([str(a) for a in r.argv])
    out, err = capsys.readouterr()
    shown = out + err
    assert "Traceback" not in shown and "internal error" not in shown, shown
    warning = code.startswith("W")
    assert status == (0 if warning else 1), shown
    header = re.compile(rf"^(?:(?P<where>.+?:\d+:\d+)|cnnc): (?P<sev>error|warning)\[{code}\]: (?P<msg>.*)$", re.MULTILINE)
    found = [m for m in header.finditer(err)]
    assert found, f"no {code} diagnostic in:\n{err}"
    d = found[0]
    assert d["sev"] == ("warning" if warning else "error"), err
    for w in r.words:
        assert any(w in m["msg"] for m in found) or w in err, (w, err)
    if r.at is not None:
        assert d["where"] == _location(*r.at), err
    else:  # no place in a source: the message names what it is about (a file, a flag), never a bare code
        assert d["where"] is None and d["msg"], err
    if r.absent is not None:
        assert not Path(r.absent).exists(), f"{r.absent} was left behind"
        leftovers = [p.name for p in Path(r.absent).parent.glob(".cnnc-*")] if Path(r.absent).parent.exists() else []
        assert not leftovers, f"temporary files left: {leftovers}"
