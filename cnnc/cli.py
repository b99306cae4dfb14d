"""The `cnnc` command line."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from . import __version__
from .errors import CnncError, Diagnostic, render
from .passes import DEFAULT_OPT_LEVEL, PASS_NAMES
from .passes.memory import OPTIONS as MEMORY_OPTIONS
from .passes.memory import describe as describe_memory

EXAMPLES = """\
examples:
  cnnc inspect specs/resnet50.cnn                  per-layer table: shapes, parameters, MACs
  cnnc inspect specs/resnet50.cnn --depth 1        one row per top-level block
  cnnc inspect specs/resnet50.cnn --format json    machine-readable (weights names and shapes)
  cnnc inspect specs/yolov3_tiny.cnn --set classes=20
  cnnc inspect specs/lenet5.cnn --after expand     the graph IR after a pass
  cnnc compile specs/resnet18.cnn -o resnet18.cnnplan
  cnnc run specs/resnet50.cnn                      run on seeded weights and a synthetic batch
  cnnc run specs/resnet50.cnn --weights r50.safetensors --input photos/ --output logits.npy
  cnnc init specs/resnet18.cnn -o r18.npz --seed 0
  cnnc ops                                         the op reference
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 1, same format as ours
        raise CnncError(Diagnostic("E100", f"{self.prog}: {message}", None, f"see `{self.prog} --help`"))


def _common(p: argparse.ArgumentParser):
    p.add_argument("spec", help="a .cnn spec file")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a network parameter, e.g. --set classes=20 (repeatable)")
    p.add_argument("--network", help="which network of the file, when it defines several")
    p.add_argument("--include", action="append", default=[], metavar="DIR",
                   help="another folder that `import` may read (repeatable)")
    p.add_argument("-O", dest="opt_level", type=int, default=DEFAULT_OPT_LEVEL, choices=(0, 1, 2),
                   help=f"optimisation level (default {DEFAULT_OPT_LEVEL})")
    p.add_argument("--disable", action="append", default=[], metavar="PASS", help="skip a pass (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="cnnc", description="cnnc: a compiler for convolutional neural networks. "
                 "Write a network as a .cnn spec; inspect it, compile it, run it.",
                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    ap.add_argument("--version", action="version", version=f"cnnc {__version__}")
    ap.add_argument("--debug", action="store_true", help="show Python tracebacks of internal errors")
    ap.add_argument("--error-format", choices=("text", "json"), default="text",
                    help="diagnostics as text (default) or JSON with stable codes")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("inspect", help="show a network's layers, shapes, parameters and MACs",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Compile a spec and print its layers: instance name, op, output shape, "
                       "parameters and MACs per sample, with totals.",
                       epilog="examples:\n  cnnc inspect specs/resnet50.cnn\n  cnnc inspect specs/resnet50.cnn --depth 1\n"
                       "  cnnc inspect specs/densenet121.cnn --format json > densenet.json\n"
                       "  cnnc inspect specs/googlenet.cnn --format dot | dot -Tsvg > googlenet.svg\n"
                       "  cnnc inspect specs/lenet5.cnn --after infer_shapes")
    _common(p)
    p.add_argument("--format", choices=("table", "json", "dot", "text"), default="table",
                   help="table (default), json, dot (Graphviz), or text (the IR dump)")
    p.add_argument("--depth", type=int, metavar="K", help="collapse blocks below depth K into one row each")
    p.add_argument("--after", metavar="PASS", help="dump the graph IR after this pass (" + ", ".join(PASS_NAMES) + ")")

    p = sub.add_parser("compile", help="compile a spec into a plan file",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Compile a spec into a .cnnplan file: the program the runtime executes "
                       "(versioned format, no pickle, checksummed), optionally with its weights.",
                       epilog="examples:\n  cnnc compile specs/resnet18.cnn -o resnet18.cnnplan\n"
                       "  cnnc compile specs/resnet50.cnn -o r50.cnnplan --weights r50.safetensors")
    _common(p)
    p.add_argument("-o", "--output", required=True, help="the .cnnplan file to write")
    p.add_argument("--weights", help="bundle these weights (.npz or .safetensors) into the plan")

    p = sub.add_parser("run", help="run a network on data (or a synthetic batch)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run a spec or a compiled plan on the CPU (or a GPU: --target cuda). Without --weights a spec runs on "
                       "cnnc init's seeded weights; without --input on a seeded synthetic batch.",
                       epilog="examples:\n  cnnc run specs/resnet50.cnn\n"
                       "  cnnc run specs/resnet18.cnn --weights r18.safetensors --input cat.jpg\n"
                       "  cnnc run r50.cnnplan --input images/ --batch-size 16 --output logits.npy\n"
                       "  cnnc run specs/yolov3_tiny.cnn --input x.npy --output dets.npz --threads 2")
    _common(p)
    p.add_argument("--input", "-i", metavar="X", help=".npy, .npz (one array per input), an image, or a folder of images")
    p.add_argument("--output", "-o", metavar="Y", help=".npy (one output) or .npz (one array per output)")
    p.add_argument("--weights", "-w", metavar="W", help=".npz or .safetensors weights (names as `inspect --format json`)")
    p.add_argument("--allow-missing", action="store_true", help="initialise weights missing from --weights")
    p.add_argument("--batch-size", "-b", type=int, metavar="B", help="samples per batch (default: 16, or 1 for the synthetic batch)")
    p.add_argument("--threads", type=int, metavar="N", help="threads (default: all cores)")
    p.add_argument("--target", choices=("cpu", "cuda", "reference"), default="cpu",
                   help="cpu (Numba kernels, default), cuda (an NVIDIA GPU; pip install -e '.[cuda]') "
                   "or reference (plain numpy)")
    p.add_argument("--strict", action="store_true", help="refuse inputs holding NaN/Inf instead of warning")
    p.add_argument("--no-memory-check", action="store_true",
                   help="run even when the batch's estimated memory exceeds what is available")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialised weights (default 0)")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line, for the top-5 report")
    p.add_argument("--top", type=int, default=5, metavar="K", help="classes to report per input (default 5)")

    p = sub.add_parser("bench", help="measure latency, throughput and memory; compare with ONNX Runtime and PyTorch",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Warm up, then time repeated runs on the CPU (or --target cuda) target: median and spread of latency, "
                       "throughput, resident memory; with --compare, the same architecture and weights run by ONNX "
                       "Runtime (through cnnc's own ONNX export) and PyTorch eager (where installed) in the same "
                       "process, with the ratios; with --profile, a per-kernel table.",
                       epilog="examples:\n  cnnc bench specs/resnet50.cnn --compare onnxruntime,torch\n"
                       "  cnnc bench specs/mobilenet_v2.cnn --batch-size 1,16 --threads 2 --format json\n"
                       "  cnnc bench specs/resnet18.cnn --profile")
    _common(p)
    p.add_argument("--batch-size", "-b", default="1", help="comma-separated batch sizes (default 1)")
    p.add_argument("--threads", type=int, help="threads (default: all cores)")
    p.add_argument("--target", choices=("cpu", "cuda"), default="cpu",
                   help="cpu (default) or cuda (an NVIDIA GPU; the torch peer then runs on it too)")
    p.add_argument("--compare", help="peers: onnxruntime, torch (comma-separated)")
    p.add_argument("--profile", action="store_true", help="per-kernel table: time, GFLOP/s, share")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--weights", "-w", help="weights (default: cnnc init's seeded weights)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--repeat", type=int, default=20, help="timed runs (default 20)")

    p = sub.add_parser("init", help="write initialised weights for a spec",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Write a proper initialisation: He (Kaiming) normal for convolutions and dense "
                       "layers, zero biases, identity batchnorm statistics.",
                       epilog="examples:\n  cnnc init specs/resnet18.cnn -o r18.npz\n"
                       "  cnnc init specs/unet.cnn -o unet.safetensors --seed 3")
    _common(p)
    p.add_argument("-o", "--output", required=True, help=".npz or .safetensors file to write")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    p = sub.add_parser("export", help="export a network with its weights as an ONNX model",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Write an ONNX model (checked with onnx.checker, full check) holding the graph and "
                       "its weights; node and initializer names are the spec's instance and weight names, and "
                       "the batch dimension is symbolic unless --batch fixes it. Open it in Netron to look at it.",
                       epilog="examples:\n  cnnc export specs/resnet50.cnn --weights r50.safetensors -o resnet50.onnx\n"
                       "  cnnc export specs/mobilenet_v2.cnn -o mnv2.onnx --opset 18 --batch 1")
    _common(p)
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--weights", "-w", metavar="W", help=".npz or .safetensors (default: cnnc init's seeded weights)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (13 or newer, default 17)")
    p.add_argument("--batch", default="dynamic", help="a fixed batch size, or 'dynamic' (default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialised weights when --weights is absent")

    p = sub.add_parser("import", help="turn an ONNX model into a .cnn spec and its weights",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Read an ONNX CNN and write a readable spec: a plain chain where the graph is a "
                       "chain, names only where branches need them, instance names from the ONNX names, shapes as "
                       "comments. Weights go to --weights-out under the spec's weight names.",
                       epilog="examples:\n  cnnc import resnet50.onnx -o resnet50.cnn --weights-out resnet50.safetensors\n"
                       "  cnnc run resnet50.cnn --weights resnet50.safetensors")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("-o", "--output", required=True, help="the .cnn spec to write")
    p.add_argument("--weights-out", metavar="W", help="write the weights (.npz or .safetensors)")
    p.add_argument("--name", help="the network's name (default: the file name)")

    p = sub.add_parser("ops", help="list the ops of the language with their arguments",
                       description="Print every op with its arguments and defaults.")
    p.add_argument("name", nargs="?", help="one op")
    return ap


def _print_warnings(warnings, fmt):
    if warnings:
        print(render(warnings, fmt), file=sys.stderr)


def _compile(args, stop_after=None):
    from .compiler import compile_spec, parse_overrides
    overrides = parse_overrides(args.set)
    return compile_spec(args.spec, overrides, args.network, tuple(args.include), args.opt_level,
                        tuple(args.disable), stop_after=stop_after)


def cmd_inspect(args) -> int:
    from . import inspect as ins
    if args.depth is not None and args.depth < 1:
        raise CnncError(Diagnostic("E203", "--depth must be at least 1", None))
    # The table, JSON and dot show the network as written (after dead-code elimination), not the fused
    # kernels: use --after PASS to see what a later pass made of it.
    result = _compile(args, stop_after=args.after or "dce")
    _print_warnings(result.warnings, args.error_format)
    g = result.graph
    from .plan import from_graph
    if args.after in ("memory", *MEMORY_OPTIONS):  # the graph, then where each tensor lives
        sys.stdout.write(g.dump() + describe_memory(from_graph(g)))
        return 0
    if args.after or args.format in ("text", "dot"):
        sys.stdout.write(g.dump() if args.after or args.format == "text" else ins.dot(g))
        return 0
    # The memory figures are the plan's that runs: compiled through every pass at the level asked for.
    plan = from_graph(_compile(args).graph)
    if args.format == "json":
        sys.stdout.write(ins.json_text(g, plan))
    else:
        label = " ".join([f"-O{args.opt_level}"] + [f"--disable {p}" for p in args.disable])
        sys.stdout.write(ins.table(g, args.depth, (plan, label)))
    return 0


def cmd_compile(args) -> int:
    from . import plan as plan_mod
    from .weights import load as load_weights
    result = _compile(args)
    _print_warnings(result.warnings, args.error_format)
    plan = plan_mod.from_graph(result.graph)
    weights = None
    if args.weights:
        weights, _ = load_weights(args.weights, plan["constants"])
    plan_mod.save(args.output, plan, weights)
    print(f"wrote {args.output}: {len(plan['steps'])} steps, {len(plan['constants'])} constants"
          + (" with weights" if weights is not None else ""), file=sys.stderr)
    return 0


def cmd_ops(args) -> int:
    from .ops import REGISTRY, ALIASES, REQUIRED, lookup
    names = [args.name] if args.name else sorted(n for n, op in REGISTRY.items() if not op.internal)
    for name in names:
        op = lookup(name, internal=False)
        if op is None:
            raise CnncError(Diagnostic("E200", f"unknown op '{name}'", None, "`cnnc ops` lists them all"))
        sig = ", ".join(a.name if a.default is REQUIRED else f"{a.name}={_show(a.default)}" for a in op.attrs)
        aliases = sorted(k for k, v in ALIASES.items() if v == op.name)
        print(f"{op.name}({sig})" + (f"   aliases: {', '.join(aliases)}" if aliases else ""))
        print(f"    {op.doc}")
    return 0


def _show(v):
    if isinstance(v, bool):
        return str(v).lower()
    if v is None:
        return "none"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def cmd_init(args) -> int:
    from . import plan as plan_mod
    from .fileio import save_arrays
    from .weights import initialise
    result = _compile(args)
    _print_warnings(result.warnings, args.error_format)
    constants = plan_mod.from_graph(result.graph)["constants"]
    if not args.output.lower().endswith((".npz", ".safetensors")):
        raise CnncError(Diagnostic("E403", f"{args.output}: weights are written as .npz or .safetensors", None))
    save_arrays(args.output, initialise(constants, args.seed))
    print(f"wrote {args.output}: {len(constants)} tensors (seed {args.seed})", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from . import plan as plan_mod
    from .onnx_export import export, save
    from .weights import initialise
    from .weights import load as load_weights
    if args.batch == "dynamic":
        batch = None
    else:
        try:
            batch = int(args.batch)
        except ValueError:
            batch = 0
        if batch < 1:
            raise CnncError(Diagnostic("E203", f"--batch must be a positive integer or 'dynamic', found {args.batch}",
                                       None))
    result = _compile(args, stop_after="dce")  # every instance keeps its own ONNX node
    _print_warnings(result.warnings, args.error_format)
    constants = plan_mod.from_graph(result.graph)["constants"]
    if args.weights:
        weights, _ = load_weights(args.weights, constants)
    else:
        weights = initialise(constants, args.seed)
        print(f"cnnc: no --weights: exporting seeded initialisation (cnnc init --seed {args.seed})", file=sys.stderr)
    model = export(result.graph, weights, opset=args.opset, batch=batch)
    save(model, args.output)
    print(f"wrote {args.output}: {len(model.graph.node)} ONNX nodes, opset {args.opset}", file=sys.stderr)
    return 0


def cmd_import(args) -> int:
    from .onnx_import import import_model, write
    if not args.output.endswith(".cnn"):
        raise CnncError(Diagnostic("E403", f"{args.output}: the spec must end in .cnn", None))
    if args.weights_out and not args.weights_out.lower().endswith((".npz", ".safetensors")):
        raise CnncError(Diagnostic("E403", f"{args.weights_out}: weights are written as .npz or .safetensors", None))
    text, weights = import_model(args.model, args.name)
    write(text, weights, args.output, args.weights_out)
    print(f"wrote {args.output}" + (f" and {args.weights_out} ({len(weights)} tensors)" if args.weights_out else
                                    f" ({len(weights)} weight tensors not written: add --weights-out)"),
          file=sys.stderr)
    return 0


def cmd_run(args) -> int:
    from .run import run_command
    return run_command(args)


def cmd_bench(args) -> int:
    from .bench import run_bench
    if args.warmup < 0 or args.repeat < 1:
        raise CnncError(Diagnostic("E203", "--warmup must be >= 0 and --repeat >= 1", None))
    return run_bench(args)


COMMANDS = {"inspect": cmd_inspect, "compile": cmd_compile, "run": cmd_run, "bench": cmd_bench, "init": cmd_init, "export": cmd_export, "import": cmd_import,
            "ops": cmd_ops}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug and --error-format are accepted anywhere on the line, before or after the command.
    debug = "--debug" in argv
    fmt = "text"
    rest = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--debug":
            pass
        elif a == "--error-format" and i + 1 < len(argv):
            fmt = argv[i + 1]
            i += 1
        elif a.startswith("--error-format="):
            fmt = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    if fmt not in ("text", "json"):
        print(render([Diagnostic("E100", f"--error-format must be text or json, found {fmt!r}")], "text"),
              file=sys.stderr)
        return 1
    argv = (["--error-format", fmt] if fmt != "text" else []) + (["--debug"] if debug else []) + rest
    try:
        ap = build_parser()
        args = ap.parse_args(argv)
        if not args.command:
            ap.print_help()
            return 1
        return COMMANDS[args.command](args)
    except CnncError as err:
        print(render(err.diagnostics, fmt), file=sys.stderr)
        return 1
    except MemoryError as err:  # an allocation no estimate foresaw: still one message, not a traceback
        print(render([Diagnostic("E405", f"not enough memory{': ' + str(err) if str(err) else ''}", None,
                                 "use a smaller --batch-size or smaller inputs")], fmt), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cnnc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # a bug in cnnc, not in the user's input
        if debug:
            traceback.print_exc()
        print(f"cnnc: internal error: {type(err).__name__}: {err}"
              + ("" if debug else " (run with --debug for the traceback; please report it)"), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
