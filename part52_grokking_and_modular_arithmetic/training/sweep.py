"""Sweeps: many training runs over a grid of configurations, split into shards, and a summary of what they show.

A sweep is the product of lists of values (seeds x weight decays x train fractions x learning rates) over one
base :class:`~..runs.config.TrainConfig`. Each member is trained by :func:`.train.train_many` into its own run file
(the format :func:`~.train.train` writes, resumed the same way) named after its configuration, e.g.
``p113_seed0_wd1.0_frac0.3.pth``; the files store their ``config``, so no manifest is kept.

``shard=(K, N)`` (``--shard K/N``, numbered from 0 like ``SLURM_ARRAY_TASK_ID`` with ``--array=0-{N-1}``) runs
the members ``i % N == K`` of the canonically ordered grid: the shards are disjoint, cover the grid, and need
no coordination, only a shared folder. Per member: finished ones are skipped, unfinished ones continued,
diverged ones left alone, and a file holding anything else is reported and never overwritten.

:func:`sweep_summary` collects every run file under a folder into one table and :func:`sweep_figure` draws a
phase diagram over two swept axes and the key frequencies per seed.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..runs.config import TrainConfig, check_field

__all__ = [
    "SWEEP_SAVE_EVERY",
    "SWEPT_FIELDS",
    "GROK_THRESHOLD",
    "sweep_grid",
    "parse_shard",
    "shard_members",
    "member_filename",
    "member_state",
    "grokking_epoch",
    "default_sweep_memory_note",
    "run_sweep",
    "SweepResult",
    "SweepSummary",
    "sweep_summary",
    "sweep_figure",
]

#: Default checkpoint interval (epochs) of a sweep's members: a 64-run sweep of the default recipe then fits
#: in 4 GB (every 100 epochs: 9.8 GB; :func:`default_sweep_memory_note`).
SWEEP_SAVE_EVERY = 500

#: The fields a sweep takes lists of, in the grid's order (the last varies fastest), with their CLI options.
SWEPT_FIELDS = {"weight_decay": "--weight-decay", "frac_train": "--frac-train", "lr": "--lr", "seed": "--seeds"}

#: A member has grokked at the first epoch whose test loss is below this.
GROK_THRESHOLD = 1e-2

_DEFAULT = TrainConfig()


# --- the grid and its shards
def sweep_grid(
    base: TrainConfig = TrainConfig(),
    *,
    seeds: Iterable[int] = (0,),
    weight_decays: Iterable[float] | None = None,
    frac_trains: Iterable[float] | None = None,
    lrs: Iterable[float] | None = None,
) -> list[TrainConfig]:
    """``base`` with every combination of the given values (None: ``base``'s value). Each list is validated
    (non-empty, no repeats, valid for its field) and sorted; the seed varies fastest, then lr, train fraction,
    weight decay. So the grid (and its shards) depends only on the *sets* of values."""
    lists = {
        "weight_decay": [base.weight_decay] if weight_decays is None else weight_decays,
        "frac_train": [base.frac_train] if frac_trains is None else frac_trains,
        "lr": [base.lr] if lrs is None else lrs,
        "seed": seeds,
    }
    values = {name: _checked_values(name, vals) for name, vals in lists.items()}
    return [
        dataclasses.replace(base, **dict(zip(values, combo, strict=True)))
        for combo in itertools.product(*values.values())
    ]


def _checked_values(name: str, values: Iterable) -> list:
    option = SWEPT_FIELDS[name]
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{option} ({name}) must be a list of values, got {values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"{option} ({name}) needs at least one value, got an empty list")
    for v in values:
        check_field(name, v)
    values = [(int if name == "seed" else float)(v) for v in values]
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(
            f"{option} ({name}) lists {', '.join(map(str, repeated))} more than once; give each value once"
        )
    return sorted(values)


_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N``; ``ValueError`` saying what was expected otherwise."""
    m = _SHARD_RE.match(str(text))
    if m is None:
        raise ValueError(f"--shard must be K/N with whole numbers 0 <= K < N (e.g. 0/8 ... 7/8), got {text!r}")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1:
        raise ValueError(f"--shard K/N needs N >= 1 shards, got {text!r}")
    if k >= n:
        hint = f" (shards are numbered from 0: the last of {n} is {n - 1}/{n})" if k == n else ""
        raise ValueError(f"--shard K/N needs 0 <= K < N, got {text!r}{hint}")
    return k, n


def shard_members(grid: Sequence[TrainConfig], k: int, n: int) -> list[TrainConfig]:
    """Shard ``k`` of ``n`` (``0 <= k < n``): every ``n``-th member of ``grid`` from index ``k`` (may be empty)."""
    for name, value in (("k", k), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"shard {name} must be an integer, got {value!r}")
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"shard {k}/{n}: expected n >= 1 and 0 <= k < n")
    return [c for i, c in enumerate(grid) if i % n == k]


def _number(x: float) -> str:
    """A float as it reads in a file name: ``1.0``, ``0.3``, ``0.001``, ``1e-05`` (Python's shortest repr)."""
    return repr(float(x))


def member_filename(config: TrainConfig) -> str:
    """``p{p}_seed{seed}_wd{wd}_frac{frac}``, then ``_lr{lr}`` when lr is not 1e-3, ``_{fn}`` when fn is not
    ``add``, and ``.pth``, e.g. ``p113_seed0_wd1.0_frac0.3.pth``."""
    name = f"p{config.p}_seed{config.seed}_wd{_number(config.weight_decay)}_frac{_number(config.frac_train)}"
    if config.lr != _DEFAULT.lr:
        name += f"_lr{_number(config.lr)}"
    if config.fn != _DEFAULT.fn:
        name += f"_{config.fn}"
    return name + ".pth"


# --- the state of a member's file
def member_state(path: str | os.PathLike, config: TrainConfig) -> tuple[str, str]:
    """What ``path`` holds for the member ``config``: ``(state, detail)``, state one of ``"missing"``,
    ``"unfinished"`` (to continue or extend), ``"finished"``, ``"diverged"`` (both skipped) or ``"conflict"``
    (not a run of this configuration: never overwritten; ``detail`` says why)."""
    from ..runs.checkpoints import CorruptCheckpointError  # (torch and TransformerLens: only when files are read)
    from ..runs.run_data import run_status
    from .train import load_stored_run

    path = Path(path)
    if not path.exists():
        return "missing", ""
    try:
        data = load_stored_run(path, config)
    except (CorruptCheckpointError, OSError) as e:
        return "conflict", f"not a readable run file ({_first_line(e)})"
    except ValueError as e:  # another configuration, not written by the trainer, more epochs
        return "conflict", _first_line(e)
    return run_status(data, config)


def _first_line(e: BaseException) -> str:
    text = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
    return text if len(text) <= 160 else text[:160] + "…"


# --- memory
def default_sweep_memory_note(n_runs: int = 64) -> str:
    """One sentence on the memory an ``n_runs``-member sweep of the default recipe needs as one group."""
    from .resources import checkpoint_bytes, estimate_memory_bytes

    config = dataclasses.replace(TrainConfig(), save_every=SWEEP_SAVE_EVERY)
    need = estimate_memory_bytes([config] * n_runs)
    history = n_runs * (math.ceil(config.epochs / config.save_every) + 1) * checkpoint_bytes(config.p)
    head = f"a {n_runs}-run sweep of the default recipe (p = {config.p}, {config.epochs:,} epochs)"
    each = f"{checkpoint_bytes(config.p) / 1e6:.2f} MB per checkpoint"
    every_100 = estimate_memory_bytes([dataclasses.replace(config, save_every=100)] * n_runs)
    return (
        f"{head} then needs about {need / 1e9:.1f} GB trained as one group, {history / 1e9:.2f} GB of it checkpoints "
        f"({each}), plus ~0.45 GB for Python, torch and TransformerLens; with --save-every 100 it would need "
        f"{every_100 / 1e9:.1f} GB"
    )


# --- a sweep
@dataclasses.dataclass
class SweepResult:
    """What :func:`run_sweep` did: the members of its shard by state, with their paths."""

    shard: tuple[int, int]
    grid_size: int
    trained: list[Path] = dataclasses.field(default_factory=list)
    skipped: list[tuple[Path, str]] = dataclasses.field(default_factory=list)  #: (path, "finished"/"diverged")
    conflicts: list[tuple[Path, str]] = dataclasses.field(default_factory=list)  #: (path, why it was not touched)


def run_sweep(
    configs: Sequence[TrainConfig],
    out_dir: str | os.PathLike,
    *,
    shard: tuple[int, int] = (0, 1),
    device: str = "auto",
    group_size: int | None = None,
    progress: bool = True,
    dry_run: bool = False,
    save_interval_s: float = 60.0,
    log: Callable[[str], None] = print,
) -> SweepResult:
    """Train shard ``shard = (K, N)`` of the grid ``configs`` into ``out_dir`` (see :func:`member_state`), with
    :func:`.train.train_many`, ``group_size`` members at a time (default: one group). ``dry_run``: only say what
    would be done. ``log`` receives one line per member and per group."""
    k, n = shard
    members = shard_members(list(configs), k, n)
    names = [member_filename(c) for c in configs]
    if len(set(names)) != len(names):
        raise ValueError("two members of the grid have the same file name; give each swept value once")
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1):
        raise ValueError(f"--group-size must be an integer >= 1, got {group_size!r}")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU here; use --device auto or cpu")
    out_dir = Path(out_dir).expanduser()
    try:
        if not out_dir.is_dir() and out_dir.stat():  # exists, and is not a folder
            raise ValueError(f"--out-dir {out_dir} is a file; give a folder (it is created if needed)")
    except FileNotFoundError:
        pass
    except OSError as e:  # a symbolic link loop, a permission...
        raise ValueError(f"--out-dir {out_dir} cannot be used: {e.strerror or e}; give a folder") from None
    result = SweepResult(shard=(k, n), grid_size=len(configs))
    where = f"shard {k}/{n}: " if n > 1 else ""
    log(f"[sweep] {where}{len(members)} of {len(configs)} members -> {out_dir}")
    paths = [out_dir / member_filename(c) for c in members]
    if not dry_run:
        _refuse_if_running(paths)
    todo: list[tuple[TrainConfig, Path]] = []
    for config, path in zip(members, paths, strict=True):
        state, detail = member_state(path, config)
        if state in ("finished", "diverged"):
            result.skipped.append((path, state))
            log(f"[sweep]   {path.name}: {state}, skipped ({detail})")
        elif state == "conflict":
            result.conflicts.append((path, detail))
            log(f"[sweep]   {path.name}: NOT TOUCHED: {detail}; move it away or use another --out-dir")
        else:
            todo.append((config, path))
            log(f"[sweep]   {path.name}: {'to train' if state == 'missing' else 'to continue, ' + detail}")
    if not members:
        log(f"[sweep] shard {k}/{n} has no members (the grid has {len(configs)}, fewer than {n} shards): nothing to do")
    if not todo or dry_run:
        if todo:
            log(f"[sweep] dry run: {len(todo)} member(s) would be trained (batched); nothing was trained")
        return result
    from .resources import estimate_memory_bytes
    from .train import check_disk_room, check_memory, train_many

    size = group_size or len(todo)
    groups = [todo[i : i + size] for i in range(0, len(todo), size)]
    biggest = max(groups, key=lambda g: estimate_memory_bytes([c for c, _ in g]))
    need = estimate_memory_bytes([c for c, _ in biggest])
    log(
        f"[sweep] training {len(todo)} member(s) in {len(groups)} group(s) of up to {size} (batched, "
        f"device {device}); estimated memory {need / 1e9:.2f} GB"
    )
    check_memory([c for c, _ in biggest], how="a smaller --group-size or more --shard parts")
    check_disk_room(
        [c for c, _ in todo], [p for _, p in todo], how="use a larger --save-every, or another --out-dir"
    )  # the whole shard's files, before training any of them
    for i, group in enumerate(groups, 1):
        t0 = time.perf_counter()
        configs_paths = [c for c, _ in group], [p for _, p in group]
        datas = train_many(*configs_paths, device=device, progress=progress, save_interval_s=save_interval_s)
        seconds = time.perf_counter() - t0
        for (config, path), data in zip(group, datas, strict=True):
            result.trained.append(path)
            log(f"[sweep]   {path.name}: {_one_line(data, config)}")
        log(f"[sweep] group {i}/{len(groups)}: {len(group)} member(s) in {seconds:.1f} s")
        del datas
    return result


def _refuse_if_running(paths: list[Path]) -> None:
    """Raise :class:`~..runs.checkpoints.RunFileLockedError` if another process is training one of ``paths``."""
    from ..runs.checkpoints import RunFileLock

    for path in paths:
        lock = RunFileLock(path)
        if lock.lock_path.exists():  # (no lock file: nobody holds it; a leftover one is taken and removed)
            with lock:
                pass


def _one_line(data: dict, config: TrainConfig) -> str:
    from ..runs.run_data import run_status

    status = run_status(data).state
    test = data["test_losses"]
    grok = grokking_epoch(test, config.test_every)
    return (
        f"{status}, {len(data['train_losses']):,} epochs, final test loss "
        + (f"{float(test[-1]):.2e}" if len(test) else "n/a")
        + (f", test loss < {GROK_THRESHOLD:g} from epoch {grok:,}" if grok is not None else ", not grokked")
    )


# --- the summary
def grokking_epoch(test_losses: Sequence[float], test_every: int, threshold: float = GROK_THRESHOLD) -> int | None:
    """The first epoch whose test loss (one every ``test_every`` epochs) is below ``threshold``, else None."""
    for i, loss in enumerate(test_losses):
        if float(loss) < threshold:
            return i * test_every
    return None


_CONFIG_COLUMNS = ("p", "fn", "seed", "weight_decay", "frac_train", "lr", "betas", "warmup_steps", "epochs")
_CONFIG_COLUMNS += ("save_every", "test_every", "stop_at_test_loss")
#: The columns of the summary table, in order (``file`` is relative to the summarised folder).
_RESULT_COLUMNS = ("status", "epochs_done", "grok_epoch", "final_train_loss", "final_test_loss", "key_freqs")
_COLUMNS = ("file", *_CONFIG_COLUMNS, *_RESULT_COLUMNS)


@dataclasses.dataclass
class SweepSummary:
    """``rows`` (dicts keyed by :data:`columns`) and ``skipped`` files (``(path, why)``)."""

    folder: Path
    rows: list[dict]
    skipped: list[tuple[Path, str]]
    threshold: float = GROK_THRESHOLD
    columns: tuple[str, ...] = _COLUMNS

    def varying(self) -> list[str]:
        """Config fields whose value differs between rows (the swept axes), in column order."""
        return [f for f in _CONFIG_COLUMNS if len({repr(r[f]) for r in self.rows}) > 1]

    def format_table(self) -> str:
        """The table as text (swept fields, seed, wd, train fraction, results), then the skipped files."""
        always = ("seed", "weight_decay", "frac_train")
        shown = ["file"] + [c for c in ("p", "fn", *always, "lr") if c in self.varying() or c in always]
        shown += [c for c in self.varying() if c not in shown] + list(_RESULT_COLUMNS)
        heads = dict(weight_decay="wd", frac_train="frac", epochs_done="epochs", final_train_loss="train loss")
        heads.update(final_test_loss="test loss", key_freqs="key frequencies", grok_epoch=f"grok(<{self.threshold:g})")
        cells = [[heads.get(c, c) for c in shown]] + [[_cell(r[c], c) for c in shown] for r in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(shown))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        grokked = sum(r["grok_epoch"] is not None for r in self.rows)
        lines.append(
            f"{len(self.rows)} run(s) under {self.folder}; {grokked} with a test loss below {self.threshold:g}"
        )
        lines += [f"skipped {path}: {why}" for path, why in self.skipped]
        return "\n".join(lines)

    def write_csv(self, path: str | os.PathLike) -> Path:
        """Write every column of every row to ``path`` (key frequencies as ``14 35 41``; empty cells for None)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.columns)
            writer.writerows([_csv_value(r[c]) for c in self.columns] for r in self.rows)
        return path


def _cell(value, column: str) -> str:
    if value is None:
        return "-" if column != "grok_epoch" else "never"
    if column == "key_freqs":
        return " ".join(map(str, value)) if value else "(none)"
    if isinstance(value, float):
        return f"{value:.2e}" if column.startswith("final") else f"{value:g}"
    return str(value)


def _csv_value(value):
    return "" if value is None else " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def _key_frequencies_of(data: dict) -> list[int]:
    """Key frequencies of a run's last checkpoint (:func:`~.analysis.key_frequencies`)."""
    import torch

    from ..analysis.circuit import key_frequencies
    from ..utils import load_model

    with torch.inference_mode():
        return key_frequencies(load_model(data, -1))


def sweep_summary(
    folder: str | os.PathLike,
    *,
    threshold: float = GROK_THRESHOLD,
    key_freqs: bool = True,
    log: Callable[[str], None] | None = None,
) -> SweepSummary:
    """Every run file (``*.pth``, recursively) under ``folder`` as one table; files not written by the trainer
    are skipped with the reason. A row holds the config fields, ``status``, ``epochs_done``, ``grok_epoch`` (the
    first epoch whose test loss is below ``threshold``, None if never), the final losses and ``key_freqs`` of the
    last checkpoint (None when ``key_freqs=False``). Rows are sorted by p, fn, wd, train fraction, lr, seed."""
    from ..runs.checkpoints import CorruptCheckpointError
    from ..runs.run_data import load_run_data, run_status

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder} to summarise" + (" (it is a file)" if folder.exists() else ""))
    rows, skipped = [], []
    for path in sorted(folder.rglob("*.pth")):
        if not path.is_file():
            continue
        try:
            data = load_run_data(path)
        except (CorruptCheckpointError, ValueError, OSError) as e:
            skipped.append((path, f"not a readable run file ({_first_line(e)})"))
            continue
        if not isinstance(data.get("config"), dict):
            skipped.append((path, "no stored config (not written by the trainer, e.g. the course's hub file)"))
            continue
        config = TrainConfig.from_dict(data["config"])
        test, train_losses = data["test_losses"], data["train_losses"]
        row = {"file": str(path.relative_to(folder)), **config.to_dict()}
        row["betas"] = tuple(row["betas"])
        row.update(
            status=run_status(data).state,
            epochs_done=len(train_losses),
            grok_epoch=grokking_epoch(test, config.test_every, threshold),
            final_train_loss=float(train_losses[-1]),
            final_test_loss=float(test[-1]) if len(test) else None,
            key_freqs=_key_frequencies_of(data) if key_freqs else None,
        )
        rows.append(row)
        if log is not None:
            log(f"[sweep-summary] {row['file']}: {row['status']}, key frequencies {row['key_freqs']}")
        del data
    rows.sort(key=lambda r: (r["p"], r["fn"], r["weight_decay"], r["frac_train"], r["lr"], r["seed"], r["file"]))
    return SweepSummary(folder=folder, rows=rows, skipped=skipped, threshold=threshold)


# --- the figure
_AXIS_TITLES = {"weight_decay": "weight decay", "frac_train": "train fraction", "lr": "learning rate", "seed": "seed"}


def _phase_axes(summary: SweepSummary) -> tuple[str, str]:
    """(x, y) of the phase diagram: swept axes among train fraction, weight decay, lr, in that order."""
    order = ("frac_train", "weight_decay", "lr")
    chosen = [f for f in order if f in summary.varying()][:2]
    chosen += [f for f in order if f not in chosen][: 2 - len(chosen)]
    return tuple(sorted(chosen, key=order.index))


def sweep_figure(summary: SweepSummary, *, x: str | None = None, y: str | None = None, show: bool = False):
    """A plotly ``go.Figure``: left, the phase diagram over two swept axes (default: train fraction x weight
    decay; colour: the median grokking epoch of the cell's runs that grokked); right, each run's key frequencies
    against its seed (hollow: not grokked)."""
    import numpy as np
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    if not summary.rows:
        raise ValueError(f"no run files under {summary.folder} to draw")
    x, y = x or _phase_axes(summary)[0], y or _phase_axes(summary)[1]
    for axis in (x, y):
        if axis not in _AXIS_TITLES or axis == "seed":
            raise ValueError(f"phase-diagram axes must be two of weight_decay, frac_train, lr; got {axis!r}")
    if x == y:
        raise ValueError(f"phase-diagram axes must differ, got {x!r} twice")
    xs, ys = sorted({r[x] for r in summary.rows}), sorted({r[y] for r in summary.rows})
    z = np.full((len(ys), len(xs)), np.nan)
    text = [["" for _ in xs] for _ in ys]
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            cell = [r for r in summary.rows if r[x] == xv and r[y] == yv]
            if not cell:
                text[i][j] = "no runs"
                continue
            epochs = [r["grok_epoch"] for r in cell if r["grok_epoch"] is not None]
            if epochs:
                z[i, j] = statistics.median(epochs)
                text[i][j] = f"{len(epochs)}/{len(cell)} grokked<br>median epoch {z[i, j]:,.0f}"
            else:
                text[i][j] = f"did not grok<br>(0/{len(cell)})"
    titles = (f"epoch the test loss falls below {summary.threshold:g}", "key frequencies per seed")
    fig = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5], horizontal_spacing=0.2, subplot_titles=titles)
    labels_x, labels_y = [f"{v:g}" for v in xs], [f"{v:g}" for v in ys]
    grey = [[0, "#d9d9d9"], [1, "#d9d9d9"]]  # an underlay: the cells that did not grok (NaN in the trace above)
    zeros = [[0.0] * len(xs)] * len(ys)
    fig.add_trace(go.Heatmap(z=zeros, x=labels_x, y=labels_y, showscale=False, hoverinfo="skip", colorscale=grey), 1, 1)
    hover = f"{x}=%{{x}}<br>{y}=%{{y}}<br>%{{text}}<extra></extra>"
    bar = dict(title="epoch", x=0.41, thickness=12)
    heat = go.Heatmap(z=z, x=labels_x, y=labels_y, text=text, texttemplate="%{text}", colorscale="Viridis_r")
    fig.add_trace(heat.update(colorbar=bar, hovertemplate=hover), row=1, col=1)
    fig.update_xaxes(title_text=_AXIS_TITLES[x], type="category", row=1, col=1)
    fig.update_yaxes(title_text=_AXIS_TITLES[y], type="category", row=1, col=1)
    others = [f for f in ("p", "weight_decay", "frac_train", "lr") if f in summary.varying()]
    groups: dict[tuple, list[dict]] = {}
    for r in summary.rows:
        groups.setdefault(tuple(r[f] for f in others), []).append(r)
    colours = qualitative.Plotly
    for gi, (key, rows) in enumerate(groups.items()):
        name = ", ".join(f"{_AXIS_TITLES.get(f, f)} {v:g}" for f, v in zip(others, key, strict=True)) or "runs"
        for grokked in (True, False):
            mine = [r for r in rows if (r["grok_epoch"] is not None) == grokked]
            pts = [(r["seed"], k, r["file"]) for r in mine for k in r["key_freqs"] or []]
            if not pts:
                continue
            colour, symbol = colours[gi % len(colours)], "circle" if grokked else "circle-open"
            marker = dict(size=10, color=colour, symbol=symbol, line=dict(width=2, color=colour))
            label = name + ("" if grokked else " (not grokked)")
            seed_of, freq, files = zip(*pts, strict=True)
            dots = go.Scatter(x=seed_of, y=freq, mode="markers", legendgroup=name, name=label, customdata=files)
            hover = "seed %{x}, frequency %{y}<br>%{customdata}<extra></extra>"
            fig.add_trace(dots.update(marker=marker, hovertemplate=hover), row=1, col=2)
    seeds = sorted({r["seed"] for r in summary.rows})
    fig.update_xaxes(title_text="seed", tickmode="array", tickvals=seeds, row=1, col=2)
    p_values = sorted({r["p"] for r in summary.rows})
    y_title = "key frequency k" + (f" (p = {p_values[0]})" if len(p_values) == 1 else "")
    fig.update_yaxes(title_text=y_title, rangemode="tozero", row=1, col=2)
    title = f"Sweep: {len(summary.rows)} runs under {summary.folder.name}"
    fig.update_layout(title=title, height=480, width=1100, legend=dict(x=1.02, y=1))
    if show:
        fig.show()
    return fig
