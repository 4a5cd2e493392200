"""Approximate message passing and its orthogonal variants: AMP (Donoho, Maleki and
Montanari 2009), VAMP (Rangan, Schniter and Fletcher 2019, Algorithm 1) and OAMP (Ma and Ping
2017, eqs. (13)-(16)), in SVD form for VAMP and OAMP. Sparse recovery chapter
(``book/sparse_recovery.ipynb``, eqs. ``eq-sparse-amp``, ``eq-sparse-vamp``).

Every algorithm validates its inputs once at the entry and then iterates unchecked (the
denoisers are the unchecked cores of :mod:`lib.sparse.denoisers`; no ``bool(...)`` inside the
loop). Signatures, for the sparse-estimator interface ``estimator(y, A, noise_var) -> x_hat``:

* ``amp(y, A, iters, *, ..., noise_var=None)`` -- AMP estimates its noise level from the
  residual; ``noise_var`` is accepted as a keyword for the common call and not used;
* ``vamp(y, A, noise_var, iters, *, p, ...)`` and ``oamp(y, A, noise_var, iters, *, p, ...)``
  -- ``noise_var`` is the third positional argument.

Per-iteration results: ``history=True`` returns ``(x_hat, stack)`` with ``stack`` of shape
``(T, B, N)`` (``T = iters``); a callable ``history=f`` returns ``(x_hat, [f(x_1), ...,
f(x_T)])`` stacked (a tensor if ``f`` returns tensors, else a NumPy array).
"""

from __future__ import annotations

import torch

from lib.core.checks import check_positive_int
from lib.sparse.common import (
    _check_noise_var_unused,
    _check_pos_float,
    _check_prob,
    _check_yA,
    _History,
    _mtv,
    _mv,
    _per_sample_col,
)
from lib.sparse.denoisers import _bg_mmse, _bg_prior_logit, _soft

__all__ = ["DEFAULT_ALPHA", "amp", "vamp", "oamp"]


#: Default threshold multiplier of AMP's soft threshold, ``theta_t = alpha * ||z_t|| / sqrt(M)``.
#: It is close to the state-evolution optimum of the book's reference problem
#: (M=250, N=500, p=0.1, 40 dB); use :func:`~lib.sparse.optimal_alpha` to tune it for another
#: problem.
DEFAULT_ALPHA = 1.1


# --------------------------------------------------------------------------- #
# AMP
# --------------------------------------------------------------------------- #
def _resolve_denoiser(denoiser, alpha, p, signal_var, like: torch.Tensor):
    """A function ``(r, tau2) -> (xhat, derivative)``; ``tau2`` is a ``(batch, 1)`` column.

    Arguments are checked here, once; the returned function runs unchecked.
    """
    if callable(denoiser):
        return denoiser
    if denoiser == "soft":
        alpha = _check_pos_float(alpha, "alpha", allow_zero=True)

        def f(r, tau2):
            theta = alpha * torch.sqrt(tau2)
            xhat = _soft(r, theta)
            return xhat, (r.abs() > theta).to(r.dtype)

        return f
    if denoiser in ("bg", "mmse"):
        if p is None:
            raise ValueError("the Bernoulli-Gaussian denoiser needs the sparsity p (p=...)")
        logit = _bg_prior_logit(_check_prob(p), like)
        s = _check_pos_float(signal_var, "signal_var")

        def f(r, tau2):
            return _bg_mmse(r, tau2, logit, s)

        return f
    raise ValueError(f"denoiser must be 'soft', 'bg' or a callable, got {denoiser!r}")


def amp(
    y,
    A,
    iters: int,
    *,
    denoiser="soft",
    alpha: float = DEFAULT_ALPHA,
    p: float | None = None,
    signal_var: float = 1.0,
    onsager: bool = True,
    history=False,
    noise_var=None,
):
    """Approximate message passing (Donoho, Maleki and Montanari 2009; Sparse recovery chapter,
    eq. ``eq-sparse-amp``).

    Starting from ``x_0 = 0``, ``z_{-1} = 0``:

    ``z_t = y - A x_t + (N/M) z_{t-1} <eta'(r_{t-1})>`` (Onsager correction),
    ``tau2_t = ||z_t||^2 / M``, ``r_t = x_t + A^T z_t``, ``x_{t+1} = eta(r_t; tau2_t)``.
    Valid for i.i.d. Gaussian-like ``A`` with ``||A||_F^2 ~ N``.

    Parameters
    ----------
    y : torch.Tensor
        ``(B, M)`` real measurements.
    A : torch.Tensor
        ``(M, N)`` or ``(B, M, N)``, same dtype and device as ``y``.
    iters : int
        ``T``, number of iterations.
    denoiser : {"soft", "bg"} or callable
        ``"soft"``: ``eta = soft_threshold(r, alpha * sqrt(tau2))``; ``"bg"``: the
        Bernoulli-Gaussian posterior mean (needs ``p``), i.e. Bayes-optimal AMP; a callable
        ``f(r, tau2) -> (xhat, derivative)`` (``tau2`` has shape ``(B, 1)``).
    alpha : float
        Threshold multiplier of the soft denoiser, ``>= 0``.
    p : float, optional
        Sparsity in ``(0, 1]`` of the ``"bg"`` denoiser.
    signal_var : float
        Variance ``> 0`` of the non-zero entries (``"bg"``).
    onsager : bool
        ``False`` drops the correction term (for demonstrations only: the iteration then
        becomes iterative thresholding with AMP's threshold rule and loses its state evolution).
    history : bool or callable
        ``True``: also return the per-iteration estimates ``x_1..x_T`` ``(T, B, N)``; a
        callable ``f``: also return ``f(x_t)`` for ``t = 1..T``, stacked.
    noise_var : float or torch.Tensor, optional
        Accepted (validated, ``>= 0``) for the common call ``estimator(y, A, noise_var=...)``;
        AMP estimates the noise level from the residual and does not use it.

    Returns
    -------
    torch.Tensor or (torch.Tensor, stack)
        ``x_hat`` ``(B, N)``, and with ``history`` the stack.
    """
    iters = check_positive_int(iters, "iters")
    y, A = _check_yA(y, A)
    if not isinstance(onsager, bool):
        raise TypeError(f"onsager must be a bool, got {type(onsager).__name__}")
    _check_noise_var_unused(noise_var, y.shape[0], y)
    eta = _resolve_denoiser(denoiser, alpha, p, signal_var, y)
    batch, m, n = y.shape[0], A.shape[-2], A.shape[-1]
    x = torch.zeros(batch, n, dtype=y.dtype, device=y.device)
    z = y.clone()
    hist = _History(history)
    tiny = torch.finfo(y.dtype).tiny
    for _ in range(iters):
        tau2 = torch.clamp((z**2).sum(-1, keepdim=True) / m, min=tiny)
        r = x + _mtv(A, z)
        x, d = eta(r, tau2)
        hist.add(x)
        z_new = y - _mv(A, x)
        if onsager:
            z_new = z_new + (n / m) * d.mean(-1, keepdim=True) * z
        z = z_new
    return hist.result(x)


# --------------------------------------------------------------------------- #
# VAMP and OAMP (SVD form)
# --------------------------------------------------------------------------- #
class _SVD:
    """``A = U diag(s) V^T`` with the full ``V`` (N x N) and ``s`` zero-padded to length N."""

    def __init__(self, A: torch.Tensor, y: torch.Tensor):
        u, s, vh = torch.linalg.svd(A, full_matrices=True)
        m, n = A.shape[-2], A.shape[-1]
        k = min(m, n)
        self.batched = A.dim() == 3
        self.v = vh.transpose(-2, -1)  # (.., N, N)
        s_full = torch.zeros(*s.shape[:-1], n, dtype=A.dtype, device=A.device)
        s_full[..., :k] = s[..., :k]
        self.s = s_full if self.batched else s_full.unsqueeze(0)  # (1 or batch, N)
        uty = (y @ u) if not self.batched else torch.bmm(y.unsqueeze(1), u).squeeze(1)
        st_uty = torch.zeros(y.shape[0], n, dtype=A.dtype, device=A.device)
        st_uty[:, :k] = uty[:, :k] * self.s[:, :k]
        self.s_uty = st_uty  # S^T U^T y in the V basis, (batch, N)
        self.m, self.n = m, n

    def to_v(self, x):  # V^T x
        return x @ self.v if not self.batched else torch.bmm(x.unsqueeze(1), self.v).squeeze(1)

    def from_v(self, q):  # V q
        if not self.batched:
            return q @ self.v.T
        return torch.bmm(q.unsqueeze(1), self.v.transpose(1, 2)).squeeze(1)


def _clip_prec(g, lo=1e-10, hi=1e12):
    return torch.clamp(g, min=lo, max=hi)


def vamp(
    y,
    A,
    noise_var,
    iters: int,
    *,
    p: float,
    signal_var: float = 1.0,
    damping: float = 1.0,
    history=False,
):
    """Vector AMP with the Bernoulli-Gaussian MMSE denoiser (Rangan et al. 2019, Algorithm 1;
    Sparse recovery chapter, eq. ``eq-sparse-vamp``).

    Each iteration runs an LMMSE stage and a denoising stage, each passing on the
    *extrinsic* (Onsager-corrected) estimate ``r`` and its precision ``gamma``:

    LMMSE: ``x2 = (A^T A / sigma^2 + gamma2 I)^{-1} (A^T y / sigma^2 + gamma2 r2)``,
    ``alpha2 = gamma2 / N tr[(A^T A / sigma^2 + gamma2 I)^{-1}]``,
    ``gamma1 = gamma2 (1 - alpha2) / alpha2``, ``r1 = (x2 - alpha2 r2) / (1 - alpha2)``;

    denoiser: ``x1 = g(r1; 1/gamma1)``, ``alpha1 = <g'(r1)>``,
    ``gamma2 = gamma1 (1 - alpha1) / alpha1``, ``r2 = (x1 - alpha1 r1) / (1 - alpha1)``.

    Computed with one SVD of ``A`` (per matrix when ``A`` is ``(batch, M, N)``). Starts
    from ``r2 = 0``, ``gamma2 = 1 / (p signal_var)`` (the prior's mean and variance).
    ``damping`` in (0, 1] mixes new and old ``(r2, 1/gamma2)``. The estimate (and the history)
    is the denoiser output ``x1``.

    Parameters
    ----------
    y : torch.Tensor
        ``(B, M)`` real measurements.
    A : torch.Tensor
        ``(M, N)`` or ``(B, M, N)``, same dtype and device as ``y``.
    noise_var : float or torch.Tensor
        ``sigma^2 > 0``, scalar or ``(B,)``.
    iters : int
        ``T``, number of iterations.
    p : float
        Sparsity in ``(0, 1]`` of the Bernoulli-Gaussian prior.
    signal_var : float
        Variance ``> 0`` of the non-zero entries.
    damping : float
        In ``(0, 1]``; 1 is undamped.
    history : bool or callable
        ``True``: also return the per-iteration estimates ``x1`` ``(T, B, N)``; a callable
        ``f``: also return ``f(x1_t)`` for ``t = 1..T``, stacked.

    Returns
    -------
    torch.Tensor or (torch.Tensor, stack)
        ``x_hat`` ``(B, N)``, and with ``history`` the stack.
    """
    iters = check_positive_int(iters, "iters")
    y, A = _check_yA(y, A)
    p = _check_prob(p)
    signal_var = _check_pos_float(signal_var, "signal_var")
    damping = _check_prob(damping, "damping")
    batch, n = y.shape[0], A.shape[-1]
    gw = 1.0 / _per_sample_col(noise_var, "noise_var", batch, y)
    svd = _SVD(A, y)
    d = svd.s**2
    r2 = torch.zeros(batch, n, dtype=y.dtype, device=y.device)
    gamma2 = torch.full((batch, 1), 1.0 / (p * signal_var), dtype=y.dtype, device=y.device)
    eps = 1e-9
    hist = _History(history)
    logit = _bg_prior_logit(p, y)
    x1 = r2
    for _ in range(iters):
        # LMMSE stage in the V basis
        denom = gw * d + gamma2
        x2 = svd.from_v((gw * svd.s_uty + gamma2 * svd.to_v(r2)) / denom)
        alpha2 = torch.clamp((gamma2 / denom).mean(-1, keepdim=True), eps, 1 - eps)
        gamma1 = _clip_prec(gamma2 * (1 - alpha2) / alpha2)
        r1 = (x2 - alpha2 * r2) / (1 - alpha2)
        # denoising stage
        x1, dx = _bg_mmse(r1, 1.0 / gamma1, logit, signal_var)
        hist.add(x1)
        alpha1 = torch.clamp(dx.mean(-1, keepdim=True), eps, 1 - eps)
        gamma2_new = _clip_prec(gamma1 * (1 - alpha1) / alpha1)
        r2_new = (x1 - alpha1 * r1) / (1 - alpha1)
        if damping < 1:
            r2 = damping * r2_new + (1 - damping) * r2
            gamma2 = 1.0 / (damping / gamma2_new + (1 - damping) / gamma2)
        else:
            r2, gamma2 = r2_new, gamma2_new
    return hist.result(x1)


def oamp(
    y,
    A,
    noise_var,
    iters: int,
    *,
    p: float,
    signal_var: float = 1.0,
    history=False,
):
    """Orthogonal AMP with the LMMSE linear estimator (Ma and Ping 2017, eqs. (13)-(16), (31)).

    ``r_t = x_t + W_t (y - A x_t)`` with the de-correlated LMMSE matrix
    ``W_t = N / tr(W^_t A) W^_t``, ``W^_t = v_t^2 A^T (v_t^2 A A^T + sigma^2 I)^{-1}``, where
    ``v_t^2 = max((||y - A x_t||^2 - M sigma^2) / tr(A^T A), eps)`` estimates the error
    variance of ``x_t``; the effective noise variance of ``r_t`` is
    ``tau_t^2 = (tr(B B^T) v_t^2 + tr(W W^T) sigma^2) / N`` with ``B = I - W A``; and the
    divergence-free denoiser ``x_{t+1} = (eta(r_t) - <eta'> r_t) / (1 - <eta'>)``
    with ``eta`` the Bernoulli-Gaussian MMSE denoiser. The estimate (and the history) is
    ``eta(r_t)``. All matrices are diagonal in the SVD basis of ``A``.

    Parameters
    ----------
    y : torch.Tensor
        ``(B, M)`` real measurements.
    A : torch.Tensor
        ``(M, N)`` or ``(B, M, N)``, same dtype and device as ``y``.
    noise_var : float or torch.Tensor
        ``sigma^2 > 0``, scalar or ``(B,)``.
    iters : int
        ``T``, number of iterations.
    p : float
        Sparsity in ``(0, 1]`` of the Bernoulli-Gaussian prior.
    signal_var : float
        Variance ``> 0`` of the non-zero entries.
    history : bool or callable
        ``True``: also return the per-iteration estimates ``eta(r_t)`` ``(T, B, N)``; a
        callable ``f``: also return ``f(eta(r_t))`` for ``t = 1..T``, stacked.

    Returns
    -------
    torch.Tensor or (torch.Tensor, stack)
        ``x_hat`` ``(B, N)``, and with ``history`` the stack.
    """
    iters = check_positive_int(iters, "iters")
    y, A = _check_yA(y, A)
    p = _check_prob(p)
    signal_var = _check_pos_float(signal_var, "signal_var")
    batch, m, n = y.shape[0], A.shape[-2], A.shape[-1]
    nv = _per_sample_col(noise_var, "noise_var", batch, y)
    svd = _SVD(A, y)
    s, d = svd.s, svd.s**2
    k = min(m, n)
    tr_ata = d.sum(-1, keepdim=True)
    x = torch.zeros(batch, n, dtype=y.dtype, device=y.device)
    eps = 1e-9
    hist = _History(history)
    logit = _bg_prior_logit(p, y)
    xhat = x
    for _ in range(iters):
        # V^T A^T (y - A x) = S^T U^T y - S^T S V^T x
        xv = svd.to_v(x)
        resid_v = svd.s_uty - d * xv  # in the V basis, scaled by S (zero in the null space)
        resid2 = ((y - _mv(A, x)) ** 2).sum(-1, keepdim=True)
        v2 = torch.clamp((resid2 - m * nv) / tr_ata, min=eps)
        w_hat = v2 * s / (v2 * d + nv)  # diag of V^T W^ U (length N, zero beyond k)
        c = n / (w_hat * s).sum(-1, keepdim=True)
        w = c * w_hat
        # r = x + W (y - A x);  V^T W (y - A x) = w * U^T (y - A x) = (w / s) * resid_v
        ratio = torch.zeros_like(w)
        ratio[:, :k] = w[:, :k] / torch.clamp(s[:, :k], min=torch.finfo(y.dtype).tiny)
        r = svd.from_v(xv + ratio * resid_v)
        b = 1 - w * s
        tr_bb = (b[:, :k] ** 2).sum(-1, keepdim=True) + (n - k)
        tau2 = torch.clamp((tr_bb * v2 + (w**2).sum(-1, keepdim=True) * nv) / n, min=eps)
        xhat, dx = _bg_mmse(r, tau2, logit, signal_var)
        hist.add(xhat)
        mean_d = torch.clamp(dx.mean(-1, keepdim=True), max=1 - eps)
        x = (xhat - mean_d * r) / (1 - mean_d)
    return hist.result(xhat)
