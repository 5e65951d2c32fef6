"""Benchmark: the gain of ``train.keep_freed_memory()`` (glibc ``mallopt``) on its own, in ms per training epoch.

``mallopt`` changes the whole process and cannot be undone cleanly, so the two settings cannot share one
process: each measurement is a fresh subprocess that trains the default recipe's step (p = 113, the
single-run trainer's ``fast_train_step``) for ``--epochs`` timed epochs after a warm-up, with or without
``keep_freed_memory()`` called first, and prints its median ms/epoch. The parent alternates the two settings
``--repeats`` times (the order flips every repeat, so other load on the machine hits both alike) and reports
the median of each and their ratio. The ``train`` and ``fetch`` commands call ``keep_freed_memory()``; the
library's ``train()`` never does.

    python benchmarks/benchmark_allocator.py                       # 1 thread, 5 repeats of 30 epochs
    python benchmarks/benchmark_allocator.py --repeats 7 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def child(setting: str, epochs: int, threads: int, p: int) -> None:
    import torch

    from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig
    from part52_grokking_and_modular_arithmetic.runs.model import make_model
    from part52_grokking_and_modular_arithmetic.training.train import (
        TrainingData,
        fast_train_step,
        keep_freed_memory,
        make_optimizer,
    )

    torch.set_num_threads(threads)
    applied = keep_freed_memory() if setting == "on" else False
    config = TrainConfig(p=p)
    model = make_model(config.p, seed=config.seed)
    optimizer, scheduler = make_optimizer(model, config)
    data = TrainingData(config)
    for _ in range(3):
        fast_train_step(model, optimizer, scheduler, data.train_pairs)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        fast_train_step(model, optimizer, scheduler, data.train_pairs)
        times.append(1000 * (time.perf_counter() - t0))
    print(f"{statistics.median(times):.3f} {int(applied)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="subprocesses per setting (default 5)")
    parser.add_argument("--epochs", type=int, default=30, help="timed epochs per subprocess (default 30)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--p", type=int, default=113)
    parser.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.epochs, args.threads, args.p)
        return

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    results: dict[str, list[float]] = {"off": [], "on": []}
    applied = False
    for r in range(args.repeats):
        for setting in ("off", "on") if r % 2 == 0 else ("on", "off"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    setting,
                    "--epochs",
                    str(args.epochs),
                    "--threads",
                    str(args.threads),
                    "--p",
                    str(args.p),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            results[setting].append(float(out[0]))
            applied |= setting == "on" and out[1] == "1"
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    print(
        f"p = {args.p}, {args.threads} thread(s), {args.repeats} subprocesses per setting, {args.epochs} epochs each "
        f"(mallopt applied: {applied})"
    )
    print(
        f"  glibc defaults        median {off:7.2f} ms/epoch   (all: {', '.join(f'{x:.1f}' for x in results['off'])})"
    )
    print(f"  keep_freed_memory()   median {on:7.2f} ms/epoch   (all: {', '.join(f'{x:.1f}' for x in results['on'])})")
    print(f"  gain: defaults / keep_freed_memory = {off / on:.3f}x")


if __name__ == "__main__":
    main()
