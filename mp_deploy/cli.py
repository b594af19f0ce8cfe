"""`mp-deploy COMMAND ...`: one console script for every job.

A command is a module with `add_arguments(parser)` and `run(args) -> int` (the exit status of work that ran);
it is imported only when chosen, so `mp-deploy --help` stays fast. Library code raises typed errors
(mp_deploy.errors); this `main` is where they become one line on stderr and an exit status: 2 for a user error
(bad arguments, files or inputs), 1 for a failure. Flags that several commands share are defined once here, so
each flag name has one meaning and one value type across every command: docs/cli.md is the table (flag ->
meaning -> type), tests/test_cli.py holds every command's parser to it.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys

from mp_deploy.errors import MpDeployError, UsageError

# name -> (module, one-line help)
COMMANDS = {
    "build": ("mp_deploy.export.build_engine", "export a task model to deployable engines (ONNX, AOTInductor, TensorRT)"),
    "bench": ("mp_deploy.bench", "latency of every backend side by side, per stage and end to end"),
    "golden": ("mp_deploy.golden", "parity with the reference implementation on its golden tensors"),
    "train": ("mp_deploy.train.command", "train a task model (one process or torchrun), resumable"),
    "eval": ("mp_deploy.evaluation", "a model's (or a trivial baseline's) metrics on a held-out split"),
    "serve": ("mp_deploy.serve.server", "serve artifacts on Triton Inference Server (PyTriton), HTTP and gRPC"),
    "triton-repo": ("mp_deploy.serve.repo", "a Triton model repository of artifacts, for NVIDIA's Triton container"),
    "predict": ("mp_deploy.prediction.command", "depth maps, masks and keypoints of your images, folders and videos"),
}

# old spellings kept for one release: alias -> the flag it now is (docs/cli.md lists them)
DEPRECATED = {"--out-dir": "--output", "--out": "--output", "--no-kernels": "--kernels off"}
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")  # every command's --precision takes one of these (and checks
# which)


# ------------------------------------------------------------------ value types (docs/cli.md names them)

def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def int_list(text: str) -> list[int]:
    """'1,8' -> [1, 8] (each at least 1)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"every value must be at least 1, got {text!r}")
    return values


def name_list(text: str) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b')."""
    names = tuple(n for n in text.split(",") if n)
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def size_range(text: str) -> tuple[int, int, int]:
    """'480' -> (480, 480, 480); 'MIN,OPT,MAX' -> the three (each at least 1)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes MIN,OPT,MAX or one value, got {text!r}") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"takes MIN,OPT,MAX or one value (each at least 1), got {text!r}")
    return tuple(values)


# what docs/cli.md calls each value type (tests/test_cli.py holds the table to the parsers)
TYPE_WORDS = {"positive_int": "integer >= 1", "nonnegative_int": "integer >= 0", "int": "integer", "float": "number",
              "str": "text", "Path": "path", "size_range": "N or MIN,OPT,MAX", "int_list": "integers, comma-separated",
              "name_list": "names, comma-separated"}


def type_word(action: argparse.Action) -> str:
    """A flag's value type in docs/cli.md's words: switch, choice (its values listed in the meaning), or one of
    TYPE_WORDS."""
    if action.nargs == 0:
        return "switch"
    if action.choices is not None:
        return "choice"
    return TYPE_WORDS.get(getattr(action.type, "__name__", "str") if action.type else "str", "?")


def one_size(value: tuple[int, int, int] | None, flag: str) -> int | None:
    """The single size of a size_range for commands that take one value, UsageError for a range."""
    if value is None:
        return None
    if len(set(value)) != 1:
        raise UsageError(f"{flag} takes one value here, got the range {','.join(map(str, value))}")
    return value[0]


def check_choice(value, allowed, flag: str):
    """`value` if this command takes it, else UsageError naming what it takes."""
    if value not in allowed:
        raise UsageError(f"{flag} {value}: this command takes {', '.join(allowed)}")
    return value


class _Deprecated(argparse.Action):
    """An old spelling: says so on stderr, then sets what the new flag sets."""

    def __init__(self, option_strings, dest, new: str, const_value=None, **kw):
        self.new, self.const_value = new, const_value
        super().__init__(option_strings, dest, nargs=0 if const_value is not None else None, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is deprecated and goes in the next release: use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, self.const_value if self.const_value is not None else values)


# ------------------------------------------------------------------ shared flags (one meaning each: docs/cli.md)

def add_task(parser: argparse.ArgumentParser, required: bool = True, default: str | None = None) -> None:
    from mp_deploy import tasks

    parser.add_argument("--task", choices=tasks.names(), required=required and default is None, default=default,
                        help=tasks.help_text())


def add_preset(parser: argparse.ArgumentParser) -> None:
    from mp_deploy import tasks

    defaults = " / ".join(t.default_preset for t in tasks.all_tasks())
    parser.add_argument("--preset", choices=sorted(tasks.PRESETS), help=f"default: the task's ({defaults})")


def add_model_size(parser: argparse.ArgumentParser, help: str) -> None:
    from mp_deploy.configs import SIZES

    parser.add_argument("--model-size", choices=sorted(SIZES), help=help)


def add_device(parser: argparse.ArgumentParser, help: str = "default: cuda when present") -> None:
    parser.add_argument("--device", choices=["cpu", "cuda"], help=help)


def add_runs(parser: argparse.ArgumentParser, default: int | None, help: str = "timed runs") -> None:
    parser.add_argument("--runs", type=positive_int, default=default, help=help)


def add_batch_size(parser: argparse.ArgumentParser, help: str, default: int | None = None) -> None:
    parser.add_argument("--batch-size", type=positive_int, default=default,
                        help=f"samples per engine call or training pass: {help}")


def add_output(parser: argparse.ArgumentParser, help: str, default: str | None = None,
               deprecated: tuple[str, ...] = (), required: bool = False) -> None:
    """--output DIR: the folder a command writes its results to (old spellings in `deprecated`, which a required
    --output cannot have: check `args.output` in the command instead)."""
    parser.add_argument("--output", default=default, metavar="DIR", help=help, required=required)
    for alias in deprecated:
        parser.add_argument(alias, dest="output", action=_Deprecated, new="--output", help=argparse.SUPPRESS)


def add_sizes(parser: argparse.ArgumentParser, help: str) -> None:
    """--height and --width: one value, or MIN,OPT,MAX where a command builds for a range."""
    parser.add_argument("--height", type=size_range, metavar="H|MIN,OPT,MAX", help=help)
    parser.add_argument("--width", type=size_range, metavar="W|MIN,OPT,MAX", help="like --height")


def add_precision(parser: argparse.ArgumentParser, default: str, help: str) -> None:
    parser.add_argument("--precision", default=default, choices=PRECISIONS, help=help)


def add_backend(parser: argparse.ArgumentParser, help: str, default: str = "auto") -> None:
    from mp_deploy import backends

    words = (backends.AUTO, backends.ALL, backends.EAGER, *backends.names())
    parser.add_argument("--backend", default=default, choices=words, help=help)


def add_kernels(parser: argparse.ArgumentParser, default: str, help: str) -> None:
    parser.add_argument("--kernels", default=default, choices=["on", "off"], help=help)
    parser.add_argument("--no-kernels", dest="kernels", action=_Deprecated, new="--kernels off", const_value="off",
                        help=argparse.SUPPRESS)


def add_threads(parser: argparse.ArgumentParser, help: str = "CPU threads of CPU engines and eager runs (default: "
                "MP_DEPLOY_CPU_THREADS, else half the available CPUs; mp_deploy/cpu_threads.py says why)",
                default: int | None = None) -> None:
    parser.add_argument("--threads", type=nonnegative_int, default=default, help=help)


# ------------------------------------------------------------------ main

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mp-deploy", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train, export and ship Meta Prompts models (depth, segmentation, pose).",
        epilog="commands:\n" + "\n".join(f"  {name:12s} {help}" for name, (_, help) in COMMANDS.items())
        + "\n\n`mp-deploy COMMAND --help` for a command's options.")
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="one of: " + ", ".join(COMMANDS))
    return parser


def command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    """The argument parser of command `name` and its module."""
    module_name, help = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"mp-deploy {name}", description=help)
    module.add_arguments(parser)
    return parser, module


def _terminate(signum, frame):
    # a kill (timeout, supervisor) unwinds like an exception: atomic writes remove their temporaries
    raise SystemExit(128 + signum)


def run_main(name: str, work) -> int:
    """work() with the CLI's error handling: a typed error is one line on stderr and its exit status (2 for a user
    error, 1 for a failure), Ctrl-C 130; SIGTERM unwinds like an exception (atomic writes clean up)."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return work()
    except MpDeployError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _threads_argument(argv: list[str]) -> int | None:
    """--threads N from a command line not parsed yet (None when absent or not a number: the parser says why)."""
    for i, word in enumerate(argv):
        value = word.split("=", 1)[1] if word.startswith("--threads=") else (
            argv[i + 1] if word == "--threads" and i + 1 < len(argv) else None)
        if value is not None:
            return int(value) if value.isdigit() and len(value) < 5 else None
    return None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _parser().parse_args(argv[:1] or ["--help"])  # prints the help, or the usage error (exit 2)
    name = argv[0]
    from mp_deploy.cpu_threads import prepare_environment  # before the command's modules import torch

    prepare_environment(_threads_argument(argv))
    parser, module = command_parser(name)
    args = parser.parse_args(argv[1:])
    return run_main(f"mp-deploy {name}", lambda: module.run(args))


if __name__ == "__main__":
    sys.exit(main())
