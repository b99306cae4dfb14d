"""Memory planning: every intermediate tensor gets an offset in one arena.

All activation tensors scale linearly with the batch size, so offsets are planned once per sample and
multiplied by the batch at run time: one plan serves every batch. Tensors are placed greedily by size
(largest first) at the best-fitting offset not used by any tensor whose lifetime overlaps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Ops whose output is a view of their input's storage (no copy, no buffer of their own).
VIEW_OPS = frozenset({"flatten", "reshape", "identity", "dropout"})


@dataclass(frozen=True)
class Interval:
    name: str
    size: int  # elements per sample
    first: int  # index of the step that produces it (-1: a network input)
    last: int  # index of the step that reads it last


def lifetimes(steps: list[dict], inputs: list[str], outputs: list[str], sizes: dict[str, int]) -> list[Interval]:
    """Lifetime of every tensor: from its producing step to its last reader (outputs live to the end)."""
    first = {name: -1 for name in inputs}
    last = {name: -1 for name in inputs}
    for i, step in enumerate(steps):
        first.setdefault(step["output"], i)  # a view step "re-produces" its owner: the first producer counts
        last.setdefault(step["output"], i)
        for t in step["inputs"]:
            last[t] = max(last.get(t, i), i)
    end = len(steps)
    for t in outputs:
        last[t] = end
    return [Interval(t, sizes[t], first[t], last[t]) for t in first]


def plan_arena(intervals: list[Interval], align: int = 16) -> tuple[dict[str, int], int]:
    """Greedy-by-size best-fit offsets (in elements per sample, aligned). Returns (offsets, arena size)."""
    placed: list[tuple[int, int, Interval]] = []  # (offset, size, interval)
    offsets: dict[str, int] = {}
    for iv in sorted(intervals, key=lambda iv: (-iv.size, iv.first, iv.name)):
        size = -(-iv.size // align) * align
        busy = sorted((off, off + sz) for off, sz, other in placed
                      if not (other.last < iv.first or iv.last < other.first))
        best, best_gap, cursor = None, None, 0
        for start, stop in busy:
            gap = start - cursor
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, stop)
        if best is None:
            best = cursor
        offsets[iv.name] = best
        placed.append((best, size, iv))
    total = max((off + sz for off, sz, _ in placed), default=0)
    return offsets, total


def no_reuse_size(intervals: list[Interval]) -> int:
    return sum(iv.size for iv in intervals)


def plan_memory(plan: dict) -> dict:
    """The memory plan of a plan dict: which tensors are views of which (`views`: tensor -> owner), each
    owner's offset in the arena (`offsets`, elements per sample), the arena size per sample and the
    size without reuse. Network inputs live outside the arena (the caller's arrays)."""
    shapes = {k: tuple(v) for k, v in plan["tensors"].items()}
    inputs = [i["name"] for i in plan["inputs"]]
    views: dict[str, str] = {}
    for step in plan["steps"]:
        if step["op"] in VIEW_OPS:
            views[step["output"]] = views.get(step["inputs"][0], step["inputs"][0])
    owner = lambda t: views.get(t, t)  # noqa: E731
    steps = [{"output": owner(s["output"]), "inputs": [owner(i) for i in s["inputs"]]} for s in plan["steps"]]
    owners = {owner(s["output"]) for s in plan["steps"]} | set(inputs)
    sizes = {t: math.prod(shapes[t]) for t in owners}
    outs = [owner(o["tensor"]) for o in plan["outputs"]]
    intervals = [iv for iv in lifetimes(steps, inputs, outs, sizes) if iv.name not in inputs]
    offsets, total = plan_arena(intervals)
    return {"views": views, "offsets": offsets, "per_sample": total, "no_reuse": no_reuse_size(intervals)}


class MemoryLimitError(Exception):
    """A batch would need more memory than is available (checked before allocating)."""

    def __init__(self, needed: int, available: int, batch: int):
        super().__init__(f"batch {batch} needs about {needed / 2**30:.2f} GiB, {available / 2**30:.2f} GiB available")
        self.needed, self.available, self.batch = needed, available, batch


def available_bytes() -> int | None:
    """Memory the system can still give this process (MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits(needed: int, batch: int, limit: int | None) -> None:
    """Refuse before allocating when `needed` bytes exceed `limit` (None: what the system has available;
    0: no check)."""
    if limit == 0:
        return
    if limit is None:
        limit = available_bytes()
        if limit is None:
            return
    if needed > limit:
        raise MemoryLimitError(needed, limit, batch)
