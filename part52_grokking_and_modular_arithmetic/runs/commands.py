"""The commands about run files: ``fetch``, ``download`` and ``info``, registered in :data:`COMMANDS` (the command
line, :mod:`..app.cli`, collects them). Adding their options loads no torch: heavy imports wait for the command."""

from __future__ import annotations

from pathlib import Path

from ..app.cli import Command, number_arg

__all__ = ["COMMANDS", "format_info"]


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

    from ..training.train import command_process
    from .provision import load_full_run_data

    command_process(args.owns_process)  # it may train
    start = time.perf_counter()
    data = load_full_run_data(args.out, allow_training=not args.no_training, progress=not args.quiet)
    print(f"Run data ready in {time.perf_counter() - start:.1f} s ({data.source})")
    print(format_info(data))
    return 0


def format_info(data) -> str:
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
    print(format_info(run))
    return 0


COMMANDS = {
    "fetch": Command(
        "make the default run available: local file, else hub, else training", _add_fetch_options, _cmd_fetch
    ),
    "download": Command("fetch the course's run file from the Hugging Face hub", _add_download_options, _cmd_download),
    "info": Command("say what a run file holds", _add_info_options, _cmd_info),
}
