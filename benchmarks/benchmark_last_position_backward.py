"""Benchmark: the last-position module's hand-written backward against plain autograd through the same tables.

``last_position.losses(w, pairs, hand_written=...)`` computes the same tables, logits and float64 loss either way;
only the backward of the batch part differs (a custom ``autograd.Function`` using the pairs' fixed index
structures, or autograd through ``embedding_bag``/``baddbmm``). One step here is forward + backward (no optimizer).
It is timed on two checkpoints of a run file: an early one (epoch ~100) and the last one (a confident model,
whose tiny logit gradients are where subnormal floats would appear: both paths flush them, see
``benchmark_confident_backward.py``), for R = 1 (the single-run trainer) and R = 8 runs at once (8 different
train splits, padded). The two paths alternate in blocks within this one process, so other load on the
machine slows both alike; the ratio of medians is the number to quote.

    python benchmarks/benchmark_last_position_backward.py                 # default run file, 1 thread
    python benchmarks/benchmark_last_position_backward.py --repeats 7 --runs 1 8 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from timing import synchronize  # benchmarks/timing.py (run as python benchmarks/<name>.py)

from part52_grokking_and_modular_arithmetic.runs.data import make_all_data, make_labels, train_test_split
from part52_grokking_and_modular_arithmetic.runs.layout import paper_to_transformer_lens
from part52_grokking_and_modular_arithmetic.runs.provision import default_run_path
from part52_grokking_and_modular_arithmetic.runs.run_data import load_run_data, validate_run_data
from part52_grokking_and_modular_arithmetic.training import last_position as lp


def _pairs(p: int, frac: float, n_runs: int, device: str) -> lp.Pairs:
    """Train pairs of ``n_runs`` different splits (seeds 0, 1, ...)."""
    all_data = make_all_data(p)
    labels = make_labels(all_data, p)
    splits = [train_test_split(p, frac, seed)[0] for seed in range(n_runs)]
    return lp.Pairs.from_tokens(
        [all_data[s] for s in splits], [labels[s] for s in splits], d_vocab=p + 1, device=device
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_file", nargs="?", default=None, help="a run file (default: the default run path)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating blocks per path (default 5)")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block (default 5)")
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 8], help="values of R (default: 1 8)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_run_data(args.run_file or default_run_path())
    p = validate_run_data(data)
    frac = (data.get("config") or {}).get("frac_train", 0.3)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {args.device}, p = {p}; "
        f"{args.repeats} alternating blocks of {args.steps} steps (forward + backward)"
    )
    for index in (1, -1):
        weights = paper_to_transformer_lens(data["state_dicts"][index])
        for n_runs in args.runs:
            pairs = _pairs(p, frac, n_runs, args.device)
            w = {
                name: weights[name].to(args.device)[None].repeat(n_runs, *[1] * weights[name].ndim).requires_grad_(True)
                for name in lp.WEIGHT_NAMES
            }

            def step(hand_written: bool, w=w, pairs=pairs) -> None:
                for t in w.values():
                    t.grad = None
                lp.losses(w, pairs, hand_written=hand_written).sum().backward()

            with torch.no_grad():
                loss = lp.losses(w, pairs)[0].item()
            times: dict[str, list[float]] = {"hand-written": [], "autograd": []}
            for name in times:
                step(name == "hand-written")  # warm-up (and the pairs' index structures)
            for r in range(args.repeats):
                for name in list(times) if r % 2 == 0 else list(times)[::-1]:
                    synchronize(args.device)
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        step(name == "hand-written")
                    synchronize(args.device)
                    times[name].append(1000 * (time.perf_counter() - t0) / args.steps)
            hand, auto = statistics.median(times["hand-written"]), statistics.median(times["autograd"])
            print(
                f"epoch {data['epochs'][index]:>6} (train loss {loss:.2e}), R = {n_runs:>2}: hand-written {hand:7.1f} ms/step, "
                f"autograd {auto:7.1f} ms/step, autograd / hand-written = {auto / hand:.2f}x"
            )


if __name__ == "__main__":
    main()
