"""`mp-deploy COMMAND ...`: one console script for every job.

A command is a module with `add_arguments(parser)` and `run(args) -> int` (the exit status of work that ran);
it is imported only when chosen, so `mp-deploy --help` stays fast. Library code raises typed errors
(mp_deploy.errors); this `main` is where they become one line on stderr and an exit status: 2 for a user error
(bad arguments, files or inputs), 1 for a failure. Flags that several commands share are defined once here, so
each flag name has one meaning across every command.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys

from mp_deploy.errors import MpDeployError

# name -> (module, one-line help)
COMMANDS = {
    "build": ("mp_deploy.export.build_engine", "export a task model to deployable engines (ONNX, AOTInductor, TensorRT)"),
    "bench": ("mp_deploy.latency", "latency of every backend side by side, per stage and end to end"),
    "golden": ("mp_deploy.golden", "parity with the reference implementation on its golden tensors"),
    "train": ("mp_deploy.train.command", "train a task model (one process or torchrun), resumable"),
    "eval": ("mp_deploy.train.eval_command", "a model's (or a trivial baseline's) metrics on a held-out split"),
    "serve": ("mp_deploy.serve.server", "serve artifacts on Triton Inference Server (PyTriton), HTTP and gRPC"),
    "triton-repo": ("mp_deploy.serve.repo", "a Triton model repository of artifacts, for NVIDIA's Triton container"),
    "predict": ("mp_deploy.prediction.command", "depth maps, masks and keypoints of your images, folders and videos"),
}


# ------------------------------------------------------------------ shared flags (one meaning each)

def add_task(parser: argparse.ArgumentParser, required: bool = True, default: str | None = None) -> None:
    from mp_deploy.configs import TASKS

    parser.add_argument("--task", choices=TASKS, required=required and default is None, default=default,
                        help="depth, seg (semantic segmentation) or pose")


def add_preset(parser: argparse.ArgumentParser) -> None:
    from mp_deploy.configs import PRESETS

    parser.add_argument("--preset", choices=sorted(PRESETS), help="default: the task's (nyu / ade20k / coco)")


def add_model_size(parser: argparse.ArgumentParser, help: str) -> None:
    from mp_deploy.configs import SIZES

    parser.add_argument("--model-size", choices=sorted(SIZES), help=help)


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present")


def add_runs(parser: argparse.ArgumentParser, default: int | None, help: str = "timed runs") -> None:
    parser.add_argument("--runs", type=positive_int, default=default, help=help)


def add_batch_size(parser: argparse.ArgumentParser, help: str, default: int | None = None) -> None:
    parser.add_argument("--batch-size", type=positive_int, default=default,
                        help=f"samples per engine call: {help}")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def int_list(text: str) -> list[int]:
    """'1,8' -> [1, 8] (each at least 1)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"every value must be at least 1, got {text!r}")
    return values


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


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _parser().parse_args(argv[:1] or ["--help"])  # prints the help, or the usage error (exit 2)
    name = argv[0]
    parser, module = command_parser(name)
    args = parser.parse_args(argv[1:])
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return module.run(args)
    except MpDeployError as e:
        print(f"mp-deploy {name}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"mp-deploy {name}: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
