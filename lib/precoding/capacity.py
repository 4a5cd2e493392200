"""Sum capacity of the Gaussian MISO broadcast channel (dirty-paper coding limit).

BC-MAC duality and sum-power iterative water-filling (Jindal et al. 2005), batched in torch;
:func:`~lib.precoding.dpc_sum_capacity_cvxpy` is the convex-program reference. Chapter: *Multi-user
downlink
beamforming* (``book/downlink_beamforming.ipynb``). Shapes: ``H`` ``(B, K, M)``, row ``k`` is
``h_k^H``; ``power`` and ``noise_var`` scalars or ``(B,)``.
"""

from __future__ import annotations

import numpy as np
import torch

from lib.core.checks import _real_dtype, check_positive_int
from lib.precoding.common import _LN2, _check_H, _scalar

__all__ = ["dpc_sum_capacity", "dpc_sum_capacity_cvxpy"]


# --------------------------------------------------------------------------- #
# Sum capacity of the MISO broadcast channel (DPC) via BC-MAC duality
# --------------------------------------------------------------------------- #
def _waterfill(inv_gain: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Water-filling ``q_k = (nu - c_k)^+`` with ``sum_k q_k = P`` for levels ``c`` (batch, K)."""
    c, order = torch.sort(inv_gain, dim=-1)
    # water-filling is shift-invariant: measure levels from the lowest one, so that P is not
    # lost next to levels c_k >> P (low SNR)
    c1 = c[:, :1]
    c = c - torch.where(torch.isfinite(c1), c1, torch.zeros_like(c1))
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


def _logdet_bits(Hn: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``log2 det(I + sum_k q_k h_k h_k^H)`` from the eigenvalues of the smaller Gram matrix.

    ``sum_j log1p(lam_j)``: accurate in relative terms at low SNR, where ``det`` is 1 + tiny.
    """
    B, K, M = Hn.shape
    sq = q.clamp_min(0.0).sqrt().to(Hn.dtype)
    Ht = Hn * sq[:, :, None]  # rows sqrt(q_k) h_k^H
    gram = Ht @ Ht.mH if K <= M else Ht.mH @ Ht
    lam = torch.linalg.eigvalsh(gram).clamp_min(0.0)
    return torch.log1p(lam).sum(-1) / _LN2


def dpc_sum_capacity(
    H: torch.Tensor,
    power,
    noise_var,
    *,
    iters: int = 3000,
    tol: float = 1e-6,
    return_powers: bool = False,
):
    """Sum capacity of the MISO broadcast channel (dirty-paper coding limit), bits/s/Hz.

    By BC-MAC duality (Vishwanath-Jindal-Goldsmith 2003) it equals the sum capacity of the dual
    uplink with a sum-power constraint,
    ``C = max_{q >= 0, sum q = P} log2 det(I + sigma^{-2} sum_k q_k h_k h_k^H)``,
    solved for a whole batch by the sum-power iterative water-filling of Jindal et al.
    (2005, Algorithm 1 with the 1/K averaging that guarantees convergence). The objective is
    concave in ``q`` with gradient ``a_k = h_k^H S^{-1} h_k``
    (``S = sigma^2 I + sum_j q_j h_j h_j^H``), so ``gap = P max_k a_k - sum_k a_k q_k`` bounds
    the distance to the optimum; a sample stops when ``gap <= tol * min(1, sum_k a_k q_k)``
    (bits; relative to the capacity below 1 bit, so a 0-ish SNR gets a relative accuracy), or
    at the rounding level of the dtype. The returned value is achieved by the final ``q`` (a
    lower bound within the gap of the capacity), computed as ``sum log1p`` of eigenvalues.
    Chapter: *Multi-user downlink beamforming*.

    Parameters
    ----------
    H : torch.Tensor
        Complex ``(B, K, M)``, row ``k`` is ``h_k^H``.
    power, noise_var : float or torch.Tensor
        P > 0 and sigma^2 > 0, scalars or ``(B,)``.
    iters : int
        Maximum number of water-filling iterations.
    tol : float
        Stopping tolerance on the duality gap in bits.
    return_powers : bool
        Also return the uplink powers ``q`` ``(B, K)`` and the final gaps ``(B,)`` in bits.

    Returns
    -------
    torch.Tensor or tuple
        Real ``(B,)``; with ``return_powers`` ``(C, q, gap)``.

    Raises
    ------
    ValueError
        If ``S`` is numerically singular in the dtype of ``H`` (``power / noise_var`` too
        large for this precision, e.g. 1e30 with fewer users than antennas, or 1e10 in
        complex64 with ``K < M``).
    """
    _check_H(H)
    B, K, M = H.shape
    P = _scalar(power, "power", H)
    s2 = _scalar(noise_var, "noise_var", H)
    iters = check_positive_int(iters, "iters")
    if isinstance(tol, bool) or not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    rdt = _real_dtype(H)
    eps, tiny = torch.finfo(rdt).eps, torch.finfo(rdt).tiny
    Hn = H / torch.sqrt(s2).to(H.dtype)[:, None, None]  # unit noise
    if not bool(torch.isfinite(Hn).all()):
        raise ValueError(
            f"power / noise_var too large for {H.dtype}: H / sqrt(noise_var) overflows"
        )
    Hh = Hn.mH
    eye = torch.eye(M, dtype=H.dtype, device=H.device)
    q = (P / K)[:, None].expand(B, K).clone()

    def grad(q, Hn, Hh):
        S = eye + (Hh * q.to(H.dtype)[:, None, :]) @ Hn
        L, info = torch.linalg.cholesky_ex(S)
        X = torch.cholesky_solve(Hh, L)  # S^{-1} h_k in columns
        a = (Hn * X.mT).sum(-1).real  # h_k^H S^{-1} h_k
        return a, info

    def gaps(a, q, P):
        qa = (a * q).sum(-1)
        gap = (P * a.max(-1).values - qa) / _LN2
        floor = 4 * K * eps * P * a.max(-1).values / _LN2  # rounding level of the gap
        return gap, torch.maximum(tol * (qa / _LN2).clamp(max=1.0), floor)

    def singular():
        return ValueError(
            "dpc_sum_capacity: I + sum_k q_k h_k h_k^H / noise_var is numerically singular in "
            f"{H.dtype}: power / noise_var is too large for this precision (use complex128 or a "
            "lower SNR)"
        )

    idx = torch.arange(B, device=H.device)
    for _ in range(iters):
        a, info = grad(q[idx], Hn[idx], Hh[idx])
        gap, thr = gaps(a, q[idx], P[idx])
        # a failed factorisation stops its sample, and the final check below reports it
        go = (gap > thr) & (info == 0) & torch.isfinite(a).all(-1)
        sel = torch.nonzero(go).flatten()  # the one synchronisation per iteration
        if sel.numel() == 0:
            break
        idx, a = idx[sel], a[sel]
        qi = q[idx]
        g_eff = a / (1.0 - qi * a).clamp_min(tiny)  # leave-one-out gain
        inv_g = torch.where(g_eff > 0, 1.0 / g_eff.clamp_min(tiny), torch.inf)
        q_wf = _waterfill(inv_g, P[idx])
        q = q.index_put((idx,), qi + (q_wf - qi) / K)
    a, info = grad(q, Hn, Hh)
    if bool((info > 0).any()) or not bool(torch.isfinite(a).all()):
        raise singular()
    gap, _ = gaps(a, q, P)
    cap = _logdet_bits(Hn, q)
    if return_powers:
        return cap, q, gap.clamp_min(0.0)
    return cap


def dpc_sum_capacity_cvxpy(H: torch.Tensor, power, noise_var) -> torch.Tensor:
    """Reference: the MAC sum-capacity problem as a cvxpy log-det program, one sample at a time.

    The complex Hermitian ``X = I + sigma^{-2} sum_k q_k h_k h_k^H`` is replaced by its real
    embedding ``[[Re X, -Im X], [Im X, Re X]]``, whose log-det is ``2 log det X``. Slow
    (tens of milliseconds per channel); use it to check :func:`~lib.precoding.dpc_sum_capacity`. The
    interior-point solver fails or is inaccurate beyond an SNR of about 1e10.

    Parameters
    ----------
    H : torch.Tensor
        Complex ``(B, K, M)``.
    power, noise_var : float or torch.Tensor
        P > 0 and sigma^2 > 0, scalars or ``(B,)``.

    Returns
    -------
    torch.Tensor
        Real ``(B,)`` in bits/s/Hz, on the device of ``H``.

    Raises
    ------
    RuntimeError
        If the solver does not report an optimal solution.
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
    return torch.as_tensor(out, dtype=_real_dtype(H), device=H.device)
