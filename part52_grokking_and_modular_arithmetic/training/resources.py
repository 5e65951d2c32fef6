"""What training needs, estimated before anything is allocated: the size of a run file and the memory of runs
trained together. Arithmetic on the configs only (no torch), so the command line can quote it in ``--help``."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence

from ..runs.architecture import ARCHITECTURE, PAPER_TRAINABLE, n_params
from ..runs.config import TrainConfig

__all__ = ["checkpoint_bytes", "estimate_run_file_bytes", "activation_bytes_per_run", "chunk_runs", "cpu_workers"]
__all__ += ["estimate_memory_bytes"]

#: torch.save overhead per tensor (pickle record, zip entry, alignment), bytes: a generous estimate.
TENSOR_OVERHEAD = 1024
#: Memory the process grows by besides the runs' state, activations and histories (models, allocator caches).
FIXED_BYTES = 64 * 2**20
#: Activations computed at once on the CPU (one chunk per worker thread) at most this many bytes by default
#: (10 runs at p = 113), so that a 64-run sweep of the default recipe fits in 4 GB on any number of cores.
CPU_CHUNK_BYTES = 768 * 2**20
#: Runs per chunk on the CPU: one run's working set (~10 MB at p = 113) stays in cache (ms per run-epoch at
#: chunks of 1 / 2 / 8 runs, 1 thread: 35.1 / 39.2 / 48.5); the cores compute one-run chunks side by side.
CPU_CHUNK_RUNS = 1


def checkpoint_bytes(p: int) -> int:
    """One checkpoint (float32 weights) of the model for modulus ``p``: 907,264 bytes at p = 113."""
    return 4 * n_params(p)


def estimate_run_file_bytes(config: TrainConfig) -> int:
    """Size of the run file of ``config`` at its end: checkpoints, resume record, loss histories, split."""
    per_checkpoint = checkpoint_bytes(config.p) + TENSOR_OVERHEAD * len(PAPER_TRAINABLE)
    n_checkpoints = math.ceil(config.epochs / config.save_every) + 1  # +1: an early stop adds its epoch
    histories = 12 * (config.epochs + math.ceil(config.epochs / config.test_every))  # pickled floats
    n_train = math.ceil(config.frac_train * config.p**2)
    return (n_checkpoints + 3) * per_checkpoint + histories + 8 * n_train + 64 * 1024


def activation_bytes_per_run(config: TrainConfig) -> int:
    """Peak memory of one run's forward + backward on its train pairs, or of its test evaluation: per pair the Z
    rows, ReLU output, float32/float64 logits with log-softmax and gradients, attention; plus the run's tables."""
    p, d_mlp = config.p, ARCHITECTURE["d_mlp"]
    n_out, d = p + 1, d_mlp + p + 1
    n_train = int(config.frac_train * p * p)
    per_train_pair = 4 * (3 * d + 2 * d_mlp + 4 * n_out + 24) + 8 * (4 * n_out) + 8 * 16
    per_test_pair = 4 * (d + 2 * n_out) + 8 * (2 * n_out) + 8 * 16
    return max(n_train * per_train_pair, (p * p - n_train) * per_test_pair) + 4 * 6 * (4 * 2 * n_out * d)


def chunk_runs(per_run_bytes: int, n_runs: int, gpu_free_bytes: int | None = None) -> int:
    """Runs computed together: on a GPU (``gpu_free_bytes`` given) all that fit half its free memory; on the CPU
    :data:`CPU_CHUNK_RUNS`."""
    budget, most = CPU_CHUNK_BYTES, CPU_CHUNK_RUNS
    if gpu_free_bytes is not None:
        budget, most = gpu_free_bytes // 2, n_runs
    return max(1, min(n_runs, most, budget // max(per_run_bytes, 1)))


def cpu_workers(configs: Sequence[TrainConfig], threads: int, workers: int | None = None) -> int:
    """CPU worker threads for runs of one ``p``: ``workers``, at most one per chunk; by default ``threads`` (torch's
    thread count), as long as the chunks computed at once stay within :data:`CPU_CHUNK_BYTES`."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    per_run = max(activation_bytes_per_run(c) for c in configs)
    chunk = chunk_runs(per_run, len(configs))
    if workers is None:
        workers = min(threads, max(1, CPU_CHUNK_BYTES // (chunk * per_run)))
    return max(1, min(-(-len(configs) // chunk), workers))


def estimate_memory_bytes(configs: TrainConfig | Sequence[TrainConfig], workers: int | None = None) -> int:
    """Memory training ``configs`` (one, or runs trained together) needs: every run's record
    (:func:`estimate_run_file_bytes`) plus one serialised copy, per ``p`` the batched state and the activations of
    the runs computed at once (``workers``, default :func:`cpu_workers` with torch's thread count, or the CPU count
    while torch is not loaded), and a fixed 64 MB."""
    configs = [configs] if isinstance(configs, TrainConfig) else list(configs)
    if not configs:
        return 0
    torch = sys.modules.get("torch")  # loaded for training; --help estimates without it
    threads = torch.get_num_threads() if torch is not None else os.cpu_count() or 1
    files = [estimate_run_file_bytes(c) for c in configs]
    training = 0
    for p in {c.p for c in configs}:
        group = [c for c in configs if c.p == p]
        per_run = max(activation_bytes_per_run(c) for c in group)
        at_once = min(chunk_runs(per_run, len(group)) * cpu_workers(group, threads, workers), len(group))
        training = max(training, len(group) * 8 * 4 * n_params(p) + at_once * per_run)
    return sum(files) + max(files) + FIXED_BYTES + training
