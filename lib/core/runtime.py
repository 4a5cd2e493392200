"""Reproducibility and devices: seeds for every generator the book uses, the torch thread count
(one by default, ``BOOK_TORCH_THREADS`` overrides it), the device choice, and the one rule for
random draws on a device.

Random draws and devices
------------------------
A ``torch.Generator`` lives on one device. Every function of ``lib`` that draws random numbers
for an input on some device (the noise of :func:`lib.phy.mmse_estimate`, of
:func:`lib.sparse.measure`, ...) follows one rule, implemented by :func:`~lib.core.draw_randn` and
:func:`~lib.core.draw_rand`: *with a generator, the numbers are drawn on the generator's device and
then
moved to the input's device; without one, they are drawn directly on the input's device* (from
that device's default generator). So a CPU generator seeded with :func:`~lib.core.set_seed` gives
the same
numbers whether the data sit on the CPU or on a GPU (bit-for-bit reproducible figures), at the
cost of one host-to-device copy; pass a CUDA generator to draw on the GPU.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from lib.core.checks import check_number, check_positive_int

__all__ = ["set_seed", "set_threads", "get_device", "draw_randn", "draw_rand"]


# --------------------------------------------------------------------------- #
# Reproducibility and devices
# --------------------------------------------------------------------------- #
def set_seed(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) and return a seeded CPU torch generator.

    Notebooks call this once at the top so that every printed number is reproducible run to
    run on the same machine (``CONTRIBUTING.md``, *Notebook conventions*).

    Parameters
    ----------
    seed : int
        In ``[0, 2**63 - 1]``.

    Returns
    -------
    torch.Generator
        A CPU generator seeded with ``seed`` (see the module doc for draws on other devices).
    """
    seed = check_number(seed, "seed", lo=0, hi=2**63 - 1, integer=True)
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

    Parameters
    ----------
    n : int, optional
        Number of threads, ``>= 1``.

    Returns
    -------
    int
        The number of threads set.
    """
    if n is None:
        raw = os.environ.get("BOOK_TORCH_THREADS", "1")
        try:
            n = int(raw)
        except ValueError:
            raise ValueError(
                f"BOOK_TORCH_THREADS must be a positive integer, got {raw!r}"
            ) from None
        if n < 1:
            raise ValueError(f"BOOK_TORCH_THREADS must be a positive integer, got {raw!r}")
    check_positive_int(n, "n")
    torch.set_num_threads(n)
    return n


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Resolve a device: ``None`` or ``"auto"`` gives CUDA when present, else CPU.

    Chapters run on the CPU; training scripts accept ``--device cuda``.

    Parameters
    ----------
    device : str or torch.device, optional
        ``None``, ``"auto"``, or anything ``torch.device`` accepts.

    Returns
    -------
    torch.device
        The device; ``ValueError`` for an unknown name or an unavailable CUDA.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
        ) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch.cuda.is_available() is False")
    return dev


# --------------------------------------------------------------------------- #
# Random draws on a device
# --------------------------------------------------------------------------- #
def _draw(fn, shape, generator, dtype, device) -> torch.Tensor:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    at = generator.device if generator is not None else device
    out = fn(*shape, generator=generator, dtype=dtype, device=at)
    return out if device is None else out.to(device)


def draw_randn(
    *shape: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Standard normal draws of ``shape`` on ``device`` (the rule of the module doc).

    Parameters
    ----------
    *shape : int
        The shape.
    generator : torch.Generator, optional
        Drawn on ``generator.device`` and moved to ``device``; without one, drawn on ``device``.
    dtype : torch.dtype
        A real floating dtype.
    device : torch.device or str, optional
        Where the result lives (``None``: the generator's device, else the default device).

    Returns
    -------
    torch.Tensor
        ``shape``, ``dtype``, on ``device``.
    """
    return _draw(torch.randn, shape, generator, dtype, device)


def draw_rand(
    *shape: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Uniform ``[0, 1)`` draws of ``shape`` on ``device``; same rule as
    :func:`~lib.core.draw_randn`."""
    return _draw(torch.rand, shape, generator, dtype, device)
