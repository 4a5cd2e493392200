"""Small evaluation helpers shared by the chapters: averages with their uncertainty.

Every averaged number the book prints comes with its standard error, computed the same way
everywhere (:func:`~lib.core.mean_se`), and convergence statements such as "reaches -35 dB at
iteration
24" use one definition (:func:`~lib.core.first_below`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lib.core.checks import check_number

__all__ = ["mean_se", "first_below"]


def mean_se(x, dim: int = -1):
    """Sample mean along ``dim`` and its standard error :math:`\\hat\\sigma/\\sqrt{n}`.

    :math:`\\hat\\sigma` is the unbiased sample standard deviation and ``n`` the number of
    samples along ``dim``.

    Parameters
    ----------
    x : torch.Tensor, numpy.ndarray or sequence
        Real samples, at least 2 along ``dim``, finite (a NaN or an infinite sample would make
        the standard error NaN: report or drop the failed samples first). Tensors may live on
        any device.
    dim : int
        The samples' axis.

    Returns
    -------
    (float, float) or (numpy.ndarray, numpy.ndarray)
        Two Python floats for one-dimensional input, otherwise two NumPy arrays with ``dim``
        removed.
    """
    t = torch.as_tensor(x)
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"x must be real, got {t.dtype}")
    t = t.detach().to(torch.float64)
    if t.dim() == 0:
        raise ValueError("x must have at least one dimension (the samples)")
    dim = check_number(dim, "dim", lo=-t.dim(), hi=t.dim() - 1, integer=True)
    n = t.shape[dim]
    if n < 2:
        raise ValueError(f"x needs at least 2 samples along dim {dim}, got {n}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(
            "x contains NaN or infinite samples (the standard error would be NaN): "
            "report or drop the failed samples first"
        )
    mean = t.mean(dim)
    se = t.std(dim) / math.sqrt(n)
    if mean.dim() == 0:
        return float(mean), float(se)
    return mean.cpu().numpy(), se.cpu().numpy()


def first_below(curve, level: float) -> int | None:
    """1-based index of the first entry of ``curve`` at or below ``level``, or ``None``.

    Used for "iterations (or layers) needed to reach ``level`` dB".

    Parameters
    ----------
    curve : array_like or torch.Tensor
        One-dimensional curve (e.g. NMSE in dB per iteration); NaN entries never count.
    level : float
        The level (not NaN).

    Returns
    -------
    int or None
        The 1-based index, or ``None`` when the curve never reaches ``level``.
    """
    level = check_number(level, "level", finite=False)
    if isinstance(curve, torch.Tensor):
        curve = curve.detach().cpu()
    c = np.asarray(curve, dtype=float)
    if c.ndim != 1:
        raise ValueError(f"curve must be one-dimensional, got shape {c.shape}")
    hit = np.nonzero(c <= level)[0]
    return int(hit[0]) + 1 if hit.size else None
