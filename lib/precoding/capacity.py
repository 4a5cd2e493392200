"""Sum capacity of the Gaussian MISO broadcast channel (dirty-paper coding limit).

BC-MAC duality and sum-power iterative water-filling (Jindal et al. 2005), batched in torch;
:func:`dpc_sum_capacity_cvxpy` is the convex-program reference. Chapter: *Multi-user downlink
beamforming*.
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
