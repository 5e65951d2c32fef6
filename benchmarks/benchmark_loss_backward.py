"""Benchmark: the loss's hand-written backward against autograd through a float64 ``log_softmax`` and ``gather``.

The package's one loss (``losses.cross_entropy_per_run``, and ``cross_entropy_high_precision`` for one run)
computes its per-example float64 negative log-likelihood (``losses._nll_float64``, timed here with the same
per-run mean as the baseline) with a small ``autograd.Function`` whose backward is
``(softmax - onehot) * d nll`` from the exponentials the forward kept. The baseline here is the textbook
version, ``-logits.double().log_softmax(-1).gather(-1, labels)``, differentiated by autograd. Both compute the
same losses and gradients (checked below before timing). One step is forward + backward of the mean loss of R
runs of the default training batch (p = 113, 3,830 pairs, 114 classes) in float32, with logits of a model early
in training (spread out) and of a confident one (one large logit per row). The two alternate in blocks in this
one process, so other load slows both alike; the ratio of medians is the number to quote.

    python benchmarks/benchmark_loss_backward.py                    # 1 thread, R = 1 and 8
    python benchmarks/benchmark_loss_backward.py --runs 1 8 64 --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from part52_grokking_and_modular_arithmetic.training.losses import _nll_float64  # the one per-example loss
from part52_grokking_and_modular_arithmetic.training.train import keep_freed_memory


def autograd_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The baseline: per-run mean NLL from a float64 log_softmax, differentiated by autograd."""
    nll = -logits.to(torch.float64).log_softmax(dim=-1).gather(-1, labels[..., None])[..., 0]
    return nll.mean(dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 8], help="values of R (default: 1 8)")
    parser.add_argument("--batch", type=int, default=3830, help="pairs per run (default 3830: p = 113, frac 0.3)")
    parser.add_argument("--classes", type=int, default=114)
    parser.add_argument("--repeats", type=int, default=7, help="alternating blocks per version (default 7)")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block (default 10)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    malloc = keep_freed_memory()  # as the train command does: no page faults on every step's fresh buffers
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), keep_freed_memory() -> {malloc}; "
        f"batch {args.batch}, {args.classes} classes"
    )

    generator = torch.Generator().manual_seed(0)
    for n_runs in args.runs:
        labels = torch.randint(0, args.classes, (n_runs, args.batch), generator=generator)
        spread = torch.randn(n_runs, args.batch, args.classes, generator=generator) * 3
        confident = spread.clone()
        confident.scatter_add_(-1, labels[..., None], torch.full((n_runs, args.batch, 1), 40.0))
        for name, values in (("early (spread logits)", spread), ("confident", confident)):
            logits = values.clone().requires_grad_()

            def step(hand_written: bool, logits=logits, labels=labels) -> torch.Tensor:
                logits.grad = None
                loss = _nll_float64(logits, labels).mean(dim=1) if hand_written else autograd_loss(logits, labels)
                loss.sum().backward()
                return loss.detach()

            ours, ours_grad = step(True), logits.grad.clone()
            theirs, theirs_grad = step(False), logits.grad.clone()
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-15)  # float64 rounding of log(1 + tiny)
            torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-5, atol=1e-12)

            times: dict[bool, list[float]] = {True: [], False: []}
            for r in range(args.repeats):
                for hand_written in (True, False) if r % 2 == 0 else (False, True):
                    step(hand_written)  # warm-up of this block
                    for _ in range(args.steps):
                        t0 = time.perf_counter()
                        step(hand_written)
                        times[hand_written].append(time.perf_counter() - t0)
            hand, auto = statistics.median(times[True]) * 1e3, statistics.median(times[False]) * 1e3
            print(
                f"R = {n_runs:>2}, {name:<22} hand-written {hand:7.2f} ms/step, autograd {auto:7.2f} ms/step, "
                f"autograd / hand-written = {auto / hand:.2f}x"
            )


if __name__ == "__main__":
    main()
