"""Shape inference.

Requires: a graph whose nodes have ops, attributes and inputs (shapes may be stale or missing, e.g.
after a rewrite). Guarantees: every node's per-sample output shape recomputed from its inputs by the
registry's shape rule, in topological order, and every parameter's shape re-derived and checked
against its declared constant; a disagreement is reported as an error on the node's source line.
"""

from __future__ import annotations

from ..errors import CnncError, Diagnostic
from ..ops import ShapeError, lookup


class _NoWarn:
    def warn(self, message, hint=None):
        pass


def run(graph, ctx) -> bool:
    changed = False
    errors = []
    for name in graph.op_nodes():
        d = graph.node(name)
        op = lookup(d["op"])
        in_shapes = [graph.node(i)["shape"] for i in d["inputs"]]
        if any(s is None for s in in_shapes):
            continue
        attrs = dict(d["attrs"])
        try:
            shape = op.shape(in_shapes, attrs, _NoWarn())
        except ShapeError as err:
            errors.append(Diagnostic(err.code, err.message, d["span"], err.hint))
            d["shape"] = None
            continue
        if shape != d["shape"]:
            d["shape"] = shape
            changed = True
        d["attrs"] = attrs
        for ps in op.params(in_shapes, attrs):
            cname = d["params"].get(ps.role)
            if cname is None or graph.constants[cname].shape != tuple(ps.shape):
                errors.append(Diagnostic("E300", f"parameter {ps.role} of {name} should have shape {ps.shape}",
                                         d["span"]))
    if errors:
        raise CnncError(errors)
    return changed
