"""Shared helpers of the precoding modules: entry checks of H and V, per-sample scalars,
user weights, ``|x|^2`` and power scaling (SINR targets are parsed by
:func:`~lib.core.per_user`).

The one definition of ``_check_H``, ``_check_V`` and ``_abs2`` for the precoding and learned
precoding modules (import them from here); the real dtype of a complex tensor is
``lib.core.checks._real_dtype``. Shapes: ``H`` is ``(B, K, M)`` with row ``k`` equal to
h_k^H; ``V`` is ``(B, M, K)``. Chapter: *Multi-user downlink beamforming*.
"""

from __future__ import annotations

import math

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


def _abs2(x: torch.Tensor) -> torch.Tensor:
    """``|x|^2`` elementwise (much faster than ``x.abs() ** 2`` for complex tensors)."""
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
