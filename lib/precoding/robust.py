"""Outage of beamformers designed on imperfect CSI, and classical ways to control it.

A design computed from estimated channels ``H_hat`` is evaluated on the true channels ``H``;
user ``k`` is *in outage* when its true SINR is below its target (Schynol and Pesavento, eq. (10)).

* :func:`~lib.precoding.empirical_outage` -- outage indicators and rate of a design on true
  channels;
  infeasible designs (or designs above ``max_power``) put all their users in outage.
* :func:`~lib.precoding.bisect_margin` -- bisection of a scalar knob (an SINR margin or a loading
  factor) until
  the outage on validation data meets the nominal level.
* :func:`~lib.precoding.loaded_min_power` -- diagonal-loading robust digital design: the error
  energy
  ``|e_k^H u|^2 <= eps_k`` along any unit-norm beam is charged as interference from every
  stream, i.e. per-user noise ``sigma^2 + eps_k max(1, 1/gamma_k) P``, solved by a monotone
  fixed point on the total power ``P`` around :func:`lib.precoding.digital_min_power`.
* :func:`~lib.precoding.robust_sdp_design` -- the conic (S-lemma) worst-case design over the
  ellipsoid that
  holds the Gaussian MMSE error with probability ``1 - rho``, in cvxpy, per instance.
* :func:`~lib.precoding.single_user_outage` -- closed-form outage of one user with a Gaussian error,
  used to validate the Monte-Carlo estimate.

Shapes: ``H``, ``H_hat`` ``(B, K, M)``; ``F_RF`` ``(B, M, N_RF)``; ``sinr_targets`` a scalar,
``(K,)`` or ``(B, K)`` (parsed by :func:`~lib.core.per_user`); ``loading`` a scalar,
``(B,)`` or ``(B, K)``. Results take the dtype and device of ``H_hat``.
Chapter: *Hybrid beamforming under imperfect CSI and outage constraints*
(``book/hybrid_imperfect_csi_outage.ipynb``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from lib.core.checks import _real_dtype, check_complex, check_positive_int, per_user
from lib.precoding.common import _check_H, _scalar
from lib.precoding.hybrid import (
    HybridResult,
    _check_F,
    _digital,
    _solver_settings,
    hybrid_sinr,
)
from lib.precoding.power_min import sinr_rtol

__all__ = [
    "OutageResult",
    "empirical_outage",
    "bisect_margin",
    "loaded_min_power",
    "robust_sdp_design",
    "single_user_outage",
]


class OutageResult(NamedTuple):
    """Outage of a design on true channels (:func:`~lib.precoding.empirical_outage`).

    Attributes
    ----------
    rate : float
        Fraction of (instance, user) pairs in outage.
    in_outage : torch.Tensor
        ``(B, K)`` bool.
    sinr : torch.Tensor
        ``(B, K)`` true SINRs (0 for infeasible designs).
    power : torch.Tensor
        ``(B,)`` allocated (weighted) power, ``max_power`` (or ``inf``) for infeasible designs.
    """

    rate: float
    in_outage: torch.Tensor
    sinr: torch.Tensor
    power: torch.Tensor


def _check_cap(max_power, name="max_power"):
    if isinstance(max_power, bool) or not isinstance(max_power, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(max_power).__name__}")
    if not (math.isfinite(max_power) and max_power > 0):
        raise ValueError(f"{name} must be finite and > 0, got {max_power}")
    return float(max_power)


def _check_design(design, H):
    if not isinstance(design, HybridResult):
        raise TypeError(f"design must be a HybridResult, got {type(design).__name__}")
    B, K, _ = H.shape
    if design.powers.shape != (B, K) or design.feasible.shape != (B,):
        raise ValueError(
            f"design must hold powers ({B}, {K}) and feasible ({B},) for H_true of shape "
            f"{tuple(H.shape)}, got {tuple(design.powers.shape)} and {tuple(design.feasible.shape)}"
        )


def empirical_outage(
    H_true, design: HybridResult, sinr_targets, noise_var, *, max_power: float | None = None
) -> OutageResult:
    """Evaluate a design on the true channels (Schynol and Pesavento, eq. (10)).

    A design that is infeasible, or needs more than ``max_power``, transmits nothing useful:
    all of its users count as in outage and its power counts as ``max_power`` (``inf`` without
    ``max_power``). User ``k`` is in outage when its true SINR is below
    ``gamma_k (1 - sqrt(eps))`` (:func:`~lib.precoding.sinr_rtol`: the design's own
    feasibility certificate tolerance, which absorbs rounding at the target).

    Parameters
    ----------
    H_true : torch.Tensor
        ``(B, K, M)`` complex true channels.
    design : HybridResult
        A design computed for ``B`` instances of ``K`` users (e.g. on estimates).
    sinr_targets : float or torch.Tensor
        Nominal ``gamma_k``: scalar, ``(K,)`` or ``(B, K)``, finite, ``> 0``.
    noise_var : float or torch.Tensor
        ``sigma^2``, scalar or ``(B,)``, ``> 0``.
    max_power : float, optional
        Power cap ``P_max`` (finite, ``> 0``).

    Returns
    -------
    OutageResult
    """
    _check_H(H_true, "H_true")
    _check_design(design, H_true)
    B, K, _ = H_true.shape
    rdt = _real_dtype(H_true)
    gam = per_user(sinr_targets, "sinr_targets", B, K, dtype=rdt, device=H_true.device)
    if max_power is not None:
        max_power = _check_cap(max_power)
    ok = design.feasible.to(H_true.device)
    wp = design.weighted_power.to(dtype=rdt, device=H_true.device)
    if max_power is not None:
        ok = ok & (wp <= max_power)
    powers = design.powers.to(dtype=rdt, device=H_true.device)
    p = torch.where(ok[:, None], powers, torch.zeros_like(powers))
    s = hybrid_sinr(H_true, design.F_RF, design.V_bb, p, noise_var)
    s = torch.where(ok[:, None], s, torch.zeros_like(s))
    out = s < gam * (1 - sinr_rtol(rdt))
    fill = torch.inf if max_power is None else max_power
    pw = torch.where(ok, wp, torch.full_like(wp, fill))
    return OutageResult(float(out.double().mean()), out, s, pw)


def bisect_margin(
    outage_of: Callable[[float], float],
    *,
    nominal: float = 0.1,
    lo: float = 0.0,
    hi: float = 10.0,
    iters: int = 8,
):
    """Smallest knob value in ``[lo, hi]`` whose outage is ``<= nominal``, by bisection.

    The margin of G-HBF-marg (Schynol and Pesavento, Sec. 5) is set this way on validation data.

    Parameters
    ----------
    outage_of : callable
        ``outage_of(x)`` returns the validation outage for knob ``x`` (e.g. a margin in dB);
        assumed non-increasing in ``x``.
    nominal : float
        Target outage level ``rho``.
    lo, hi : float
        Initial bracket.
    iters : int
        Number of halvings.

    Returns
    -------
    tuple
        ``(x, trace)``: ``x`` the upper end of the final bracket (the value that meets the
        nominal outage) and ``trace`` the list of ``(x, outage)`` evaluated.

    Raises
    ------
    ValueError
        If even ``hi`` misses the nominal outage.
    """
    trace = []
    o_hi = outage_of(hi)
    trace.append((hi, o_hi))
    if o_hi > nominal:
        raise ValueError(f"outage {o_hi:.3f} at hi={hi} exceeds nominal {nominal}; increase hi")
    o_lo = outage_of(lo)
    trace.append((lo, o_lo))
    if o_lo <= nominal:
        return lo, trace
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        o = outage_of(mid)
        trace.append((mid, o))
        if o <= nominal:
            hi = mid
        else:
            lo = mid
    return hi, trace


def loaded_min_power(
    H_hat,
    F_RF,
    sinr_targets,
    noise_var,
    loading,
    *,
    max_power: float,
    outer_iters: int = 60,
    tol: float = 1e-6,
    **solver_kw,
) -> HybridResult:
    """Diagonal-loading robust digital design for a fixed analog matrix (RF weighting).

    With unit-norm radiated beams ``u_j = F v_j / ||F v_j||`` and a CSI error of energy at most
    ``eps_k`` along any beam, replacing ``h h^H`` by ``hat h hat h^H - eps I`` (wanted signal)
    and ``hat h hat h^H + eps I`` (interference) and bounding the streams' powers by the total
    ``P`` gives the sufficient condition

    ``p_k |hat h_k^H u_k|^2 >= gamma_k (sum_{j != k} p_j |hat h_k^H u_j|^2 + sigma_k^2)``
    with ``sigma_k^2 = sigma^2 + eps_k max(1, 1/gamma_k) P``,

    a standard problem with per-user noise (rows of ``H_hat`` scaled by ``1/sigma_k``), i.e.
    the digital sub-problem (12) of Schynol and Pesavento with a loaded noise. The least fixed point
    ``P* = g(P*)``, ``g(P) = P_min(sigma^2 + eps max(1, 1/gamma) P)``, is approached from
    ``P = 0`` by the monotone iteration ``P <- g(P)`` accelerated by a secant step on
    ``g(P) - P``: ``g`` is increasing and convex (by duality ``P_min`` is a maximum of linear
    functions of the noise powers), so both steps stay in ``[P, P*]`` and the secant makes the
    convergence superlinear even near the feasibility boundary, where ``g'(P*) -> 1`` and the
    plain iteration needs hundreds of steps. Samples whose ``P`` exceeds ``max_power`` are
    infeasible; samples still moving after ``outer_iters`` are reported infeasible as well,
    with a ``RuntimeWarning`` that counts them. Chapter: *Hybrid beamforming under imperfect
    CSI*.

    Parameters
    ----------
    H_hat : torch.Tensor
        ``(B, K, M)`` complex channel estimates.
    F_RF : torch.Tensor
        ``(B, M, N_RF)`` analog matrix, dtype of ``H_hat``.
    sinr_targets : float or torch.Tensor
        ``gamma_k``: scalar, ``(K,)`` or ``(B, K)``, finite, ``> 0``.
    noise_var : float or torch.Tensor
        ``sigma^2``: scalar or ``(B,)``, ``> 0``.
    loading : float or torch.Tensor
        ``eps_k >= 0``: scalar, ``(B,)`` (one per instance) or ``(B, K)``; finite.
    max_power : float
        Power cap ``P_max`` (finite, ``> 0``).
    outer_iters : int
        Maximum number of fixed-point iterations on ``P``.
    tol : float
        Stop when ``|P^(t+1) - P^(t)| <= tol P^(t+1)`` (in ``(0, 1)``).
    **solver_kw
        ``iters``, ``tol``, ``max_power_ratio`` of :func:`lib.precoding.min_power_duality`.

    Returns
    -------
    HybridResult
        On the device and in the dtype of ``H_hat``.
    """
    _check_H(H_hat, "H_hat")
    _check_F(F_RF, H_hat)
    B, K, _ = H_hat.shape
    dev = H_hat.device
    rdt = _real_dtype(H_hat)
    gam = per_user(sinr_targets, "sinr_targets", B, K, dtype=rdt, device=dev)
    s2 = _scalar(noise_var, "noise_var", H_hat)
    max_power = _check_cap(max_power)
    outer_iters = check_positive_int(outer_iters, "outer_iters")
    if not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and 0 < tol < 1):
        raise ValueError(f"tol must be a number in (0, 1), got {tol!r}")
    kw = _solver_settings(solver_kw)
    if isinstance(loading, np.ndarray):
        loading = torch.as_tensor(loading, device=dev)
    if isinstance(loading, torch.Tensor) and loading.dim() == 1:
        if loading.shape != (B,):
            raise ValueError(
                f"loading must be a scalar, ({B},) or ({B}, {K}), got {tuple(loading.shape)}"
            )
        loading = loading[:, None].expand(B, K)  # one error energy per instance
    eps = per_user(loading, "loading", B, K, dtype=rdt, device=dev, allow_zero=True)
    coef = eps * torch.clamp(1.0 / gam, min=1.0)
    ones = torch.ones(B, dtype=rdt, device=dev)
    P = torch.zeros(B, dtype=rdt, device=dev)
    # the previous evaluation point and its residual h = g(P) - P, for the secant step
    P_prev = torch.zeros(B, dtype=rdt, device=dev)
    h_prev = torch.full((B,), torch.nan, dtype=rdt, device=dev)
    active = torch.ones(B, dtype=torch.bool, device=dev)
    feasible = torch.ones(B, dtype=torch.bool, device=dev)
    res = None
    for _ in range(outer_iters):
        sk2 = s2[:, None] + coef * P[:, None]
        Hs = H_hat / sk2.sqrt().to(H_hat.dtype)[..., None]
        r = _digital(Hs, F_RF, gam, ones, "rf", None, kw)
        Pn = torch.where(r.feasible, r.weighted_power, torch.full_like(P, torch.inf))
        res = (
            r
            if res is None
            else HybridResult(
                F_RF,
                torch.where(active[:, None, None], r.V_bb, res.V_bb),
                torch.where(active[:, None], r.powers, res.powers),
                torch.where(active, r.weighted_power, res.weighted_power),
                torch.where(active, r.feasible, res.feasible),
            )
        )
        bad = active & (~r.feasible | (Pn > max_power))
        feasible = feasible & ~bad
        conv = active & ~bad & ((Pn - P).abs() <= tol * Pn)
        # g(P) = P_min(sigma^2 + coef P) is increasing and convex in P (a maximum of linear
        # functions of the noise, by duality), so h = g(P) - P is convex and, left of the
        # least fixed point P*, positive and decreasing: the secant through two such points
        # has its root in [P, P*], as does the plain step g(P). Take the larger one (capped
        # at max_power; beyond it the next g decides infeasibility). Near the feasibility
        # boundary g'(P*) -> 1 and the plain iteration alone needs hundreds of steps.
        h = Pn - P
        ok = (h_prev > h) & (h > 0) & (P > P_prev)
        den = torch.where(ok, h_prev - h, torch.ones_like(h))
        root = torch.where(ok, P + h * (P - P_prev) / den, Pn)
        step = torch.maximum(Pn, root.clamp(max=max_power))
        go = active & ~bad
        P_prev = torch.where(go, P, P_prev)
        h_prev = torch.where(go, h, h_prev)
        P = torch.where(go & ~conv, step, torch.where(go, Pn, P))
        active = active & ~bad & ~conv
        if not bool(active.any()):  # the documented convergence test (one sync per iteration)
            break
    if bool(active.any()):
        warnings.warn(
            f"loaded_min_power: {int(active.sum())} of {B} samples did not converge within "
            f"outer_iters={outer_iters} and are reported infeasible; raise outer_iters",
            RuntimeWarning,
            stacklevel=2,
        )
    feasible = feasible & ~active  # not converged -> infeasible
    p = torch.where(feasible[:, None], res.powers, torch.full_like(res.powers, torch.inf))
    w = torch.where(feasible, res.weighted_power, torch.full_like(res.weighted_power, torch.inf))
    return HybridResult(F_RF, res.V_bb, p, w, feasible)


def robust_sdp_design(H_hat, F_RF, C_err, sinr_targets, noise_var, outage: float = 0.1):
    """Conic worst-case robust digital design on a small instance (cvxpy, per sample).

    In the orthonormalised RF space ``Q = F L^{-H}`` the effective channel is ``g_k = Q^H h_k``
    with Gaussian error covariance ``E_k E_k^H = Q^H C_k Q``. Writing ``h = hat g + E z``, the
    ball ``||z||^2 <= delta^2`` with ``delta^2`` the ``(1 - outage)`` quantile of
    ``Gamma(n, 1)`` contains ``z ~ CN(0, I_n)`` with probability ``1 - outage``; requiring the
    SINR for every error in it gives, by the S-lemma, the LMIs

    ``[[E^H A_k E + lam_k I, E^H A_k g], [g^H A_k E, g^H A_k g - sigma^2 - lam_k delta^2]] >= 0``,
    ``A_k = W_k / gamma_k - sum_{j != k} W_j``, ``lam_k >= 0``, ``W_k >= 0``,

    minimising ``sum tr W_k`` (semidefinite relaxation; the principal eigenvector of each
    ``W_k`` is returned). Each user's outage is then at most ``outage``. Returns
    ``(HybridResult, solve_times, max_rank_ratio)`` where ``solve_times`` are the cvxpy solve
    times in seconds and ``max_rank_ratio`` the largest second-to-first eigenvalue ratio of
    the ``W_k`` (0 for an exactly rank-one solution). The solve runs in double precision on
    the CPU (cvxpy); the returned tensors take the dtype and device of ``H_hat``.

    Parameters
    ----------
    H_hat : torch.Tensor
        ``(B, K, M)`` complex channel estimates.
    F_RF : torch.Tensor
        ``(B, M, N_RF)`` analog matrix with independent columns, dtype of ``H_hat``.
    C_err : torch.Tensor
        ``(B, K, M, M)`` error covariances ``C_k`` (Hermitian PSD).
    sinr_targets : float or torch.Tensor
        ``gamma_k``: scalar, ``(K,)`` or ``(B, K)``, finite, ``> 0``.
    noise_var : float or torch.Tensor
        ``sigma^2``: scalar or ``(B,)``, ``> 0``.
    outage : float
        Per-user outage level ``rho`` in ``(0, 1)``.

    Returns
    -------
    tuple
        ``(HybridResult, solve_times, max_rank_ratio)``.
    """
    import cvxpy as cp
    from scipy.special import gammaincinv

    _check_H(H_hat, "H_hat")
    _check_F(F_RF, H_hat)
    B, K, N = H_hat.shape
    check_complex(C_err, "C_err", shape=(B, K, N, N))
    if isinstance(outage, bool) or not isinstance(outage, (int, float)) or not 0 < outage < 1:
        raise ValueError(f"outage must be a number in (0, 1), got {outage!r}")
    n = F_RF.shape[-1]
    s2 = _scalar(noise_var, "noise_var", H_hat).to("cpu", torch.float64)
    gam = per_user(sinr_targets, "sinr_targets", B, K, dtype=torch.float64, device="cpu")
    delta2 = float(gammaincinv(n, 1.0 - outage))
    F64 = F_RF.detach().to("cpu", torch.complex128)
    L, info = torch.linalg.cholesky_ex(F64.mH @ F64)
    if bool((info != 0).any()):
        raise ValueError("F_RF must have linearly independent columns in every sample")
    Q = torch.linalg.solve_triangular(L, F64.mH, upper=False).mH  # F L^{-H}
    # resolve_conj: .numpy() rejects tensors with the conjugate bit set
    H64 = H_hat.detach().to("cpu", torch.complex128)
    C64 = C_err.detach().to("cpu", torch.complex128)
    G = (H64 @ Q).conj().resolve_conj().numpy()  # columns g_k as rows
    Ce = (Q.mH[:, None] @ C64 @ Q[:, None]).resolve_conj().numpy()
    T_out = np.zeros((B, n, K), dtype=complex)
    feas = np.zeros(B, dtype=bool)
    times, ratios = [], [0.0]
    for b in range(B):
        W = [cp.Variable((n, n), hermitian=True) for _ in range(K)]
        lam = cp.Variable(K, nonneg=True)
        cons = [Wk >> 0 for Wk in W]
        for k in range(K):
            lam_c, U_c = np.linalg.eigh(Ce[b, k])
            E = U_c * np.sqrt(np.clip(lam_c, 0, None))
            A = W[k] / float(gam[b, k]) - sum(W[j] for j in range(K) if j != k)
            g = G[b, k][:, None]
            top_left = E.conj().T @ A @ E + lam[k] * np.eye(n)
            top_right = E.conj().T @ A @ g
            corner = cp.real(g.conj().T @ A @ g) - float(s2[b]) - lam[k] * delta2
            M = cp.bmat([[top_left, top_right], [top_right.H, corner]])
            cons.append((M + M.H) / 2 >> 0)
        prob = cp.Problem(cp.Minimize(cp.real(sum(cp.trace(Wk) for Wk in W))), cons)
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                # "solution may be inaccurate": the status is checked below
                warnings.simplefilter("ignore", UserWarning)
                prob.solve(solver=cp.CLARABEL)
        except cp.error.SolverError:
            pass
        times.append(time.perf_counter() - t0)
        if prob.status in ("optimal", "optimal_inaccurate"):
            feas[b] = True
            for k in range(K):
                ev, evec = np.linalg.eigh(W[k].value)
                T_out[b, :, k] = evec[:, -1] * np.sqrt(max(ev[-1], 0.0))
                ratios.append(max(ev[-2], 0.0) / max(ev[-1], 1e-300) if n > 1 else 0.0)
    T = torch.as_tensor(T_out, device="cpu")  # cvxpy ran on the CPU
    Vf = torch.linalg.solve_triangular(L.mH, T, upper=True)  # digital weights v = L^{-H} t
    p = Vf.abs().pow(2).sum(-2)
    V_bb = Vf / p.sqrt().clamp_min(1e-300).to(Vf.dtype)[:, None, :]
    f = torch.as_tensor(feas, device="cpu")
    w = T.abs().pow(2).sum(dim=(-2, -1))
    dev, rdt = H_hat.device, _real_dtype(H_hat)
    res = HybridResult(
        F_RF,
        V_bb.to(dtype=H_hat.dtype, device=dev),
        torch.where(f[:, None], p, torch.inf).to(dtype=rdt, device=dev),
        torch.where(f, w, torch.inf).to(dtype=rdt, device=dev),
        f.to(dev),
    )
    return res, times, float(max(ratios))


def single_user_outage(gain, err_var, power, sinr_target, noise_var) -> np.ndarray:
    """Closed-form outage of one user served along its estimated channel (MRT), Gaussian error.

    With ``h = hat h + e``, ``e ~ CN(0, err_var I)`` independent of ``hat h`` and
    ``u = hat h / ||hat h||``, ``h^H u = ||hat h|| + w`` with ``w ~ CN(0, err_var)``, so
    ``2 |h^H u|^2 / err_var`` is noncentral chi-square (2 dof, noncentrality
    ``2 ||hat h||^2 / err_var``) and ``P(power |h^H u|^2 / noise_var < gamma)`` is its CDF.

    Parameters
    ----------
    gain : array-like
        ``||hat h||^2``.
    err_var, power, sinr_target, noise_var : float
        Error variance per entry, transmit power, SINR target ``gamma``, noise ``sigma^2``.

    Returns
    -------
    numpy.ndarray
        Outage probability, the shape of ``gain``.
    """
    from scipy.stats import ncx2

    gain = np.asarray(gain, dtype=float)
    x = 2.0 * sinr_target * noise_var / (power * err_var)
    return ncx2.cdf(x, df=2, nc=2.0 * gain / err_var)
