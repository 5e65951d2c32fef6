"""A run file is verified before use: a changed byte inside a stored tensor (a finite change, which no check of
the values can see) is refused by its CRC, in one line naming the file; paths that are no regular file are
named as what they are; the recipe module imports without torch (the command line parses before torch loads)."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from test_provision import FILE, REPO, hub_online, no_network_beyond_localhost  # noqa: F401

from part52_grokking_and_modular_arithmetic.app import cli
from part52_grokking_and_modular_arithmetic.runs.checkpoints import CorruptCheckpointError, atomic_save, safe_load
from part52_grokking_and_modular_arithmetic.runs.provision import load_full_run_data
from part52_grokking_and_modular_arithmetic.runs.run_data import RunData

from fake_hub import FakeHub, make_paper_run_data, to_bytes

pytestmark = pytest.mark.usefixtures("isolated_paths")
ROOT = Path(__file__).resolve().parent.parent


def _tensor_entry(path: Path) -> tuple[str, int]:
    """The largest tensor entry of the archive and the file offset of its data."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    n, m = struct.unpack("<HH", header[26:30])
    return info.filename, info.header_offset + 30 + n + m


def _change_a_float(path: Path) -> str:
    """Change 4 bytes inside a stored tensor to another finite float32; returns the entry's name."""
    name, offset = _tensor_entry(path)
    with open(path, "r+b") as f:
        f.seek(offset + 64)
        (value,) = struct.unpack("<f", f.read(4))
        f.seek(offset + 64)
        f.write(struct.pack("<f", value + 0.5))
    return name


@pytest.fixture
def damaged(tmp_path):
    path = atomic_save(make_paper_run_data(23, n_checkpoints=3, ours=True), tmp_path / "run.pth")
    intact = torch.load(path, weights_only=True)
    name = _change_a_float(path)
    loaded = torch.load(path, weights_only=True)  # torch itself takes the damaged file...
    changed = [
        (i, k)
        for i, sd in enumerate(loaded["state_dicts"])
        for k, t in sd.items()
        if not torch.equal(t, intact["state_dicts"][i][k])
    ]
    assert len(changed) == 1 and all(bool(torch.isfinite(t).all()) for sd in loaded["state_dicts"] for t in sd.values())
    return path, name


def test_a_finite_change_inside_a_tensor_is_refused_naming_the_file_and_entry(damaged, capsys):
    path, name = damaged
    before = path.read_bytes()
    for read in (safe_load, RunData.from_file):
        with pytest.raises(CorruptCheckpointError) as info:
            read(path)
        message = str(info.value)
        assert str(path) in message and repr(name) in message and "fails its CRC check" in message, message
        assert len(message.splitlines()) == 1
    assert cli.main(["info", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "fails its CRC check" in err and len(err.splitlines()) == 1, err
    with pytest.raises(CorruptCheckpointError, match="left untouched"):
        load_full_run_data(path, allow_training=False, progress=False)
    assert path.read_bytes() == before  # never used, never deleted


def test_an_intact_file_passes_and_a_legacy_file_without_checksums_is_refused(tmp_path):
    data = make_paper_run_data(23, n_checkpoints=2, ours=True)
    assert RunData.from_file(atomic_save(data, tmp_path / "ok.pth")).p == 23
    legacy = tmp_path / "legacy.pth"
    torch.save(data, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CorruptCheckpointError, match="legacy .* no checksums"):
        safe_load(legacy)


def test_a_damaged_cached_hub_file_is_removed_and_downloaded_again(hub_online, capsys):  # noqa: F811
    raw = to_bytes(make_paper_run_data(23, n_checkpoints=2))
    with hub_online(FakeHub({(REPO, FILE): raw})):
        first = load_full_run_data(allow_training=False, progress=False)
        _change_a_float(Path(first.source.location).resolve())
        again = load_full_run_data(allow_training=False, progress=False)
    assert again.source.kind == "hub" and "fails its CRC check" in capsys.readouterr().err


@pytest.mark.skipif(os.name != "posix", reason="FIFOs, /dev/null and symlinks as on Linux and macOS")
@pytest.mark.parametrize("kind", ["symlink loop", "fifo", "/dev/null", "folder"])
def test_a_path_that_is_no_regular_file_is_named_in_one_line(tmp_path, capsys, kind):
    path = tmp_path / "run.pth"
    if kind == "symlink loop":
        path.symlink_to(tmp_path / "other.pth")
        (tmp_path / "other.pth").symlink_to(path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path = Path("/dev/null")
    words = {
        "symlink loop": "symlink loop",
        "fifo": "not a regular file (a FIFO",
        "/dev/null": "not a regular file (a character device)",
        "folder": "is a folder",
    }[kind]
    with pytest.raises(CorruptCheckpointError, match=re.escape(words)):
        RunData.from_file(path)
    assert cli.main(["info", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert str(path) in err and words in err and "no checkpoint file" not in err and len(err.splitlines()) == 1, err
    if kind != "/dev/null":  # as the local run file: named, never trained over
        with pytest.raises(CorruptCheckpointError, match=re.escape(words)):
            load_full_run_data(path, progress=False)
        assert cli.main(["fetch", "--out", str(path), "--quiet"]) == 1
        err = capsys.readouterr().err.strip()
        assert words in err and "left untouched" in err and len(err.splitlines()) == 1, err


def test_the_recipe_imports_without_torch():
    code = (
        "import sys, part52_grokking_and_modular_arithmetic.runs.config as c;"
        "assert 'torch' not in sys.modules, 'torch was imported';"
        "c.check_field('p', 113); print(c.TASKS)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
