"""Multi-user MISO downlink: rates, linear precoders, WMMSE, DPC limit, power minimisation.

A base station with ``M`` antennas serves ``K`` single-antenna users with one stream each.
User ``k`` receives (Pellaco et al., eq. (1))

.. math::  y_k = \\mathbf h_k^{\\mathsf H}\\mathbf v_k x_k
           + \\sum_{j\\ne k} \\mathbf h_k^{\\mathsf H}\\mathbf v_j x_j + n_k,
           \\qquad n_k\\sim\\mathcal{CN}(0,\\sigma^2).

Shapes (see ``CONTRIBUTING.md``): ``H`` is ``(batch, users, antennas)`` with row ``k`` equal to
:math:`\\mathbf h_k^{\\mathsf H}`, so ``(H @ V)[:, k, j]`` is
:math:`\\mathbf h_k^{\\mathsf H}\\mathbf v_j`;
``V`` is ``(batch, antennas, users)``; ``power`` and ``noise_var`` are scalars or ``(batch,)``
tensors; user weights are ``(users,)`` or ``(batch, users)``. Every function works on a batch
of channels at once (no Python loop over samples), except the cvxpy references
:func:`min_power_socp` and :func:`dpc_sum_capacity_cvxpy`.

Dtype: computations run in the dtype of ``H``. With ``complex128`` (the default of
:func:`rayleigh_channel`) every precoder meets
:math:`\\mathrm{tr}(\\mathbf V\\mathbf V^{\\mathsf H}) \\le P` to 1e-9 relative (in practice
~1e-15); with ``complex64`` to single precision (~1e-6).

Contents

* :func:`sinr`, :func:`sum_rate` -- eq. (2) and the objective of eq. (3) of Pellaco et al.
* :func:`mrt`, :func:`zf`, :func:`rzf` -- linear precoders, scaled to full power.
* :func:`wmmse` and its blocks :func:`wmmse_receivers`, :func:`wmmse_weights`,
  :func:`wmmse_precoder`, :func:`bisect_mu`, :func:`matched_filter_init` -- Shi et al. (2011),
  Pellaco et al. eqs. (5)-(8).
* :func:`dpc_sum_capacity` -- sum capacity of the Gaussian MISO broadcast channel through
  BC-MAC duality, by sum-power iterative water-filling (Jindal et al. 2005), batched;
  :func:`dpc_sum_capacity_cvxpy` is the convex-program reference.
* :func:`min_power_socp`, :func:`min_power_duality` -- minimum total power subject to
  SINR targets, as an SOCP (cvxpy) and by uplink-downlink duality (Schubert & Boche 2004;
  Schynol et al., Sec. 3, eqs. (16)-(23)), batched in torch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from lib.channels import rayleigh
from lib.utils import check_complex, check_positive_int, check_tensor, per_sample

__all__ = [
    "rayleigh_channel",
    "sinr",
    "sum_rate",
    "user_weights",
    "mrt",
    "zf",
    "rzf",
    "matched_filter_init",
    "wmmse_receivers",
    "wmmse_weights",
    "bisect_mu",
    "wmmse_precoder",
    "wmmse",
    "dpc_sum_capacity",
    "dpc_sum_capacity_cvxpy",
    "MinPowerResult",
    "min_power_socp",
    "min_power_duality",
]

_LN2 = math.log(2.0)


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def _real_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.complex128 else torch.float32


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
    """User weights alpha_k as a real ``(batch, users)`` tensor (ones when ``None``)."""
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
    """SINR targets gamma_k (linear) as a real ``(batch, users)`` tensor, all > 0."""
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


def rayleigh_channel(
    batch: int,
    users: int,
    antennas: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.complex128,
) -> torch.Tensor:
    """I.i.d. Rayleigh channels, every entry CN(0, 1); shape ``(batch, users, antennas)``.

    The same draw as :func:`lib.channels.rayleigh` (this name is kept for the
    beamforming chapters, which import everything from this module).
    """
    return rayleigh(batch, users, antennas, generator=generator, dtype=dtype)


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


# --------------------------------------------------------------------------- #
# Sum capacity of the MISO broadcast channel (DPC) via BC-MAC duality
# --------------------------------------------------------------------------- #
def _waterfill(inv_gain: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Water-filling ``q_k = (nu - c_k)^+`` with ``sum_k q_k = P`` for levels ``c`` (batch, K)."""
    c, order = torch.sort(inv_gain, dim=-1)
    K = c.shape[-1]
    n = torch.arange(1, K + 1, dtype=c.dtype, device=c.device)
    finite_c = torch.where(torch.isfinite(c), c, torch.zeros_like(c))
    nu_n = (P[:, None] + torch.cumsum(finite_c, -1)) / n
    valid = (nu_n > c) & torch.isfinite(c)
    # the number of active users is the largest n with nu_n > c_n (the valid set is a prefix)
    n_act = valid.sum(-1).clamp_min(1)
    nu = nu_n.gather(-1, (n_act - 1)[:, None])
    q_sorted = (nu - c).clamp_min(0.0)
    q_sorted = torch.where(torch.isfinite(q_sorted), q_sorted, torch.zeros_like(q_sorted))
    return torch.zeros_like(q_sorted).scatter(-1, order, q_sorted)


def dpc_sum_capacity(
    H: torch.Tensor,
    power,
    noise_var,
    *,
    iters: int = 3000,
    tol: float = 1e-6,
    return_powers: bool = False,
):
    """Sum capacity of the MISO broadcast channel (dirty-paper coding), bits/s/Hz, ``(batch,)``.

    By BC-MAC duality (Vishwanath-Jindal-Goldsmith 2003) it equals the sum capacity of the dual
    uplink with a sum-power constraint,
    ``C = max_{q >= 0, sum q = P} log2 det(I + sigma^{-2} sum_k q_k h_k h_k^H)``,
    solved here for a whole batch by the sum-power iterative water-filling of Jindal et al.
    (2005, Algorithm 1 with the 1/K averaging that guarantees convergence). The objective is
    concave in ``q`` with gradient ``a_k = h_k^H S^{-1} h_k``
    (``S = sigma^2 I + sum_j q_j h_j h_j^H``),
    so ``P max_k a_k - sum_k a_k q_k`` bounds the gap to the optimum; iterations stop when that
    gap is below ``tol`` bits for every sample. The returned value is achieved by the final
    ``q`` (a lower bound within ``tol`` of the capacity). ``return_powers=True`` also returns
    the uplink powers ``q`` ``(batch, users)`` and the final gaps ``(batch,)`` in bits.
    """
    _check_H(H)
    B, K, M = H.shape
    P = _scalar(power, "power", H)
    s2 = _scalar(noise_var, "noise_var", H)
    iters = check_positive_int(iters, "iters")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    Hn = H / torch.sqrt(s2).to(H.dtype)[:, None, None]  # unit noise
    Hh = Hn.mH
    eye = torch.eye(M, dtype=H.dtype, device=H.device)
    q = (P / K)[:, None].expand(B, K).clone()

    def grad(q, Hn, Hh):
        S = eye + (Hh * q.to(H.dtype)[:, None, :]) @ Hn
        L = torch.linalg.cholesky(S)
        X = torch.cholesky_solve(Hh, L)  # S^{-1} h_k in columns
        a = (Hn * X.mT).sum(-1).real  # h_k^H S^{-1} h_k
        logdet = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1).real).sum(-1)
        return a, logdet

    idx = torch.arange(B, device=H.device)
    for _ in range(iters):
        a, _ = grad(q[idx], Hn[idx], Hh[idx])
        gap = (P[idx] * a.max(-1).values - (a * q[idx]).sum(-1)) / _LN2
        go = gap > tol
        idx, a = idx[go], a[go]
        if idx.numel() == 0:
            break
        qi = q[idx]
        g_eff = a / (1.0 - qi * a).clamp_min(torch.finfo(a.dtype).tiny)  # leave-one-out gain
        inv_g = torch.where(g_eff > 0, 1.0 / g_eff.clamp_min(torch.finfo(a.dtype).tiny), torch.inf)
        q_wf = _waterfill(inv_g, P[idx])
        q = q.index_put((idx,), qi + (q_wf - qi) / K)
    a, logdet = grad(q, Hn, Hh)
    gap = (P * a.max(-1).values - (a * q).sum(-1)) / _LN2
    cap = logdet / _LN2
    if return_powers:
        return cap, q, gap
    return cap


def dpc_sum_capacity_cvxpy(H: torch.Tensor, power, noise_var) -> torch.Tensor:
    """Reference: the MAC sum-capacity problem as a cvxpy log-det program, one sample at a time.

    The complex Hermitian ``X = I + sigma^{-2} sum_k q_k h_k h_k^H`` is replaced by its real
    embedding ``[[Re X, -Im X], [Im X, Re X]]``, whose log-det is ``2 log det X``. Slow
    (tens of milliseconds per channel); use it to check :func:`dpc_sum_capacity`.
    """
    import cvxpy as cp

    _check_H(H)
    B, K, M = H.shape
    P = _scalar(power, "power", H).cpu().numpy()
    s2 = _scalar(noise_var, "noise_var", H).cpu().numpy()
    Hn = H.detach().resolve_conj().cpu().numpy().astype(np.complex128)
    out = np.empty(B)
    for b in range(B):
        mats = []
        for k in range(K):
            h = Hn[b, k].conj()[:, None]
            R = (h @ h.conj().T) / s2[b]
            mats.append(np.block([[R.real, -R.imag], [R.imag, R.real]]))
        q = cp.Variable(K, nonneg=True)
        X = np.eye(2 * M) + sum(q[k] * mats[k] for k in range(K))
        prob = cp.Problem(cp.Maximize(0.5 * cp.log_det(X)), [cp.sum(q) <= P[b]])
        prob.solve(solver=cp.CLARABEL)
        if prob.status not in ("optimal", "optimal_inaccurate"):
            raise RuntimeError(f"cvxpy failed on sample {b}: {prob.status}")
        out[b] = prob.value / _LN2
    return torch.as_tensor(out, dtype=_real_dtype(H))


# --------------------------------------------------------------------------- #
# QoS-constrained power minimisation
# --------------------------------------------------------------------------- #
class MinPowerResult(NamedTuple):
    """Result of :func:`min_power_socp` / :func:`min_power_duality`.

    ``V`` ``(batch, n, users)`` beamformers; ``powers`` ``(batch, users)`` per-user downlink
    powers ``||v_k||^2``; ``feasible`` ``(batch,)`` bool. For an infeasible sample ``V`` is zero
    and ``powers`` is ``+inf`` (so that ``powers.sum(-1)`` ranks it last), never NaN.
    """

    V: torch.Tensor
    powers: torch.Tensor
    feasible: torch.Tensor

    @property
    def total_power(self) -> torch.Tensor:
        """Total transmit power per sample (``+inf`` when infeasible), shape ``(batch,)``."""
        return self.powers.sum(-1)


def min_power_socp(H: torch.Tensor, sinr_targets, noise_var) -> MinPowerResult:
    """Reference: ``min sum_k ||v_k||^2 s.t. SINR_k >= gamma_k`` as an SOCP (cvxpy, per sample).

    The phase of ``v_k`` is free, so ``h_k^H v_k`` can be taken real and the SINR constraint
    becomes the second-order cone
    ``sqrt(1 + 1/gamma_k) Re(h_k^H v_k) >= || [h_k^H V, sigma] ||``, ``Im(h_k^H v_k) = 0``
    (Bengtsson & Ottersten 2001; Wiesel, Eldar & Shamai 2006). Solved with Clarabel.
    """
    import cvxpy as cp

    _check_H(H)
    B, K, n = H.shape
    gam = _targets(sinr_targets, H).cpu().numpy()
    s2 = _scalar(noise_var, "noise_var", H).cpu().numpy()
    Hn = H.detach().resolve_conj().cpu().numpy().astype(np.complex128)
    V_out = np.zeros((B, n, K), dtype=np.complex128)
    feas = np.zeros(B, dtype=bool)
    for b in range(B):
        V = cp.Variable((n, K), complex=True)
        cons = []
        for k in range(K):
            hv = Hn[b, k] @ V  # (K,) h_k^H v_j
            cons.append(cp.imag(hv[k]) == 0)
            cons.append(
                cp.SOC(
                    math.sqrt(1.0 + 1.0 / gam[b, k]) * cp.real(hv[k]),
                    cp.hstack([hv, np.sqrt(s2[b]) * np.ones(1)]),
                )
            )
        prob = cp.Problem(cp.Minimize(cp.norm(cp.vec(V, order="F"), 2)), cons)
        prob.solve(solver=cp.CLARABEL)
        if prob.status in ("optimal", "optimal_inaccurate") and V.value is not None:
            feas[b] = True
            V_out[b] = V.value
    V_t = torch.as_tensor(V_out).to(dtype=H.dtype, device=H.device)
    f_t = torch.as_tensor(feas, device=H.device)
    powers = _abs2(V_t).sum(-2)
    powers = torch.where(f_t[:, None], powers, torch.inf)
    return MinPowerResult(V_t, powers, f_t)


def min_power_duality(
    H: torch.Tensor,
    sinr_targets,
    noise_var,
    *,
    iters: int = 500,
    tol: float = 1e-12,
    max_power: float = 1e12,
) -> MinPowerResult:
    """Minimum-power beamforming with SINR targets by uplink-downlink duality, batched in torch.

    Virtual uplink (Schynol et al., Sec. 3, eqs. (16)-(23); Schubert & Boche 2004): with uplink
    powers ``q`` and ``S = sigma^2 I + sum_j q_j h_j h_j^H`` the optimal receive (and transmit)
    directions are the MMSE filters ``u_k ∝ S^{-1} h_k``, and the minimal powers solve the fixed
    point ``q_k = gamma_k / (h_k^H (S - q_k h_k h_k^H)^{-1} h_k)``. Each iteration takes the
    standard power-iteration step (monotone from ``q = 0``) or, when the coupling system for
    the current directions is solvable (spectral radius < 1, positive solution), the exact
    uplink powers for those directions, which decrease monotonically to the optimum
    (the alternating step of Schubert & Boche). At the end the downlink powers ``p`` solve
    ``(I - D Psi) p = sigma^2 D 1`` with ``D = diag(gamma_k / |h_k^H u_k|^2)`` and
    ``Psi_kj = |h_k^H u_j|^2`` (``j != k``), and ``V = [sqrt(p_k) u_k]``.

    ``H`` may be any effective channel ``(batch, users, n)`` (also ``users > n``). A sample is
    reported infeasible (``feasible = False``, ``V = 0``, ``powers = inf``) when the uplink
    powers exceed ``max_power * sigma^2 * sum(gamma)``, do not converge within ``iters``, or the
    final coupling matrix has spectral radius ``rho(D Psi) >= 1``. Converged samples are frozen;
    the loop stops when every sample has converged or diverged.
    """
    _check_H(H)
    B, K, n = H.shape
    iters = check_positive_int(iters, "iters")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    gam = _targets(sinr_targets, H)
    s2 = _scalar(noise_var, "noise_var", H)
    rdt = _real_dtype(H)
    tiny = torch.finfo(rdt).tiny
    Hh = H.mH
    eye_n = torch.eye(n, dtype=H.dtype, device=H.device)
    eye_K = torch.eye(K, dtype=rdt, device=H.device)
    bound = max_power * s2 * gam.sum(-1)

    def directions(q):
        S = s2.to(H.dtype)[:, None, None] * eye_n + (Hh * q.to(H.dtype)[:, None, :]) @ H
        X = torch.linalg.solve(S, Hh)  # S^{-1} h_k, (B, n, K)
        a = (H * X.mT).sum(-1).real  # h_k^H S^{-1} h_k
        nrm = _abs2(X).sum(-2).sqrt()
        U = X / nrm.clamp_min(tiny).to(H.dtype)[:, None, :]
        return U, a

    def coupling(U):
        G2 = _abs2(H @ U)  # |h_k^H u_j|^2
        gkk = torch.diagonal(G2, dim1=-2, dim2=-1)
        D = gam / gkk.clamp_min(tiny)
        Psi = G2 * (1 - eye_K)
        return D, Psi

    def solve_powers(DPsi, rhs):
        Msys = eye_K - DPsi
        p = torch.linalg.solve(Msys, rhs)
        ok = torch.isfinite(p).all(-1) & (p > 0).all(-1)
        return torch.where(torch.isfinite(p), p, torch.zeros_like(p)), ok

    q = torch.zeros(B, K, dtype=rdt, device=H.device)
    done = torch.zeros(B, dtype=torch.bool, device=H.device)
    diverged = torch.zeros_like(done)
    for _ in range(iters):
        U, a = directions(q)
        # fixed-point (power iteration) step, Sherman-Morrison leave-one-out gain
        g_loo = a / (1.0 - q * a).clamp_min(tiny)
        q_fp = gam / g_loo.clamp_min(tiny)
        # exact uplink powers for the current directions, if the coupling system allows
        D, Psi = coupling(U)
        q_ls, ok = solve_powers(D[:, :, None] * Psi.mT, D * s2[:, None])
        q_new = torch.where(ok[:, None], q_ls, q_fp)
        q_new = torch.where(done[:, None] | diverged[:, None], q, q_new)
        change = (q_new - q).abs().max(-1).values
        conv = change <= tol * q_new.abs().max(-1).values.clamp_min(tiny)
        diverged = diverged | ~torch.isfinite(q_new).all(-1) | (q_new.sum(-1) > bound)
        q = torch.where(diverged[:, None], q, q_new)
        done = done | (conv & ~diverged)
        if bool((done | diverged).all()):
            break
    U, _ = directions(q)
    D, Psi = coupling(U)
    DPsi = D[:, :, None] * Psi
    rho = torch.linalg.eigvals(DPsi).abs().max(-1).values if K > 1 else torch.zeros_like(s2)
    p, ok = solve_powers(DPsi, D * s2[:, None])
    feasible = done & ~diverged & ok & (rho < 1.0)
    V = U * torch.sqrt(p.clamp_min(0.0)).to(H.dtype)[:, None, :]
    V = torch.where(feasible[:, None, None], V, torch.zeros_like(V))
    powers = torch.where(feasible[:, None], p, torch.full_like(p, torch.inf))
    return MinPowerResult(V, powers, feasible)
