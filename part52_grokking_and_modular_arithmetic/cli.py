"""Command line: ``python -m part52_grokking_and_modular_arithmetic <command>`` (or ``grokking-course``).

Only the chosen command's options are built and heavy imports wait for the command, so ``--help`` answers at
once. A failure the user can act on is one line ``error: ...`` (status 1; bad arguments 2; Ctrl-C 130).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["main", "run", "build_parser", "error_line", "number_arg"]

PROG = "python -m part52_grokking_and_modular_arithmetic"
DEVICES = ("auto", "cpu", "cuda")


def _typed(kind: type, check: Callable[[object], None], expected: str) -> Callable[[str], object]:
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

    return _typed(kind, check, f"{what} {'>' if strict else '>='} {minimum:g}")


def _checked(kind: type, field: str) -> Callable[[str], object]:
    """An argparse ``type`` checked like the config field ``field`` (:func:`.config.check_field`)."""
    from .config import check_field

    return _typed(kind, lambda value: check_field(field, value), "an integer" if kind is int else "a number")


_WRITTEN = (
    "The checkpoint history is written to --out atomically: at most once a minute, at the end, on Ctrl-C or "
    "SIGTERM (status 130/143) and on a diverging loss (status 1). The same command resumes an unfinished run. "
    "Before training, the folder's room and the memory are checked; while training, <out>.lock keeps a second "
    "run from writing the same file. If --out cannot be written, the run is saved in the temp or home folder "
    "(the command says where); a file that is not a run of this configuration is never overwritten, and a "
    "symlink is written through (the link stays)."
)

#: One per :class:`~.config.TrainConfig` field: (field, type or None for the task, help, ``add_argument`` extras).
_RECIPE_OPTIONS: tuple[tuple[str, type | None, str, dict], ...] = (
    ("p", int, "the modulus, an odd prime (default: {p})", {}),
    ("fn", None, "the task: one of {tasks} (default: {fn})", {}),
    ("frac_train", float, "fraction of the p^2 pairs used for training, in (0, 1) (default: {frac_train})", {}),
    ("seed", int, "seeds the train/test split (Python's random) and the initialisation, >= 0 (default: {seed})", {}),
    ("lr", float, "AdamW learning rate after warm-up, > 0 (default: {lr:g})", {}),
    ("weight_decay", float, "AdamW weight decay, applied to every parameter, >= 0 (default: {weight_decay:g})", {}),
    (
        "betas",
        float,
        "AdamW betas, in [0, 1) (default: {betas[0]:g} {betas[1]:g})",
        {"nargs": 2, "metavar": ("B1", "B2")},
    ),
    ("warmup_steps", int, "length of the linear warm-up from lr 0, in epochs, >= 0 (default: {warmup_steps})", {}),
    ("epochs", int, "number of full-batch epochs (default: {epochs:,})", {}),
    ("save_every", int, "keep a checkpoint every N epochs (default: {save_every}); written at most once a minute", {}),
    ("test_every", int, "record the test loss every N epochs (default: {test_every})", {}),
    ("stop_at_test_loss", float, "stop once the test loss falls below LOSS > 0 (default: never)", {"metavar": "LOSS"}),
)
#: The sweep's list options (field, flag) and its shared fields (save_every last: its default differs).
_SWEPT_OPTIONS = (("seed", "--seeds"), ("weight_decay", None), ("frac_train", None), ("lr", None))
_SWEEP_SHARED = ("p", "fn", "epochs", "test_every", "warmup_steps", "stop_at_test_loss", "save_every")


def _recipe(args: argparse.Namespace, fields: Sequence[str]):
    """The :class:`~.config.TrainConfig` of the parsed options ``fields`` (the others keep their defaults)."""
    from .config import TrainConfig

    values = {field: getattr(args, field) for field in fields}
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    return TrainConfig(**values)


def _add_recipe_option(parser, field: str, *, many=False, flag=None, default=None, help_text=None) -> None:
    """Add the option of the config field ``field``; ``many``: a list of values (a swept field)."""
    from .config import TASKS, TrainConfig

    _, kind, text, extra = next(entry for entry in _RECIPE_OPTIONS if entry[0] == field)
    d = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    if default is None:
        default = list(d[field]) if isinstance(d[field], (list, tuple)) else d[field]
        default = [default] if many else default
    typed = {"choices": TASKS} if kind is None else {"type": _checked(kind, "beta" if field == "betas" else field)}
    text = help_text or text.format(**d, tasks=", ".join(TASKS))
    parser.add_argument(
        flag or "--" + field.replace("_", "-"),
        default=default,
        help=("one or more values: " + text) if many else text,
        **typed,
        **({"nargs": "+", "dest": field} if many else extra),
    )


def _add_train_options(tp) -> None:
    from .provision import default_run_path

    tp.description = (
        "Train the one-layer transformer on (x op y) mod p with the paper's recipe: full-batch AdamW, a linear "
        "warm-up from lr 0, float64 cross-entropy over all p+1 logits at the last position, the paper init. " + _WRITTEN
    )
    for field, *_ in _RECIPE_OPTIONS:
        _add_recipe_option(tp, field)
    tp.add_argument(
        "--out",
        type=Path,
        help=f"where to write the run file (default: {default_run_path()}; the PART52_RUN_PATH environment variable "
        "overrides it). The course notebooks read that default path.",
    )
    tp.add_argument("--no-resume", action="store_true", help="start afresh even if --out holds an interrupted run")
    tp.add_argument("--device", choices=DEVICES, default="auto", help="where to train (default auto: cuda if any)")
    tp.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_download_options(dp) -> None:
    from .provision import DEFAULT_HUB_TIMEOUT, HUB_FILENAME, HUB_REPO_ID

    dp.description = (
        "Download the course's checkpoint history from the hub into the Hugging Face cache and check it; with "
        "--out, also copy it there. A cached copy needs no network. When the hub fails or does not answer, the "
        "command fails within --timeout seconds with the reason; a stalled download leaves nothing partial."
    )
    dp.add_argument("--out", type=Path, help="also copy the file here (default: the Hugging Face cache only)")
    dp.add_argument("--endpoint", help="hub URL (default: $HF_ENDPOINT or https://huggingface.co)")
    dp.add_argument("--repo-id", default=HUB_REPO_ID, help=f"hub repository (default: {HUB_REPO_ID})")
    dp.add_argument("--filename", default=HUB_FILENAME, help=f"file in the repository (default: {HUB_FILENAME})")
    dp.add_argument("--revision", help="branch, tag or commit (default: main)")
    dp.add_argument(
        "--timeout",
        type=number_arg(float, "a number of seconds", 0),
        default=DEFAULT_HUB_TIMEOUT,
        help=f"seconds allowed for the hub decision, up to the download's start (default: {DEFAULT_HUB_TIMEOUT:g})",
    )
    dp.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_fetch_options(fp) -> None:
    fp.description = (
        "As the notebooks' load_full_run_data(): the local file, else the hub's, else train locally (saying why)."
    )
    fp.add_argument("--out", type=Path, help="the local run file (default: the package's default run path)")
    fp.add_argument("--no-training", action="store_true", help="fail, not train, without a local file or the hub")
    fp.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_info_options(ip) -> None:
    ip.description = "Print what a run file holds: p, epochs, checkpoints, final losses, config, split."
    ip.add_argument("path", nargs="?", type=Path, help="the run file (default: the package's default run path)")


def _add_report_options(rp) -> None:
    rp.add_argument("report_args", nargs=argparse.REMAINDER)  # every option, --help included, is report.main's


def _add_sweep_options(sp) -> None:
    from .sweep import SWEEP_SAVE_EVERY, default_sweep_memory_note, parse_shard

    def shard(text: str) -> tuple[int, int]:
        try:
            return parse_shard(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    sp.description = (
        "Train every combination of --seeds, --weight-decay, --frac-train and --lr, each into its own run file in "
        "--out-dir named after its config. Finished members are skipped, unfinished ones continued, other files "
        "never overwritten: run the same command again to resume. --shard K/N trains the K-th of N disjoint parts "
        "(e.g. K = SLURM_ARRAY_TASK_ID); `sweep-summary DIR` collects the results."
    )
    for field, flag in _SWEPT_OPTIONS:  # the grid is their product
        _add_recipe_option(sp, field, many=True, flag=flag)
    for field in _SWEEP_SHARED[:-1]:
        _add_recipe_option(sp, field)
    _add_recipe_option(
        sp,
        "save_every",
        default=SWEEP_SAVE_EVERY,
        help_text=f"keep a checkpoint every N epochs (default for sweeps: {SWEEP_SAVE_EVERY:,}; "
        f"{default_sweep_memory_note()})",
    )
    sp.add_argument("--out-dir", type=Path, required=True, help="folder of the member files (created if needed)")
    sp.add_argument("--device", choices=DEVICES, default="auto", help="where to train (default auto: cuda if any)")
    sp.add_argument(
        "--shard",
        type=shard,
        default=(0, 1),
        metavar="K/N",
        help="train only the K-th of N disjoint parts of the grid, 0 <= K < N (default: 0/1, all of it)",
    )
    sp.add_argument(
        "--group-size",
        type=number_arg(int, "a whole number of members", 1, strict=False),
        metavar="G",
        help="train at most G members together (default: all members of the shard at once)",
    )
    sp.add_argument("--dry-run", action="store_true", help="list the shard's members and their state; train nothing")
    sp.add_argument("--quiet", action="store_true", help="no progress bars (one line per member is still printed)")


def _add_sweep_summary_options(ss) -> None:
    ss.description = (
        "One table of every run file (*.pth) under DIR: config, status, the epoch the test loss falls below "
        "--threshold, final losses, key frequencies (other files skipped with the reason); --html: an offline "
        "plotly figure; --csv: every column."
    )
    ss.add_argument("dir", type=Path, help="the folder to summarise (e.g. a sweep's --out-dir)")
    ss.add_argument("--html", type=Path, help="write the figure to this HTML file")
    ss.add_argument("--csv", type=Path, help="write the table to this CSV file")
    ss.add_argument(
        "--threshold",
        type=number_arg(float, "a loss", 0),
        metavar="LOSS",
        help="the test loss that counts as grokked (default: 0.01)",
    )
    ss.add_argument("--no-key-freqs", action="store_true", help="skip the key frequencies (faster)")


def _cmd_train(args) -> int:
    from .provision import default_run_path
    from .train import keep_freed_memory, resolve_device, train

    config = _recipe(args, [field for field, *_ in _RECIPE_OPTIONS])
    out = args.out if args.out is not None else default_run_path()
    device = resolve_device(args.device)
    print(f"Training {config} on {device} -> {out}", flush=True)
    keep_freed_memory()  # this command owns its process: the allocator setting speeds up every epoch
    data = train(config, out=out, resume=not args.no_resume, progress=not args.quiet, device=device)
    print(f"Wrote {out}")
    print(_format_info(data))
    return 0


def _cmd_download(args) -> int:
    from .hub import download_full_run_data

    path = download_full_run_data(
        args.out,
        repo_id=args.repo_id,
        filename=args.filename,
        revision=args.revision,
        endpoint=args.endpoint,
        progress=not args.quiet,
        hub_timeout=args.timeout,
    )
    print(f"Checked {args.repo_id}/{args.filename}: {path}")
    return 0


def _cmd_fetch(args) -> int:
    import time

    from .provision import load_full_run_data
    from .train import keep_freed_memory

    keep_freed_memory()  # this command owns its process (it may train): the allocator setting speeds up every epoch
    start = time.perf_counter()
    data = load_full_run_data(args.out, allow_training=not args.no_training, progress=not args.quiet)
    print(f"Run data ready in {time.perf_counter() - start:.1f} s ({data.source})")
    print(_format_info(data))
    return 0


def _format_info(data) -> str:
    """A summary of a run: the run object (:class:`~.run_data.RunData`) or a validated run-file dict."""
    from .run_data import as_run_data

    run = as_run_data(data)
    cfg, epochs, train_losses, test_losses = run.config, run.epochs, run.train_losses, run.test_losses
    i = run.analysed_index
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
    if run.config_stored:
        lines.append("  config:          " + ", ".join(f"{k}={v}" for k, v in run["config"].items()))
    else:
        lines.append(
            f"  config:          none stored (hub file); assumed paper recipe: frac_train={cfg.frac_train}, "
            f"seed={cfg.seed}, lr={cfg.lr:g}, weight_decay={cfg.weight_decay:g}"
        )
    st = run.status
    if st.state == "diverged":  # the detail already says "diverged at epoch N (loss)"
        lines.append(f"  status:          {st.detail}; the checkpoints before it are kept")
    else:
        resume_hint = "; run `train` with the same options and --out to resume it" if st.state == "unfinished" else ""
        lines.append(f"  status:          {st.state} ({st.detail}){resume_hint}")
    if "train_indices" in run:
        lines.append(f"  train split:     {len(run['train_indices']):,} of {cfg.p**2:,} pairs stored")
    else:
        lines.append(f"  train split:     not stored (rebuilt from frac_train={cfg.frac_train}, seed={cfg.seed})")
    return "\n".join(lines)


def _cmd_info(args) -> int:
    from .provision import default_run_path
    from .run_data import RunData

    path = args.path if args.path is not None else default_run_path()
    run = RunData.from_file(path)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(_format_info(run))
    return 0


def _cmd_report(args) -> int:
    from .report import main as report_main

    return int(report_main(list(args.report_args)) or 0)


def _cmd_sweep(args) -> int:
    from .sweep import run_sweep, sweep_grid

    base = _recipe(args, _SWEEP_SHARED)
    try:
        grid = sweep_grid(
            base, seeds=args.seed, weight_decays=args.weight_decay, frac_trains=args.frac_train, lrs=args.lr
        )
    except ValueError as e:
        print(f"{PROG} sweep: error: {e}", file=sys.stderr)
        return 2
    if not args.dry_run:
        from .train import keep_freed_memory

        keep_freed_memory()  # like `train`: this command owns its process, and the setting speeds up every epoch
    result = run_sweep(
        grid,
        args.out_dir,
        shard=args.shard,
        device=args.device,
        group_size=args.group_size,
        progress=not args.quiet,
        dry_run=args.dry_run,
        log=lambda line: print(line, flush=True),
    )
    k, n = result.shard
    print(
        f"[sweep] shard {k}/{n} done: {len(result.trained)} trained, {len(result.skipped)} skipped, "
        f"{len(result.conflicts)} not touched (conflicting files)"
    )
    for path, why in result.conflicts:
        print(f"error: {path}: {why}", file=sys.stderr)
    return 1 if result.conflicts else 0


def _cmd_sweep_summary(args) -> int:
    from .sweep import GROK_THRESHOLD, sweep_figure, sweep_summary

    summary = sweep_summary(args.dir, threshold=args.threshold or GROK_THRESHOLD, key_freqs=not args.no_key_freqs)
    print(summary.format_table())
    if args.csv is not None:
        print(f"wrote {summary.write_csv(args.csv)}")
    if args.html is not None:
        if not summary.rows:
            print(f"error: no run files under {args.dir}, so no figure", file=sys.stderr)
            return 1
        args.html.parent.mkdir(parents=True, exist_ok=True)
        sweep_figure(summary).write_html(args.html, include_plotlyjs=True)
        print(f"wrote {args.html}")
    return 0


#: name: (one-line help, the function adding its options, the function running it)
COMMANDS: dict[str, tuple[str, Callable, Callable[[argparse.Namespace], int]]] = {
    "train": ("train the model and write its checkpoint history", _add_train_options, _cmd_train),
    "fetch": ("make the default run available: local file, else hub, else training", _add_fetch_options, _cmd_fetch),
    "download": ("fetch the course's run file from the Hugging Face hub", _add_download_options, _cmd_download),
    "info": ("say what a run file holds", _add_info_options, _cmd_info),
    "report": ("the main job: the solutions notebook as an offline HTML report", _add_report_options, _cmd_report),
    "sweep": ("train a grid of runs (seeds x weight decays x train fractions x lrs)", _add_sweep_options, _cmd_sweep),
    "sweep-summary": ("one table of every run file under a folder", _add_sweep_summary_options, _cmd_sweep_summary),
}
#: the path-valued arguments (argparse's attribute -> the option as typed; "" for a positional argument)
_PATH_OPTIONS = {"out": "--out", "out_dir": "--out-dir", "html": "--html", "csv": "--csv", "path": "", "dir": ""}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that command's options are built (the others' import torch, the hub...)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Grokking & Modular Arithmetic: train, download and inspect the grokking run's checkpoints.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", required=True)
    for name, (help_text, add_options, _) in COMMANDS.items():
        # `report` leaves every option (--help included) to report.main
        extra = {"add_help": False, "prefix_chars": "\0"} if name == "report" else {}
        command_parser = sub.add_parser(name, help=help_text, **extra)
        if only is None or only == name:
            add_options(command_parser)
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
    ours = type(e).__module__.startswith(f"{__package__}.")  # every error class of the package speaks to the user
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


def main(argv: list[str] | None = None) -> int:
    """Run the command in ``argv``; the exit status (0, 1 an error, 2 bad arguments, 128 + signal interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(only=argv[0] if argv and argv[0] in COMMANDS else "").parse_args(argv)
    try:
        return COMMANDS[args.command][2](args)
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
