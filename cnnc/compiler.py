"""The compiler driver: spec file -> expanded graph -> passes. The CLI and the Python API call this."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import CnncError, Diagnostic, Span
from .expand import Expander, Loader
from .graph import Graph
from .passes import DEFAULT_OPT_LEVEL, PassContext, run_pipeline


@dataclass
class CompileResult:
    graph: Graph
    warnings: list[Diagnostic] = field(default_factory=list)
    ctx: PassContext | None = None


def parse_overrides(items: list[str]) -> dict:
    """`--set name=value` items; values are .cnn expressions (numbers, strings, tuples, true/false)."""
    from .expand import Env, Expander as _E
    from .parser import parse_expression
    out = {}
    for item in items:
        if "=" not in item:
            raise CnncError(Diagnostic("E100", f"--set {item}: expected NAME=VALUE", None, "for example --set classes=20"))
        name, text = item.split("=", 1)
        name = name.strip()
        span = Span("<--set>", 1, 1)
        try:
            expr = parse_expression(text, span, "--set value")
            value = _E(Graph("_")).eval(expr, Env())
        except CnncError as err:
            raise CnncError(Diagnostic(err.code, f"--set {item}: cannot read this value", None,
                                       "values are numbers, strings in double quotes, true/false or tuples"))
        out[name] = value
    return out


def pick_network(module, name: str | None, path: str):
    own = module.own_networks
    if name is not None:
        if name not in module.networks:
            raise CnncError(Diagnostic("E210", f"{path} defines no network '{name}'", None,
                                       "networks: " + (", ".join(module.networks) or "none")))
        return module.networks[name]
    if not own:
        raise CnncError(Diagnostic("E241", f"{path} defines no network", Span(path, 1, 1),
                                   "a spec needs `network NAME(...) { ... }`; a file of blocks is imported by others"))
    if len(own) == 1:
        return module.networks[own[0]]
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem in own:
        return module.networks[stem]
    raise CnncError(Diagnostic("E241", f"{path} defines several networks ({', '.join(own)})", None,
                               "choose one with --network NAME"))


def build_graph(path: str, overrides: dict | None = None, network: str | None = None,
                include: tuple[str, ...] = ()) -> tuple[Graph, list[Diagnostic]]:
    """Parse and expand a spec (the `expand` pass). Raises CnncError with every error found."""
    loader = Loader(include)
    module = loader.load(path)
    if loader.diagnostics:
        raise CnncError(loader.diagnostics)
    defn, mod = pick_network(module, network, path)
    graph = Graph(defn.name)
    expander = Expander(graph)
    expander.network(defn, mod, overrides or {})
    return graph, expander.warnings


def compile_spec(path: str, overrides: dict | None = None, network: str | None = None,
                 include: tuple[str, ...] = (), opt_level: int = DEFAULT_OPT_LEVEL, disabled: tuple[str, ...] = (),
                 stop_after: str | None = None, verify: bool = True) -> CompileResult:
    graph, warnings = build_graph(path, overrides, network, include)
    ctx = PassContext(opt_level=opt_level, disabled=set(disabled), verify=verify)
    run_pipeline(graph, ctx, stop_after)
    return CompileResult(graph, warnings + ctx.warnings, ctx)
