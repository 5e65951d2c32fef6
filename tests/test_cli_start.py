"""The command line answers --help and usage errors before torch or TransformerLens is imported (each of them
takes seconds and hundreds of MB): checked in a fresh interpreter per command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

# runs the command line as `python -m` does, then says which heavy modules were imported
WRAPPER = """
import runpy, sys
sys.argv = ["part52_grokking_and_modular_arithmetic", *sys.argv[1:]]
try:
    runpy.run_module("part52_grokking_and_modular_arithmetic", run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
print("exit", code, "heavy", sorted({"torch", "transformer_lens", "huggingface_hub"} & set(sys.modules)))
"""


@pytest.mark.parametrize(
    "argv, code",
    [
        (["--help"], 0),
        ([], 2),
        (["nope"], 2),
        (["train", "--help"], 0),
        (["train", "--p", "24"], 2),
        (["train", "--epochs", "0"], 2),
        (["fetch", "--help"], 0),
        (["download", "--help"], 0),
        (["download", "--timeout", "-1"], 2),
        (["info", "--help"], 0),
        (["report", "--help"], 0),
        (["report", "--cell-timeout", "-1"], 2),
        (["sweep-summary", "--help"], 0),
        (["sweep", "--help"], 0),
        (["sweep", "--shard", "2/2", "--out-dir", "x"], 2),
    ],
)
def test_help_and_usage_errors_import_nothing_heavy(argv, code):
    result = subprocess.run([sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines()[-1] == f"exit {code} heavy []", result.stdout[-2000:] + result.stderr[-2000:]
