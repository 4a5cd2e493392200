"""Downlink SINR, (weighted) sum rate and the linear precoders MRT, ZF and RZF.

User k receives y_k = h_k^H v_k x_k + sum_{j != k} h_k^H v_j x_j + n_k with n_k ~ CN(0, sigma^2)
(Pellaco et al., eq. (1)); the SINR is eq. (2) and the weighted sum rate the objective of eq. (3).
Chapter: *Multi-user downlink beamforming* (``book/downlink_beamforming.ipynb``).

Every precoder has the signature ``precoder(H, power, noise_var) -> V`` with ``H`` complex
``(B, K, M)`` (row ``k`` is ``h_k^H``), ``power`` and ``noise_var`` scalars or ``(B,)`` and
``V`` complex ``(B, M, K)``; extra settings are keywords after ``noise_var``.
"""

from __future__ import annotations

import torch

from lib.core.checks import _real_dtype
from lib.precoding.common import _check_H, _check_V, _gains, _scalar, _scale_to_power, user_weights

__all__ = ["sinr", "sum_rate", "matched_filter_init", "mrt", "zf", "rzf"]


# --------------------------------------------------------------------------- #
# SINR and (weighted) sum rate
# --------------------------------------------------------------------------- #
def sinr(H: torch.Tensor, V: torch.Tensor, noise_var) -> torch.Tensor:
    """Downlink SINR of every user (Pellaco et al., eq. (2)).

    ``SINR_k = |h_k^H v_k|^2 / (sum_{j != k} |h_k^H v_j|^2 + sigma^2)``.

    Parameters
    ----------
    H : torch.Tensor
        Complex ``(B, K, M)``, row ``k`` is ``h_k^H``.
    V : torch.Tensor
        Complex ``(B, M, K)``, column ``k`` is ``v_k``.
    noise_var : float or torch.Tensor
        sigma^2 > 0, scalar or ``(B,)``.

    Returns
    -------
    torch.Tensor
        Real ``(B, K)``.
    """
    _check_H(H)
    _check_V(V, H)
    s2 = _scalar(noise_var, "noise_var", H)
    return _sinr(H, V, s2)


def _sinr(H: torch.Tensor, V: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """:func:`~lib.precoding.sinr` without checks; ``s2`` a tensor ``(B,)`` or a scalar."""
    G2, _ = _gains(H, V)
    sig = torch.diagonal(G2, dim1=-2, dim2=-1)
    interf = G2.sum(-1) - sig
    s2 = s2[:, None] if isinstance(s2, torch.Tensor) and s2.dim() == 1 else s2
    return sig / (interf.clamp_min(0.0) + s2)


def sum_rate(H: torch.Tensor, V: torch.Tensor, noise_var, weights=None) -> torch.Tensor:
    """Weighted sum rate ``sum_k alpha_k log2(1 + SINR_k)`` (Pellaco et al., eq. (3)).

    Parameters
    ----------
    H, V, noise_var
        As in :func:`~lib.precoding.sinr`.
    weights : torch.Tensor, optional
        Priorities alpha_k ``>= 0``, ``(K,)`` or ``(B, K)``; ones by default.

    Returns
    -------
    torch.Tensor
        Real ``(B,)`` in bits/s/Hz.
    """
    g = sinr(H, V, noise_var)
    a = user_weights(weights, H)
    return (a * torch.log2(1.0 + g)).sum(-1)


# --------------------------------------------------------------------------- #
# Linear precoders
# --------------------------------------------------------------------------- #
def _matched_filter(H: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """``sqrt(P) H^H / ||H||_F`` without checks (``P`` real ``(B,)``)."""
    return _scale_to_power(H.mH, P)


def _check_unused_noise(noise_var, H: torch.Tensor) -> None:
    if noise_var is not None:
        _scalar(noise_var, "noise_var", H)


def matched_filter_init(H: torch.Tensor, power) -> torch.Tensor:
    """Matched filter at full power, ``V = sqrt(P) H^H / ||H||_F`` (the WMMSE initialisation).

    Parameters
    ----------
    H : torch.Tensor
        Complex ``(B, K, M)``.
    power : float or torch.Tensor
        P > 0, scalar or ``(B,)``.

    Returns
    -------
    torch.Tensor
        Complex ``(B, M, K)`` with ``tr(V V^H) = P``.
    """
    _check_H(H)
    return _matched_filter(H, _scalar(power, "power", H))


def mrt(H: torch.Tensor, power, noise_var=None) -> torch.Tensor:
    """Maximum ratio transmission ``v_k ∝ h_k``, total power scaled to ``P``.

    A common scaling of all beams (not per-user normalisation); identical to
    :func:`~lib.precoding.matched_filter_init`.

    Parameters
    ----------
    H : torch.Tensor
        Complex ``(B, K, M)``.
    power : float or torch.Tensor
        P > 0, scalar or ``(B,)``.
    noise_var : float or torch.Tensor, optional
        Unused (MRT does not depend on the noise variance); validated when given, so that
        MRT fits the precoder interface ``precoder(H, power, noise_var)``.

    Returns
    -------
    torch.Tensor
        Complex ``(B, M, K)`` with ``tr(V V^H) = P``.
    """
    _check_H(H)
    P = _scalar(power, "power", H)
    _check_unused_noise(noise_var, H)
    return _matched_filter(H, P)


def zf(H: torch.Tensor, power, noise_var=None) -> torch.Tensor:
    """Zero forcing ``V ∝ H^H (H H^H)^{-1}`` (so ``H V`` is diagonal), total power ``P``.

    Computed from the QR factorisation ``H^H = Q R`` as ``V ∝ Q R^{-H}`` (accurate to the
    condition number of ``H``, not of ``H H^H``).

    Parameters
    ----------
    H : torch.Tensor
        Complex ``(B, K, M)`` of full row rank: ``K <= M`` and linearly independent rows
        (rank judged from the singular values, ``s_min > s_max * max(K, M) * eps``).
    power : float or torch.Tensor
        P > 0, scalar or ``(B,)``.
    noise_var : float or torch.Tensor, optional
        Unused (ZF does not depend on the noise variance); validated when given.

    Returns
    -------
    torch.Tensor
        Complex ``(B, M, K)`` with ``tr(V V^H) = P``.

    Raises
    ------
    ValueError
        If ``H`` does not have full row rank.
    """
    _check_H(H)
    B, K, M = H.shape
    if K > M:
        raise ValueError(
            f"zf needs H of full row rank (users <= antennas), got H of shape {tuple(H.shape)}"
        )
    P = _scalar(power, "power", H)
    _check_unused_noise(noise_var, H)
    with torch.no_grad():
        s = torch.linalg.svdvals(H.detach())  # (B, K), descending
        eps = torch.finfo(_real_dtype(H)).eps
        deficient = ~(s[:, -1] > s[:, 0] * (max(K, M) * eps))
    if bool(deficient.any()):
        bad = torch.nonzero(deficient).flatten()[:5].tolist()
        raise ValueError(
            "zf needs H of full row rank (linearly independent user channels); "
            f"H is rank-deficient in sample(s) {bad} (s_min <= s_max * max(K, M) * eps)"
        )
    Q, R = torch.linalg.qr(H.mH)  # (B, M, K), (B, K, K)
    # V = Q R^{-H}  <=>  R V^H = Q^H
    V = torch.linalg.solve_triangular(R, Q.mH, upper=True).mH
    return _scale_to_power(V, P)


def rzf(
    H: torch.Tensor, power, noise_var, *, reg=None, equal_power: bool = False
) -> torch.Tensor:
    """Regularised zero forcing (MMSE / Wiener-type) precoder, total power ``P``.

    ``V ∝ H^H (H H^H + beta I)^{-1}`` with ``beta = K sigma^2 / P`` by default (the
    regularisation that maximises the large-system SINR). By default the whole matrix is
    scaled to the budget, so each user's power follows the length of its column (long for a
    weak user or one correlated with others); with
    ``equal_power=True`` every column is normalised to ``P / K`` instead (each user gets the
    same transmit power: the optimal beamforming structure of the chapter *Generalizable
    precoding* with equal weights).

    Parameters
    ----------
    H : torch.Tensor
        Complex ``(B, K, M)``.
    power, noise_var : float or torch.Tensor
        P > 0 and sigma^2 > 0, scalars or ``(B,)``.
    reg : float or torch.Tensor, optional
        Overrides ``beta`` (scalar or ``(B,)``, ``>= 0``; ``reg = 0`` is ZF).
    equal_power : bool
        Normalise every column to ``P / K`` (a zero column stays zero).

    Returns
    -------
    torch.Tensor
        Complex ``(B, M, K)`` with ``tr(V V^H) = P`` (``<= P`` with a zero channel).
    """
    _check_H(H)
    if not isinstance(equal_power, bool):
        raise TypeError(f"equal_power must be a bool, got {type(equal_power).__name__}")
    B, K, M = H.shape
    P = _scalar(power, "power", H)
    s2 = _scalar(noise_var, "noise_var", H)
    beta = K * s2 / P if reg is None else _scalar(reg, "reg", H, allow_zero=True)
    eye = torch.eye(K, dtype=H.dtype, device=H.device)
    gram = H @ H.mH + beta.to(H.dtype)[:, None, None] * eye
    V = torch.linalg.solve(gram, H).mH
    if equal_power:
        n = torch.linalg.vector_norm(V, dim=-2)
        n = torch.where(n > 0, n, torch.ones_like(n))
        return V * (torch.sqrt(P / K)[:, None] / n).to(H.dtype)[:, None, :]
    return _scale_to_power(V, P)
