"""Sparse recovery: problem generators, ISTA, FISTA, AMP, state evolution, VAMP and OAMP.

The model is the compressed-sensing measurement

.. math::  \\mathbf y = \\mathbf A \\mathbf x + \\mathbf w, \\qquad
           \\mathbf w \\sim \\mathcal N(\\mathbf 0, \\sigma^2 \\mathbf I_M),

with ``A`` of shape ``(M, N)`` (one matrix for the whole batch) or ``(batch, M, N)``,
signals ``x`` of shape ``(batch, N)`` and measurements ``y`` of shape ``(batch, M)``.
Everything is real-valued (float32 or float64); complex inputs are rejected with a
``TypeError``.

Conventions
-----------
* **NMSE** is the *ratio of sums* over the whole batch,
  ``sum ||x_hat - x||^2 / sum ||x||^2`` (:func:`nmse_db`), the book's convention.
* **SNR** follows Borgerding, Schniter and Rangan (2017): the nominal
  ``SNR = E||A x||^2 / E||w||^2`` with ``||A||_F^2 = N``, so that
  ``sigma^2 = p N / M * 10^(-SNR/10)`` for a Bernoulli-Gaussian signal of unit-variance
  non-zeros (:func:`noise_var_for_snr`).
* ``history=True`` makes an algorithm also return its per-iteration estimates stacked
  as ``(iters, batch, N)``; ``history=f`` (a callable) stacks ``f(x_t)`` instead, e.g.
  ``history=lambda xh: nmse_db(xh, x)`` for long runs where storing every iterate
  would cost too much memory.

References: ISTA/FISTA (Beck and Teboulle 2009), AMP and its state evolution
(Donoho, Maleki and Montanari 2009; Bayati and Montanari 2011), VAMP (Rangan, Schniter
and Fletcher 2019, Algorithm 1), OAMP (Ma and Ping 2017, eqs. (13)-(16)).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lib.utils import check_positive_int, check_real, check_tensor, db_to_lin, per_sample

__all__ = [
    "bernoulli_gaussian",
    "gaussian_matrix",
    "ill_conditioned_matrix",
    "haar_orthogonal",
    "noise_var_for_snr",
    "measure",
    "soft_threshold",
    "bg_mmse_denoiser",
    "lasso_objective",
    "lipschitz_constant",
    "ista",
    "fista",
    "fista_momentum",
    "amp",
    "vamp",
    "oamp",
    "state_evolution",
    "se_fixed_point",
    "optimal_alpha",
    "calibrated_lambda",
    "support_oracle",
    "nmse",
    "nmse_db",
    "few_path_channel",
    "DEFAULT_ALPHA",
]

#: Default threshold multiplier of AMP's soft threshold, ``theta_t = alpha * ||z_t|| / sqrt(M)``.
#: It is close to the state-evolution optimum of the book's reference problem
#: (M=250, N=500, p=0.1, 40 dB); use :func:`optimal_alpha` to tune it for another problem.
DEFAULT_ALPHA = 1.1


# --------------------------------------------------------------------------- #
# Validation helpers
# --------------------------------------------------------------------------- #
def _check_prob(p, name: str = "p") -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in (0, 1], got {type(p).__name__}")
    p = float(p)
    if not (0.0 < p <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {p}")
    return p


def _check_pos_float(v, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v}")
    return v


def _check_A(A) -> torch.Tensor:
    check_tensor(A, "A", ndim=(2, 3))
    if A.is_complex():
        raise TypeError(
            f"A must be a real floating tensor (float32/float64), got {A.dtype}; "
            "lib.sparse covers real-valued sparse recovery only"
        )
    check_real(A, "A")
    return A


def _check_yA(y, A) -> tuple[torch.Tensor, torch.Tensor]:
    """Check ``y`` (batch, M) against ``A`` (M, N) or (batch, M, N)."""
    A = _check_A(A)
    m = A.shape[-2]
    if isinstance(y, torch.Tensor) and y.is_complex():
        raise TypeError(f"y must be a real floating tensor (float32/float64), got {y.dtype}")
    check_real(y, "y", shape=("batch", m))
    if A.dim() == 3 and A.shape[0] != y.shape[0]:
        raise ValueError(
            f"A of shape (batch, M, N) = {tuple(A.shape)} must have the same batch size as "
            f"y of shape {tuple(y.shape)}"
        )
    if y.dtype != A.dtype:
        raise TypeError(f"y and A must have the same dtype, got {y.dtype} and {A.dtype}")
    return y, A


def _check_x0(x0, batch: int, n: int, dtype) -> torch.Tensor | None:
    if x0 is None:
        return None
    check_real(x0, "x0", shape=(batch, n))
    return x0.to(dtype)


def _per_sample_col(value, name: str, batch: int, ref: torch.Tensor, **kw) -> torch.Tensor:
    """A scalar or ``(batch,)`` value as a ``(batch, 1)`` column of ``ref``'s dtype."""
    return per_sample(value, name, batch, dtype=ref.dtype, device=ref.device, **kw).unsqueeze(-1)


def _mv(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A x`` for a batch of vectors ``x`` (batch, N) and ``A`` (M, N) or (batch, M, N)."""
    if A.dim() == 2:
        return x @ A.T
    return torch.bmm(A, x.unsqueeze(-1)).squeeze(-1)


def _mtv(A: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``A^T z`` for a batch of vectors ``z`` (batch, M)."""
    if A.dim() == 2:
        return z @ A
    return torch.bmm(A.transpose(1, 2), z.unsqueeze(-1)).squeeze(-1)


class _History:
    """Collects per-iteration estimates (``history=True``) or ``f(estimate)`` (callable)."""

    def __init__(self, history):
        if not (isinstance(history, bool) or callable(history)):
            raise TypeError(f"history must be a bool or a callable, got {type(history).__name__}")
        self.mode = history
        self.items: list = []

    def add(self, x: torch.Tensor) -> None:
        if self.mode is True:
            self.items.append(x)
        elif callable(self.mode):
            self.items.append(self.mode(x))

    def result(self, x: torch.Tensor):
        if self.mode is False:
            return x
        items = self.items
        if items and isinstance(items[0], torch.Tensor):
            stacked = torch.stack(items)
        else:
            stacked = np.asarray(items)
        return x, stacked


# --------------------------------------------------------------------------- #
# Problem generators
# --------------------------------------------------------------------------- #
def bernoulli_gaussian(
    batch: int,
    n: int,
    p: float,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    signal_var: float = 1.0,
) -> torch.Tensor:
    """Bernoulli-Gaussian signals ``x`` of shape ``(batch, n)``.

    Each entry is non-zero with probability ``p`` and then drawn from
    ``N(0, signal_var)``, so ``E[x_i^2] = p * signal_var``.
    """
    batch = check_positive_int(batch, "batch")
    n = check_positive_int(n, "n")
    p = _check_prob(p)
    signal_var = _check_pos_float(signal_var, "signal_var")
    support = torch.rand(batch, n, generator=generator, dtype=dtype) < p
    vals = torch.randn(batch, n, generator=generator, dtype=dtype) * math.sqrt(signal_var)
    return vals * support


def gaussian_matrix(
    m: int,
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    batch: int | None = None,
) -> torch.Tensor:
    """Sensing matrix with i.i.d. ``N(0, 1/m)`` entries: ``(m, n)``, or ``(batch, m, n)``.

    Its columns have unit norm on average and ``E||A||_F^2 = n``.
    """
    m = check_positive_int(m, "m")
    n = check_positive_int(n, "n")
    shape = (m, n) if batch is None else (check_positive_int(batch, "batch"), m, n)
    return torch.randn(*shape, generator=generator, dtype=dtype) / math.sqrt(m)


def haar_orthogonal(
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    batch: int | None = None,
) -> torch.Tensor:
    """Haar-distributed random orthogonal matrix ``(n, n)`` (or ``(batch, n, n)``).

    QR decomposition of a Gaussian matrix with the signs of ``diag(R)`` moved into ``Q``
    (Mezzadri 2007), which makes the distribution exactly uniform.
    """
    n = check_positive_int(n, "n")
    shape = (n, n) if batch is None else (check_positive_int(batch, "batch"), n, n)
    g = torch.randn(*shape, generator=generator, dtype=dtype)
    q, r = torch.linalg.qr(g)
    sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    sign[sign == 0] = 1
    return q * sign.unsqueeze(-2)


def ill_conditioned_matrix(
    m: int,
    n: int,
    cond: float,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    batch: int | None = None,
) -> torch.Tensor:
    """Sensing matrix ``U diag(s) V^T`` with a prescribed condition number.

    ``U`` and ``V`` are Haar-random orthogonal matrices and the ``min(m, n)`` singular
    values are geometrically spaced with ``s_max / s_min = cond`` (Rangan, Schniter and
    Fletcher 2019, Sec. VII), scaled so that ``||A||_F^2 = n`` exactly, like the Gaussian
    matrix on average. ``cond = 1`` gives a row-orthogonal matrix.
    """
    m = check_positive_int(m, "m")
    n = check_positive_int(n, "n")
    cond = _check_pos_float(cond, "cond")
    if cond < 1:
        raise ValueError(
            f"cond must be >= 1 (ratio of largest to smallest singular value), got {cond}"
        )
    k = min(m, n)
    s = cond ** (-torch.linspace(0.0, 1.0, k, dtype=dtype))
    s = s * math.sqrt(n / float((s**2).sum()))
    u = haar_orthogonal(m, generator=generator, dtype=dtype, batch=batch)[..., :, :k]
    v = haar_orthogonal(n, generator=generator, dtype=dtype, batch=batch)[..., :, :k]
    return (u * s) @ v.transpose(-2, -1)


def noise_var_for_snr(
    A: torch.Tensor, p: float, snr_db: float, *, signal_var: float = 1.0
) -> float:
    """Noise variance for a given SNR, as in Borgerding, Schniter and Rangan (2017).

    ``sigma^2 = p * signal_var * N / M * 10^(-snr_db / 10)``. For a matrix with
    ``||A||_F^2 = N`` (exactly for :func:`ill_conditioned_matrix`, on average for
    :func:`gaussian_matrix`) this is ``E||A x||^2 / M / SNR``: the nominal SNR per
    measurement. Only the shape of ``A`` is used.
    """
    A = _check_A(A)
    p = _check_prob(p)
    signal_var = _check_pos_float(signal_var, "signal_var")
    if isinstance(snr_db, bool) or not isinstance(snr_db, (int, float, np.integer, np.floating)):
        raise TypeError(f"snr_db must be a number, got {type(snr_db).__name__}")
    m, n = A.shape[-2], A.shape[-1]
    return p * signal_var * n / m * db_to_lin(-float(snr_db))


def measure(
    A: torch.Tensor,
    x: torch.Tensor,
    snr_db: float,
    p: float,
    *,
    generator: torch.Generator | None = None,
    signal_var: float = 1.0,
) -> tuple[torch.Tensor, float]:
    """Noisy measurements ``y = A x + w`` of shape ``(batch, M)`` and the noise variance used.

    The noise variance is :func:`noise_var_for_snr` ``(A, p, snr_db)``.
    """
    A = _check_A(A)
    n = A.shape[-1]
    check_real(x, "x", shape=("batch", n))
    if A.dim() == 3 and A.shape[0] != x.shape[0]:
        raise ValueError(f"A {tuple(A.shape)} and x {tuple(x.shape)} must have the same batch size")
    noise_var = noise_var_for_snr(A, p, snr_db, signal_var=signal_var)
    clean = _mv(A, x.to(A.dtype))
    w = torch.randn(clean.shape, generator=generator, dtype=A.dtype) * math.sqrt(noise_var)
    return clean + w, noise_var


# --------------------------------------------------------------------------- #
# Denoisers
# --------------------------------------------------------------------------- #
def _as_broadcast(t, r: torch.Tensor, name: str, *, allow_zero: bool) -> torch.Tensor:
    """A scalar, a ``(batch,)`` tensor or a tensor broadcastable to ``r``, checked >= 0."""
    if isinstance(t, bool):
        raise TypeError(f"{name} must be a number or a tensor, got bool")
    if isinstance(t, (int, float, np.integer, np.floating)):
        t = torch.tensor(float(t), dtype=r.real.dtype, device=r.device)
    elif not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a number or a torch.Tensor, got {type(t).__name__}")
    if t.is_complex():
        raise TypeError(f"{name} must be real, got {t.dtype}")
    if r.dim() >= 2 and t.dim() == 1 and t.shape[0] == r.shape[0]:
        t = t.reshape(-1, *([1] * (r.dim() - 1)))  # a (batch,) tensor is one value per sample
    try:
        torch.broadcast_shapes(t.shape, r.shape)
    except RuntimeError:
        raise ValueError(
            f"{name} must be a scalar, a (batch,) tensor or broadcastable to {tuple(r.shape)}, "
            f"got shape {tuple(t.shape)}"
        ) from None
    if bool((t < 0).any()) or (not allow_zero and bool((t == 0).any())):
        raise ValueError(
            f"{name} must be {'>= 0' if allow_zero else '> 0'}, got min {float(t.min()):.4g}"
        )
    return t


def soft_threshold(r: torch.Tensor, tau) -> torch.Tensor:
    """Soft threshold ``eta(r; tau) = sign(r) max(|r| - tau, 0)``, the proximal map of ``tau |.|``.

    ``tau >= 0`` is a scalar, a per-sample ``(batch,)`` tensor or a tensor broadcastable
    to ``r``. For complex ``r`` the magnitude is shrunk and the phase kept.
    Differentiable almost everywhere (autograd works for learned thresholds).
    """
    check_tensor(r, "r")
    tau = _as_broadcast(tau, r, "tau", allow_zero=True)
    mag = r.abs()
    if r.is_complex():
        scale = torch.clamp(mag - tau, min=0) / torch.clamp(mag, min=torch.finfo(mag.dtype).tiny)
        return r * scale
    return torch.sign(r) * torch.clamp(mag - tau, min=0)


def bg_mmse_denoiser(
    r: torch.Tensor, tau2, p: float, signal_var: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean of a Bernoulli-Gaussian ``x`` given ``r = x + N(0, tau2)`` and its derivative.

    Prior: ``x = 0`` with probability ``1 - p``, ``x ~ N(0, signal_var)`` with probability ``p``.
    With ``g = s / (s + tau2)`` and the posterior probability of a non-zero

    ``pi(r) = sigmoid( log(p/(1-p)) + 0.5 log(tau2/(s+tau2)) + r^2 g / (2 tau2) )``,

    the estimate is ``pi(r) g r`` and its derivative
    ``g pi(r) (1 + (1 - pi(r)) g r^2 / tau2)``; the derivative equals the posterior
    variance divided by ``tau2``. ``tau2 > 0`` may be a scalar, a per-sample ``(batch,)``
    tensor or broadcastable to ``r``; ``p`` may be a float or a tensor (for learning).
    """
    check_real(r, "r")
    tau2 = _as_broadcast(tau2, r, "tau2", allow_zero=False)
    if isinstance(p, torch.Tensor):
        if bool(((p <= 0) | (p > 1)).any()):
            raise ValueError("p must be in (0, 1]")
        p_t = p.to(r.dtype)
    else:
        p_t = torch.tensor(_check_prob(p), dtype=r.dtype, device=r.device)
    s = (
        _check_pos_float(signal_var, "signal_var")
        if not isinstance(signal_var, torch.Tensor)
        else signal_var
    )
    g = s / (s + tau2)
    # logit of the posterior support probability; p = 1 means always non-zero
    prior_logit = (
        torch.log(p_t) - torch.log1p(-p_t) if bool((p_t < 1).all()) else torch.full_like(p_t, 1e30)
    )
    llr = prior_logit + 0.5 * torch.log(tau2 / (s + tau2)) + 0.5 * r**2 * g / tau2
    pi = torch.sigmoid(llr)
    xhat = pi * g * r
    deriv = g * pi * (1 + (1 - pi) * g * r**2 / tau2)
    return xhat, deriv


# --------------------------------------------------------------------------- #
# ISTA and FISTA
# --------------------------------------------------------------------------- #
def lasso_objective(y: torch.Tensor, A: torch.Tensor, x: torch.Tensor, lam) -> torch.Tensor:
    """LASSO objective ``0.5 ||y - A x||^2 + lam ||x||_1`` per sample, shape ``(batch,)``."""
    y, A = _check_yA(y, A)
    check_real(x, "x", shape=(y.shape[0], A.shape[-1]))
    lam = per_sample(lam, "lam", y.shape[0], dtype=y.dtype, allow_zero=True)
    return 0.5 * ((y - _mv(A, x)) ** 2).sum(-1) + lam * x.abs().sum(-1)


def lipschitz_constant(A: torch.Tensor) -> torch.Tensor:
    """``L = ||A||_2^2`` (largest eigenvalue of ``A^T A``): scalar tensor, or ``(batch,)``."""
    A = _check_A(A)
    return torch.linalg.matrix_norm(A, ord=2) ** 2


def _ista_setup(y, A, lam, step, x0):
    y, A = _check_yA(y, A)
    batch, n = y.shape[0], A.shape[-1]
    lam = _per_sample_col(lam, "lam", batch, y, allow_zero=True)
    if step is None:
        step = 1.0 / lipschitz_constant(A)
    step = _per_sample_col(step, "step", batch, y)
    x0 = _check_x0(x0, batch, n, y.dtype)
    x = torch.zeros(batch, n, dtype=y.dtype, device=y.device) if x0 is None else x0.clone()
    return y, A, lam, step, x


def ista(y, A, lam, iters: int, *, step=None, x0=None, history=False):
    """Iterative soft thresholding for the LASSO ``min 0.5||y - A x||^2 + lam ||x||_1``.

    ``x_{t+1} = eta(x_t + step A^T (y - A x_t); step * lam)`` with ``step = 1/L``,
    ``L = ||A||_2^2`` by default (Beck and Teboulle 2009, eq. (1.4)). ``lam`` and ``step``
    are scalars or ``(batch,)`` tensors. Returns ``x_hat`` ``(batch, N)``, and with
    ``history`` also the per-iteration estimates ``(iters, batch, N)`` (see module doc).
    """
    iters = check_positive_int(iters, "iters")
    y, A, lam, step, x = _ista_setup(y, A, lam, step, x0)
    hist = _History(history)
    for _ in range(iters):
        x = soft_threshold(x + step * _mtv(A, y - _mv(A, x)), step * lam)
        hist.add(x)
    return hist.result(x)


def fista_momentum(t: float) -> float:
    """FISTA's momentum ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2`` (Beck and Teboulle, eq. (4.2))."""
    return (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0


def fista(y, A, lam, iters: int, *, step=None, x0=None, history=False, momentum=None):
    """Fast ISTA (Beck and Teboulle 2009, Sec. 4): ISTA on an extrapolated point.

    ``x_k = eta(v_k + step A^T (y - A v_k); step lam)``,
    ``t_{k+1} = momentum(t_k)``, ``v_{k+1} = x_k + (t_k - 1)/t_{k+1} (x_k - x_{k-1})``,
    starting from ``t_1 = 1``, ``v_1 = x_0``. Same signature as :func:`ista`;
    ``momentum`` (default :func:`fista_momentum`) lets the reader plug in their own.
    """
    iters = check_positive_int(iters, "iters")
    y, A, lam, step, x = _ista_setup(y, A, lam, step, x0)
    momentum = fista_momentum if momentum is None else momentum
    hist = _History(history)
    v, t = x, 1.0
    for _ in range(iters):
        x_new = soft_threshold(v + step * _mtv(A, y - _mv(A, v)), step * lam)
        t_new = momentum(t)
        v = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
        hist.add(x)
    return hist.result(x)


# --------------------------------------------------------------------------- #
# AMP
# --------------------------------------------------------------------------- #
def _resolve_denoiser(denoiser, alpha, p, signal_var):
    """A function ``(r, tau2) -> (xhat, derivative)``; ``tau2`` is a ``(batch, 1)`` column."""
    if callable(denoiser):
        return denoiser
    if denoiser == "soft":
        alpha = _check_pos_float(alpha, "alpha", allow_zero=True)

        def f(r, tau2):
            theta = alpha * torch.sqrt(tau2)
            xhat = soft_threshold(r, theta)
            return xhat, (r.abs() > theta).to(r.dtype)

        return f
    if denoiser in ("bg", "mmse"):
        if p is None:
            raise ValueError("the Bernoulli-Gaussian denoiser needs the sparsity p (p=...)")
        p = _check_prob(p)

        def f(r, tau2):
            return bg_mmse_denoiser(r, tau2, p, signal_var)

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
):
    """Approximate message passing (Donoho, Maleki and Montanari 2009).

    Starting from ``x_0 = 0``, ``z_{-1} = 0``:

    ``z_t = y - A x_t + (N/M) z_{t-1} <eta'(r_{t-1})>`` (Onsager correction),
    ``tau2_t = ||z_t||^2 / M``, ``r_t = x_t + A^T z_t``, ``x_{t+1} = eta(r_t; tau2_t)``.

    ``denoiser="soft"`` uses ``eta = soft_threshold(r, alpha * sqrt(tau2))``;
    ``denoiser="bg"`` the Bernoulli-Gaussian posterior mean (needs ``p``), i.e. Bayes-optimal
    AMP; a callable ``f(r, tau2) -> (xhat, derivative)`` is also accepted (``tau2`` has
    shape ``(batch, 1)``). Valid for i.i.d. Gaussian-like ``A`` with ``||A||_F^2 ~ N``.
    ``onsager=False`` drops the correction term (for demonstrations only: the iteration
    then becomes iterative thresholding with AMP's threshold rule and loses its state evolution).
    Returns ``x_hat`` (and the history, see the module doc).
    """
    iters = check_positive_int(iters, "iters")
    y, A = _check_yA(y, A)
    eta = _resolve_denoiser(denoiser, alpha, p, signal_var)
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
    """Vector AMP with the Bernoulli-Gaussian MMSE denoiser (Rangan et al. 2019, Algorithm 1).

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
    """
    iters = check_positive_int(iters, "iters")
    y, A = _check_yA(y, A)
    p = _check_prob(p)
    damping = _check_pos_float(damping, "damping")
    if damping > 1:
        raise ValueError(f"damping must be in (0, 1], got {damping}")
    batch, n = y.shape[0], A.shape[-1]
    gw = 1.0 / _per_sample_col(noise_var, "noise_var", batch, y)
    svd = _SVD(A, y)
    d = svd.s**2
    r2 = torch.zeros(batch, n, dtype=y.dtype, device=y.device)
    gamma2 = torch.full((batch, 1), 1.0 / (p * signal_var), dtype=y.dtype, device=y.device)
    eps = 1e-9
    hist = _History(history)
    x1 = r2
    for _ in range(iters):
        # LMMSE stage in the V basis
        denom = gw * d + gamma2
        x2 = svd.from_v((gw * svd.s_uty + gamma2 * svd.to_v(r2)) / denom)
        alpha2 = torch.clamp((gamma2 / denom).mean(-1, keepdim=True), eps, 1 - eps)
        gamma1 = _clip_prec(gamma2 * (1 - alpha2) / alpha2)
        r1 = (x2 - alpha2 * r2) / (1 - alpha2)
        # denoising stage
        x1, dx = bg_mmse_denoiser(r1, 1.0 / gamma1, p, signal_var)
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
    """
    iters = check_positive_int(iters, "iters")
    y, A = _check_yA(y, A)
    p = _check_prob(p)
    batch, m, n = y.shape[0], A.shape[-2], A.shape[-1]
    nv = _per_sample_col(noise_var, "noise_var", batch, y)
    svd = _SVD(A, y)
    s, d = svd.s, svd.s**2
    k = min(m, n)
    tr_ata = d.sum(-1, keepdim=True)
    x = torch.zeros(batch, n, dtype=y.dtype, device=y.device)
    eps = 1e-9
    hist = _History(history)
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
        xhat, dx = bg_mmse_denoiser(r, tau2, p, signal_var)
        hist.add(xhat)
        mean_d = torch.clamp(dx.mean(-1, keepdim=True), max=1 - eps)
        x = (xhat - mean_d * r) / (1 - mean_d)
    return hist.result(xhat)


# --------------------------------------------------------------------------- #
# State evolution (deterministic quadrature)
# --------------------------------------------------------------------------- #
def _parse_delta(delta) -> float:
    if isinstance(delta, tuple):
        if len(delta) != 2:
            raise ValueError(f"delta must be M/N or a tuple (M, N), got {delta!r}")
        m = check_positive_int(delta[0], "M")
        n = check_positive_int(delta[1], "N")
        return m / n
    return _check_pos_float(delta, "delta")


def _np_denoiser(denoiser, alpha, p, signal_var):
    """Scalar denoiser on NumPy arrays: ``f(r, tau2) -> xhat``."""
    if callable(denoiser):

        def f(r, tau2):
            out = denoiser(torch.as_tensor(r), torch.tensor(tau2, dtype=torch.float64))
            out = out[0] if isinstance(out, tuple) else out
            return out.detach().numpy()

        return f
    if denoiser == "soft":
        alpha = _check_pos_float(alpha, "alpha", allow_zero=True)
        return lambda r, tau2: np.sign(r) * np.maximum(np.abs(r) - alpha * math.sqrt(tau2), 0.0)
    if denoiser in ("bg", "mmse"):
        if p is None:
            raise ValueError("the Bernoulli-Gaussian denoiser needs the sparsity p (p=...)")
        return lambda r, tau2: _np_bg_mean(r, tau2, p, signal_var)
    raise ValueError(f"denoiser must be 'soft', 'bg' or a callable, got {denoiser!r}")


def _np_bg_mean(r, tau2, p, s):
    g = s / (s + tau2)
    prior_logit = math.log(p) - math.log1p(-p) if p < 1 else 1e30
    llr = prior_logit + 0.5 * math.log(tau2 / (s + tau2)) + 0.5 * r**2 * g / tau2
    pi = 0.5 * (1 + np.tanh(0.5 * llr))
    return pi * g * r


def _scalar_mse(eta, tau2: float, p: float, s: float, n_grid: int) -> tuple[float, float]:
    """``E[(eta(X + sqrt(tau2) Z) - X)^2]`` and the mean derivative ``E[eta']``, by quadrature.

    The two prior components are integrated separately. For ``X = 0``: ``R = sqrt(tau2) Z``.
    For ``X ~ N(0, s)``: ``R ~ N(0, s + tau2)`` and ``X | R ~ N(g R, g tau2)``,
    ``g = s/(s+tau2)``, so the error is ``E_R[(eta(R) - g R)^2] + g tau2``. Each is a 1-D
    integral over a grid fine at both scales ``sqrt(tau2)`` and ``sqrt(s + tau2)``.
    ``E[eta']`` uses finite differences of ``eta`` on the grid. Returns ``(mse, mean derivative)``.
    """
    sd0, sd1 = math.sqrt(tau2), math.sqrt(s + tau2)
    grid = np.unique(
        np.concatenate(
            [np.linspace(-12 * sd0, 12 * sd0, n_grid), np.linspace(-12 * sd1, 12 * sd1, n_grid)]
        )
    )
    e = eta(grid, tau2)
    dens0 = np.exp(-0.5 * grid**2 / tau2) / math.sqrt(2 * math.pi * tau2)
    dens1 = np.exp(-0.5 * grid**2 / (s + tau2)) / math.sqrt(2 * math.pi * (s + tau2))
    g = s / (s + tau2)
    trap = np.trapezoid
    mse0 = trap(dens0 * e**2, grid)
    mse1 = trap(dens1 * (e - g * grid) ** 2, grid) + g * tau2
    de = np.gradient(e, grid)
    dmean = (1 - p) * trap(dens0 * de, grid) + p * trap(dens1 * de, grid)
    return (1 - p) * mse0 + p * mse1, float(dmean)


def state_evolution(
    delta,
    p: float,
    noise_var: float,
    iters: int,
    *,
    denoiser="soft",
    alpha: float = DEFAULT_ALPHA,
    signal_var: float = 1.0,
    n_grid: int = 4001,
    full: bool = False,
):
    """AMP's state evolution: the predicted NMSE (linear) of ``x_t`` for ``t = 1..iters``.

    The scalar recursion (Bayati and Montanari 2011) for ``x_0 = 0``:

    ``tau2_0 = sigma^2 + p s / delta``,
    ``mse_{t+1} = E[(eta(X + tau_t Z; tau2_t) - X)^2]``,
    ``tau2_{t+1} = sigma^2 + mse_{t+1} / delta``,

    with ``X`` Bernoulli-Gaussian, ``Z ~ N(0, 1)``, ``delta = M/N`` (pass a float or a
    tuple ``(M, N)``), ``s = signal_var``. The expectation is a deterministic 1-D quadrature
    (see ``_scalar_mse``). Entry ``t - 1`` of the result predicts ``nmse(x_t, x)`` of
    :func:`amp` with the same denoiser. With ``full=True`` returns a dict with ``nmse``,
    ``mse``, ``tau2`` (the effective noise variance feeding iteration t) and ``dmean``
    (the mean derivative ``<eta'>``).
    """
    delta = _parse_delta(delta)
    p = _check_prob(p)
    noise_var = _check_pos_float(noise_var, "noise_var", allow_zero=True)
    iters = check_positive_int(iters, "iters")
    s = _check_pos_float(signal_var, "signal_var")
    eta = _np_denoiser(denoiser, alpha, p, s)
    tau2 = noise_var + p * s / delta
    mses, taus, dms = [], [], []
    for _ in range(iters):
        tau2 = max(tau2, 1e-30)
        taus.append(tau2)
        mse, dm = _scalar_mse(eta, tau2, p, s, n_grid)
        mses.append(mse)
        dms.append(dm)
        tau2 = noise_var + mse / delta
    mse = np.asarray(mses)
    nm = mse / (p * s)
    if full:
        return {"nmse": nm, "mse": mse, "tau2": np.asarray(taus), "dmean": np.asarray(dms)}
    return nm


def se_fixed_point(
    delta,
    p: float,
    noise_var: float,
    *,
    denoiser="soft",
    alpha: float = DEFAULT_ALPHA,
    signal_var: float = 1.0,
    max_iters: int = 2000,
    rtol: float = 1e-7,
    n_grid: int = 4001,
) -> dict:
    """Run :func:`state_evolution` to its fixed point (relative change of ``tau2`` below ``rtol``).

    Returns a dict with ``nmse`` (linear), ``tau2``, ``dmean`` and ``iters`` (iterations used).
    With ``denoiser="bg"`` the fixed point's NMSE is the Bayes-optimal AMP limit.
    """
    delta = _parse_delta(delta)
    p = _check_prob(p)
    noise_var = _check_pos_float(noise_var, "noise_var", allow_zero=True)
    s = _check_pos_float(signal_var, "signal_var")
    eta = _np_denoiser(denoiser, alpha, p, s)
    tau2 = noise_var + p * s / delta
    used = max_iters
    for it in range(1, max_iters + 1):
        tau2 = max(tau2, 1e-30)
        mse, dm = _scalar_mse(eta, tau2, p, s, n_grid)
        new = noise_var + mse / delta
        converged = abs(new - tau2) <= rtol * tau2
        tau2 = new
        if converged:
            used = it
            break
    mse, dm = _scalar_mse(eta, tau2, p, s, n_grid)
    return {"nmse": mse / (p * s), "tau2": tau2, "dmean": dm, "iters": used}


def optimal_alpha(
    delta, p: float, noise_var: float, *, bounds=(0.3, 3.0), signal_var: float = 1.0
) -> tuple[float, float]:
    """The soft-threshold multiplier minimising AMP's state-evolution fixed-point NMSE.

    A bounded scalar search (``scipy.optimize.minimize_scalar``) over ``alpha`` in ``bounds``.
    Returns ``(alpha, nmse)`` with ``nmse`` linear.
    """
    from scipy.optimize import minimize_scalar

    def obj(a):
        fp = se_fixed_point(
            delta, p, noise_var, denoiser="soft", alpha=float(a), signal_var=signal_var, rtol=1e-6
        )
        return math.log(fp["nmse"])

    res = minimize_scalar(obj, bounds=bounds, method="bounded", options={"xatol": 1e-3})
    return float(res.x), float(math.exp(res.fun))


def calibrated_lambda(
    delta, p: float, noise_var: float, alpha: float, *, signal_var: float = 1.0
) -> float:
    """The LASSO ``lam`` whose solution AMP's soft-threshold fixed point is (large-system limit).

    At a fixed point of AMP, ``z (1 - <eta'>/delta) = y - A x`` and ``x = eta(x + A^T z; theta)``,
    which are the LASSO optimality conditions with
    ``lam = theta (1 - <eta'>/delta)``, ``theta = alpha tau`` (Donoho, Maleki and Montanari 2009;
    Bayati and Montanari 2012, eq. (1.8)).
    """
    delta = _parse_delta(delta)
    fp = se_fixed_point(delta, p, noise_var, denoiser="soft", alpha=alpha, signal_var=signal_var)
    return float(alpha * math.sqrt(fp["tau2"]) * (1 - fp["dmean"] / delta))


# --------------------------------------------------------------------------- #
# Oracle and metric
# --------------------------------------------------------------------------- #
def support_oracle(y, A, x_support_mask) -> torch.Tensor:
    """Least squares on the true support: the genie-aided limit of any sparse estimator.

    ``x_hat_S = argmin ||y - A_S x_S||^2`` and ``x_hat = 0`` off the support ``S`` given by the
    boolean ``x_support_mask`` ``(batch, N)`` (e.g. ``x != 0``). Supports are gathered
    and zero-padded to the largest one, so the cost is that of ``(batch, k, k)`` solves.
    """
    y, A = _check_yA(y, A)
    batch, m, n = y.shape[0], A.shape[-2], A.shape[-1]
    check_tensor(x_support_mask, "x_support_mask", shape=(batch, n))
    mask = x_support_mask.to(torch.bool)
    counts = mask.sum(-1)
    kmax = int(counts.max()) if batch else 0
    if kmax > m:
        raise ValueError(
            f"a support has {kmax} > M = {m} entries: least squares is underdetermined"
        )
    out = torch.zeros(batch, n, dtype=y.dtype, device=y.device)
    if kmax == 0:
        return out
    # indices of the support first (stable sort of ~mask), padded with off-support indices
    order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)[:, :kmax]
    valid = torch.arange(kmax, device=y.device).unsqueeze(0) < counts.unsqueeze(-1)  # (batch, kmax)
    a_full = A if A.dim() == 3 else A.unsqueeze(0).expand(batch, m, n)
    a_s = torch.gather(a_full, 2, order.unsqueeze(1).expand(batch, m, kmax)) * valid.unsqueeze(1)
    gram = a_s.transpose(1, 2) @ a_s + torch.diag_embed((~valid).to(y.dtype))
    rhs = (a_s.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1)
    xs = torch.linalg.solve(gram, rhs) * valid
    out.scatter_(1, order, xs)
    # scatter onto padded indices wrote zeros there; restore exact zeros off the support
    return out * mask


def _check_pair(xhat, x):
    check_tensor(x, "x", ndim=2)
    check_tensor(xhat, "xhat", ndim=(2, 3))
    if tuple(xhat.shape[-2:]) != tuple(x.shape):
        raise ValueError(
            f"xhat must have shape {tuple(x.shape)} or (iters, {x.shape[0]}, {x.shape[1]}), "
            f"got {tuple(xhat.shape)}"
        )
    if float((x.abs() ** 2).sum()) == 0:
        raise ValueError("x is all zero: the NMSE is undefined")


def nmse(xhat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Linear NMSE as a ratio of sums, ``sum ||xhat - x||^2 / sum ||x||^2`` over the batch.

    ``xhat`` is ``(batch, N)`` (a 0-d tensor is returned) or ``(iters, batch, N)`` (one value
    per iteration). Differentiable.
    """
    _check_pair(xhat, x)
    err = ((xhat - x).abs() ** 2).sum(dim=(-2, -1))
    return err / (x.abs() ** 2).sum()


def nmse_db(xhat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """:func:`nmse` in dB: ``10 log10(sum ||xhat - x||^2 / sum ||x||^2)`` (ratio of sums).

    The book's convention in every chapter; use ``float(...)`` for a single value.
    """
    return 10.0 * torch.log10(nmse(xhat, x))


# --------------------------------------------------------------------------- #
# Why channels are sparse
# --------------------------------------------------------------------------- #
def few_path_channel(
    n_antennas: int,
    n_paths: int,
    *,
    generator: torch.Generator | None = None,
    on_grid: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A few-path uniform-linear-array channel and its angular-domain (DFT) representation.

    ``h = sum_l g_l a(theta_l) / sqrt(n_paths)`` with half-wavelength steering vectors
    ``a(theta)_k = exp(j pi k sin theta)``, ``g_l ~ CN(0, 1)`` and ``sin theta_l`` uniform in
    [-1, 1) (``on_grid=True`` puts ``sin theta_l`` on the DFT grid ``2 i / n_antennas - 1``).
    Returns ``(h, h_angular)`` with ``h_angular = F h`` for the unitary DFT ``F``, both
    complex ``(n_antennas,)``; ``h_angular`` has about ``n_paths`` significant entries
    (exactly ``n_paths`` on the grid, with leakage off the grid).
    """
    n = check_positive_int(n_antennas, "n_antennas")
    L = check_positive_int(n_paths, "n_paths")
    if on_grid:
        idx = torch.randperm(n, generator=generator)[:L].to(torch.float64)
        u = 2 * idx / n - 1
    else:
        u = 2 * torch.rand(L, generator=generator, dtype=torch.float64) - 1
    g = torch.complex(
        torch.randn(L, generator=generator, dtype=torch.float64),
        torch.randn(L, generator=generator, dtype=torch.float64),
    ) / math.sqrt(2)
    k = torch.arange(n, dtype=torch.float64)
    steer = torch.exp(1j * math.pi * k.unsqueeze(-1) * u.unsqueeze(0))  # (n, L)
    h = steer @ g / math.sqrt(L)
    h_ang = torch.fft.fft(h, norm="ortho")
    return h, h_ang
