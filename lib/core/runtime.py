"""Reproducibility and devices: seeds for every generator the book uses, the torch thread count
(one by default, ``BOOK_TORCH_THREADS`` overrides it), and the device choice.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from lib.core.checks import check_positive_int

__all__ = ["set_seed", "set_threads", "get_device"]


# --------------------------------------------------------------------------- #
# Reproducibility and devices
# --------------------------------------------------------------------------- #
def set_seed(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) and return a seeded torch generator.

    Notebooks call this once at the top so that every printed number is
    reproducible run to run on the same machine.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (legacy global state used by notebooks)
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def set_threads(n: int | None = None) -> int:
    """Set the number of torch intra-op threads and return it.

    ``None`` reads the environment variable ``BOOK_TORCH_THREADS`` and falls
    back to 1. On a shared 2-core machine a single thread is usually the
    fastest for the small batched linear algebra of this book (measured in
    ``benchmarks/bench_threads.py``).
    """
    if n is None:
        n = int(os.environ.get("BOOK_TORCH_THREADS", "1"))
    check_positive_int(n, "n")
    torch.set_num_threads(n)
    return n


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Resolve a device: ``None`` or ``"auto"`` gives CUDA when present, else CPU.

    Chapters run on the CPU; training scripts accept ``--device cuda``.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch.cuda.is_available() is False")
    return dev
