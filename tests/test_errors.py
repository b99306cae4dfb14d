"""One test per diagnostic: every error and warning code a spec or the command line can produce.

Each test writes a small spec, runs the real CLI entry point (`cnnc.cli.main`, and for a few cases a
real `python -m cnnc` subprocess) and checks the exit status, the exact `path:line:col`, the code, the
key words of the message and hint, and the quoted source line with its caret. Expected positions are
computed from the spec text written here (the offset of the offending token), never copied from cnnc's
output.

Several cases here were found as bugs (hangs on branching recursion and nested repeats, huge numbers,
garbled W100 wording, wrong quoted lines after form feeds, byte-counted UTF-8 columns, crashes on
malformed plans) and fixed; their tests keep them fixed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field

import numpy as np
import pytest

from cnnc import plan as plan_mod
from cnnc.cli import main
from cnnc.errors import CODES, WARNING_CODES, CnncError

# ---- helpers -------------------------------------------------------------------------------------------


@dataclass
class Diag:
    """One diagnostic parsed back from cnnc's text rendering."""

    path: str | None
    line: int | None
    col: int | None
    severity: str
    code: str
    message: str
    quote: str | None = None  # the "  12 | source" line
    caret: str | None = None  # the "     |     ^^^" line
    notes: list[str] = field(default_factory=list)
    hint: str | None = None


_HEADER = re.compile(r"^(?:(?P<path>.+?):(?P<line>\d+):(?P<col>\d+)|cnnc): "
                     r"(?P<sev>error|warning)\[(?P<code>[EW]\d{3})\]: (?P<msg>.*)$")


def parse_diags(text: str) -> list[Diag]:
    """Split cnnc's text diagnostics into Diag records (ignores anything that is not a diagnostic)."""
    diags: list[Diag] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _HEADER.match(lines[i])
        if not m:
            i += 1
            continue
        d = Diag(m["path"], int(m["line"]) if m["line"] else None, int(m["col"]) if m["col"] else None,
                 m["sev"], m["code"], m["msg"])
        i += 1
        if d.line is not None and i + 1 < len(lines) and re.match(r"^ *\d+ \| ", lines[i]):
            d.quote, d.caret = lines[i], lines[i + 1]
            i += 2
        while i < len(lines) and lines[i].startswith("  ") and not _HEADER.match(lines[i]):
            if lines[i].startswith("  note: "):
                d.notes.append(lines[i][len("  note: "):])
            elif lines[i].startswith("  hint: "):
                d.hint = lines[i][len("  hint: "):]
            i += 1
        diags.append(d)
    return diags


def loc(text: str, needle: str, nth: int = 1, after: str | None = None) -> tuple[int, int]:
    """1-based (line, column) of the nth occurrence of `needle` in `text` (after `after`, if given)."""
    i = text.index(after) if after is not None else 0
    i -= 1
    for _ in range(nth):
        i = text.index(needle, i + 1)
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return line, col


def source_line(text: str, line: int) -> str:
    return text.split("\n")[line - 1]


def write(dirpath, name: str, text: str | bytes) -> str:
    p = dirpath / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8", newline="")
    return str(p)


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    assert "internal error" not in err
    return rc, out, err


def subprocess_cli(*argv, cwd=None, timeout=60) -> tuple[int, str, str]:
    p = subprocess.run([sys.executable, "-m", "cnnc", *map(str, argv)], capture_output=True, text=True,
                       cwd=cwd, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def check(diag: Diag, *, path: str, line: int, col: int, code: str, words=(), hint=(), src: str | None = None,
          width: int | None = None, severity: str = "error"):
    """Assert one diagnostic: location, code, message words, hint words, quoted line and caret."""
    assert (diag.path, diag.line, diag.col) == (path, line, col), diag
    assert diag.code == code and diag.severity == severity, diag
    for w in words:
        assert w in diag.message, (w, diag.message)
    for w in hint:
        assert diag.hint is not None and w in diag.hint, (w, diag.hint)
    if src is not None:
        gutter = f"{line:>4} | "
        assert diag.quote is not None and diag.caret is not None, diag
        assert diag.quote.startswith(gutter), diag.quote
        shown = diag.quote[len(gutter):]
        caret_prefix = " " * (len(gutter) - 2) + "| "
        assert diag.caret.startswith(caret_prefix), diag.caret
        marks = diag.caret[len(caret_prefix):]
        offset = len(marks) - len(marks.lstrip(" "))
        carets = marks[offset:]
        assert carets and set(carets) == {"^"}, diag.caret
        if len(src) <= 200:
            assert shown == src.expandtabs(1), (shown, src)
            assert offset == col - 1, (diag.caret, col)
        else:  # long lines are shown as a window around the column
            assert shown in src
            assert shown[offset] == src[col - 1]
        if width is not None:
            assert len(carets) == width, diag.caret


def only(diags: list[Diag], code: str) -> Diag:
    found = [d for d in diags if d.code == code]
    assert len(found) == 1, diags
    return found[0]


def net(body: str, params: str = "", header: str = "") -> str:
    """A one-network spec: 4-space indented body lines after an input statement."""
    lines = "\n".join("    " + ln if ln else "" for ln in body.strip("\n").split("\n"))
    return f"{header}network t({params}) {{\n    input x: (N, 3, 32, 32)\n{lines}\n}}\n"


def run_spec(capsys, tmp_path, text, *extra, name="spec.cnn"):
    path = write(tmp_path, name, text)
    rc, out, err = cli(capsys, "inspect", path, *extra)
    return path, rc, out, parse_diags(err), err


def test_every_code_in_the_readme_table_is_known():
    # The table in README and cnnc.errors must agree on the codes this file tests.
    for code in ["E100", "E101", "E200", "E201", "E202", "E203", "E204", "E205", "E210", "E211", "E212", "E213",
                 "E221", "E230", "E231", "E232", "E240", "E241", "E300", "E301", "E302", "E402", "E403", "E404"]:
        assert code in CODES
    assert {"W100", "W101"} <= set(WARNING_CODES)


# ---- E100: syntax ----------------------------------------------------------------------------------------


def test_E100_unclosed_brace(capsys, tmp_path):
    text = "network t() {\n    input x: (N, 3, 32, 32)\n    conv(8, 3)\n"
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    # The end of the file: just after the last token, on the last line.
    line = 3
    col = len(source_line(text, 3)) + 1
    check(only(diags, "E100"), path=path, line=line, col=col, code="E100", words=["unexpected end of file"],
          hint=["not closed"], src=source_line(text, line))


def test_E100_unclosed_parenthesis(capsys, tmp_path):
    text = net("conv(8, 3\nrelu()")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "relu")
    check(only(diags, "E100"), path=path, line=line, col=col, code="E100", words=["unexpected 'relu'", "')'"],
          src=source_line(text, line), width=1)


def test_E100_assignment_instead_of_comparison(capsys, tmp_path):
    text = net("if a = 1 {\n    conv(8, 3)\n}", params="a=1")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "= 1")
    check(only(diags, "E100"), path=path, line=line, col=col, code="E100", words=["unexpected '='"],
          hint=["'=='"], src=source_line(text, line), width=1)


def test_E100_single_quoted_string(capsys, tmp_path):
    text = net("conv(8, 3, padding='same')")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "'same'")
    check(only(diags, "E100"), path=path, line=line, col=col, code="E100", words=["unexpected character", "'"],
          hint=["double quotes"], src=source_line(text, line), width=1)


def test_E100_two_statements_on_one_line(capsys, tmp_path):
    text = net("conv(8, 3) relu()")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "relu")
    d = only(diags, "E100")
    check(d, path=path, line=line, col=col, code="E100", words=["unexpected 'relu'", "expected"],
          hint=["one statement per line", "';'"], src=source_line(text, line))


def test_E100_stray_tokens(capsys, tmp_path):
    text = net("relu())")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "))")
    check(only(diags, "E100"), path=path, line=line, col=col + 1, code="E100", words=["unexpected ')'"],
          src=source_line(text, line), width=1)

    text = net("relu() @")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text, name="at.cnn")
    line, col = loc(text, "@")
    check(only(diags, "E100"), path=path, line=line, col=col, code="E100", words=["unexpected character '@'"],
          src=source_line(text, line), width=1)


def test_E100_stray_closing_brace_at_top_level(capsys, tmp_path):
    text = net("relu()") + "}\n"
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line = text.count("\n")  # the last line is the stray brace
    check(only(diags, "E100"), path=path, line=line, col=1, code="E100", words=["unexpected '}'", "'network'"],
          src="}", width=1)


def test_E100_expected_list_has_no_internal_token_names(capsys, tmp_path):
    text = net("relu()") + "}\n"
    _, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    assert "$END" not in only(diags, "E100").message


def test_E100_positional_after_keyword(capsys, tmp_path):
    text = net("conv(8, kernel=3, 1)")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "1)")
    check(only(diags, "E100"), path=path, line=line, col=col, code="E100", words=["positional argument after"],
          hint=["positional arguments first"], src=source_line(text, line))


def test_E100_bad_command_line(capsys):
    rc, _, err = cli(capsys, "inspect")
    assert rc == 1
    d = only(parse_diags(err), "E100")
    assert d.path is None and "required" in d.message and "spec" in d.message and "--help" in d.hint


# ---- E101: encoding --------------------------------------------------------------------------------------


def test_E101_invalid_utf8(capsys, tmp_path):
    data = b"network t() {\n    input x: (N, 3, 32, 32)\n    conv(8, 3)  # caf\xe9\n}\n"
    path = write(tmp_path, "latin1.cnn", data)
    rc, _, err = cli(capsys, "inspect", path)
    assert rc == 1
    i = data.index(b"\xe9")
    line = data.count(b"\n", 0, i) + 1
    col = i - (data.rfind(b"\n", 0, i) + 1) + 1  # all ASCII before it: bytes == characters
    shown = data.decode("utf-8", "replace").split("\n")[line - 1]
    check(only(parse_diags(err), "E101"), path=path, line=line, col=col, code="E101",
          words=["invalid UTF-8", "0xe9"], hint=["UTF-8"], src=shown, width=1)


def test_E101_invalid_utf8_after_multibyte_characters(capsys, tmp_path):
    data = "network t() {\n    input x: (N, 3, 32, 32)\n    relu()  # éé ".encode() + b"\xff\n}\n"
    path = write(tmp_path, "mixed.cnn", data)
    rc, _, err = cli(capsys, "inspect", path)
    assert rc == 1
    shown = data.decode("utf-8", "replace").split("\n")[2]
    col = shown.index("\ufffd") + 1  # a column counts characters, as everywhere else in cnnc
    check(only(parse_diags(err), "E101"), path=path, line=3, col=col, code="E101", words=["0xff"], src=shown)


def test_E101_nul_byte(capsys, tmp_path):
    text = net("conv(8,\x00 3)")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "\x00")
    check(only(diags, "E101"), path=path, line=line, col=col, code="E101", words=["NUL"], hint=["binary"])


# ---- E2xx: names and arguments ---------------------------------------------------------------------------


def test_E200_unknown_op_did_you_mean(capsys, tmp_path):
    text = net("cnv(8, 3)")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "cnv")
    check(only(diags, "E200"), path=path, line=line, col=col, code="E200", words=["unknown op or block 'cnv'"],
          hint=["did you mean 'conv'?"], src=source_line(text, line), width=len("cnv"))


def test_E200_unknown_block_suggests_a_defined_block(capsys, tmp_path):
    text = "block stem_unit(x) {\n    relu()\n}\n" + net("stem_unti()")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "stem_unti")
    check(only(diags, "E200"), path=path, line=line, col=col, code="E200", words=["'stem_unti'"],
          hint=["did you mean 'stem_unit'?"], src=source_line(text, line), width=len("stem_unti"))


def test_E201_unknown_keyword_argument(capsys, tmp_path):
    text = net("conv(8, 3, strid=2)")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "strid=")
    check(only(diags, "E201"), path=path, line=line, col=col, code="E201", words=["conv()", "no argument 'strid'"],
          hint=["did you mean 'stride'?"], src=source_line(text, line), width=len("strid=2"))


def test_E201_unknown_block_parameter(capsys, tmp_path):
    text = "block unit(x, planes) {\n    conv(planes, 3)\n}\n" + net("unit(plnes=8)")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "plnes")
    d = only(diags, "E201")
    check(d, path=path, line=line, col=col, code="E201", words=["block 'unit'", "no parameter 'plnes'"],
          hint=["did you mean 'planes'?"], src=source_line(text, line))
    assert any("defined here" in n and f"{path}:1:1" in n for n in d.notes)


def test_E201_unknown_set_parameter(capsys, tmp_path):
    path = write(tmp_path, "p.cnn", net("conv(classes, 3)", params="classes=10"))
    rc, _, err = cli(capsys, "inspect", path, "--set", "clases=20")
    assert rc == 1
    d = only(parse_diags(err), "E201")
    assert d.path is None
    assert "--set clases" in d.message and "no parameter 'clases'" in d.message
    assert "classes" in d.hint


def test_set_of_a_known_parameter_works(capsys, tmp_path):
    path = write(tmp_path, "p.cnn", net("conv(classes, 3)", params="classes=10"))
    rc, out, _ = cli(capsys, "inspect", path, "--set", "classes=20")
    assert rc == 0 and "(N, 20, 30, 30)" in out


def test_E100_malformed_set(capsys, tmp_path):
    path = write(tmp_path, "p.cnn", net("relu()", params="classes=10"))
    rc, _, err = cli(capsys, "inspect", path, "--set", "classes")
    assert rc == 1
    d = only(parse_diags(err), "E100")
    assert "expected NAME=VALUE" in d.message and "--set classes=20" in d.hint


def test_E100_bad_set_value_message_mentions_set_not_templates(capsys, tmp_path):
    path = write(tmp_path, "p.cnn", net("relu()", params="size=32"))
    rc, _, err = cli(capsys, "inspect", path, "--set", "size=(")
    assert rc == 1
    d = only(parse_diags(err), "E100")
    assert "--set size=(" in d.message
    assert "template" not in d.message


def test_E201_unknown_pass(capsys, tmp_path):
    path = write(tmp_path, "p.cnn", net("relu()"))
    rc, _, err = cli(capsys, "inspect", path, "--disable", "fold_everything")
    assert rc == 1
    d = only(parse_diags(err), "E201")
    assert "unknown pass 'fold_everything'" in d.message and "dce" in d.hint


def test_E202_wrong_argument_type(capsys, tmp_path):
    text = net('conv(8, kernel="3")')
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "kernel=")
    check(only(diags, "E202"), path=path, line=line, col=col, code="E202",
          words=["'kernel' must be an integer or a pair", 'found string "3"'], src=source_line(text, line),
          width=len('kernel="3"'))


def test_E202_boolean_expected(capsys, tmp_path):
    text = net("conv(8, 3, bias=1)")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    line, col = loc(text, "bias=")
    check(only(diags, "E202"), path=path, line=line, col=col, code="E202",
          words=["'bias' must be true or false", "integer 1"], src=source_line(text, line))


@pytest.mark.parametrize("call, token, words", [
    ("conv(8, 0)", "0)", ["'kernel' must be positive", "(0, 0)"]),
    ("conv(8, -1)", "-1", ["'kernel' must be positive", "(-1, -1)"]),
    ("conv(8, 3, stride=0)", "stride=", ["'stride' must be positive", "(0, 0)"]),
    ("maxpool(2, stride=(1, 0))", "stride=", ["'stride' must be positive", "(1, 0)"]),
    ("dropout(1.5)", "1.5", ["'p' must be in [0.0, 1.0)", "1.5"]),
])
def test_E203_argument_out_of_range(capsys, tmp_path, call, token, words):
    text = net(call)
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, token, after=call)
    check(only(diags, "E203"), path=path, line=line, col=col, code="E203", words=words,
          src=source_line(text, line))


def test_E203_groups_not_dividing_channels(capsys, tmp_path):
    text = net("conv(8, 3, groups=2)")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    # A shape rule's complaint is located at the call.
    line, col = loc(text, "conv(")
    check(only(diags, "E203"), path=path, line=line, col=col, code="E203",
          words=["groups=2 does not divide the 3 input channels"], hint=["divisors of 3"],
          src=source_line(text, line), width=len("conv(8, 3, groups=2)"))


def test_E204_missing_input(capsys, tmp_path):
    text = "network t() {\n    relu()\n}\n"
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "relu")
    check(only(diags, "E204"), path=path, line=line, col=col, code="E204",
          words=["relu() has no input", "nothing comes before it"], hint=["relu(x"], src=source_line(text, line),
          width=len("relu()"))


def test_E204_missing_argument(capsys, tmp_path):
    text = net("conv()")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "conv()")
    check(only(diags, "E204"), path=path, line=line, col=col, code="E204", words=["needs argument 'filters'"],
          hint=["conv(filters=...)"], src=source_line(text, line))


def test_E204_missing_block_parameter(capsys, tmp_path):
    text = "block unit(x, planes) {\n    conv(planes, 3)\n}\n" + net("unit()")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    line, col = loc(text, "unit()")
    d = only(diags, "E204")
    check(d, path=path, line=line, col=col, code="E204", words=["block 'unit' needs parameter 'planes'"],
          src=source_line(text, line))
    pline, pcol = loc(text, "planes")
    assert any(n.startswith(f"{path}:{pline}:{pcol}: declared here") for n in d.notes), d.notes


def test_E205_too_many_arguments(capsys, tmp_path):
    text = net("conv(8, 3, 1, 0, 1, 1, true, 5)")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "5)")
    check(only(diags, "E205"), path=path, line=line, col=col, code="E205",
          words=["at most 7 argument(s)", "8 given"], src=source_line(text, line), width=1)


def test_E205_too_many_inputs(capsys, tmp_path):
    text = net("relu(x, x)")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    line, col = loc(text, "relu(x")
    check(only(diags, "E205"), path=path, line=line, col=col, code="E205", words=["relu() takes 1 input", "found 2"],
          hint=["add()", "concat()"], src=source_line(text, line))


def test_E210_undefined_name(capsys, tmp_path):
    text = net("features = conv(8, 3)\nrelu(featres)")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "featres")
    check(only(diags, "E210"), path=path, line=line, col=col, code="E210", words=["undefined name 'featres'"],
          hint=["did you mean 'features'?"], src=source_line(text, line), width=len("featres"))


def test_E210_unknown_network(capsys, tmp_path):
    path = write(tmp_path, "n.cnn", net("relu()"))
    rc, _, err = cli(capsys, "inspect", path, "--network", "nope")
    assert rc == 1
    d = only(parse_diags(err), "E210")
    assert "no network 'nope'" in d.message and "t" in d.hint


def test_E211_duplicate_instance_name(capsys, tmp_path):
    text = net("conv1 = conv(8, 3)\nrelu()\nconv1 = conv(8, 3)")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    d = only(diags, "E211")
    # Located at the layer that reuses the name; the note points at the first one.
    line, col = loc(text, "conv(8, 3)", nth=2)
    check(d, path=path, line=line, col=col, code="E211", words=["duplicate instance name 'conv1'"],
          hint=["as \"name\""], src=source_line(text, line))
    fline, fcol = loc(text, "conv(8, 3)")
    assert d.notes and d.notes[0].startswith(f"{path}:{fline}:{fcol}: first used here")


def test_E211_duplicate_block_and_output(capsys, tmp_path):
    text = "block b(x) {\n    relu()\n}\nblock b(x) {\n    relu()\n}\n" + net("relu()")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "block b", nth=2)
    d = only(diags, "E211")
    check(d, path=path, line=line, col=col, code="E211", words=["block 'b' is defined twice"],
          src=source_line(text, line))
    assert d.notes[0].startswith(f"{path}:1:1: first defined here")

    text = net("a = relu()\noutput a, a")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text, name="out.cnn")
    line, col = loc(text, "a", nth=2, after="output a, a")
    check(only(diags, "E211"), path=path, line=line, col=col, code="E211", words=["output 'a' is declared twice"],
          src=source_line(text, line))


def test_E212_network_parameter_shadowed(capsys, tmp_path):
    text = net("classes = conv(8, 3)", params="classes=10")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "classes =")
    check(only(diags, "E212"), path=path, line=line, col=col, code="E212",
          words=["'classes' shadows the network parameter"], hint=["--set classes="], src=source_line(text, line),
          width=len("classes"))


def test_E212_loop_variable_shadowing(capsys, tmp_path):
    text = net("k = 3\nrepeat 2 as k {\n    conv(8, 3, padding=1)\n}")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    # Located at the loop statement that declares the variable.
    line, col = loc(text, "repeat")
    check(only(diags, "E212"), path=path, line=line, col=col, code="E212",
          words=["loop variable 'k' shadows an existing name"], hint=["fresh name"], src=source_line(text, line))


def test_E212_block_named_like_an_op(capsys, tmp_path):
    text = "block relu(x) {\n    conv(8, 3)\n}\n" + net("relu()")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "block relu")
    check(only(diags, "E212"), path=path, line=line, col=col, code="E212",
          words=["block 'relu' shadows the built-in op 'relu'"], hint=["another name"], src=source_line(text, line))


def test_E213_value_where_a_layer_is_expected(capsys, tmp_path):
    text = net("k = x -> 3")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "3", after="->")
    check(only(diags, "E213"), path=path, line=line, col=col, code="E213", words=["after '->'", "layer or block"],
          src=source_line(text, line), width=1)


def test_E213_layer_inside_an_expression(capsys, tmp_path):
    text = net("k = conv(8, 3) + 1")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    line, col = loc(text, "conv(")
    check(only(diags, "E213"), path=path, line=line, col=col, code="E213", words=["not inside expressions"],
          hint=["assign the inner layer to a name first"], src=source_line(text, line), width=len("conv(8, 3)"))


# ---- E221: limits ----------------------------------------------------------------------------------------


def test_E221_block_instantiating_itself_forever(capsys, tmp_path):
    text = "block forever(x) {\n    forever(x)\n}\n" + net("forever()")
    t0 = time.perf_counter()
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert time.perf_counter() - t0 < 5
    assert rc == 1
    line, col = loc(text, "forever(x)", after="{")
    check(only(diags, "E221"), path=path, line=line, col=col, code="E221",
          words=["block 'forever' nests deeper than 64 levels"], src=source_line(text, line), width=len("forever(x)"))


def test_E221_repeat_a_billion_times(capsys, tmp_path):
    text = net("repeat 1000000000 {\n    relu()\n}")
    t0 = time.perf_counter()
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert time.perf_counter() - t0 < 5
    assert rc == 1
    line, col = loc(text, "1000000000")
    check(only(diags, "E221"), path=path, line=line, col=col, code="E221",
          words=["repeat 1000000000", "limit of 100000"], src=source_line(text, line), width=len("1000000000"))


def _deep_parens_spec(depth=10_000):
    return net("k = " + "(" * depth + "1" + ")" * depth + "\nconv(8, k)")


def test_E221_ten_thousand_nested_parentheses(capsys, tmp_path):
    text = _deep_parens_spec()
    t0 = time.perf_counter()
    path, rc, _, diags, err = run_spec(capsys, tmp_path, text)
    assert time.perf_counter() - t0 < 5
    assert rc == 1 and "RecursionError" not in err
    # Nesting is limited to 100 levels; the network's brace is the first, so the 100th '(' is one too many.
    line, first = loc(text, "((")
    col = first + 99
    check(only(diags, "E221"), path=path, line=line, col=col, code="E221", words=["nesting deeper than 100"],
          hint=["split"], src=source_line(text, line))


def test_E221_ten_thousand_nested_parentheses_subprocess(tmp_path):
    path = write(tmp_path, "deep.cnn", _deep_parens_spec())
    t0 = time.perf_counter()
    rc, _, err = subprocess_cli("inspect", path, timeout=30)
    assert time.perf_counter() - t0 < 15
    assert rc == 1
    assert "Traceback" not in err and "RecursionError" not in err
    assert "error[E221]" in err


def _finishes_with(tmp_path, text, codes, timeout=10.0):
    """Run `cnnc inspect` on text in a subprocess: it must end in time with one of `codes`, no traceback."""
    path = write(tmp_path, "limit.cnn", text)
    try:
        rc, _, err = subprocess_cli("inspect", path, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"cnnc did not finish within {timeout} s")
    assert "Traceback" not in err and "internal error" not in err, err
    assert rc == 1, err
    assert any(d.code in codes for d in parse_diags(err)), err


def test_E221_block_recursing_twice_finishes_quickly(tmp_path):
    text = ("block twice(x) {\n    a = twice(x)\n    b = twice(x)\n    add(a, b)\n}\n" + net("twice()"))
    _finishes_with(tmp_path, text, {"E221"})


def test_E221_nested_repeats_finish_quickly(tmp_path):
    text = net("repeat 100000 {\n    repeat 100000 {\n        k = 1\n    }\n}\nrelu()")
    _finishes_with(tmp_path, text, {"E221"})


def test_huge_power_is_refused_quickly(tmp_path):
    _finishes_with(tmp_path, net("k = 10 ** 10 ** 10\nrelu()"), {"E202", "E203", "E221"})


def test_huge_range_is_a_located_error(capsys, tmp_path):
    text = net("k = len(range(10 ** 12))\nrelu()")
    path = write(tmp_path, "range.cnn", text)
    rc = main(["inspect", path])
    _, err = capsys.readouterr()
    assert rc == 1, err
    line, col = loc(text, "range(")  # the innermost call that is too large
    d = [d for d in parse_diags(err) if d.code in ("E202", "E203", "E221")]
    assert d and (d[0].line, d[0].col) == (line, col), err


def test_huge_integer_literal_is_a_located_error(capsys, tmp_path):
    text = net("k = " + "9" * 5000 + "\nrelu()")
    path = write(tmp_path, "bigint.cnn", text)
    rc = main(["inspect", path])
    _, err = capsys.readouterr()
    assert rc == 1 and "internal error" not in err, err
    line, col = loc(text, "999")
    d = [d for d in parse_diags(err) if d.code in ("E100", "E203", "E221")]
    assert d and (d[0].path, d[0].line, d[0].col) == (path, line, col), err


@pytest.mark.parametrize("unit", ["2 ** ", "1 if true else ", "- ", "not "])
def test_E221_deep_expression_without_brackets_is_located(capsys, tmp_path, unit):
    """700 levels of `**` or `if ... else` raised a Python RecursionError inside Lark (a traceback, exit 2)
    before this was fixed. The error is placed inside the deep part, on the right line."""
    text = net(f"k = {unit * 700}1\nrelu()")
    path, rc, _, diags, err = run_spec(capsys, tmp_path, text)
    assert rc == 1 and "RecursionError" not in err
    d = only(diags, "E221")
    line, first = loc(text, unit)
    last = text.index("\n", text.index(unit))  # the end of that line
    assert d.path == path and d.line == line and first < d.col <= last - text.rfind("\n", 0, last), d
    assert d.message == "expression nested too deeply" and "named parts" in d.hint


def test_E220_a_longer_cycle_names_every_step(capsys, tmp_path):
    text = net("a = add(x, c)\nb = relu(a)\nc = conv(b, 3, 3, padding=1)")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "c)")
    d = only(diags, "E220")
    check(d, path=path, line=line, col=col, code="E220", words=["cycle: a -> c -> b -> a"], hint=["acyclic"],
          src=source_line(text, line), width=1)
    cline, ccol = loc(text, "c = conv")
    assert d.notes == [f"{path}:{cline}:{ccol}: 'c' is defined here"], d.notes


def test_E210_use_before_definition_points_at_the_definition(capsys, tmp_path):
    text = net("a = relu(b)\nb = relu(x)\noutput a")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "b)")
    bline, bcol = loc(text, "b = relu")
    d = only(diags, "E210")
    check(d, path=path, line=line, col=col, code="E210", words=[f"'b' is used before it is defined (line {bline})"],
          hint=["move this statement below"], src=source_line(text, line))
    assert d.notes == [f"{path}:{bline}:{bcol}: 'b' is defined here"], d.notes


def test_long_name_template_is_refused_and_loops_of_templates_work(capsys, tmp_path):
    template = "{1}" * 400
    text = net(f'relu() as "{template}"')
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    line, col = loc(text, '"{1}')
    check(only(diags, "E203"), path=path, line=line, col=col, code="E203",
          words=[f"instance name of {len(template):,} characters is too long (at most 1,000)"])
    # a template inside a loop is parsed once and evaluated per iteration
    path, rc, out, diags, _ = run_spec(capsys, tmp_path, net('repeat 3 as i {\n    relu() as "r{i}_{i * 2}"\n}'),
                                       name="loop.cnn")
    assert rc == 0 and not diags and all(f"r{i}_{2 * i}" in out for i in range(3)), out


# ---- E23x: imports ---------------------------------------------------------------------------------------


def test_E230_import_not_found(capsys, tmp_path):
    text = net("relu()", header='import "nothere.cnn"\n')
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "import")
    check(only(diags, "E230"), path=path, line=line, col=col, code="E230",
          words=['cannot find import "nothere.cnn"'], hint=["--include", str(tmp_path)], src=source_line(text, line))


def test_E231_import_cycle(capsys, tmp_path):
    b_text = 'import "a.cnn"\nblock bb(x) {\n    relu()\n}\n'
    a_text = net("bb()", header='import "b.cnn"\n')
    b = write(tmp_path, "b.cnn", b_text)
    a = write(tmp_path, "a.cnn", a_text)
    rc, _, err = cli(capsys, "inspect", a)
    assert rc == 1
    line, col = loc(b_text, 'import "a.cnn"')
    # The import that closes the cycle is the one in b.cnn, reported by its resolved path.
    check(only(parse_diags(err), "E231"), path=os.path.realpath(b), line=line, col=col, code="E231",
          words=["import cycle", "a.cnn -> b.cnn -> a.cnn"], hint=["third file"], src=source_line(b_text, line))


def test_E232_import_outside_allowed_folders(capsys, tmp_path):
    write(tmp_path, "outside/x.cnn", "block b(x) {\n    relu()\n}\n")
    text = net("b()", header='import "../outside/x.cnn"\n')
    path = write(tmp_path, "proj/main.cnn", text)
    rc, _, err = cli(capsys, "inspect", path)
    assert rc == 1
    line, col = loc(text, "import")
    check(only(parse_diags(err), "E232"), path=path, line=line, col=col, code="E232",
          words=['"../outside/x.cnn"', "outside the allowed folders", os.path.realpath(tmp_path / "outside" / "x.cnn")],
          hint=["--include"], src=source_line(text, line))
    # The same import is fine once the folder is allowed.
    rc, out, _ = cli(capsys, "inspect", path, "--include", tmp_path / "outside")
    assert rc == 0 and "b" in out


# ---- E24x: asserts and declarations ------------------------------------------------------------------------


def test_E240_failing_assert_with_message(capsys, tmp_path):
    text = "network t(size=100) {\n    assert size % 32 == 0, \"input must be a multiple of 32\"\n" \
           "    input x: (N, 3, size, size)\n    relu()\n}\n"
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "assert")
    check(only(diags, "E240"), path=path, line=line, col=col, code="E240", words=["input must be a multiple of 32"],
          src=source_line(text, line), width=len(source_line(text, line)) - col + 1)
    # ... and passes with a valid size
    rc, _, _ = cli(capsys, "inspect", path, "--set", "size=64")
    assert rc == 0


def test_E241_input_in_a_block(capsys, tmp_path):
    text = "block b(x) {\n    input y: (N, 3, 8, 8)\n    relu()\n}\n" + net("b()")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "input y")
    check(only(diags, "E241"), path=path, line=line, col=col, code="E241", words=["`input` may only appear in a network"],
          hint=["parameters"], src=source_line(text, line))


def test_E241_network_without_output(capsys, tmp_path):
    text = "network t() {\n    input x: (N, 3, 32, 32)\n    output y\n}\n"
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    line, col = loc(text, "y\n")
    check(only(diags, "E210"), path=path, line=line, col=col, code="E210", words=["undefined name 'y'"],
          src=source_line(text, line))
    text = "network t() {\n    k = 3\n}\n"
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text, name="noout.cnn")
    assert rc == 1
    check(only(diags, "E241"), path=path, line=1, col=1, code="E241", words=["produces no output"],
          hint=["output NAME"], src=source_line(text, 1))


def test_E241_file_without_network(capsys, tmp_path):
    text = "block b(x) {\n    relu()\n}\n"
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    check(only(diags, "E241"), path=path, line=1, col=1, code="E241", words=["defines no network"], hint=["imported"])


# ---- E3xx: shapes ----------------------------------------------------------------------------------------


def test_E300_add_shape_mismatch_traces_the_divergence(capsys, tmp_path):
    text = ("network bad() {\n    input x: (N, 3, 31, 31)\n    a = conv(16, 3, padding=1)\n"
            "    b = maxpool(a, 2, ceil_mode=true)\n    c = conv(a, 16, 3, stride=2)\n    s = add(b, c)\n}\n")
    path, rc, _, diags, err = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "add(")
    d = only(diags, "E300")
    check(d, path=path, line=line, col=col, code="E300",
          words=["add of tensors with incompatible shapes", "(N, 16, 16, 16)", "(N, 16, 15, 15)"],
          hint=["ceil_mode", "both branches"], src=source_line(text, line), width=len("add(b, c)"))
    bl, bc = loc(text, "maxpool(")
    cl, cc = loc(text, "conv(a")
    al, ac = loc(text, "conv(16")
    assert d.notes[0].startswith(f"{path}:{bl}:{bc}: input b (N, 16, 16, 16)")
    assert "ceil_mode" in d.notes[0] and "31x31 -> 16x16" in d.notes[0]
    assert d.notes[1].startswith(f"{path}:{cl}:{cc}: input c (N, 16, 15, 15)")
    assert "stride 2" in d.notes[1] and "31x31 -> 15x15" in d.notes[1]
    assert d.notes[2] == f"{path}:{al}:{ac}: the inputs diverge after a (N, 16, 31, 31)"
    # every note quotes its own line
    assert f"{bl:>4} | {source_line(text, bl)}" in err and f"{al:>4} | {source_line(text, al)}" in err


def test_E300_add_channel_mismatch_suggests_a_projection(capsys, tmp_path):
    text = net("a = conv(16, 3, padding=1)\nb = conv(a, 8, 1)\ns = add(a, b)")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    line, col = loc(text, "add(")
    check(only(diags, "E300"), path=path, line=line, col=col, code="E300",
          words=["(N, 16, 32, 32)", "(N, 8, 32, 32)"], hint=["1x1 conv", "concat()"], src=source_line(text, line))


def test_E300_concat_shape_mismatch(capsys, tmp_path):
    text = net("a = conv(16, 3, padding=1)\nb = conv(a, 8, 3)\nc = concat(a, b)")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "concat(")
    d = only(diags, "E300")
    check(d, path=path, line=line, col=col, code="E300",
          words=["concat", "differ outside the concatenation axis", "(N, 16, 32, 32)", "(N, 8, 30, 30)"],
          hint=["same way"], src=source_line(text, line), width=len("concat(a, b)"))
    bl, bc = loc(text, "conv(a")
    assert any(n.startswith(f"{path}:{bl}:{bc}: input b (N, 8, 30, 30)") and "32x32 -> 30x30" in n for n in d.notes)


def test_E301_kernel_larger_than_padded_input(capsys, tmp_path):
    text = "network t() {\n    input x: (N, 3, 8, 8)\n    conv(16, 11, padding=1)\n}\n"
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "conv(")
    check(only(diags, "E301"), path=path, line=line, col=col, code="E301",
          words=["window of 11", "larger than the padded input", "10", "8 + padding 1+1"],
          hint=["smaller kernel"], src=source_line(text, line))


def test_E302_dense_on_a_feature_map(capsys, tmp_path):
    text = net("conv(8, 3)\nfc = dense(10)")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "dense(")
    check(only(diags, "E302"), path=path, line=line, col=col, code="E302",
          words=["dense needs a (N, features) input", "(N, 8, 30, 30)"], hint=["flatten()"],
          src=source_line(text, line), width=len("dense(10)"))


# ---- warnings --------------------------------------------------------------------------------------------


def test_W100_window_drops_input_rows(capsys, tmp_path):
    text = net("maxpool(3)")
    path, rc, out, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 0 and "(N, 3, 10, 10)" in out  # warnings do not stop the compile
    line, col = loc(text, "maxpool")
    ws = [d for d in diags if d.code == "W100"]
    assert len(ws) == 2  # rows and columns
    for d in ws:
        check(d, path=path, line=line, col=col, code="W100", severity="warning",
              words=["last 2 input", "of 32", "never read", "window 3, stride 3", "floor rounding"],
              hint=["ceil_mode=true"], src=source_line(text, line), width=len("maxpool(3)"))
    # with ceil_mode the last rows are read and nothing is reported
    path, rc, out, diags, _ = run_spec(capsys, tmp_path, net("maxpool(3, ceil_mode=true)"), name="ceil.cnn")
    assert rc == 0 and not diags and "(N, 3, 11, 11)" in out


def test_W100_message_names_rows_and_columns(capsys, tmp_path):
    _, rc, _, diags, _ = run_spec(capsys, tmp_path, net("maxpool(3)"))
    assert rc == 0
    messages = sorted(d.message for d in diags if d.code == "W100")
    assert any("the last 2 input rows of 32" in m for m in messages), messages
    assert any("the last 2 input columns of 32" in m for m in messages), messages


def test_W101_layer_with_weights_feeds_no_output(capsys, tmp_path):
    text = net("side = conv(x, 4, 3)\nmain = conv(x, 8, 3)\noutput main")
    path, rc, out, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 0 and "main" in out
    line, col = loc(text, "conv(x, 4")
    check(only(diags, "W101"), path=path, line=line, col=col, code="W101", severity="warning",
          words=["layer side (conv) feeds no output", "removed"], hint=["output"], src=source_line(text, line),
          width=len("conv(x, 4, 3)"))


def test_warnings_only_exit_zero_in_a_subprocess(tmp_path):
    text = net("maxpool(3)")
    path = write(tmp_path, "w.cnn", text)
    rc, out, err = subprocess_cli("inspect", path)
    assert rc == 0 and "Traceback" not in err
    assert "maxpool" in out and "warning[W100]" in err


# ---- several errors, JSON ----------------------------------------------------------------------------------


MULTI = net("cnv(8, 3)\nconv(8, 3, strid=2)\nrelu(y)\nconv(8, 0)\nclasses = relu()", params="classes=10")


def _multi_expected(path):
    return [("E200", *loc(MULTI, "cnv")), ("E201", *loc(MULTI, "strid")), ("E210", *loc(MULTI, "y)")),
            ("E203", *loc(MULTI, "0)", after="conv(8, 0")), ("E212", *loc(MULTI, "classes =", after="relu(y)"))]


def test_several_independent_errors_in_one_run(capsys, tmp_path):
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, MULTI)
    assert rc == 1
    assert [(d.code, d.line, d.col) for d in diags] == _multi_expected(path)
    assert all(d.path == path and d.quote and d.caret for d in diags)


def test_error_format_json(capsys, tmp_path):
    path = write(tmp_path, "multi.cnn", MULTI)
    rc, out, err = cli(capsys, "--error-format", "json", "inspect", path)
    assert rc == 1 and out == ""
    data = json.loads(err)
    got = [(d["code"], d["span"]["line"], d["span"]["column"]) for d in data["diagnostics"]]
    assert got == _multi_expected(path)
    for d in data["diagnostics"]:
        assert d["severity"] == "error" and d["span"]["path"] == path and d["message"]
        assert set(d) >= {"severity", "code", "message", "span", "hint", "notes"}
    assert data["diagnostics"][0]["hint"] == "did you mean 'conv'?"
    assert data["diagnostics"][0]["span"]["end_column"] == data["diagnostics"][0]["span"]["column"] + len("cnv")


def test_error_format_json_subprocess_and_warnings(tmp_path):
    path = write(tmp_path, "multi.cnn", MULTI)
    rc, out, err = subprocess_cli("--error-format=json", "inspect", path)
    assert rc == 1 and "Traceback" not in err
    assert [d["code"] for d in json.loads(err)["diagnostics"]] == [c for c, _, _ in _multi_expected(path)]
    path = write(tmp_path, "warn.cnn", net("maxpool(3)"))
    rc, out, err = subprocess_cli("--error-format", "json", "inspect", path)
    assert rc == 0 and "maxpool" in out
    warnings = json.loads(err)["diagnostics"]
    assert {d["code"] for d in warnings} == {"W100"} and all(d["severity"] == "warning" for d in warnings)


def test_syntax_error_in_a_subprocess(tmp_path):
    text = net("if a = 1 {\n    relu()\n}", params="a=1")
    path = write(tmp_path, "syn.cnn", text)
    rc, out, err = subprocess_cli("inspect", path)
    assert rc == 1 and out == "" and "Traceback" not in err
    line, col = loc(text, "= 1")
    assert err.startswith(f"{path}:{line}:{col}: error[E100]: ")


def test_error_in_an_imported_file_names_that_file(capsys, tmp_path):
    lib_text = "block unit(x) {\n    conv(8, 3, strid=1)\n}\n"
    lib = write(tmp_path, "lib/units.cnn", lib_text)
    text = net("unit()", header='import "lib/units.cnn"\n')
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(lib_text, "strid")
    check(only(diags, "E201"), path=os.path.realpath(lib), line=line, col=col, code="E201",
          words=["no argument 'strid'"], src=source_line(lib_text, line))


@pytest.mark.parametrize("odd", ["\x0c", "\u2028"])
def test_quoted_line_after_form_feed_or_line_separator(capsys, tmp_path, odd):
    text = net(f"relu()  # a{odd}b\ncnv(8, 3)")
    path, rc, _, diags, _ = run_spec(capsys, tmp_path, text)
    assert rc == 1
    line, col = loc(text, "cnv")
    check(only(diags, "E200"), path=path, line=line, col=col, code="E200", src=source_line(text, line), width=3)


# ---- files: E402 / E403 / E404 -----------------------------------------------------------------------------


def test_E404_compile_missing_spec(capsys, tmp_path):
    missing = tmp_path / "nothere.cnn"
    rc, _, err = cli(capsys, "compile", missing, "-o", tmp_path / "x.cnnplan")
    assert rc == 1
    d = only(parse_diags(err), "E404")
    assert str(missing) in d.message and "cannot read" in d.message
    assert not (tmp_path / "x.cnnplan").exists()


def test_E404_compile_missing_weights_and_E403_unwritable_output(capsys, tmp_path):
    path = write(tmp_path, "ok.cnn", net("conv(8, 3)"))
    rc, _, err = cli(capsys, "compile", path, "-o", tmp_path / "x.cnnplan", "--weights", tmp_path / "w.npz")
    assert rc == 1 and "w.npz" in only(parse_diags(err), "E404").message
    rc, _, err = cli(capsys, "compile", path, "-o", tmp_path / "no" / "dir" / "x.cnnplan")
    assert rc == 1 and "does not exist" in only(parse_diags(err), "E403").message


@pytest.fixture
def plan_file(capsys, tmp_path):
    spec = write(tmp_path, "tiny.cnn", net("conv1 = conv(8, 3)\nrelu()"))
    out = tmp_path / "tiny.cnnplan"
    rc, _, err = cli(capsys, "compile", spec, "-o", out)
    assert rc == 0 and out.exists(), err
    plan_mod.load(str(out))  # the pristine file loads
    return out


def _rewrite(path, text: str | bytes):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("plan.json", text)


def _plan_json(path) -> dict:
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("plan.json"))


def _load_error(path) -> str:
    with pytest.raises(CnncError) as e:
        plan_mod.load(str(path))
    assert e.value.code == "E402" and all(d.code == "E402" for d in e.value.diagnostics)
    return e.value.diagnostics[0].message


def test_E402_truncated_plan(plan_file):
    data = plan_file.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        plan_file.write_bytes(data[:cut])
        assert "not a readable plan file" in _load_error(plan_file)


def test_E402_edited_plan_checksum_mismatch(plan_file):
    plan = _plan_json(plan_file)
    plan["constants"][0]["shape"][0] = 9  # hand-edited
    _rewrite(plan_file, json.dumps(plan))
    assert "checksum mismatch" in _load_error(plan_file)


def test_E402_plan_whose_halo_is_not_the_padding(capsys, tmp_path):
    """A plan with a valid checksum that the layout pass did not write: a stored halo that is not the
    depthwise convolution's padding is one E402 at load, not an internal error."""
    spec = write(tmp_path, "dw.cnn", net("e = conv(16, 1)\nd = conv(e, 16, 3, padding=1, groups=16)\nconv(d, 8, 1)"))
    plan, _ = plan_mod.load(compile_to(capsys, spec, tmp_path / "ok.cnnplan"))
    step = next(s for s in plan["steps"] if s["attrs"].get("halo"))
    step["attrs"]["halo"] = [2, 2, 2, 2]
    forged = tmp_path / "forged.cnnplan"
    plan_mod.save(str(forged), plan)
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    rc, _, err = cli(capsys, "run", forged, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert rc == 1 and not (tmp_path / "y.npy").exists()
    message = only(parse_diags(err), "E402").message
    assert "halo [2, 2, 2, 2]" in message and "padding [1, 1, 1, 1]" in message


def compile_to(capsys, spec, out) -> str:
    rc, _, err = cli(capsys, "compile", spec, "-o", out)
    assert rc == 0, err
    return str(out)


def test_E402_wrong_version(plan_file):
    plan = _plan_json(plan_file)
    plan["version"] = 99
    _rewrite(plan_file, json.dumps(plan))
    message = _load_error(plan_file)
    assert "version 99" in message and "not supported" in message


def test_E402_not_a_plan(plan_file, tmp_path):
    _rewrite(plan_file, "{not json")
    assert "not a readable plan file" in _load_error(plan_file)
    with zipfile.ZipFile(plan_file, "w") as z:
        z.writestr("other.txt", "hello")
    assert "no plan.json" in _load_error(plan_file)
    _rewrite(plan_file, json.dumps({"format": "something-else", "version": 1}))
    assert "not a cnnc plan" in _load_error(plan_file)
    text_file = tmp_path / "plan.txt"
    text_file.write_text("hello")
    _load_error(text_file)


def test_E404_missing_plan(tmp_path):
    with pytest.raises(CnncError) as e:
        plan_mod.load(str(tmp_path / "nothere.cnnplan"))
    assert e.value.code == "E404"


def _with_valid_checksum(plan: dict) -> str:
    # The checksum is documented as a SHA-256 of the plan: recompute it the way a (buggy) writer would.
    body = {k: v for k, v in plan.items() if k != "checksum"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return json.dumps(dict(body, checksum=digest))


@pytest.mark.parametrize("content", ["[1, 2]", '"plan"', "3"])
def test_E402_plan_json_not_an_object(plan_file, content):
    _rewrite(plan_file, content)
    _load_error(plan_file)


def test_E402_plan_missing_steps(plan_file):
    plan = _plan_json(plan_file)
    del plan["steps"]
    _rewrite(plan_file, _with_valid_checksum(plan))
    _load_error(plan_file)
