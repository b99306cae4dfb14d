"""The syntax tree of a .cnn file: plain dataclasses, each carrying the span it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .errors import Span

# ---- expressions ---------------------------------------------------------------------------------


@dataclass
class Expr:
    span: Span


@dataclass
class Num(Expr):
    value: int | float


@dataclass
class Str(Expr):
    value: str


@dataclass
class Const(Expr):
    value: object  # True, False or None


@dataclass
class Name(Expr):
    id: str


@dataclass
class TupleExpr(Expr):
    items: list[Expr]


@dataclass
class ListExpr(Expr):
    items: list[Expr]


@dataclass
class BinOp(Expr):
    op: str
    left: Expr
    right: Expr


@dataclass
class Unary(Expr):
    op: str
    operand: Expr


@dataclass
class BoolOp(Expr):
    op: str  # "and" | "or"
    items: list[Expr]


@dataclass
class Compare(Expr):
    op: str
    left: Expr
    right: Expr


@dataclass
class CondExpr(Expr):
    test: Expr
    then: Expr
    otherwise: Expr


@dataclass
class GetAttr(Expr):
    obj: Expr
    attr: str


@dataclass
class GetItem(Expr):
    obj: Expr
    index: Expr


@dataclass
class Kwarg:
    name: str
    value: Expr
    span: Span


@dataclass
class Call(Expr):
    func: Expr
    args: list[Expr]
    kwargs: list[Kwarg]


@dataclass
class Group(Expr):
    """An inline group: `seq { ... }` (children numbered) or `group { ... }` (children named)."""

    kind: str
    args: list[Expr]
    body: list["Stmt"]


# ---- statements -----------------------------------------------------------------------------------


@dataclass
class Stmt:
    span: Span


@dataclass
class Stage:
    expr: Expr
    instance_name: Expr | None  # Name or Str (a template with {expr} parts)
    span: Span


@dataclass
class Pipeline:
    stages: list[Stage]
    span: Span


@dataclass
class Assign(Stmt):
    target: str
    target_span: Span
    value: Pipeline


@dataclass
class ExprStmt(Stmt):
    value: Pipeline


@dataclass
class InputStmt(Stmt):
    name: str
    shape: Expr
    options: list[Kwarg]


@dataclass
class OutputItem:
    name: str
    value: Pipeline | None
    span: Span


@dataclass
class OutputStmt(Stmt):
    items: list[OutputItem]


@dataclass
class AssertStmt(Stmt):
    test: Expr
    message: Expr | None


@dataclass
class ReturnStmt(Stmt):
    value: Expr


@dataclass
class IfStmt(Stmt):
    branches: list[tuple[Expr, list[Stmt]]]
    otherwise: list[Stmt] | None


@dataclass
class ForStmt(Stmt):
    targets: list[str]
    iterable: Expr
    body: list[Stmt]


@dataclass
class RepeatStmt(Stmt):
    count: Expr
    var: str | None
    body: list[Stmt]


# ---- top level ------------------------------------------------------------------------------------


@dataclass
class Param:
    name: str
    default: Expr | None
    span: Span


@dataclass
class BlockDef:
    kind: str  # "block" (children named) | "seq" (children numbered)
    name: str
    params: list[Param]
    body: list[Stmt]
    span: Span


@dataclass
class NetworkDef:
    name: str
    params: list[Param]
    body: list[Stmt]
    span: Span


@dataclass
class NetworkAlias:
    name: str
    target: str
    target_span: Span
    args: list[Expr]
    kwargs: list[Kwarg]
    span: Span


@dataclass
class Import:
    path: str
    span: Span


@dataclass
class Module:
    path: str
    imports: list[Import] = field(default_factory=list)
    blocks: list[BlockDef] = field(default_factory=list)
    networks: list[Union[NetworkDef, NetworkAlias]] = field(default_factory=list)
