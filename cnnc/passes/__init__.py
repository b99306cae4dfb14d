"""The pass manager: a literal pipeline of named passes over the graph IR.

Each pass is a module with a `run(graph, ctx) -> bool` (whether it changed the graph) and a
docstring stating what it requires and guarantees. The names below are the CLI's `--after` and
`--disable` names. `expand` (syntax tree -> graph) runs before them and can be dumped too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import CnncError, Diagnostic
from . import (dce, drop_identities, fold_batchnorm, fuse_activation, fuse_elementwise, fuse_residual, infer_shapes,
               layout, memory, pool_first, verify)


@dataclass
class Pass:
    name: str
    run: object
    level: int  # the lowest -O level that runs it
    required: bool = False  # cannot be disabled


# The pipeline, in order. `memory` chooses the memory planner's parts; the planning runs when a plan is made
# (cnnc/plan.py), and its parts are named (for -O and --disable) after the passes.
PIPELINE: list[Pass] = [
    Pass("infer_shapes", infer_shapes.run, 0, required=True),
    Pass("dce", dce.run, 1),
    Pass("drop_identities", drop_identities.run, 1),
    Pass("fold_batchnorm", fold_batchnorm.run, 1),
    Pass("fuse_activation", fuse_activation.run, 1),
    Pass("pool_first", pool_first.run, 2),
    Pass("fuse_residual", fuse_residual.run, 2),
    Pass("fuse_elementwise", fuse_elementwise.run, 2),
    Pass("layout", layout.run, 2),
    Pass("memory", memory.run, 0, required=True),
]

PASS_NAMES = ["expand"] + [p.name for p in PIPELINE] + list(memory.OPTIONS)
# -O0: shapes only; -O1: identities dropped, folding and activation fusion, concatenations and outputs in place;
# -O2: pool first, residual fusion, elementwise chains, layout
DEFAULT_OPT_LEVEL = 2


@dataclass
class PassContext:
    opt_level: int = DEFAULT_OPT_LEVEL
    disabled: set[str] = field(default_factory=set)
    verify: bool = True
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[Diagnostic] = field(default_factory=list)


def run_pipeline(graph, ctx: PassContext, stop_after: str | None = None):
    """Run the pipeline; stop after `stop_after` if given. Verifies the graph between passes."""
    unknown = set(ctx.disabled) - set(PASS_NAMES)
    if unknown:
        raise CnncError(Diagnostic("E201", f"unknown pass '{sorted(unknown)[0]}'", None,
                                   "passes: " + ", ".join(PASS_NAMES)))
    if stop_after is not None and stop_after not in PASS_NAMES:
        raise CnncError(Diagnostic("E201", f"unknown pass '{stop_after}'", None, "passes: " + ", ".join(PASS_NAMES)))
    if ctx.verify:
        verify.run(graph, "expand")
    if stop_after == "expand":
        return graph
    if stop_after in memory.OPTIONS:  # parts of the memory stage: the graph after it
        stop_after = "memory"
    memory.run(graph, ctx)  # (again at its place in the pipeline: a graph stopped early is planned as asked too)
    for p in PIPELINE:
        if p.name in ctx.disabled and p.required:
            raise CnncError(Diagnostic("E201", f"pass '{p.name}' is required and cannot be disabled", None))
        if p.level > ctx.opt_level or p.name in ctx.disabled:
            continue
        t0 = time.perf_counter()
        try:
            p.run(graph, ctx)
        except CnncError:
            raise
        except Exception as err:  # an internal bug: name the failing pass
            raise RuntimeError(f"internal error in pass '{p.name}': {err}") from err
        ctx.timings[p.name] = time.perf_counter() - t0
        if ctx.verify:
            verify.run(graph, p.name)
        if stop_after == p.name:
            break
    return graph
