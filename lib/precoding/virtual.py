"""Minimum power with positive semidefinite "virtual channels" (Schynol & Pesavento, Sec. 4.1).

The learned hybrid beamformer replaces, in the digital sub-problem, the estimated channel by PSD
virtual channels with instance-adaptive error terms (their eqs. (25)-(27)), separately for the
wanted (``j = k``) and the interfering (``j != k``) signals.
:func:`~lib.precoding.virtual_channels` builds

.. math::
    R_{kj} = a_{kj} \\hat h_k \\hat h_k^H + b_{kj} \\frac{\\|\\hat h_k\\|^2}{M} I_M,
    \\qquad a_{kj}, b_{kj} \\ge 0,

(``a``: error components proportional to the quadratic forms ``|h_k^H w_j|^2`` of eq. (24),
i.e. the correlation of beams and estimates; ``b``: components independent of the spatial
structure, proportional to the gain). Eq. (27) is read from the paper's description; any
affine reparametrisation (``1 + a``, ``||h||^2`` instead of ``||h||^2 / M``) is this one with
rescaled coefficients. :func:`~lib.precoding.min_power_psd` solves, for general per-pair Hermitian
PSD ``R_kj``
(eqs. (25)-(26), (31)-(32)),

.. math::
    \\min_{w} \\sum_k \\|w_k\\|^2 \\quad \\text{s.t.} \\quad
    w_k^H R_{kk} w_k \\ge \\gamma_k \\Big(\\sum_{j \\ne k} w_j^H R_{kj} w_j + \\sigma^2\\Big).

Duality (SDP relaxation (37), ``W_k = w_k w_k^H``). The Lagrangian of (37) with multipliers
``lambda_k`` gives the dual ``max sigma^2 sum_k lambda_k`` s.t.
``I + sum_{i != k} lambda_i R_ik - (lambda_k / gamma_k) R_kk >= 0`` (their eq. (38)): in the
virtual uplink, receiver ``k`` sees user ``i`` through ``R_ik`` (the downlink matrix of user ``i``
for the beam of ``k``, transposed pair index). With ``A_k = I + sum_{i != k} lambda_i R_ik`` the
optimal receive filter ``u_k`` is the principal generalised eigenvector of ``(R_kk, A_k)`` and
the minimal uplink powers solve the fixed point (Schubert & Boche 2004)

.. math::
    \\lambda_k = \\gamma_k / \\lambda_{\\max}\\big(A_k(\\lambda)^{-1} R_{kk}\\big).

The downlink powers solve ``(I - D Psi) p = sigma^2 D 1`` (their eq. (32)) with
``Psi_kj = u_j^H R_kj u_j`` (``j != k``) and ``D = diag(gamma_k / u_k^H R_kk u_k)``; the uplink
powers for fixed filters solve ``(I - D Psi^T) lambda = D 1``. For ``R_kj = h_k h_k^H`` this is
:func:`~lib.precoding.min_power_duality`.

Implicit gradient (their eqs. (41)-(46), Theorem 4.2, extended to PSD ``R_kj``). In unit noise,
with ``S_k = I + sum_i lambda_i R_ik``, the rank-one KKT system of Lemma 4.1 is

.. math::
    e_k &= \\big(S_k - (1 + \\tfrac{1}{\\gamma_k})\\lambda_k R_{kk}\\big) w_k
           + j \\rho_k w_k \\operatorname{Im}(c_k^H w_k) = 0, \\\\
    s_k &= \\tfrac{1}{\\gamma_k} w_k^H R_{kk} w_k - \\sum_{j \\ne k} w_j^H R_{kj} w_j - 1 = 0,

where the phase term (``rho_k = 1 / (c_k^H w_k)`` held constant) fixes ``c_k^H w_k > 0`` for a
reference vector ``c_k`` exactly as :mod:`lib.precoding.implicit` does with ``c_k = h_k``; the
system is square, ``n = 2MK + K`` real unknowns ``(Re w_k, Im w_k, lambda)``. Its Jacobian has
the blocks ``d e_k/d w_k = Y_k + j rho_k w_k Im(c_k^H .)``, ``Y_k = S_k - (1 + 1/gamma_k)
lambda_k R_kk``; ``d e_k/d lambda_i = R_ik w_k`` (``i != k``), ``-R_kk w_k / gamma_k``
(``i = k``); ``d s_k/d w_j = 2 c_kj Re(w_j^H R_kj .)`` (``c_kk = 1/gamma_k``, ``c_kj = -1``).
The backward pass solves ``J^T mu = g`` (batched) and returns ``-mu^T dF/d(R, gamma, c)`` by
autograd of ``mu . F`` (their eq. (48)); a, b and ``hat h`` get their gradients through the
differentiable :func:`~lib.precoding.virtual_channels`. Infeasible samples: ``feasible = False``,
``V = 0``,
``+inf`` powers and a zero gradient (as in :mod:`lib.precoding.power_min`), never NaN.
Chapter: *Learned hybrid beamforming*.
"""

from __future__ import annotations

import math

import torch

from lib.core.checks import _real_dtype, check_complex, check_real, per_sample, per_user
from lib.precoding.common import _abs2, _check_H
from lib.precoding.hybrid import _solver_settings
from lib.precoding.implicit import ImplicitMinPowerResult, _real_block, _to_real
from lib.precoding.power_min import CHECK_EVERY, TOL_FACTOR, sinr_rtol

__all__ = ["virtual_channels", "min_power_psd", "virtual_min_power"]


# --------------------------------------------------------------------------- #
# Virtual channels and input checks
# --------------------------------------------------------------------------- #
def virtual_channels(H_hat: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSD virtual channels ``R_kj = a_kj hh_k hh_k^H + b_kj ||hh_k||^2 / M I`` (eq. (27)).

    Differentiable in all arguments (plain torch).

    Parameters
    ----------
    H_hat : torch.Tensor
        ``(B, K, M)`` complex channel estimates, row ``k`` is ``hh_k^H``.
    a, b : torch.Tensor
        ``(B, K, K)`` real coefficients ``>= 0`` (finite), of the real dtype and device of
        ``H_hat``; ``[:, k, k]`` scale the wanted signal of user ``k``, ``[:, k, j]`` the
        interference of beam ``j`` at user ``k``.

    Returns
    -------
    torch.Tensor
        ``(B, K, K, M, M)`` Hermitian PSD ``R`` with ``R[:, k, j] = R_kj``.

    Raises
    ------
    TypeError
        Non-tensor, real ``H_hat``, complex or wrong-dtype coefficients.
    ValueError
        Wrong shapes or devices, non-finite or negative coefficients.
    """
    _check_H(H_hat, "H_hat")
    B, K, M = H_hat.shape
    rdt = _real_dtype(H_hat)
    for name, x in (("a", a), ("b", b)):
        check_real(x, name, shape=(B, K, K), dtype=rdt, device=H_hat.device)
        if bool((x < 0).any()):
            raise ValueError(f"{name} must be >= 0 (virtual channels are PSD)")
    h = H_hat.conj()  # row k is hh_k
    outer = h[:, :, :, None] * H_hat[:, :, None, :]  # hh_k hh_k^H, (B, K, M, M)
    gain = _abs2(H_hat).sum(-1) / M  # (B, K)
    eye = torch.eye(M, dtype=H_hat.dtype, device=H_hat.device)
    ac, bc = a.to(H_hat.dtype), (b * gain[:, :, None]).to(H_hat.dtype)
    return ac[..., None, None] * outer[:, :, None] + bc[..., None, None] * eye


def _check_R(R) -> torch.Tensor:
    check_complex(R, "R", shape=("batch", "users", "users", "antennas", "antennas"))
    B, K, K2, M, M2 = R.shape
    if K != K2 or M != M2 or 0 in R.shape:
        raise ValueError(f"R must have non-empty shape (B, K, K, M, M), got {tuple(R.shape)}")
    tol = math.sqrt(torch.finfo(R.dtype).eps)
    scale = R.abs().amax(dim=(-2, -1)).clamp_min(torch.finfo(_real_dtype(R)).tiny)
    if bool(((R - R.mH).abs().amax(dim=(-2, -1)) > tol * scale).any()):
        raise ValueError("R must be Hermitian: R[:, k, j] = R[:, k, j]^H (relative sqrt(eps))")
    ev = torch.linalg.eigvalsh(0.5 * (R + R.mH))
    if bool((ev[..., 0] < -tol * ev.abs().amax(-1)).any()):
        raise ValueError("R must be positive semidefinite (every R[:, k, j], relative sqrt(eps))")
    return R


def _diag_pairs(R):
    """``R_kk`` of ``R`` ``(B, K, K, ...)`` as ``(B, K, ...)``."""
    return torch.diagonal(R, dim1=1, dim2=2).movedim(-1, 1)


# --------------------------------------------------------------------------- #
# Forward: virtual-uplink fixed point
# --------------------------------------------------------------------------- #
def _principal(A, Rkk):
    """Principal generalised eigenpair of ``(R_kk, A_k)``, ``A_k`` HPD: ``(mu, U, ok)``.

    ``mu`` ``(B, K)`` = ``lambda_max(A_k^{-1} R_kk)``, ``U`` ``(B, K, M)`` unit-norm rows ``u_k``,
    ``ok`` ``(B,)`` False where a Cholesky factorisation failed.
    """
    M = A.shape[-1]
    eye = torch.eye(M, dtype=A.dtype, device=A.device)
    L, info = torch.linalg.cholesky_ex(A)
    L = torch.where((info == 0)[..., None, None], L, eye)
    X = torch.linalg.solve_triangular(L, Rkk, upper=False)  # L^{-1} R_kk
    C = torch.linalg.solve_triangular(L, X.mH, upper=False)  # L^{-1} R_kk L^{-H}
    mu, Y = torch.linalg.eigh(0.5 * (C + C.mH))
    u = torch.linalg.solve_triangular(L.mH, Y[..., -1:], upper=True)[..., 0]
    nrm = u.norm(dim=-1).clamp_min(torch.finfo(mu.dtype).tiny)
    return mu[..., -1], u / nrm.to(u.dtype)[..., None], (info == 0).all(-1)


def _quad(R, U):
    """``Psi[b, k, j] = u_j^H R_kj u_j`` for rows ``U`` ``(B, K, M)`` (real ``(B, K, K)``)."""
    return torch.einsum("bjm,bkjmn,bjn->bkj", U.conj(), R, U).real


def _powers(R, U, gam, uplink: bool):
    """Powers meeting the targets with equality for filters ``U``: ``(I - D Psi[^T]) p = D 1``.

    Returns ``(p, ok)``, ``ok`` False where singular or ``p`` not positive (then ``p = 0``).
    """
    K = U.shape[1]
    Q = _quad(R, U)
    eye = torch.eye(K, dtype=gam.dtype, device=gam.device)
    D = gam / torch.diagonal(Q, dim1=-2, dim2=-1).clamp_min(torch.finfo(gam.dtype).tiny)
    Psi = Q * (1.0 - eye)
    p, info = torch.linalg.solve_ex(eye - D[:, :, None] * (Psi.mT if uplink else Psi), D)
    ok = (info == 0) & torch.isfinite(p).all(-1) & (p > 0).all(-1)
    return torch.where(ok[:, None], p, torch.zeros_like(p)), ok


def _certified(R, V, gam, rtol):
    """The certificate of :func:`~lib.precoding.power_min._certified` for PSD ``R`` (unit noise)."""
    Q = _quad(R, V.mT)  # w_j^H R_kj w_j
    sig = torch.diagonal(Q, dim1=-2, dim2=-1)
    interference = Q.sum(-1) - sig
    met = sig >= gam * (1.0 - rtol) * (interference + 1.0)
    return (met & (rtol * (1.0 + interference) < 1.0)).all(-1)


def _psd_setup(R, gam, max_power_ratio):
    """``(Rkk, usable, bound)``: wanted-signal matrices, samples with ``R_kk != 0`` for all
    ``k``, and the divergence bound on ``sum_k lambda_k``."""
    tiny = torch.finfo(_real_dtype(R)).tiny
    Rkk = _diag_pairs(R)
    top = torch.linalg.eigvalsh(Rkk)[..., -1]  # lambda_max(R_kk)
    usable = (top > 0).all(-1)
    bound = max_power_ratio * (gam / top.clamp_min(tiny)).sum(-1)
    return Rkk, usable, bound


def _filters(R, Rkk, q):
    """Principal generalised eigenpairs of ``(R_kk, I + sum_{i != k} q_i R_ik)``."""
    eye = torch.eye(R.shape[-1], dtype=R.dtype, device=R.device)
    T = torch.einsum("bi,bikmn->bkmn", q.to(R.dtype), R)  # sum_i q_i R_ik
    return _principal(eye + T - q.to(R.dtype)[..., None, None] * Rkk, Rkk)


def _psd_duality(R, gam, iters: int, tol: float, max_power_ratio: float):
    """Fixed point on a normalised problem (unit noise): ``(V, p, feasible)``, all finite.

    Each iteration takes the power-iteration step ``lambda_k = gamma_k / mu_k`` or,
    when solvable with a positive solution, the exact uplink powers for the current filters (the
    alternating step of Schubert & Boche), as :func:`~lib.precoding.min_power_duality`.

    Per-sample convergence: the working batch holds only the samples still iterating; converged
    and diverged ones leave it (index compaction, one host synchronisation per iteration), so a
    few stalled samples cost their own iterations, not those of the whole batch. Every sample
    takes exactly the steps it would take in the whole-batch loop (:func:`_psd_duality_full`).
    """
    B, K = gam.shape
    rdt = _real_dtype(R)
    tiny = torch.finfo(rdt).tiny
    Rkk, usable, bound = _psd_setup(R, gam, max_power_ratio)
    q = torch.zeros(B, K, dtype=rdt, device=R.device)
    diverged = torch.zeros_like(usable)
    act = usable.nonzero()[:, 0]  # global indices of the working batch
    Ra, Rkka, ga, ba = R[act], Rkk[act], gam[act], bound[act]
    qa = q[act]
    for _ in range(iters):
        if act.numel() == 0:
            break
        mu, U, okS = _filters(Ra, Rkka, qa)
        q_fp = ga / mu.clamp_min(tiny)
        q_ls, ok = _powers(Ra, U, ga, uplink=True)
        q_new = torch.where(ok[:, None], q_ls, q_fp)
        bad = ~okS | ~torch.isfinite(q_new).all(-1) | (q_new.sum(-1) > ba)
        conv = (q_new - qa).abs().amax(-1) <= tol * q_new.abs().amax(-1).clamp_min(tiny)
        qa = torch.where(bad[:, None], qa, q_new)
        leave = bad | conv
        if bool(leave.any()):  # one host synchronisation per iteration
            q[act] = qa
            diverged[act[bad]] = True
            keep = (~leave).nonzero()[:, 0]
            act, Ra, Rkka, ga, ba, qa = (x[keep] for x in (act, Ra, Rkka, ga, ba, qa))
    if act.numel():
        q[act] = qa
    _, U, okS = _filters(R, Rkk, q)
    p, ok = _powers(R, U, gam, uplink=False)
    V = U.mT * p.sqrt().to(R.dtype)[:, None, :]
    feasible = usable & okS & ok & ~diverged & _certified(R, V, gam, sinr_rtol(rdt))
    return V, p, feasible


def _psd_duality_full(R, gam, iters: int, tol: float, max_power_ratio: float):
    """Reference fixed point iterating the whole batch to convergence (or ``iters``): the
    previous implementation of :func:`_psd_duality`, kept for tests and
    ``benchmarks/bench_virtual.py``. Same results within the solver tolerance.

    Each iteration takes the power-iteration step ``lambda_k = gamma_k / mu_k`` or,
    when solvable with a positive solution, the exact uplink powers for the current filters (the
    alternating step of Schubert & Boche), as :func:`~lib.precoding.min_power_duality`.
    """
    B, K, _, M, _ = R.shape
    rdt = _real_dtype(R)
    tiny = torch.finfo(rdt).tiny
    eye = torch.eye(M, dtype=R.dtype, device=R.device)
    Rkk = _diag_pairs(R)
    top = torch.linalg.eigvalsh(Rkk)[..., -1]  # lambda_max(R_kk)
    usable = (top > 0).all(-1)
    bound = max_power_ratio * (gam / top.clamp_min(tiny)).sum(-1)

    def filters(q):
        T = torch.einsum("bi,bikmn->bkmn", q.to(R.dtype), R)  # sum_i q_i R_ik
        return _principal(eye + T - q.to(R.dtype)[..., None, None] * Rkk, Rkk)

    q = torch.zeros(B, K, dtype=rdt, device=R.device)
    done, diverged = ~usable, torch.zeros_like(usable)
    for it in range(iters):
        mu, U, okS = filters(q)
        q_fp = gam / mu.clamp_min(tiny)
        q_ls, ok = _powers(R, U, gam, uplink=True)
        q_new = torch.where(ok[:, None], q_ls, q_fp)
        frozen = done | diverged
        q_new = torch.where(frozen[:, None], q, q_new)
        bad = ~okS | ~torch.isfinite(q_new).all(-1) | (q_new.sum(-1) > bound)
        diverged = diverged | (bad & ~frozen)
        conv = (q_new - q).abs().amax(-1) <= tol * q_new.abs().amax(-1).clamp_min(tiny)
        q = torch.where(diverged[:, None], q, q_new)
        done = done | (conv & ~diverged)
        if (it + 1) % CHECK_EVERY == 0 and bool((done | diverged).all()):
            break
    _, U, okS = filters(q)
    p, ok = _powers(R, U, gam, uplink=False)
    V = U.mT * p.sqrt().to(R.dtype)[:, None, :]
    feasible = usable & okS & ok & ~diverged & _certified(R, V, gam, sinr_rtol(rdt))
    return V, p, feasible


# --------------------------------------------------------------------------- #
# The reduced real system (41)-(46) for PSD R and its Jacobian
# --------------------------------------------------------------------------- #
def _residual(W, lam, R, gam, C, rho):
    """``F = [Re e, Im e, s]`` ``(B, 2MK + K)`` (unit noise); ``C`` ``(B, K, M)`` rows ``c_k``."""
    Wt = W.mT  # rows w_k
    RW = torch.einsum("bikmn,bkn->bikm", R, Wt)  # RW[:, i, k] = R_ik w_k
    a = (C.conj() * Wt).sum(-1)  # c_k^H w_k
    beta = ((1.0 + 1.0 / gam) * lam).to(W.dtype)
    e = Wt + torch.einsum("bi,bikm->bkm", lam.to(W.dtype), RW) - beta[..., None] * _diag_pairs(RW)
    e = e + 1j * Wt * (rho * a.imag).to(W.dtype)[..., None]
    Q = torch.einsum("bjm,bkjm->bkj", Wt.conj(), RW).real  # w_j^H R_kj w_j
    sig = torch.diagonal(Q, dim1=-2, dim2=-1)
    s = sig / gam - (Q.sum(-1) - sig) - 1.0
    return torch.cat([_to_real(e.mT), s], dim=-1)


def _jacobian(W, lam, R, gam, C, rho):
    """Analytic ``dF/dx`` ``(B, n, n)``, ``x = [Re w_k, Im w_k]_k ++ lambda``, ``n = 2MK + K``."""
    B, K, _, M, _ = R.shape
    rdt, dev = lam.dtype, R.device
    Wt = W.mT
    RW = torch.einsum("bikmn,bkn->bikm", R, Wt)
    eyeK = torch.eye(K, dtype=rdt, device=dev)
    beta = ((1.0 + 1.0 / gam) * lam).to(R.dtype)
    T = torch.einsum("bi,bikmn->bkmn", lam.to(R.dtype), R)
    Y = torch.eye(M, dtype=R.dtype, device=dev) + T - beta[..., None, None] * _diag_pairs(R)
    col = torch.cat([-Wt.imag, Wt.real], dim=-1)  # j w_k in real layout
    row = torch.cat([-C.imag, C.real], dim=-1)  # delta -> Im(c_k^H delta)
    Jww = _real_block(Y) + rho[:, :, None, None] * col[..., :, None] * row[..., None, :]
    f = 1.0 - eyeK * (1.0 + 1.0 / gam[:, :, None])  # f_ki: 1 (i != k), -1/gamma_k (i = k)
    Z = RW.permute(0, 2, 3, 1) * f[:, :, None, :].to(R.dtype)  # (B, K(k), M, K(i))
    Jwl = torch.cat([Z.real, Z.imag], dim=2).reshape(B, 2 * M * K, K)
    # d s_k / d w_j: RW[:, k, j] = R_kj w_j, (B, K(k), K(j), M)
    Jsw = (-2.0 * f)[..., None] * torch.cat([RW.real, RW.imag], dim=-1)
    Jsw = Jsw.reshape(B, K, 2 * M * K)
    blocks = torch.zeros(B, K, K, 2 * M, 2 * M, dtype=rdt, device=dev)
    ar = torch.arange(K, device=dev)
    blocks[:, ar, ar] = Jww
    top_ = torch.cat([blocks.permute(0, 1, 3, 2, 4).reshape(B, 2 * M * K, 2 * M * K), Jwl], -1)
    bottom = torch.cat([Jsw, torch.zeros(B, K, K, dtype=rdt, device=dev)], dim=-1)
    return torch.cat([top_, bottom], dim=-2)


class _ImplicitPSD(torch.autograd.Function):
    """Normalised solution ``(W, lambda, feasible)`` with the implicit backward."""

    @staticmethod
    def forward(ctx, R, gam, C, iters, tol, max_power_ratio):
        with torch.no_grad():
            V, p, feas = _psd_duality(R, gam, iters, tol, max_power_ratio)
            tiny = torch.finfo(p.dtype).tiny
            U = V / p.sqrt().clamp_min(tiny).to(V.dtype)[:, None, :]
            lam, ok = _powers(R, U.mT, gam, uplink=True)
            a = (C.conj() * V.mT).sum(-1)
            feas = feas & ok & (a.abs() > 0).all(-1)
            W = V * (a.conj() / a.abs().clamp_min(tiny))[:, None, :]  # c_k^H w_k > 0
            W = torch.where(feas[:, None, None], W, torch.zeros_like(W))
            lam = torch.where(feas[:, None], lam, torch.zeros_like(lam))
        ctx.save_for_backward(R, gam, C, W, lam, feas)
        ctx.mark_non_differentiable(feas)
        return W, lam, feas

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gW, glam, _gfeas):
        R, gam, C, W, lam, feas = ctx.saved_tensors
        n = W.shape[1] * W.shape[2] * 2 + lam.shape[1]
        a = (C.conj() * W.mT).sum(-1).real
        rho = torch.where(feas[:, None], 1.0 / a.clamp_min(torch.finfo(a.dtype).tiny), 1.0)
        gW = torch.zeros_like(W) if gW is None else gW
        glam = torch.zeros_like(lam) if glam is None else glam
        rhs = torch.cat([_to_real(gW), glam], dim=-1)
        J = _jacobian(W, lam, R, gam, C, rho)
        J = torch.where(feas[:, None, None], J, torch.eye(n, dtype=J.dtype, device=J.device))
        mu, info = torch.linalg.solve_ex(J.mT, rhs)
        good = feas & (info == 0) & torch.isfinite(mu).all(-1)
        mu = torch.where(good[:, None], mu, torch.zeros_like(mu))
        need = ctx.needs_input_grad[:3]
        with torch.enable_grad():
            ins = [x.detach().clone().requires_grad_(bool(r)) for x, r in zip((R, gam, C), need)]
            gsafe = torch.where(feas[:, None], ins[1], 1.0)
            F = _residual(W, lam, ins[0], gsafe, ins[2], rho)
            wrt = [x for x, r in zip(ins, need) if r]
            grads = iter(torch.autograd.grad(-(F * mu).sum(), wrt)) if wrt else iter(())
        out = []
        for r in need:
            g = next(grads) if r else None
            if g is not None:
                g = torch.where(good.view(-1, *([1] * (g.dim() - 1))), g, torch.zeros_like(g))
            out.append(g)
        return (*out, None, None, None)


# --------------------------------------------------------------------------- #
# Entry points
# --------------------------------------------------------------------------- #
def _solve(R, gam, s2, C, kw):
    """Rescale to unit noise and unit mean ``tr R_kk``, solve, undo the scaling."""
    rdt = _real_dtype(R)
    tol = kw["tol"] if kw["tol"] is not None else TOL_FACTOR * torch.finfo(rdt).eps
    R = 0.5 * (R + R.mH)  # exactly Hermitian; the gradient is the Hermitian part
    with torch.no_grad():  # any fixed positive scale is exact (scale invariance)
        m = R.abs().amax(dim=(1, 2, 3, 4))
        m = torch.where(m > 0, m, torch.ones_like(m))
        tr = torch.diagonal(_diag_pairs(R), dim1=-2, dim2=-1).real.sum(-1).mean(-1) / m
        scale = torch.where(tr > 0, m * tr, m)
    Rt = R / scale.to(R.dtype)[:, None, None, None, None]
    if C is None:  # default reference: the column of R_kk with the largest diagonal entry
        Rkk = _diag_pairs(Rt)
        idx = torch.diagonal(Rkk, dim1=-2, dim2=-1).real.argmax(-1)  # (B, K)
        M = Rkk.shape[-1]
        C = torch.gather(Rkk, -1, idx[:, :, None, None].expand(-1, -1, M, 1))[..., 0]
    W, lam, feas = _ImplicitPSD.apply(Rt, gam, C, kw["iters"], tol, kw["max_power_ratio"])
    c2 = s2 / scale
    V = W * c2.sqrt().to(R.dtype)[:, None, None]
    inf = torch.full_like(lam, torch.inf)
    p = torch.where(feas[:, None], _abs2(V).sum(-2), inf)
    q = torch.where(feas[:, None], lam * c2[:, None], inf)
    return ImplicitMinPowerResult(V, p, q, feas)


def min_power_psd(
    R: torch.Tensor, sinr_targets, noise_var, *, phase_ref=None, **solver_kw
) -> ImplicitMinPowerResult:
    """Minimum sum power with per-pair PSD channels ``R_kj``, differentiable (implicit).

    Solves ``min sum_k ||w_k||^2`` s.t. ``w_k^H R_kk w_k >= gamma_k (sum_{j != k} w_j^H R_kj w_j
    + sigma^2)`` (Schynol & Pesavento, eqs. (25)-(26), (31)-(32)) by the batched virtual-uplink
    fixed point ``lambda_k = gamma_k / lambda_max((I + sum_{i != k} lambda_i R_ik)^{-1} R_kk)``,
    principal generalised eigenvector filters and the downlink power system; gradients by the
    implicit function theorem on the reduced system (41)-(46), one batched ``(2MK + K)``-square
    solve (see the module docstring). Every sample is rescaled to unit noise and unit mean
    ``tr R_kk``; feasibility is certified as in :func:`~lib.precoding.min_power_duality`.

    Parameters
    ----------
    R : torch.Tensor
        ``(B, K, K, M, M)`` complex64/complex128, ``R[:, k, j] = R_kj`` Hermitian PSD (to a
        relative ``sqrt(eps)``; the Hermitian part is used), finite.
    sinr_targets : float or torch.Tensor
        ``gamma_k`` (linear): scalar, ``(K,)`` or ``(B, K)``, finite and ``> 0``.
    noise_var : float or torch.Tensor
        ``sigma^2``: scalar or ``(B,)``, finite and ``> 0``.
    phase_ref : torch.Tensor, optional
        ``(B, K, M)`` rows ``c_k``: the returned beams satisfy ``c_k^H w_k > 0`` (e.g. the
        estimate ``hh_k``); default the column of ``R_kk`` with the largest diagonal entry.
    **solver_kw
        ``iters``, ``tol``, ``max_power_ratio`` of :func:`~lib.precoding.min_power_duality`.

    Returns
    -------
    ImplicitMinPowerResult
        ``V`` ``(B, M, K)``, ``powers`` and ``uplink_powers`` (``lambda sigma^2``) ``(B, K)``,
        ``feasible`` ``(B,)``; ``V = 0``, ``+inf`` powers and zero gradient where infeasible.
        Gradients flow to ``R``, ``sinr_targets``, ``noise_var`` and ``phase_ref``.

    Raises
    ------
    TypeError
        A non-tensor or real ``R`` / ``phase_ref``, or an unknown solver setting.
    ValueError
        Wrong shapes, non-Hermitian or indefinite ``R``, non-finite values, targets or noise not
        ``> 0``, or a solver setting out of range.
    """
    _check_R(R)
    B, K, _, M, _ = R.shape
    kw = _solver_settings(solver_kw)
    gam = per_user(sinr_targets, "sinr_targets", B, K, dtype=_real_dtype(R), device=R.device)
    s2 = per_sample(noise_var, "noise_var", B, dtype=_real_dtype(R), device=R.device)
    if phase_ref is not None:
        check_complex(phase_ref, "phase_ref", shape=(B, K, M), dtype=R.dtype, device=R.device)
    return _solve(R, gam, s2, phase_ref, kw)


def virtual_min_power(
    H_hat: torch.Tensor, a: torch.Tensor, b: torch.Tensor, sinr_targets, noise_var, **solver_kw
) -> ImplicitMinPowerResult:
    """Minimum power with the virtual channels of eq. (27), differentiable in ``a``, ``b``, ``hh``.

    :func:`~lib.precoding.min_power_psd` on :func:`~lib.precoding.virtual_channels`
    ``(H_hat, a, b)`` with the phase
    convention ``hh_k^H w_k > 0`` (that of :func:`~lib.precoding.min_power_implicit`: with
    ``a = 1``, ``b = 0`` the two agree).

    Parameters
    ----------
    H_hat : torch.Tensor
        ``(B, K, M)`` complex estimates (row ``k`` is ``hh_k^H``).
    a, b : torch.Tensor
        ``(B, K, K)`` real coefficients ``>= 0``.
    sinr_targets, noise_var, **solver_kw
        As in :func:`~lib.precoding.min_power_psd`.

    Returns
    -------
    ImplicitMinPowerResult
        As in :func:`~lib.precoding.min_power_psd`.
    """
    R = virtual_channels(H_hat, a, b)
    return min_power_psd(R, sinr_targets, noise_var, phase_ref=H_hat.conj(), **solver_kw)
