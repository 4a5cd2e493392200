"""Shared helpers of the precoding modules: entry checks of H and V, per-sample scalars,
user weights, SINR-target parsing, |x|^2 and power scaling.

The one definition of ``_check_H``, ``_check_V`` and ``_abs2`` for the precoding and learned
precoding modules (import them from here); the real dtype of a complex tensor is
:func:`lib.core.checks._real_dtype`. Shapes: ``H`` is ``(B, K, M)`` with row ``k`` equal to
h_k^H; ``V`` is ``(B, M, K)``. Chapter: *Multi-user downlink beamforming*.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lib.core.checks import _real_dtype, check_complex, check_tensor, per_sample

__all__ = ["user_weights"]


_LN2 = math.log(2.0)


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def _check_H(H, name: str = "H") -> torch.Tensor:
    check_complex(H, name, shape=("batch", "users", "antennas"))
    if H.shape[0] == 0 or H.shape[1] == 0 or H.shape[2] == 0:
        raise ValueError(
            f"{name} must have non-empty shape (batch, users, antennas), got {tuple(H.shape)}"
        )
    return H


def _check_V(V, H: torch.Tensor, name: str = "V") -> torch.Tensor:
    B, K, M = H.shape
    check_complex(V, name, shape=(B, M, K))
    if V.dtype != H.dtype:
        raise TypeError(f"{name} must have the dtype of H ({H.dtype}), got {V.dtype}")
    return V


def _scalar(value, name: str, H: torch.Tensor, *, allow_zero: bool = False) -> torch.Tensor:
    """A scalar or ``(batch,)`` positive quantity as a real ``(batch,)`` tensor on H's device."""
    return per_sample(
        value, name, H.shape[0], dtype=_real_dtype(H), device=H.device, allow_zero=allow_zero
    )


def user_weights(weights, H: torch.Tensor, name: str = "weights") -> torch.Tensor:
    """User weights (priorities) alpha_k of the weighted sum rate (Pellaco et al., eq. (3)).

    Parameters
    ----------
    weights : torch.Tensor or None
        Real ``(K,)`` or ``(B, K)``, every entry ``>= 0``; ``None`` means all ones.
    H : torch.Tensor
        Complex ``(B, K, M)``; gives ``B``, ``K``, the real dtype and the device.
    name : str
        Argument name in error messages.

    Returns
    -------
    torch.Tensor
        Real ``(B, K)`` on the device of ``H`` with its real dtype.
    """
    B, K, _ = H.shape
    rdt = _real_dtype(H)
    if weights is None:
        return torch.ones(B, K, dtype=rdt, device=H.device)
    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"{name} must be None or a real torch.Tensor, got {type(weights).__name__}")
    check_tensor(weights, name, complex_=False)
    if weights.shape == (K,):
        weights = weights.expand(B, K)
    elif weights.shape != (B, K):
        raise ValueError(f"{name} must have shape ({K},) or ({B}, {K}), got {tuple(weights.shape)}")
    if bool((weights < 0).any()):
        raise ValueError(f"{name} must be >= 0")
    return weights.to(dtype=rdt, device=H.device)


def _targets(sinr_targets, H: torch.Tensor) -> torch.Tensor:
    """SINR targets gamma_k (linear) as a real ``(batch, users)`` tensor, all > 0.

    Kept for :mod:`lib.precoding.power_min`; new code uses :func:`lib.core.checks.per_user`.
    """
    B, K, _ = H.shape
    rdt = _real_dtype(H)
    if isinstance(sinr_targets, bool):
        raise TypeError("sinr_targets must be a number or a real tensor, got bool")
    if isinstance(sinr_targets, (int, float, np.integer, np.floating)):
        g = torch.full((B, K), float(sinr_targets), dtype=rdt, device=H.device)
    elif isinstance(sinr_targets, torch.Tensor):
        check_tensor(sinr_targets, "sinr_targets", complex_=False)
        if sinr_targets.dim() == 0:
            g = sinr_targets.expand(B, K)
        elif sinr_targets.shape == (K,):
            g = sinr_targets.expand(B, K)
        elif sinr_targets.shape == (B, K):
            g = sinr_targets
        else:
            raise ValueError(
                f"sinr_targets must be a scalar or have shape ({K},) or ({B}, {K}), "
                f"got {tuple(sinr_targets.shape)}"
            )
        g = g.to(dtype=rdt, device=H.device)
    else:
        raise TypeError(
            f"sinr_targets must be a number or a torch.Tensor, got {type(sinr_targets).__name__}"
        )
    if bool((g <= 0).any()):
        raise ValueError("sinr_targets must be > 0 (linear scale, not dB)")
    return g


def _abs2(x: torch.Tensor) -> torch.Tensor:
    """|x|^2 elementwise (much faster than ``x.abs() ** 2`` for complex tensors)."""
    return x.real.square() + x.imag.square() if x.is_complex() else x.square()


def _frob2(V: torch.Tensor) -> torch.Tensor:
    """Total transmit power tr(V V^H) per sample, shape (batch,)."""
    return _abs2(V).sum(dim=(-2, -1))


def _scale_to_power(V: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Scale each sample of V to tr(V V^H) = P (an all-zero V stays zero)."""
    pw = _frob2(V)
    scale = torch.where(pw > 0, torch.sqrt(P / torch.where(pw > 0, pw, torch.ones_like(pw))), 0.0)
    return V * scale.to(V.dtype)[:, None, None]


def _gains(H: torch.Tensor, V: torch.Tensor):
    """|h_k^H v_j|^2 as (batch, users, users) and h_k^H v_k as (batch, users)."""
    G = H @ V
    return _abs2(G), torch.diagonal(G, dim1=-2, dim2=-1)
