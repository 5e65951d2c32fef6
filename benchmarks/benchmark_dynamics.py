"""Benchmark: the batched training-dynamics engine against the naive per-checkpoint loop.

Both compute the same Section-3 metrics for every checkpoint of a run (see
``part52_grokking_and_modular_arithmetic.analysis.dynamics``): the naive loop (the tests' reference,
``tests/reference/naive_dynamics.py``) loads each checkpoint into a ``HookedTransformer`` and calls
``run_with_cache`` on all p^2 inputs; the engine works from the stacked weights. The run is made of paper-init checkpoints with different seeds (timing needs no training), or read
from a run file with ``--run``. The two are timed alternately in the same process, so the printed ratio
holds even on a busy machine; the absolute times do not.

    python benchmarks/benchmark_dynamics.py                      # 50 checkpoints, p = 113, 3 repeats
    python benchmarks/benchmark_dynamics.py --n-checkpoints 10 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from part52_grokking_and_modular_arithmetic.analysis.dynamics import compute_dynamics
from part52_grokking_and_modular_arithmetic.runs.layout import transformer_lens_to_paper
from part52_grokking_and_modular_arithmetic.runs.model import make_model
from part52_grokking_and_modular_arithmetic.runs.run_data import load_run_data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the tests' reference implementations
from reference.naive_dynamics import compute_dynamics_naive  # noqa: E402

MAINLINE_KEY_FREQS = [14, 35, 41, 42, 52]


def random_run(p: int, n_checkpoints: int) -> dict:
    """A run-data dict of ``n_checkpoints`` paper-init models (seeds 0, 1, ...), paper layout."""
    state_dicts = []
    for seed in range(n_checkpoints):
        sd = make_model(p, seed=seed).state_dict()
        state_dicts.append(
            transformer_lens_to_paper({k: v for k, v in sd.items() if not k.endswith(("mask", "IGNORE"))})
        )
    return {
        "state_dicts": state_dicts,
        "epochs": [100 * i for i in range(n_checkpoints)],
        "train_losses": [float("nan")] * n_checkpoints,
        "test_losses": [float("nan")] * n_checkpoints,
    }


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--p", type=int, default=113)
    parser.add_argument("--n-checkpoints", type=int, default=50)
    parser.add_argument(
        "--run", type=Path, default=None, help="time on this run file (first --n-checkpoints checkpoints)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=None, help="engine chunk size (default: its own)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--key-freqs", type=int, nargs="+", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.run is not None:
        full = load_run_data(args.run)
        n = min(args.n_checkpoints, len(full["state_dicts"]))
        run = {**full, "state_dicts": full["state_dicts"][:n], "epochs": list(full["epochs"][:n])}
    else:
        run = random_run(args.p, args.n_checkpoints)
    n = len(run["state_dicts"])
    p = int(run["state_dicts"][0]["embed.W_E"].shape[1]) - 1
    key_freqs = args.key_freqs or [k for k in MAINLINE_KEY_FREQS if k <= (p - 1) // 2] or [1]
    print(
        f"p = {p}, {n} checkpoints, key freqs {key_freqs}, {torch.get_num_threads()} torch threads, "
        f"{args.repeats} repeats (engine and naive loop alternate)"
    )

    engine_times, naive_times = [], []
    for r in range(args.repeats):
        engine_times.append(timed(lambda: compute_dynamics(run, key_freqs, chunk_size=args.chunk_size, progress=False)))
        naive_times.append(timed(lambda: compute_dynamics_naive(run, key_freqs, progress=False)))
        print(f"  repeat {r + 1}: engine {engine_times[-1]:.2f} s, naive {naive_times[-1]:.2f} s")

    with tempfile.TemporaryDirectory() as cache:
        compute_dynamics(run, key_freqs, cache=cache, chunk_size=args.chunk_size, progress=False)
        cached_times = [timed(lambda: compute_dynamics(run, key_freqs, cache=cache, progress=False)) for _ in range(3)]

    engine, naive, cached = (statistics.median(t) for t in (engine_times, naive_times, cached_times))
    print(f"median per checkpoint: engine {1000 * engine / n:.1f} ms, naive loop {1000 * naive / n:.1f} ms")
    print(f"median whole run:      engine {engine:.2f} s, naive loop {naive:.2f} s, cache hit {cached:.3f} s")
    print(f"speed-up (naive / engine): {naive / engine:.1f}x")


if __name__ == "__main__":
    main()
