"""WMMSE for weighted sum-rate maximisation (Shi et al. 2011; Pellaco et al. eqs. (5)-(8)).

The blocks :func:`~lib.precoding.wmmse_receivers`, :func:`~lib.precoding.wmmse_weights`,
:func:`~lib.precoding.wmmse_precoder` (with the
multiplier found by :func:`~lib.precoding.bisect_mu`) and the full iteration
:func:`~lib.precoding.wmmse`, batched in torch.
Chapter: *Multi-user downlink beamforming* (``book/downlink_beamforming.ipynb``); the unfolded
WMMSE (:mod:`lib.learn.unfolded_wmmse`) reuses the ``u`` and ``w`` blocks.

The public blocks validate their inputs and call private, unchecked versions
(``_receivers_weights``, ``_precoder``, ``_bisect``), which is what :func:`~lib.precoding.wmmse`
iterates after validating once. ``_precoder_twice_differentiable`` is the precoder block with
exact first and second derivatives (the PaPP teacher of :mod:`lib.learn.papp`, inside a
meta-learning inner step). Shapes: ``H`` ``(B, K, M)`` (row ``k`` is ``h_k^H``), ``V``
``(B, M, K)``, ``u`` complex ``(B, K)``, ``w`` real ``(B, K)``.
"""

from __future__ import annotations

import torch

from lib.core.checks import _real_dtype, check_complex, check_positive_int, check_tensor, per_sample
from lib.precoding.common import (
    _abs2,
    _check_H,
    _check_V,
    _frob2,
    _scalar,
    user_weights,
)
from lib.precoding.linear import _matched_filter

__all__ = ["wmmse_receivers", "wmmse_weights", "bisect_mu", "wmmse_precoder", "wmmse"]


# --------------------------------------------------------------------------- #
# Private blocks (no checks; called once validated)
# --------------------------------------------------------------------------- #
def _receivers_weights(H: torch.Tensor, V: torch.Tensor, s2: torch.Tensor):
    """MMSE receivers ``u`` and the MSE weights ``w = 1 / e = 1 + SINR`` at that ``u``.

    One product ``H V`` serves both (eqs. (5a)-(5b)); ``interf`` is the interference plus
    noise ``sum_{j != k} |h_k^H v_j|^2 + sigma^2 >= sigma^2 > 0``.
    """
    G = H @ V
    G2 = _abs2(G)
    sig = G2.diagonal(dim1=-2, dim2=-1)
    interf = (G2.sum(-1) - sig).clamp_min(0.0) + s2[:, None]
    u = G.diagonal(dim1=-2, dim2=-1) / (interf + sig)
    w = 1.0 + sig / interf
    return u, w


def _bisect(
    lam: torch.Tensor, phi: torch.Tensor, P: torch.Tensor, active: torch.Tensor, iters: int
) -> torch.Tensor:
    """Root of ``sum_j phi_j / (lam_j + mu)^2 = P`` where ``active``, else 0 (no grad, no sync).

    Bisection on ``[0, sqrt(sum_j phi_j / P)]``; returns the upper end of the final bracket.
    """
    with torch.no_grad():
        # (M, B) layout and in-place updates: the sum over M is then a few vector additions
        lam_t, phi_t = lam.T.contiguous(), phi.T.contiguous()
        width = torch.where(active, torch.sqrt(phi_t.sum(0) / P), torch.zeros_like(P))
        lo = torch.zeros_like(width)
        buf = torch.empty_like(lam_t)
        for _ in range(iters):
            width.mul_(0.5)
            mid = lo + width
            # for active samples mid > 0, so every denominator is positive
            torch.add(lam_t, mid, out=buf)
            buf.square_()
            torch.div(phi_t, buf, out=buf)
            lo.addcmul_(width, buf.sum(0) > P)
        return lo + width


def _precoder(
    H: torch.Tensor,
    u: torch.Tensor,
    w: torch.Tensor,
    P: torch.Tensor,
    a: torch.Tensor,
    iters: int,
) -> torch.Tensor:
    """Closed-form WMMSE beamformer (eqs. (5c)-(8)) without checks; see
    :func:`~lib.precoding.wmmse_precoder`.

    Forward pass without autograd; when any input requires a gradient, a zero-valued term
    carrying the exact first derivative (implicit in mu) is added (``_implicit_grad``).
    """
    B, K, M = H.shape
    rdt = _real_dtype(H)
    need_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (H, u, w, P, a))
    if not need_grad and K < M:
        return _precoder_reduced(H, u, w, P, a, iters)
    Hh = H.mH  # columns h_k
    coef_A = a * w * _abs2(u)  # alpha_k w_k |u_k|^2
    coef_R = (a * w) * u  # alpha_k w_k u_k
    A_g = (Hh * coef_A[:, None, :]) @ H  # sum_k c_k h_k h_k^H (eq. (6))
    with torch.no_grad():
        lam, U = torch.linalg.eigh(A_g.detach())
        lam = lam.clamp_min(0.0)
        # U^H R with R = [alpha_k w_k u_k h_k]_k, as (H U)^H scaled by columns: one product
        Rt = (H.detach() @ U).mH * coef_R.detach()[:, None, :]  # (B, M, K)
        phi = _abs2(Rt).sum(-1)  # diagonal of Phi = U^H R R^H U (eq. (7))
        # numerical null space of A: dropped only where the constraint is inactive (mu = 0,
        # pseudo-inverse); with mu > 0 every direction has the finite gain 1 / (lam + mu)
        tol = lam[:, -1:].clamp_min(torch.finfo(rdt).tiny) * (M * torch.finfo(rdt).eps * 10)
        keep = lam > tol
        safe = torch.where(keep, lam, torch.ones_like(lam))
        p0 = torch.where(keep, phi / safe.square(), 0.0).sum(-1)
        active = p0 > P
        mu = _bisect(lam, phi, P.detach(), active, iters)
        use = keep | active[:, None]
        den = lam + mu[:, None]
        inv = torch.where(use, 1.0 / torch.where(use, den, torch.ones_like(den)), 0.0)
        # tr(V V^H) = sum_j inv_j^2 phi_j (U is unitary): rescale without forming V first
        pw = (inv.square() * phi).sum(-1)
        rescale = active | (pw > P)
        scale = torch.where(rescale, torch.sqrt(P / pw.clamp_min(torch.finfo(rdt).tiny)), 1.0)
        V = U @ ((inv * scale[:, None]).to(H.dtype)[:, :, None] * Rt)
    if not need_grad:
        return V
    R_g = Hh * coef_R[:, None, :]  # columns alpha_k w_k u_k h_k
    return V + _implicit_grad(A_g, R_g, P, V, U, inv, use, active)


def _reduced_multiplier(H, c, ratio, P, iters: int):
    """Eigen-decomposition of ``S = C^{1/2} G C^{1/2}`` and the multiplier mu (no grad).

    ``c`` real ``(B, K)`` (``alpha_k w_k |u_k|^2``), ``ratio = d / sqrt(c)`` with
    ``d_k = alpha_k w_k u_k``. Returns ``(lam, Q, Y, mu, active, keep)`` in the notation of
    :func:`_precoder_reduced`.
    """
    M = H.shape[-1]
    rdt = _real_dtype(H)
    sc = c.sqrt()
    S = sc[:, :, None] * (H @ H.mH) * sc[:, None, :]
    lam, Q = torch.linalg.eigh(S)
    lam = lam.clamp_min(0.0)
    Y = Q.mH * ratio.to(H.dtype)[:, None, :]  # Q^H diag(d / sqrt(c))
    phi = lam * _abs2(Y).sum(-1)
    tol = lam[:, -1:].clamp_min(torch.finfo(rdt).tiny) * (M * torch.finfo(rdt).eps * 10)
    keep = lam > tol
    safe = torch.where(keep, lam, torch.ones_like(lam))
    p0 = torch.where(keep, phi / safe.square(), 0.0).sum(-1)
    active = p0 > P
    mu = _bisect(lam, phi, P, active, iters)
    return lam, Q, Y, mu, active, keep


def _precoder_reduced(H, u, w, P, a, iters: int) -> torch.Tensor:
    """The WMMSE beamformer of :func:`_precoder` computed in the K-dimensional user space.

    With ``A = H^H C H``, ``C = diag(c)``, ``c_k = alpha_k w_k |u_k|^2`` and
    ``R = H^H D``, ``d_k = alpha_k w_k u_k``, the push-through identity gives
    ``(A + mu I)^{-1} H^H = H^H (C G + mu I)^{-1}`` with ``G = H H^H`` (K x K), and
    ``C G + mu I = C^{1/2} (S + mu I) C^{-1/2}`` with ``S = C^{1/2} G C^{1/2} = Q diag(lam) Q^H``.
    The nonzero eigenvalues of ``A`` are those of ``S``, and with ``Y = Q^H diag(d / sqrt(c))``
    the power of eq. (7) is ``sum_j lam_j ||Y_j||^2 / (lam_j + mu)^2``; so
    ``V = H^H C^{1/2} Q diag(1 / (lam + mu)) Y`` costs ``O(K^2 M + K^3)`` instead of the
    ``O(K M^2 + M^3)`` of the M x M eigendecomposition (same null-space rule, same bisection,
    same final rescaling). Forward only: the differentiable paths are :func:`_precoder`'s and
    :func:`_precoder_twice_differentiable`'s.
    """
    rdt = _real_dtype(H)
    with torch.no_grad():
        c = a * w * _abs2(u)
        sc = c.sqrt()
        pos = c > 0
        ratio = torch.where(pos, (a * w) * u / torch.where(pos, sc, 1.0), 0.0)  # d / sqrt(c)
        lam, Q, Y, mu, active, keep = _reduced_multiplier(H, c, ratio, P, iters)
        # with mu > 0 a direction with lam = 0 has phi = 0 and no part in V: drop it too
        use = keep | (active[:, None] & (lam > 0))
        den = lam + mu[:, None]
        inv = torch.where(use, 1.0 / torch.where(use, den, torch.ones_like(den)), 0.0)
        X = (sc.to(H.dtype)[:, :, None] * Q) @ (inv.to(H.dtype)[:, :, None] * Y)
        V = H.mH @ X
        # the power of the formed V (the eigenvalue formula loses digits when S is
        # ill-conditioned): rescale to tr(V V^H) = P where active or above the budget
        pw = _frob2(V)
        rescale = active | (pw > P)
        scale = torch.where(rescale, torch.sqrt(P / pw.clamp_min(torch.finfo(rdt).tiny)), 1.0)
        return V * scale.to(H.dtype)[:, None, None]


def _precoder_twice_differentiable(H, u, w, P, a, iters: int, newton: int = 2) -> torch.Tensor:
    """The WMMSE beamformer of :func:`_precoder` with exact first *and second* derivatives.

    In the user space of :func:`_precoder_reduced`, ``V(mu) = H^H (C G + mu I)^{-1} D``
    (``D = diag(d)``; every op differentiable, so autograd also gives second derivatives,
    as the inner step of MLDG or MAML needs). The multiplier is found without a graph by
    the bisection of eq. (8), then refined by ``newton`` Newton steps on
    ``g(mu) = ||V(mu)||_F^2 - P`` taken *with* the graph: at the root one step carries the
    exact implicit first derivative of mu, two steps the exact second derivative as well.
    Where the constraint is inactive, mu = 0. Requires ``c_k > 0`` and ``G = H H^H``
    invertible (K <= M users with independent channels); not at the switch between mu = 0
    and mu > 0. The power is ``P`` where active up to the last Newton step's accuracy.
    """
    B, K, _ = H.shape
    c = a * w * _abs2(u)
    d = (a * w) * u
    with torch.no_grad():
        ratio = d.detach() / c.detach().sqrt()
        mu = _reduced_multiplier(H.detach(), c.detach(), ratio, P.detach(), iters)[3]
        active = mu > 0
    eye = torch.eye(K, dtype=H.dtype, device=H.device)
    CG = c.to(H.dtype)[:, :, None] * (H @ H.mH)
    Dm = torch.diag_embed(d.to(H.dtype))
    mu = torch.where(active, mu, torch.zeros_like(mu))  # no graph; the Newton steps add it
    for _ in range(newton):
        T = CG + mu.to(H.dtype)[:, None, None] * eye
        X = torch.linalg.solve(T, Dm)
        V = H.mH @ X
        dV = -(H.mH @ torch.linalg.solve(T, X))  # dV / dmu
        g = _frob2(V) - P
        dg = 2.0 * (V.conj() * dV).real.sum((-2, -1))
        mu = torch.where(active, mu - g / torch.where(active, dg, -torch.ones_like(dg)), mu)
    T = CG + mu.to(H.dtype)[:, None, None] * eye
    return H.mH @ torch.linalg.solve(T, Dm)


def _implicit_grad(A_g, R_g, P, V, U, inv, use, active) -> torch.Tensor:
    """Zero-valued term whose derivative is ``dV`` of ``V = (A + mu I)^{-1} R``, mu implicit.

    With ``S = A + mu I``: ``dV = S^{-1} (dR - dA V) - dmu S^{-1} V``; where the constraint is
    active, ``||V||^2 = P`` gives ``dmu = (2 Re<V, S^{-1}(dR - dA V)> - dP) / (2 Re<V, S^{-1} V>)``
    (the implicit derivative of the secular equation (8)); where it is inactive (mu = 0,
    pseudo-inverse on the kept directions), ``dmu = 0`` and the range of ``A`` moves:
    ``+ (I - Pi) dA A^+ V`` with ``Pi`` the projector on the kept eigenvectors. ``V``, ``U``,
    ``inv`` are constants; ``A_g``, ``R_g``, ``P`` carry the graph.
    """
    dA = A_g - A_g.detach()
    dR = R_g - R_g.detach()
    dP = P - P.detach()
    Uh = U.mH
    inv_c = inv.to(V.dtype)[:, :, None]

    def s_inv(X):
        return U @ (inv_c * (Uh @ X))

    Y = s_inv(dR - dA @ V)
    Z = s_inv(V)
    num = 2.0 * (V.conj() * Y).real.sum((-2, -1)) - dP
    den = 2.0 * (V.conj() * Z).real.sum((-2, -1))
    den = torch.where(active, den, torch.ones_like(den))
    dmu = torch.where(active, num / den, torch.zeros_like(num))
    N = dA @ Z
    N_null = N - U @ (use.to(V.dtype)[:, :, None] * (Uh @ N))
    return Y - dmu.to(V.dtype)[:, None, None] * Z + (~active).to(V.dtype)[:, None, None] * N_null


# --------------------------------------------------------------------------- #
# Public blocks (checked)
# --------------------------------------------------------------------------- #
def wmmse_receivers(H: torch.Tensor, V: torch.Tensor, noise_var) -> torch.Tensor:
    """MMSE receive gains of every user (Pellaco et al., eq. (5b)).

    ``u_k = h_k^H v_k / (sum_j |h_k^H v_j|^2 + sigma^2)``; the estimate is
    ``x_hat_k = conj(u_k) y_k``.

    Parameters
    ----------
    H : torch.Tensor
        Complex ``(B, K, M)``, row ``k`` is ``h_k^H``.
    V : torch.Tensor
        Complex ``(B, M, K)``, the dtype of ``H``.
    noise_var : float or torch.Tensor
        sigma^2 > 0, scalar or ``(B,)``.

    Returns
    -------
    torch.Tensor
        Complex ``(B, K)``.
    """
    _check_H(H)
    _check_V(V, H)
    s2 = _scalar(noise_var, "noise_var", H)
    return _receivers_weights(H, V, s2)[0]


def wmmse_weights(H: torch.Tensor, V: torch.Tensor, u: torch.Tensor, noise_var) -> torch.Tensor:
    """MSE weights ``w_k = 1 / e_k`` (Pellaco et al., eq. (5a)) for any receivers ``u``.

    ``e_k = |1 - conj(u_k) h_k^H v_k|^2 + |u_k|^2 (sum_{j != k} |h_k^H v_j|^2 + sigma^2)``
    is the MSE of ``x_hat_k = conj(u_k) y_k``, written as a sum of non-negative terms so that
    it never cancels. With the MMSE ``u`` of :func:`~lib.precoding.wmmse_receivers`,
    ``w_k = 1 + SINR_k``.

    Parameters
    ----------
    H : torch.Tensor
        Complex ``(B, K, M)``.
    V : torch.Tensor
        Complex ``(B, M, K)``.
    u : torch.Tensor
        Complex ``(B, K)``.
    noise_var : float or torch.Tensor
        sigma^2 > 0, scalar or ``(B,)``.

    Returns
    -------
    torch.Tensor
        Real ``(B, K)``.
    """
    _check_H(H)
    _check_V(V, H)
    B, K, _ = H.shape
    check_complex(u, "u", shape=(B, K))
    s2 = _scalar(noise_var, "noise_var", H)
    G = H @ V
    G2 = _abs2(G)
    g = G.diagonal(dim1=-2, dim2=-1)
    interf = (G2.sum(-1) - G2.diagonal(dim1=-2, dim2=-1)).clamp_min(0.0) + s2[:, None]
    e = _abs2(1.0 - u.conj() * g) + _abs2(u) * interf
    return 1.0 / e


def bisect_mu(lam: torch.Tensor, phi: torch.Tensor, power, *, iters: int = 50) -> torch.Tensor:
    """Lagrange multiplier mu >= 0 of the WMMSE precoder step by bisection (Pellaco, eq. (8)).

    Finds the root of ``p(mu) = sum_j phi_j / (lam_j + mu)^2 = P`` on
    ``[0, sqrt(sum_j phi_j / P)]`` (at the upper end ``p <= P``), or returns ``mu = 0`` when
    ``p(0) = sum_{lam_j > 0} phi_j / lam_j^2 <= P`` already. Runs without autograd.

    Parameters
    ----------
    lam : torch.Tensor
        Real ``(B, M)``, the eigenvalues of ``A`` (eq. (6)), ``>= 0``.
    phi : torch.Tensor
        Real ``(B, M)``, the diagonal of ``Phi = U^H R R^H U``; entries with ``lam_j = 0``
        must have ``phi_j = 0`` (the caller projects them out).
    power : float or torch.Tensor
        P > 0, scalar or ``(B,)``.
    iters : int
        Bisection steps; the final bracket is ``2**-iters`` times the initial one.

    Returns
    -------
    torch.Tensor
        Real ``(B,)``: the upper end of the final bracket, so the power never exceeds ``P``.
    """
    check_tensor(lam, "lam", ndim=2, complex_=False)
    check_tensor(phi, "phi", shape=tuple(lam.shape), complex_=False)
    check_positive_int(iters, "iters")
    P = per_sample(power, "power", lam.shape[0], dtype=lam.dtype, device=lam.device)
    with torch.no_grad():
        lam, phi, P = lam.detach(), phi.detach(), P.detach()
        pos = lam > 0
        p0 = torch.where(pos, phi / torch.where(pos, lam, torch.ones_like(lam)).square(), 0.0)
        return _bisect(lam, phi, P, p0.sum(-1) > P, iters)


def wmmse_precoder(
    H: torch.Tensor,
    u: torch.Tensor,
    w: torch.Tensor,
    power,
    weights=None,
    *,
    bisection_iters: int = 50,
) -> torch.Tensor:
    """Closed-form WMMSE beamformer update (Pellaco et al., eqs. (5c)-(8)).

    ``v_k = alpha_k w_k u_k (A + mu I)^{-1} h_k`` with ``A = sum_k alpha_k w_k |u_k|^2 h_k h_k^H``
    (eq. (6)). With ``A = U diag(lam) U^H`` the transmit power is
    ``sum_j Phi_jj / (lam_j + mu)^2`` (eq. (7)); mu = 0 if that meets the budget (then the
    pseudo-inverse of ``A`` is used: eigen-directions below ``lam_max * M * eps * 10`` are
    dropped), else mu > 0 solves eq. (8) by bisection (:func:`~lib.precoding.bisect_mu`), every
    direction is
    kept (a faded user keeps its small beam and can come back) and V is rescaled to
    ``tr(V V^H) = P`` exactly (a relative change of the order of the bisection tolerance).

    Differentiable in ``H``, ``u``, ``w``, ``power`` and ``weights``: mu gets the implicit
    derivative of eq. (8) (first derivatives only; not at the switch between mu = 0 and
    mu > 0).

    Parameters
    ----------
    H : torch.Tensor
        Complex ``(B, K, M)``.
    u : torch.Tensor
        Complex ``(B, K)``, receivers (eq. (5b)).
    w : torch.Tensor
        Real ``(B, K)``, MSE weights (eq. (5a)).
    power : float or torch.Tensor
        P > 0, scalar or ``(B,)``.
    weights : torch.Tensor, optional
        User priorities alpha_k ``>= 0``, ``(K,)`` or ``(B, K)``; ones by default.
    bisection_iters : int
        Bisection steps for mu.

    Returns
    -------
    torch.Tensor
        Complex ``(B, M, K)`` with ``tr(V V^H) <= P``.
    """
    _check_H(H)
    B, K, M = H.shape
    check_complex(u, "u", shape=(B, K))
    check_tensor(w, "w", shape=(B, K), complex_=False)
    check_positive_int(bisection_iters, "bisection_iters")
    P = _scalar(power, "power", H)
    a = user_weights(weights, H)
    return _precoder(H, u, w.to(a.dtype), P, a, bisection_iters)


def wmmse(
    H: torch.Tensor,
    power,
    noise_var,
    iters: int = 100,
    weights=None,
    *,
    V0: torch.Tensor | None = None,
    history: bool = False,
    tol: float | None = None,
    bisection_iters: int = 50,
):
    """WMMSE algorithm for the weighted sum rate under a total power constraint (Shi et al. 2011).

    Each iteration computes ``u`` (eq. (5b)), ``w`` (eq. (5a)) and ``V`` (eqs. (5c)-(8),
    :func:`~lib.precoding.wmmse_precoder`), starting from ``V0`` (default: the matched filter at
    full power).
    The weighted sum rate is non-decreasing over iterations. Inputs are validated once here;
    the iterations run unchecked blocks and, without ``tol``, never synchronise with the
    device. With ``tol``, one host synchronisation per iteration selects the samples that
    still run.

    Parameters
    ----------
    H : torch.Tensor
        Complex ``(B, K, M)``, row ``k`` is ``h_k^H``.
    power, noise_var : float or torch.Tensor
        P > 0 and sigma^2 > 0, scalars or ``(B,)``.
    iters : int
        Number of iterations (``>= 0``); with ``tol`` the maximum.
    weights : torch.Tensor, optional
        User priorities alpha_k, ``(K,)`` or ``(B, K)``; ones by default.
    V0 : torch.Tensor, optional
        Complex ``(B, M, K)`` start with ``tr(V0 V0^H) <= P``.
    history : bool
        Also return every iterate.
    tol : float, optional
        bits/s/Hz: a sample stops (keeps its V) as soon as one iteration improved its weighted
        sum rate by less than ``tol``; only the samples still running are computed.
    bisection_iters : int
        Bisection steps for mu in each precoder update.

    Returns
    -------
    torch.Tensor or tuple
        ``V`` complex ``(B, M, K)``; with ``history=True`` ``(V, Vs)`` where ``Vs`` is
        ``(iters + 1, B, M, K)`` and ``Vs[0]`` the initial point (stopped samples repeat
        their V).
    """
    _check_H(H)
    iters = check_positive_int(iters, "iters", minimum=0)
    bisection_iters = check_positive_int(bisection_iters, "bisection_iters")
    if tol is not None and (
        isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0
    ):
        raise ValueError(f"tol must be None or a positive number, got {tol!r}")
    P = _scalar(power, "power", H)
    s2 = _scalar(noise_var, "noise_var", H)
    a = user_weights(weights, H)
    if V0 is None:
        V = _matched_filter(H, P)
    else:
        V = _check_V(V0, H, "V0")
        if bool((_frob2(V) > P * (1 + 1e-9)).any()):
            raise ValueError("V0 must satisfy the power constraint tr(V0 V0^H) <= power")
    Vs = [V]
    if tol is None:
        for _ in range(iters):
            u, w = _receivers_weights(H, V, s2)
            V = _precoder(H, u, w, P, a, bisection_iters)
            if history:
                Vs.append(V)
    else:
        B = H.shape[0]
        idx = torch.arange(B, device=H.device)
        prev = torch.full((B,), -torch.inf, dtype=P.dtype, device=H.device)
        Hi, s2i, ai, Pi = H, s2, a, P
        for _ in range(iters):
            if idx.numel() > 0:
                Vi = V if idx.numel() == B else V[idx]
                u, w = _receivers_weights(Hi, Vi, s2i)
                # with the MMSE u, w_k = 1 + SINR_k: the current weighted sum rate for free
                rate = (ai * torch.log2(w)).sum(-1)
                go = rate - prev[idx] >= tol
                prev = prev.index_put((idx,), rate)
                sel = go.nonzero().squeeze(1)  # the one host synchronisation per iteration
                if sel.numel() < idx.numel():
                    idx, u, w = idx[sel], u[sel], w[sel]
                    Hi, s2i, ai, Pi = Hi[sel], s2i[sel], ai[sel], Pi[sel]
                if idx.numel() > 0:
                    Vn = _precoder(Hi, u, w, Pi, ai, bisection_iters)
                    V = Vn if idx.numel() == B else V.index_put((idx,), Vn)
            if history:
                Vs.append(V)
    if history:
        return V, torch.stack(Vs)
    return V
