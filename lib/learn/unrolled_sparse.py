"""Unrolled sparse-recovery networks: LISTA, lean LISTA variants, LAMP, OAMP-Net, an MLP.

Model: ``y = A x + w`` with ``A`` of shape ``(M, N)``, ``x`` Bernoulli-Gaussian of shape
``(batch, N)``, ``y`` of shape ``(batch, M)`` (``lib.sparse`` conventions). Every model here is
an :class:`lib.learn.UnrolledModel` called as ``model(y, noise_var, n_layers=None)`` and
returns the per-layer estimates, shape ``(n_layers, batch, N)``; models that do not use the
noise variance ignore it (so every model fits the same sampler and loss).

Networks (``T`` layers, ``t = 0, ..., T-1``, ``x_0 = 0``, ``eta`` a denoiser):

* :class:`~lib.learn.LISTA` (Gregor & LeCun 2010, untied):
  ``x_{t+1} = soft(W_t y + S_t x_t, theta_t)``
  with a full ``(N, M)`` matrix ``W_t``, a full ``(N, N)`` matrix ``S_t`` and a threshold per
  layer. Initialised at ISTA (``W_t = gamma A^T``, ``S_t = I - gamma A^T A``,
  ``theta_t = gamma lambda``) it *is* ISTA.
* :class:`~lib.learn.LeanISTA`: ``x_{t+1} = eta(x_t + gamma_t W^T (y - A x_t))`` with a fixed ``W``
  and
  1-2 scalars per layer. ``weight="transpose"`` (``W = A``: step-size/threshold ISTA),
  ``"analytic"`` (ALISTA, Liu et al. 2019: ``W`` minimising ``||W^T A||_F`` subject to
  ``diag(W^T A) = 1``), ``"pinv"`` (``W^T = A^T (A A^T)^{-1}``, as in TISTA).
  ``threshold="learned"``: ``eta = soft(., theta_t)``; ``"adaptive"`` (TISTA, Ito, Takabe &
  Wadayama 2019): the error variance ``v_t^2 = max((||y - A x_t||^2 - M sigma^2)/tr(A^T A), eps)``
  is estimated from the residual, the effective noise variance ``tau_t^2`` of ``r_t`` follows,
  and ``eta`` is either ``soft(., beta_t tau_t)`` or the Bernoulli-Gaussian MMSE denoiser.
* :class:`~lib.learn.LAMP` (Borgerding, Schniter & Rangan 2017, tied matrix) and
  :class:`~lib.learn.OAMPNet` (He, Wen & Jin 2018) are in :mod:`lib.learn.unrolled_amp`
  (importing them from this module still works).
* :class:`~lib.learn.MLPRecovery`: a black-box ``y -> x`` multilayer perceptron (one "layer").

Helpers: :func:`~lib.learn.nmse_loss` (the training loss),
:func:`~lib.learn.unrolled_sparse.make_sampler` (fresh training batches),
:func:`~lib.learn.analytic_weight` (ALISTA's weight), :func:`~lib.learn.with_matrix` (a model told
a new sensing
matrix). Contraction tools are in :mod:`lib.learn.contraction`.

Fixed matrices (``A``, ``W``, the eigenvectors of OAMP-Net) are non-persistent buffers: they are
rebuilt from ``A`` and are not part of a state dict, so a stored network is its learned
parameters only (``lib.chapters.pretrained_sparse.load`` loads them with ``strict=True``).
Chapters *Unrolling ISTA* and *Distribution shift*.
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
    "MLPRecovery",
    "nmse_loss",
    "validation_nmse_db",
    "make_sampler",
    "with_matrix",
    "has_sensing_matrix",
]

_EPS = 1e-10


# --------------------------------------------------------------------------- #
# Denoisers (differentiable in their parameters)
# --------------------------------------------------------------------------- #
def soft(r: torch.Tensor, theta) -> torch.Tensor:
    """Soft threshold ``sign(r) max(|r| - theta, 0)``, differentiable in ``theta``.

    Same map as :func:`lib.sparse.soft_threshold` but without its ``theta >= 0`` check: a learned
    threshold may cross zero transiently during training and must not stop the run.

    Parameters
    ----------
    r : real tensor, any shape
    theta : float or tensor broadcastable to ``r``

    Returns
    -------
    torch.Tensor
        The shape of ``r``.
    """
    return torch.sign(r) * torch.relu(r.abs() - theta)


def bg_mmse(r: torch.Tensor, tau2, p, signal_var=1.0):
    """Bernoulli-Gaussian MMSE denoiser and its derivative: :func:`lib.sparse.bg_mmse_denoiser`.

    Re-exported here because the learned models pass tensor parameters (learned ``p``,
    ``signal_var``) through it.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        The posterior mean ``E[x | r]`` and its derivative in ``r``, both of the shape of ``r``.
    """
    return sparse.bg_mmse_denoiser(r, tau2, p, signal_var)


# --------------------------------------------------------------------------- #
# Matrices
# --------------------------------------------------------------------------- #
def analytic_weight(A: torch.Tensor) -> torch.Tensor:
    """ALISTA's analytic weight: ``W = argmin ||W^T A||_F^2`` s.t. ``w_i^T a_i = 1`` for all i.

    The problem separates over columns: ``w_i = (A A^T)^{-1} a_i / (a_i^T (A A^T)^{-1} a_i)``
    (Lagrange multipliers; Liu et al. 2019, eq. (14); derivation in the chapter *Unrolling ISTA*).

    Parameters
    ----------
    A : real tensor ``(M, N)``, full row rank

    Returns
    -------
    torch.Tensor
        ``W`` ``(M, N)``.
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

    Parameters
    ----------
    A : real tensor ``(M, N)``
        Sensing matrix (a non-persistent buffer: not part of the state dict).
    T : int
        Layers.
    lam : float
        LASSO weight of the ISTA initialisation.
    step : float, optional
        ISTA step (default ``1 / ||A||_2^2``).
    coupled : bool
        LISTA-CP.

    ``model(y, noise_var=None)`` with ``y`` ``(B, M)`` returns ``(T, B, N)``; it does not use
    the noise variance.
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
        S = None if coupled else torch.eye(N, dtype=A.dtype, device=A.device) - step * A.T @ A
        self.coupled = bool(coupled)
        super().__init__([_LISTALayer(W, S, step * lam) for _ in range(T)])
        self.register_buffer("A", A.clone(), persistent=False)

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
        ``W = A`` (ISTA), ALISTA's :func:`~lib.learn.analytic_weight`, or
        ``W^T = A^+ = A^T (A A^T)^{-1}``.
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
        self.register_buffer("A", A.clone(), persistent=False)
        self.register_buffer("W", W, persistent=False)

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

    Wrapped as a one-layer :class:`~lib.learn.UnrolledModel` so that the same trainer, sampler and
    loss
    apply; ``model(y, noise_var)`` returns shape ``(1, B, N)``.

    Parameters
    ----------
    M, N : int
        Input and output sizes.
    hidden, depth : int
        Width and number of hidden layers.
    dtype : torch.dtype
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
def has_sensing_matrix(model) -> bool:
    """Whether ``model``'s sensing matrix is an input that :func:`~lib.learn.with_matrix` can swap.

    True for :class:`~lib.learn.LeanISTA`, :class:`~lib.learn.LAMP` and :class:`~lib.learn.OAMPNet`
    (they
    keep ``A`` as a buffer and rebuild what depends on it); false for a full
    :class:`~lib.learn.LISTA`
    (its learned matrices *are* the model) and an :class:`~lib.learn.MLPRecovery`.
    """
    return isinstance(model, UnrolledModel) and callable(getattr(model, "_set_matrix", None))


def with_matrix(model: UnrolledModel, A_new: torch.Tensor) -> UnrolledModel:
    """Copy of a model-based network that uses a new sensing matrix with the same learned scalars.

    Works for every model with :func:`~lib.learn.has_sensing_matrix` (:class:`~lib.learn.LeanISTA`
    recomputes ``W``,
    ``LAMP`` and ``OAMPNet`` their matrices); a full :class:`~lib.learn.LISTA` or an
    :class:`~lib.learn.MLPRecovery`
    has no ``A`` to swap, so they raise ``TypeError``. Chapter *Distribution shift*.

    Parameters
    ----------
    model : LeanISTA, LAMP or OAMPNet
    A_new : real tensor ``(M, N)``, the shape of ``model.A``

    Returns
    -------
    UnrolledModel
        A deep copy (``model`` is not modified).
    """
    check_real(A_new, "A_new", ndim=2)
    if not has_sensing_matrix(model):
        raise TypeError(f"{type(model).__name__} has no sensing matrix to swap")
    if A_new.shape != model.A.shape:
        raise ValueError(f"A_new must have shape {tuple(model.A.shape)}, got {tuple(A_new.shape)}")
    new = copy.deepcopy(model)
    new._set_matrix(A_new.to(dtype=model.A.dtype, device=model.A.device))
    return new


# --------------------------------------------------------------------------- #
# Loss and sampler
# --------------------------------------------------------------------------- #
def nmse_loss(outputs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Linear NMSE of the last layer's output, ``sum ||x_T - x||^2 / sum ||x||^2``.

    Parameters
    ----------
    outputs : real tensor ``(T, B, N)``
        The **stacked** per-layer estimates ``model(y, noise_var)`` (not ``model(...)[-1]``).
    x : real tensor ``(B, N)``
        The truth.

    Returns
    -------
    torch.Tensor
        Scalar, linear scale (ratio of sums, the book's NMSE convention).
    """
    if not isinstance(outputs, torch.Tensor) or not isinstance(x, torch.Tensor):
        raise TypeError("outputs and x must be torch tensors")
    if x.dim() != 2 or outputs.dim() != 3 or outputs.shape[1:] != x.shape:
        raise ValueError(
            "outputs must be the stacked per-layer estimates, shape (T, B, N) with x of shape "
            f"(B, N); got outputs {tuple(outputs.shape)} and x {tuple(x.shape)} "
            "(pass model(y, noise_var), not model(y, noise_var)[-1])"
        )
    return ((outputs[-1] - x) ** 2).sum() / (x**2).sum().clamp_min(_EPS)


def validation_nmse_db(model, batch, state) -> float:
    """Validation metric of the book's training protocol: NMSE (dB) of the last layer.

    The ``val_fn`` of :func:`lib.learn.fit`: ``batch = ((y, noise_var), x)`` (a fixed
    validation set), the network called with the stage's ``forward_kwargs`` (so that during
    layer-wise growth the ``t``-layer network is validated). ``10 log10`` of
    :func:`nmse_loss`, without gradients.
    """
    (y, nv), x = batch
    with torch.no_grad():
        out = model(y, nv, **state.stage.forward_kwargs)
        return float(10 * torch.log10(nmse_loss(out, x)))


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

    Returns
    -------
    callable
        ``sampler(B, generator) -> ((y, noise_var), x)`` with ``y`` ``(B, M)``, ``x``
        ``(B, N)`` and ``noise_var`` a scalar tensor, all of the dtype of ``A``.
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
