"""Implicit gradient of the SINR-constrained minimum-power problem (Schynol & Pesavento, Sec. 4.3).

The digital sub-problem of the learned hybrid beamformer (their eqs. (12), (31)) is solved by
the virtual-uplink fixed point of :func:`~lib.precoding.min_power_duality`; to train a network
that produces its (effective or virtual) channels, the solution must be differentiated w.r.t.
the channels. Unrolling hundreds of fixed-point iterations is wasteful. The paper instead
differentiates the optimality conditions at the solution (implicit function theorem; their
Theorem 4.2), and so does :func:`~lib.precoding.min_power_implicit`: the forward pass runs the
batched duality solver without a graph, the backward pass solves one batched linear system.

Conditions (their eqs. (37)-(42), derived here for channels ``R_k = h_k h_k^H``). In units of
unit noise (every sample is rescaled first, as in :mod:`lib.precoding.power_min`), the SDP
relaxation (37) has the dual variables ``lambda_k`` (the virtual uplink powers ``q_k``) and the
KKT conditions with rank-one ``W_k = w_k w_k^H`` (Lemma 4.1) are, with
``S = I + sum_j lambda_j h_j h_j^H``,

.. math::
    e_k &= \\Big(S - \\big(1 + \\tfrac{1}{\\gamma_k}\\big)\\lambda_k h_k h_k^H\\Big) w_k = 0
    \\quad \\text{(41)}, \\\\
    s_k &= \\tfrac{1}{\\gamma_k}|h_k^H w_k|^2 - \\sum_{j \\ne k} |h_k^H w_j|^2 - 1 = 0
    \\quad \\text{(42)},

where ``w_k`` are the downlink beamformers (power included). (41) gives
``w_k ∝ S^{-1} h_k`` (the MMSE filter of eq. (19)) and
``lambda_k h_k^H S^{-1} h_k = gamma_k / (1 + gamma_k)`` (the fixed point (21)).

Reduction (Theorem 4.2). As a real system in ``(Re w, Im w, lambda)`` (``2MK + K`` unknowns
and equations) the Jacobian of (41)-(42) is singular for two reasons: ``w_k -> e^{j phi} w_k``
solves it for every phase (a null direction ``j w_k``), and ``Im(w_k^H e_k) = 0`` holds
identically because the matrix in (41) is Hermitian (a redundant real equation). The paper
fixes one entry of ``w_k`` real (their eq. (43); which entry is not essential) and
drops the imaginary part of the same equation (eqs. (44)-(46)). Here the redundant direction
is replaced by the phase condition
``Im(h_k^H w_k) = 0`` (the convention of :func:`~lib.precoding.min_power_socp` and of the MMSE
filter: ``h_k^H w_k > 0``), added to (41) as

.. math::
    \\tilde e_k = e_k + j \\rho_k w_k \\operatorname{Im}(h_k^H w_k), \\qquad
    \\rho_k = 1 / (h_k^H w_k) \\ \\text{(held constant)}.

The added term vanishes at the solution and lies exactly along the missing direction
(``Im(w_k^H j w_k) = ||w_k||^2``), so the system stays square (``n = 2MK + K``, whereas the
KKT system of the SDP (37) has ``K`` Hermitian ``M x M`` unknowns and duals), gives the
same derivative of every phase-invariant quantity as the paper's reduced system (checked with
entry 0 dropped) and needs no entry of ``w_k`` to be nonzero. Its
Jacobian ``J = dF/dx`` (the analogue of their Appendix 7, built in ``_jacobian``) has the
blocks

* ``d e_k / d w_k``: ``delta -> Y_k delta + j rho_k w_k Im(h_k^H delta)``,
  ``Y_k = S - (1 + 1/gamma_k) lambda_k h_k h_k^H`` (real-linear: ``2M x 2M``), no coupling
  ``d e_k / d w_j`` for ``j != k``;
* ``d e_k / d lambda_j = h_j (h_j^H w_k)`` (``j != k``), ``-h_k (h_k^H w_k) / gamma_k``
  (``j = k``);
* ``d s_k / d w_j [delta] = 2 c_kj Re(conj(h_k^H w_j) h_k^H delta)``, ``c_kk = 1/gamma_k``,
  ``c_kj = -1``; ``d s_k / d lambda = 0``.

``J`` is nonsingular at a solution satisfying their Assumption 4.1 (unique solution,
``lambda > 0``; Theorem 4.2); it is checked against ``torch.func.jacrev`` of the residual and the
resulting gradients against finite differences and against cvxpylayers in
``tests/test_implicit_power_min.py``. For an upstream gradient ``g_x`` the backward pass solves
``J^T mu = g_x`` (batched ``torch.linalg.solve``) and returns ``-mu^T dF/dtheta`` for
``theta = (channels, SINR targets)``, evaluated by reverse-mode autodiff of ``mu . F`` (their
eq. (48)). The noise variance enters only through the rescaling
(``q(H, sigma^2) = sigma^2 / s^2 q(H / s, 1)`` for any ``s > 0``), so its gradient is exact by
ordinary autograd. The ``K x K`` system ``lambda_k h_k^H S(lambda)^{-1} h_k = gamma_k / (1 +
gamma_k)`` would suffice for rank-one channels; the beamformer-level system is kept because it
is the paper's and it carries over to PSD virtual channels (their eq. (27)).

Complex gradients follow PyTorch's convention: for a real loss ``L`` and ``z = x + j y`` the
gradient is ``dL/dx + j dL/dy`` (twice the conjugate Wirtinger derivative), so the real layout
``(Re, Im)`` of the system maps to it directly (checked with ``torch.autograd.gradcheck``).

Infeasible samples (diverged fixed point, singular coupling, failed certificate) are reported
with ``feasible = False``, ``V = 0`` and ``+inf`` powers as in
:class:`~lib.precoding.MinPowerResult`, never NaN, and receive a zero gradient, as in the paper
("we set the partial gradient to 0"); so does a sample whose ``J`` is numerically singular.

RF weighting (their eq. (4)): the whitening ``t = L^H v`` (``F^H F = L L^H``) of
:mod:`lib.precoding.hybrid` is differentiable, so :func:`~lib.precoding.hybrid_min_power_implicit`
applies this module to ``H F L^{-H}`` and back-propagates to ``H`` and ``F_RF``.
Chapter: *Hybrid beamforming: arrays and codebooks* (``book/hybrid_arrays_codebooks.ipynb``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lib.core.checks import _real_dtype, per_user
from lib.precoding.common import _abs2, _check_H, _scalar
from lib.precoding.hybrid import (
    HybridResult,
    _check_F,
    _check_weighting,
    _gram_cholesky,
    _solver_settings,
)
from lib.precoding.power_min import TOL_FACTOR, _duality_normalised

__all__ = ["ImplicitMinPowerResult", "min_power_implicit", "hybrid_min_power_implicit"]


class ImplicitMinPowerResult(NamedTuple):
    """Result of :func:`~lib.precoding.min_power_implicit` (differentiable w.r.t. the inputs).

    Attributes
    ----------
    V : torch.Tensor
        ``(B, M, K)`` downlink beamformers ``w_k = sqrt(p_k) u_k`` with ``h_k^H w_k > 0``;
        zero for an infeasible sample.
    powers : torch.Tensor
        ``(B, K)`` downlink powers ``p_k = ||w_k||^2`` (``+inf`` if infeasible).
    uplink_powers : torch.Tensor
        ``(B, K)`` virtual uplink powers ``q_k = sigma^2 lambda_k`` (the dual variables of
        eq. (37); ``sum_k q_k = sum_k p_k``), ``+inf`` if infeasible.
    feasible : torch.Tensor
        ``(B,)`` bool, as in :class:`~lib.precoding.MinPowerResult`.
    """

    V: torch.Tensor
    powers: torch.Tensor
    uplink_powers: torch.Tensor
    feasible: torch.Tensor

    @property
    def total_power(self) -> torch.Tensor:
        """Total transmit power per sample (``+inf`` when infeasible), shape ``(B,)``."""
        return self.powers.sum(-1)

    @property
    def beams(self) -> torch.Tensor:
        """``(B, M, K)`` unit-norm beamformers ``u_k`` (``h_k^H u_k > 0``; zero if infeasible)."""
        p = torch.where(self.feasible[:, None], self.powers, torch.ones_like(self.powers))
        return self.V / p.sqrt().to(self.V.dtype)[:, None, :]


# --------------------------------------------------------------------------- #
# The reduced real-valued system and its Jacobian
# --------------------------------------------------------------------------- #
def _to_real(Z: torch.Tensor) -> torch.Tensor:
    """``(B, M, K)`` complex -> ``(B, 2MK)`` real, user-major: ``[Re z_k, Im z_k]`` per user."""
    B, _, K = Z.shape
    return torch.cat([Z.real, Z.imag], dim=1).mT.reshape(B, -1)


def _from_real(x: torch.Tensor, M: int, K: int) -> torch.Tensor:
    """Inverse of ``_to_real`` (the first ``2MK`` entries of ``x``)."""
    X = x[:, : 2 * M * K].reshape(x.shape[0], K, 2 * M).mT
    return torch.complex(X[:, :M], X[:, M:])


def _residual(W, lam, H, gam, rho):
    """Residual ``F = [Re e~, Im e~, s]`` ``(B, 2MK + K)`` of the reduced system (unit noise).

    ``W`` ``(B, M, K)`` downlink beamformers, ``lam`` ``(B, K)`` uplink powers, ``H``
    ``(B, K, M)`` rows ``h_k^H``, ``gam`` ``(B, K)``, ``rho`` ``(B, K)`` the constant phase
    weight ``1 / (h_k^H w_k)``.
    """
    Hh = H.mH  # column k is h_k
    G = H @ W  # G[k, j] = h_k^H w_j
    a = torch.diagonal(G, dim1=-2, dim2=-1)
    beta = (1.0 + 1.0 / gam) * lam
    SW = W + Hh @ (lam.to(H.dtype)[:, :, None] * G)
    e = SW - Hh * (beta * a)[:, None, :] + 1j * W * (rho * a.imag)[:, None, :]
    G2 = _abs2(G)
    sig = torch.diagonal(G2, dim1=-2, dim2=-1)
    s = sig / gam - (G2.sum(-1) - sig) - 1.0
    return torch.cat([_to_real(e), s], dim=-1)


def _real_block(A: torch.Tensor) -> torch.Tensor:
    """Real ``(..., 2M, 2M)`` matrix of the complex-linear map ``delta -> A delta``."""
    top = torch.cat([A.real, -A.imag], dim=-1)
    return torch.cat([top, torch.cat([A.imag, A.real], dim=-1)], dim=-2)


def _jacobian(W, lam, H, gam, rho):
    """Analytic ``dF/dx`` ``(B, n, n)``, ``x = [Re w_k, Im w_k]_k ++ lambda``, ``n = 2MK + K``."""
    B, K, M = H.shape
    rdt = lam.dtype
    Hh = H.mH
    hk = H.conj()  # (B, K, M): row k is h_k
    G = H @ W
    eyeK = torch.eye(K, dtype=rdt, device=H.device)
    S = torch.eye(M, dtype=H.dtype, device=H.device) + Hh @ (lam.to(H.dtype)[:, :, None] * H)
    beta = (1.0 + 1.0 / gam) * lam
    outer = hk[:, :, :, None] * hk.conj()[:, :, None, :]  # h_k h_k^H, (B, K, M, M)
    Jww = _real_block(S[:, None] - beta.to(H.dtype)[:, :, None, None] * outer)
    wk = W.mT  # (B, K, M)
    col = torch.cat([-wk.imag, wk.real], dim=-1)  # j w_k in real layout
    row = torch.cat([-hk.imag, hk.real], dim=-1)  # delta -> Im(h_k^H delta)
    Jww = Jww + rho[:, :, None, None] * col[..., :, None] * row[..., None, :]
    # d e_k / d lambda_j = f_kj h_j (h_j^H w_k), f_kj = 1 (j != k), -1/gamma_k (j = k)
    f = 1.0 - eyeK * (1.0 + 1.0 / gam[:, :, None])  # (B, K, K)
    C = Hh[:, None, :, :] * (G.mT * f)[:, :, None, :]  # (B, K(k), M, K(j))
    Jwl = torch.cat([C.real, C.imag], dim=2).reshape(B, 2 * M * K, K)
    # d s_k / d w_j = 2 c_kj Re(conj(h_k^H w_j) h_k^H delta), c = -f
    Z = G.conj()[:, :, :, None] * H[:, :, None, :]  # (B, K(k), K(j), M)
    Jsw = (-2.0 * f)[..., None] * torch.cat([Z.real, -Z.imag], dim=-1)
    Jsw = Jsw.reshape(B, K, 2 * M * K)
    blocks = torch.zeros(B, K, K, 2 * M, 2 * M, dtype=rdt, device=H.device)
    ar = torch.arange(K, device=H.device)
    blocks[:, ar, ar] = Jww
    top = torch.cat([blocks.permute(0, 1, 3, 2, 4).reshape(B, 2 * M * K, 2 * M * K), Jwl], -1)
    bottom = torch.cat([Jsw, torch.zeros(B, K, K, dtype=rdt, device=H.device)], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def _uplink_powers(H, U, gam):
    """Virtual uplink powers (unit noise) for receive filters ``U``: ``(I - D Psi^T) q = D 1``.

    Returns ``(q, ok)``; ``ok`` is False where the system is singular or ``q`` not positive.
    """
    K = H.shape[1]
    G2 = _abs2(H @ U)
    gkk = torch.diagonal(G2, dim1=-2, dim2=-1)
    eyeK = torch.eye(K, dtype=gam.dtype, device=H.device)
    D = gam / gkk.clamp_min(torch.finfo(gam.dtype).tiny)
    q, info = torch.linalg.solve_ex(eyeK - D[:, :, None] * (G2 * (1.0 - eyeK)).mT, D)
    ok = (info == 0) & torch.isfinite(q).all(-1) & (q > 0).all(-1)
    return torch.where(ok[:, None], q, torch.zeros_like(q)), ok


class _ImplicitMinPower(torch.autograd.Function):
    """Normalised (unit-noise) solution ``(W, lambda, feasible)`` with the implicit backward."""

    @staticmethod
    def forward(ctx, Ht, gam, iters, tol, max_power_ratio):
        with torch.no_grad():
            V, p, feas = _duality_normalised(Ht.detach(), gam.detach(), iters, tol, max_power_ratio)
            tiny = torch.finfo(p.dtype).tiny
            U = V / p.sqrt().clamp_min(tiny).to(V.dtype)[:, None, :]
            lam, ok = _uplink_powers(Ht, U, gam)
            feas = feas & ok
            a = torch.diagonal(Ht @ V, dim1=-2, dim2=-1)
            # phase convention h_k^H w_k > 0 exactly (it holds up to rounding for MMSE filters)
            W = V * (a.conj() / a.abs().clamp_min(tiny))[:, None, :]
            W = torch.where(feas[:, None, None], W, torch.zeros_like(W))
            lam = torch.where(feas[:, None], lam, torch.zeros_like(lam))
        ctx.save_for_backward(Ht, gam, W, lam, feas)
        ctx.mark_non_differentiable(feas)
        return W, lam, feas

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gW, glam, _gfeas):
        Ht, gam, W, lam, feas = ctx.saved_tensors
        B, K, M = Ht.shape
        n = 2 * M * K + K
        Ht, gam = Ht.detach(), gam.detach()
        a = torch.diagonal(Ht @ W, dim1=-2, dim2=-1).real
        rho = torch.where(feas[:, None], 1.0 / a.clamp_min(torch.finfo(a.dtype).tiny), 1.0)
        if gW is None:
            gW = torch.zeros_like(W)
        if glam is None:
            glam = torch.zeros_like(lam)
        rhs = torch.cat([_to_real(gW), glam], dim=-1)  # dL/dx in the real layout
        J = _jacobian(W, lam, Ht, gam, rho)
        eye = torch.eye(n, dtype=J.dtype, device=J.device)
        J = torch.where(feas[:, None, None], J, eye)
        mu, info = torch.linalg.solve_ex(J.mT, rhs)
        good = feas & (info == 0) & torch.isfinite(mu).all(-1)
        mu = torch.where(good[:, None], mu, torch.zeros_like(mu))
        # -mu^T dF/dtheta by reverse-mode autodiff of mu . F(x*, theta)
        with torch.enable_grad():
            Hr = Ht.clone().requires_grad_(True)
            gr = gam.clone().requires_grad_(ctx.needs_input_grad[1])
            F = _residual(W, lam, Hr, torch.where(feas[:, None], gr, 1.0), rho)
            wrt = (Hr, gr) if ctx.needs_input_grad[1] else (Hr,)
            grads = torch.autograd.grad(-(F * mu).sum(), wrt)
        gH = torch.where(good[:, None, None], grads[0], torch.zeros_like(grads[0]))
        gg = None
        if ctx.needs_input_grad[1]:
            gg = torch.where(good[:, None], grads[1], torch.zeros_like(grads[1]))
        return gH, gg, None, None, None


def _solve(H, gam, s2, kw):
    """Unchecked core: rescale to unit noise and gain, solve, undo the scaling."""
    rdt = _real_dtype(H)
    tol = kw["tol"] if kw["tol"] is not None else TOL_FACTOR * torch.finfo(rdt).eps
    with torch.no_grad():  # any fixed positive scale is exact (scale invariance)
        m = H.abs().amax(dim=(-2, -1))
        m = torch.where(m > 0, m, torch.ones_like(m))
        g = _abs2(H / m.to(H.dtype)[:, None, None]).sum(-1).mean(-1)
        scale = m * g.sqrt()
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    Ht = H / scale.to(H.dtype)[:, None, None]
    W, lam, feas = _ImplicitMinPower.apply(Ht, gam, kw["iters"], tol, kw["max_power_ratio"])
    c2 = s2 / scale.square()
    V = W * c2.sqrt().to(H.dtype)[:, None, None]
    inf = torch.full_like(lam, torch.inf)
    p = torch.where(feas[:, None], _abs2(V).sum(-2), inf)
    q = torch.where(feas[:, None], lam * c2[:, None], inf)
    return ImplicitMinPowerResult(V, p, q, feas)


def min_power_implicit(
    H: torch.Tensor,
    sinr_targets,
    noise_var,
    *,
    iters: int = 500,
    tol: float | None = None,
    max_power_ratio: float = 1e12,
) -> ImplicitMinPowerResult:
    """Minimum-power beamforming with SINR targets, differentiable by implicit differentiation.

    Forward: the batched virtual-uplink fixed point of :func:`~lib.precoding.min_power_duality`
    (Schynol & Pesavento, eqs. (16)-(23), (31)-(32)), without an autograd graph. Backward: the
    implicit function theorem on the reduced real system of their Theorem 4.2
    (eqs. (41)-(48)), one batched ``(2MK + K)``-dimensional linear solve; see the module
    docstring for the system, the phase fixing ``h_k^H w_k > 0`` and the Jacobian. Gradients
    flow to ``H`` (complex, PyTorch's convention ``dL/dRe + j dL/dIm``), to ``sinr_targets``
    and to ``noise_var`` when they are tensors that require grad. Infeasible samples get
    ``feasible = False``, ``V = 0``, ``+inf`` powers and a zero gradient.

    Parameters
    ----------
    H : torch.Tensor
        ``(B, K, M)`` complex64 or complex128 channels (row ``k`` is ``h_k^H``): plain or
        effective channels ``H F_RF`` (for RF weighting use
        :func:`~lib.precoding.hybrid_min_power_implicit`).
    sinr_targets : float or torch.Tensor
        ``gamma_k`` (linear): scalar, ``(K,)`` or ``(B, K)``, finite and ``> 0``.
    noise_var : float or torch.Tensor
        ``sigma^2``: scalar or ``(B,)``, finite and ``> 0``.
    iters, tol, max_power_ratio
        Settings of :func:`~lib.precoding.min_power_duality`.

    Returns
    -------
    ImplicitMinPowerResult
        ``V`` ``(B, M, K)``, ``powers`` and ``uplink_powers`` ``(B, K)``, ``feasible`` ``(B,)``,
        of the dtype and device of ``H``; ``total_power`` ``(B,)`` and unit-norm ``beams``.

    Raises
    ------
    TypeError
        ``H`` is not a complex tensor, or an argument has the wrong type.
    ValueError
        ``H`` is not ``(batch, users, antennas)``, ``sinr_targets`` is not a scalar, ``(K,)`` or
        ``(B, K)``, ``noise_var`` is not a scalar or ``(B,)``, a value is not finite and
        positive, or a solver setting is out of range.
    """
    _check_H(H)
    B, K, _ = H.shape
    kw = _solver_settings({"iters": iters, "tol": tol, "max_power_ratio": max_power_ratio})
    gam = per_user(sinr_targets, "sinr_targets", B, K, dtype=_real_dtype(H), device=H.device)
    s2 = _scalar(noise_var, "noise_var", H)
    return _solve(H, gam, s2, kw)


def hybrid_min_power_implicit(
    H: torch.Tensor,
    F_RF: torch.Tensor,
    sinr_targets,
    noise_var,
    *,
    weighting: str = "rf",
    **solver_kw,
) -> HybridResult:
    """Differentiable digital sub-problem (12) for a fixed analog matrix (eq. (4) weights).

    The same solution as :func:`~lib.precoding.digital_min_power` (without ``max_power``),
    differentiable w.r.t. ``H`` and ``F_RF`` through :func:`~lib.precoding.min_power_implicit`:
    baseband weighting solves on ``H F``; RF weighting on the whitened ``H F L^{-H}``
    (``F^H F = L L^H``) and maps back ``v = L^{-H} t``, all in differentiable torch.

    Parameters
    ----------
    H : torch.Tensor
        ``(B, K, M)`` complex channels.
    F_RF : torch.Tensor
        ``(B, M, N_RF)`` analog matrix, dtype of ``H``.
    sinr_targets, noise_var
        As in :func:`~lib.precoding.min_power_implicit`.
    weighting : {"rf", "baseband"}
        Power weights of eq. (4).
    **solver_kw
        ``iters``, ``tol``, ``max_power_ratio`` of :func:`~lib.precoding.min_power_duality`.

    Returns
    -------
    HybridResult
        ``V_bb`` unit-norm, ``powers``, ``weighted_power`` (``+inf`` and zero gradient where
        infeasible, also for numerically dependent columns under RF weighting); ``index`` and
        ``history`` are ``None``.
    """
    _check_H(H)
    _check_F(F_RF, H)
    _check_weighting(weighting)
    kw = _solver_settings(solver_kw)
    B, K, _ = H.shape
    gam = per_user(sinr_targets, "sinr_targets", B, K, dtype=_real_dtype(H), device=H.device)
    s2 = _scalar(noise_var, "noise_var", H)
    Heff = H @ F_RF
    if weighting == "rf":
        L, ok_f = _gram_cholesky(F_RF)
        eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device)
        L = torch.where(ok_f[:, None, None], L, eye)
        Heff = torch.linalg.solve_triangular(L, Heff.mH, upper=False).mH  # H F L^{-H}
    res = _solve(Heff, gam, s2, kw)
    T, feas = res.V, res.feasible
    if weighting == "rf":
        T = torch.linalg.solve_triangular(L.mH, T, upper=True)  # v = L^{-H} t
        feas = feas & ok_f
    p_raw = _abs2(T).sum(-2)
    p_safe = torch.where(feas[:, None], p_raw, torch.ones_like(p_raw))
    V = torch.where(feas[:, None, None], T / p_safe.sqrt().to(T.dtype)[:, None, :], 0.0)
    inf = torch.full_like(p_raw, torch.inf)
    p = torch.where(feas[:, None], p_raw, inf)
    w = torch.where(feas, res.powers.sum(-1), inf[:, 0])
    return HybridResult(F_RF, V, p, w, feas)
