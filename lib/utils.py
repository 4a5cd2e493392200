"""Reproducibility, devices, decibels and input validation shared by every module.

The validation helpers raise :class:`TypeError` for a wrong type or dtype and
:class:`ValueError` for a wrong shape or range, and always name the offending
argument and what was expected, so that a reader's mistake is reported where
it happens rather than as a NaN three functions later.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "set_seed",
    "set_threads",
    "get_device",
    "db_to_lin",
    "lin_to_db",
    "check_tensor",
    "check_complex",
    "check_real",
    "per_sample",
    "check_positive_int",
]


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


# --------------------------------------------------------------------------- #
# Decibels
# --------------------------------------------------------------------------- #
def db_to_lin(x_db):
    """Convert a power ratio from dB to linear scale: :math:`10^{x/10}`.

    Accepts Python numbers, NumPy arrays and torch tensors and returns the same kind.
    """
    if isinstance(x_db, torch.Tensor):
        return torch.pow(torch.tensor(10.0, dtype=_real_dtype(x_db), device=x_db.device), x_db / 10)
    if isinstance(x_db, (int, float, np.integer, np.floating)):
        return float(10.0 ** (float(x_db) / 10.0))
    return np.power(10.0, np.asarray(x_db, dtype=float) / 10.0)


def lin_to_db(x):
    """Convert a (positive) power ratio from linear scale to dB: :math:`10\\log_{10} x`."""
    if isinstance(x, torch.Tensor):
        return 10.0 * torch.log10(x)
    if isinstance(x, (int, float, np.integer, np.floating)):
        if x <= 0:
            raise ValueError(f"x must be > 0 to convert to dB, got {x}")
        return float(10.0 * np.log10(float(x)))
    return 10.0 * np.log10(np.asarray(x, dtype=float))


def _real_dtype(x: torch.Tensor) -> torch.dtype:
    if x.is_complex():
        return torch.float64 if x.dtype == torch.complex128 else torch.float32
    return x.dtype if x.is_floating_point() else torch.get_default_dtype()


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #
def _shape_str(shape: Sequence) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_tensor(
    x,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    shape: Sequence[int | str | None] | None = None,
    complex_: bool | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """Check that ``x`` is a torch tensor of the expected rank, shape and kind.

    Parameters
    ----------
    x : object
        The argument to check.
    name : str
        The argument's name, used in the error message.
    ndim : int or sequence of int, optional
        Allowed numbers of dimensions.
    shape : sequence, optional
        Expected shape; an entry that is a string or ``None`` matches any size
        (the string names the dimension in the message, e.g. ``"batch"``).
    complex_ : bool, optional
        ``True`` requires a complex dtype, ``False`` a real floating dtype.
    finite : bool
        Reject NaN or infinite entries.

    Returns
    -------
    torch.Tensor
        ``x`` itself.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if shape is not None:
        want = _shape_str(shape)
        if x.dim() != len(shape) or any(
            isinstance(s, int) and s != d for s, d in zip(shape, x.shape)
        ):
            raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                f"got shape {tuple(x.shape)}"
            )
    if complex_ is True and not x.is_complex():
        raise TypeError(f"{name} must be a complex tensor (complex64/complex128), got {x.dtype}")
    if complex_ is False and (x.is_complex() or not x.is_floating_point()):
        raise TypeError(f"{name} must be a real floating tensor (float32/float64), got {x.dtype}")
    if finite and (x.is_floating_point() or x.is_complex()) and x.numel() > 0:
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or infinite entries")
    return x


def check_complex(x, name: str, *, ndim=None, shape=None) -> torch.Tensor:
    """Shorthand for :func:`check_tensor` with ``complex_=True``."""
    return check_tensor(x, name, ndim=ndim, shape=shape, complex_=True)


def check_real(x, name: str, *, ndim=None, shape=None) -> torch.Tensor:
    """Shorthand for :func:`check_tensor` with ``complex_=False``."""
    return check_tensor(x, name, ndim=ndim, shape=shape, complex_=False)


def per_sample(
    value,
    name: str,
    batch: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    positive: bool = True,
    allow_zero: bool = False,
) -> torch.Tensor:
    """Turn a scalar or a ``(batch,)`` tensor into a real ``(batch,)`` tensor, checking its range.

    Used for ``power`` and ``noise_var`` arguments, which may be one number for
    the whole batch or one per sample.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number or a tensor, got bool")
    if isinstance(value, (int, float, np.integer, np.floating)):
        t = torch.full((batch,), float(value), dtype=dtype, device=device)
    elif isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must be real, got {value.dtype}")
        if value.dim() == 0:
            t = value.to(dtype=dtype, device=device).expand(batch).clone()
        elif value.shape == (batch,):
            t = value.to(dtype=dtype, device=device)
        else:
            raise ValueError(
                f"{name} must be a scalar or have shape ({batch},), got {tuple(value.shape)}"
            )
    else:
        raise TypeError(f"{name} must be a number or a torch.Tensor, got {type(value).__name__}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite")
    if positive:
        bad = (t < 0) if allow_zero else (t <= 0)
        if bool(bad.any()):
            rel = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{name} must be {rel}, got min {float(t.min()):.4g}")
    return t


def check_positive_int(n, name: str, *, minimum: int = 1) -> int:
    """Check that ``n`` is an integer ``>= minimum`` and return it."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    return int(n)
