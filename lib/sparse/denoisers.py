"""Scalar denoisers of the iterative sparse-recovery algorithms: the soft threshold (the
proximal operator of the l1 norm) and the Bernoulli-Gaussian MMSE denoiser with its divergence.
Chapter: *Sparse recovery*.
"""

from __future__ import annotations

import numpy as np
import torch

from lib.core.checks import check_real, check_tensor
from lib.sparse.common import _check_pos_float, _check_prob

__all__ = ["soft_threshold", "bg_mmse_denoiser"]


# --------------------------------------------------------------------------- #
# Denoisers
# --------------------------------------------------------------------------- #
def _as_broadcast(t, r: torch.Tensor, name: str, *, allow_zero: bool) -> torch.Tensor:
    """A scalar, a ``(batch,)`` tensor or a tensor broadcastable to ``r``, checked >= 0."""
    if isinstance(t, bool):
        raise TypeError(f"{name} must be a number or a tensor, got bool")
    if isinstance(t, (int, float, np.integer, np.floating)):
        t = torch.tensor(float(t), dtype=r.real.dtype, device=r.device)
    elif not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a number or a torch.Tensor, got {type(t).__name__}")
    if t.is_complex():
        raise TypeError(f"{name} must be real, got {t.dtype}")
    if r.dim() >= 2 and t.dim() == 1 and t.shape[0] == r.shape[0]:
        t = t.reshape(-1, *([1] * (r.dim() - 1)))  # a (batch,) tensor is one value per sample
    try:
        torch.broadcast_shapes(t.shape, r.shape)
    except RuntimeError:
        raise ValueError(
            f"{name} must be a scalar, a (batch,) tensor or broadcastable to {tuple(r.shape)}, "
            f"got shape {tuple(t.shape)}"
        ) from None
    if bool((t < 0).any()) or (not allow_zero and bool((t == 0).any())):
        raise ValueError(
            f"{name} must be {'>= 0' if allow_zero else '> 0'}, got min {float(t.min()):.4g}"
        )
    return t


def soft_threshold(r: torch.Tensor, tau) -> torch.Tensor:
    """Soft threshold ``eta(r; tau) = sign(r) max(|r| - tau, 0)``, the proximal map of ``tau |.|``.

    ``tau >= 0`` is a scalar, a per-sample ``(batch,)`` tensor or a tensor broadcastable
    to ``r``. For complex ``r`` the magnitude is shrunk and the phase kept.
    Differentiable almost everywhere (autograd works for learned thresholds).
    """
    check_tensor(r, "r")
    tau = _as_broadcast(tau, r, "tau", allow_zero=True)
    mag = r.abs()
    if r.is_complex():
        scale = torch.clamp(mag - tau, min=0) / torch.clamp(mag, min=torch.finfo(mag.dtype).tiny)
        return r * scale
    return torch.sign(r) * torch.clamp(mag - tau, min=0)


def bg_mmse_denoiser(
    r: torch.Tensor, tau2, p: float, signal_var: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean of a Bernoulli-Gaussian ``x`` given ``r = x + N(0, tau2)`` and its derivative.

    Prior: ``x = 0`` with probability ``1 - p``, ``x ~ N(0, signal_var)`` with probability ``p``.
    With ``g = s / (s + tau2)`` and the posterior probability of a non-zero

    ``pi(r) = sigmoid( log(p/(1-p)) + 0.5 log(tau2/(s+tau2)) + r^2 g / (2 tau2) )``,

    the estimate is ``pi(r) g r`` and its derivative
    ``g pi(r) (1 + (1 - pi(r)) g r^2 / tau2)``; the derivative equals the posterior
    variance divided by ``tau2``. ``tau2 > 0`` may be a scalar, a per-sample ``(batch,)``
    tensor or broadcastable to ``r``; ``p`` may be a float or a tensor (for learning).
    """
    check_real(r, "r")
    tau2 = _as_broadcast(tau2, r, "tau2", allow_zero=False)
    if isinstance(p, torch.Tensor):
        if bool(((p <= 0) | (p > 1)).any()):
            raise ValueError("p must be in (0, 1]")
        p_t = p.to(r.dtype)
    else:
        p_t = torch.tensor(_check_prob(p), dtype=r.dtype, device=r.device)
    s = (
        _check_pos_float(signal_var, "signal_var")
        if not isinstance(signal_var, torch.Tensor)
        else signal_var
    )
    g = s / (s + tau2)
    # logit of the posterior support probability; p = 1 means always non-zero
    prior_logit = (
        torch.log(p_t) - torch.log1p(-p_t) if bool((p_t < 1).all()) else torch.full_like(p_t, 1e30)
    )
    llr = prior_logit + 0.5 * torch.log(tau2 / (s + tau2)) + 0.5 * r**2 * g / tau2
    pi = torch.sigmoid(llr)
    xhat = pi * g * r
    deriv = g * pi * (1 + (1 - pi) * g * r**2 / tau2)
    return xhat, deriv
