"""Unrolled sparse-recovery networks: LISTA, lean LISTA variants, LAMP, OAMP-Net, an MLP.

Model: ``y = A x + w`` with ``A`` of shape ``(M, N)``, ``x`` Bernoulli-Gaussian of shape
``(batch, N)``, ``y`` of shape ``(batch, M)`` (``lib.sparse`` conventions). Every model here is
an :class:`lib.learn.UnrolledModel` called as ``model(y, noise_var, n_layers=None)`` and
returns the per-layer estimates, shape ``(n_layers, batch, N)``; models that do not use the
noise variance ignore it (so every model fits the same sampler and loss).

Networks (``T`` layers, ``t = 0, ..., T-1``, ``x_0 = 0``, ``eta`` a denoiser):

* :class:`LISTA` (Gregor & LeCun 2010, untied): ``x_{t+1} = soft(W_t y + S_t x_t, theta_t)``
  with a full ``(N, M)`` matrix ``W_t``, a full ``(N, N)`` matrix ``S_t`` and a threshold per
  layer. Initialised at ISTA (``W_t = gamma A^T``, ``S_t = I - gamma A^T A``,
  ``theta_t = gamma lambda``) it *is* ISTA.
* :class:`LeanISTA`: ``x_{t+1} = eta(x_t + gamma_t W^T (y - A x_t))`` with a fixed ``W`` and
  1-2 scalars per layer. ``weight="transpose"`` (``W = A``: step-size/threshold ISTA),
  ``"analytic"`` (ALISTA, Liu et al. 2019: ``W`` minimising ``||W^T A||_F`` subject to
  ``diag(W^T A) = 1``), ``"pinv"`` (``W^T = A^T (A A^T)^{-1}``, as in TISTA).
  ``threshold="learned"``: ``eta = soft(., theta_t)``; ``"adaptive"`` (TISTA, Ito, Takabe &
  Wadayama 2019): the error variance ``v_t^2 = max((||y - A x_t||^2 - M sigma^2)/tr(A^T A), eps)``
  is estimated from the residual, the effective noise variance ``tau_t^2`` of ``r_t`` follows,
  and ``eta`` is either ``soft(., beta_t tau_t)`` or the Bernoulli-Gaussian MMSE denoiser.
* :class:`LAMP` (Borgerding, Schniter & Rangan 2017, tied matrix): AMP with the Onsager term
  kept and a learned denoiser per layer: soft threshold ``alpha_t ||z_t|| / sqrt(M)`` or a
  Bernoulli-Gaussian MMSE denoiser with learned (sparsity, variance, noise-scale).
* :class:`OAMPNet` (He, Wen & Jin 2018): OAMP with the de-correlated LMMSE linear estimator,
  learned ``gamma_t`` (step) and ``theta_t`` (scale of the error-variance formula), MMSE denoiser
  and the divergence-free estimate fed back; at ``gamma_t = theta_t = 1`` it is OAMP.
* :class:`MLPRecovery`: a black-box ``y -> x`` multilayer perceptron (one "layer").

Helpers: :func:`layer_operators` / :func:`contraction_factors` (per-layer Lipschitz bounds
``||S_t||_2``, the soft threshold being 1-Lipschitz), :func:`contraction_penalty`,
:func:`error_contraction` (empirical per-layer error ratio), :func:`nmse_loss`,
:func:`make_sampler`, :func:`analytic_weight`.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from lib import sparse
from lib.core.checks import check_positive_int, check_real, per_sample
from lib.learn.unrolling import UnrolledModel

__all__ = [
    "soft",
    "bg_mmse",
    "analytic_weight",
    "LISTA",
    "LeanISTA",
    "LAMP",
    "OAMPNet",
    "MLPRecovery",
    "layer_operators",
    "contraction_factors",
    "contraction_penalty",
    "error_contraction",
    "nmse_loss",
    "make_sampler",
    "with_matrix",
]

_EPS = 1e-10


# --------------------------------------------------------------------------- #
# Denoisers (differentiable in their parameters)
# --------------------------------------------------------------------------- #
def soft(r: torch.Tensor, theta) -> torch.Tensor:
    """Soft threshold ``sign(r) max(|r| - theta, 0)``, differentiable in ``theta``.

    Same map as :func:`lib.sparse.soft_threshold` but without its ``theta >= 0`` check: a learned
    threshold may cross zero transiently during training and must not stop the run.
    """
    return torch.sign(r) * torch.relu(r.abs() - theta)


def bg_mmse(r: torch.Tensor, tau2, p, signal_var=1.0):
    """Bernoulli-Gaussian MMSE denoiser and its derivative: :func:`lib.sparse.bg_mmse_denoiser`.

    Re-exported here because the learned models pass tensor parameters (learned ``p``,
    ``signal_var``) through it.
    """
    return sparse.bg_mmse_denoiser(r, tau2, p, signal_var)


# --------------------------------------------------------------------------- #
# Matrices
# --------------------------------------------------------------------------- #
def analytic_weight(A: torch.Tensor) -> torch.Tensor:
    """ALISTA's analytic weight: ``W = argmin ||W^T A||_F^2`` s.t. ``w_i^T a_i = 1`` for all i.

    The problem separates over columns: ``w_i = (A A^T)^{-1} a_i / (a_i^T (A A^T)^{-1} a_i)``
    (Lagrange multipliers; derivation in the chapter). Returns ``W`` of shape ``(M, N)``.
    """
    check_real(A, "A", ndim=2)
    G = torch.linalg.solve(A @ A.T, A)  # (M, N): columns (A A^T)^{-1} a_i
    return G / (A * G).sum(0, keepdim=True)


def _spectral_norm_sq(A: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(A, ord=2) ** 2)


# --------------------------------------------------------------------------- #
# LISTA with full per-layer matrices
# --------------------------------------------------------------------------- #
class _LISTALayer(nn.Module):
    def __init__(self, W, S, theta):
        super().__init__()
        self.W = nn.Parameter(W.clone())
        if S is not None:
            self.S = nn.Parameter(S.clone())
        self.theta = nn.Parameter(torch.as_tensor(theta, dtype=W.dtype).clone())


class LISTA(UnrolledModel):
    """LISTA with untied, full per-layer matrices ``W_t (N, M)``, ``S_t (N, N)``, ``theta_t``.

    Layer ``t``: ``x_{t+1} = soft(W_t y + S_t x_t, theta_t)``, ``x_0 = 0``. Initialised at ISTA for
    ``min 1/2 ||y - A x||^2 + lam ||x||_1`` with step ``step`` (default ``1/||A||_2^2``):
    ``W_t = step A^T``, ``S_t = I - step A^T A``, ``theta_t = step lam``; at these values the
    network reproduces ``T`` ISTA iterations exactly (the initialisation theorem).
    ``N M + N^2 + 1`` parameters per layer.

    ``coupled=True`` gives LISTA-CP (Chen et al. 2018): ``S_t = I - W_t A`` is tied to the learned
    ``W_t``, i.e. ``x_{t+1} = soft(x_t + W_t (y - A x_t), theta_t)``, ``N M + 1`` parameters per
    layer (still a full matrix per layer; used at paper scale because it is 3x cheaper).
    """

    def __init__(
        self,
        A: torch.Tensor,
        T: int,
        lam: float,
        *,
        step: float | None = None,
        coupled: bool = False,
    ):
        check_real(A, "A", ndim=2)
        T = check_positive_int(T, "T")
        if step is None:
            step = 1.0 / _spectral_norm_sq(A)
        N = A.shape[1]
        W = step * A.T
        S = None if coupled else torch.eye(N, dtype=A.dtype) - step * A.T @ A
        self.coupled = bool(coupled)
        super().__init__([_LISTALayer(W, S, step * lam) for _ in range(T)])
        self.register_buffer("A", A.clone())

    def layer_forward(self, layer, x, t, y, noise_var=None):
        if self.coupled:
            return soft(x + (y - x @ self.A.T) @ layer.W.T, layer.theta)
        return soft(y @ layer.W.T + x @ layer.S.T, layer.theta)

    def init_state(self, y, noise_var=None):
        check_real(y, "y", shape=("batch", self.A.shape[0]))
        return torch.zeros(y.shape[0], self.A.shape[1], dtype=y.dtype, device=y.device)


# --------------------------------------------------------------------------- #
# Lean variants: 1-2 scalars per layer
# --------------------------------------------------------------------------- #
class _LeanLayer(nn.Module):
    def __init__(self, step, theta, dtype):
        super().__init__()
        self.step = nn.Parameter(torch.tensor(float(step), dtype=dtype))
        if theta is not None:
            self.theta = nn.Parameter(torch.tensor(float(theta), dtype=dtype))


class LeanISTA(UnrolledModel):
    """ISTA-type unrolled network with a fixed weight matrix and 1-2 learned scalars per layer.

    ``r_t = x_t + gamma_t W^T (y - A x_t)``, ``x_{t+1} = eta_t(r_t)``.

    Parameters
    ----------
    A : (M, N) real tensor
    T : int, number of layers
    weight : {"transpose", "analytic", "pinv"}
        ``W = A`` (ISTA), ALISTA's :func:`analytic_weight`, or ``W^T = A^+ = A^T (A A^T)^{-1}``.
    threshold : {"learned", "adaptive"}
        ``"learned"``: ``eta_t = soft(., theta_t)``, learned ``gamma_t, theta_t`` (2 per layer).
        ``"adaptive"`` (TISTA): ``v_t^2 = max((||y - A x_t||^2 - M sigma^2) / tr(A^T A), eps)``,
        ``tau_t^2 = v_t^2 / N (N + (gamma_t^2 - 2 gamma_t) M) + gamma_t^2 sigma^2 tr(W^T W) / N``
        (exact for ``W^T = A^+`` and an isotropic error, Ito et al. eq. (7)); then
        ``denoiser="mmse"``: ``eta_t`` = Bernoulli-Gaussian MMSE denoiser for ``(tau_t^2, p)``
        (1 parameter per layer), or ``denoiser="soft"``: ``soft(., beta_t tau_t)`` (2 per layer).
    step, lam : initial ``gamma_t`` and ``theta_t = step * lam`` (ISTA's values by default for
        ``weight="transpose"``: ``step = 1/||A||_2^2``).
    p : prior sparsity for the MMSE denoiser.
    """

    def __init__(
        self,
        A,
        T,
        *,
        weight="transpose",
        threshold="learned",
        denoiser="soft",
        step=None,
        lam=0.1,
        beta=1.0,
        p=None,
    ):
        check_real(A, "A", ndim=2)
        T = check_positive_int(T, "T")
        if weight not in ("transpose", "analytic", "pinv"):
            raise ValueError(f"weight must be 'transpose', 'analytic' or 'pinv', got {weight!r}")
        if threshold not in ("learned", "adaptive"):
            raise ValueError(f"threshold must be 'learned' or 'adaptive', got {threshold!r}")
        if denoiser not in ("soft", "mmse"):
            raise ValueError(f"denoiser must be 'soft' or 'mmse', got {denoiser!r}")
        if denoiser == "mmse" and threshold != "adaptive":
            raise ValueError("denoiser='mmse' needs threshold='adaptive' (it needs tau_t^2)")
        if denoiser == "mmse" and (p is None or not 0 < p < 1):
            raise ValueError(f"denoiser='mmse' needs a sparsity 0 < p < 1, got {p!r}")
        self.weight, self.threshold, self.denoiser, self.p = weight, threshold, denoiser, p
        if step is None:
            step = 1.0 / _spectral_norm_sq(A) if weight == "transpose" else 1.0
        if threshold == "learned":
            theta0 = step * lam
        else:
            theta0 = beta if denoiser == "soft" else None
        super().__init__([_LeanLayer(step, theta0, A.dtype) for _ in range(T)])
        self._set_matrix(A)

    def _set_matrix(self, A):
        for name in ("A", "W"):
            if name in self._buffers:
                del self._buffers[name]
        if self.weight == "transpose":
            W = A.clone()
        elif self.weight == "analytic":
            W = analytic_weight(A)
        else:
            W = torch.linalg.solve(A @ A.T, A)  # (A A^T)^{-1} A, so W^T = A^+
        self.register_buffer("A", A.clone())
        self.register_buffer("W", W)

    def init_state(self, y, noise_var=None):
        check_real(y, "y", shape=("batch", self.A.shape[0]))
        x = torch.zeros(y.shape[0], self.A.shape[1], dtype=y.dtype, device=y.device)
        if self.threshold == "adaptive":
            if noise_var is None:
                raise ValueError("threshold='adaptive' needs noise_var (scalar or (batch,))")
            noise_var = per_sample(
                noise_var, "noise_var", y.shape[0], dtype=y.dtype, device=y.device
            )
        return (x, noise_var)

    def layer_forward(self, layer, state, t, y, noise_var=None):
        x, s2 = state
        resid = y - x @ self.A.T
        r = x + layer.step * resid @ self.W
        if self.threshold == "learned":
            return (soft(r, layer.theta), s2)
        M, N = self.A.shape
        trAA = (self.A**2).sum()
        v2 = torch.clamp(((resid**2).sum(1) - M * s2) / trAA, min=_EPS)
        g = layer.step
        trWW = (self.W**2).sum()
        tau2 = v2 / N * (N + (g**2 - 2 * g) * M) + g**2 * s2 * trWW / N
        tau2 = torch.clamp(tau2, min=_EPS)[:, None]
        if self.denoiser == "soft":
            return (soft(r, layer.theta * tau2.sqrt()), s2)
        return (bg_mmse(r, tau2, self.p)[0], s2)

    def readout(self, state):
        return state[0]


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
        self.register_buffer("A", A.clone())

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
        self.register_buffer("A", A.clone())
        self.register_buffer("U", U)
        self.register_buffer("lam", torch.clamp(lam, min=0.0))

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


# --------------------------------------------------------------------------- #
# Black-box comparator
# --------------------------------------------------------------------------- #
class _MLP(nn.Module):
    def __init__(self, M, N, hidden, depth, dtype):
        super().__init__()
        dims = [M] + [hidden] * depth + [N]
        mods = []
        for i in range(len(dims) - 1):
            mods.append(nn.Linear(dims[i], dims[i + 1], dtype=dtype))
            if i < len(dims) - 2:
                mods.append(nn.ReLU())
        self.net = nn.Sequential(*mods)

    def forward(self, state, y, noise_var=None):
        return self.net(y)


class MLPRecovery(UnrolledModel):
    """A black-box ``y -> x`` MLP with ``depth`` hidden ReLU layers of width ``hidden``.

    Wrapped as a one-layer :class:`UnrolledModel` so that the same trainer, sampler and loss
    apply; ``model(y, noise_var)`` returns shape ``(1, batch, N)``.
    """

    def __init__(self, M, N, *, hidden=1024, depth=2, dtype=torch.float64):
        M, N = check_positive_int(M, "M"), check_positive_int(N, "N")
        check_positive_int(hidden, "hidden")
        check_positive_int(depth, "depth")
        super().__init__([_MLP(M, N, hidden, depth, dtype)])
        self.M, self.N = M, N

    def init_state(self, y, noise_var=None):
        check_real(y, "y", shape=("batch", self.M))
        return None

    def macs(self) -> int:
        """Multiply-accumulates per sample (inference cost)."""
        return sum(
            m.in_features * m.out_features for m in self.modules() if isinstance(m, nn.Linear)
        )


# --------------------------------------------------------------------------- #
# Matrices swapped at test time (model-based networks know the physics)
# --------------------------------------------------------------------------- #
def with_matrix(model: UnrolledModel, A_new: torch.Tensor) -> UnrolledModel:
    """Copy of a model-based network that uses a new sensing matrix with the same learned scalars.

    Works for :class:`LeanISTA` (recomputes ``W``), :class:`LAMP` and :class:`OAMPNet`. A full
    :class:`LISTA` or an :class:`MLPRecovery` has no ``A`` to swap (their learned matrices *are*
    the model), so they raise ``TypeError``.
    """
    check_real(A_new, "A_new", ndim=2)
    if not isinstance(model, (LeanISTA, LAMP, OAMPNet)):
        raise TypeError(f"{type(model).__name__} has no sensing matrix to swap")
    if A_new.shape != model.A.shape:
        raise ValueError(f"A_new must have shape {tuple(model.A.shape)}, got {tuple(A_new.shape)}")
    new = copy.deepcopy(model)
    A_new = A_new.to(dtype=model.A.dtype, device=model.A.device)
    if isinstance(new, LAMP):
        new.A = A_new.clone()
    else:
        new._set_matrix(A_new)
    return new


# --------------------------------------------------------------------------- #
# Contraction
# --------------------------------------------------------------------------- #
def layer_operators(model: UnrolledModel) -> list[torch.Tensor]:
    """The linear maps ``S_t`` acting on ``x_t`` in ``x_{t+1} = soft(S_t x_t + b_t, theta_t)``.

    :class:`LISTA`: the learned ``S_t``; :class:`LeanISTA` with ``threshold="learned"``:
    ``I - gamma_t W^T A``. Since the soft threshold is 1-Lipschitz, ``||S_t||_2`` bounds the
    layer's Lipschitz constant in ``x``.
    """
    if isinstance(model, LISTA):
        if model.coupled:
            eye = torch.eye(model.A.shape[1], dtype=model.A.dtype, device=model.A.device)
            return [eye - layer.W @ model.A for layer in model.layers]
        return [layer.S for layer in model.layers]
    if isinstance(model, LeanISTA) and model.threshold == "learned":
        N = model.A.shape[1]
        eye = torch.eye(N, dtype=model.A.dtype, device=model.A.device)
        G = model.W.T @ model.A
        return [eye - layer.step * G for layer in model.layers]
    raise TypeError(
        f"layer_operators is defined for LISTA and LeanISTA(threshold='learned'), "
        f"got {type(model).__name__}"
    )


def contraction_factors(model: UnrolledModel) -> torch.Tensor:
    """Per-layer Lipschitz bounds ``rho_t = ||S_t||_2`` (``(T,)`` tensor, no gradient).

    The whole network is then ``prod_t rho_t``-Lipschitz in its initial point ``x_0`` (a
    composition of Lipschitz maps; Exercise in the chapter).
    """
    with torch.no_grad():
        return torch.stack([torch.linalg.matrix_norm(S, ord=2) for S in layer_operators(model)])


def contraction_penalty(model: UnrolledModel, n_layers: int | None = None, *, rho_max=1.0):
    """Spectral-norm penalty ``sum_t relu(||S_t||_2 - rho_max)^2`` over the first ``n_layers``.

    Differentiable (through the largest singular value); pass it to
    :func:`lib.learn.train_unrolled` as ``penalty``.
    """
    ops = layer_operators(model)
    if n_layers is not None:
        ops = ops[:n_layers]
    norms = torch.stack([torch.linalg.matrix_norm(S, ord=2) for S in ops])
    return (torch.relu(norms - rho_max) ** 2).sum()


def error_contraction(xs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Empirical per-layer error ratio ``||x_{t+1} - x|| / ||x_t - x||`` (ratio of sums).

    ``xs`` of shape ``(T, batch, N)`` are per-layer estimates (``x_0 = 0`` prepended), ``x`` the
    truth. Returns ``(T,)``.
    """
    check_real(xs, "xs", ndim=3)
    check_real(x, "x", shape=("batch", xs.shape[-1]))
    full = torch.cat([torch.zeros_like(xs[:1]), xs], 0)
    err = ((full - x) ** 2).sum((1, 2)).sqrt()
    return err[1:] / err[:-1]


# --------------------------------------------------------------------------- #
# Loss and sampler
# --------------------------------------------------------------------------- #
def nmse_loss(outputs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Linear NMSE of the last layer's output, ``sum ||x_T - x||^2 / sum ||x||^2``."""
    return ((outputs[-1] - x) ** 2).sum() / (x**2).sum().clamp_min(_EPS)


def make_sampler(
    A: torch.Tensor,
    p: float,
    snr_db: float,
    *,
    amplitude: float = 1.0,
    noise_var: float | None = None,
):
    """Sampler ``(batch, generator) -> ((y, noise_var), x)`` for the sparse-recovery problem.

    ``x = lib.sparse.bernoulli_gaussian(batch, N, p, signal_var=amplitude**2)`` and
    ``y = A x + w`` with ``w ~ N(0, noise_var I)``; ``noise_var`` defaults to
    ``lib.sparse.noise_var_for_snr(A, p, snr_db, signal_var=amplitude**2)``. Passing
    ``noise_var`` fixes the noise level independently of the amplitude (an amplitude shift
    at fixed noise, i.e. the SNR moves with the amplitude).
    """
    check_real(A, "A", ndim=2)
    M, N = A.shape
    s2 = float(amplitude) ** 2
    if noise_var is None:
        nv = sparse.noise_var_for_snr(A, p, snr_db, signal_var=s2)
    else:
        nv = float(noise_var)
    nv_t = torch.tensor(nv, dtype=A.dtype)

    def sampler(batch, generator):
        x = sparse.bernoulli_gaussian(
            batch, N, p, generator=generator, dtype=A.dtype, signal_var=s2
        )
        w = torch.randn(batch, M, generator=generator, dtype=A.dtype) * math.sqrt(nv)
        return (x @ A.T + w, nv_t), x

    return sampler
