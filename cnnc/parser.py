"""Text to syntax tree: the Lark grammar (grammar/cnn.lark), a newline-aware postlexer, and friendly
syntax errors with `path:line:col` and the expected tokens."""

from __future__ import annotations

import functools
import re
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ast as A
from .errors import CnncError, Diagnostic, SourceCache, Span

MAX_NESTING = 100  # brackets and braces; deeper input is refused before it can exhaust the stack
MAX_TOKENS = 50_000  # per file (the largest library spec has under 500): parsing costs about 0.1 ms a token,
# so a 10 MB line of tokens is refused in seconds instead of taking minutes and gigabytes


class _Postlexer:
    """Statements end at newlines, except inside (...) and [...]. Also inserts a newline before each
    `}` and at the end of input, so the grammar can require one after every simple statement."""

    always_accept = ("_NL", "RBRACE")

    def __init__(self, path: str):
        self.path = path

    def process(self, stream):
        depth = 0  # (...) and [...]
        braces = 0
        last = None
        count = 0
        for tok in stream:
            count += 1
            if count > MAX_TOKENS:
                raise CnncError(Diagnostic(
                    "E221", f"more than {MAX_TOKENS:,} tokens in one file",
                    Span(self.path, tok.line, tok.column), "split the spec into files joined by `import`, or use "
                    "`repeat` and `for` instead of writing every layer out"))
            if tok.type == "_NL":
                if depth > 0 or (last is not None and last.type == "_NL"):
                    continue
            elif tok.type in ("LPAR", "LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(0, depth - 1)
            elif tok.type == "LBRACE":
                braces += 1
            elif tok.type == "RBRACE":
                braces = max(0, braces - 1)
                if last is not None and last.type != "_NL":
                    yield Token.new_borrow_pos("_NL", "\n", tok)
            if depth + braces > MAX_NESTING:
                raise CnncError(Diagnostic(
                    "E221", f"nesting deeper than {MAX_NESTING} levels",
                    Span(self.path, tok.line, tok.column), "split the expression or block into parts"))
            last = tok
            yield tok
        if last is not None and last.type != "_NL":
            yield Token("_NL", "\n", line=last.end_line or last.line, column=last.end_column or last.column)


@functools.lru_cache(maxsize=1)
def _grammar_text() -> str:
    return resources.files("cnnc.grammar").joinpath("cnn.lark").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _parser(path_key: str) -> Lark:
    # One parser per path: the postlexer carries the path for its own errors. Building is cheap
    # (the LALR tables are cached by Lark across instances in one process).
    return Lark(_grammar_text(), parser="lalr", propagate_positions=True, postlex=_Postlexer(path_key),
                maybe_placeholders=True, cache=False)


# Friendly names for tokens in "expected ..." lists.
_TOKEN_NAMES = {
    "_NL": "end of line", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'",
    "RBRACE": "'}'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "DOT": "'.'", "NAME": "a name",
    "NUMBER": "a number", "STRING": "a string", "$END": "end of file", "COMP_OP": "a comparison", "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*', '/', '//' or '%'", "__ANON_0": "'->'", "MORETHAN": "'>'", "LESSTHAN": "'<'",
}


def _describe_expected(expected) -> str:
    names = []
    for e in sorted(expected):
        if e in _TOKEN_NAMES:
            names.append(_TOKEN_NAMES[e])
        elif re.fullmatch(r"[A-Z_]+", e) and not e.startswith("__"):
            names.append(f"'{e.lower()}'" if e.isalpha() else e)
        else:
            names.append(e)
    names = sorted(set(names))
    if len(names) > 8:
        names = names[:8] + ["..."]
    return ", ".join(names)


def _token_text(tok: Token) -> str:
    if tok.type == "_NL":
        return "end of line"
    if tok.type == "$END":
        return "end of file"
    text = str(tok)
    return repr(text if len(text) < 40 else text[:37] + "...")


def _syntax_error(path: str, err: UnexpectedInput) -> CnncError:
    line, col = getattr(err, "line", 1) or 1, getattr(err, "column", 1) or 1
    hint = None
    if isinstance(err, UnexpectedCharacters):
        ch = err.char
        message = f"unexpected character {ch!r}"
        if ch == "'":
            hint = "strings use double quotes: \"text\""
        elif ch == "=":
            hint = "did you mean '==' (comparison) or a keyword argument name=value?"
    elif isinstance(err, UnexpectedEOF):
        message = "unexpected end of file"
        hint = "a '{' or '(' is probably not closed"
    elif isinstance(err, UnexpectedToken):
        tok = err.token
        if tok.type == "$END":
            message = "unexpected end of file"
            hint = "a '{' or '(' is probably not closed"
        else:
            line, col = tok.line, tok.column
            message = f"unexpected {_token_text(tok)}"
        expected = _describe_expected(err.accepts or err.expected)
        if expected:
            message += f"; expected {expected}"
        if tok.type == "EQUAL" and "COMP_OP" in (err.accepts or set()):
            hint = "use '==' to compare"
        elif tok.type == "NAME" and "_NL" in (err.accepts or set()):
            hint = "put one statement per line, or separate statements with ';'"
    else:
        message = str(err).splitlines()[0]
    return CnncError(Diagnostic("E100", message, Span(path, line, col), hint))


def parse(text: str, path: str = "<string>") -> A.Module:
    """Parse .cnn source text into a Module. Raises CnncError with located diagnostics."""
    if text.startswith("\ufeff"):  # a UTF-8 byte-order mark is not part of the program
        text = text[1:]
    SourceCache.add(path, text)
    if "\x00" in text:
        pos = text.index("\x00")
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        raise CnncError(Diagnostic("E101", "NUL character in source", Span(path, line, col),
                                   "is this a binary file?"))
    try:
        tree = _parser(path).parse(text)
    except UnexpectedInput as err:
        raise _syntax_error(path, err) from None
    except RecursionError:
        raise CnncError(Diagnostic("E221", "input nested too deeply", Span(path, 1, 1))) from None
    try:
        return _ToAst(path).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, CnncError):
            raise err.orig_exc from None
        if not isinstance(err.orig_exc, RecursionError):
            raise
    except RecursionError:
        pass
    # Deeper than Python's recursion allows: about 60-80 levels of calls, lists or parentheses, or 470 of
    # `- - 1`, `2 ** 2 ** ...`, `a if c else ...`, `x[0][0]...` (which have no brackets to count)
    line, col = _deep_place(tree)
    raise CnncError(Diagnostic("E221", "expression nested too deeply", Span(path, line, col),
                               "split it into named parts (expressions nest about 60 calls or lists deep, "
                               "or 470 operators)"))


_DEEP = 200  # syntax tree levels: where a too-deep expression is reported (the limit is a few hundred further)


def _deep_place(tree) -> tuple[int, int]:
    """Line and column of the first token nested more than _DEEP levels down (found without recursion)."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Token):
            if depth > _DEEP:
                return node.line or 1, node.column or 1
        elif node is not None:
            meta = node.meta
            if depth > _DEEP and not getattr(meta, "empty", True):
                return meta.line, meta.column
            stack.extend((child, depth + 1) for child in reversed(node.children))
    return 1, 1


def parse_file(path: str) -> A.Module:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise CnncError(Diagnostic("E404", f"cannot read {path}: {err.strerror}", None,
                                   "check the path")) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        line_start = data.rfind(b"\n", 0, err.start) + 1
        col = len(data[line_start:err.start].decode("utf-8", errors="replace")) + 1
        raise CnncError(Diagnostic("E101", f"invalid UTF-8 byte 0x{data[err.start]:02x}",
                                   Span(path, line, col), "spec files must be UTF-8 text")) from None
    return parse(text, path)


def parse_expression(text: str, span: Span, what: str = "name template") -> A.Expr:
    """Parse one expression (the `{...}` part of an instance-name template, or a --set value) and
    locate everything in it at `span`."""
    if "\n" in text or "}" in text:
        raise CnncError(Diagnostic("E100", f"bad expression in {what}: {text!r}", span))
    try:
        module = parse(f"network _t() {{\n_ = {text}\n}}\n", "<expression>")
    except CnncError as err:
        raise CnncError(Diagnostic(err.code if err.code != "E100" else "E100",
                                   f"bad expression in {what}: {text!r}", span,
                                   err.diagnostics[0].message)) from None
    stmt = module.networks[0].body[0]
    expr = stmt.value.stages[0].expr

    def relocate(node):  # template expressions report the template's span
        if isinstance(node, A.Expr):
            node.span = span
        for value in vars(node).values():
            if isinstance(value, (A.Expr, A.Kwarg)):
                relocate(value)
            elif isinstance(value, list):
                for v in value:
                    if isinstance(v, (A.Expr, A.Kwarg)):
                        relocate(v)
        if isinstance(node, A.Kwarg):
            node.span = span
    relocate(expr)
    return expr


def _unescape(s: str) -> str:
    body = s[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


@v_args(meta=True)
class _ToAst(Transformer):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", False) or not hasattr(meta, "line"):
            return Span(self.path, 1, 1)
        return Span(self.path, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tspan(self, tok: Token) -> Span:
        return Span(self.path, tok.line, tok.column, tok.end_line, tok.end_column)

    # ---- top level
    def start(self, meta, items):
        module = A.Module(self.path)
        for item in items:
            if isinstance(item, A.Import):
                module.imports.append(item)
            elif isinstance(item, A.BlockDef):
                module.blocks.append(item)
            elif isinstance(item, (A.NetworkDef, A.NetworkAlias)):
                module.networks.append(item)
        return module

    def import_stmt(self, meta, items):
        return A.Import(_unescape(items[0]), self._span(meta))

    def block_def(self, meta, items):
        kind, name, params, body = items
        return A.BlockDef(str(kind.children[0]), str(name), params or [], body, self._span(meta))

    def network_def(self, meta, items):
        name, params, body = items
        return A.NetworkDef(str(name), params or [], body, self._span(meta))

    def network_alias(self, meta, items):
        name, target, args = items
        pos, kw = args if args else ([], [])
        return A.NetworkAlias(str(name), str(target), self._tspan(target), pos, kw, self._span(meta))

    def params(self, meta, items):
        return [p for p in items if p is not None]

    def param(self, meta, items):
        return A.Param(str(items[0]), items[1], self._span(meta))

    def body(self, meta, items):
        return [s for s in items if isinstance(s, A.Stmt)]

    # ---- statements
    def assign(self, meta, items):
        return A.Assign(self._span(meta), str(items[0]), self._tspan(items[0]), items[1])

    def expr_stmt(self, meta, items):
        return A.ExprStmt(self._span(meta), items[0])

    def input_stmt(self, meta, items):
        return A.InputStmt(self._span(meta), str(items[0]), items[1], list(items[2:]))

    def output_stmt(self, meta, items):
        return A.OutputStmt(self._span(meta), list(items))

    def output_item(self, meta, items):
        return A.OutputItem(str(items[0]), items[1], self._span(meta))

    def assert_stmt(self, meta, items):
        return A.AssertStmt(self._span(meta), items[0], items[1])

    def return_stmt(self, meta, items):
        return A.ReturnStmt(self._span(meta), items[0])

    def if_stmt(self, meta, items):
        branches = [(items[0], items[1])]
        rest = items[2:]
        otherwise = None
        for item in rest:
            if isinstance(item, tuple):
                branches.append(item)
            elif isinstance(item, list):
                otherwise = item
        return A.IfStmt(self._span(meta), branches, otherwise)

    def elif_clause(self, meta, items):
        return (items[0], items[1])

    def for_stmt(self, meta, items):
        return A.ForStmt(self._span(meta), items[0], items[1], items[2])

    def for_target(self, meta, items):
        return [str(t) for t in items]

    def repeat_stmt(self, meta, items):
        count, var, body = items
        return A.RepeatStmt(self._span(meta), count, str(var) if var is not None else None, body)

    def pipeline(self, meta, items):
        return A.Pipeline(list(items), self._span(meta))

    def stage(self, meta, items):
        return A.Stage(items[0], items[1], self._span(meta))

    def instance_name(self, meta, items):
        tok = items[0]
        if tok.type == "STRING":
            return A.Str(self._tspan(tok), _unescape(tok))
        return A.Name(self._tspan(tok), str(tok))

    def group(self, meta, items):
        kind, args, body = items
        kind = str(kind.children[0])
        pos, kw = args if args else ([], [])
        if kw:
            raise CnncError(Diagnostic("E201", f"{kind} takes only input tensors, not keyword arguments",
                                       kw[0].span))
        return A.Group(self._span(meta), str(kind), pos, body)

    # ---- expressions
    def number(self, meta, items):
        text = str(items[0])
        if len(text) > 40:  # no size or count needs more digits; int() of thousands of digits is refused
            raise CnncError(Diagnostic("E203", f"number with {len(text)} digits is too large", self._span(meta)))
        value = float(text) if any(c in text for c in ".eE") else int(text)
        return A.Num(self._span(meta), value)

    def string(self, meta, items):
        return A.Str(self._span(meta), _unescape(items[0]))

    def true(self, meta, items):
        return A.Const(self._span(meta), True)

    def false(self, meta, items):
        return A.Const(self._span(meta), False)

    def none(self, meta, items):
        return A.Const(self._span(meta), None)

    def name(self, meta, items):
        return A.Name(self._span(meta), str(items[0]))

    def tuple(self, meta, items):
        return A.TupleExpr(self._span(meta), [i for i in items if i is not None])

    def list(self, meta, items):
        return A.ListExpr(self._span(meta), [i for i in items if i is not None])

    def cond_expr(self, meta, items):
        then, test, otherwise = items
        return A.CondExpr(self._span(meta), test, then, otherwise)

    def or_expr(self, meta, items):
        if len(items) == 1:
            return items[0]
        return A.BoolOp(self._span(meta), "or", list(items))

    def and_expr(self, meta, items):
        if len(items) == 1:
            return items[0]
        return A.BoolOp(self._span(meta), "and", list(items))

    def not_expr(self, meta, items):
        return A.Unary(self._span(meta), "not", items[0])

    def compare(self, meta, items):
        if len(items) == 1:
            return items[0]
        return A.Compare(self._span(meta), str(items[1]), items[0], items[2])

    def binop_chain(self, meta, items):
        result = items[0]
        for i in range(1, len(items), 2):
            right = items[i + 1]
            span = Span(self.path, result.span.line, result.span.column, right.span.end_line,
                        right.span.end_column)
            result = A.BinOp(span, str(items[i]), result, right)
        return result

    def unary(self, meta, items):
        return A.Unary(self._span(meta), str(items[0]), items[1])

    def power(self, meta, items):
        if len(items) == 1:
            return items[0]
        return A.BinOp(self._span(meta), "**", items[0], items[-1])

    def getattr(self, meta, items):
        return A.GetAttr(self._span(meta), items[0], str(items[1]))

    def getitem(self, meta, items):
        return A.GetItem(self._span(meta), items[0], items[1])

    def call(self, meta, items):
        func, args = items
        pos, kw = args if args else ([], [])
        return A.Call(self._span(meta), func, pos, kw)

    def args(self, meta, items):
        pos, kw = [], []
        for item in items:
            if item is None:
                continue
            if isinstance(item, A.Kwarg):
                if any(k.name == item.name for k in kw):
                    raise CnncError(Diagnostic("E211", f"keyword argument '{item.name}' given twice",
                                               item.span))
                kw.append(item)
            else:
                if kw:
                    raise CnncError(Diagnostic("E100", "positional argument after a keyword argument",
                                               item.span, "put positional arguments first"))
                pos.append(item)
        return (pos, kw)

    def kwarg(self, meta, items):
        return A.Kwarg(str(items[0]), items[1], self._span(meta))


