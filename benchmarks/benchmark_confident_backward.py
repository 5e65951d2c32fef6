"""Benchmark: the fast trainer's step on a model that already fits its data, with and without flushing the
tiny float32 logit gradients (``last_position.FLUSH_BELOW``) that would otherwise be subnormal numbers.

Late in training (and for the whole cleanup phase) wrong-class probabilities fall below 1e-30. Cast to
float32 they become subnormal floats, and every matrix product of the backward then runs several times
slower on x86 CPUs. The step is timed on the last checkpoint of a run file, alternating the two settings in
blocks within this one process, so that other load on the machine slows both alike; the ratio of medians is
the number to quote.

    python benchmarks/benchmark_confident_backward.py                       # the default run file
    python benchmarks/benchmark_confident_backward.py RUN.pth --index 50 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from part52_grokking_and_modular_arithmetic.runs.data import make_all_data, make_labels, train_test_split
from part52_grokking_and_modular_arithmetic.runs.provision import default_run_path
from part52_grokking_and_modular_arithmetic.runs.run_data import load_run_data
from part52_grokking_and_modular_arithmetic.training import last_position
from part52_grokking_and_modular_arithmetic.training.last_position import Pairs, model_loss
from part52_grokking_and_modular_arithmetic.utils import load_model


def _step_ms(model, batch, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        model_loss(model, batch).backward()
    return 1000 * (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_file", nargs="?", default=None, help="a run file (default: the default run path)")
    parser.add_argument("--index", type=int, default=-1, help="checkpoint to time (default: the last one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_run_data(args.run_file or default_run_path())
    model = load_model(data, index=args.index)
    p = model.cfg.d_vocab - 1
    cfg = data.get("config") or {}
    train, _ = train_test_split(p, cfg.get("frac_train", 0.3), cfg.get("seed", 0))
    tokens = make_all_data(p)[train]
    batch = Pairs.from_tokens(
        tokens, make_labels(tokens, p, cfg.get("fn", "add"), cfg.get("seed", 0)), d_vocab=model.cfg.d_vocab
    )
    with torch.no_grad():
        loss = model_loss(model, batch).item()

    flush = last_position.FLUSH_BELOW
    times: dict[str, list[float]] = {"flushed": [], "not flushed": []}
    _step_ms(model, batch, 2)  # warm-up
    for r in range(args.repeats):
        order = ["flushed", "not flushed"] if r % 2 == 0 else ["not flushed", "flushed"]
        for name in order:
            last_position.FLUSH_BELOW = flush if name == "flushed" else 0.0
            times[name].append(_step_ms(model, batch, args.steps))
    last_position.FLUSH_BELOW = flush

    epoch = data["epochs"][args.index]
    print(
        f"checkpoint at epoch {epoch} (train loss {loss:.3g}), {args.threads} thread(s), {args.repeats} x {args.steps} steps"
    )
    for name, ms in times.items():
        print(f"  {name:12s} median {statistics.median(ms):7.1f} ms/step   (all: {', '.join(f'{m:.1f}' for m in ms)})")
    ratio = statistics.median(times["not flushed"]) / statistics.median(times["flushed"])
    print(f"  speed-up from flushing: {ratio:.1f}x")


if __name__ == "__main__":
    main()
