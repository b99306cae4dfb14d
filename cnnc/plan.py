"""The compiled plan: what `cnnc compile` writes and the runtime executes.

A `.cnnplan` file is a zip archive (stored, no pickle anywhere) holding
  plan.json           the program: format version, inputs, outputs, tensors (per-sample shapes), the
                      ordered steps (op, inputs, output, attributes, parameter names), constants, the
                      memory plan (views, per-sample arena offsets), and a SHA-256 checksum of all of
                      it and of the weights
  weights/NAME.npy    the weights, when compiled with --weights (loaded with allow_pickle=False)
The runtime reads only this format, never the compiler's graph, so a plan can be shipped to worker
processes. Loading verifies the format name, the version and the checksum.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile

import numpy as np

from .errors import CnncError, Diagnostic
from .fileio import READ_ERRORS, atomic_write, describe

FORMAT = "cnnplan"
VERSION = 1


def _jsonable(v):
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


def _untuple(v):
    if isinstance(v, list):
        return tuple(_untuple(x) for x in v)
    return v


def from_graph(graph) -> dict:
    """The plan of a compiled graph: steps in topological order over named tensors."""
    g = graph
    steps = []
    for name in g.op_nodes():
        d = g.node(name)
        span = d["span"]
        steps.append({
            "name": name,
            "op": d["op"],
            "inputs": list(d["inputs"]),
            "output": name,
            "attrs": {k: _jsonable(v) for k, v in sorted(d["attrs"].items())},
            "params": dict(d["params"]),
            "macs": g.node_macs(name),
            "source": f"{span.path}:{span.line}:{span.column}" if span else None,
        })
    plan = {
        "format": FORMAT,
        "version": VERSION,
        "network": g.name,
        "params": {k: _jsonable(v) for k, v in g.g.graph.get("params", {}).items()},
        "inputs": [{"name": n, "shape": list(g.node(n)["shape"]),
                    "info": {k: _jsonable(v) for k, v in g.g.graph["input_info"].get(n, {}).items() if k != "shape"}}
                   for n in g.inputs],
        "outputs": [{"name": k, "tensor": v} for k, v in g.outputs.items()],
        "tensors": {n: list(g.node(n)["shape"]) for n in g.nodes()},
        "steps": steps,
        "constants": [{"name": c.name, "shape": list(c.shape), "learnable": c.learnable, "init": c.init}
                      for c in g.constants.values()],
    }
    # Buffer places are decided here, at compile time: per-sample offsets in one arena (x batch at run time).
    from .runtime.memory import plan_memory
    options = g.g.graph.get("memory_options", {})  # the `memory` pass's choice (default: every part)
    plan["memory"] = plan_memory(plan, concat_in_place=options.get("concat_in_place", True),
                                 in_place=options.get("in_place", True))
    return plan


def _digest(plan_wo_checksum: dict, weights: dict[str, np.ndarray] | None) -> str:
    h = hashlib.sha256(json.dumps(plan_wo_checksum, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(weights or {}):
        a = np.ascontiguousarray(weights[name])
        h.update(name.encode() + b"\0" + str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.reshape(-1).view(np.uint8))  # (the array's bytes without a copy of them)
    return h.hexdigest()


def _check_structure(plan: dict) -> str | None:
    """What is wrong with the plan's layout, if anything (so a damaged plan fails here, not in the runtime)."""
    fields = {"version": int, "network": str, "inputs": list, "outputs": list, "tensors": dict, "steps": list,
              "constants": list, "memory": dict}
    for key, kind in fields.items():
        if not isinstance(plan.get(key), kind):
            return f"'{key}' is missing or not a {kind.__name__}"
    for step in plan["steps"]:
        if not isinstance(step, dict) or not all(isinstance(step.get(k), t) for k, t in (
                ("name", str), ("op", str), ("inputs", list), ("output", str), ("attrs", dict), ("params", dict))):
            return "a step lacks name, op, inputs, output, attrs or params"
    for item in plan["inputs"] + plan["outputs"] + plan["constants"]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return "an input, output or constant has no name"
    return None


def save(path: str, plan: dict, weights: dict[str, np.ndarray] | None = None) -> None:
    plan = dict(plan)
    plan.pop("checksum", None)
    plan["weights_included"] = weights is not None
    plan["checksum"] = _digest(plan, weights)
    text = json.dumps(plan, indent=1, sort_keys=True)
    with atomic_write(path) as f:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
            info = zipfile.ZipInfo("plan.json", date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(info, text)
            for name in sorted(weights or {}):
                buf = io.BytesIO()
                np.save(buf, np.ascontiguousarray(weights[name]), allow_pickle=False)
                z.writestr(zipfile.ZipInfo(f"weights/{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


_READ_CHUNK = 1 << 22  # bytes of a bundled weight read at a time


def _read_npy_member(z: zipfile.ZipFile, entry: str) -> np.ndarray:
    """One .npy array of the archive, read straight into its array (no second copy of it): its header must
    describe exactly the bytes the entry holds (a damaged shape is refused before anything is allocated), and
    reading to the entry's end checks its CRC."""
    with z.open(entry) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"{entry}: .npy version {version} is not supported")
        nbytes = math.prod(shape) * dtype.itemsize  # (Python integers: a huge shape cannot wrap around)
        size = z.getinfo(entry).file_size
        if dtype.hasobject or any(d < 0 for d in shape) or f.tell() + nbytes != size:
            raise ValueError(f"{entry}: its header does not describe its {size} bytes")
        array = np.empty(shape[::-1] if fortran else shape, dtype)
        dest = array.reshape(-1).view(np.uint8)
        for start in range(0, nbytes, _READ_CHUNK):  # (a zip member's readinto reads the whole rest first)
            chunk = f.read(min(_READ_CHUNK, nbytes - start))
            if len(chunk) != min(_READ_CHUNK, nbytes - start):
                raise EOFError(f"{entry}: shorter than its header says")
            dest[start:start + len(chunk)] = np.frombuffer(chunk, np.uint8)
        f.read(1)  # (at the entry's end: the CRC is checked)
    return array.T if fortran else array


def load(path: str) -> tuple[dict, dict[str, np.ndarray] | None]:
    def bad(what, hint="recompile the spec with `cnnc compile`"):
        return CnncError(Diagnostic("E402", f"{path}: {what}", None, hint))
    try:
        with zipfile.ZipFile(path) as z:
            try:
                plan = json.loads(z.read("plan.json"))
            except KeyError:
                raise bad("not a cnnc plan (no plan.json)") from None
            weights = None
            if isinstance(plan, dict) and plan.get("weights_included"):
                weights = {}
                for entry in z.namelist():
                    if entry.startswith("weights/") and entry.endswith(".npy"):
                        weights[entry[len("weights/"):-4]] = _read_npy_member(z, entry)
    except FileNotFoundError:
        raise CnncError(Diagnostic("E404", f"{path}: cannot read: no such file", None)) from None
    except READ_ERRORS as err:  # (a damaged .npy header inside reaches numpy's header parser: a tokenizer error)
        raise bad(f"not a readable plan file ({describe(err)})") from None
    if not isinstance(plan, dict) or plan.get("format") != FORMAT:
        raise bad("not a cnnc plan")
    problem = _check_structure(plan)
    if problem:
        raise bad(f"malformed plan: {problem}")
    if plan.get("version") != VERSION:
        raise bad(f"plan format version {plan.get('version')} is not supported by this cnnc (reads version {VERSION})")
    checksum = plan.pop("checksum", None)
    if checksum != _digest(plan, weights):
        raise bad("checksum mismatch: the file is corrupted or was edited")
    plan["checksum"] = checksum
    for step in plan["steps"]:
        step["attrs"] = {k: _untuple(v) for k, v in step["attrs"].items()}
    return plan, weights
