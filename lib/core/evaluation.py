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

__all__ = ["mean_se", "ratio_db_se", "first_below"]


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


def ratio_db_se(a, b, dim: int = -1):
    r"""Paired ratio of means in dB, ``10 log10(mean(a) / mean(b))``, and its standard error.

    The book's NMSE is a ratio of sums, so the gap between two estimators evaluated on the
    same test signals is ``10 log10(sum_i e_a,i / sum_i e_b,i)`` with ``e_k,i = ||xhat_k,i -
    x_i||^2`` (the signal energy cancels). Its standard error is the delta-method one for paired
    samples, :math:`\frac{10}{\ln 10}\sqrt{(\hat\sigma_a^2/\bar a^2 + \hat\sigma_b^2/\bar
    b^2 - 2\hat\sigma_{ab}/(\bar a\bar b))/n}`: the pairing removes the variation the two
    share (the same hard test signals), which an unpaired comparison would count twice.

    Parameters
    ----------
    a, b : torch.Tensor, numpy.ndarray or sequence
        Non-negative paired samples (e.g. squared errors per test signal) of the same shape, at
        least 2 along ``dim``, with positive means.
    dim : int
        The samples' axis.

    Returns
    -------
    (float, float) or (numpy.ndarray, numpy.ndarray)
        The ratio in dB (negative when ``a`` is smaller) and its standard error in dB.
    """
    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    for t, name in ((ta, "a"), (tb, "b")):
        if t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must be real, got {t.dtype}")
    ta, tb = ta.detach().to(torch.float64).cpu(), tb.detach().to(torch.float64).cpu()
    if ta.shape != tb.shape or ta.dim() == 0:
        raise ValueError(
            f"a and b must be paired samples of one shape, got {tuple(ta.shape)} and "
            f"{tuple(tb.shape)}"
        )
    dim = check_number(dim, "dim", lo=-ta.dim(), hi=ta.dim() - 1, integer=True)
    n = ta.shape[dim]
    if n < 2:
        raise ValueError(f"a and b need at least 2 samples along dim {dim}, got {n}")
    if not (torch.isfinite(ta).all() and torch.isfinite(tb).all()):
        raise ValueError("a and b must be finite")
    if bool((ta < 0).any() or (tb < 0).any()):
        raise ValueError("a and b must be non-negative (e.g. squared errors)")
    ma, mb = ta.mean(dim), tb.mean(dim)
    if bool((ma <= 0).any() or (mb <= 0).any()):
        raise ValueError("a and b must have positive means")
    da, db = ta - ma.unsqueeze(dim), tb - mb.unsqueeze(dim)
    va, vb = (da**2).sum(dim) / (n - 1), (db**2).sum(dim) / (n - 1)
    cab = (da * db).sum(dim) / (n - 1)
    var = (va / ma**2 + vb / mb**2 - 2 * cab / (ma * mb)).clamp_min(0) / n
    ratio, se = 10 * torch.log10(ma / mb), 10 / math.log(10) * var.sqrt()
    if ratio.dim() == 0:
        return float(ratio), float(se)
    return ratio.numpy(), se.numpy()


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
