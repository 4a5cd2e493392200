"""Scalar denoisers of the iterative sparse-recovery algorithms: the soft threshold (the
proximal operator of the l1 norm) and the Bernoulli-Gaussian MMSE denoiser with its divergence.
Sparse recovery chapter (``book/sparse_recovery.ipynb``).

The public functions validate their arguments; the iterative algorithms call the unchecked
cores ``_soft`` and ``_bg_mmse`` once per iteration after validating once at their
entry. The state evolution (:mod:`lib.sparse.evolution`) calls the same cores on float64
tensors, so the algorithm and its prediction share one formula.
"""

from __future__ import annotations

import numpy as np
import torch

from lib.core.checks import check_real, check_tensor, same_device
from lib.sparse.common import _check_pos_float, _check_prob

__all__ = ["soft_threshold", "bg_mmse_denoiser"]

#: Prior logit used for ``p = 1`` (always non-zero): large enough that the posterior
#: support probability is exactly one in double precision.
_LOGIT_ONE = 1e30


# --------------------------------------------------------------------------- #
# Unchecked cores (called inside iterations)
# --------------------------------------------------------------------------- #
def _soft(r: torch.Tensor, tau) -> torch.Tensor:
    """``sign(r) max(|r| - tau, 0)`` (complex: shrink the magnitude, keep the phase); no checks."""
    mag = r.abs()
    if r.is_complex():
        scale = torch.clamp(mag - tau, min=0) / torch.clamp(mag, min=torch.finfo(mag.dtype).tiny)
        return r * scale
    return torch.sign(r) * torch.clamp(mag - tau, min=0)


def _bg_prior_logit(p: float, like: torch.Tensor) -> torch.Tensor:
    """``log(p / (1 - p))`` as a 0-d tensor of ``like``'s dtype and device (``p = 1``: 1e30)."""
    p_t = torch.tensor(p, dtype=like.dtype, device=like.device)
    if p < 1:
        return torch.log(p_t) - torch.log1p(-p_t)
    return torch.full_like(p_t, _LOGIT_ONE)


def _bg_mmse(r: torch.Tensor, tau2, prior_logit, s) -> tuple[torch.Tensor, torch.Tensor]:
    """Bernoulli-Gaussian posterior mean and its derivative (formula of
    :func:`~lib.sparse.bg_mmse_denoiser`), unchecked. ``tau2`` is a tensor broadcastable to
    ``r``."""
    g = s / (s + tau2)
    llr = prior_logit + 0.5 * torch.log(tau2 / (s + tau2)) + 0.5 * r**2 * g / tau2
    pi = torch.sigmoid(llr)
    xhat = pi * g * r
    deriv = g * pi * (1 + (1 - pi) * g * r**2 / tau2)
    return xhat, deriv


# --------------------------------------------------------------------------- #
# Denoisers
# --------------------------------------------------------------------------- #
def _as_broadcast(t, r: torch.Tensor, name: str, *, allow_zero: bool) -> torch.Tensor:
    """A scalar, a ``(batch,)`` tensor or a tensor broadcastable to ``r``, checked >= 0."""
    if isinstance(t, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number or a tensor, got bool")
    if isinstance(t, (int, float, np.integer, np.floating)):
        v = _check_pos_float(t, name, allow_zero=allow_zero)
        return torch.tensor(v, dtype=r.real.dtype, device=r.device)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a number or a torch.Tensor, got {type(t).__name__}")
    if t.is_complex():
        raise TypeError(f"{name} must be real, got {t.dtype}")
    same_device(r, t, names=("r", name))
    if r.dim() >= 2 and t.dim() == 1 and t.shape[0] == r.shape[0]:
        t = t.reshape(-1, *([1] * (r.dim() - 1)))  # a (batch,) tensor is one value per sample
    try:
        torch.broadcast_shapes(t.shape, r.shape)
    except RuntimeError:
        raise ValueError(
            f"{name} must be a scalar, a (batch,) tensor or broadcastable to {tuple(r.shape)}, "
            f"got shape {tuple(t.shape)}"
        ) from None
    check_tensor(t, name, lo=0.0, lo_open=not allow_zero)
    return t


def soft_threshold(r: torch.Tensor, tau) -> torch.Tensor:
    """Soft threshold ``eta(r; tau) = sign(r) max(|r| - tau, 0)``, the proximal map of ``tau |.|``.

    The ``eta`` of the ISTA step (Sparse recovery chapter, ``book/sparse_recovery.ipynb``,
    eq. ``eq-sparse-ista``; Beck and Teboulle 2009, eq. (1.5)).
    Differentiable almost everywhere (autograd works for learned thresholds).

    Parameters
    ----------
    r : torch.Tensor
        Any shape, real or complex (complex: the magnitude is shrunk and the phase kept).
    tau : float or torch.Tensor
        ``>= 0``: a scalar, a per-sample ``(B,)`` tensor or a tensor broadcastable to ``r``.

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``r``.
    """
    check_tensor(r, "r")
    tau = _as_broadcast(tau, r, "tau", allow_zero=True)
    return _soft(r, tau)


def bg_mmse_denoiser(
    r: torch.Tensor, tau2, p: float, signal_var: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean of a Bernoulli-Gaussian ``x`` given ``r = x + N(0, tau2)`` and its derivative.

    Prior: ``x = 0`` with probability ``1 - p``, ``x ~ N(0, signal_var)`` with probability ``p``.
    With ``g = s / (s + tau2)`` and the posterior probability of a non-zero

    ``pi(r) = sigmoid( log(p/(1-p)) + 0.5 log(tau2/(s+tau2)) + r^2 g / (2 tau2) )``,

    the estimate is ``pi(r) g r`` and its derivative
    ``g pi(r) (1 + (1 - pi(r)) g r^2 / tau2)``; the derivative equals the posterior
    variance divided by ``tau2`` (Sparse recovery chapter, eq. ``eq-sparse-bg``, there with
    ``s = 1``).

    Parameters
    ----------
    r : torch.Tensor
        Real, any shape (typically ``(B, N)``).
    tau2 : float or torch.Tensor
        Effective noise variance ``> 0``: a scalar, a per-sample ``(B,)`` tensor or a tensor
        broadcastable to ``r``.
    p : float or torch.Tensor
        Sparsity in ``(0, 1]`` (a tensor for learning).
    signal_var : float or torch.Tensor
        ``s > 0``, the variance of the non-zero entries.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``xhat`` and ``d xhat / d r``, both shaped like ``r``.
    """
    check_real(r, "r")
    tau2 = _as_broadcast(tau2, r, "tau2", allow_zero=False)
    if isinstance(p, torch.Tensor):
        if bool(((p <= 0) | (p > 1)).any()):
            raise ValueError("p must be in (0, 1]")
        p_t = p.to(r.dtype)
        # logit of the posterior support probability; p = 1 means always non-zero
        prior_logit = (
            torch.log(p_t) - torch.log1p(-p_t)
            if bool((p_t < 1).all())
            else torch.full_like(p_t, _LOGIT_ONE)
        )
    else:
        prior_logit = _bg_prior_logit(_check_prob(p), r)
    s = (
        _check_pos_float(signal_var, "signal_var")
        if not isinstance(signal_var, torch.Tensor)
        else signal_var
    )
    return _bg_mmse(r, tau2, prior_logit, s)


def _bg_mmse_numpy(r: np.ndarray, tau2: float, p: float, s: float) -> np.ndarray:
    """``_bg_mmse``'s estimate on a NumPy grid (float64), for the state evolution."""
    rt = torch.from_numpy(np.ascontiguousarray(r, dtype=np.float64))
    logit = _bg_prior_logit(p, rt)
    tau2_t = torch.tensor(float(tau2), dtype=torch.float64)
    return _bg_mmse(rt, tau2_t, logit, s)[0].numpy()


def _soft_numpy(r: np.ndarray, tau: float) -> np.ndarray:
    """``_soft`` on a NumPy grid (float64), for the state evolution."""
    rt = torch.from_numpy(np.ascontiguousarray(r, dtype=np.float64))
    return _soft(rt, torch.tensor(float(tau), dtype=torch.float64)).numpy()
