"""Decibels: conversions between linear quantities and dB (``10 log10``)."""

from __future__ import annotations

import numpy as np
import torch

from lib.core.checks import _real_dtype

__all__ = ["db_to_lin", "lin_to_db"]


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
