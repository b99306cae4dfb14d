"""The `expand` pass: syntax tree -> graph IR.

Requires: parsed modules (the spec and everything it imports).
Guarantees: a flat graph of op nodes in creation (topological) order, with blocks, `repeat`, `for` and
`if` expanded, every instance named hierarchically (`layer1.0.conv1`), every tensor's per-sample shape
inferred with the registry's shape rules (the language lets a block read `x.channels`, so shapes are
known while expanding), every parameter and buffer declared as a named graph constant in definition
order, and every user error reported as a located diagnostic — all independent errors of a spec at once.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import re
from dataclasses import dataclass, field

from . import ast as A
from .errors import CnncError, Diagnostic, Span
from .graph import Graph
from .ops import AttrError, OpDef, ShapeError, fmt_shape, lookup, REGISTRY, ALIASES
from .parser import parse_expression, parse_file

MAX_NODES = 200_000  # a spec that expands beyond this is refused (E221)
MAX_DEPTH = 64  # nested block instances (recursion)
MAX_REPEAT = 100_000
MAX_ERRORS = 50
MAX_NAME = 1_000  # characters of an instance name or name template


@functools.lru_cache(maxsize=1024)
def _template_part(text: str, span: Span) -> A.Expr:
    """A `{...}` part of an instance-name template, parsed once (a template in a loop of 100,000 layers would
    otherwise be parsed 100,000 times). Evaluation never mutates the expression, so sharing it is safe."""
    return parse_expression(text, span)


def _names_read(node) -> set[str]:
    """Every name an expression or pipeline mentions."""
    found, todo = set(), [node]
    while todo:
        n = todo.pop()
        if isinstance(n, A.Name):
            found.add(n.id)
        if isinstance(n, (list, tuple)):
            todo.extend(n)
        elif hasattr(n, "__dataclass_fields__"):
            todo.extend(v for v in vars(n).values() if isinstance(v, (list, tuple)) or hasattr(v, "__dataclass_fields__"))
    return found


def _forward_reference(d: Diagnostic, stmt: A.Stmt, later: list[A.Stmt]) -> Diagnostic:
    """An undefined name that a later statement of the same body defines: a cycle (E220) when that
    definition reads, directly or through others defined later, what this statement defines; otherwise
    a use before the definition (E210, with a hint)."""
    m = re.fullmatch(r"undefined name '(\w+)'", d.message) if d.code == "E210" else None
    defs = {s.target: s for s in later if isinstance(s, A.Assign)}
    if m and isinstance(stmt, A.Assign) and m.group(1) == stmt.target:
        return Diagnostic("E220", f"cycle: '{stmt.target}' reads itself before it is defined", d.span,
                          "a network is acyclic: a layer reads only tensors computed before it")
    if m is None or m.group(1) not in defs:
        return d
    name = m.group(1)
    target = stmt.target if isinstance(stmt, A.Assign) else None
    cycle = None
    if target is not None:  # breadth-first through later definitions, back to `target`
        parent, queue = {name: None}, [name]
        while queue and cycle is None:
            cur = queue.pop(0)
            for read in sorted(_names_read(defs[cur].value)):
                if read == target:
                    cycle, node = [], cur
                    while node is not None:
                        cycle.append(node)
                        node = parent[node]
                    cycle.reverse()  # name -> ... -> cur
                    break
                if read in defs and read not in parent:
                    parent[read] = cur
                    queue.append(read)
    where = defs[name].span
    if cycle:
        return Diagnostic("E220", f"cycle: {' -> '.join([target] + cycle)} -> {target}: '{target}' reads "
                          f"'{name}', which is computed from '{target}'", d.span,
                          "a network is acyclic: a layer reads only tensors computed before it",
                          [(where, f"'{name}' is defined here")])
    return Diagnostic("E210", f"'{name}' is used before it is defined (line {where.line})", d.span,
                      "move this statement below the definition", [(where, f"'{name}' is defined here")])


# ---- values of the language ------------------------------------------------------------------------

class _Poison:
    """The value of anything computed from an already-reported error: silences cascades."""

    def __repr__(self):
        return "<error>"


POISON = _Poison()


class _Batch:
    def __repr__(self):
        return "N"


BATCH = _Batch()


@dataclass(eq=False)
class Tensor:
    node: str | None  # None: poisoned (its producer failed)
    shape: tuple | None
    span: Span | None = None

    @property
    def poisoned(self) -> bool:
        return self.node is None


POISON_TENSOR = Tensor(None, None)


@dataclass(eq=False)
class BlockRef:
    defn: A.BlockDef
    module: "ModuleEnv"


@dataclass(eq=False)
class OpRef:
    op: OpDef


@dataclass(eq=False)
class Builtin:
    name: str
    fn: object


class LimitError(CnncError):
    """An expansion limit: stops the whole expansion at once (never caught per statement)."""


MAX_STEPS = 500_000  # statements executed in all (loops included): bounds any expansion's time (about a second)


class _Return(Exception):
    def __init__(self, value):
        self.value = value


def _is_tensorish(v) -> bool:
    return isinstance(v, Tensor) or (isinstance(v, (list, tuple)) and len(v) > 0
                                     and all(isinstance(t, Tensor) for t in v))


def _flatten_tensors(v) -> list[Tensor]:
    return [v] if isinstance(v, Tensor) else list(v)


def _type_name(v) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, Tensor):
        return "tensor"
    if isinstance(v, tuple):
        return "tuple"
    if isinstance(v, list):
        return "list"
    if v is None:
        return "none"
    if isinstance(v, (BlockRef, OpRef, Builtin)):
        return "callable"
    return type(v).__name__


def _a(v) -> str:
    """The type with its article: 'an integer', 'a tuple', 'none'."""
    name = _type_name(v)
    return name if v is None else ("an " if name[0] in "aeiou" else "a ") + name


# ---- builtins ------------------------------------------------------------------------------------------

def _make_divisible(v, divisor=8, min_value=None):
    """Round channels to a multiple of `divisor`, never below 90% of v (MobileNet/EfficientNet rule)."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


MAX_SEQUENCE = 1_000_000  # longest list, tuple or string a spec may build


def _range(*args):
    r = range(*args)
    if len(r) > MAX_SEQUENCE:
        raise ValueError(f"range of {len(r):,} values exceeds the limit of {MAX_SEQUENCE:,}")
    return tuple(r)


BUILTINS = {
    "min": min, "max": max, "abs": abs, "int": int, "float": float, "round": round, "len": len,
    "ceil": lambda v: int(math.ceil(v)), "floor": lambda v: int(math.floor(v)), "range": _range,
    "make_divisible": _make_divisible, "str": str, "sum": sum, "sqrt": math.sqrt,
    "enumerate": lambda seq, start=0: tuple(enumerate(seq, start)), "zip": lambda *s: tuple(zip(*s)),
}


# ---- modules and imports -----------------------------------------------------------------------------------

LIBRARY_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "specs")


def library_dir() -> str:
    """The spec library: `specs/` of a source checkout, else the installed `cnnc.specs` package."""
    if os.path.isdir(LIBRARY_DIR):
        return LIBRARY_DIR
    from importlib import resources
    return str(resources.files("cnnc.specs"))


@dataclass(eq=False)
class ModuleEnv:
    path: str
    ast: A.Module
    blocks: dict[str, BlockRef] = field(default_factory=dict)
    networks: dict[str, object] = field(default_factory=dict)  # name -> (NetworkDef|NetworkAlias, ModuleEnv)
    own_networks: list[str] = field(default_factory=list)


class Loader:
    """Parses a spec and its imports. Imports resolve relative to the importing file, then the library,
    then `--include` folders; a file outside those roots is refused (E232)."""

    def __init__(self, include: tuple[str, ...] = ()):
        self.include = [os.path.realpath(p) for p in include]
        self.cache: dict[str, ModuleEnv] = {}
        self.diagnostics: list[Diagnostic] = []

    def roots(self, main_dir: str) -> list[str]:
        return [os.path.realpath(main_dir), os.path.realpath(library_dir()), *self.include]

    def load(self, path: str) -> ModuleEnv:
        real = os.path.realpath(path)
        self.main_dir = os.path.dirname(real)
        return self._load(path, [])

    def _load(self, path: str, stack: list[tuple[str, Span | None]]) -> ModuleEnv:
        real = os.path.realpath(path)
        if real in self.cache:
            return self.cache[real]
        module = parse_file(path)
        env = ModuleEnv(path, module)
        self.cache[real] = env
        stack = stack + [(real, None)]
        for imp in module.imports:
            target = self._resolve(imp, path)
            if target is None:
                continue
            if any(real_t == target for real_t, _ in stack):
                chain = " -> ".join(os.path.basename(p) for p, _ in stack) + " -> " + os.path.basename(target)
                self.diagnostics.append(Diagnostic("E231", f"import cycle: {chain}", imp.span,
                                                   "move the shared blocks into a third file that both import"))
                continue
            try:
                sub = self._load(target, stack)
            except CnncError as err:
                self.diagnostics.extend(err.diagnostics)
                continue
            for name, ref in sub.blocks.items():
                if ref.module is sub:  # only what the imported file defines itself
                    self._define_block(env, name, ref, imp.span)
            for name in sub.own_networks:
                env.networks.setdefault(name, sub.networks[name])
        for b in module.blocks:
            if lookup(b.name, False) is not None:
                self.diagnostics.append(Diagnostic("E212", f"block '{b.name}' shadows the built-in op '{b.name}'",
                                                   b.span, "choose another name for the block"))
                continue
            if b.name in BUILTINS:
                self.diagnostics.append(Diagnostic("E212", f"block '{b.name}' shadows the built-in function "
                                                   f"'{b.name}'", b.span, "choose another name for the block"))
                continue
            seen = [p.name for p in b.params]
            for i, p in enumerate(b.params):
                if p.name in seen[:i]:
                    self.diagnostics.append(Diagnostic("E211", f"parameter '{p.name}' appears twice in block "
                                                       f"'{b.name}'", p.span))
            self._define_block(env, b.name, BlockRef(b, env), b.span)
        for n in module.networks:
            if n.name in env.own_networks:
                self.diagnostics.append(Diagnostic("E211", f"network '{n.name}' is defined twice", n.span))
                continue
            env.networks[n.name] = (n, env)
            env.own_networks.append(n.name)
        return env

    def _define_block(self, env: ModuleEnv, name: str, ref: BlockRef, span: Span):
        prev = env.blocks.get(name)
        if prev is not None and prev.defn is not ref.defn:
            self.diagnostics.append(Diagnostic(
                "E211", f"block '{name}' is defined twice", span,
                notes=[(prev.defn.span, "first defined here")]))
            return
        env.blocks[name] = ref

    def _resolve(self, imp: A.Import, importer: str) -> str | None:
        rel = imp.path
        bases = [os.path.dirname(os.path.abspath(importer)), library_dir(), *self.include]
        for base in bases:
            cand = os.path.realpath(os.path.join(base, rel))
            if os.path.isfile(cand):
                roots = self.roots(self.main_dir)
                if not any(cand == r or cand.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
                    self.diagnostics.append(Diagnostic(
                        "E232", f"import \"{rel}\" resolves to {cand}, outside the allowed folders", imp.span,
                        "imports may read the spec's folder, the cnnc library and --include folders"))
                    return None
                return cand
        self.diagnostics.append(Diagnostic(
            "E230", f"cannot find import \"{rel}\"", imp.span,
            f"looked in {', '.join(bases)}; add a folder with --include"))
        return None


# ---- naming scopes ------------------------------------------------------------------------------------------

class Frame:
    """Names instances inside one block instance or group: numbered (`seq`, like torch's Sequential,
    which numbers every child, parameterless ones included) or named (`block`, like an nn.Module)."""

    def __init__(self, prefix: str, numbered: bool, scope: list, prev: Tensor | None = None):
        self.prefix = prefix
        self.numbered = numbered
        self.counter = 0
        self.used: dict[str, Span | None] = {}
        self.auto: dict[str, int] = {}
        self.scope = scope
        self.prev = prev

    def allocate(self, explicit: str | None, kind: str, span: Span | None) -> str:
        if self.numbered:
            local = explicit if explicit is not None else str(self.counter)
            self.counter += 1
        elif explicit is not None:
            local = explicit
        else:
            k = self.auto.get(kind, 0)
            while True:
                k += 1
                local = f"{kind}#{k}"  # '#' cannot appear in a user's name: no clash possible
                if local not in self.used:
                    break
            self.auto[kind] = k
        if local in self.used:
            first = self.used[local]
            raise CnncError(Diagnostic(
                "E211", f"duplicate instance name '{local}'" + (f" in {self.prefix}" if self.prefix else ""),
                span, "every layer in a block needs its own name; use `as \"name\"` to set one",
                notes=[(first, "first used here")] if first else []))
        self.used[local] = span
        return f"{self.prefix}.{local}" if self.prefix else local


class Env:
    def __init__(self, parent: "Env | None" = None, module: ModuleEnv | None = None):
        self.vars: dict[str, object] = {}
        self.parent = parent
        self.module = module if module is not None else (parent.module if parent else None)
        self.protected: dict[str, str] = {}  # name -> why it may not be rebound

    def lookup(self, name: str):
        env = self
        while env is not None:
            if name in env.vars:
                return env.vars[name], True
            env = env.parent
        return None, False

    def is_protected(self, name: str) -> str | None:
        env = self
        while env is not None:
            if name in env.protected:
                return env.protected[name]
            env = env.parent
        return None

    def visible_names(self) -> list[str]:
        names, env = set(), self
        while env is not None:
            names |= set(env.vars)
            env = env.parent
        return sorted(names)


class _Ctx:
    """What a shape rule may do besides returning a shape: warn."""

    def __init__(self, elab: "Expander", span: Span | None):
        self.elab, self.span = elab, span

    def warn(self, message: str, hint: str | None = None):
        self.elab.warn(Diagnostic("W100", message, self.span, hint, severity="warning"))


# ---- the expander ---------------------------------------------------------------------------------------------

class Expander:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        self._seen: set = set()
        self.depth = 0
        self.steps = 0
        self.network_params: set[str] = set()

    # -- diagnostics
    def error(self, diags: list[Diagnostic]):
        for d in diags:
            key = (d.code, d.message, d.span)
            if key not in self._seen:
                self._seen.add(key)
                self.errors.append(d)
        if len(self.errors) >= MAX_ERRORS:
            raise LimitError(self.errors + [Diagnostic("E221", f"stopping after {MAX_ERRORS} errors")])

    def warn(self, d: Diagnostic):
        key = (d.code, d.span, d.message.split(" input ")[-1].split(" of ")[0])  # once per place and axis
        if key not in self._seen:
            self._seen.add(key)
            self.warnings.append(d)

    # -- entry point
    def network(self, defn, module: ModuleEnv, overrides: dict, override_span: Span | None = None):
        bound_args: dict = {}
        if isinstance(defn, A.NetworkAlias):
            target = module.networks.get(defn.target)
            if target is None:
                raise CnncError(Diagnostic("E210", f"no network named '{defn.target}' to alias", defn.target_span,
                                           _did_you_mean(defn.target, list(module.networks))))
            tdef, tmod = target
            if isinstance(tdef, A.NetworkAlias):
                raise CnncError(Diagnostic("E241", "an alias must name a network definition, not another alias",
                                           defn.target_span))
            genv = self.module_env(module)
            if len(defn.args) > len(tdef.params):
                raise CnncError(Diagnostic("E205", f"network '{tdef.name}' takes {len(tdef.params)} parameters, "
                                           f"{len(defn.args)} given", defn.span))
            for p, a in zip(tdef.params, defn.args):
                bound_args[p.name] = self.eval(a, genv)
            for kw in defn.kwargs:
                if kw.name not in {p.name for p in tdef.params}:
                    raise CnncError(Diagnostic("E201", f"network '{tdef.name}' has no parameter '{kw.name}'", kw.span,
                                               _did_you_mean(kw.name, [p.name for p in tdef.params])))
                bound_args[kw.name] = self.eval(kw.value, genv)
            self.graph.g.graph["name"] = defn.name
            defn, module = tdef, tmod
        else:
            self.graph.g.graph["name"] = defn.name
        env = Env(parent=self.module_env(module))
        names = [p.name for p in defn.params]
        for k in overrides:
            if k not in names:
                raise CnncError(Diagnostic("E201", f"--set {k}: network '{defn.name}' has no parameter '{k}'",
                                           override_span, "its parameters are: " + (", ".join(names) or "none")))
        for p in defn.params:
            if p.name in overrides:
                value = overrides[p.name]
            elif p.name in bound_args:
                value = bound_args[p.name]
            elif p.default is not None:
                value = self.eval(p.default, env)
            else:
                raise CnncError(Diagnostic("E204", f"network parameter '{p.name}' has no default and no value",
                                           p.span, f"give it a default or pass --set {p.name}=..."))
            env.vars[p.name] = value
            env.protected[p.name] = "network parameter"
        self.network_params = set(names)
        self.graph.g.graph["params"] = {p.name: env.vars[p.name] for p in defn.params
                                        if isinstance(env.vars[p.name], (int, float, str, bool, tuple))}
        frame = Frame("", False, [])
        self.in_network_root = True
        self.exec_body(defn.body, env, frame, root=True)
        if not self.graph.outputs and not self.errors:
            if frame.prev is None or not isinstance(frame.prev, Tensor):
                raise CnncError(Diagnostic("E241", f"network '{defn.name}' produces no output", defn.span,
                                           "end it with a layer, or write `output NAME`"))
            if not frame.prev.poisoned:
                self.graph.outputs["output"] = frame.prev.node
        if not self.graph.inputs and not self.errors:
            raise CnncError(Diagnostic("E241", f"network '{defn.name}' declares no input", defn.span,
                                       "start it with `input x: (N, 3, 224, 224)`"))
        if self.errors:
            raise CnncError(self.errors)

    def module_env(self, module: ModuleEnv) -> Env:
        env = Env(module=module)
        env.vars.update({name: ref for name, ref in module.blocks.items()})
        return env

    # -- statements
    def exec_body(self, body: list[A.Stmt], env: Env, frame: Frame, root: bool = False):
        for index, stmt in enumerate(body):
            self.steps += 1
            if self.steps > MAX_STEPS:
                raise LimitError(self.errors + [Diagnostic(
                    "E221", f"expansion takes more than {MAX_STEPS:,} statements", stmt.span,
                    "is a loop or a recursion unbounded?")])
            try:
                self.exec_stmt(stmt, env, frame, root)
            except (_Return, LimitError):
                raise
            except CnncError as err:
                self.error([_forward_reference(d, stmt, body[index + 1:]) for d in err.diagnostics])
                if isinstance(stmt, A.Assign):
                    env.vars[stmt.target] = POISON_TENSOR
                frame.prev = POISON_TENSOR
            except RecursionError:
                self.error([Diagnostic("E221", "expansion nested too deeply", stmt.span)])
                raise CnncError(self.errors)

    def exec_stmt(self, stmt: A.Stmt, env: Env, frame: Frame, root: bool):
        if isinstance(stmt, A.Assign):
            why = env.is_protected(stmt.target)
            if why:
                raise CnncError(Diagnostic("E212", f"'{stmt.target}' shadows the {why} of the same name",
                                           stmt.target_span,
                                           f"pick another name, or change it with --set {stmt.target}=..."
                                           if why == "network parameter" else "pick another name"))
            value = self.pipeline(stmt.value, env, frame, target=stmt.target)
            env.vars[stmt.target] = value
            if isinstance(value, Tensor):
                frame.prev = value
        elif isinstance(stmt, A.ExprStmt):
            value = self.pipeline(stmt.value, env, frame)
            if isinstance(value, Tensor):
                frame.prev = value
        elif isinstance(stmt, A.InputStmt):
            self.input(stmt, env, frame, root)
        elif isinstance(stmt, A.OutputStmt):
            self.output(stmt, env, frame, root)
        elif isinstance(stmt, A.AssertStmt):
            ok = self.eval(stmt.test, env)
            if ok is POISON:
                return
            if not ok:
                message = "assertion failed"
                if stmt.message is not None:
                    m = self.eval(stmt.message, env)
                    if m is not POISON:
                        message = str(m)
                raise CnncError(Diagnostic("E240", message, stmt.span))
        elif isinstance(stmt, A.ReturnStmt):
            if root:
                raise CnncError(Diagnostic("E241", "`return` is for blocks; a network uses `output`", stmt.span))
            raise _Return(self.eval(stmt.value, env))
        elif isinstance(stmt, A.IfStmt):
            for test, body in stmt.branches:
                cond = self.eval(test, env)
                if cond is POISON:
                    return
                if cond:
                    self.exec_body(body, env, frame, root)
                    return
            if stmt.otherwise is not None:
                self.exec_body(stmt.otherwise, env, frame, root)
        elif isinstance(stmt, A.ForStmt):
            seq = self.eval(stmt.iterable, env)
            if seq is POISON:
                return
            if not isinstance(seq, (list, tuple)):
                raise CnncError(Diagnostic("E202", f"`for` needs a list or tuple, found {_type_name(seq)}",
                                           stmt.iterable.span, "for example: for (c, n) in [(64, 2), (128, 2)] {...}"))
            self._check_loop_vars(stmt.targets, env, stmt.span)
            try:
                self._for_loop(stmt, seq, env, frame, root)
            finally:  # loop variables live only inside their loop
                for name in stmt.targets:
                    env.vars.pop(name, None)
        elif isinstance(stmt, A.RepeatStmt):
            self._repeat(stmt, env, frame, root)
        else:  # pragma: no cover - the parser produces nothing else
            raise CnncError(Diagnostic("E900", f"unknown statement {type(stmt).__name__}", stmt.span))

    def _for_loop(self, stmt, seq, env, frame, root):
        for item in seq:
            if len(stmt.targets) == 1:
                env.vars[stmt.targets[0]] = item
            else:
                if not isinstance(item, (list, tuple)) or len(item) != len(stmt.targets):
                    raise CnncError(Diagnostic(
                        "E202", f"cannot unpack {item!r} into {len(stmt.targets)} names "
                        f"({', '.join(stmt.targets)})", stmt.iterable.span))
                for name, v in zip(stmt.targets, item):
                    env.vars[name] = v
            self.exec_body(stmt.body, env, frame, root)

    def _repeat(self, stmt, env, frame, root):
        count = self.eval(stmt.count, env)
        if count is POISON:
            return
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise CnncError(Diagnostic("E202", f"repeat count must be a non-negative integer, found {count!r}",
                                       stmt.count.span))
        if count > MAX_REPEAT:
            raise CnncError(Diagnostic("E221", f"repeat {count} exceeds the expansion limit of {MAX_REPEAT}",
                                       stmt.count.span))
        if stmt.var:
            self._check_loop_vars([stmt.var], env, stmt.span)
        try:
            for i in range(count):
                if stmt.var:
                    env.vars[stmt.var] = i
                self.exec_body(stmt.body, env, frame, root)
        finally:
            if stmt.var:
                env.vars.pop(stmt.var, None)

    def _check_loop_vars(self, names, env, span):
        for name in names:
            if env.is_protected(name):
                raise CnncError(Diagnostic("E212", f"loop variable '{name}' shadows a network parameter", span,
                                           "use a fresh name for the loop variable"))
            if name in env.vars:
                raise CnncError(Diagnostic("E212", f"loop variable '{name}' shadows an existing name", span,
                                           "use a fresh name for the loop variable"))

    def input(self, stmt: A.InputStmt, env: Env, frame: Frame, root: bool):
        if not root:
            raise CnncError(Diagnostic("E241", "`input` may only appear in a network, not in a block", stmt.span,
                                       "blocks receive tensors as parameters"))
        shape = self.eval(stmt.shape, env)
        if shape is POISON:
            return
        if not isinstance(shape, (tuple, list)) or len(shape) < 2 or shape[0] is not BATCH or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape[1:]):
            raise CnncError(Diagnostic("E241", f"input shape must be (N, ...) with positive sizes, found {shape!r}",
                                       stmt.shape.span, "for example: input x: (N, 3, 224, 224)"))
        info = {"shape": tuple(shape[1:])}
        for kw in stmt.options:
            if kw.name not in ("mean", "std", "labels", "scale", "layout"):
                raise CnncError(Diagnostic("E201", f"input has no option '{kw.name}'", kw.span,
                                           "input options: mean, std, scale, labels"))
            v = self.eval(kw.value, env)
            if kw.name in ("mean", "std"):
                ok = isinstance(v, (tuple, list)) and len(v) == shape[1] and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
                if not ok:
                    raise CnncError(Diagnostic("E202", f"input {kw.name} must give one number per channel "
                                               f"({shape[1]}), found {v!r}", kw.span))
                v = tuple(float(x) for x in v)
                if kw.name == "std" and any(x <= 0 for x in v):
                    raise CnncError(Diagnostic("E203", "input std must be positive", kw.span))
            info[kw.name] = v
        name = frame.allocate(stmt.name, "input", stmt.span)
        self.graph.add_node(name, "input", {}, [], stmt.span, [], shape=tuple(shape[1:]))
        self.graph.inputs.append(name)
        self.graph.g.graph["input_info"][name] = info
        t = Tensor(name, tuple(shape[1:]), stmt.span)
        env.vars[stmt.name] = t
        frame.prev = t

    def output(self, stmt: A.OutputStmt, env: Env, frame: Frame, root: bool):
        if not root:
            raise CnncError(Diagnostic("E241", "`output` may only appear in a network; a block uses `return`",
                                       stmt.span))
        for item in stmt.items:
            if item.name in self.graph.outputs:
                raise CnncError(Diagnostic("E211", f"output '{item.name}' is declared twice", item.span))
            if item.value is not None:
                value = self.pipeline(item.value, env, frame, target=item.name)
                env.vars[item.name] = value
            else:
                value, found = env.lookup(item.name)
                if not found:
                    raise CnncError(Diagnostic("E210", f"undefined name '{item.name}'", item.span,
                                               _did_you_mean(item.name, env.visible_names())))
            if not isinstance(value, Tensor):
                raise CnncError(Diagnostic("E213", f"output '{item.name}' must be a tensor, found "
                                           f"{_type_name(value)}", item.span))
            if value.poisoned:
                continue
            self.graph.outputs[item.name] = value.node
            frame.prev = value

    # -- pipelines and instances
    def pipeline(self, pl: A.Pipeline, env: Env, frame: Frame, target: str | None = None):
        value = None
        n = len(pl.stages)
        for i, st in enumerate(pl.stages):
            explicit = self.instance_name(st.instance_name, env) if st.instance_name is not None else None
            if explicit is None and n == 1 and target is not None:
                explicit = target  # a single call takes the statement's name as its instance name
            piped = None
            if i > 0:
                if value is POISON or (isinstance(value, Tensor) and value.poisoned):
                    piped = POISON_TENSOR
                elif not _is_tensorish(value):
                    raise CnncError(Diagnostic("E213", f"'->' feeds a tensor into the next layer, but the left side "
                                               f"is {_a(value)}", pl.stages[i - 1].span))
                else:
                    piped = value
            value = self.stage(st, env, frame, piped, explicit, first=(i == 0))
        return value

    def instance_name(self, expr: A.Expr, env: Env) -> str:
        if isinstance(expr, A.Name):
            return expr.id
        text = expr.value
        if len(text) > MAX_NAME:
            raise CnncError(Diagnostic("E203", f"instance name of {len(text):,} characters is too long "
                                       f"(at most {MAX_NAME:,})", expr.span))
        out, pos = [], 0
        for m in re.finditer(r"\{([^{}]*)\}", text):
            out.append(text[pos:m.start()])
            value = self.eval(_template_part(m.group(1), expr.span), env)
            out.append(str(value))
            pos = m.end()
        out.append(text[pos:])
        name = "".join(out)
        if not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", name):
            raise CnncError(Diagnostic("E202", f"instance name {name!r} is not valid", expr.span,
                                       "names use letters, digits and '_'"))
        return name

    def stage(self, st: A.Stage, env: Env, frame: Frame, piped, explicit, first):
        expr = st.expr
        if isinstance(expr, A.Group):
            return self.group(expr, env, frame, piped, explicit)
        if isinstance(expr, A.Call):
            callee = self.resolve_callee(expr.func, env)
            if isinstance(callee, OpRef):
                return self.op_call(callee.op, expr, env, frame, piped, explicit)
            if isinstance(callee, BlockRef):
                return self.block_call(callee, expr, env, frame, piped, explicit)
        if not first:
            raise CnncError(Diagnostic("E213", "after '->' comes a layer or block call", expr.span))
        if st.instance_name is not None:
            raise CnncError(Diagnostic("E213", "`as` names a layer instance; this is a plain value",
                                       st.instance_name.span))
        return self.eval(expr, env)

    def resolve_callee(self, func: A.Expr, env: Env):
        if isinstance(func, A.Name):
            value, found = env.lookup(func.id)
            if found and isinstance(value, (OpRef, BlockRef, Builtin)):
                return value
            if found and isinstance(value, str) and lookup(value, False) is not None:
                return OpRef(lookup(value, False))  # act="relu" passed as a string
            op = lookup(func.id, False)
            if op is not None:
                return OpRef(op)
            ref = env.module.blocks.get(func.id) if env.module else None
            if ref is not None:
                return ref
            if func.id in BUILTINS:
                return Builtin(func.id, BUILTINS[func.id])
            if found:
                raise CnncError(Diagnostic("E213", f"'{func.id}' is {_a(value)}, not an op or block",
                                           func.span))
            choices = sorted({n for n, op in REGISTRY.items() if not op.internal} | set(ALIASES) | set(env.module.blocks if env.module else ()))
            raise CnncError(Diagnostic("E200", f"unknown op or block '{func.id}'", func.span,
                                       _did_you_mean(func.id, choices) or "see `cnnc ops` for the op list"))
        value = self.eval(func, env)
        if isinstance(value, (OpRef, BlockRef, Builtin)):
            return value
        raise CnncError(Diagnostic("E213", f"cannot call {_a(value)}", func.span))

    def _split_args(self, call: A.Call, env: Env):
        pos = [(self.eval(a, env), a.span) for a in call.args]
        kws = {k.name: (self.eval(k.value, env), k.span) for k in call.kwargs}
        return pos, kws

    def _check_budget(self, span):
        if self.graph.g.number_of_nodes() >= MAX_NODES:
            raise LimitError(self.errors + [Diagnostic("E221", f"the network expands to more than {MAX_NODES} layers", span,
                                       "is a repeat count or recursion unbounded?")])

    def op_call(self, op: OpDef, call: A.Call, env: Env, frame: Frame, piped, explicit):
        self._check_budget(call.span)
        pos, kws = self._split_args(call, env)
        inputs: list[Tensor] = []
        attr_pos, attr_pos_spans = [], []
        for (v, sp), a in zip(pos, call.args):
            if _is_tensorish(v):
                inputs.extend(_flatten_tensors(v))
            elif isinstance(v, (OpRef, BlockRef)) and isinstance(a, A.Name):
                raise CnncError(Diagnostic(
                    "E213", f"'{a.id}' names an op or block here, not a tensor", sp,
                    f"to use a layer's output, give it a name first: `y = {a.id}(...)`, then pass y"))
            else:
                attr_pos.append(v)
                attr_pos_spans.append(sp)
        for k, (v, sp) in kws.items():
            if _is_tensorish(v):
                raise CnncError(Diagnostic("E213", f"argument '{k}' of {op.name}() is a tensor; inputs are passed "
                                           "positionally", sp))
        lo, hi = op.inputs
        if piped is not None:
            inputs.insert(0, piped)
        elif len(inputs) < lo:
            if frame.prev is None:
                raise CnncError(Diagnostic("E204", f"{op.name}() has no input: nothing comes before it", call.span,
                                           "name its input, e.g. " + f"{op.name}(x, ...)"))
            inputs.insert(0, frame.prev)
        if len(inputs) < lo:
            raise CnncError(Diagnostic("E204", f"{op.name}() needs at least {lo} inputs, found {len(inputs)}",
                                       call.span))
        if hi is not None and len(inputs) > hi:
            raise CnncError(Diagnostic("E205", f"{op.name}() takes {hi} input{'s' if hi > 1 else ''}, "
                                       f"found {len(inputs)}", call.span,
                                       "combine tensors with add(), mul() or concat()"))
        if any(v is POISON for v in attr_pos) or any(v is POISON for v, _ in kws.values()):
            frame.allocate(explicit, op.name, call.span)
            return POISON_TENSOR
        try:
            attrs = op.bind(attr_pos, {k: v for k, (v, _) in kws.items()})
        except AttrError as err:
            where = getattr(err, "where", None)
            span = call.span
            if isinstance(where, int) and where < len(attr_pos_spans):
                span = attr_pos_spans[where]
            elif isinstance(where, str) and where in kws:
                span = kws[where][1]
            raise CnncError(Diagnostic(err.code, err.message, span, err.hint)) from None
        name = frame.allocate(explicit, op.name, call.span)
        if any(t.poisoned for t in inputs):
            return POISON_TENSOR
        in_shapes = [t.shape for t in inputs]
        try:
            out = op.shape(in_shapes, attrs, _Ctx(self, call.span))
        except ShapeError as err:
            raise CnncError(self._shape_diagnostic(op, err, inputs, call.span)) from None
        self.graph.add_node(name, op.name, attrs, [t.node for t in inputs], call.span, frame.scope, shape=out)
        for ps in op.params(in_shapes, attrs):
            self.graph.add_constant(name, ps.role, ps.shape, ps.learnable, ps.init)
        return Tensor(name, out, call.span)

    def _bind_params(self, defn: A.BlockDef, pos, kws, call_span, new_env: Env):
        names = [p.name for p in defn.params]
        if len(pos) > len(names):
            raise CnncError(Diagnostic("E205", f"block '{defn.name}' takes {len(names)} parameters "
                                       f"({', '.join(names)}), {len(pos)} given", call_span,
                                       notes=[(defn.span, "defined here")]))
        given = {}
        for p, (v, sp) in zip(defn.params, pos):
            given[p.name] = v
        for k, (v, sp) in kws.items():
            if k not in names:
                raise CnncError(Diagnostic("E201", f"block '{defn.name}' has no parameter '{k}'", sp,
                                           _did_you_mean(k, names) or f"its parameters are: {', '.join(names)}",
                                           notes=[(defn.span, "defined here")]))
            if k in given:
                raise CnncError(Diagnostic("E211", f"parameter '{k}' of block '{defn.name}' given twice", sp))
            given[k] = v
        for p in defn.params:
            if p.name in given:
                new_env.vars[p.name] = given[p.name]
            elif p.default is not None:
                new_env.vars[p.name] = self.eval(p.default, new_env)
            else:
                raise CnncError(Diagnostic("E204", f"block '{defn.name}' needs parameter '{p.name}'", call_span,
                                           notes=[(p.span, "declared here")]))

    def block_call(self, ref: BlockRef, call: A.Call, env: Env, frame: Frame, piped, explicit):
        self._check_budget(call.span)
        defn = ref.defn
        pos, kws = self._split_args(call, env)
        has_tensor = any(_is_tensorish(v) for v, _ in pos) or any(_is_tensorish(v) for v, _ in kws.values())
        if piped is not None:
            pos.insert(0, (piped, call.span))
        elif not has_tensor and frame.prev is not None and defn.params and defn.params[0].name not in kws:
            pos.insert(0, (frame.prev, call.span))
        if self.depth >= MAX_DEPTH:
            raise LimitError(self.errors + [Diagnostic(
                "E221", f"block '{defn.name}' nests deeper than {MAX_DEPTH} levels "
                "(does it instantiate itself without a stopping condition?)", call.span)])
        name = frame.allocate(explicit, defn.name, call.span)
        new_env = Env(parent=self.module_env(ref.module))
        self._bind_params(defn, pos, kws, call.span, new_env)
        first = next((v for v in new_env.vars.values() if isinstance(v, Tensor)), None)
        child = Frame(name, defn.kind == "seq", frame.scope + [(name, defn.name, call.span)], first)
        self.depth += 1
        try:
            self.exec_body(defn.body, new_env, child)
            result = child.prev
        except _Return as ret:
            result = ret.value
        finally:
            self.depth -= 1
        return result

    def group(self, grp: A.Group, env: Env, frame: Frame, piped, explicit):
        inputs = []
        for a in grp.args:
            v = self.eval(a, env)
            if not _is_tensorish(v) and v is not POISON:
                raise CnncError(Diagnostic("E213", f"{grp.kind}(...) takes input tensors, found {_type_name(v)}",
                                           a.span))
            if v is not POISON:
                inputs.extend(_flatten_tensors(v))
        if piped is not None:
            inputs.insert(0, piped)
        if not inputs and frame.prev is not None:
            inputs = [frame.prev]
        name = frame.allocate(explicit, grp.kind, grp.span)
        child = Frame(name, grp.kind == "seq", frame.scope + [(name, grp.kind, grp.span)],
                      inputs[0] if inputs else None)
        # A group shares its enclosing variables (like an `if` body): names bound inside stay visible after it.
        self.exec_body(grp.body, env, child)
        return child.prev

    # -- shape diagnostics
    def _shape_diagnostic(self, op: OpDef, err: ShapeError, inputs: list[Tensor], span: Span) -> Diagnostic:
        diag = Diagnostic(err.code, err.message, span, err.hint)
        maps = [t for t in inputs if t.shape is not None and len(t.shape) == 3]
        if op.name in ("add", "mul", "concat") and len(maps) == len(inputs) >= 2:
            spatial = {t.shape[1:] for t in maps}
            if len(spatial) > 1:
                self._trace_divergence(diag, maps)
            elif op.name != "concat" and len({t.shape[0] for t in maps}) > 1:
                diag.hint = ("the channel counts differ: project one side with a 1x1 conv "
                             "(as ResNet's downsample) or use concat() to stack channels")
        return diag

    def _history(self, node: str) -> list[str]:
        chain = []
        while node is not None:
            chain.append(node)
            ins = self.graph.node(node)["inputs"]
            node = ins[0] if ins else None
        return chain

    def _trace_divergence(self, diag: Diagnostic, maps: list[Tensor]):
        """Explain an add/concat of unequal maps: each input's size history back to where they diverged."""
        histories = [self._history(t.node) for t in maps]
        common = set(histories[0])
        for h in histories[1:]:
            common &= set(h)
        has_ceil = False
        odd = False
        for t, h in zip(maps, histories):
            steps = []
            for node in h:
                if node in common:
                    break
                steps.append(node)
            steps.reverse()
            changes = []
            for node in steps:
                d = self.graph.node(node)
                src = d["inputs"][0] if d["inputs"] else None
                before = self.graph.node(src)["shape"] if src else None
                after = d["shape"]
                if before and after and len(before) == 3 and len(after) == 3 and before[1:] != after[1:]:
                    note = f"{node} ({d['op']}"
                    if d["attrs"].get("ceil_mode"):
                        note += ", ceil_mode"
                        has_ceil = True
                    s = d["attrs"].get("stride")
                    if s and s != (1, 1):
                        note += f", stride {s[0] if s[0] == s[1] else s}"
                        if before[1] % 2 or before[2] % 2:
                            odd = True
                    note += f"): {before[1]}x{before[2]} -> {after[1]}x{after[2]}"
                    changes.append((d["span"], note))
            label = f"input {t.node} {fmt_shape(t.shape)}"
            if not changes:
                diag.notes.append((t.span, f"{label} keeps its size from the common ancestor"))
            for sp, note in changes:
                diag.notes.append((sp, f"{label}: {note}"))
        if common:
            diverge = next(n for n in histories[0] if n in common)
            diag.notes.append((self.graph.node(diverge)["span"],
                               f"the inputs diverge after {diverge} {fmt_shape(self.graph.node(diverge)['shape'])}"))
        if has_ceil:
            diag.hint = "ceil_mode rounds the size up on one branch only: use the same rounding on both branches"
        elif odd:
            diag.hint = ("an odd size halved by a stride-2 window rounds differently on each branch: "
                         "pad the input to an even size, or use the same padding/kernel on both branches")
        else:
            diag.hint = "make both branches change the spatial size in the same way"

    # -- expressions
    def eval(self, e: A.Expr, env: Env):
        if isinstance(e, A.Num):
            return e.value
        if isinstance(e, A.Str):
            return e.value
        if isinstance(e, A.Const):
            return e.value
        if isinstance(e, A.Name):
            value, found = env.lookup(e.id)
            if found:
                return value
            if e.id == "N":
                return BATCH
            if env.module and e.id in env.module.blocks:
                return env.module.blocks[e.id]
            op = lookup(e.id, False)
            if op is not None:
                return OpRef(op)
            if e.id in BUILTINS:
                return Builtin(e.id, BUILTINS[e.id])
            raise CnncError(Diagnostic("E210", f"undefined name '{e.id}'", e.span,
                                       _did_you_mean(e.id, env.visible_names())))
        if isinstance(e, A.TupleExpr):
            items = [self.eval(i, env) for i in e.items]
            return tuple(items)
        if isinstance(e, A.ListExpr):
            return [self.eval(i, env) for i in e.items]
        if isinstance(e, A.BinOp):
            left, right = self.eval(e.left, env), self.eval(e.right, env)
            if left is POISON or right is POISON:
                return POISON
            return _binop(e, left, right)
        if isinstance(e, A.Unary):
            v = self.eval(e.operand, env)
            if v is POISON:
                return POISON
            if e.op == "not":
                return not v
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise CnncError(Diagnostic("E202", f"cannot apply unary '{e.op}' to {_a(v)}", e.span))
            return -v if e.op == "-" else v
        if isinstance(e, A.BoolOp):
            result = None
            for item in e.items:
                result = self.eval(item, env)
                if result is POISON:
                    return POISON
                if (e.op == "and" and not result) or (e.op == "or" and result):
                    return result
            return result
        if isinstance(e, A.Compare):
            left, right = self.eval(e.left, env), self.eval(e.right, env)
            if left is POISON or right is POISON:
                return POISON
            try:
                return {"==": lambda: left == right, "!=": lambda: left != right, "<": lambda: left < right,
                        "<=": lambda: left <= right, ">": lambda: left > right, ">=": lambda: left >= right,
                        "in": lambda: left in right}[e.op]()
            except TypeError:
                raise CnncError(Diagnostic("E202", f"cannot compare {_a(left)} with "
                                           f"{_a(right)} using '{e.op}'", e.span)) from None
        if isinstance(e, A.CondExpr):
            test = self.eval(e.test, env)
            if test is POISON:
                return POISON
            return self.eval(e.then if test else e.otherwise, env)
        if isinstance(e, A.GetAttr):
            obj = self.eval(e.obj, env)
            if obj is POISON or (isinstance(obj, Tensor) and obj.poisoned):
                return POISON
            if isinstance(obj, Tensor):
                return _tensor_attr(obj, e)
            raise CnncError(Diagnostic("E201", f"{_a(obj)} has no attribute '{e.attr}'", e.span))
        if isinstance(e, A.GetItem):
            obj, idx = self.eval(e.obj, env), self.eval(e.index, env)
            if obj is POISON or idx is POISON:
                return POISON
            if not isinstance(obj, (tuple, list, str)):
                raise CnncError(Diagnostic("E202", f"cannot index {_a(obj)}", e.span))
            if not isinstance(idx, int) or isinstance(idx, bool):
                raise CnncError(Diagnostic("E202", f"index must be an integer, found {_type_name(idx)}", e.index.span))
            if not -len(obj) <= idx < len(obj):
                raise CnncError(Diagnostic("E203", f"index {idx} is out of range for {_a(obj)} of "
                                           f"length {len(obj)}", e.index.span))
            return obj[idx]
        if isinstance(e, A.Call):
            callee = self.resolve_callee(e.func, env)
            if not isinstance(callee, Builtin):
                raise CnncError(Diagnostic("E213", "layers and blocks are called as statements, one per line "
                                           "(or chained with '->'), not inside expressions", e.span,
                                           "assign the inner layer to a name first"))
            args = [self.eval(a, env) for a in e.args]
            kwargs = {k.name: self.eval(k.value, env) for k in e.kwargs}
            if any(a is POISON for a in args) or any(v is POISON for v in kwargs.values()):
                return POISON
            try:
                return callee.fn(*args, **kwargs)
            except (TypeError, ValueError, ZeroDivisionError, OverflowError, MemoryError) as err:
                raise CnncError(Diagnostic("E202", f"{callee.name}(): {err or type(err).__name__}", e.span)) from None
        if isinstance(e, A.Group):
            raise CnncError(Diagnostic("E213", "a group is a statement of its own", e.span))
        raise CnncError(Diagnostic("E900", f"cannot evaluate {type(e).__name__}", e.span))


def _tensor_attr(t: Tensor, e: A.GetAttr):
    shape = t.shape
    named = {"channels": 0, "height": 1, "width": 2}
    if e.attr in named:
        i = named[e.attr]
        if i >= len(shape) or (i > 0 and len(shape) != 3):
            raise CnncError(Diagnostic("E302", f"a tensor of shape {fmt_shape(shape)} has no {e.attr}", e.span))
        return shape[i]
    if e.attr == "shape":
        return (BATCH,) + tuple(shape)
    if e.attr == "rank":
        return len(shape) + 1
    if e.attr == "features":
        return math.prod(shape)
    raise CnncError(Diagnostic("E201", f"a tensor has no attribute '{e.attr}'", e.span,
                               "tensor attributes: channels, height, width, shape, rank, features"))


def _too_large(e: A.BinOp, what: str) -> CnncError:
    return CnncError(Diagnostic("E203", f"{what} is too large", e.span, "spec arithmetic is for sizes and counts"))


def _binop(e: A.BinOp, left, right):
    op = e.op
    if isinstance(left, _Batch) or isinstance(right, _Batch):
        raise CnncError(Diagnostic("E202", "the batch size N is symbolic: no arithmetic on it", e.span))
    # Guard against results that would take unbounded time or memory (10 ** 10 ** 10, [0] * 10 ** 10).
    if op == "**" and isinstance(left, (int, float)) and isinstance(right, (int, float)):
        if abs(left) > 1 and right > 0 and right * math.log2(abs(left)) > 1024:
            raise _too_large(e, "the power")
    if op == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * max(n, 0) > MAX_SEQUENCE:
                raise _too_large(e, "the repeated sequence")
    if op == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
        if len(left) + len(right) > MAX_SEQUENCE:
            raise _too_large(e, "the sequence")
    try:
        if op == "+":
            if isinstance(left, tuple) and isinstance(right, list):
                right = tuple(right)
            return left + right
        if op == "-":
            return left - right
        if op == "*":
            return left * right
        if op == "/":
            return left / right
        if op == "//":
            return left // right
        if op == "%":
            return left % right
        if op == "**":
            return left ** right
    except ZeroDivisionError:
        raise CnncError(Diagnostic("E203", "division by zero", e.span)) from None
    except OverflowError:
        raise _too_large(e, "the result") from None
    except TypeError:
        raise CnncError(Diagnostic("E202", f"cannot apply '{op}' to {_a(left)} and "
                                   f"{_a(right)}", e.span)) from None
    raise CnncError(Diagnostic("E900", f"unknown operator {op}", e.span))


def _did_you_mean(word: str, options) -> str | None:
    m = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"did you mean '{m[0]}'?" if m else None
