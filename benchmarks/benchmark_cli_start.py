"""Benchmark: how long the command line takes to answer ``--help`` and ``info FILE`` (wall time and peak memory
of a fresh process: interpreter start, imports, argument parsing, the command itself).

Each measurement is a subprocess ``python -m part52_grokking_and_modular_arithmetic ...`` run in a checkout
(its folder first on ``sys.path``); the commands and checkouts are interleaved ``--repeats`` times so that other
load on the machine hits them alike, and the median of each is reported. ``--checkout`` compares checkouts, e.g.
before and after a change (``git worktree add /tmp/base HEAD``). ``info`` reads ``--run-file`` (default: a tiny
run trained once into a temporary folder by this checkout's ``train`` command).

    python benchmarks/benchmark_cli_start.py
    python benchmarks/benchmark_cli_start.py --checkout /tmp/base --checkout . --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGE = "part52_grokking_and_modular_arithmetic"
ROOT = Path(__file__).resolve().parents[1]


def timed(argv: list[str], checkout: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one run of ``python -m PACKAGE *argv`` in ``checkout``."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", PACKAGE, *argv], cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak RSS (kB on Linux)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed in {checkout}: {proc.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def tiny_run(folder: Path) -> Path:
    out = folder / "tiny.pth"
    argv = ["train", "--p", "23", "--epochs", "20", "--save-every", "10", "--out", str(out), "--quiet"]
    subprocess.run([sys.executable, "-m", PACKAGE, *argv], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, action="append", help="a checkout to measure (default: this one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--run-file", type=Path, default=None, help="the file `info` reads (default: a tiny run)")
    args = parser.parse_args()
    checkouts = [c.resolve() for c in args.checkout or [ROOT]]
    with tempfile.TemporaryDirectory() as tmp:
        run_file = (args.run_file or tiny_run(Path(tmp))).resolve()
        commands = {"--help": ["--help"], "info": ["info", str(run_file)]}
        results: dict[tuple[str, Path], list[tuple[float, float]]] = {}
        for repeat in range(args.repeats):
            order = [(name, c) for name in commands for c in checkouts]
            for name, checkout in order if repeat % 2 == 0 else order[::-1]:
                results.setdefault((name, checkout), []).append(timed(commands[name], checkout))
    from timing import load_average  # benchmarks/timing.py; imported late: torch in this process would count in
    # each child's peak RSS (a forked child's maximum includes the parent's pages before exec)

    print(f"median of {args.repeats} runs each ({load_average()}); info reads {run_file.name}")
    for (name, checkout), runs in results.items():
        seconds = statistics.median(s for s, _ in runs)
        rss = statistics.median(m for _, m in runs)
        print(f"  {name:<7} {checkout}: {seconds:6.2f} s, peak RSS {rss:6.0f} MB")


if __name__ == "__main__":
    main()
