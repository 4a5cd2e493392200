"""Message-passing networks for sparse recovery: learned AMP (LAMP) and OAMP-Net.

Chapters *Unrolling ISTA* and *Distribution shift*. Same conventions as
:mod:`lib.learn.unrolled_sparse`: ``y = A x + w``, ``A`` ``(M, N)`` (a non-persistent buffer,
swappable with :func:`lib.learn.with_matrix`), ``model(y, noise_var)`` returns the stacked
per-layer estimates ``(T, B, N)``.

* :class:`~lib.learn.LAMP` (Borgerding, Schniter & Rangan 2017, tied matrix): AMP with the Onsager
  term
  kept and a learned denoiser per layer (soft threshold or Bernoulli-Gaussian MMSE);
* :class:`~lib.learn.OAMPNet` (He, Wen & Jin 2018): OAMP with a learned LMMSE step and
  error-variance
  scale; at its initialisation it is :func:`lib.sparse.oamp`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lib.core.checks import check_positive_int, check_real, per_sample
from lib.learn.unrolled_sparse import _EPS, bg_mmse, soft
from lib.learn.unrolling import UnrolledModel

__all__ = ["LAMP", "OAMPNet"]


# --------------------------------------------------------------------------- #
# Learned AMP
# --------------------------------------------------------------------------- #
class _LAMPLayer(nn.Module):
    def __init__(self, kind, alpha, p, dtype):
        super().__init__()
        if kind == "soft":
            self.alpha = nn.Parameter(torch.tensor(float(alpha), dtype=dtype))
        else:  # Bernoulli-Gaussian: learned logit of p, log signal variance, log noise scale
            self.logit_p = nn.Parameter(torch.tensor(math.log(p / (1 - p)), dtype=dtype))
            self.log_var = nn.Parameter(torch.tensor(0.0, dtype=dtype))
            self.log_scale = nn.Parameter(torch.tensor(0.0, dtype=dtype))


class LAMP(UnrolledModel):
    """Learned AMP with the matched filter ``A^T`` and the Onsager correction kept fixed.

    ``z_t = y - A x_t + (N/M) <eta'_{t-1}> z_{t-1}``, ``r_t = x_t + A^T z_t``,
    ``x_{t+1} = eta_t(r_t; sigma_t^2)``, ``sigma_t^2 = ||z_t||^2 / M`` (AMP's effective-noise
    estimate). ``denoiser="soft"``: ``eta_t = soft(., alpha_t sigma_t)`` (1 parameter per layer,
    AMP with a tuned threshold sequence); ``denoiser="bg"``: Bernoulli-Gaussian MMSE denoiser with
    learned ``p_t``, signal variance ``s_t`` and noise scale ``c_t`` (``tau^2 = c_t sigma_t^2``),
    3 parameters per layer. The Onsager term uses the exact derivative of the learned denoiser, so
    the ``r_t = x + Gaussian`` structure that state evolution predicts is preserved.
    Assumes ``A`` with roughly unit-norm columns (as ``gaussian_matrix`` draws it).

    Parameters
    ----------
    A : real tensor ``(M, N)``
    T : int
    denoiser : {"soft", "bg"}
    alpha : float
        Initial threshold multiplier (soft).
    p : float
        Initial activity (Bernoulli-Gaussian), in ``(0, 1)``.

    ``model(y, noise_var=None)`` with ``y`` ``(B, M)`` returns ``(T, B, N)``.
    """

    def __init__(self, A, T, *, denoiser="soft", alpha=1.5, p=0.1):
        check_real(A, "A", ndim=2)
        T = check_positive_int(T, "T")
        if denoiser not in ("soft", "bg"):
            raise ValueError(f"denoiser must be 'soft' or 'bg', got {denoiser!r}")
        if denoiser == "bg" and not 0 < p < 1:
            raise ValueError(f"p must be in (0, 1), got {p}")
        self.kind = denoiser
        super().__init__([_LAMPLayer(denoiser, alpha, p, A.dtype) for _ in range(T)])
        self._set_matrix(A)

    def _set_matrix(self, A):
        self._buffers.pop("A", None)
        self.register_buffer("A", A.clone(), persistent=False)

    def init_state(self, y, noise_var=None):
        check_real(y, "y", shape=("batch", self.A.shape[0]))
        B, N = y.shape[0], self.A.shape[1]
        x = torch.zeros(B, N, dtype=y.dtype, device=y.device)
        z = torch.zeros_like(y)
        onsager = torch.zeros(B, 1, dtype=y.dtype, device=y.device)
        return (x, z, onsager)

    def layer_forward(self, layer, state, t, y, noise_var=None):
        x, z_prev, b = state
        M, N = self.A.shape
        z = y - x @ self.A.T + b * z_prev
        r = x + z @ self.A
        sigma2 = torch.clamp((z**2).sum(1, keepdim=True) / M, min=_EPS)
        if self.kind == "soft":
            theta = layer.alpha * sigma2.sqrt()
            x_new = soft(r, theta)
            deriv = (r.abs() > theta).to(r.dtype)
        else:
            x_new, deriv = bg_mmse(
                r,
                torch.exp(layer.log_scale) * sigma2,
                torch.sigmoid(layer.logit_p),
                torch.exp(layer.log_var),
            )
        b_new = (N / M) * deriv.mean(1, keepdim=True)
        return (x_new, z, b_new)

    def readout(self, state):
        return state[0]


# --------------------------------------------------------------------------- #
# OAMP-Net
# --------------------------------------------------------------------------- #
class _OAMPLayer(nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.gamma = nn.Parameter(torch.tensor(1.0, dtype=dtype))
        self.theta = nn.Parameter(torch.tensor(1.0, dtype=dtype))


class OAMPNet(UnrolledModel):
    """OAMP-Net: OAMP with a learned LMMSE step ``gamma_t`` and error-variance scale ``theta_t``.

    Layer ``t`` (He, Wen & Jin 2018, with the divergence-free denoiser of Ma & Ping 2017):

    * error variance of the fed-back estimate ``x_t`` from the residual,
      ``v_t^2 = max((||y - A x_t||^2 - M sigma^2) / tr(A^T A), eps)``;
    * de-correlated LMMSE estimator ``W_t = N / tr(What_t A) What_t``,
      ``What_t = v_t^2 A^T (v_t^2 A A^T + sigma^2 I)^{-1}`` (so ``tr(W_t A) = N``), and
      ``r_t = x_t + gamma_t W_t (y - A x_t)``;
    * effective noise variance of ``r_t``,
      ``tau_t^2 = tr(C_t C_t^T) v_t^2 / N + theta_t^2 sigma^2 tr(W_t W_t^T) / N`` with
      ``C_t = I - theta_t W_t A``;
    * MMSE (Bernoulli-Gaussian) denoiser ``xhat_{t+1} = eta(r_t; tau_t^2)`` -- the layer's output
      (readout) -- and the **divergence-free** estimate fed to the next layer,
      ``x_{t+1} = (eta(r_t) - <eta'(r_t)> r_t) / (1 - <eta'(r_t)>)``.

    At ``gamma_t = theta_t = 1`` the network *is* :func:`lib.sparse.oamp` (same iterates, same
    clamps). Feeding back the MMSE estimate itself instead of the divergence-free one breaks the
    orthogonality that OAMP's error-variance formula assumes. Everything is evaluated through the
    eigendecomposition ``A A^T = U diag(lambda) U^T``, so a layer costs ``O(M N)`` per sample even
    though ``W_t`` differs per sample. ``model(y, noise_var)`` returns the stacked ``xhat_t``.

    Parameters
    ----------
    A : real tensor ``(M, N)``
    T : int
    p : float
        Activity of the Bernoulli-Gaussian prior, in ``(0, 1)``.

    ``model(y, noise_var)`` with ``y`` ``(B, M)`` and ``noise_var`` a scalar or ``(B,)``
    returns ``(T, B, N)``.
    """

    _EPS = 1e-9  # the clamps of lib.sparse.oamp

    def __init__(self, A, T, *, p):
        check_real(A, "A", ndim=2)
        T = check_positive_int(T, "T")
        if not 0 < p < 1:
            raise ValueError(f"p must be in (0, 1), got {p}")
        self.p = p
        super().__init__([_OAMPLayer(A.dtype) for _ in range(T)])
        self._set_matrix(A)

    def _set_matrix(self, A):
        for name in ("A", "U", "lam"):
            if name in self._buffers:
                del self._buffers[name]
        lam, U = torch.linalg.eigh(A @ A.T)
        self.register_buffer("A", A.clone(), persistent=False)
        self.register_buffer("U", U, persistent=False)
        self.register_buffer("lam", torch.clamp(lam, min=0.0), persistent=False)

    def init_state(self, y, noise_var=None):
        check_real(y, "y", shape=("batch", self.A.shape[0]))
        if noise_var is None:
            raise ValueError("OAMPNet needs noise_var (scalar or (batch,))")
        s2 = per_sample(noise_var, "noise_var", y.shape[0], dtype=y.dtype, device=y.device)
        x0 = torch.zeros(y.shape[0], self.A.shape[1], dtype=y.dtype, device=y.device)
        return (x0, x0, s2)  # (divergence-free x_t fed back, MMSE estimate xhat_t, sigma^2)

    def layer_forward(self, layer, state, t, y, noise_var=None):
        x, _, s2 = state
        M, N = self.A.shape
        eps = self._EPS
        resid = y - x @ self.A.T
        v2 = torch.clamp(((resid**2).sum(1) - M * s2) / self.lam.sum(), min=eps)[:, None]
        lam = self.lam[None, :]
        s2c = s2[:, None]
        d = v2 / (v2 * lam + s2c)  # (B, M): What = A^T U diag(d) U^T
        f = d * lam  # eigenvalues of What A on the row space of A
        c = N / f.sum(1, keepdim=True)  # W = c What
        g = c * f  # eigenvalues of W A, sum g = N
        r = x + layer.gamma * c * ((resid @ self.U) * d) @ self.U.T @ self.A
        th = layer.theta
        trCC = (N - M) + ((1 - th * g) ** 2).sum(1, keepdim=True)
        trWW = (c**2 * d**2 * lam).sum(1, keepdim=True)
        tau2 = torch.clamp(trCC * v2 / N + th**2 * s2c * trWW / N, min=eps)
        xhat, dx = bg_mmse(r, tau2, self.p)
        mean_d = torch.clamp(dx.mean(1, keepdim=True), max=1 - eps)
        x_new = (xhat - mean_d * r) / (1 - mean_d)  # divergence-free denoiser
        return (x_new, xhat, s2)

    def readout(self, state):
        return state[1]
