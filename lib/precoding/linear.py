"""Downlink SINR, (weighted) sum rate and the linear precoders MRT, ZF and RZF.

User k receives y_k = h_k^H v_k x_k + sum_{j != k} h_k^H v_j x_j + n_k with n_k ~ CN(0, sigma^2)
(Pellaco et al., eq. (1)); the SINR is eq. (2) and the weighted sum rate the objective of eq. (3).
Chapter: *Multi-user downlink beamforming*.
"""

from __future__ import annotations

import torch

from lib.precoding.common import _check_H, _check_V, _gains, _scalar, _scale_to_power, user_weights

__all__ = ["sinr", "sum_rate", "matched_filter_init", "mrt", "zf", "rzf"]


# --------------------------------------------------------------------------- #
# SINR and (weighted) sum rate
# --------------------------------------------------------------------------- #
def sinr(H: torch.Tensor, V: torch.Tensor, noise_var) -> torch.Tensor:
    """Downlink SINR of every user (Pellaco et al., eq. (2)); shape ``(batch, users)``.

    ``SINR_k = |h_k^H v_k|^2 / (sum_{j != k} |h_k^H v_j|^2 + sigma^2)``.
    """
    _check_H(H)
    _check_V(V, H)
    s2 = _scalar(noise_var, "noise_var", H)
    G2, _ = _gains(H, V)
    sig = torch.diagonal(G2, dim1=-2, dim2=-1)
    interf = G2.sum(-1) - sig
    return sig / (interf.clamp_min(0.0) + s2[:, None])


def sum_rate(H: torch.Tensor, V: torch.Tensor, noise_var, weights=None) -> torch.Tensor:
    """Weighted sum rate ``sum_k alpha_k log2(1 + SINR_k)`` in bits/s/Hz, shape ``(batch,)``.

    ``weights`` (priorities alpha_k): ``None`` (all ones), ``(users,)`` or ``(batch, users)``.
    """
    g = sinr(H, V, noise_var)
    a = user_weights(weights, H)
    return (a * torch.log2(1.0 + g)).sum(-1)


# --------------------------------------------------------------------------- #
# Linear precoders
# --------------------------------------------------------------------------- #
def matched_filter_init(H: torch.Tensor, power) -> torch.Tensor:
    """Matched filter at full power, ``V = sqrt(P) H^H / ||H||_F`` (the WMMSE initialisation)."""
    _check_H(H)
    P = _scalar(power, "power", H)
    return _scale_to_power(H.mH, P)


def mrt(H: torch.Tensor, power) -> torch.Tensor:
    """Maximum ratio transmission ``v_k ∝ h_k``, total power scaled to ``P``.

    A common scaling of all beams (not per-user normalisation); identical to
    :func:`matched_filter_init`.
    """
    return matched_filter_init(H, power)


def zf(H: torch.Tensor, power) -> torch.Tensor:
    """Zero forcing ``V ∝ H^H (H H^H)^{-1}`` (so ``H V`` is diagonal), total power ``P``.

    Needs ``users <= antennas`` and ``H`` of full row rank.
    """
    _check_H(H)
    B, K, M = H.shape
    if K > M:
        raise ValueError(f"zf needs users <= antennas, got H of shape {tuple(H.shape)}")
    P = _scalar(power, "power", H)
    gram = H @ H.mH
    # V = H^H gram^{-1}  <=>  V^H = gram^{-1} H  (gram is Hermitian)
    V = torch.linalg.solve(gram, H).mH
    return _scale_to_power(V, P)


def rzf(H: torch.Tensor, power, noise_var, reg=None) -> torch.Tensor:
    """Regularised zero forcing (MMSE / Wiener-type) precoder, total power ``P``.

    ``V ∝ H^H (H H^H + beta I)^{-1}`` with ``beta = K sigma^2 / P`` by default (the
    regularisation that maximises the large-system SINR); ``reg`` overrides ``beta``
    (a scalar or ``(batch,)``, ``>= 0``; ``reg = 0`` is ZF).
    """
    _check_H(H)
    B, K, M = H.shape
    P = _scalar(power, "power", H)
    s2 = _scalar(noise_var, "noise_var", H)
    beta = K * s2 / P if reg is None else _scalar(reg, "reg", H, allow_zero=True)
    eye = torch.eye(K, dtype=H.dtype, device=H.device)
    gram = H @ H.mH + beta.to(H.dtype)[:, None, None] * eye
    V = torch.linalg.solve(gram, H).mH
    return _scale_to_power(V, P)
