"""Decibels: conversions between linear power ratios and dB (``10 log10``).

Linear scale is the default everywhere in ``lib``; a quantity in dB has a name ending in
``_db`` (``CONTRIBUTING.md``, *lib conventions*).
"""

from __future__ import annotations

import numpy as np
import torch

from lib.core.checks import _is_number, _real_dtype, check_number

__all__ = ["db_to_lin", "lin_to_db"]


# --------------------------------------------------------------------------- #
# Decibels
# --------------------------------------------------------------------------- #
def db_to_lin(x_db):
    """Convert a power ratio from dB to linear scale: :math:`10^{x/10}`.

    Parameters
    ----------
    x_db : float, array_like or torch.Tensor
        Value(s) in dB. A Python/NumPy number must not be NaN (``-inf`` gives 0, ``inf`` gives
        ``inf``); arrays and tensors are converted elementwise.

    Returns
    -------
    float, numpy.ndarray or torch.Tensor
        The same kind as the input; a tensor keeps its device and (real) dtype.
    """
    if isinstance(x_db, torch.Tensor):
        return torch.pow(torch.tensor(10.0, dtype=_real_dtype(x_db), device=x_db.device), x_db / 10)
    if _is_number(x_db) or isinstance(x_db, (bool, np.bool_)):
        return float(10.0 ** (check_number(x_db, "x_db", finite=False) / 10.0))
    return np.power(10.0, np.asarray(x_db, dtype=float) / 10.0)


def lin_to_db(x):
    """Convert a positive power ratio from linear scale to dB: :math:`10\\log_{10} x`.

    Parameters
    ----------
    x : float, array_like or torch.Tensor
        Linear value(s). A Python/NumPy number must be ``> 0`` and not NaN (``inf`` gives
        ``inf``); arrays and tensors are converted elementwise.

    Returns
    -------
    float, numpy.ndarray or torch.Tensor
        The same kind as the input.
    """
    if isinstance(x, torch.Tensor):
        return 10.0 * torch.log10(x)
    if _is_number(x) or isinstance(x, (bool, np.bool_)):
        v = check_number(x, "x", finite=False)
        if v <= 0:
            raise ValueError(f"x must be > 0 to convert to dB, got {v}")
        return float(10.0 * np.log10(v))
    return 10.0 * np.log10(np.asarray(x, dtype=float))
