"""The book's NMSE (a ratio of sums over the test set, in dB; Sparse recovery chapter, eq.
``eq-sparse-nmse``), the support oracle (least squares on the true support), the limit the
sparse-recovery figures show, and the linear MMSE estimator, the best any *linear* estimator
(and hence any network that learns only a linear map) can do.
"""

from __future__ import annotations

import torch

from lib.core.checks import check_number, check_tensor, same_device
from lib.sparse.common import _check_yA, _per_sample_col

__all__ = ["support_oracle", "lmmse", "lmmse_nmse", "nmse", "nmse_db"]


# --------------------------------------------------------------------------- #
# Oracle and metric
# --------------------------------------------------------------------------- #
def support_oracle(y, A, x_support_mask) -> torch.Tensor:
    """Least squares on the true support: the genie-aided limit of any sparse estimator.

    ``x_hat_S = argmin ||y - A_S x_S||^2`` and ``x_hat = 0`` off the support ``S``. Supports
    are gathered and zero-padded to the largest one, so the cost is that of ``(B, k, k)``
    solves.

    Parameters
    ----------
    y : torch.Tensor
        ``(B, M)`` real measurements.
    A : torch.Tensor
        ``(M, N)`` or ``(B, M, N)``, same dtype and device as ``y``.
    x_support_mask : torch.Tensor
        ``(B, N)`` boolean support (e.g. ``x != 0``), on ``y``'s device.

    Returns
    -------
    torch.Tensor
        ``x_hat`` ``(B, N)``.

    Raises
    ------
    ValueError
        A support has more than ``M`` entries (least squares underdetermined).
    """
    y, A = _check_yA(y, A)
    batch, m, n = y.shape[0], A.shape[-2], A.shape[-1]
    check_tensor(x_support_mask, "x_support_mask", shape=(batch, n), dtype=torch.bool)
    same_device(y, x_support_mask, names=("y", "x_support_mask"))
    mask = x_support_mask
    counts = mask.sum(-1)
    kmax = int(counts.max()) if batch else 0
    if kmax > m:
        raise ValueError(
            f"a support has {kmax} > M = {m} entries: least squares is underdetermined"
        )
    out = torch.zeros(batch, n, dtype=y.dtype, device=y.device)
    if kmax == 0:
        return out
    # indices of the support first (stable sort of ~mask), padded with off-support indices
    order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)[:, :kmax]
    valid = torch.arange(kmax, device=y.device).unsqueeze(0) < counts.unsqueeze(-1)  # (batch, kmax)
    a_full = A if A.dim() == 3 else A.unsqueeze(0).expand(batch, m, n)
    a_s = torch.gather(a_full, 2, order.unsqueeze(1).expand(batch, m, kmax)) * valid.unsqueeze(1)
    gram = a_s.transpose(1, 2) @ a_s + torch.diag_embed((~valid).to(y.dtype))
    rhs = (a_s.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1)
    xs = torch.linalg.solve(gram, rhs) * valid
    out.scatter_(1, order, xs)
    # scatter onto padded indices wrote zeros there; restore exact zeros off the support
    return out * mask


def lmmse(y, A, noise_var, *, signal_var: float) -> torch.Tensor:
    """Linear MMSE estimate for i.i.d. zero-mean entries of variance ``signal_var``.

    ``x_hat = s A^T (s A A^T + sigma^2 I)^{-1} y`` with ``s = signal_var`` (for the book's
    Bernoulli-Gaussian signals ``s = p a^2``). It uses only the second-order statistics of
    ``x``, so it is the best *linear* estimator whatever the prior; at high SNR its NMSE tends
    to ``10 log10(1 - M/N)`` dB for a Gaussian ``A`` (``lmmse_nmse``). Evaluated through
    ``A A^T = U diag(lambda) U^T``, so a per-sample ``noise_var`` costs no extra solve.

    Parameters
    ----------
    y : torch.Tensor
        ``(B, M)`` real measurements.
    A : torch.Tensor
        ``(M, N)``, same dtype and device as ``y``.
    noise_var : float or torch.Tensor
        ``sigma^2 >= 0``, a scalar or ``(B,)``.
    signal_var : float
        ``s > 0``.

    Returns
    -------
    torch.Tensor
        ``x_hat`` ``(B, N)``.
    """
    y, A = _check_yA(y, A)
    if A.dim() != 2:
        raise ValueError(f"A must be one (M, N) matrix, got shape {tuple(A.shape)}")
    s = check_number(signal_var, "signal_var", lo=0, lo_open=True)
    nv = _per_sample_col(noise_var, "noise_var", y.shape[0], y)  # (B, 1)
    lam, U = torch.linalg.eigh(A @ A.T)
    z = (y @ U) / (s * lam + nv)  # (B, M)
    return s * (z @ U.T) @ A


def lmmse_nmse(A: torch.Tensor, noise_var: float, *, signal_var: float) -> float:
    """Expected NMSE (linear) of :func:`lmmse`: ``1 - (1/N) sum_i s lambda_i / (s lambda_i +
    sigma^2)``, ``lambda_i`` the eigenvalues of ``A A^T``."""
    check_tensor(A, "A", ndim=2)
    s = check_number(signal_var, "signal_var", lo=0, lo_open=True)
    nv = check_number(noise_var, "noise_var", lo=0)
    lam = torch.linalg.eigvalsh(A @ A.T)
    return float(1 - (s * lam / (s * lam + nv)).sum() / A.shape[1])


def _check_pair(xhat, x):
    check_tensor(x, "x", ndim=2)
    check_tensor(xhat, "xhat", ndim=(2, 3))
    same_device(xhat, x, names=("xhat", "x"))
    if tuple(xhat.shape[-2:]) != tuple(x.shape):
        raise ValueError(
            f"xhat must have shape {tuple(x.shape)} or (iters, {x.shape[0]}, {x.shape[1]}), "
            f"got {tuple(xhat.shape)}"
        )
    if float((x.abs() ** 2).sum()) == 0:
        raise ValueError("x is all zero: the NMSE is undefined")


def nmse(xhat: torch.Tensor, x: torch.Tensor, *, per_sample: bool = False) -> torch.Tensor:
    """Linear NMSE as a ratio of sums, ``sum ||xhat - x||^2 / sum ||x||^2`` over the batch.

    Sparse recovery chapter, eq. ``eq-sparse-nmse``. Differentiable.

    Parameters
    ----------
    xhat : torch.Tensor
        ``(B, N)`` or a per-iteration stack ``(T, B, N)`` (as returned with ``history=True``).
    x : torch.Tensor
        ``(B, N)`` ground truth, not all zero.
    per_sample : bool
        Instead, the NMSE of every sample, ``||xhat_b - x_b||^2 / ||x_b||^2`` (then no row of
        ``x`` may be zero): a per-sample loss, e.g. to compare a learned estimator with its
        classical fallback sample by sample (chapter *Learned components behind a classical
        fallback*).

    Returns
    -------
    torch.Tensor
        0-d for ``(B, N)`` input, ``(T,)`` for a stack; with ``per_sample`` ``(B,)`` or
        ``(T, B)``.
    """
    _check_pair(xhat, x)
    if per_sample:
        energy = (x.abs() ** 2).sum(-1)
        if bool((energy == 0).any()):
            raise ValueError("x has an all-zero row: its per-sample NMSE is undefined")
        return ((xhat - x).abs() ** 2).sum(-1) / energy
    err = ((xhat - x).abs() ** 2).sum(dim=(-2, -1))
    return err / (x.abs() ** 2).sum()


def nmse_db(xhat: torch.Tensor, x: torch.Tensor, *, per_sample: bool = False) -> torch.Tensor:
    """:func:`~lib.sparse.nmse` in dB: ``10 log10(sum ||xhat - x||^2 / sum ||x||^2)`` (ratio of
    sums; with ``per_sample`` that of every sample).

    The book's convention in every chapter; use ``float(...)`` for a single value. A perfect
    estimate gives ``-inf``.

    Parameters
    ----------
    xhat, x, per_sample
        As in :func:`~lib.sparse.nmse`.

    Returns
    -------
    torch.Tensor
        0-d or ``(T,)``, in dB; with ``per_sample`` ``(B,)`` or ``(T, B)``.
    """
    return 10.0 * torch.log10(nmse(xhat, x, per_sample=per_sample))
