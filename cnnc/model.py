"""The Python API: `cnnc.load(...)` returns a Model that runs numpy arrays through a compiled plan.

    import cnnc
    model = cnnc.load("specs/resnet50.cnn", weights="r50.safetensors")
    y = model(x)                 # x: (N, 3, 224, 224) float32 -> (N, 1000)
    print(model.summary())

The CLI's `run` uses these same objects.
"""

from __future__ import annotations

import numpy as np

from . import plan as plan_mod
from .errors import CnncError, Diagnostic
from .weights import initialise
from .weights import load as load_weights


class Model:
    def __init__(self, plan: dict, weights: dict[str, np.ndarray], target: str = "cpu", threads: int | None = None,
                 graph=None, weights_source: str = "", memory_limit: int | None = None, release_weights: bool = False):
        from .runtime.executor import DeviceUnavailableError, PlanError, Program
        self.plan = plan
        self.graph = graph
        self.weights_source = weights_source
        try:
            self.program = Program(plan, weights, target=target, threads=threads, memory_limit=memory_limit,
                                   release_weights=release_weights)
        except DeviceUnavailableError as err:
            raise CnncError(Diagnostic("E406", str(err), None)) from None
        except PlanError as err:
            raise CnncError(Diagnostic("E402", f"cannot run this plan: {err}", None)) from None
        self.input_names = [i["name"] for i in plan["inputs"]]
        self.output_names = [o["name"] for o in plan["outputs"]]

    @property
    def inputs(self) -> dict[str, tuple]:
        """Per-sample input shapes by name (the batch dimension is free)."""
        return {i["name"]: tuple(i["shape"]) for i in self.plan["inputs"]}

    @property
    def outputs(self) -> dict[str, tuple]:
        return {o["name"]: tuple(self.plan["tensors"][o["tensor"]]) for o in self.plan["outputs"]}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Named inputs -> named outputs. Checks names, ranks, shapes and dtypes first."""
        from .inputs import check_array
        missing = [n for n in self.input_names if n not in inputs]
        extra = [n for n in inputs if n not in self.input_names]
        if missing or extra:
            raise CnncError(Diagnostic("E401", f"inputs {sorted(inputs)} do not match the network's "
                                       f"{self.input_names}", None))
        checked = {}
        for name in self.input_names:
            a = inputs[name]
            if not isinstance(a, np.ndarray):
                a = np.asarray(a)
            checked[name] = np.ascontiguousarray(
                check_array(name, a, self.inputs[name], "input", True, lambda m: None), dtype=np.float32)
        batch = {len(a) for a in checked.values()}
        if len(batch) > 1:
            raise CnncError(Diagnostic("E401", f"inputs have different batch sizes {sorted(batch)}", None))
        return self.run_checked(checked)

    def run_checked(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run inputs already checked (the CLI's streaming path); a batch too large for memory is refused
        before anything is allocated."""
        from .runtime.memory import MemoryLimitError
        try:
            return self.program.run(inputs)
        except MemoryLimitError as err:
            raise CnncError(Diagnostic("E405", f"not enough memory: {err}", None,
                                       "use a smaller --batch-size, or --no-memory-check to try anyway")) from None

    def __call__(self, *args, **kwargs):
        """model(x) for one input, model(a=..., b=...) for several; one output returns an array, several a dict."""
        if args:
            if len(args) != 1 or kwargs or len(self.input_names) != 1:
                raise CnncError(Diagnostic("E401", f"this network takes inputs {self.input_names}; "
                                           "pass them by name", None))
            kwargs = {self.input_names[0]: args[0]}
        out = self.run(kwargs)
        return out[self.output_names[0]] if len(out) == 1 else out

    def summary(self) -> str:
        if self.graph is not None:
            from .inspect import table
            return table(self.graph)
        lines = [f"network {self.plan['network']}: {len(self.plan['steps'])} steps"]
        for s in self.plan["steps"]:
            lines.append(f"  {s['name']:40s} {s['op']:16s} {tuple(self.plan['tensors'][s['output']])}")
        return "\n".join(lines) + "\n"


def load(path: str, weights: str | dict | None = None, target: str = "cpu", threads: int | None = None,
         allow_missing: bool = False, seed: int = 0, network: str | None = None, include: tuple[str, ...] = (),
         memory_limit: int | None = None, opt_level: int | None = None, disabled: tuple[str, ...] = (),
         **params) -> Model:
    """A runnable model from a .cnn spec (compiled now, at `opt_level` without the `disabled` passes;
    `params` override network parameters) or a .cnnplan file. Without weights (and none bundled in the plan),
    weights are `cnnc init`'s seeded ones."""
    if target == "cuda":  # no GPU here: say so before compiling anything
        from .runtime.cuda_program import require_device
        from .runtime.executor import DeviceUnavailableError
        try:
            require_device()
        except DeviceUnavailableError as err:
            raise CnncError(Diagnostic("E406", str(err), None)) from None
    graph = None
    if str(path).endswith(".cnnplan"):
        if params:
            raise CnncError(Diagnostic("E201", "a compiled plan has fixed parameters; recompile to change them", None))
        if disabled or opt_level is not None:  # (the passes import networkx: not for a plan that needs none)
            from .passes import DEFAULT_OPT_LEVEL
            if disabled or opt_level != DEFAULT_OPT_LEVEL:
                raise CnncError(Diagnostic("E201", "a compiled plan's passes were chosen when it was compiled",
                                           None, "pass -O and --disable to `cnnc compile`, or run the .cnn spec"))
        plan, bundled = plan_mod.load(str(path))
    else:
        from .compiler import compile_spec
        from .passes import DEFAULT_OPT_LEVEL
        result = compile_spec(str(path), params, network, include,
                              DEFAULT_OPT_LEVEL if opt_level is None else opt_level, tuple(disabled))
        graph = result.graph
        plan, bundled = plan_mod.from_graph(graph), None
    constants = plan["constants"]
    if isinstance(weights, dict):
        from .weights import match
        w, missing = match(constants, weights, "weights", allow_missing)
        source = "given arrays"
    elif weights is not None:
        w, missing = load_weights(str(weights), constants, allow_missing)
        source = str(weights)
    elif bundled is not None:
        w, missing, source = bundled, [], "bundled in the plan"
    else:
        w, missing, source = initialise(constants, seed), [], f"seeded initialisation (cnnc init --seed {seed})"
    if missing:
        filler = initialise([c for c in constants if c["name"] in set(missing)], seed)
        w = {**w, **filler}
        source += f" ({len(missing)} missing tensors initialised)"
    # `w` is this function's own dict (the caller's arrays, if given, stay with the caller): the CPU program
    # drops each weight from it once packed
    return Model(plan, w, target, threads, graph, source, memory_limit, release_weights=True)
