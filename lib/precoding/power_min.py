"""QoS-constrained downlink power minimisation.

Minimum total power subject to SINR targets,

.. math::
    \\min_{v_1, \\dots, v_K} \\sum_k \\|v_k\\|^2 \\quad \\text{s.t.} \\quad
    \\frac{|h_k^H v_k|^2}{\\sum_{j \\ne k} |h_k^H v_j|^2 + \\sigma^2} \\ge \\gamma_k,

as an SOCP (cvxpy, :func:`~lib.precoding.min_power_socp`) and by uplink-downlink duality (Schubert
& Boche
2004; Schynol and Pesavento, Sec. 3, eqs. (16)-(23)), batched in torch
(:func:`~lib.precoding.min_power_duality`).
Chapter: *Multi-user downlink beamforming* (``book/downlink_beamforming.ipynb``); the hybrid
chapters call the same solver on effective channels.

Units and precision. Both solvers first rescale every sample to unit noise and unit mean
channel gain (``_normalise``) and undo the scaling on the way out, so that the results are
invariant to a common scaling ``H -> c H``, ``sigma^2 -> c^2 sigma^2`` and scaling ``H`` alone
by ``c`` scales the powers by ``1 / c^2``. Tolerances are relative to the dtype's machine
epsilon ``eps = torch.finfo(dtype).eps``; the same code runs in complex64 and complex128.
A sample is reported feasible only if the returned beamformers meet every target to a relative
``sqrt(eps)`` (:func:`~lib.precoding.sinr_rtol`) with every user's interference below
``1 / sqrt(eps)`` times
the noise (``_certified``): the flag is a certificate, never an unverified guess.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from lib.core.checks import _real_dtype, check_positive_int, per_user
from lib.precoding.common import _abs2, _check_H, _scalar

__all__ = ["MinPowerResult", "min_power_socp", "min_power_duality", "sinr_rtol"]

#: Default convergence tolerance of :func:`~lib.precoding.min_power_duality`: relative change of
#: the uplink
#: powers between two iterations ``<= TOL_FACTOR * eps`` (``9.1e-13`` in double precision, close
#: to the former fixed ``1e-12``; ``4.9e-4`` in single precision).
TOL_FACTOR = 4096.0
#: The duality loop tests convergence (one host synchronisation) every ``CHECK_EVERY``
#: iterations; converged samples are frozen, so the result does not depend on it. The loop
#: typically converges in about 10 iterations, so a larger value costs idle iterations
#: (measured on CPU: 0.095 ms/instance with 1 or 2, 0.14 ms with 8).
CHECK_EVERY = 2
#: Tolerance of the feasibility certificate of the cvxpy solver (its own accuracy is about
#: 1e-8 relative, independent of the dtype of ``H``).
SOCP_SINR_RTOL = 1e-6


def sinr_rtol(dtype: torch.dtype) -> float:
    """Relative SINR tolerance of the feasibility certificate: ``sqrt(eps)`` of ``dtype``.

    Parameters
    ----------
    dtype : torch.dtype
        Real or complex floating dtype (complex64 counts as float32).

    Returns
    -------
    float
        ``sqrt(torch.finfo(dtype).eps)``: ``1.5e-8`` for float64, ``3.5e-4`` for float32.
        Half of the digits: the SINR of a solution near the feasibility boundary is computed
        with an error of ``eps / (1 - rho)`` (``rho`` the spectral radius of the coupling
        matrix), so a tighter test would reject feasible, badly conditioned samples.
    """
    return math.sqrt(torch.finfo(dtype).eps)


# --------------------------------------------------------------------------- #
# Result type and scaling
# --------------------------------------------------------------------------- #
class MinPowerResult(NamedTuple):
    """Result of :func:`~lib.precoding.min_power_socp` / :func:`~lib.precoding.min_power_duality`.

    Attributes
    ----------
    V : torch.Tensor
        ``(B, M, K)`` beamformers, zero for an infeasible sample.
    powers : torch.Tensor
        ``(B, K)`` per-user downlink powers ``||v_k||^2``; ``+inf`` for an infeasible sample
        (so that ``powers.sum(-1)`` ranks it last), never NaN.
    feasible : torch.Tensor
        ``(B,)`` bool: the returned ``V`` meets every SINR target (to
        :func:`~lib.precoding.sinr_rtol`).
    """

    V: torch.Tensor
    powers: torch.Tensor
    feasible: torch.Tensor

    @property
    def total_power(self) -> torch.Tensor:
        """Total transmit power per sample (``+inf`` when infeasible), shape ``(B,)``."""
        return self.powers.sum(-1)


def _normalise(H: torch.Tensor, s2: torch.Tensor):
    """Rescale each sample to unit noise and unit mean channel gain ``mean_k ||h_k||^2 = 1``.

    With ``Ht = H / sqrt(g)`` (``g = mean_k ||h_k||^2``), noise 1 and ``V = c V_t``,
    ``c = sqrt(sigma^2 / g)``, the SINRs of ``(H, sigma^2, V)`` and ``(Ht, 1, V_t)`` are equal,
    so the powers of the original problem are ``c^2`` times those of the normalised one. The
    max-abs pre-scaling keeps ``g`` representable for any finite ``H``.

    Returns ``(Ht, c)`` with ``Ht`` ``(B, K, M)`` and ``c`` ``(B,)`` real; an all-zero sample
    keeps ``Ht = 0`` (it is infeasible) and ``c = 1``.
    """
    rdt = _real_dtype(H)
    tiny = torch.finfo(rdt).tiny
    m = H.abs().amax(dim=(-2, -1))  # (B,)
    zero = m == 0
    m = torch.where(zero, torch.ones_like(m), m)
    Hs = H / m.to(H.dtype)[:, None, None]
    g = _abs2(Hs).sum(-1).mean(-1)  # in [1/K, M]
    Ht = Hs / g.sqrt().to(H.dtype)[:, None, None]
    c = s2.sqrt() / (m * g.sqrt()).clamp_min(tiny)
    c = torch.where(zero, torch.ones_like(c), c)
    return Ht, c


def _denormalise(V, p, feasible, c):
    """Undo ``_normalise`` and mask infeasible samples (``V = 0``, ``powers = inf``).

    Powers that overflow the dtype after rescaling are reported infeasible.
    """
    p = p * (c * c)[:, None]
    feasible = feasible & torch.isfinite(p).all(-1)
    V = V * c.to(V.dtype)[:, None, None]
    V = torch.where(feasible[:, None, None], V, torch.zeros_like(V))
    p = torch.where(feasible[:, None], p, torch.full_like(p, torch.inf))
    return V, p, feasible


def _certified(H, V, gam, rtol):
    """Feasibility certificate of a normalised (unit-noise) solution, ``(B,)`` bool.

    Every user meets ``SINR_k >= gamma_k (1 - rtol)`` and its interference-to-noise ratio
    ``I_k`` satisfies ``rtol (1 + I_k) < 1``. The second condition is the Collatz-Wielandt
    bound ``1 - rho(D Psi) >= min_k 1 / (1 + I_k)`` on the margin to the feasibility boundary:
    a solution closer to the boundary than the tolerance (e.g. parallel channels at a 0 dB
    target, which only a relaxed target can meet, with an unbounded power) is not certified.
    """
    G2 = _abs2(H @ V)
    sig = torch.diagonal(G2, dim1=-2, dim2=-1)
    interference = G2.sum(-1) - sig
    met = sig >= gam * (1.0 - rtol) * (interference + 1.0)
    resolvable = rtol * (1.0 + interference) < 1.0
    return (met & resolvable).all(-1)


# --------------------------------------------------------------------------- #
# SOCP reference
# --------------------------------------------------------------------------- #
def min_power_socp(H: torch.Tensor, sinr_targets, noise_var) -> MinPowerResult:
    """Minimum-power beamforming with SINR targets as an SOCP (cvxpy + Clarabel, per sample).

    The phase of ``v_k`` is free, so ``h_k^H v_k`` can be taken real and the SINR constraint
    becomes the second-order cone
    ``sqrt(1 + 1/gamma_k) Re(h_k^H v_k) >= || [h_k^H V, sigma] ||``, ``Im(h_k^H v_k) = 0``
    (Bengtsson & Ottersten 2001; Wiesel, Eldar & Shamai 2006). Each sample is solved after
    rescaling to unit noise and unit mean channel gain, in double precision, and the
    solution is accepted only if it meets every target to a relative ``SOCP_SINR_RTOL``
    (1e-6) with every user's interference below 1e6 times the noise (``_certified``);
    otherwise (solver failure, infeasible, inaccurate) the sample is infeasible.

    Parameters
    ----------
    H : torch.Tensor
        ``(B, K, M)`` complex channels, row ``k`` is ``h_k^H``.
    sinr_targets : float or torch.Tensor
        ``gamma_k`` (linear): scalar, ``(K,)`` or ``(B, K)``, finite and ``> 0``.
    noise_var : float or torch.Tensor
        ``sigma^2``: scalar or ``(B,)``, ``> 0``.

    Returns
    -------
    MinPowerResult
        ``V`` ``(B, M, K)`` of the dtype and device of ``H``, ``powers`` ``(B, K)``,
        ``feasible`` ``(B,)``.
    """
    import cvxpy as cp

    _check_H(H)
    B, K, n = H.shape
    gam = per_user(sinr_targets, "sinr_targets", B, K, dtype=torch.float64, device="cpu")
    s2 = _scalar(noise_var, "noise_var", H).to("cpu", torch.float64)
    Ht, c = _normalise(H.detach().resolve_conj().to("cpu", torch.complex128), s2)
    Hn, gam_np = Ht.numpy(), gam.numpy()
    V_out = np.zeros((B, n, K), dtype=np.complex128)
    solved = np.zeros(B, dtype=bool)
    for b in range(B):
        V = cp.Variable((n, K), complex=True)
        cons = []
        for k in range(K):
            hv = Hn[b, k] @ V  # (K,) h_k^H v_j
            cons.append(cp.imag(hv[k]) == 0)
            cons.append(
                cp.SOC(
                    math.sqrt(1.0 + 1.0 / gam_np[b, k]) * cp.real(hv[k]),
                    cp.hstack([hv, np.ones(1)]),
                )
            )
        prob = cp.Problem(cp.Minimize(cp.norm(cp.vec(V, order="F"), 2)), cons)
        try:
            prob.solve(solver=cp.CLARABEL)
        except cp.error.SolverError:
            continue
        if prob.status in ("optimal", "optimal_inaccurate") and V.value is not None:
            solved[b] = np.all(np.isfinite(V.value))
            if solved[b]:
                V_out[b] = V.value
    Vt = torch.as_tensor(V_out, device="cpu")
    ok = torch.as_tensor(solved, device="cpu") & _certified(Ht, Vt, gam, SOCP_SINR_RTOL)

    V, p, feas = _denormalise(Vt, _abs2(Vt).sum(-2), ok, c)
    rdt = _real_dtype(H)
    return MinPowerResult(
        V.to(dtype=H.dtype, device=H.device),
        p.to(dtype=rdt, device=H.device),
        feas.to(H.device),
    )


# --------------------------------------------------------------------------- #
# Uplink-downlink duality
# --------------------------------------------------------------------------- #
def _duality_normalised(H, gam, iters: int, tol: float, max_power_ratio: float):
    """Duality fixed point on a normalised problem (unit noise), unchecked.

    ``H`` ``(B, K, M)``, ``gam`` ``(B, K)`` real of ``H``'s real dtype. Returns
    ``(V, p, feasible)`` in the normalised units; ``V`` and ``p`` are finite for every sample.
    No host synchronisation except the convergence test every
    :data:`~lib.precoding.power_min.CHECK_EVERY` iterations.
    """
    B, K, n = H.shape
    rdt = _real_dtype(H)
    dev = H.device
    tiny = torch.finfo(rdt).tiny
    rtol = sinr_rtol(rdt)
    Hh = H.mH
    eye_n = torch.eye(n, dtype=H.dtype, device=dev)
    eye_K = torch.eye(K, dtype=rdt, device=dev)
    off = 1.0 - eye_K
    hn2 = _abs2(H).sum(-1)  # ||h_k||^2
    usable = (hn2 > 0).all(-1)
    # q_k >= gamma_k / ||h_k||^2 (interference-free bound): divergence test relative to it
    bound = max_power_ratio * (gam / hn2.clamp_min(tiny)).sum(-1)

    def directions(q):
        # S = I + sum_j q_j h_j h_j^H is Hermitian positive definite: Cholesky, no pivoting
        S = eye_n + (Hh * q.to(H.dtype)[:, None, :]) @ H
        L, info = torch.linalg.cholesky_ex(S)
        okS = info == 0
        L = torch.where(okS[:, None, None], L, eye_n)
        X = torch.cholesky_solve(Hh, L)  # S^{-1} h_k, (B, M, K)
        a = (H * X.mT).sum(-1).real  # h_k^H S^{-1} h_k
        nrm = _abs2(X).sum(-2).sqrt()
        U = X / nrm.clamp_min(tiny).to(H.dtype)[:, None, :]
        return U, a, okS

    def coupling(U):
        G2 = _abs2(H @ U)  # |h_k^H u_j|^2
        gkk = torch.diagonal(G2, dim1=-2, dim2=-1)
        D = gam / gkk.clamp_min(tiny)
        return D, G2 * off

    def solve_powers(DPsi, rhs):
        p, info = torch.linalg.solve_ex(eye_K - DPsi, rhs)
        ok = (info == 0) & torch.isfinite(p).all(-1) & (p > 0).all(-1)
        return torch.where(ok[:, None], p, torch.zeros_like(p)), ok

    q = torch.zeros(B, K, dtype=rdt, device=dev)
    done = ~usable
    diverged = torch.zeros_like(done)
    for it in range(iters):
        U, a, okS = directions(q)
        # fixed-point (power iteration) step, Sherman-Morrison leave-one-out gain, eq. (21)
        g_loo = a / (1.0 - q * a).clamp_min(tiny)
        q_fp = gam / g_loo.clamp_min(tiny)
        # exact uplink powers for the current directions, if the coupling system allows
        D, Psi = coupling(U)
        q_ls, ok = solve_powers(D[:, :, None] * Psi.mT, D)
        q_new = torch.where(ok[:, None], q_ls, q_fp)
        frozen = done | diverged
        q_new = torch.where(frozen[:, None], q, q_new)
        bad = ~okS | ~torch.isfinite(q_new).all(-1) | (q_new.sum(-1) > bound)
        diverged = diverged | (bad & ~frozen)
        change = (q_new - q).abs().amax(-1)
        conv = change <= tol * q_new.abs().amax(-1).clamp_min(tiny)
        q = torch.where(diverged[:, None], q, q_new)
        done = done | (conv & ~diverged)
        if (it + 1) % CHECK_EVERY == 0 and bool((done | diverged).all()):
            break
    U, _, okS = directions(q)
    D, Psi = coupling(U)
    p, ok = solve_powers(D[:, :, None] * Psi, D)  # downlink powers, unit noise
    V = U * p.sqrt().to(H.dtype)[:, None, :]
    # certificate: the returned beamformers meet every target (implies rho(D Psi) < 1)
    feasible = usable & okS & ok & ~diverged & _certified(H, V, gam, rtol)
    return V, p, feasible


def _min_power_core(H, gam, s2, *, iters: int = 500, tol=None, max_power_ratio: float = 1e12):
    """:func:`~lib.precoding.min_power_duality` without input checks (for loops that call it many
    times).

    ``H`` ``(B, K, M)``, ``gam`` ``(B, K)`` and ``s2`` ``(B,)`` real of ``H``'s real dtype.
    Returns ``(V, powers, feasible)`` as in :class:`~lib.precoding.MinPowerResult`.
    """
    rdt = _real_dtype(H)
    if tol is None:
        tol = TOL_FACTOR * torch.finfo(rdt).eps
    Ht, c = _normalise(H, s2)
    V, p, feas = _duality_normalised(Ht, gam, iters, tol, max_power_ratio)
    return _denormalise(V, p, feas, c)


def _check_settings(iters, tol, max_power_ratio):
    iters = check_positive_int(iters, "iters")
    if tol is not None and not (
        isinstance(tol, (int, float)) and not isinstance(tol, bool) and 0 < tol < 1
    ):
        raise ValueError(f"tol must be None or a number in (0, 1), got {tol!r}")
    if not (
        isinstance(max_power_ratio, (int, float))
        and not isinstance(max_power_ratio, bool)
        and math.isfinite(max_power_ratio)
        and max_power_ratio > 1
    ):
        raise ValueError(f"max_power_ratio must be a finite number > 1, got {max_power_ratio!r}")
    return iters


def min_power_duality(
    H: torch.Tensor,
    sinr_targets,
    noise_var,
    *,
    iters: int = 500,
    tol: float | None = None,
    max_power_ratio: float = 1e12,
) -> MinPowerResult:
    """Minimum-power beamforming with SINR targets by uplink-downlink duality, batched in torch.

    Virtual uplink (Schynol and Pesavento, Sec. 3, eqs. (16)-(23); Schubert & Boche 2004): with
    uplink
    powers ``q`` and ``S = sigma^2 I + sum_j q_j h_j h_j^H`` the optimal receive (and transmit)
    directions are the MMSE filters ``u_k ∝ S^{-1} h_k`` (eq. (19)), and the minimal powers
    solve the fixed point ``q_k = gamma_k / (h_k^H (S - q_k h_k h_k^H)^{-1} h_k)`` (eq. (21)).
    Each iteration takes the power-iteration step (monotone from ``q = 0``) or, when the
    coupling system for the current directions is solvable with a positive solution, the exact
    uplink powers for those directions, which decrease monotonically to the optimum (the
    alternating step of Schubert & Boche). At the end the downlink powers ``p`` solve
    ``(I - D Psi) p = sigma^2 D 1`` (eqs. (22)-(23)) with ``D = diag(gamma_k / |h_k^H u_k|^2)``
    and ``Psi_kj = |h_k^H u_j|^2`` (``j != k``), and ``V = [sqrt(p_k) u_k]``.

    Every sample is first rescaled to unit noise and unit mean channel gain (results are
    invariant to ``H -> c H``, ``sigma^2 -> c^2 sigma^2``). A sample is feasible when the
    returned ``V`` meets every target to a relative :func:`~lib.precoding.sinr_rtol`
    (``rtol = sqrt(eps)``)
    and every user's interference-to-noise ratio ``I_k`` has ``rtol (1 + I_k) < 1`` (by
    Collatz-Wielandt, ``1 - rho(D Psi) >= min_k 1 / (1 + I_k)``: the solution is farther from
    the feasibility boundary than the tolerance; 78 dB of interference in double, 35 dB in
    single precision). It is reported infeasible (``feasible = False``, ``V = 0``,
    ``powers = inf``) otherwise, in particular for a singular coupling matrix (parallel
    channels at a 0 dB target), when the uplink powers exceed ``max_power_ratio`` times the
    interference-free bound ``sum_k gamma_k sigma^2 / ||h_k||^2``, or when a user has a zero
    channel; it never raises from inside the iteration. A sample that has
    not converged within ``iters`` but whose last directions already meet the targets is
    feasible, with a power possibly slightly above the minimum.

    Parameters
    ----------
    H : torch.Tensor
        ``(B, K, M)`` complex64 or complex128 channels, row ``k`` is ``h_k^H``; any effective
        channel (also ``K > M``).
    sinr_targets : float or torch.Tensor
        ``gamma_k`` (linear): scalar, ``(K,)`` or ``(B, K)``, finite and ``> 0``.
    noise_var : float or torch.Tensor
        ``sigma^2``: scalar or ``(B,)``, finite and ``> 0``.
    iters : int
        Maximum number of iterations.
    tol : float, optional
        Convergence test ``max_k |q_k^(t+1) - q_k^(t)| <= tol max_k q_k``; default
        ``TOL_FACTOR * eps`` of the dtype (``9.1e-13`` double, ``4.9e-4`` single). Converged
        samples are frozen; the loop stops when every sample has converged or diverged (tested
        every :data:`~lib.precoding.power_min.CHECK_EVERY` iterations).
    max_power_ratio : float
        Divergence threshold relative to the interference-free bound (> 1).

    Returns
    -------
    MinPowerResult
        ``V`` ``(B, M, K)``, ``powers`` ``(B, K)`` and ``feasible`` ``(B,)``, of the dtype and
        device of ``H``.
    """
    _check_H(H)
    B, K, _ = H.shape
    iters = _check_settings(iters, tol, max_power_ratio)
    rdt = _real_dtype(H)
    gam = per_user(sinr_targets, "sinr_targets", B, K, dtype=rdt, device=H.device)
    s2 = _scalar(noise_var, "noise_var", H)
    V, p, feas = _min_power_core(H, gam, s2, iters=iters, tol=tol, max_power_ratio=max_power_ratio)
    return MinPowerResult(V, p, feas)
