"""Property tests of the front end with hypothesis.

1. Round trip: random but valid networks (conv, activations, maxpool, batchnorm, add, concat, flatten,
   dense; random arguments, names, comments, blank lines and `;` separators) compile, and their learnable
   parameter count and output shapes equal an independent count computed here from the generated structure.
2. Robustness: mutants of the library specs (a character, token or line deleted; a token or line
   duplicated; two tokens or two lines swapped; the file truncated; random bytes inserted or written over;
   invalid UTF-8 inserted; a number replaced by an unusual value) either compile or raise CnncError whose
   diagnostics all carry a known code and a place inside the file, never any other exception, each within
   a time limit: compiled in full (hypothesis), and many more parsed (a seeded sweep). Every truncation of
   a small spec. Extreme inputs (a 10 MB line of several kinds, 10,000-deep nesting of several kinds, a
   block that instantiates itself, `repeat 1000000000`, random bytes, invalid UTF-8) in a fresh process
   whose peak memory is measured: each ends cleanly, in bounded time and memory.
3. The grammar file itself, through `hypothesis.extra.lark.from_lark` (see the notes there).

Budget: about 2,500 cases in CI (fixed seed). CNNC_FUZZ_SCALE=K runs K times as many; CNNC_FUZZ_SEED=random
draws fresh cases (the seed is printed with any failure; CNNC_FUZZ_SEED=that number replays them). No
hypothesis deadlines: the time limits (a hang guard, not a benchmark) are enforced here.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import signal
import string
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import lark
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark.lexer import PatternStr

from cnnc.compiler import compile_spec
from cnnc.errors import CODES, WARNING_CODES, CnncError, render
from cnnc.expand import BUILTINS
from cnnc.ops import ALIASES, REGISTRY
from cnnc.parser import parse, parse_file

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
GRAMMAR = ROOT / "grammar" / "cnn.lark"

KEYWORDS = {"import", "block", "seq", "network", "input", "output", "assert", "return", "if", "elif", "else",
            "for", "in", "repeat", "as", "group", "true", "false", "none", "and", "or", "not"}
RESERVED = KEYWORDS | set(REGISTRY) | set(ALIASES) | set(BUILTINS) | {"N"}

# CI runs a fixed-seed budget; CNNC_FUZZ_SCALE=50 (say) runs fifty times as many cases, and
# CNNC_FUZZ_SEED=random draws fresh cases instead of the fixed ones (CNNC_FUZZ_SEED=N replays seed N):
# the documented longer run.
SCALE = max(1, int(os.environ.get("CNNC_FUZZ_SCALE", "1")))
_SEED_ENV = os.environ.get("CNNC_FUZZ_SEED", "")
FIXED = _SEED_ENV == ""
SEED = random.SystemRandom().randrange(2**32) if _SEED_ENV == "random" else int(_SEED_ENV or 0)
COMMON = dict(derandomize=FIXED, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.data_too_large])


def seeded(test):
    """The hypothesis tests draw from SEED unless the run is the fixed CI one."""
    return test if FIXED else seed(SEED)(test)


@pytest.fixture(autouse=True)
def _report_seed():
    print(f"fuzz seed {SEED} (CNNC_FUZZ_SEED={SEED} replays it), scale {SCALE}")  # shown with a failure


class _Timeout(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    """Interrupt the block after `seconds` (SIGALRM; the tests run in the main thread)."""
    def handler(signum, frame):
        raise _Timeout(f"took more than {seconds} s")
    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("props")


# ---- 1. valid networks: compile, and count their parameters independently ----------------------------------

# (built from st.text rather than st.from_regex: the shrinker of this hypothesis version crashes on
# from_regex strings with "ValueError: 48 is not in list")
identifiers = st.builds(lambda first, rest: first + rest, st.sampled_from(string.ascii_lowercase),
                        st.text(string.ascii_lowercase + string.digits + "_", max_size=6)
                        ).filter(lambda s: s not in RESERVED)
local_names = identifiers.filter(lambda s: s not in {"c", "h", "w"})  # the network's own parameters
comment_text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_categories=("Cc",)),
                       max_size=12)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _window(size: int, pad: int, kernel: int, stride: int, dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length of a sliding window, PyTorch's rule (written here independently of cnnc)."""
    eff = (kernel - 1) * dilation + 1
    span = size + 2 * pad - eff
    assert span >= 0
    if not ceil_mode:
        return span // stride + 1
    out = math.ceil(span / stride) + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _kwargs(draw, pairs, positional_ok: int) -> str:
    """Render arguments: the first `positional_ok` may be written positionally, the rest by keyword;
    arguments equal to their default (given as None) are omitted."""
    parts, keyword_mode = [], False
    for i, (name, value) in enumerate(pairs):
        if value is None:
            keyword_mode = True
            continue
        if not keyword_mode and i < positional_ok and draw(st.booleans()):
            parts.append(value)
        else:
            keyword_mode = True
            parts.append(f"{name}={value}")
    return ", ".join(parts)


@st.composite
def networks(draw):
    """A random valid network: (spec text, expected learnable parameters, {output name: shape})."""
    names = iter(draw(st.lists(local_names, min_size=40, max_size=40, unique=True)))
    net_name, in_name = next(names), next(names)
    c0, h0, w0 = draw(st.integers(1, 8)), draw(st.integers(4, 24)), draw(st.integers(4, 24))
    as_params = draw(st.booleans())
    stmts: list[str] = []
    if as_params:
        header = f"network {net_name}(c={c0}, h={h0}, w={w0})"
        stmts.append(f"input {in_name}: (N, c, h, w)")
    else:
        header = f"network {net_name}()"
        stmts.append(f"input {in_name}: (N, {c0}, {h0}, {w0})")
    shapes: dict[str, tuple] = {in_name: (c0, h0, w0)}  # named tensors
    # Liveness: a named tensor is live once something live reads it. An unnamed activation's output can
    # only be read implicitly by the next statement; until then the named tensor it reads is `pending`
    # (an add/concat that names its inputs leaves the unnamed chain, and `pending`, dead).
    consumed: set[str] = set()
    pending: str | None = None
    cur_name, cur = in_name, (c0, h0, w0)
    params = 0

    for _ in range(draw(st.integers(1, 9))):
        c, h, w = cur
        kind = draw(st.sampled_from(["conv", "conv", "act", "maxpool", "batchnorm", "add", "concat"]))
        name = next(names)
        if kind == "conv":
            filters = draw(st.integers(1, 12))
            groups = draw(st.sampled_from(_divisors(math.gcd(c, filters))))
            padding = draw(st.integers(0, 2))
            kmax = min(5, h + 2 * padding, w + 2 * padding)
            kh = draw(st.integers(1, kmax))
            kw = draw(st.one_of(st.just(kh), st.integers(1, kmax)))
            stride = draw(st.integers(1, 3))
            bias = draw(st.booleans())
            kernel = str(kh) if kh == kw else f"({kh}, {kw})"
            args = _kwargs(draw, [("filters", str(filters)), ("kernel", kernel),
                                  ("stride", None if stride == 1 else str(stride)),
                                  ("padding", None if padding == 0 else str(padding)), ("dilation", None),
                                  ("groups", None if groups == 1 else str(groups)),
                                  ("bias", None if bias else "false")], positional_ok=4)
            call = f"conv({args})"
            params += filters * (c // groups) * kh * kw + (filters if bias else 0)
            out = (filters, _window(h, padding, kh, stride), _window(w, padding, kw, stride))
        elif kind == "act":
            call = draw(st.sampled_from(["relu()", "sigmoid()", "tanh()", "leaky_relu(0.1)", "relu6()",
                                         "silu()", "identity()", "dropout(p=0.25)"]))
            out = cur
        elif kind == "maxpool":
            k = draw(st.integers(1, min(3, h, w)))
            stride = draw(st.one_of(st.none(), st.integers(1, 3)))
            padding = draw(st.integers(0, k // 2))
            ceil_mode = draw(st.booleans())
            args = _kwargs(draw, [("kernel", str(k)), ("stride", None if stride is None else str(stride)),
                                  ("padding", None if padding == 0 else str(padding)),
                                  ("ceil_mode", "true" if ceil_mode else None)], positional_ok=3)
            call = f"maxpool({args})"
            s = stride or k
            out = (c, _window(h, padding, k, s, 1, ceil_mode), _window(w, padding, k, s, 1, ceil_mode))
        elif kind == "batchnorm":
            affine = draw(st.booleans())
            call = "batchnorm()" if affine else "batchnorm(affine=false)"
            params += 2 * c if affine else 0
            out = cur
        elif kind == "add":
            same = sorted(n for n, s in shapes.items() if s == cur)
            if not same:
                continue
            a, b = draw(st.sampled_from(same)), draw(st.sampled_from(same))
            consumed |= {a, b}
            pending = None
            stmts.append(f"{name} = add({a}, {b})")
            shapes[name], cur_name, cur = cur, name, cur
            continue
        else:  # concat along channels of tensors with the same spatial size
            same = sorted(n for n, s in shapes.items() if s[1:] == (h, w))
            if not same:
                continue
            parts = draw(st.lists(st.sampled_from(same), min_size=1, max_size=3))
            consumed |= set(parts)
            pending = None
            listed = draw(st.booleans())
            inner = ", ".join(parts)
            stmts.append(f"{name} = concat([{inner}])" if listed else f"{name} = concat({inner})")
            out = (sum(shapes[p][0] for p in parts), h, w)
            shapes[name], cur_name, cur = out, name, out
            continue
        # a single-input layer: feed it implicitly, by name, or with '->'; layers with weights are always
        # named so that a dead one could be reported by name (the generator never leaves one dead)
        mode = draw(st.sampled_from(["implicit", "named", "pipe"])) if cur_name else "implicit"
        if mode == "named":
            call = call.replace("(", f"({cur_name}, " if call[call.index("(") + 1] != ")" else f"({cur_name}", 1)
        elif mode == "pipe":
            call = f"{cur_name} -> {call}"
        named = kind != "act" or draw(st.booleans())
        if named:  # it reads the previous output, and is live itself (an output at worst)
            if cur_name is not None:
                consumed.add(cur_name)
            elif pending is not None:
                consumed.add(pending)
            pending = None
        elif cur_name is not None:
            pending = cur_name
        stmts.append(f"{name} = {call}" if named else call)
        if named:
            shapes[name], cur_name = out, name
        else:
            cur_name = None
        cur = out

    # an optional classifier head: (global pool), flatten, dense layers
    if draw(st.booleans()):
        c, h, w = cur
        if draw(st.booleans()):
            stmts.append(f"{next(names)} = global_avgpool()" if draw(st.booleans()) else "global_avgpool()")
            h = w = 1
        if cur_name is not None:
            consumed.add(cur_name)
        elif pending is not None:
            consumed.add(pending)
        pending = None
        stmts.append("flatten()")
        features = c * h * w
        for i in range(draw(st.integers(1, 2))):
            units, bias = draw(st.integers(1, 10)), draw(st.booleans())
            if i:
                stmts.append("relu()")
            fc = next(names)
            stmts.append(f"{fc} = dense({units})" if bias else f"{fc} = dense({units}, bias=false)")
            params += units * features + (units if bias else 0)
            features = units
        shapes[fc] = (features,)
        cur_name, cur = fc, (features,)

    # every named tensor that nothing consumed is an output, so no layer with weights is dead
    outputs = [n for n in shapes if n not in consumed and n != in_name and n != pending]
    if cur_name is None:
        if outputs:  # the unnamed tail is dead then (it has no weights); what it read must be an output
            outputs += [pending] if pending not in (None, in_name) else []
            stmts.append("output " + ", ".join(outputs))
            expected_outputs = {n: shapes[n] for n in outputs}
        else:  # the unnamed tail is the network's output
            expected_outputs = {"output": cur}
    else:
        if outputs != [cur_name]:
            stmts.append("output " + ", ".join(outputs))
            expected_outputs = {n: shapes[n] for n in outputs}
        else:
            expected_outputs = {"output": cur}

    # layout: indentation, blank lines, comments, ';' separators
    text = draw(st.sampled_from(["", "# generated\n", "\n"])) + header + " {"
    text += f"  # {draw(comment_text)}\n" if draw(st.booleans()) else "\n"
    for i, s in enumerate(stmts):
        indent = draw(st.sampled_from(["    ", "  ", "\t", ""]))
        text += indent + s
        sep = draw(st.sampled_from(["\n", "\n", "\n\n", "; ", ";\n", "comment", "fullcomment"]))
        if sep == "comment":
            sep = f"   # {draw(comment_text)}\n"
        elif sep == "fullcomment":
            sep = f"\n# {draw(comment_text)}\n"
        if i == len(stmts) - 1 and sep == "; ":
            sep = "\n"
        text += sep
    text += "}\n"
    return text, params, expected_outputs


@seeded
@settings(max_examples=150 * SCALE, **COMMON)
@given(networks())
def test_random_valid_networks_compile_with_the_expected_parameter_count(workdir, case):
    text, params, outputs = case
    path = workdir / "random_net.cnn"
    path.write_text(text, encoding="utf-8")
    with time_limit(5):
        try:
            result = compile_spec(str(path))
        except CnncError as err:
            pytest.fail(f"valid spec rejected:\n{text}\n{render(err.diagnostics)}")
    g = result.graph
    assert g.parameters() == params, text
    assert not [w for w in result.warnings if w.code == "W101"], text  # nothing with weights is dead
    got = {name: tuple(g.node(node)["shape"]) for name, node in g.outputs.items()}
    assert got == outputs, text


def test_generator_sanity(workdir):
    """The independent count on a hand-checked network (guards the generator's arithmetic)."""
    text = ("network n(c=3, h=9, w=9) {\n    input x: (N, c, h, w)\n    a = conv(8, 3, padding=1); b = batchnorm()\n"
            "    p = maxpool(b, 2, ceil_mode=true)   # 9 -> 5\n    s = add(p, p)\n    q = concat([s, p])\n"
            "    flatten()\n    fc = dense(4, bias=false)\n}\n")
    path = workdir / "sanity.cnn"
    path.write_text(text)
    g = compile_spec(str(path)).graph
    assert g.parameters() == (8 * 3 * 9 + 8) + 2 * 8 + 4 * 16 * 5 * 5
    assert _window(9, 0, 2, 2, 1, True) == 5 and _window(9, 0, 2, 2) == 4


# ---- 2. mutants of the library specs --------------------------------------------------------------------------

LIBRARY = sorted(p.relative_to(SPECS).as_posix() for p in SPECS.rglob("*.cnn"))
# a spec that imports each blocks file, so a mutated block is expanded, not just parsed
USERS = {"blocks/common.cnn": "mobilenet_v2.cnn", "blocks/darknet.cnn": "yolov3_tiny.cnn",
         "blocks/densenet.cnn": "densenet121.cnn", "blocks/inception.cnn": "googlenet.cnn",
         "blocks/mobilenet.cnn": "efficientnet_b0.cnn", "blocks/resnet.cnn": "resnet18.cnn",
         "blocks/unet.cnn": "unet.cnn"}
TOKEN = re.compile(rb'"(?:[^"\\\n]|\\.)*"|\w+|->|\*\*|//|==|!=|<=|>=|\S')
NUMBER = re.compile(rb"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")
ALL_CODES = set(CODES) | set(WARNING_CODES)


def _imports(rel: str) -> set[str]:
    """Library files `rel` imports, transitively (paths relative to specs/)."""
    seen, todo = set(), [rel]
    while todo:
        cur = todo.pop()
        for target in re.findall(r'^import "([^"]+)"', (SPECS / cur).read_text(), flags=re.M):
            resolved = os.path.normpath(os.path.join(os.path.dirname(cur), target))
            if not (SPECS / resolved).exists():
                resolved = os.path.normpath(target)
            if resolved not in seen:
                seen.add(resolved)
                todo.append(resolved)
    return seen


def test_every_blocks_file_has_a_user():
    assert {f for f in LIBRARY if f.startswith("blocks/")} == set(USERS)
    for block_file, user in USERS.items():
        assert block_file in _imports(user), (block_file, user)


@pytest.fixture(scope="module")
def library_copy(workdir) -> Path:
    dest = workdir / "lib"
    shutil.copytree(SPECS, dest)  # the specs and specs/blocks/, so relative imports resolve in the copy
    return dest


INVALID_UTF8 = [b"\x80", b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xe2\x28\xa1", b"\xf0\x90\x28\xbc", b"\xc0\xaf",
                b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82"]
ODD_VALUES = [b"0", b"-1", b"7", b"2.5", b"1000000", b"1000000000", b"(1, 2)", b'"a"', b"none", b"1e308", b"-0"]
MUTATIONS = ["delete-char", "delete-token", "delete-line", "duplicate-token", "duplicate-line", "swap-tokens",
             "swap-lines", "truncate", "insert-bytes", "overwrite-bytes", "invalid-utf8", "number"]


def mutate(data: bytes, rnd: random.Random, kind: str | None = None) -> tuple[str, bytes]:
    """One mutation of a spec's bytes, every choice drawn from `rnd` (hypothesis's, or a seeded one)."""
    kind = kind or rnd.choice(MUTATIONS)
    lines = data.split(b"\n")
    tokens = list(TOKEN.finditer(data))
    if kind == "delete-char":
        i = rnd.randrange(len(data))
        return kind, data[:i] + data[i + 1:]
    if kind in ("delete-token", "duplicate-token"):
        t = rnd.choice(tokens)
        return kind, data[:t.start()] + (t.group() * 2 if kind == "duplicate-token" else b"") + data[t.end():]
    if kind == "swap-tokens":
        a, b = sorted((rnd.choice(tokens), rnd.choice(tokens)), key=lambda t: t.start())
        if a.start() == b.start():
            return kind, data
        return kind, data[:a.start()] + b.group() + data[a.end():b.start()] + a.group() + data[b.end():]
    if kind == "delete-line":
        i = rnd.randrange(len(lines))
        return kind, b"\n".join(lines[:i] + lines[i + 1:])
    if kind == "duplicate-line":
        i = rnd.randrange(len(lines))
        return kind, b"\n".join(lines[:i + 1] + lines[i:])
    if kind == "swap-lines":
        i, j = rnd.randrange(len(lines)), rnd.randrange(len(lines))
        swapped = list(lines)
        swapped[i], swapped[j] = swapped[j], swapped[i]
        return kind, b"\n".join(swapped)
    if kind == "truncate":
        return kind, data[:rnd.randrange(len(data))]
    if kind in ("insert-bytes", "overwrite-bytes"):
        i = rnd.randrange(len(data) + 1)
        junk = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
        return kind, data[:i] + junk + data[i + (len(junk) if kind == "overwrite-bytes" else 0):]
    if kind == "invalid-utf8":
        i = rnd.randrange(len(data) + 1)
        return kind, data[:i] + rnd.choice(INVALID_UTF8) + data[i:]
    numbers = list(NUMBER.finditer(data)) or [re.match(rb"", data)]  # a number replaced by an unusual value
    t = rnd.choice(numbers)
    return "number", data[:t.start()] + rnd.choice(ODD_VALUES) + data[t.end():]


def _check_diagnostics(err: CnncError, where: str, located: bool = False):
    assert err.diagnostics, where
    for d in err.diagnostics:
        assert d.code in ALL_CODES and d.code != "E900", (where, d)
        if located:
            assert d.span is not None, (where, d)
        if d.span is not None and os.path.isfile(d.span.path):
            with open(d.span.path, "rb") as f:
                n_lines = f.read().count(b"\n") + 1
            assert 1 <= d.span.line <= n_lines and d.span.column >= 1, (where, d)
    render(err.diagnostics)  # both renderings work
    render(err.diagnostics, "json")


@seeded
@settings(max_examples=250 * SCALE, **COMMON)
@given(st.sampled_from(LIBRARY), st.randoms(use_true_random=False))
def test_mutated_library_specs_fail_cleanly(library_copy, rel, rnd):
    """A mutant is compiled in full (through the spec that imports it, for a blocks file)."""
    kind, data = mutate((SPECS / rel).read_bytes(), rnd)
    target = library_copy / rel
    target.write_bytes(data)
    spec = library_copy / USERS.get(rel, rel)
    where = f"{rel} ({kind})"
    try:
        with time_limit(10):
            compile_spec(str(spec))
    except CnncError as err:
        _check_diagnostics(err, where)
    finally:
        target.write_bytes((SPECS / rel).read_bytes())


def test_mutation_sweep_parses_or_fails_cleanly(workdir):
    """Many more mutants, parsed only (the front end is where a mutation lands first): each ends in a
    parse or a located CnncError within the time limit. Every kind, on every library file in turn."""
    rnd = random.Random(SEED)
    library = {rel: (SPECS / rel).read_bytes() for rel in LIBRARY}
    path = workdir / "sweep.cnn"
    counts: dict[str, int] = {}
    for i in range(1000 * SCALE):
        rel = LIBRARY[i % len(LIBRARY)]
        kind, data = mutate(library[rel], rnd, MUTATIONS[(i // len(LIBRARY)) % len(MUTATIONS)])
        path.write_bytes(data)
        where = f"{rel} ({kind}, case {i}, CNNC_FUZZ_SEED={SEED})"
        try:
            with time_limit(10):
                parse_file(str(path))
            counts["parsed"] = counts.get("parsed", 0) + 1
        except CnncError as err:
            _check_diagnostics(err, where, located=True)
            counts[err.code] = counts.get(err.code, 0) + 1
    assert counts.get("parsed", 0) > 0 and counts.get("E100", 0) > 0 and counts.get("E101", 0) > 0, counts


def test_every_truncation_of_a_small_spec_fails_cleanly(workdir):
    """LeNet-5 cut at every byte: each prefix compiles or fails with a located error, within the limit."""
    data = (SPECS / "lenet5.cnn").read_bytes()
    path = workdir / "truncated.cnn"
    compiled = []
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        try:
            with time_limit(10):
                compile_spec(str(path))
            compiled.append(cut)
        except CnncError as err:
            _check_diagnostics(err, f"lenet5.cnn cut at {cut}", located=True)
    # only the whole file, or the file without its closing brace's newline, is a complete network
    assert compiled and compiled[-1] == len(data) and all(data[c:].strip(b"\n") == b"" for c in compiled), compiled


# ---- extreme inputs, in a fresh process whose peak memory is measured -------------------------------------------

def _net(body: str) -> str:
    return "network t() {\n    input x: (N, 3, 32, 32)\n" + body + "\n}\n"


TEN_MB = 10_000_000
EXTREMES = {
    "10MB-comment-line": lambda: _net("    relu()  # " + "a" * TEN_MB),
    "10MB-string": lambda: _net('    k = "' + "a" * TEN_MB + '"\n    relu()'),
    "10MB-escaped-string": lambda: _net('    k = "' + "\\n" * (TEN_MB // 2) + '"\n    relu()'),
    "10MB-unterminated-string": lambda: _net('    k = "' + "a" * TEN_MB + "\n    relu()"),
    "10MB-name": lambda: _net("    " + "a" * TEN_MB + " = relu()"),
    "10MB-number": lambda: _net("    k = " + "1" * TEN_MB + "\n    relu()"),
    "10MB-of-tokens": lambda: _net("    k = " + "1+" * (TEN_MB // 2) + "1\n    relu()"),
    "10MB-of-blank-lines": lambda: _net("    relu()" + "\n" * TEN_MB),
    "10MB-of-line-continuations": lambda: _net("    relu()" + "\\\n" * (TEN_MB // 2)),
    "10MB-name-template": lambda: _net('    relu() as "' + "{1}" * (TEN_MB // 3) + '"'),
    "10000-deep-parentheses": lambda: _net("    k = " + "(" * 10_000 + "1" + ")" * 10_000 + "\n    relu()"),
    "10000-deep-brackets": lambda: _net("    k = " + "[" * 10_000 + "1" + "]" * 10_000 + "\n    relu()"),
    "10000-deep-blocks": lambda: _net("    " + "if true {\n" * 10_000 + "relu()\n" + "}\n" * 10_000),
    "10000-deep-minus": lambda: _net("    k = " + "-" * 10_000 + "1\n    relu()"),
    "10000-deep-not": lambda: _net("    k = " + "not " * 10_000 + "true\n    relu()"),
    "10000-deep-power": lambda: _net("    k = " + "2**" * 10_000 + "1\n    relu()"),
    "10000-deep-conditional": lambda: _net("    k = " + "1 if true else " * 10_000 + "1\n    relu()"),
    "10000-deep-index": lambda: _net("    k = (1,)" + "[0]" * 10_000 + "\n    relu()"),
    "block-instantiating-itself": lambda: "block f(x) {\n    f(x)\n}\n" + _net("    f()"),
    "blocks-instantiating-each-other": lambda: ("block f(x) {\n    g(x)\n}\nblock g(x) {\n    a = f(x)\n"
                                               "    b = f(x)\n    add(a, b)\n}\n" + _net("    f()")),
    "repeat-1000000000": lambda: _net("    repeat 1000000000 {\n        relu()\n    }"),
    "nested-repeats": lambda: _net("    repeat 100000 {\n        repeat 100000 {\n            k = 1\n        }\n    }"),
    "huge-power": lambda: _net("    k = 10 ** 10 ** 10\n    relu()"),
    "huge-range": lambda: _net("    k = len(range(10 ** 12))\n    relu()"),
    "random-bytes": lambda: random.Random(0).randbytes(1_000_000),
    "invalid-utf8-everywhere": lambda: b" ".join(random.Random(1).choice(INVALID_UTF8) for _ in range(100_000)),
    "nul-bytes": lambda: b"\x00" * 1_000_000,
}

# Run by a fresh interpreter: for each file, the seconds, the growth of the peak resident memory, and the
# outcome (compiled, the first diagnostic, or the exception that must never happen).
_DRIVER = r"""
import json, resource, signal, sys, time
from cnnc.compiler import compile_spec
from cnnc.errors import CnncError
def alarm(signum, frame):
    raise TimeoutError("no answer within the time limit")
signal.signal(signal.SIGALRM, alarm)
for path in sys.argv[2:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    signal.alarm(int(sys.argv[1]))
    try:
        compile_spec(path)
        outcome = {"compiled": True}
    except CnncError as err:
        d = err.diagnostics[0]
        outcome = {"code": d.code, "span": [d.span.path, d.span.line, d.span.column] if d.span else None,
                   "message": d.message[:200]}
    except BaseException as err:
        outcome = {"crash": f"{type(err).__name__}: {str(err)[:200]}"}
    signal.alarm(0)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"path": path, "seconds": time.perf_counter() - t0, "grown_kb": grown, **outcome}), flush=True)
"""

# Bounds: well above what these cases need (0.1-3 s and under 200 MB each on a 2-core machine), far below
# what the bugs they guard against took (a 10 MB string: 3 GB; a 10 MB line of tokens: 15 GB and 8 minutes).
EXTREME_SECONDS = 30
EXTREME_MEMORY_KB = 600 * 1024


def test_extreme_inputs_end_cleanly_in_bounded_time_and_memory(workdir):
    paths = []
    for name, build in EXTREMES.items():
        data = build()
        path = workdir / f"extreme-{name}.cnn"
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        paths.append(str(path))
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(EXTREME_SECONDS), *paths], check=False,
                          capture_output=True, text=True, timeout=EXTREME_SECONDS * len(paths), cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["path"] for r in results] == paths, proc.stderr[-3000:]
    for r in results:
        assert "crash" not in r, r
        assert r["grown_kb"] < EXTREME_MEMORY_KB, r
        if not r.get("compiled"):
            assert r["code"] in ALL_CODES and r["code"] != "E900", r
            assert r["span"] is not None and r["span"][0] == r["path"], r  # located, in this file
    outcome = {Path(r["path"]).stem.removeprefix("extreme-"): r.get("code", "compiled") for r in results}
    # the inputs the limits are for are refused by them, not by some other error
    for name in ("10000-deep-parentheses", "10000-deep-brackets", "10000-deep-blocks", "10MB-of-tokens",
                 "block-instantiating-itself", "repeat-1000000000", "nested-repeats"):
        assert outcome[name] == "E221", outcome
    assert outcome["10MB-string"] == outcome["10MB-comment-line"] == "compiled", outcome
    assert outcome["random-bytes"] == outcome["invalid-utf8-everywhere"] == "E101", outcome


# ---- 3. the grammar file through hypothesis.extra.lark --------------------------------------------------------
#
# `from_lark` works with grammar/cnn.lark loaded as a plain Lark grammar (it ignores the postlexer), but the raw
# strings it draws are mostly NOT valid .cnn text, for reasons outside the grammar's rules:
#   * it concatenates terminals with no separator, and draws an %ignore'd token between symbols only
#     sometimes, so `network` followed by a NAME comes out as `networkabc`, which the lexer reads as one NAME;
#   * COMMENT (`#...`) is an %ignore'd token and is drawn between any two symbols, so it swallows the rest of
#     the line, including tokens the grammar requires (a `}` or a `)`);
#   * NAME is drawn from its regex and can be a keyword (`if`, `in`, `as`).
# The postlexer's own handling of `_NL` (dropped inside (...) and [...], inserted before `}` and at the end)
# is compatible with grammar-generated text: it only removes newlines the grammar never generates there and
# inserts ones the grammar would accept. So the conformance test below pads every keyword, name, number and
# operator with spaces and drops comments; with that, every drawn program must parse. The raw strategy is
# still useful as a fuzzer: cnnc must reject what it cannot parse with a syntax/encoding diagnostic.
# (Drawn programs are not compiled: they can contain unbounded recursion or huge powers, known hangs listed
# in tests/test_errors.py.)


def _grammar() -> lark.Lark:
    return lark.Lark(GRAMMAR.read_text(encoding="utf-8"), parser="lalr")


def _padded_strategy():
    g = _grammar()
    terminals, _, _ = g.grammar.compile(["start"], ())
    explicit = {}
    for t in terminals:
        if isinstance(t.pattern, PatternStr):
            explicit[t.name] = st.just(f" {t.pattern.value} ")
        elif t.name in ("COMP_OP", "ADD_OP", "MUL_OP", "POW"):
            explicit[t.name] = st.from_regex(t.pattern.to_regexp(), fullmatch=True).map(lambda s: f" {s} ")
    explicit["NAME"] = identifiers.map(lambda s: f" {s} ")
    explicit["NUMBER"] = st.from_regex(r"\d{1,3}(\.\d{0,2})?([eE][+-]?\d)?", fullmatch=True).map(lambda s: f" {s} ")
    explicit["STRING"] = st.from_regex(r'"([a-z {}_]|\\[nt"\\])*"', fullmatch=True).map(lambda s: f" {s} ")
    explicit["COMMENT"] = st.just("")
    return from_lark(g, explicit=explicit)


@seeded
@settings(max_examples=300 * SCALE, **COMMON)
@given(_padded_strategy())
def test_from_lark_programs_are_accepted_by_the_parser(source):
    with time_limit(5):
        try:
            parse(source, "<from_lark>")
        except CnncError as err:
            # the only refusal allowed for grammatical text is the documented nesting limit
            assert err.code == "E221", (source, render(err.diagnostics))


@seeded
@settings(max_examples=400 * SCALE, **COMMON)
@given(from_lark(_grammar()))
def test_raw_from_lark_strings_fail_cleanly(source):
    with time_limit(5):
        try:
            parse(source, "<raw>")
        except CnncError as err:
            assert {d.code for d in err.diagnostics} <= {"E100", "E101", "E221"}, (source, err.diagnostics)
            render(err.diagnostics)
