"""Memory planning: which parts of the planner the plan uses, and the plan's memory as text.

Requires: the graph through every pass before it (the layout pass decides each tensor's storage: plain, or
channel-blocked with a halo).
Guarantees: the graph records, as `memory_options`, which optional parts of the memory planner its plan uses:
  concat_in_place  the inputs of a channel concatenation are written by their producers straight into their
                   slice of its buffer (DenseNet, GoogLeNet, U-Net, YOLO's route): no copies
  in_place         an elementwise op, a residual add fused into a convolution, or a convolution that can, writes
                   its output over an input that dies at that step
(each on from -O1 and off when disabled). The planning itself runs when the plan is made
(`cnnc.plan.from_graph`, `runtime/memory.py`'s `plan_memory`): it needs the plan's step order, and the runtime
plans again for batches over one. Every step output and workspace gets an offset in one arena per sample,
placed best-fit among the tensors alive at the same time; the graph itself does not change. `cnnc inspect
--after memory` shows the result (`describe`).
"""

from __future__ import annotations

# option -> the lowest -O level that uses it
OPTIONS = {"concat_in_place": 1, "in_place": 1}


def run(graph, ctx) -> bool:
    graph.g.graph["memory_options"] = {name: level <= ctx.opt_level and name not in ctx.disabled
                                       for name, level in OPTIONS.items()}
    return False


def describe(plan: dict) -> str:
    """A plan's memory, per sample in float32 elements: the arena, and each step output's storage (its
    elements, channel-blocked ones padded to whole blocks and halos) and where it lives."""
    memory = plan["memory"]
    options = memory.get("options", {})
    used = [k for k in OPTIONS if options.get(k, True)]
    lines = [f"memory plan of {plan['network']} (per sample, float32 elements; "
             + (", ".join(used) if used else "no concatenation or output in place") + "):",
             f"  arena {memory['per_sample']:,}; without reuse {memory['no_reuse']:,}"]
    from ..runtime.memory import blocked_tensors, storage_size, tensor_halos
    shapes = plan["tensors"]
    blocked, halos = blocked_tensors(plan), tensor_halos(plan)
    for step in plan["steps"]:
        t = step["output"]
        if t in memory["views"]:
            where = f"view of {memory['views'][t]}"
        elif t in memory.get("slices", {}):
            buf, offset = memory["slices"][t]
            where = f"channels {offset}..{offset + shapes[t][0] - 1} of {buf}"
        elif t in memory.get("in_place", {}):
            where = f"over {memory['in_place'][t]}"
        elif t in memory["offsets"]:
            where = f"offset {memory['offsets'][t]:,}"
        else:
            where = "outside the arena"
        size = storage_size(shapes[t], t in blocked, halos.get(t, (0, 0, 0, 0)))
        layout = (" blocked" + (f", halo {halos[t]}" if t in halos else "")) if t in blocked else ""
        lines.append(f"  {t} ({size:,}{layout}): {where}")
        ws = memory.get("workspace", {}).get(t)
        if ws:
            lines.append(f"  {t} workspace ({ws:,}): offset {memory['offsets'][f'{t}#workspace']:,}")
    return "\n".join(lines) + "\n"
