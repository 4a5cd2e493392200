"""QoS-constrained downlink power minimisation.

Minimum total power subject to SINR targets, as an SOCP (cvxpy, :func:`min_power_socp`) and by
uplink-downlink duality (Schubert & Boche 2004; Schynol et al., Sec. 3, eqs. (16)-(23)), batched
in torch (:func:`min_power_duality`). Chapter: *Multi-user downlink beamforming*.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from lib.core.checks import _real_dtype, check_positive_int
from lib.precoding.common import _abs2, _check_H, _scalar, _targets

__all__ = ["MinPowerResult", "min_power_socp", "min_power_duality"]


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
