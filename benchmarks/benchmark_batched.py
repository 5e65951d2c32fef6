"""Benchmark: per-run ms per epoch of the batched trainer against S single runs and against ``torch.func.vmap``.

For each S (default 1, 8, 64) three ways of training S runs of the default recipe (p = 113, seeds 0..S-1, each
its own split) are timed, one full-batch AdamW epoch each (forward, backward, update; the test-loss evaluation
is not part of any of them):

* ``batched``: :func:`~part52_grokking_and_modular_arithmetic.training.train.train_many`'s epoch: the S runs as one
  set of tensors through :mod:`~part52_grokking_and_modular_arithmetic.training.last_position` and :class:`BatchedAdamW`;
* ``single``: the single-run trainer's epoch (``train()``'s step: last-position loss of one model, backward,
  ``torch.optim.AdamW`` + warm-up) of one run (its cost per run does not depend on S; timed in each row, in
  the same alternating blocks as the others);
* ``vmap-plain``: ``torch.func.vmap`` of ``grad`` of a ``functional_call`` of the plain ``HookedTransformer``
  (full forward, every position) over the S runs' stacked weights, then :class:`BatchedAdamW`; chunked over the runs
  (``--vmap-chunk``) so that S = 64 fits in memory.

The three are timed in alternating blocks (the order rotates every repeat), so a busy machine slows them alike;
the table gives medians of ms per run-epoch (a block's time / its epochs / S) and the ratios of the medians.

    python benchmarks/benchmark_batched.py                          # CPU, S = 1 8 64, default threads
    python benchmarks/benchmark_batched.py --threads 1 --sizes 1 8
    python benchmarks/benchmark_batched.py --device cuda --sizes 1 8 64 256
    python benchmarks/benchmark_batched.py --memory                 # peak memory of train_many against its estimate
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
from timing import load_average, synchronize  # benchmarks/timing.py (run as python benchmarks/<name>.py)
from torch.func import functional_call, grad, vmap

from part52_grokking_and_modular_arithmetic.runs.architecture import PAPER_TRAINABLE
from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig
from part52_grokking_and_modular_arithmetic.runs.data import make_split
from part52_grokking_and_modular_arithmetic.runs.model import make_model
from part52_grokking_and_modular_arithmetic.training import last_position as lp
from part52_grokking_and_modular_arithmetic.training.batched_train import (
    Batch,
    BatchedAdamW,
    n_workers,
    worker_pool,
)
from part52_grokking_and_modular_arithmetic.training.resources import estimate_memory_bytes
from part52_grokking_and_modular_arithmetic.training.train import (
    keep_freed_memory,
    make_optimizer,
    resolve_device,
    trained_parameters,
)


def batched_step(configs: list[TrainConfig], device: torch.device, stack: contextlib.ExitStack, workers: int | None):
    """One epoch of the batched trainer for ``configs`` (what ``train_many`` does per epoch, minus bookkeeping),
    with its CPU worker threads (kept until ``stack`` closes)."""
    rows = [
        torch.cat([t.detach().reshape(-1) for t in trained_parameters(make_model(c.p, seed=c.seed))]) for c in configs
    ]
    pool = stack.enter_context(worker_pool(n_workers(configs, device, workers)))
    batch = Batch(
        configs, torch.stack(rows), [make_split(c.p, c.frac_train, c.seed, c.fn) for c in configs], device, pool
    )

    def step() -> None:
        batch.train_losses_and_grads()
        batch.step()

    return step


def single_step(config: TrainConfig, device: torch.device):
    """One epoch of the single-run trainer (``train()``'s step) for ``config``."""
    model = make_model(config.p, seed=config.seed, device=device)
    optimizer, scheduler = make_optimizer(model, config)
    split = make_split(config.p, config.frac_train, config.seed, config.fn)
    idx = split.train_indices
    pairs = lp.Pairs.from_tokens(split.all_data[idx], split.labels[idx], d_vocab=config.p + 1, device=device)

    def step() -> None:
        loss = lp.model_loss(model, pairs)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cpu":
            loss.item()  # train() reads the loss every epoch on the CPU

    return step


def vmap_plain_step(configs: list[TrainConfig], device: torch.device, chunk: int | None):
    """One epoch of ``vmap(grad(functional_call(HookedTransformer)))`` over the runs + a batched AdamW."""
    p = configs[0].p
    models = [make_model(c.p, seed=c.seed) for c in configs]
    base = make_model(p, seed=configs[0].seed, device=device)
    frozen = {n: t.detach() for n, t in base.named_parameters() if n not in PAPER_TRAINABLE}
    buffers = dict(base.named_buffers())
    shapes = [tuple(dict(base.named_parameters())[n].shape) for n in PAPER_TRAINABLE]
    sizes = [torch.Size(s).numel() for s in shapes]
    flat = torch.stack(
        [torch.cat([dict(m.named_parameters())[n].detach().reshape(-1) for n in PAPER_TRAINABLE]) for m in models]
    ).to(device)
    opt = BatchedAdamW.for_configs(flat, configs)
    splits = [make_split(c.p, c.frac_train, c.seed, c.fn) for c in configs]
    n = min(len(s.train_indices) for s in splits)  # same frac_train: same length
    tokens = torch.stack([s.all_data[s.train_indices[:n]] for s in splits]).to(device)
    labels = torch.stack([s.labels[s.train_indices[:n]] for s in splits]).to(device)
    active = torch.ones(len(configs), dtype=torch.bool, device=device)
    g_flat = torch.zeros_like(flat)

    def loss_fn(params, tok, lab):
        out = functional_call(base, {**params, **frozen, **buffers}, (tok,))
        return -out[:, -1].double().log_softmax(-1).gather(-1, lab[:, None]).mean()

    grads_of = vmap(grad(loss_fn), in_dims=(0, 0, 0), chunk_size=chunk)

    def views(x):
        out, off = {}, 0
        for name, shape, size in zip(PAPER_TRAINABLE, shapes, sizes, strict=True):
            out[name] = x[:, off : off + size].view(-1, *shape)
            off += size
        return out

    def step() -> None:
        grads = grads_of(views(flat), tokens, labels)
        off = 0
        for name, size in zip(PAPER_TRAINABLE, sizes, strict=True):
            g_flat[:, off : off + size] = grads[name].reshape(len(configs), size)
            off += size
        opt.step(flat, g_flat, active)

    return step


def time_blocks(
    steps: dict, epochs: dict[str, int], runs: dict[str, int], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per run-epoch of each step (one untimed epoch first), timed in alternating blocks of
    ``epochs[name]`` epochs whose order rotates every repeat."""
    for step in steps.values():
        step()
    synchronize(device)
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(epochs[name]):
                steps[name]()
            synchronize(device)
            times[name].append((time.perf_counter() - t0) / epochs[name] / runs[name])
    return times


def measure_memory(sizes: list[int], epochs: int) -> None:
    """Peak memory (RSS) of ``train_many`` for S runs, each in a fresh process, against the estimate."""
    print(f"{'S':>4} {'peak RSS growth':>16} {'estimate':>10}")
    for S in sizes:
        code = (
            "import resource, torch; from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig as T;"
            "from part52_grokking_and_modular_arithmetic.training.train import train_many;"
            f"cs=[T(seed=i, epochs={epochs}, test_every=1) for i in range({S})];"
            "r0=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
            f"train_many(cs, [None]*{S}, device='cpu', progress=False);"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss-r0)*1024)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
        ).stdout
        grown = int(out.strip().splitlines()[-1])
        est = estimate_memory_bytes([TrainConfig(seed=i, epochs=epochs, test_every=1) for i in range(S)])
        print(f"{S:>4} {grown / 1e6:>13.0f} MB {est / 1e6:>7.0f} MB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--p", type=int, default=113, help="modulus (default 113)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 64], help="numbers of runs S (default 1 8 64)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="train_many's CPU worker threads (default: as train_many: one per thread)",
    )
    parser.add_argument(
        "--epoch-budget",
        type=float,
        default=64.0,
        help="run-epochs per timed block of each method (default 64: 64 epochs at S = 1, 1 at S = 64)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="alternating blocks per method (default 5)")
    parser.add_argument("--vmap-chunk", type=int, default=8, help="runs per vmap chunk (default 8; 0: all at once)")
    parser.add_argument("--no-vmap", action="store_true", help="skip the vmap-plain baseline")
    parser.add_argument(
        "--memory", action="store_true", help="measure train_many's peak memory against its estimate instead"
    )
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory:
        measure_memory(args.sizes, epochs=3)
        return
    device = resolve_device(args.device)
    malloc = keep_freed_memory()  # as the train and sweep commands do
    print(
        f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
        f"keep_freed_memory() -> {malloc}, "
        f"{platform.processor() or platform.machine()}, {load_average()}"
    )
    print(
        f"p = {args.p}, default recipe, seeds 0..S-1 (each its own split): one full-batch AdamW epoch per step; "
        f"{args.repeats} alternating blocks; medians"
    )
    single = single_step(TrainConfig(p=args.p, seed=0), device)
    rows = []
    for S in args.sizes:
        configs = [TrainConfig(p=args.p, seed=s) for s in range(S)]
        with contextlib.ExitStack() as stack:
            steps = {"batched": batched_step(configs, device, stack, args.workers), "single": single}
            if not args.no_vmap:
                steps["vmap-plain"] = vmap_plain_step(configs, device, args.vmap_chunk or None)
            runs = {name: 1 if name == "single" else S for name in steps}
            epochs = {name: max(1, round(args.epoch_budget / runs[name])) for name in steps}
            times = time_blocks(steps, epochs, runs, args.repeats, device)
        per_run = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        rows.append((S, per_run))
        vm = per_run.get("vmap-plain")
        print(
            f"S = {S:>3}: batched {per_run['batched']:8.2f}  single {per_run['single']:8.2f}"
            + (f"  vmap-plain {vm:8.2f}" if vm else "")
            + f"  ms per run-epoch   ({load_average()})",
            flush=True,
        )
        del steps
    print()
    print(
        "| S | device | threads | batched ms/run-epoch | single ms/run-epoch | vmap-plain ms/run-epoch | single / batched | vmap-plain / batched |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for S, r in rows:
        vm = r.get("vmap-plain")
        print(
            f"| {S} | {device.type} | {torch.get_num_threads()} | {r['batched']:.2f} | {r['single']:.2f} | "
            + (f"{vm:.2f}" if vm else "-")
            + f" | {r['single'] / r['batched']:.2f} | "
            + (f"{vm / r['batched']:.2f}" if vm else "-")
            + " |"
        )


if __name__ == "__main__":
    main()
