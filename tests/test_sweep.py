"""Sweeps (sweep.py and the `sweep` / `sweep-summary` commands): the grid and its shards, member files that the
trainer, the loaders, the analysis and the grader accept like any run file, per-member resume, the summary table
and its figure."""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import plotly.graph_objects as go
import pytest
import torch

from part52_grokking_and_modular_arithmetic import tests as grader  # never import the test_* names directly
from part52_grokking_and_modular_arithmetic import utils
from part52_grokking_and_modular_arithmetic.analysis.circuit import fourier_embed, key_frequencies
from part52_grokking_and_modular_arithmetic.app import cli
from part52_grokking_and_modular_arithmetic.runs import provision
from part52_grokking_and_modular_arithmetic.runs.checkpoints import atomic_save
from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig
from part52_grokking_and_modular_arithmetic.runs.layout import transformer_lens_to_paper
from part52_grokking_and_modular_arithmetic.runs.run_data import as_run_data, load_run_data, run_status
from part52_grokking_and_modular_arithmetic.training import resources, sweep
from part52_grokking_and_modular_arithmetic.training.resources import estimate_memory_bytes
from part52_grokking_and_modular_arithmetic.training.train import train

from reference.fourier_model import make_fourier_model

P = 23
SEEDS, WDS, FRACS = (0, 1), (0.3, 1.0), (0.5,)
EPOCHS, SAVE_EVERY = 30, 10
SWEEP_ARGS = [
    "sweep",
    "--p",
    str(P),
    "--seeds",
    *map(str, SEEDS),
    "--weight-decay",
    *map(str, WDS),
    "--frac-train",
    *map(str, FRACS),
    "--epochs",
    str(EPOCHS),
    "--save-every",
    str(SAVE_EVERY),
    "--device",
    "cpu",
    "--quiet",
]


def base(**kw) -> TrainConfig:
    return TrainConfig(p=P, epochs=EPOCHS, save_every=SAVE_EVERY, **kw)


def grid() -> list[TrainConfig]:
    return sweep.sweep_grid(base(), seeds=SEEDS, weight_decays=WDS, frac_trains=FRACS)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A tiny sweep (p = 23, 2 seeds x 2 weight decays, 30 epochs) written by the CLI, once for the module."""
    out = tmp_path_factory.mktemp("sweep") / "runs"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main([*SWEEP_ARGS, "--out-dir", str(out)]) == 0
    finally:
        torch.set_num_threads(before)
    return out


@pytest.fixture
def sweep_copy(swept, tmp_path):
    """A private copy of the tiny sweep that a test may change."""
    return shutil.copytree(swept, tmp_path / "runs")


# ----------------------------------------------------------------------------------------------------------
# the grid and its shards
def test_grid_is_the_product_in_a_canonical_order():
    g = sweep.sweep_grid(
        TrainConfig(), seeds=[2, 0, 1], weight_decays=[1.0, 0.3], frac_trains=[0.5, 0.3], lrs=[3e-3, 1e-3]
    )
    assert len(g) == 3 * 2 * 2 * 2
    combos = {(c.seed, c.weight_decay, c.frac_train, c.lr) for c in g}
    assert combos == set(itertools.product([0, 1, 2], [0.3, 1.0], [0.3, 0.5], [1e-3, 3e-3]))
    # the same sets of values in another order give the same grid, member by member
    again = sweep.sweep_grid(
        TrainConfig(), seeds=[1, 2, 0], weight_decays=[0.3, 1.0], frac_trains=[0.3, 0.5], lrs=[1e-3, 3e-3]
    )
    assert again == g
    assert [c.seed for c in g[:3]] == [0, 1, 2]  # the seed varies fastest
    assert all(c.p == 113 and c.epochs == TrainConfig().epochs for c in g)  # the base's other fields are kept


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(seeds=[]), "--seeds (seed) needs at least one value"),
        (dict(seeds=[0, 0]), "more than once"),
        (dict(seeds=[0], frac_trains=[0.3, 1.5]), "frac_train must be in (0, 1)"),
        (dict(seeds=[0], weight_decays=[-1.0]), "weight_decay must be >= 0"),
        (dict(seeds=[-1]), "seed must be an integer >= 0"),
        (dict(seeds=[0], lrs=[0.0]), "lr must be > 0"),
    ],
)
def test_grid_rejects_bad_lists_clearly(kwargs, words):
    with pytest.raises(ValueError) as info:
        sweep.sweep_grid(TrainConfig(), **kwargs)
    assert words in str(info.value)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 13])
def test_shards_are_disjoint_cover_the_grid_and_are_balanced(n):
    g = sweep.sweep_grid(TrainConfig(), seeds=range(4), weight_decays=[0.3, 1.0, 3.0], frac_trains=[0.3])  # 12 members
    shards = [sweep.shard_members(g, k, n) for k in range(n)]
    names = [[sweep.member_filename(c) for c in s] for s in shards]
    flat = [x for s in names for x in s]
    assert sorted(flat) == sorted(sweep.member_filename(c) for c in g)  # union = grid, each member exactly once
    assert len(flat) == len(set(flat)) == len(g)
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    assert [sweep.shard_members(g, k, n) for k in range(n)] == shards  # deterministic


@pytest.mark.parametrize("text, expected", [("0/8", (0, 8)), ("7/8", (7, 8)), (" 3 / 4 ", (3, 4)), ("0/1", (0, 1))])
def test_parse_shard(text, expected):
    assert sweep.parse_shard(text) == expected


@pytest.mark.parametrize(
    "text, words",
    [
        ("8/8", "numbered from 0"),
        ("9/8", "0 <= K < N"),
        ("1/0", "N >= 1"),
        ("-1/4", "K/N"),
        ("a/b", "K/N"),
        ("3", "K/N"),
        ("1.5/4", "K/N"),
        ("", "K/N"),
    ],
)
def test_bad_shards_are_clear_errors(text, words):
    with pytest.raises(ValueError) as info:
        sweep.parse_shard(text)
    assert words in str(info.value) and "--shard" in str(info.value)


def test_shard_members_checks_its_arguments():
    with pytest.raises(ValueError, match="0 <= k < n"):
        sweep.shard_members(grid(), 2, 2)


def test_member_file_names_are_stable_readable_and_unique():
    assert sweep.member_filename(TrainConfig()) == "p113_seed0_wd1.0_frac0.3.pth"
    assert sweep.member_filename(TrainConfig(seed=3, weight_decay=0.03, frac_train=0.5, lr=3e-3)) == (
        "p113_seed3_wd0.03_frac0.5_lr0.003.pth"
    )
    assert sweep.member_filename(TrainConfig(p=53, fn="subtract")) == "p53_seed0_wd1.0_frac0.3_subtract.pth"
    g = sweep.sweep_grid(
        TrainConfig(), seeds=range(3), weight_decays=[0.1, 1.0], frac_trains=[0.3, 0.7], lrs=[1e-3, 1e-2]
    )
    names = [sweep.member_filename(c) for c in g]
    assert len(set(names)) == len(g)
    # the file name changes with every swept field and not with the fields shared by the whole sweep
    assert sweep.member_filename(dataclasses.replace(g[0], epochs=5, save_every=7)) == names[0]


# ----------------------------------------------------------------------------------------------------------
# the command, its member files, resume
def test_sweep_writes_one_valid_run_file_per_member(swept):
    files = sorted(x.name for x in swept.iterdir() if x.suffix == ".pth")
    assert files == sorted(sweep.member_filename(c) for c in grid())
    assert not [x for x in swept.iterdir() if x.suffix != ".pth"]  # no lock or temporary files left
    for config in grid():
        data = load_run_data(swept / sweep.member_filename(config))
        assert TrainConfig.from_dict(data["config"]) == config  # self-describing: the name's config is stored
        assert len(data["train_losses"]) == EPOCHS and data["epochs"] == [0, 10, 20]
        assert data["resume"]["finished"]


def test_sweep_member_trajectory_equals_a_single_run(swept, one_torch_thread):
    config = grid()[-1]
    data = load_run_data(swept / sweep.member_filename(config))
    single = train(config, progress=False)
    a, b = torch.tensor(data["train_losses"]), torch.tensor(single["train_losses"])
    assert torch.allclose(a, b, rtol=1e-3, atol=0)


def test_finished_members_are_skipped(sweep_copy, capsys):
    before = {x.name: x.stat().st_mtime_ns for x in sweep_copy.iterdir()}
    assert cli.main([*SWEEP_ARGS, "--out-dir", str(sweep_copy)]) == 0
    out = capsys.readouterr().out
    assert out.count("finished, skipped") == len(grid())
    assert "0 trained, 4 skipped" in out
    assert {x.name: x.stat().st_mtime_ns for x in sweep_copy.iterdir()} == before  # nothing rewritten


def test_a_sweep_with_more_epochs_continues_its_members_and_train_resumes_a_member(
    sweep_copy, capsys, one_torch_thread
):
    config = grid()[0]
    path = sweep_copy / sweep.member_filename(config)
    old = load_run_data(path)
    # `train` continues a member file like any of its own run files
    longer = train(dataclasses.replace(config, epochs=EPOCHS + 10), out=path, progress=False)
    assert len(longer["train_losses"]) == EPOCHS + 10
    assert longer["train_losses"][:EPOCHS] == old["train_losses"]
    # the sweep, asked for more epochs, continues every member (the extended one is finished already)
    args = [a if a != str(EPOCHS) else str(EPOCHS + 10) for a in SWEEP_ARGS]
    assert cli.main([*args, "--out-dir", str(sweep_copy)]) == 0
    out = capsys.readouterr().out
    assert out.count("to continue") == len(grid()) - 1 and "finished, skipped" in out
    for c in grid():
        assert len(load_run_data(sweep_copy / sweep.member_filename(c))["train_losses"]) == EPOCHS + 10


def test_two_shards_together_write_the_whole_grid(tmp_path, capsys, one_torch_thread):
    out = tmp_path / "runs"
    args = [*SWEEP_ARGS, "--out-dir", str(out), "--epochs", "3", "--save-every", "2"]
    assert cli.main([*args, "--shard", "1/2", "--group-size", "1"]) == 0
    first = {x.name for x in out.iterdir()}
    assert len(first) == 2
    assert "group 2/2: 1 member(s)" in capsys.readouterr().out
    assert cli.main([*args, "--shard", "0/2"]) == 0
    both = {x.name for x in out.iterdir()}
    assert both == {sweep.member_filename(dataclasses.replace(c, epochs=3, save_every=2)) for c in grid()}
    assert "shard 0/2: 2 of 4 members" in capsys.readouterr().out


def test_an_empty_shard_does_nothing(tmp_path, capsys):
    args = ["sweep", "--p", str(P), "--seeds", "0", "--epochs", "3", "--out-dir", str(tmp_path / "o"), "--shard", "3/5"]
    assert cli.main(args) == 0
    assert "has no members" in capsys.readouterr().out
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_conflicting_file_is_reported_and_never_overwritten(sweep_copy, capsys):
    config = grid()[1]
    path = sweep_copy / sweep.member_filename(config)
    path.write_bytes(b"not a run")
    other = sweep_copy / sweep.member_filename(grid()[2])
    data = load_run_data(other)
    data["config"]["warmup_steps"] = 5  # a run of another configuration under this member's name
    atomic_save(data, other)
    assert cli.main([*SWEEP_ARGS, "--out-dir", str(sweep_copy)]) == 1
    err = capsys.readouterr().err
    assert path.name in err and "not a readable run file" in err
    assert other.name in err and "warmup_steps" in err
    assert path.read_bytes() == b"not a run"
    assert load_run_data(other)["config"]["warmup_steps"] == 5


def test_dry_run_lists_states_and_trains_nothing(sweep_copy, capsys):
    victim = sweep_copy / sweep.member_filename(grid()[3])
    victim.unlink()
    assert cli.main([*SWEEP_ARGS, "--out-dir", str(sweep_copy), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{victim.name}: to train" in out and "dry run: 1 member(s) would be trained" in out
    assert not victim.exists()


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--shard", "8/8"], "numbered from 0"),
        (["--shard", "x"], "K/N"),
        (["--seeds"], "expected at least one argument"),
        (["--frac-train", "1.5"], "frac_train must be in (0, 1)"),
        (["--weight-decay", "-1"], "weight_decay must be >= 0"),
        (["--p", "24"], "24 is even"),
        (["--group-size", "0"], "whole number of members"),
        (["--device", "tpu"], "invalid choice"),
    ],
)
def test_sweep_usage_errors(tmp_path, capsys, extra, words):
    with pytest.raises(SystemExit) as info:
        cli.main([*SWEEP_ARGS, "--out-dir", str(tmp_path / "o"), *extra])
    assert info.value.code == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert cli.main([*SWEEP_ARGS, "--out-dir", str(tmp_path / "o"), "--device", "cuda"]) == 1
    assert "torch sees no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_repeated_values_are_a_usage_error(tmp_path, capsys):
    assert cli.main([*SWEEP_ARGS, "--out-dir", str(tmp_path / "o"), "--seeds", "1", "1"]) == 2
    assert "--seeds (seed) lists 1 more than once" in capsys.readouterr().err


def test_out_dir_is_required_and_help_states_the_memory(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["sweep", "--seeds", "0"])
    assert info.value.code == 2 and "--out-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for words in (
        "--shard K/N",
        "--seeds",
        "--weight-decay",
        "--frac-train",
        "--epochs",
        "--save-every",
        "--device",
        f"default for sweeps: {sweep.SWEEP_SAVE_EVERY:,}",
        "64-run sweep",
        "GB",
    ):
        assert words in out


def test_sweep_memory_of_64_default_runs_fits_in_4_gb():
    configs = [dataclasses.replace(TrainConfig(), save_every=sweep.SWEEP_SAVE_EVERY)] * 64
    assert estimate_memory_bytes(configs) <= 4e9
    # one checkpoint: 226,816 float32 weights at p = 113
    assert resources.checkpoint_bytes(113) == 4 * 226_816
    with_100 = [dataclasses.replace(TrainConfig(), save_every=100)] * 64
    assert estimate_memory_bytes(with_100) > estimate_memory_bytes(configs)


@pytest.mark.slow  # two fresh processes: ~17 s on 2 busy cores
def test_sigterm_stops_a_sweep_with_every_member_written_and_it_resumes_per_member(tmp_path):
    """A scheduler's SIGTERM (preemption, a time limit) stops the sweep at an epoch boundary; every member is
    written, unfinished, and the same command continues them."""
    out = tmp_path / "runs"
    argv = [
        sys.executable,
        "-m",
        "part52_grokking_and_modular_arithmetic",
        *SWEEP_ARGS,
        "--epochs",
        "100000",
        "--save-every",
        "1000",
        "--out-dir",
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    names = [sweep.member_filename(dataclasses.replace(c, epochs=100_000, save_every=1000)) for c in grid()]
    deadline = time.monotonic() + 120
    while not all((out / f"{n}.lock").exists() for n in names):  # every member file is locked: training
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the sweep did not start training"
        time.sleep(0.05)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    done = []
    for name in names:
        data = load_run_data(out / name)
        assert not data["resume"]["finished"] and data["resume"]["epochs_done"] == len(data["train_losses"]) > 0
        done.append(data["resume"]["epochs_done"])
    assert sorted(x.name for x in out.iterdir()) == sorted(names)  # no lock or temporary file left
    dry = subprocess.run(
        [*argv, "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert dry.returncode == 0, dry.stderr
    for name, n in zip(names, done, strict=True):
        assert f"{name}: to continue, {n:,} of 100,000 epochs done" in dry.stdout


# ----------------------------------------------------------------------------------------------------------
# the summary and its figure
def _plant_fourier_checkpoint(folder, source, key_freqs):
    """A copy of ``source`` (in a subfolder) whose last checkpoint is a hand-built model using ``key_freqs``."""
    data = load_run_data(source)
    data["state_dicts"][-1] = transformer_lens_to_paper(make_fourier_model(P, key_freqs).state_dict())
    target = folder / "planted" / source.name
    atomic_save(data, target)
    return target


def test_summary_collects_every_run_and_skips_other_files(sweep_copy):
    (sweep_copy / "notes.pth").write_text("not a torch file")
    (sweep_copy / "readme.txt").write_text("ignored: not *.pth")
    hub_like = load_run_data(sweep_copy / sweep.member_filename(grid()[0]))
    for key in ("config", "resume", "train_indices"):
        hub_like.pop(key)
    atomic_save(hub_like, sweep_copy / "hub_like.pth")
    planted = _plant_fourier_checkpoint(sweep_copy, sweep_copy / sweep.member_filename(grid()[1]), (3, 7))

    summary = sweep.sweep_summary(sweep_copy)
    files = [r["file"] for r in summary.rows]
    assert sorted(files) == sorted([sweep.member_filename(c) for c in grid()] + ["planted/" + planted.name])
    skipped = {p.name: why for p, why in summary.skipped}
    assert set(skipped) == {"notes.pth", "hub_like.pth"}
    assert "not a readable run file" in skipped["notes.pth"] and "no stored config" in skipped["hub_like.pth"]
    row = next(r for r in summary.rows if r["file"].startswith("planted/"))
    assert row["key_freqs"] == [3, 7]  # computed from the last checkpoint with the package's own rule
    for r in summary.rows:
        data = load_run_data(sweep_copy / r["file"])
        assert r["key_freqs"] == key_frequencies(utils.load_model(data, -1))
        assert r["status"] == "finished" and r["epochs_done"] == EPOCHS
        assert r["final_train_loss"] == pytest.approx(float(data["train_losses"][-1]))
        assert r["final_test_loss"] == pytest.approx(float(data["test_losses"][-1]))
        assert r["grok_epoch"] is None  # 30 epochs: nothing has generalised
    text = summary.format_table()
    assert "p23_seed0_wd0.3_frac0.5.pth" in text and "never" in text and "3 7" in text
    assert "skipped" in text and "notes.pth" in text


def test_grokking_epoch_and_status():
    assert sweep.grokking_epoch([5.0, 0.5, 0.009, 0.001], 10) == 20
    assert sweep.grokking_epoch([5.0, 0.5, 0.02], 10) is None
    assert sweep.grokking_epoch([5.0, 0.5, 0.02], 10, threshold=0.1) == 20
    histories = {"train_losses": [1.0], "test_losses": [1.0]}
    assert run_status({**histories, "resume": {"finished": False}}).state == "unfinished"
    assert run_status({**histories, "resume": {"finished": True, "diverged": True}}).state == "diverged"
    assert run_status(histories).state == "finished"


def test_summary_marks_grokked_unfinished_and_diverged_runs(sweep_copy):
    paths = [sweep_copy / sweep.member_filename(c) for c in grid()]
    grokked = load_run_data(paths[0])
    grokked["test_losses"] = [4.0, 0.5, 0.005]  # epochs 0, 10, 20
    atomic_save(grokked, paths[0])
    diverged = load_run_data(paths[1])
    diverged["resume"].update(diverged=True, diverged_at=30, diverged_loss="train loss nan")
    atomic_save(diverged, paths[1])
    summary = sweep.sweep_summary(sweep_copy, key_freqs=False)
    by_file = {r["file"]: r for r in summary.rows}
    assert by_file[paths[0].name]["grok_epoch"] == 20
    assert by_file[paths[1].name]["status"] == "diverged"
    assert all(r["key_freqs"] is None for r in summary.rows)
    csv_path = summary.write_csv(sweep_copy / "out" / "summary.csv")
    lines = csv_path.read_text().splitlines()
    assert lines[0].split(",")[:4] == ["file", "p", "fn", "seed"] and len(lines) == 1 + len(grid())
    assert any(",diverged," in line for line in lines) and any(",20," in line for line in lines)


def test_figure_has_a_phase_diagram_and_key_frequencies_per_seed(sweep_copy):
    planted = _plant_fourier_checkpoint(sweep_copy, sweep_copy / sweep.member_filename(grid()[1]), (3, 7))
    data = load_run_data(planted)
    data["test_losses"][-1] = 1e-3
    atomic_save(data, planted)
    summary = sweep.sweep_summary(sweep_copy)
    fig = sweep.sweep_figure(summary)
    assert isinstance(fig, go.Figure)
    heatmaps = [t for t in fig.data if isinstance(t, go.Heatmap)]
    scatters = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert heatmaps and scatters
    phase = heatmaps[-1]
    assert list(phase.x) == ["0.5"] and list(phase.y) == ["0.3", "1"]  # x: train fraction, y: weight decay
    flat_text = [t for row in phase.text for t in row]
    assert any("1/3 grokked" in t for t in flat_text) and any("did not grok" in t for t in flat_text)
    grokked_points = [t for t in scatters if "not grokked" not in t.name]
    assert sorted(y for t in grokked_points for y in t.y) == [3, 7]
    with pytest.raises(ValueError, match="axes must differ"):
        sweep.sweep_figure(summary, x="weight_decay", y="weight_decay")


def test_sweep_summary_command(sweep_copy, tmp_path, capsys):
    (sweep_copy / "junk.pth").write_bytes(b"\x00" * 10)
    html, csv_path = tmp_path / "fig" / "sweep.html", tmp_path / "table.csv"
    assert cli.main(["sweep-summary", str(sweep_copy), "--html", str(html), "--csv", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert "key frequencies" in out and "skipped" in out and "junk.pth" in out
    assert html.stat().st_size > 1_000_000 and "cdn.plot.ly" not in html.read_text()[:2000]  # plotly.js inline
    assert len(csv_path.read_text().splitlines()) == 1 + len(grid())
    assert cli.main(["sweep-summary", str(tmp_path / "missing")]) == 1
    assert "no folder" in capsys.readouterr().err
    assert cli.main(["sweep-summary", str(sweep_copy), "--threshold", "10", "--no-key-freqs"]) == 0
    assert f"{len(grid())} with a test loss below 10" in capsys.readouterr().out  # every run starts near ln(23)
    with pytest.raises(SystemExit) as info:
        cli.main(["sweep-summary", str(sweep_copy), "--threshold", "0"])
    assert info.value.code == 2 and "expected a loss > 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# a member file is a run file like any other
def test_loaders_analysis_and_grader_accept_a_member_file(swept, isolated_paths):
    path = swept / sweep.member_filename(grid()[0])
    data = provision.load_full_run_data(path, allow_training=False, progress=False)
    assert as_run_data(data).config == grid()[0]
    model = utils.load_model(data)  # the analysed (last) checkpoint
    assert model.cfg.d_vocab == P + 1
    grader.test_fourier_embed(fourier_embed, model)  # the grader passes the reference on a member's model
    dyn = utils.compute_dynamics(path, [1, 2], progress=False)  # Section 3's engine reads it too
    assert [int(e) for e in dyn.epochs] == [0, 10, 20] and bool(torch.isfinite(dyn.test_loss).all())


# ----------------------------------------------------------------------------------------------------------
# refused before any training: the whole shard's disk need, a sweep already running
def test_a_sweep_without_disk_room_for_its_whole_grid_is_refused_before_training(tmp_path, monkeypatch, capsys):
    import collections

    from part52_grokking_and_modular_arithmetic.training import train as trainer
    from part52_grokking_and_modular_arithmetic.training.resources import estimate_run_file_bytes

    each = estimate_run_file_bytes(base())
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(trainer.shutil, "disk_usage", lambda folder: usage(10**12, 0, int(2.5 * each)))  # 2 of 4 fit
    monkeypatch.setattr(trainer, "train_many", lambda *a, **k: pytest.fail("trained although the disk is too small"))
    out = tmp_path / "runs"
    assert cli.main([*SWEEP_ARGS, "--out-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "not enough room for 4 run file(s)" in err and "GB is free" in err and "--save-every" in err
    assert not out.exists() or not list(out.glob("*.pth"))


def test_a_second_sweep_on_the_same_members_is_refused_at_once(tmp_path, monkeypatch, capsys):
    from part52_grokking_and_modular_arithmetic.runs.checkpoints import RunFileLock

    out = tmp_path / "runs"
    out.mkdir()
    member = out / sweep.member_filename(grid()[2])
    monkeypatch.setattr(sweep, "member_state", lambda *a: pytest.fail("read the member files before the locks"))
    with RunFileLock(member):  # what the first sweep holds while it trains that member
        assert cli.main([*SWEEP_ARGS, "--out-dir", str(out)]) == 1
    assert f"is writing {member}" in capsys.readouterr().err


def test_an_out_dir_that_is_a_symlink_loop_is_one_line(tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert cli.main([*SWEEP_ARGS, "--out-dir", str(loop)]) == 1
    err = capsys.readouterr().err
    assert "--out-dir" in err and "symbolic links" in err and "Traceback" not in err
