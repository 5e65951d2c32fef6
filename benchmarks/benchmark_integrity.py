"""Benchmark: loading a run file with the integrity check (the archive's CRC-32s) against a baseline checkout.

Each round runs one subprocess per tree (the baseline — e.g. ``git worktree add /tmp/base <commit>`` — and this
checkout), alternately: it imports the package once, loads the file once untimed (imports, page cache), then
times ``RunData.from_file`` (read, verify, check) ``--loads`` times. Medians of the per-process medians are
compared, so the ratio holds on a busy machine; the absolute times do not. This checkout's process also times
the CRC check alone (``checkpoints.verify_archive``). One torch thread by default (``--threads``): on a
shared machine more threads make every reduction wait for the others, and the noise hides the difference.

    git worktree add /tmp/base HEAD~1
    python benchmarks/benchmark_integrity.py --baseline /tmp/base            # the default run file
    python benchmarks/benchmark_integrity.py --baseline /tmp/base --run other.pth --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import load_average  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import json, statistics, sys, time
import torch
from part52_grokking_and_modular_arithmetic.runs import checkpoints
from part52_grokking_and_modular_arithmetic.runs.run_data import RunData
path, loads = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(int(sys.argv[3]))
RunData.from_file(path)
times, crc = [], []
for _ in range(loads):
    t = time.perf_counter(); RunData.from_file(path); times.append(time.perf_counter() - t)
    if hasattr(checkpoints, "verify_archive"):
        t = time.perf_counter(); checkpoints.verify_archive(path); crc.append(time.perf_counter() - t)
print(json.dumps({"load": statistics.median(times), "crc": statistics.median(crc) if crc else None}))
"""


def _time_in(tree: Path, run: Path, loads: int, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(threads))
    argv = [sys.executable, "-c", _CHILD, str(run), str(loads), str(threads)]
    done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the load in {tree} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the code to compare with")
    parser.add_argument("--run", type=Path, default=ROOT / "Grokking" / "large_files" / "full_run_data.pth")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--loads", type=int, default=3, help="timed loads per process")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady on a shared machine)")
    args = parser.parse_args()
    size = args.run.stat().st_size
    print(
        f"{args.run} ({size / 1e6:.1f} MB), {args.rounds} rounds x {args.loads} loads, {args.threads} torch thread(s)"
    )
    print(load_average(), flush=True)
    old, new, crc = [], [], []
    for r in range(args.rounds):
        a = _time_in(args.baseline, args.run, args.loads, args.threads)
        b = _time_in(ROOT, args.run, args.loads, args.threads)
        old.append(a["load"])
        new.append(b["load"])
        crc.append(b["crc"])
        print(
            f"round {r + 1}: baseline {a['load'] * 1e3:.0f} ms, this {b['load'] * 1e3:.0f} ms, CRC check {b['crc'] * 1e3:.0f} ms",
            flush=True,
        )
    o, n, c = statistics.median(old), statistics.median(new), statistics.median(crc)
    print(f"median load: baseline {o * 1e3:.0f} ms, this checkout {n * 1e3:.0f} ms: {n / o:.2f}x")
    print(f"median CRC check alone: {c * 1e3:.0f} ms ({size / c / 1e9:.2f} GB/s); {load_average()}")


if __name__ == "__main__":
    main()
