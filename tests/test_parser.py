"""The parser: statements, expressions, spans, and the syntax tree it builds."""

import pytest

from cnnc import ast as A
from cnnc.errors import CnncError
from cnnc.parser import parse


def net(body: str) -> A.NetworkDef:
    return parse("network n() {\n" + body + "\n}\n", "t.cnn").networks[0]


def test_statements_and_spans():
    n = net("    input x: (N, 3, 8, 8)\n    c1 = conv(4, 3, padding=1)\n    relu(); maxpool(2)")
    assert [type(s).__name__ for s in n.body] == ["InputStmt", "Assign", "ExprStmt", "ExprStmt"]
    assign = n.body[1]
    assert (assign.span.line, assign.span.column) == (3, 5)
    call = assign.value.stages[0].expr
    assert isinstance(call, A.Call) and call.func.id == "conv"
    assert [a.value for a in call.args] == [4, 3]
    assert call.kwargs[0].name == "padding" and (call.kwargs[0].span.line, call.kwargs[0].span.column) == (3, 21)


def test_precedence_and_operators():
    e = net("    v = 1 + 2 * 3 ** 2 // 4 - -1").body[0].value.stages[0].expr
    # 1 + ((2 * (3 ** 2)) // 4) - (-1)
    assert isinstance(e, A.BinOp) and e.op == "-"
    assert e.left.op == "+" and e.left.right.op == "//" and e.left.right.left.right.op == "**"
    assert isinstance(e.right, A.Unary)


def test_conditional_expression_and_boolean_ops():
    e = net("    v = 3 if a > 1 and not b or c else 4").body[0].value.stages[0].expr
    assert isinstance(e, A.CondExpr)
    assert isinstance(e.test, A.BoolOp) and e.test.op == "or"


def test_tuples_lists_and_trailing_commas():
    body = net("    a = (1,)\n    b = (1, 2,)\n    c = [1, 2, 3,]\n    d = ()\n    e = (1)").body
    kinds = [type(s.value.stages[0].expr).__name__ for s in body]
    assert kinds == ["TupleExpr", "TupleExpr", "ListExpr", "TupleExpr", "Num"]


def test_newlines_inside_brackets_continue_the_statement():
    body = net("    c = conv(16,\n        3,   # a comment\n        padding=1)\n    x = [1,\n 2]").body
    assert len(body) == 2


def test_pipeline_groups_and_instance_names():
    s = net('    y = x -> conv(8, 1) as "c{i}" -> seq { relu() } -> relu()').body[0]
    stages = s.value.stages
    assert len(stages) == 4
    assert isinstance(stages[1].instance_name, A.Str) and stages[1].instance_name.value == "c{i}"
    assert isinstance(stages[2].expr, A.Group) and stages[2].expr.kind == "seq"


def test_control_flow():
    body = net("""    if a { b = 1 } elif c { b = 2 } else { b = 3 }
    for (i, w) in enumerate([1, 2]) { relu() }
    repeat 3 as k { relu() }
    repeat 2 { relu() }""").body
    assert isinstance(body[0], A.IfStmt) and len(body[0].branches) == 2 and body[0].otherwise
    assert isinstance(body[1], A.ForStmt) and body[1].targets == ["i", "w"]
    assert isinstance(body[2], A.RepeatStmt) and body[2].var == "k"
    assert body[3].var is None


def test_top_level_items():
    m = parse('import "a.cnn"\nblock b(x, k=3) { relu() }\nseq s(x) { relu() }\n'
              'network n(c=1) { input x: (N, 1) }\nnetwork m = n(c=2)\n', "t.cnn")
    assert [i.path for i in m.imports] == ["a.cnn"]
    assert [(b.kind, b.name) for b in m.blocks] == [("block", "b"), ("seq", "s")]
    assert isinstance(m.networks[1], A.NetworkAlias) and m.networks[1].target == "n"


def test_keywords_are_soft_where_unambiguous():
    # `block` is a keyword only at the top level: EfficientNet's instances are named `block`.
    body = net("    block = seq { relu() }").body
    assert body[0].target == "block"


def test_string_escapes():
    e = net('    s = "a\\"b\\\\c"').body[0].value.stages[0].expr
    assert e.value == 'a"b\\c'


@pytest.mark.parametrize("src,line,col", [
    ("network n() {\n  conv(3\n}\n", 3, 1),
    ("network n() {\n  a = = 3\n}\n", 2, 7),
    ("network n() {\n  a = 'x'\n}\n", 2, 7),
    ("network n() {\n  relu() relu()\n}\n", 2, 10),
])
def test_syntax_errors_are_located(src, line, col):
    with pytest.raises(CnncError) as e:
        parse(src, "bad.cnn")
    d = e.value.diagnostics[0]
    assert d.code == "E100"
    assert (d.span.path, d.span.line, d.span.column) == ("bad.cnn", line, col)


def test_unclosed_brace_at_end_of_file():
    with pytest.raises(CnncError) as e:
        parse("network n() {\n  relu()\n", "bad.cnn")
    assert "end of file" in e.value.diagnostics[0].message
