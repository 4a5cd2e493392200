"""ISTA and FISTA for the LASSO (Beck and Teboulle 2009), with the LASSO objective and the
Lipschitz constant of its gradient. Sparse recovery chapter (``book/sparse_recovery.ipynb``,
eqs. ``eq-sparse-lasso``, ``eq-sparse-ista``, ``eq-sparse-fista``).

Both algorithms validate ``y``, ``A``, ``lam``, ``step`` and ``x0`` once and then iterate
without checks. Per-iteration results: ``history=True`` returns ``(x_hat, stack)`` with
``stack`` of shape ``(T, B, N)`` (``T = iters``); a callable ``history=f`` returns
``(x_hat, [f(x_1), ..., f(x_T)])`` stacked (a tensor if ``f`` returns tensors, else a NumPy
array), e.g. ``history=lambda xh: float(nmse_db(xh, x))`` for a convergence curve.
"""

from __future__ import annotations

import math

import torch

from lib.core.checks import check_positive_int, check_real, per_sample
from lib.sparse.common import (
    _check_A,
    _check_noise_var_unused,
    _check_x0,
    _check_yA,
    _History,
    _mtv,
    _mv,
    _per_sample_col,
)
from lib.sparse.denoisers import _soft

__all__ = ["lasso_objective", "lipschitz_constant", "ista", "fista_momentum", "fista"]


# --------------------------------------------------------------------------- #
# ISTA and FISTA
# --------------------------------------------------------------------------- #
def lasso_objective(y: torch.Tensor, A: torch.Tensor, x: torch.Tensor, lam) -> torch.Tensor:
    """LASSO objective ``0.5 ||y - A x||^2 + lam ||x||_1`` per sample (eq. ``eq-sparse-lasso``).

    Parameters
    ----------
    y : torch.Tensor
        ``(B, M)`` real measurements.
    A : torch.Tensor
        ``(M, N)`` or ``(B, M, N)``, same dtype and device as ``y``.
    x : torch.Tensor
        ``(B, N)`` candidate.
    lam : float or torch.Tensor
        ``>= 0``, scalar or ``(B,)``.

    Returns
    -------
    torch.Tensor
        ``(B,)``.
    """
    y, A = _check_yA(y, A)
    check_real(x, "x", shape=(y.shape[0], A.shape[-1]))
    lam = per_sample(lam, "lam", y.shape[0], dtype=y.dtype, device=y.device, allow_zero=True)
    return 0.5 * ((y - _mv(A, x)) ** 2).sum(-1) + lam * x.abs().sum(-1)


def lipschitz_constant(A: torch.Tensor) -> torch.Tensor:
    """``L = ||A||_2^2``, the largest eigenvalue of ``A^T A`` (the Lipschitz constant of the
    gradient of the LASSO's quadratic term).

    Parameters
    ----------
    A : torch.Tensor
        ``(M, N)`` or ``(B, M, N)`` real.

    Returns
    -------
    torch.Tensor
        A 0-d tensor, or ``(B,)``.
    """
    A = _check_A(A)
    return torch.linalg.matrix_norm(A, ord=2) ** 2


def _ista_setup(y, A, lam, step, x0):
    y, A = _check_yA(y, A)
    batch, n = y.shape[0], A.shape[-1]
    lam = _per_sample_col(lam, "lam", batch, y, allow_zero=True)
    if step is None:
        L = lipschitz_constant(A)
        if bool((L == 0).any()):
            raise ValueError("A is zero: the ISTA step 1/||A||_2^2 is undefined (pass step=...)")
        step = 1.0 / L
    step = _per_sample_col(step, "step", batch, y)
    x0 = _check_x0(x0, batch, n, y)
    x = torch.zeros(batch, n, dtype=y.dtype, device=y.device) if x0 is None else x0.clone()
    return y, A, lam, step, x


def ista(y, A, lam, iters: int, *, step=None, x0=None, history=False, noise_var=None):
    """Iterative soft thresholding for the LASSO ``min 0.5||y - A x||^2 + lam ||x||_1``.

    ``x_{t+1} = eta(x_t + step A^T (y - A x_t); step * lam)`` with ``step = 1/L``,
    ``L = ||A||_2^2`` by default (Beck and Teboulle 2009, eq. (1.4); Sparse recovery chapter,
    eq. ``eq-sparse-ista``).

    Parameters
    ----------
    y : torch.Tensor
        ``(B, M)`` real measurements.
    A : torch.Tensor
        ``(M, N)`` or ``(B, M, N)``, same dtype and device as ``y``.
    lam : float or torch.Tensor
        LASSO weight ``>= 0``, scalar or ``(B,)``.
    iters : int
        ``T``, number of iterations.
    step : float or torch.Tensor, optional
        Step size ``> 0``, scalar or ``(B,)`` (default ``1 / ||A||_2^2``).
    x0 : torch.Tensor, optional
        ``(B, N)`` start (default zero), same dtype and device as ``y``.
    history : bool or callable
        ``True``: also return the per-iteration estimates ``(T, B, N)``; a callable ``f``:
        also return ``f(x_t)`` for ``t = 1..T``, stacked.
    noise_var : float or torch.Tensor, optional
        Accepted (and validated, ``>= 0``) so that ISTA can be called like every sparse
        estimator, ``estimator(y, A, noise_var=...)``; ISTA does not use it.

    Returns
    -------
    torch.Tensor or (torch.Tensor, stack)
        ``x_hat`` ``(B, N)``, and with ``history`` the stack described above.
    """
    iters = check_positive_int(iters, "iters")
    y, A, lam, step, x = _ista_setup(y, A, lam, step, x0)
    _check_noise_var_unused(noise_var, y.shape[0], y)
    hist = _History(history)
    for _ in range(iters):
        x = _soft(x + step * _mtv(A, y - _mv(A, x)), step * lam)
        hist.add(x)
    return hist.result(x)


def fista_momentum(t: float) -> float:
    """FISTA's momentum ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2`` (Beck and Teboulle, eq. (4.2)).

    Parameters
    ----------
    t : float
        ``t_k``.

    Returns
    -------
    float
        ``t_{k+1}``.
    """
    return (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0


def fista(
    y, A, lam, iters: int, *, step=None, x0=None, history=False, momentum=None, noise_var=None
):
    """Fast ISTA (Beck and Teboulle 2009, Sec. 4; Sparse recovery chapter, eq. ``eq-sparse-fista``).

    ISTA on an extrapolated point:
    ``x_k = eta(v_k + step A^T (y - A v_k); step lam)``,
    ``t_{k+1} = momentum(t_k)``, ``v_{k+1} = x_k + (t_k - 1)/t_{k+1} (x_k - x_{k-1})``,
    starting from ``t_1 = 1``, ``v_1 = x_0``.

    Parameters
    ----------
    y, A, lam, iters, step, x0, noise_var
        As in :func:`~lib.sparse.ista` (``noise_var`` is accepted for the common signature and
        unused).
    history : bool or callable
        ``True``: also return the per-iteration estimates ``x_k`` ``(T, B, N)``; a callable
        ``f``: also return ``f(x_k)`` for ``k = 1..T``, stacked.
    momentum : callable, optional
        ``t -> t_next`` (default :func:`~lib.sparse.fista_momentum`), for the reader's own rule.

    Returns
    -------
    torch.Tensor or (torch.Tensor, stack)
        ``x_hat`` ``(B, N)``, and with ``history`` the stack.
    """
    iters = check_positive_int(iters, "iters")
    y, A, lam, step, x = _ista_setup(y, A, lam, step, x0)
    _check_noise_var_unused(noise_var, y.shape[0], y)
    momentum = fista_momentum if momentum is None else momentum
    if not callable(momentum):
        raise TypeError(f"momentum must be a callable t -> t_next, got {type(momentum).__name__}")
    hist = _History(history)
    v, t = x, 1.0
    for _ in range(iters):
        x_new = _soft(v + step * _mtv(A, y - _mv(A, v)), step * lam)
        t_new = momentum(t)
        v = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
        hist.add(x)
    return hist.result(x)
