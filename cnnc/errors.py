"""Diagnostics: source spans, error codes, and their text and JSON renderings.

Every problem cnnc reports about a user's input is a `Diagnostic` with a stable code, a message, an
optional source span, an optional hint and optional notes (secondary spans). A `CnncError` carries one or
more diagnostics; the CLI renders them and exits with status 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

# Stable error codes: editors and CI match on these (`--error-format json`). Never renumber.
CODES: dict[str, str] = {
    "E100": "syntax error",
    "E101": "invalid character or encoding",
    "E200": "unknown op or block",
    "E201": "unknown argument",
    "E202": "wrong argument type",
    "E203": "argument out of range",
    "E204": "missing argument",
    "E205": "too many arguments",
    "E210": "undefined name",
    "E211": "duplicate name",
    "E212": "shadowed name",
    "E213": "not a tensor / not a value",
    "E220": "cycle",
    "E221": "recursion or expansion limit",
    "E230": "import not found",
    "E231": "import cycle",
    "E232": "import outside the allowed paths",
    "E240": "assertion failed",
    "E241": "bad network declaration",
    "E300": "shape mismatch",
    "E301": "impossible size",
    "E302": "wrong rank",
    "E400": "bad weights",
    "E401": "bad input data",
    "E402": "bad plan file",
    "E403": "cannot write output",
    "E404": "file not found or unreadable",
    "E405": "not enough memory for the batch",
    "E406": "target device unavailable",
    "E900": "internal error",
}

WARNING_CODES: dict[str, str] = {
    "W100": "input rows or columns dropped by floor rounding",
    "W101": "unused value",
}


@dataclass(frozen=True)
class Span:
    """A region of a source file; lines and columns are 1-based, end column exclusive."""

    path: str
    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
        }


@dataclass
class Diagnostic:
    code: str
    message: str
    span: Span | None = None
    hint: str | None = None
    notes: list[tuple[Span | None, str]] = field(default_factory=list)
    severity: str = "error"

    def to_json(self) -> dict:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "span": self.span.to_json() if self.span else None,
            "hint": self.hint,
            "notes": [{"span": s.to_json() if s else None, "message": m} for s, m in self.notes],
        }


class CnncError(Exception):
    """One or more user-facing errors. Never shown as a traceback."""

    def __init__(self, diagnostics: Diagnostic | list[Diagnostic] | str, code: str = "E900", *,
                 span: Span | None = None, hint: str | None = None):
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic(code, diagnostics, span, hint)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        super().__init__("; ".join(d.message for d in self.diagnostics))

    @property
    def code(self) -> str:
        return self.diagnostics[0].code


class SourceCache:
    """Source text by path, so diagnostics can quote the offending line."""

    _texts: dict[str, list[str]] = {}

    @classmethod
    def add(cls, path: str, text: str) -> None:
        # Lines are counted at "\n" only, as the parser does (not at form feeds or U+2028).
        cls._texts[path] = [line.rstrip("\r") for line in text.split("\n")]

    @classmethod
    def line(cls, path: str, line: int) -> str | None:
        lines = cls._texts.get(path)
        if lines is None:
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    lines = [line.rstrip("\r") for line in f.read().split("\n")]
            except OSError:
                return None
            cls._texts[path] = lines
        if 1 <= line <= len(lines):
            return lines[line - 1]
        return None


def _quote(span: Span) -> list[str]:
    text = SourceCache.line(span.path, span.line)
    if text is None:
        return []
    text = text.expandtabs(1)
    if len(text) > 200:  # a huge line (e.g. fuzzed input): show a window around the column
        start = max(0, span.column - 80)
        shown = text[start:start + 160]
        caret_col = span.column - start
    else:
        shown, caret_col = text, span.column
    width = 1
    if span.end_line == span.line and span.end_column and span.end_column > span.column:
        width = min(span.end_column - span.column, max(1, len(shown) - caret_col + 1))
    gutter = f"{span.line:>4} | "
    return [gutter + shown, " " * (len(gutter) - 2) + "| " + " " * (caret_col - 1) + "^" * width]


def render_text(diag: Diagnostic) -> str:
    where = f"{diag.span}: " if diag.span else "cnnc: "
    lines = [f"{where}{diag.severity}[{diag.code}]: {diag.message}"]
    if diag.span:
        lines += _quote(diag.span)
    for span, message in diag.notes:
        lines.append(f"  note: {span}: {message}" if span else f"  note: {message}")
        if span:
            lines += ["  " + q for q in _quote(span)]
    if diag.hint:
        lines.append(f"  hint: {diag.hint}")
    return "\n".join(lines)


def render(diagnostics: list[Diagnostic], fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps({"diagnostics": [d.to_json() for d in diagnostics]}, indent=1)
    return "\n".join(render_text(d) for d in diagnostics)
