"""Command line of the course package: ``python -m part52_grokking_and_modular_arithmetic <command>``
(also installed as ``grokking-course``).

Commands:

* ``train``    — train the model with the paper's recipe (every :class:`~.config.TrainConfig` field is an
  option) and write the checkpoint history, resuming an interrupted run at the same path;
* ``fetch``    — make sure the default checkpoint history is available, as the notebooks get it: the local
  file, else the hub, else local training (:func:`.provision.load_full_run_data`);
* ``download`` — fetch the course's checkpoint history from the Hugging Face hub (hub only);
* ``info``     — say what a run file holds (p, epochs, checkpoints, final losses, config);
* ``report``   — the main job of :mod:`.report` (provision the model, run the solutions notebook, write an
  offline HTML report); its options are :mod:`.report`'s own (``report --help``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from .config import TrainConfig, check_field
from .data import TASKS

__all__ = ["main", "run", "build_parser"]

PROG = "python -m part52_grokking_and_modular_arithmetic"
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _checked(kind: type, field: str) -> Callable[[str], object]:
    """An argparse ``type``: parse the text as ``kind`` and validate it with the config's own check of
    ``field`` (:func:`.config.check_field`), so a bad value is a one-line usage error (exit status 2)."""

    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        try:
            check_field(field, value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return value

    parse.__name__ = f"{field} value"  # argparse names the type in some messages
    return parse


def _positive_seconds(text: str) -> float:
    """An argparse ``type`` for a time limit: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


_WRITTEN = (
    "The checkpoint history (paper layout, one state dict every --save-every epochs, the train loss of every "
    "epoch, the test loss every --test-every epochs, the config and the train split) is written to --out "
    "atomically (the previous file stays valid until the new one replaces it): at a checkpoint epoch at most "
    "once a minute, at the end, and when training stops early: Ctrl-C or SIGTERM (at the end of the current "
    "epoch; the command then exits with status 130 or 143), a diverging loss (nan/inf: status 1, the "
    "checkpoints before it are kept). Running the same command again resumes an unfinished run from the last "
    "write. Before training, the folder of --out must be writable with room for the final file, and the "
    "memory the configuration needs must be available; while training, <out>.lock keeps a second run from "
    "writing the same file. If --out cannot be written at the end (disk full, read-only), the run is saved "
    "in the temp or home folder instead and the command says where. --out is a file path (its folder is created); "
    "an existing file there that is not a run of this configuration is never overwritten, and a symlink is "
    "written through (the link stays)."
)


def _add_train_parser(sub) -> None:
    from .provision import default_run_path

    d = _DEFAULTS
    tp = sub.add_parser(
        "train",
        help="train the model and write its checkpoint history",
        description=(
            "Train the one-layer transformer on (x op y) mod p with the paper's recipe: full-batch AdamW, a linear "
            "warm-up from lr 0, float64 cross-entropy over all p+1 logits at the last position, the paper init. "
            + _WRITTEN
        ),
    )
    tp.add_argument("--p", type=_checked(int, "p"), default=d["p"], help=f"the modulus, an odd prime (default: {d['p']})")
    tp.add_argument("--fn", choices=TASKS, default=d["fn"], help=f"the task: one of {', '.join(TASKS)} (default: {d['fn']})")
    tp.add_argument(
        "--frac-train", type=_checked(float, "frac_train"), default=d["frac_train"],
        help=f"fraction of the p^2 pairs used for training, in (0, 1) (default: {d['frac_train']})",
    )
    tp.add_argument(
        "--seed", type=_checked(int, "seed"), default=d["seed"],
        help=f"seeds the train/test split (Python's random) and the initialisation, >= 0 (default: {d['seed']})",
    )
    tp.add_argument("--lr", type=_checked(float, "lr"), default=d["lr"], help=f"AdamW learning rate after warm-up, > 0 (default: {d['lr']:g})")
    tp.add_argument(
        "--weight-decay", type=_checked(float, "weight_decay"), default=d["weight_decay"],
        help=f"AdamW weight decay, applied to every parameter, >= 0 (default: {d['weight_decay']:g})",
    )
    tp.add_argument(
        "--betas", type=_checked(float, "beta"), nargs=2, metavar=("BETA1", "BETA2"), default=list(d["betas"]),
        help=f"AdamW betas, each in [0, 1) (default: {d['betas'][0]:g} {d['betas'][1]:g})",
    )
    tp.add_argument(
        "--warmup-steps", type=_checked(int, "warmup_steps"), default=d["warmup_steps"],
        help=f"length of the linear warm-up from lr 0, in epochs, >= 0 (default: {d['warmup_steps']})",
    )
    tp.add_argument("--epochs", type=_checked(int, "epochs"), default=d["epochs"], help=f"number of full-batch epochs (default: {d['epochs']:,})")
    tp.add_argument(
        "--save-every", type=_checked(int, "save_every"), default=d["save_every"],
        help=f"keep a checkpoint every N epochs (default: {d['save_every']}); the file is written at most once a minute",
    )
    tp.add_argument(
        "--test-every", type=_checked(int, "test_every"), default=d["test_every"],
        help=f"record the test loss every N epochs (default: {d['test_every']})",
    )
    tp.add_argument(
        "--stop-at-test-loss", type=_checked(float, "stop_at_test_loss"), default=d["stop_at_test_loss"], metavar="LOSS",
        help="stop early once the test loss falls below LOSS > 0 (default: run all epochs)",
    )
    tp.add_argument(
        "--out", type=Path, default=None,
        help=f"where to write the run file (default: {default_run_path()}; the PART52_RUN_PATH environment variable "
        "overrides it). The course notebooks read that default path.",
    )
    tp.add_argument("--no-resume", action="store_true", help="start from scratch even if --out holds an interrupted run of the same config")
    tp.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_download_parser(sub) -> None:
    from .provision import DEFAULT_HUB_TIMEOUT, HUB_FILENAME, HUB_REPO_ID

    dp = sub.add_parser(
        "download",
        help="fetch the course's checkpoint history from the Hugging Face hub",
        description=(
            "Download the course's checkpoint history from the Hugging Face hub into the Hugging Face cache "
            "(HF_HOME / HF_HUB_CACHE) and check it; with --out, also copy it there. A copy already in the cache "
            "is used without any network access. HF_ENDPOINT and HF_HUB_OFFLINE are honoured. When the hub "
            "cannot be reached, fails or does not answer, the command fails within --timeout seconds with the reason; "
            "a download that stops making progress is abandoned and nothing partial is kept."
        ),
    )
    dp.add_argument("--out", type=Path, default=None, help="also copy the file here (default: leave it in the Hugging Face cache only)")
    dp.add_argument("--endpoint", default=None, help="hub URL (default: $HF_ENDPOINT or https://huggingface.co)")
    dp.add_argument("--repo-id", default=HUB_REPO_ID, help=f"hub repository (default: {HUB_REPO_ID})")
    dp.add_argument("--filename", default=HUB_FILENAME, help=f"file in the repository (default: {HUB_FILENAME})")
    dp.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    dp.add_argument(
        "--timeout", type=_positive_seconds, default=DEFAULT_HUB_TIMEOUT,
        help="seconds allowed for the whole hub decision: connection, the file's metadata and the start of the "
        f"download (default: {DEFAULT_HUB_TIMEOUT:g})",
    )
    dp.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_fetch_parser(sub) -> None:
    fp = sub.add_parser(
        "fetch",
        help="make the default checkpoint history available: local file, else the hub, else train it locally",
        description=(
            "Do what the notebooks do when they call utils.load_full_run_data(): use the local file if it exists, "
            "else download the course's file from the Hugging Face hub, else train the model locally with the "
            "paper's recipe (saying why). Prints a summary of the run."
        ),
    )
    fp.add_argument("--out", type=Path, default=None, help="the local run file (default: the package's default run path)")
    fp.add_argument("--no-training", action="store_true", help="fail instead of training when neither file nor hub is available")
    fp.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_info_parser(sub) -> None:
    ip = sub.add_parser(
        "info",
        help="say what a run file holds",
        description="Print what a checkpoint-history file holds: p, epochs, checkpoints, final losses, config, split.",
    )
    ip.add_argument("path", nargs="?", type=Path, default=None, help="the run file (default: the package's default run path)")


def _add_report_parser(sub) -> None:
    # ---- `report`: owned by report.py (the notebook helper); this only forwards the arguments. ----
    sub.add_parser(
        "report",
        help="run the main job: provision the model, execute the solutions notebook, write an offline HTML report "
        "(options: `report --help`)",
        add_help=False,
        prefix_chars="\0",  # leave every option (including --help) to report.main
    ).add_argument("report_args", nargs=argparse.REMAINDER)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Grokking & Modular Arithmetic: train, download and inspect the checkpoint history of the grokking run.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,fetch,download,info,report}")
    sub.required = True
    _add_train_parser(sub)
    _add_fetch_parser(sub)
    _add_download_parser(sub)
    _add_info_parser(sub)
    _add_report_parser(sub)
    return parser


# ----------------------------------------------------------------------------------------------------------
def _cmd_train(args) -> int:
    from .provision import default_run_path

    config = TrainConfig(
        p=args.p, fn=args.fn, frac_train=args.frac_train, seed=args.seed, lr=args.lr, weight_decay=args.weight_decay,
        betas=tuple(args.betas), warmup_steps=args.warmup_steps, epochs=args.epochs, save_every=args.save_every,
        test_every=args.test_every, stop_at_test_loss=args.stop_at_test_loss,
    )
    out = args.out if args.out is not None else default_run_path()
    print(f"Training {config} -> {out}", flush=True)
    from .train import TrainingInterrupted, train

    try:
        data = train(config, out=out, resume=not args.no_resume, progress=not args.quiet)
    except TrainingInterrupted:
        raise  # main() reports it
    except KeyboardInterrupt:  # before the trainer took over the signals: it had not started
        print(f"\nInterrupted before training started; nothing was written ({out} is unchanged).", file=sys.stderr)
        return 130
    print(f"Wrote {out}")
    print(_format_info(data))
    return 0


def _cmd_download(args) -> int:
    from .provision import download_full_run_data

    path = download_full_run_data(
        args.out, repo_id=args.repo_id, filename=args.filename, revision=args.revision, endpoint=args.endpoint,
        progress=not args.quiet, hub_timeout=args.timeout,
    )
    print(f"Checked {args.repo_id}/{args.filename}: {path}")
    return 0


def _cmd_fetch(args) -> int:
    import time

    from .provision import load_full_run_data, run_data_source

    start = time.perf_counter()
    data = load_full_run_data(args.out, allow_training=not args.no_training, progress=not args.quiet)
    print(f"Run data ready in {time.perf_counter() - start:.1f} s ({run_data_source(data)})")
    print(_format_info(data))
    return 0


def _format_info(data: dict) -> str:
    from .provision import analysed_checkpoint_index, run_config

    cfg = run_config(data)
    epochs = [int(e) for e in data["epochs"]]
    train_losses, test_losses = data["train_losses"], data["test_losses"]
    i = analysed_checkpoint_index(data)
    lines = [
        f"  p:               {cfg.p} (task {cfg.fn})",
        f"  epochs trained:  {len(train_losses):,} (train loss every epoch)",
        f"  checkpoints:     {len(epochs)} at epochs {epochs[0]} … {epochs[-1]}"
        + (f", every {epochs[1] - epochs[0]}" if len(epochs) > 1 else ""),
        f"  analysed:        index {i} (epoch {epochs[i]})",
        f"  test losses:     {len(test_losses):,} (every {cfg.test_every} epochs)",
        f"  final losses:    train {float(train_losses[-1]):.3e}, test "
        + (f"{float(test_losses[-1]):.3e}" if len(test_losses) else "n/a"),
    ]
    if isinstance(data.get("config"), dict):
        lines.append("  config:          " + ", ".join(f"{k}={v}" for k, v in data["config"].items()))
    else:
        lines.append(
            f"  config:          none stored (hub file); assumed paper recipe: frac_train={cfg.frac_train}, "
            f"seed={cfg.seed}, lr={cfg.lr:g}, weight_decay={cfg.weight_decay:g}"
        )
    resume = data.get("resume")
    if isinstance(resume, dict) and "finished" in resume:
        if resume.get("diverged"):
            lines.append(
                f"  status:          diverged at epoch {resume.get('diverged_at')} ({resume.get('diverged_loss')}); "
                "the checkpoints before it are kept"
            )
        elif resume["finished"]:
            lines.append("  status:          finished" + (" (stopped early)" if resume.get("stopped_early") else ""))
        else:
            lines.append(
                f"  status:          unfinished ({int(resume.get('epochs_done', len(train_losses))):,} of {cfg.epochs:,} epochs); "
                "run `train` with the same options and --out to resume it"
            )
    if "train_indices" in data:
        lines.append(f"  train split:     {len(data['train_indices']):,} of {cfg.p ** 2:,} pairs stored")
    else:
        lines.append(f"  train split:     not stored (rebuilt from frac_train={cfg.frac_train}, seed={cfg.seed})")
    return "\n".join(lines)


def _cmd_info(args) -> int:
    from .checkpoints import load_run_data
    from .provision import default_run_path

    path = args.path if args.path is not None else default_run_path()
    data = load_run_data(path)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(_format_info(data))
    return 0


def _cmd_report(args) -> int:
    # ---- hand-over point to report.py (owned by the notebook helper) ----
    try:
        from .report import main as report_main
    except ImportError as e:
        print(f"error: the `report` command needs {__package__}.report, which could not be imported ({e}).", file=sys.stderr)
        return 1
    return int(report_main(list(args.report_args)) or 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv`` (default ``sys.argv[1:]``), run the command, return the exit status
    (0 success, 1 a clear error, 2 bad arguments, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .checkpoints import CorruptCheckpointError, RunFileLockedError, RunFileWriteError
    from .provision import ModelUnavailableError
    from .train import RunNotSavedError, TrainingDivergedError, TrainingInterrupted

    commands = {"train": _cmd_train, "fetch": _cmd_fetch, "download": _cmd_download, "info": _cmd_info, "report": _cmd_report}
    try:
        return commands[args.command](args)
    except TrainingInterrupted as e:  # `train`, or `fetch` training the default model: saved, resumable
        print(f"\n{e}", file=sys.stderr)
        return 128 + int(e.signum)
    except KeyboardInterrupt:  # outside training (the hub decision, a copy, reading a file): nothing half-written
        print(f"\nInterrupted: `{args.command}` stopped before it wrote anything.", file=sys.stderr)
        return 130
    except (ModelUnavailableError, CorruptCheckpointError, FileNotFoundError, ValueError, RunFileWriteError,
            RunFileLockedError, TrainingDivergedError, RunNotSavedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except MemoryError as e:
        if not str(e):  # a real allocation failure, not the trainer's up-front refusal
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1


def run() -> None:
    """Process entry point (``python -m …`` and the ``grokking-course`` script): :func:`main`, then exit.

    After an interrupted run (status 130/143) the process only has to exit; a further Ctrl-C or SIGTERM
    arriving while the interpreter shuts down (library exit hooks run then) is ignored, so the last thing
    printed stays the truthful message about what was saved, not a traceback."""
    import signal

    try:
        status = main()
    except KeyboardInterrupt:  # a repeated Ctrl-C after the trainer had handed the signals back: no traceback
        print("\nInterrupted.", file=sys.stderr)
        status = 128 + signal.SIGINT
    if status in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(status)


if __name__ == "__main__":
    run()
