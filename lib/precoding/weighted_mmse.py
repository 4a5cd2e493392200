"""WMMSE for weighted sum-rate maximisation (Shi et al. 2011; Pellaco et al. eqs. (5)-(8)).

The blocks :func:`wmmse_receivers`, :func:`wmmse_weights`, :func:`wmmse_precoder` (with the
multiplier found by :func:`bisect_mu`) and the full iteration :func:`wmmse`, batched in torch.
Chapter: *Multi-user downlink beamforming*; the unfolded WMMSE reuses the blocks.
"""

from __future__ import annotations

import torch

from lib.core.checks import _real_dtype, check_complex, check_positive_int, check_tensor, per_sample
from lib.precoding.common import (
    _abs2,
    _check_H,
    _check_V,
    _frob2,
    _gains,
    _scalar,
    _scale_to_power,
    user_weights,
)
from lib.precoding.linear import matched_filter_init

__all__ = ["wmmse_receivers", "wmmse_weights", "bisect_mu", "wmmse_precoder", "wmmse"]


# --------------------------------------------------------------------------- #
# WMMSE (Shi et al. 2011; Pellaco et al. eqs. (5)-(8))
# --------------------------------------------------------------------------- #
def wmmse_receivers(H: torch.Tensor, V: torch.Tensor, noise_var) -> torch.Tensor:
    """MMSE receive gains ``u_k = h_k^H v_k / (sum_j |h_k^H v_j|^2 + sigma^2)``, ``(batch, users)``.

    Pellaco et al., eq. (5b); the estimate is ``x_hat_k = conj(u_k) y_k``.
    """
    _check_H(H)
    _check_V(V, H)
    s2 = _scalar(noise_var, "noise_var", H)
    G2, g = _gains(H, V)
    return g / (G2.sum(-1) + s2[:, None])


def wmmse_weights(H: torch.Tensor, V: torch.Tensor, u: torch.Tensor, noise_var) -> torch.Tensor:
    """MSE weights ``w_k = 1 / e_k`` (Pellaco et al., eq. (5a)), real ``(batch, users)``.

    ``e_k = |1 - conj(u_k) h_k^H v_k|^2 + |u_k|^2 (sum_{j != k} |h_k^H v_j|^2 + sigma^2)``
    is the MSE of ``x_hat_k = conj(u_k) y_k``; written as a sum of non-negative terms so
    that it never cancels. With the MMSE ``u`` of :func:`wmmse_receivers`,
    ``w_k = 1 + SINR_k``.
    """
    _check_H(H)
    _check_V(V, H)
    B, K, _ = H.shape
    check_complex(u, "u", shape=(B, K))
    s2 = _scalar(noise_var, "noise_var", H)
    G2, g = _gains(H, V)
    interf = (G2.sum(-1) - G2.diagonal(dim1=-2, dim2=-1)).clamp_min(0.0) + s2[:, None]
    e = _abs2(1.0 - u.conj() * g) + _abs2(u) * interf
    return 1.0 / e


def bisect_mu(lam: torch.Tensor, phi: torch.Tensor, power, *, iters: int = 50) -> torch.Tensor:
    """Lagrange multiplier mu >= 0 of the WMMSE precoder step by bisection (Pellaco, eq. (8)).

    Finds the root of ``p(mu) = sum_j phi_j / (lam_j + mu)^2 = P`` on
    ``[0, sqrt(sum_j phi_j / P)]`` (at the upper end ``p <= P``), or returns ``mu = 0`` when
    ``p(0) <= P`` already. ``lam`` are the eigenvalues of ``A`` (eq. (6)) and ``phi`` the
    diagonal of ``Phi = U^H B U``, both real ``(batch, antennas)``; entries with ``lam_j = 0``
    must have ``phi_j = 0`` (the caller projects them out). Returns the upper end of the
    final bracket (its width is ``2**-iters`` times the initial one), shape ``(batch,)``, so
    that the power never exceeds ``P``. Runs without autograd (mu is a constant for backprop).
    """
    check_tensor(lam, "lam", ndim=2, complex_=False)
    check_tensor(phi, "phi", shape=tuple(lam.shape), complex_=False)
    check_positive_int(iters, "iters")
    P = per_sample(power, "power", lam.shape[0], dtype=lam.dtype, device=lam.device)
    with torch.no_grad():
        lam, phi, P = lam.detach(), phi.detach(), P.detach()
        pos = lam > 0
        p0 = torch.where(pos, phi / torch.where(pos, lam, torch.ones_like(lam)).square(), 0.0).sum(
            -1
        )
        active = p0 > P
        lo = torch.zeros_like(P)
        hi = torch.sqrt(phi.sum(-1) / P)
        hi = torch.where(active, hi, torch.zeros_like(hi))  # inactive samples: bracket [0, 0]
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            # for active samples mid > 0, so the denominators are positive
            too_much = (phi / (lam + mid[:, None]).square()).sum(-1) > P
            lo = torch.where(too_much, mid, lo)
            hi = torch.where(too_much, hi, mid)
        return hi


def wmmse_precoder(
    H: torch.Tensor,
    u: torch.Tensor,
    w: torch.Tensor,
    power,
    weights=None,
    *,
    bisection_iters: int = 50,
) -> torch.Tensor:
    """Closed-form WMMSE beamformer update (Pellaco et al., eqs. (5c)-(8)), ``(batch, M, K)``.

    ``v_k = alpha_k w_k u_k (A + mu I)^{-1} h_k`` with ``A = sum_k alpha_k w_k |u_k|^2 h_k h_k^H``.
    With ``A = U diag(lam) U^H`` the transmit power is ``sum_j Phi_jj / (lam_j + mu)^2`` where
    ``Phi = U^H (sum_k alpha_k^2 w_k^2 |u_k|^2 h_k h_k^H) U``; mu = 0 if that meets the budget
    (with the pseudo-inverse when A is singular), else mu solves eq. (8) by bisection
    (:func:`bisect_mu`). When the constraint is active, V is finally rescaled to
    ``tr(V V^H) = P`` exactly (a relative change of the order of the bisection tolerance).
    """
    _check_H(H)
    B, K, M = H.shape
    check_complex(u, "u", shape=(B, K))
    check_tensor(w, "w", shape=(B, K), complex_=False)
    P = _scalar(power, "power", H)
    a = user_weights(weights, H)
    rdt = _real_dtype(H)
    coef_A = (a * w * _abs2(u)).to(rdt)  # alpha_k w_k |u_k|^2
    coef_R = (a * w).to(H.dtype) * u  # alpha_k w_k u_k
    Hh = H.mH  # columns h_k
    A = (Hh * coef_A.to(H.dtype)[:, None, :]) @ H  # sum_k c_k h_k h_k^H
    R = Hh * coef_R[:, None, :]  # columns alpha_k w_k u_k h_k
    lam, U = torch.linalg.eigh(A)
    lam = lam.clamp_min(0.0)
    Rt = U.mH @ R  # (B, M, K)
    # project out the (numerical) null space of A: R lies in range(A) in exact arithmetic
    tol = lam[:, -1:].clamp_min(torch.finfo(rdt).tiny) * (M * torch.finfo(rdt).eps * 10)
    keep = lam > tol
    Rt = Rt * keep.to(H.dtype)[:, :, None]
    phi = _abs2(Rt).sum(-1)
    mu = bisect_mu(lam, phi, P, iters=bisection_iters)
    den = lam + mu[:, None]
    inv = torch.where(keep, 1.0 / torch.where(keep, den, torch.ones_like(den)), 0.0)
    V = U @ (inv.to(H.dtype)[:, :, None] * Rt)
    pw = _frob2(V)
    rescale = (mu > 0) | (pw > P)
    V_full = _scale_to_power(V, P)
    return torch.where(rescale[:, None, None], V_full, V)


def wmmse(
    H: torch.Tensor,
    power,
    noise_var,
    iters: int,
    weights=None,
    *,
    V0: torch.Tensor | None = None,
    history: bool = False,
    tol: float | None = None,
):
    """WMMSE algorithm for the weighted sum rate under a total power constraint (Shi et al. 2011).

    Each iteration computes ``u`` (:func:`wmmse_receivers`), ``w`` (:func:`wmmse_weights`) and
    ``V`` (:func:`wmmse_precoder`), starting from ``V0`` (default: :func:`matched_filter_init`
    at full power). The weighted sum rate is non-decreasing over iterations.

    ``iters`` is the number of iterations; with ``tol`` (bits/s/Hz) it is the maximum, and a
    sample stops (keeps its current V) as soon as one iteration improved its weighted sum rate
    by less than ``tol``; only the samples still running are computed, so a batch costs what
    its slow samples cost.

    Returns ``V`` of shape ``(batch, antennas, users)``; with ``history=True`` returns
    ``(V, Vs)`` where ``Vs`` has shape ``(iters + 1, batch, antennas, users)`` and ``Vs[0]``
    is the initial point (memory grows with ``iters``; stopped samples repeat their V).
    """
    _check_H(H)
    iters = check_positive_int(iters, "iters", minimum=0)
    if tol is not None and not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be None or a positive number, got {tol!r}")
    P = _scalar(power, "power", H)
    s2 = _scalar(noise_var, "noise_var", H)
    a = user_weights(weights, H)
    if V0 is None:
        V = matched_filter_init(H, P)
    else:
        V = _check_V(V0, H, "V0")
        if bool((_frob2(V) > P * (1 + 1e-9)).any()):
            raise ValueError("V0 must satisfy the power constraint tr(V0 V0^H) <= power")
    Vs = [V]
    if tol is None:
        for _ in range(iters):
            u = wmmse_receivers(H, V, s2)
            w = wmmse_weights(H, V, u, s2)
            V = wmmse_precoder(H, u, w, P, a)
            if history:
                Vs.append(V)
    else:
        idx = torch.arange(H.shape[0], device=H.device)
        prev = torch.full((H.shape[0],), -torch.inf, dtype=P.dtype, device=H.device)
        for _ in range(iters):
            if idx.numel() == 0:  # every sample has stopped
                if history:
                    Vs.append(V)
                continue
            Hi, Vi, s2i, ai = H[idx], V[idx], s2[idx], a[idx]
            u = wmmse_receivers(Hi, Vi, s2i)
            w = wmmse_weights(Hi, Vi, u, s2i)
            # with the MMSE u, w_k = 1 + SINR_k: the current weighted sum rate comes for free
            rate = (ai * torch.log2(w)).sum(-1)
            go = rate - prev[idx] >= tol
            prev = prev.index_put((idx,), rate)
            idx, u, w, Hi, ai = idx[go], u[go], w[go], Hi[go], ai[go]
            if idx.numel() == 0:
                if history:
                    Vs.append(V)
                continue
            V = V.index_put((idx,), wmmse_precoder(Hi, u, w, P[idx], ai))
            if history:
                Vs.append(V)
    if history:
        return V, torch.stack(Vs)
    return V
