"""The training commands: ``train``, ``sweep`` and ``sweep-summary``, registered in :data:`COMMANDS` (the command line,
:mod:`..app.cli`, collects them). Their options follow :class:`~..runs.config.TrainConfig`'s fields; adding them
loads no torch: heavy imports wait for the command."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..app.cli import DEVICES, PROG, Command, number_arg, typed_arg

__all__ = ["COMMANDS"]


def _checked(kind: type, field: str) -> Callable[[str], object]:
    """An argparse ``type`` checked like the config field ``field`` (:func:`..runs.config.check_field`)."""
    from ..runs.config import check_field

    return typed_arg(kind, lambda value: check_field(field, value), "an integer" if kind is int else "a number")


_WRITTEN = (
    "The checkpoint history is written to --out atomically: at most once a minute, at the end, on Ctrl-C or "
    "SIGTERM (status 130/143) and on a diverging loss (status 1). The same command resumes an unfinished run. "
    "Before training, the folder's room and the memory are checked; while training, <out>.lock keeps a second "
    "run from writing the same file. If --out cannot be written, the run is saved in the temp or home folder "
    "(the command says where); a file that is not a run of this configuration is never overwritten, and a "
    "symlink is written through (the link stays)."
)

#: One per :class:`~..runs.config.TrainConfig` field: (field, type or None for the task, help, ``add_argument`` extras).
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
    """The :class:`~..runs.config.TrainConfig` of the parsed options ``fields`` (the others keep their defaults)."""
    from ..runs.config import TrainConfig

    values = {field: getattr(args, field) for field in fields}
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    return TrainConfig(**values)


def _add_recipe_option(parser, field: str, *, many=False, flag=None, default=None, help_text=None) -> None:
    """Add the option of the config field ``field``; ``many``: a list of values (a swept field)."""
    from ..runs.config import TASKS, TrainConfig

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
    from ..runs.provision import default_run_path

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
    from ..runs.commands import format_info
    from ..runs.provision import default_run_path
    from .train import command_process, resolve_device, train

    config = _recipe(args, [field for field, *_ in _RECIPE_OPTIONS])
    out = args.out if args.out is not None else default_run_path()
    device = resolve_device(args.device)
    print(f"Training {config} on {device} -> {out}", flush=True)
    command_process(args.owns_process)
    data = train(config, out=out, resume=not args.no_resume, progress=not args.quiet, device=device)
    print(f"Wrote {out}")
    print(format_info(data))
    return 0


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
        from .train import command_process

        command_process(args.owns_process)
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


COMMANDS = {
    "train": Command("train the model and write its checkpoint history", _add_train_options, _cmd_train),
    "sweep": Command(
        "train a grid of runs (seeds x weight decays x train fractions x lrs)", _add_sweep_options, _cmd_sweep
    ),
    "sweep-summary": Command(
        "one table of every run file under a folder", _add_sweep_summary_options, _cmd_sweep_summary
    ),
}
