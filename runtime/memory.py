"""Memory planning: every intermediate tensor gets an offset in one arena.

All activation tensors scale linearly with the batch size, so offsets are planned once per sample and
multiplied by the batch at run time: one plan serves every batch. Tensors are placed greedily at the
best-fitting offset not used by any tensor whose lifetime overlaps, in a few orders (largest first; largest
size x lifetime first; longest lifetime first; earliest first), keeping the smallest arena: no one order
reaches the lower bound (the most that is ever alive at once) on every library model, and together they
reach it on all of them (largest first alone: GoogLeNet 3.88 MB per sample for 3.83, DenseNet-121 7.77
for 7.38).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .winograd_plan import step_workspace

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


# Orders tried by `plan_arena`, the first kept on ties (the order of the plans before the others existed).
_PLACEMENT_ORDERS = (
    lambda iv: (-iv.size, iv.first, iv.name),
    lambda iv: (-iv.size * (iv.last - iv.first + 1), iv.first, iv.name),
    lambda iv: (iv.first - iv.last, -iv.size, iv.name),
    lambda iv: (iv.first, -iv.size, iv.name),
)


def plan_arena(intervals: list[Interval], align: int = 16) -> tuple[dict[str, int], int]:
    """Best-fit offsets (in elements per sample, aligned), greedily in each of `_PLACEMENT_ORDERS`; the
    smallest arena wins. Returns (offsets, arena size)."""
    floor = live_peak(intervals, align)
    best: tuple[dict[str, int], int] | None = None
    for order in _PLACEMENT_ORDERS:
        offsets, total = _place(sorted(intervals, key=order), align)
        if best is None or total < best[1]:
            best = (offsets, total)
        if best[1] == floor:  # no order can do better
            break
    return best


def live_peak(intervals: list[Interval], align: int = 16) -> int:
    """The most (aligned) elements alive at any one step: no arena is smaller."""
    events: dict[int, int] = {}
    for iv in intervals:
        size = -(-iv.size // align) * align
        events[iv.first] = events.get(iv.first, 0) + size
        events[iv.last + 1] = events.get(iv.last + 1, 0) - size
    peak = alive = 0
    for step in sorted(events):
        alive += events[step]
        peak = max(peak, alive)
    return peak


def _place(ordered: list[Interval], align: int) -> tuple[dict[str, int], int]:
    """Place each interval, in the given order, at the lowest-waste gap among those live with it."""
    placed: list[tuple[int, int, Interval]] = []  # (offset, size, interval)
    offsets: dict[str, int] = {}
    for iv in ordered:
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


# Ops whose kernels may write their output over one of their inputs (elementwise: each element is read
# before it is written, by the same thread), and which inputs qualify.
_ELEMENTWISE = frozenset({"relu", "relu6", "clip", "leaky_relu", "sigmoid", "tanh", "silu", "hardswish",
                          "hardsigmoid", "batchnorm", "affine"})


def banded_in_place(step: dict, shapes: dict) -> bool:
    """Whether a convolution may write over its own input: a dense (groups 1), stride-1, padded convolution
    whose output has its input's shape, without a residual. The CPU kernel computes such a convolution band
    by band from a padded copy of the band's input rows and keeps aside the rows the next band still reads
    (``cpu/conv.py::_conv_padded_in_bands``)."""
    a = step["attrs"]
    return (step["op"] == "conv" and not a.get("residual") and a.get("groups", 1) == 1
            and tuple(a["stride"]) == (1, 1) and any(a["pads"]) and len(step["inputs"]) == 1
            and tuple(shapes[step["inputs"][0]]) == tuple(shapes[step["output"]]))


def in_place_candidates(step: dict, banded: bool = False) -> list[str]:
    """The inputs whose buffer `step` may take over for its output (if they die at this step); `banded`: the
    step is a convolution that may write over its input (`banded_in_place`)."""
    op = step["op"]
    if op == "conv" and step["attrs"].get("residual"):
        return step["inputs"][1:2]  # the skip: the kernel adds it while storing
    if banded:
        return step["inputs"][:1]
    if op in ("add", "mul"):
        return step["inputs"][:2]  # later operands are read after the output is first written
    if op in _ELEMENTWISE:
        return step["inputs"][:1]
    if op == "eltwise_chain" and step["inputs"][0] not in step["inputs"][1:]:
        return step["inputs"][:1]  # (its kernel reads the other inputs after storing over the first)
    return []


def concat_slices(plan: dict, blocked_only: bool = False) -> dict[str, tuple[str, int]]:
    """Concatenation without copies: tensor -> (buffer tensor, channel offset) for every tensor that lives as
    a channel slice of a channel concatenation's output, so its producer writes straight into place.

    Concats are visited last to first. A concat whose inputs all already lie back to back in one buffer is
    itself a slice of that buffer (DenseNet: every layer's concat is a prefix of the block's last one, so a
    whole dense block lives in one buffer and no concat copies anything). Otherwise each input that may be
    placed goes into the concat's own storage. Not placed: network inputs, tensors read through a view op,
    outputs of view ops, tensors already placed in another buffer, and tensors not stored in the buffer's
    layout (those are copied by the concat as before). A channel-blocked tensor is placed only as whole
    blocks of a channel-blocked buffer with the same halo. `blocked_only`: channel-blocked tensors only (the
    placement of batches over one, where a plain channel slice is not contiguous per sample; the blocked
    kernels take a sample stride)."""
    shapes = {k: tuple(v) for k, v in plan["tensors"].items()}
    producer = {s["output"]: s["op"] for s in plan["steps"]}
    viewed = {s["inputs"][0] for s in plan["steps"] if s["op"] in VIEW_OPS}
    slices: dict[str, tuple[str, int]] = {}

    blocked = blocked_tensors(plan)
    halos = tensor_halos(plan)

    def placeable(t: str, buf: str, offset: int) -> bool:
        """Whether `t` may live at channel `offset` of `buf`: in the same layout, and for the blocked
        layout as whole blocks inside the same halo."""
        if not (t in producer and producer[t] not in VIEW_OPS and t not in viewed  # (views own no buffer)
                and t not in slices and len(shapes[t]) == 3 and (t in blocked) == (buf in blocked)):
            return False
        if blocked_only and t not in blocked:
            return False
        return t not in blocked or (offset % 16 == 0 and shapes[t][0] % 16 == 0
                                    and halos.get(t) == halos.get(buf))

    for step in reversed(plan["steps"]):
        out = step["output"]
        if step["op"] != "concat" or step["attrs"]["axis"] != 1 or len(shapes[out]) != 3:
            continue
        ins = step["inputs"]
        if len(set(ins)) == len(ins) and all(t in slices for t in ins):
            buf, first = slices[ins[0]]
            offsets = [first + sum(shapes[u][0] for u in ins[:i]) for i in range(len(ins))]
            if all(slices[t] == (buf, o) for t, o in zip(ins, offsets)) and placeable(out, buf, first):
                slices[out] = (buf, first)
                continue
        buf, off = slices.get(out, (out, 0))
        for t in ins:
            if ins.count(t) == 1 and placeable(t, buf, off):
                slices[t] = (buf, off)
            off += shapes[t][0]
    return slices


def blocked_tensors(plan: dict) -> set[str]:
    """Tensors stored channel-blocked (the `layout` pass's `c16`): (ceil(C/16), H, W, 16) per sample."""
    return {s["output"] for s in plan["steps"] if s["attrs"].get("layout") == "c16"}


def tensor_halos(plan: dict) -> dict[str, tuple[int, int, int, int]]:
    """Channel-blocked tensors stored inside a zero halo (the `layout` pass's `halo`: top, left, bottom and
    right pixels around each plane, for a depthwise consumer that then reads its padding in place)."""
    return {s["output"]: tuple(s["attrs"]["halo"]) for s in plan["steps"]
            if s["attrs"].get("layout") == "c16" and s["attrs"].get("halo")}


def storage_shape(shape, blocked: bool, halo=(0, 0, 0, 0)) -> tuple:
    """Per-sample storage shape of a tensor: its shape, or channel-blocked (ceil(C/16), H + top + bottom,
    W + left + right, 16) with the halo's pixels around each plane."""
    if blocked:
        ht, hl, hb, hr = halo
        return (-(-shape[0] // 16), shape[1] + ht + hb, shape[2] + hl + hr, 16)
    return tuple(shape)


def storage_size(shape, blocked: bool, halo=(0, 0, 0, 0)) -> int:
    """Elements per sample of a tensor's storage (`storage_shape`)."""
    return math.prod(storage_shape(shape, blocked, halo))


def plan_memory(plan: dict, concat_in_place: bool | str = True, layouts: bool = True,
                conv_in_place: bool = True, workspaces: bool = True, in_place: bool = True) -> dict:
    """The memory plan of a plan dict: which tensors are views of which (`views`: tensor -> owner), which
    tensors are written over a dying input (`in_place`: tensor -> the tensor whose buffer it reuses), each
    buffer owner's offset in the arena (`offsets`, elements per sample), the arena size per sample and the
    size without reuse. Network inputs live outside the arena (the caller's arrays) and are never
    written over. `concat_in_place`: place concat inputs as channel slices (`concat_slices`): True, False,
    or "blocked" for channel-blocked ones only. `layouts`: size channel-blocked tensors padded (False: a
    target that stores every tensor plain). `conv_in_place`: let convolutions write over their input where the CPU kernel can
    (`banded_in_place`; False: a target whose kernels cannot). `workspaces`: give each step that needs one
    (`winograd_plan.step_workspace`) a workspace in the arena, alive during that step only (`workspace`:
    step output -> floats per sample; offsets under `workspace_key(output)`); False: a target without.
    `in_place`: False writes no output over an input (the compiler's `--disable in_place`). The result's
    `options` records `concat_in_place` and `in_place`, so a runtime planning again for other batch sizes keeps
    what the compiler chose."""
    blocked = blocked_tensors(plan) if layouts else set()
    halos = tensor_halos(plan) if layouts else {}
    shapes = {k: tuple(v) for k, v in plan["tensors"].items()}
    sizes = {t: storage_size(shape, t in blocked, halos.get(t, (0, 0, 0, 0))) for t, shape in shapes.items()}
    inputs = [i["name"] for i in plan["inputs"]]
    views: dict[str, str] = {}
    for step in plan["steps"]:
        if step["op"] in VIEW_OPS:
            views[step["output"]] = views.get(step["inputs"][0], step["inputs"][0])
    view_owner = lambda t: views.get(t, t)  # noqa: E731
    slices = concat_slices(plan, blocked_only=concat_in_place == "blocked") if concat_in_place else {}
    shared = set(slices) | {buf for buf, _ in slices.values()}  # storage of several tensors at once
    end = len(plan["steps"])
    last_read: dict[str, int] = {}
    for i, step in enumerate(plan["steps"]):
        for t in step["inputs"]:
            last_read[view_owner(t)] = i
    for o in plan["outputs"]:
        last_read[view_owner(o["tensor"])] = end
    # step output -> workspace floats per sample, for the steps that need one
    workspace = {s["output"]: f for s in plan["steps"] if (f := step_workspace(s, shapes))} if workspaces else {}
    over: dict[str, str] = {}  # output -> the input whose buffer it takes over
    for i, step in enumerate(plan["steps"] if in_place else ()):
        out = step["output"]
        if step["op"] in VIEW_OPS or out in shared:
            continue
        banded = conv_in_place and step["op"] == "conv" and banded_in_place(step, shapes) and not (
            {step["inputs"][0], out} & blocked) and out not in workspace
        for cand in in_place_candidates(step, banded):
            base = view_owner(cand)
            if step["op"] == "conv" and base == view_owner(step["inputs"][0]) and not banded:
                continue  # a convolution reads its whole input while storing: never over it
            if (base not in inputs and base not in shared and last_read.get(base) == i and sizes[base] == sizes[out]
                    and (base in blocked) == (out in blocked) and halos.get(base) == halos.get(out)):
                over[out] = over.get(base, base)
                break
    memory = {"views": views, "in_place": over, "slices": slices}
    owner = lambda t: storage_owner(memory, t)  # noqa: E731
    steps = [{"output": owner(s["output"]), "inputs": [owner(i) for i in s["inputs"]]} for s in plan["steps"]]
    owners = {owner(s["output"]) for s in plan["steps"]} | set(inputs)
    outs = [owner(o["tensor"]) for o in plan["outputs"]]
    intervals = [iv for iv in lifetimes(steps, inputs, outs, {t: sizes[t] for t in owners})
                 if iv.name not in inputs]
    for i, step in enumerate(plan["steps"]):
        if step["output"] in workspace:  # alive during its step only: apart from the step's inputs and output
            intervals.append(Interval(workspace_key(step["output"]), workspace[step["output"]], i, i))
    offsets, total = plan_arena(intervals)
    no_reuse = sum(sizes[s["output"]] for s in plan["steps"] if s["op"] not in VIEW_OPS)
    return {**memory, "offsets": offsets, "per_sample": total, "no_reuse": no_reuse, "workspace": workspace,
            "options": {"concat_in_place": bool(concat_in_place), "in_place": in_place}}


def workspace_key(output: str) -> str:
    """The arena entry of the workspace of the step that writes `output`."""
    return f"{output}#workspace"


def storage_owner(memory: dict, tensor: str) -> str:
    """The tensor that owns `tensor`'s storage: itself, the input it is a view of, the buffer it was written
    over (`in_place`), or the concat output it is a channel slice of (`slices`; then see `slice_of`).
    Plans from before in-place and slice planning have neither."""
    t = memory["views"].get(tensor, tensor)
    t = memory.get("in_place", {}).get(t, t)
    sliced = memory.get("slices", {}).get(t)
    return sliced[0] if sliced else t


def slice_of(memory: dict, tensor: str) -> tuple[str, int] | None:
    """(buffer tensor, channel offset) when `tensor` lives as a channel slice of a concat's output."""
    sliced = memory.get("slices", {}).get(tensor)
    return tuple(sliced) if sliced else None


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


def return_freed_memory() -> None:
    """Hand memory freed inside the C heap back to the system. glibc keeps it resident otherwise: binding
    frees as much as the weights weigh, and a later peak of resident memory would not count a run that reuses
    it. A no-op where glibc's malloc_trim is missing."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
