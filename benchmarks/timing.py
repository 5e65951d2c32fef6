"""Helpers the benchmarks share: the machine's load (printed beside each result) and a device sync."""

from __future__ import annotations

import os

import torch


def load_average() -> str:
    """``"load average 0.52 0.76 0.85"`` (1, 5, 15 minutes), or ``"load average n/a"`` where the OS has none."""
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average n/a"


def synchronize(device: torch.device | str) -> None:
    """Wait for the GPU's queue (timings of CUDA work need it); nothing on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
