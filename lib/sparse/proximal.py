"""ISTA and FISTA for the LASSO (Beck and Teboulle 2009), with the LASSO objective and the
Lipschitz constant of its gradient. Chapter: *Sparse recovery*.
"""

from __future__ import annotations

import math

import torch

from lib.core.checks import check_positive_int, check_real, per_sample
from lib.sparse.common import _check_A, _check_x0, _check_yA, _History, _mtv, _mv, _per_sample_col
from lib.sparse.denoisers import soft_threshold

__all__ = ["lasso_objective", "lipschitz_constant", "ista", "fista_momentum", "fista"]


# --------------------------------------------------------------------------- #
# ISTA and FISTA
# --------------------------------------------------------------------------- #
def lasso_objective(y: torch.Tensor, A: torch.Tensor, x: torch.Tensor, lam) -> torch.Tensor:
    """LASSO objective ``0.5 ||y - A x||^2 + lam ||x||_1`` per sample, shape ``(batch,)``."""
    y, A = _check_yA(y, A)
    check_real(x, "x", shape=(y.shape[0], A.shape[-1]))
    lam = per_sample(lam, "lam", y.shape[0], dtype=y.dtype, allow_zero=True)
    return 0.5 * ((y - _mv(A, x)) ** 2).sum(-1) + lam * x.abs().sum(-1)


def lipschitz_constant(A: torch.Tensor) -> torch.Tensor:
    """``L = ||A||_2^2`` (largest eigenvalue of ``A^T A``): scalar tensor, or ``(batch,)``."""
    A = _check_A(A)
    return torch.linalg.matrix_norm(A, ord=2) ** 2


def _ista_setup(y, A, lam, step, x0):
    y, A = _check_yA(y, A)
    batch, n = y.shape[0], A.shape[-1]
    lam = _per_sample_col(lam, "lam", batch, y, allow_zero=True)
    if step is None:
        step = 1.0 / lipschitz_constant(A)
    step = _per_sample_col(step, "step", batch, y)
    x0 = _check_x0(x0, batch, n, y.dtype)
    x = torch.zeros(batch, n, dtype=y.dtype, device=y.device) if x0 is None else x0.clone()
    return y, A, lam, step, x


def ista(y, A, lam, iters: int, *, step=None, x0=None, history=False):
    """Iterative soft thresholding for the LASSO ``min 0.5||y - A x||^2 + lam ||x||_1``.

    ``x_{t+1} = eta(x_t + step A^T (y - A x_t); step * lam)`` with ``step = 1/L``,
    ``L = ||A||_2^2`` by default (Beck and Teboulle 2009, eq. (1.4)). ``lam`` and ``step``
    are scalars or ``(batch,)`` tensors. Returns ``x_hat`` ``(batch, N)``, and with
    ``history`` also the per-iteration estimates ``(iters, batch, N)`` (see module doc).
    """
    iters = check_positive_int(iters, "iters")
    y, A, lam, step, x = _ista_setup(y, A, lam, step, x0)
    hist = _History(history)
    for _ in range(iters):
        x = soft_threshold(x + step * _mtv(A, y - _mv(A, x)), step * lam)
        hist.add(x)
    return hist.result(x)


def fista_momentum(t: float) -> float:
    """FISTA's momentum ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2`` (Beck and Teboulle, eq. (4.2))."""
    return (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0


def fista(y, A, lam, iters: int, *, step=None, x0=None, history=False, momentum=None):
    """Fast ISTA (Beck and Teboulle 2009, Sec. 4): ISTA on an extrapolated point.

    ``x_k = eta(v_k + step A^T (y - A v_k); step lam)``,
    ``t_{k+1} = momentum(t_k)``, ``v_{k+1} = x_k + (t_k - 1)/t_{k+1} (x_k - x_{k-1})``,
    starting from ``t_1 = 1``, ``v_1 = x_0``. Same signature as :func:`ista`;
    ``momentum`` (default :func:`fista_momentum`) lets the reader plug in their own.
    """
    iters = check_positive_int(iters, "iters")
    y, A, lam, step, x = _ista_setup(y, A, lam, step, x0)
    momentum = fista_momentum if momentum is None else momentum
    hist = _History(history)
    v, t = x, 1.0
    for _ in range(iters):
        x_new = soft_threshold(v + step * _mtv(A, y - _mv(A, v)), step * lam)
        t_new = momentum(t)
        v = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
        hist.add(x)
    return hist.result(x)
