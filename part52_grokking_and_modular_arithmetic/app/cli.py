"""Command line: ``python -m part52_grokking_and_modular_arithmetic <command>`` (or ``grokking-course``).

Only the chosen command's options are built and heavy imports wait for the command, so ``--help`` answers at
once. A failure the user can act on is one line ``error: ...`` (status 1; bad arguments 2; Ctrl-C 130).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Mapping
from typing import NamedTuple

__all__ = ["main", "run", "build_parser", "commands", "Command", "error_line", "number_arg", "typed_arg"]

PROG = "python -m part52_grokking_and_modular_arithmetic"
DEVICES = ("auto", "cpu", "cuda")


def typed_arg(kind: type, check: Callable[[object], None], expected: str) -> Callable[[str], object]:
    """An argparse ``type``: ``kind(text)`` passing ``check``, else a usage error saying what was ``expected``."""

    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        try:
            check(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e) or f"expected {expected}, got {text!r}") from None
        return value

    return parse


def number_arg(kind: type, what: str, minimum: int | float, strict: bool = True) -> Callable[[str], object]:
    """An argparse ``type``: a finite ``kind`` (int or float) above ``minimum`` (``>=`` when not ``strict``)."""

    def check(value) -> None:
        if not (value > minimum if strict else value >= minimum) or not value < float("inf"):
            raise ValueError

    return typed_arg(kind, check, f"{what} {'>' if strict else '>='} {minimum:g}")


class Command(NamedTuple):
    """A command: its one-line help, the function adding its options to its parser, the function running it."""

    help: str
    add_options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


@functools.cache
def commands() -> dict[str, Command]:
    """Every command, registered by the module that defines it (importing these loads no torch)."""
    from ..runs.commands import COMMANDS as runs
    from ..training.commands import COMMANDS as training
    from .report import COMMANDS as report

    return {**runs, **training, **report}


#: the path-valued arguments (argparse's attribute -> the option as typed; "" for a positional argument)
_PATH_OPTIONS = {"out": "--out", "out_dir": "--out-dir", "html": "--html", "csv": "--csv", "path": "", "dir": ""}
_PATH_OPTIONS |= {"notebook": "--notebook", "run_path": "--run-path"}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that command's options are built (the others' import torch, the hub...)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Grokking & Modular Arithmetic: train, download and inspect the grokking run's checkpoints.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(commands()) + "}", required=True)
    for name, command in commands().items():
        command_parser = sub.add_parser(name, help=command.help)
        if only is None or only == name:
            command.add_options(command_parser)
    return parser


def error_line(e: BaseException, paths: Mapping[str, object] | None = None) -> str | None:
    """The one-line message of a failure the user can act on, or None (a bug: its traceback should show). An
    OS error on a path names the argument that gave it: ``paths`` maps each as written (``"--out-dir x"``) to it."""
    if isinstance(e, OSError) and e.filename is not None and type(e).__module__ == "builtins":
        failed = os.path.abspath(os.fsdecode(e.filename))
        where = os.fsdecode(e.filename)
        for given, path in (paths or {}).items():
            path = os.path.abspath(os.fsdecode(path))
            if failed == path or failed.startswith(path.rstrip(os.sep) + os.sep):
                where = given if failed == path else f"{given}: {where}"
                break
        return f"{where}: {e.strerror or e}"
    ours = type(e).__module__.startswith(
        __package__.partition(".")[0] + "."
    )  # every error class of the package speaks to the user
    if ours or isinstance(e, (OSError, ValueError)) or (isinstance(e, MemoryError) and str(e)):
        return str(e)
    return None


def _given_paths(args: argparse.Namespace) -> dict[str, object]:
    paths = {
        f"{option} {value}".strip(): value
        for dest, option in _PATH_OPTIONS.items()
        if (value := getattr(args, dest, None)) is not None
    }
    if env := os.environ.get("PART52_RUN_PATH"):  # the default run path's override (provision.ENV_RUN_PATH)
        paths[f"PART52_RUN_PATH={env}"] = env
    return paths


def main(argv: list[str] | None = None, *, owns_process: bool = False) -> int:
    """Run the command in ``argv``; the exit status (0, 1 an error, 2 bad arguments, 128 + signal interrupted).
    ``owns_process``: the process exits after it (:func:`run`), so process-wide settings may change."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(only=argv[0] if argv and argv[0] in commands() else "").parse_args(argv)
    args.owns_process = owns_process
    try:
        return commands()[args.command].run(args)
    except KeyboardInterrupt as e:
        if (signum := getattr(e, "signum", None)) is not None:  # train.TrainingInterrupted: it says what was saved
            print(f"\n{e}", file=sys.stderr)
            return 128 + int(signum)
        print(f"\nInterrupted: `{args.command}` stopped before it wrote anything.", file=sys.stderr)
        return 130
    except Exception as e:
        line = error_line(e, _given_paths(args))
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1


def run() -> None:
    """Entry point: :func:`main`, then exit; after an interruption, signals during shutdown are ignored (the
    message about what was saved stays the last line)."""
    import signal

    try:
        status = main(owns_process=True)
    except KeyboardInterrupt:  # a repeated Ctrl-C after the trainer had handed the signals back: no traceback
        print("\nInterrupted.", file=sys.stderr)
        status = 128 + signal.SIGINT
    if status in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(status)


if __name__ == "__main__":
    run()
