"""Benchmark: ms per epoch of the fast trainer step vs a plain full-batch HookedTransformer loop (same recipe).

Both loops train side by side from the same initialisation, and are timed in alternating blocks (the order
flips every repeat), so a machine busy with other work slows both alike; the ratio of the two medians is
the number to quote. Each epoch is one full-batch AdamW step (forward, backward, update) on all training
pairs: the test-loss evaluation is not part of either.

    python benchmarks/benchmark_training.py                      # p = 113, default threads
    python benchmarks/benchmark_training.py --threads 1 --repeats 10
    python benchmarks/benchmark_training.py --grok               # + run the default config to test loss < 1e-2
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the tests' reference implementations

from timing import load_average  # noqa: E402  (benchmarks/timing.py)

from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig  # noqa: E402
from part52_grokking_and_modular_arithmetic.runs.model import make_model  # noqa: E402
from part52_grokking_and_modular_arithmetic.training.train import (  # noqa: E402
    TrainingData,
    fast_train_step,
    keep_freed_memory,
    make_optimizer,
    train,
)

from reference.plain_training import plain_hooked_transformer_step  # noqa: E402


def benchmark_steps(config: TrainConfig, epochs: int, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Per-epoch seconds of both loops, timed in alternating blocks of ``epochs`` epochs."""
    fast_model, plain_model = make_model(config.p, seed=config.seed), make_model(config.p, seed=config.seed)
    fast_opt, plain_opt = make_optimizer(fast_model, config), make_optimizer(plain_model, config)
    data = TrainingData(config)

    def fast() -> float:
        return fast_train_step(fast_model, *fast_opt, data.train_pairs)

    def plain() -> float:
        return plain_hooked_transformer_step(plain_model, *plain_opt, data.train_tokens, data.train_labels)

    for _ in range(warmup):
        fast()
        plain()
    times: dict[str, list[float]] = {"fast": [], "plain": []}
    for r in range(repeats):
        order = [("fast", fast), ("plain", plain)] if r % 2 == 0 else [("plain", plain), ("fast", fast)]
        for name, step in order:
            for _ in range(epochs):
                t0 = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t0)
    return times


def benchmark_train(config: TrainConfig, epochs: int) -> float:
    """Seconds per epoch of the whole ``train()`` loop (test loss every ``test_every`` epochs, checkpoints)."""
    t0 = time.perf_counter()
    train(dataclasses.replace(config, epochs=epochs), progress=False, device="cpu")
    return (time.perf_counter() - t0) / epochs


def run_to_grokking(config: TrainConfig, threshold: float) -> None:
    marks: dict[float, tuple[int, float]] = {}
    t0 = time.perf_counter()

    def note(epoch: int, train_loss: float, test_loss: float | None) -> None:
        for level in (1.0, threshold):
            if test_loss is not None and test_loss < level and level not in marks:
                marks[level] = (epoch, time.perf_counter() - t0)

    run = train(dataclasses.replace(config, stop_at_test_loss=threshold), callback=note, device="cpu")
    wall = time.perf_counter() - t0
    stop_epoch = run["epochs"][-1]
    if 1.0 in marks:
        print(f"  test loss < 1      first at epoch {marks[1.0][0]:>6,}  ({marks[1.0][1]:7.1f} s)")
    if run["resume"]["stopped_early"]:
        print(f"  test loss < {threshold:g} first at epoch {stop_epoch:>6,}  ({wall:7.1f} s wall, {wall / 60:.1f} min)")
    else:
        print(f"  test loss stayed >= {threshold:g} for {config.epochs:,} epochs ({wall:.1f} s)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--p", type=int, default=113, help="modulus (default 113)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per timed block (default 5)")
    parser.add_argument("--repeats", type=int, default=8, help="alternating blocks per loop (default 8)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed epochs of each loop first (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="do not call keep_freed_memory() (the train command calls it; see benchmark_allocator.py)",
    )
    parser.add_argument("--train-epochs", type=int, default=0, help="also time N epochs of the whole train() loop")
    parser.add_argument(
        "--grok", action="store_true", help="run the default config until the test loss < --grok-threshold"
    )
    parser.add_argument("--grok-threshold", type=float, default=1e-2)
    parser.add_argument("--grok-epochs", type=int, default=30_000, help="give up after this many epochs")
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    malloc = "glibc defaults" if args.default_malloc else f"keep_freed_memory() -> {keep_freed_memory()}"
    config = TrainConfig(p=args.p)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"allocator: {malloc}, {load_average()}"
    )
    print(
        f"p = {config.p}, frac_train = {config.frac_train}: one full-batch epoch each, "
        f"{args.repeats} alternating blocks of {args.epochs} epochs"
    )
    times = benchmark_steps(config, args.epochs, args.repeats, args.warmup)
    fast, plain = statistics.median(times["fast"]) * 1e3, statistics.median(times["plain"]) * 1e3
    print(f"  fast trainer step          median {fast:8.2f} ms/epoch   (min {min(times['fast']) * 1e3:.2f})")
    print(f"  plain HookedTransformer    median {plain:8.2f} ms/epoch   (min {min(times['plain']) * 1e3:.2f})")
    print(f"  ratio of medians           {plain / fast:8.2f}x faster")
    print(f"  ({load_average()})")
    if args.train_epochs:
        per_epoch = benchmark_train(config, args.train_epochs)
        print(
            f"  whole train() loop         {per_epoch * 1e3:8.2f} ms/epoch over {args.train_epochs} epochs "
            f"(incl. test loss every {config.test_every}, checkpoint every {config.save_every})"
        )
    if args.grok:
        print(f"default config (seed {config.seed}) until test loss < {args.grok_threshold:g}:")
        run_to_grokking(TrainConfig(p=args.p, epochs=args.grok_epochs), args.grok_threshold)


if __name__ == "__main__":
    main()
