"""Deep-unfolded WMMSE beamforming (Pellaco, Bengtsson & Jaldén, 2020; chapter *Unfolded WMMSE*).

The classical WMMSE algorithm (Shi et al. 2011; :func:`lib.precoding.wmmse`) alternates the
receiver update ``u`` (eq. (5b)), the MSE-weight update ``w`` (eq. (5a)) and a closed-form
precoder update (eq. (5c)) that needs a matrix inverse, an eigendecomposition and a bisection
for the Lagrange multiplier. Pellaco et al. replace the precoder update by ``Q`` steps of
projected gradient descent (PGD) on the convex sub-problem (9) (the paper calls the number of
PGD steps ``K``; here ``K`` is the number of users throughout the book),

.. math::  \\tilde{\\mathbf V}^{(q)} = \\mathbf V^{(q-1)}
           - \\gamma^{(q)}\\nabla f(\\mathbf V^{(q-1)}),
           \\qquad \\mathbf V^{(q)} = \\Pi_{\\mathcal C}\\{\\tilde{\\mathbf V}^{(q)}\\},

with ``nabla f(v_i) = 2 A v_i - 2 alpha_i w_i u_i h_i`` (eq. (12)), ``A = sum_i alpha_i w_i
|u_i|^2 h_i h_i^H`` (eq. (6)) and the projection onto the power ball written without branches,
``Pi(V) = sqrt(P) V / (relu(||V|| - sqrt(P)) + sqrt(P))`` (Sec. VI-A). Unfolding ``T`` such
iterations (Algorithm 1; the paper's ``L`` layers) gives a network whose only trainable
parameters are the ``T x Q`` step sizes ``gamma_t^(q)``, trained without labels on minus the sum
over layers of the weighted sum rate (eq. (14)).

Everything is batched and complex-valued (PyTorch autograd handles complex tensors, so the
real-valued embedding of the paper is not needed). The model validates its inputs once per
forward pass; the layers run unchecked private versions of the WMMSE blocks, the PGD step and
the projection (no per-layer ``isfinite`` checks, no GPU synchronisation inside the network).

Symbols and shapes: ``B`` batch, ``K`` users, ``M`` antennas, ``T`` layers, ``Q`` PGD steps per
layer. ``H`` ``(B, K, M)`` (row ``k`` is ``h_k^H``), ``V`` ``(B, M, K)``, ``u`` complex and
``w`` real ``(B, K)``, ``power`` and ``noise_var`` scalars or ``(B,)``, user priorities
``alpha`` (``weights``) ``(K,)``.

Contents

* :func:`~lib.learn.pgd_gradient`, :func:`~lib.learn.project_power_ball`,
  :func:`~lib.learn.pgd_precoder` -- eqs. (12)-(13).
* :class:`~lib.learn.PGDStepSizes`, :class:`~lib.learn.UnfoldedWMMSE` -- Algorithm 1 as an unrolled
  model
  (``same_step`` ablation, ``log_steps`` parameterisation,
  :meth:`~lib.learn.UnfoldedWMMSE.extend_pgd`).
* :func:`~lib.learn.wsr_loss`, :func:`~lib.learn.unfolded_wmmse.make_sampler`,
  :func:`~lib.learn.train_progressive` -- eq. (14) and training.
* :func:`~lib.learn.per_layer_wsr`, :func:`~lib.learn.truncated_wmmse_wsr` -- evaluation per layer
  / iteration.
"""

from __future__ import annotations

import torch
from torch import nn

from lib.core.checks import _real_dtype, check_complex, check_positive_int, check_tensor
from lib.core.units import db_to_lin
from lib.learn.plan import Stage
from lib.learn.trainer import fit
from lib.learn.unrolling import UnrolledModel
from lib.phy.channels import rayleigh
from lib.precoding.common import (
    _abs2,
    _check_H,
    _check_V,
    _scalar,
    _scale_to_power,
    user_weights,
)
from lib.precoding.linear import sum_rate
from lib.precoding.weighted_mmse import _receivers_weights, wmmse

__all__ = [
    "pgd_gradient",
    "project_power_ball",
    "pgd_precoder",
    "PGDStepSizes",
    "UnfoldedWMMSE",
    "wsr_loss",
    "make_sampler",
    "train_progressive",
    "per_layer_wsr",
    "truncated_wmmse_wsr",
]


# --------------------------------------------------------------------------- #
# Unchecked cores (called inside the network; the public functions validate, then call them)
# --------------------------------------------------------------------------- #
def _gram_A(H, u, aw) -> torch.Tensor:
    """``A = sum_k alpha_k w_k |u_k|^2 h_k h_k^H`` (eq. (6)), ``(B, M, M)``; ``aw = alpha w``."""
    c = (aw * _abs2(u)).to(H.dtype)
    return (H.mH * c[:, None, :]) @ H


def _rhs(H, u, aw) -> torch.Tensor:
    """Columns ``alpha_k w_k u_k h_k`` of the linear term of eq. (12), ``(B, M, K)``."""
    return H.mH * (aw.to(H.dtype) * u)[:, None, :]


def _gradient(A, V, R) -> torch.Tensor:
    """``nabla f(V) = 2 (A V - R)`` (eq. (12))."""
    return 2.0 * (A @ V - R)


def _project(V, sp) -> torch.Tensor:
    """Branch-free projection onto ``||V||_F <= sqrt(P)``, ``sp = sqrt(P)`` of shape ``(B,)``."""
    nrm = torch.sqrt(_abs2(V).sum(dim=(-2, -1)))
    return V * (sp / (torch.relu(nrm - sp) + sp)).to(V.dtype)[:, None, None]


def _pgd(H, V, u, aw, sp, steps, betas=None, normalised=False) -> torch.Tensor:
    """``Q = len(steps)`` PGD steps (eqs. (12a)-(12b)) with ``A`` and ``R`` formed once.

    ``normalised``: step ``q`` is ``steps[q] / tr(A)`` per channel (scale-free step, chapter
    *Unfolded WMMSE*, Sec. 9); ``betas`` ``(Q - 1,)``: heavy-ball momentum, step ``q >= 2``
    starts from ``V^(q-1) + beta_(q-1) (V^(q-1) - V^(q-2))``.
    """
    A = _gram_A(H, u, aw)
    R = _rhs(H, u, aw)
    if normalised:
        inv_tr = 1.0 / torch.diagonal(A, dim1=-2, dim2=-1).real.sum(-1)
        g = (steps[None, :] * inv_tr[:, None]).to(H.dtype)[:, :, None, None]  # (B, Q, 1, 1)
    else:
        g = steps.to(H.dtype)[None, :, None, None].expand(1, -1, 1, 1)
    V_prev = V
    for q in range(steps.shape[0]):
        Y = V if betas is None or q == 0 else V + betas[q - 1].to(H.dtype) * (V - V_prev)
        V_prev = V
        V = _project(Y - g[:, q] * _gradient(A, Y, R), sp)
    return V


def _check_uw(H, u, w):
    B, K, _ = H.shape
    check_complex(u, "u", shape=(B, K))
    check_tensor(w, "w", shape=(B, K), complex_=False)


# --------------------------------------------------------------------------- #
# The PGD reformulation of the V sub-problem (eqs. (9)-(13))
# --------------------------------------------------------------------------- #
def pgd_gradient(H, V, u, w, weights=None, *, A: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient of the V sub-problem (9) (Pellaco et al., eq. (12)).

    ``f(V) = sum_i alpha_i (w_i e_i - log2 w_i)`` with the MSE
    ``e_i = sum_j |u_i|^2 |h_i^H v_j|^2 - 2 Re(conj(u_i) h_i^H v_i) + sigma^2 |u_i|^2 + 1``
    (``u`` and ``w`` fixed). Column ``i`` of the result is
    ``nabla f(v_i) = 2 A v_i - 2 alpha_i w_i u_i h_i`` with ``A`` of eq. (6): twice the
    Wirtinger derivative ``df/d conj(v_i)``, i.e. the steepest-ascent direction of ``f`` in
    ``C^M = R^{2M}`` (what PyTorch's autograd returns for a real loss of a complex tensor).

    Parameters
    ----------
    H : complex tensor ``(B, K, M)``
    V : complex tensor ``(B, M, K)``
    u : complex tensor ``(B, K)``
        Receive gains (eq. (5b)).
    w : real tensor ``(B, K)``
        MSE weights (eq. (5a)).
    weights : real tensor ``(K,)`` or ``(B, K)``, optional
        User priorities ``alpha`` (ones by default).
    A : complex tensor ``(B, M, M)``, optional
        The matrix of eq. (6) when already known (it does not depend on ``V``).

    Returns
    -------
    torch.Tensor
        ``(B, M, K)``, the dtype of ``H``.
    """
    _check_H(H)
    _check_V(V, H)
    _check_uw(H, u, w)
    aw = user_weights(weights, H) * w
    if A is None:
        A = _gram_A(H, u, aw)
    return _gradient(A, V, _rhs(H, u, aw))


def project_power_ball(V: torch.Tensor, power) -> torch.Tensor:
    """Projection onto ``{V : tr(V V^H) <= P}`` without branches (Pellaco et al., Sec. VI-A).

    ``Pi(V) = sqrt(P) V / (relu(||V||_F - sqrt(P)) + sqrt(P))``: ``V`` itself inside the ball,
    ``sqrt(P) V / ||V||_F`` outside -- the branch form of eq. (13). Differentiable except on
    the sphere ``||V||_F = sqrt(P)``.

    Parameters
    ----------
    V : tensor ``(B, M, K)``
        Real or complex.
    power : float or tensor ``(B,)``
        ``P > 0``.

    Returns
    -------
    torch.Tensor
        ``(B, M, K)``, the dtype of ``V``.
    """
    check_tensor(V, "V", ndim=3)
    P = _scalar(power, "power", V)
    return _project(V, torch.sqrt(P))


def pgd_precoder(H, V, u, w, power, step_sizes, weights=None) -> torch.Tensor:
    """``Q`` PGD steps (Pellaco et al., eqs. (12a)-(12b)) on the V sub-problem, from ``V``.

    ``A`` (eq. (6)) is formed once and reused by every step, so a step costs one
    ``(M x M) @ (M x K)`` product per channel: ``O(Q M^2 K)`` per layer, no inverse.

    Parameters
    ----------
    H : complex tensor ``(B, K, M)``
    V : complex tensor ``(B, M, K)``
        Starting point.
    u, w : tensors ``(B, K)``
        Receive gains (complex) and MSE weights (real) of the layer.
    power : float or tensor ``(B,)``
    step_sizes : real tensor ``(Q,)`` or sequence of floats
        ``gamma^(1..Q)`` (the paper's ``K`` steps); gradients flow to a tensor.
    weights : real tensor ``(K,)`` or ``(B, K)``, optional
        User priorities ``alpha``.

    Returns
    -------
    torch.Tensor
        ``V^(Q)``, ``(B, M, K)``.
    """
    _check_H(H)
    _check_V(V, H)
    _check_uw(H, u, w)
    if not isinstance(step_sizes, torch.Tensor):
        step_sizes = torch.as_tensor(list(step_sizes), dtype=_real_dtype(H), device=H.device)
    check_tensor(step_sizes, "step_sizes", ndim=1, complex_=False)
    if step_sizes.numel() == 0:
        raise ValueError("step_sizes must contain at least one step, shape (Q,) with Q >= 1")
    P = _scalar(power, "power", H)
    aw = user_weights(weights, H) * w
    return _pgd(H, V, u, aw, torch.sqrt(P), step_sizes)


# --------------------------------------------------------------------------- #
# The unfolded network (Algorithm 1)
# --------------------------------------------------------------------------- #
class PGDStepSizes(nn.Module):
    """Trainable step sizes ``gamma_t^(1..Q)`` of one layer (Pellaco et al., Algorithm 1).

    Parameters
    ----------
    pgd_steps : int
        ``Q``, the number of PGD steps of the layer (the paper's ``K``).
    init : float or sequence of ``Q`` floats
        Initial step sizes.
    same_step : bool
        Tie them (one parameter per layer, the paper's "same gamma" ablation).
    log_steps : bool
        Store ``log gamma`` (positive steps, multiplicative Adam updates); otherwise ``gamma``
        itself, free in R as in the paper.
    momentum : bool
        Also hold ``Q - 1`` trainable heavy-ball coefficients ``beta^(2..Q)`` (initialised at
        ``momentum_init``), returned by ``layer.betas()``.
    momentum_init : float or sequence of ``Q - 1`` floats
    dtype : torch.dtype

    ``layer()`` returns the ``(Q,)`` step sizes.
    """

    def __init__(
        self,
        pgd_steps: int,
        init=1.0,
        *,
        same_step=False,
        log_steps=False,
        momentum=False,
        momentum_init=0.0,
        dtype=torch.float64,
    ):
        super().__init__()
        Q = check_positive_int(pgd_steps, "pgd_steps")
        init_t = torch.as_tensor(init, dtype=dtype).flatten()
        if init_t.numel() == 1:
            init_t = init_t.expand(1 if same_step else Q).clone()
        elif same_step or init_t.numel() != Q:
            raise ValueError(
                f"init must be a number or have {Q} entries (same_step=False), got {init_t.numel()}"
            )
        if not bool(torch.isfinite(init_t).all()):
            raise ValueError("init must be finite")
        if log_steps and bool((init_t <= 0).any()):
            raise ValueError("log_steps=True needs positive initial step sizes")
        self.pgd_steps = Q
        self.same_step = bool(same_step)
        self.log_steps = bool(log_steps)
        self.param = nn.Parameter(torch.log(init_t) if log_steps else init_t.clone())
        self.momentum = bool(momentum)
        if self.momentum:
            b = torch.as_tensor(momentum_init, dtype=dtype).flatten()
            if b.numel() == 1:
                b = b.expand(Q - 1).clone()
            if b.numel() != Q - 1 or not bool(torch.isfinite(b).all()):
                raise ValueError(
                    f"momentum_init must be a finite number or have {Q - 1} entries, "
                    f"got {b.numel()}"
                )
            self.beta = nn.Parameter(b.clone())

    def forward(self) -> torch.Tensor:
        g = torch.exp(self.param) if self.log_steps else self.param
        return g.expand(self.pgd_steps) if self.same_step else g

    def betas(self) -> torch.Tensor | None:
        """The ``(Q - 1,)`` momentum coefficients, or ``None`` without momentum."""
        return self.beta if self.momentum else None


class UnfoldedWMMSE(UnrolledModel):
    """Deep-unfolded WMMSE (Pellaco et al., Algorithm 1, Fig. 1) as an unrolled model.

    ``T = layers`` layers (the paper's ``L``), each: ``u`` (eq. (5b)), ``w`` (eq. (5a)), then
    ``Q = pgd_steps`` PGD steps (eqs. (12)-(13), the paper's ``K``) with the layer's trainable
    step sizes. Starts from the matched filter at full power
    (:func:`lib.precoding.matched_filter_init`).

    Parameters
    ----------
    layers : int
        ``T``.
    pgd_steps : int
        ``Q``.
    init_step : float, ``(Q,)`` or ``(T, Q)``
        Initial step sizes.
    same_step, log_steps : bool
        See :class:`~lib.learn.PGDStepSizes`.
    normalised_steps : bool
        Divide every step size by ``tr(A)`` of its channel and layer (``tr(A) >= lambda_max(A)``,
        so ``gamma / tr(A)`` is a scale-free step for the quadratic sub-problem with Hessian
        ``2 A``; chapter *Unfolded WMMSE*, Sec. 9). Costs ``M + Q + 1`` flops per layer.
    momentum : bool
        Heavy-ball PGD: step ``q >= 2`` of a layer starts from
        ``V^(q-1) + beta_t^(q) (V^(q-1) - V^(q-2))`` with trainable ``beta_t^(q)`` (initialised
        at 0, i.e. plain PGD).
    weights : real tensor ``(K,)``, optional
        User priorities ``alpha`` used by the PGD steps, by :func:`~lib.learn.wsr_loss` (which
        reads them
        from the model) and by :func:`~lib.learn.per_layer_wsr` (``None``: ones). A non-persistent
        buffer.
    dtype : torch.dtype
        Of the step sizes.

    ``model(H, power, noise_var)`` validates its inputs once and returns the per-layer
    precoders ``(T, B, M, K)`` (for the loss of eq. (14)); ``precode`` returns the last one,
    with the signature of the other precoders.
    """

    def __init__(
        self,
        layers: int,
        pgd_steps: int = 4,
        *,
        init_step=1.0,
        same_step=False,
        log_steps=False,
        normalised_steps=False,
        momentum=False,
        weights=None,
        dtype=torch.float64,
    ):
        T = check_positive_int(layers, "layers")
        Q = check_positive_int(pgd_steps, "pgd_steps")
        init = torch.as_tensor(init_step, dtype=dtype)
        if init.dim() == 2:
            if init.shape[0] != T:
                raise ValueError(
                    f"init_step must have {T} rows (one per layer), got {tuple(init.shape)}"
                )
            inits = list(init)
        else:
            inits = [init] * T
        super().__init__(
            [
                PGDStepSizes(
                    Q,
                    g,
                    same_step=same_step,
                    log_steps=log_steps,
                    momentum=momentum,
                    dtype=dtype,
                )
                for g in inits
            ]
        )
        self.pgd_steps = Q
        self.same_step = bool(same_step)
        self.log_steps = bool(log_steps)
        self.normalised_steps = bool(normalised_steps)
        self.momentum = bool(momentum)
        if weights is not None:
            if not isinstance(weights, torch.Tensor):
                weights = torch.as_tensor(weights, dtype=dtype)
            check_tensor(weights, "weights", ndim=1, complex_=False)
            if bool((weights < 0).any()) or weights.numel() == 0:
                raise ValueError("weights must be a non-empty (K,) tensor with entries >= 0")
            weights = weights.detach().clone()
        self.register_buffer("weights", weights, persistent=False)

    # -- UnrolledModel interface ------------------------------------------------ #
    def forward(self, H, power, noise_var, n_layers: int | None = None) -> torch.Tensor:
        """Per-layer precoders ``(n_layers, B, M, K)`` of ``H`` ``(B, K, M)``.

        ``power`` and ``noise_var`` are scalars or ``(B,)``; checked here once, then passed to
        the layers as ``(B,)`` tensors of the real dtype of ``H``.
        """
        _check_H(H)
        P = _scalar(power, "power", H)
        s2 = _scalar(noise_var, "noise_var", H)
        if self.weights is not None and self.weights.shape[0] != H.shape[1]:
            raise ValueError(
                f"the model's weights have {self.weights.shape[0]} entries, but H has "
                f"{H.shape[1]} users (shape (B, K, M) = {tuple(H.shape)})"
            )
        return super().forward(H, P, s2, n_layers=n_layers)

    def init_state(self, H, power, noise_var):
        return _scale_to_power(H.mH, power)  # matched filter at full power

    def layer_forward(self, layer, V, t, H, power, noise_var):
        u, w = _receivers_weights(H, V, noise_var)
        aw = w if self.weights is None else self.weights.to(w.dtype) * w
        return _pgd(H, V, u, aw, torch.sqrt(power), layer(), layer.betas(), self.normalised_steps)

    # -- convenience ---------------------------------------------------------------- #
    def precode(self, H, power, noise_var) -> torch.Tensor:
        """The network's precoder ``V`` ``(B, M, K)`` (output of the last layer)."""
        return self(H, power, noise_var)[-1]

    def step_sizes(self) -> torch.Tensor:
        """The step sizes ``Gamma`` as a ``(T, Q)`` tensor (detached)."""
        return torch.stack([layer().detach() for layer in self.layers])

    def momentum_coeffs(self) -> torch.Tensor | None:
        """The momentum coefficients as a ``(T, Q - 1)`` tensor (detached), or ``None``."""
        if not self.momentum:
            return None
        return torch.stack([layer.betas().detach() for layer in self.layers])

    @classmethod
    def from_step_sizes(
        cls,
        gammas,
        *,
        betas=None,
        same_step=False,
        log_steps=False,
        normalised_steps=False,
        weights=None,
        dtype=torch.float64,
    ) -> UnfoldedWMMSE:
        """A model with given step sizes ``(T, Q)`` (e.g. loaded from a JSON file).

        ``betas`` ``(T, Q - 1)``: momentum coefficients (a momentum model); ``None``: plain PGD.
        """
        g = torch.as_tensor(gammas, dtype=dtype)
        if g.dim() != 2 or g.numel() == 0:
            raise ValueError(f"gammas must have shape (T, Q), got {tuple(g.shape)}")
        if log_steps and bool((g <= 0).any()):
            raise ValueError("log_steps=True needs positive step sizes in gammas")
        b = None
        if betas is not None:
            b = torch.as_tensor(betas, dtype=dtype)
            if b.shape != (g.shape[0], g.shape[1] - 1):
                raise ValueError(
                    f"betas must have shape (T, Q - 1) = ({g.shape[0]}, {g.shape[1] - 1}), "
                    f"got {tuple(b.shape)}"
                )
        init = g[:, :1] if same_step else g
        model = cls(
            g.shape[0],
            g.shape[1],
            init_step=1.0,
            same_step=same_step,
            log_steps=log_steps,
            normalised_steps=normalised_steps,
            momentum=b is not None,
            weights=weights,
            dtype=dtype,
        )
        with torch.no_grad():
            for t, (layer, row) in enumerate(zip(model.layers, init)):
                layer.param.copy_(torch.log(row) if log_steps else row)
                if b is not None:
                    layer.beta.copy_(b[t])
        return model

    def extend_pgd(self, extra: int = 1) -> UnfoldedWMMSE:
        """Progressive extension (Pellaco et al., Sec. VI-B, Fig. 5).

        A new model with ``Q + extra`` PGD steps per layer, the first ``Q`` step sizes copied
        from this model and every added step warm-started at the value of the layer's last
        step. Not for ``same_step`` models.
        """
        extra = check_positive_int(extra, "extra")
        if self.same_step:
            raise ValueError("extend_pgd is for models with free step sizes (same_step=False)")
        G = self.step_sizes()
        G = torch.cat([G, G[:, -1:].expand(-1, extra)], dim=1)
        b = self.momentum_coeffs()
        if b is not None:  # added steps start without momentum
            b = torch.cat([b, b.new_zeros(b.shape[0], extra)], dim=1)
        return UnfoldedWMMSE.from_step_sizes(
            G,
            betas=b,
            log_steps=self.log_steps,
            normalised_steps=self.normalised_steps,
            weights=self.weights,
            dtype=G.dtype,
        )


# --------------------------------------------------------------------------- #
# Loss, data and training
# --------------------------------------------------------------------------- #
def _layer_wsr(outputs, H, noise_var, weights) -> torch.Tensor:
    T, B = outputs.shape[:2]
    s2 = _scalar(noise_var, "noise_var", H)
    Hr = H.unsqueeze(0).expand(T, *H.shape).reshape(T * B, *H.shape[1:])
    a = None if weights is None else user_weights(weights, H).repeat(T, 1)
    r = sum_rate(Hr, outputs.reshape(T * B, *outputs.shape[2:]), s2.repeat(T), a)
    return r.view(T, B)


def wsr_loss(
    outputs: torch.Tensor, target, weights=None, *, model=None, last_only: bool = False
) -> torch.Tensor:
    """Minus the sum over layers of the weighted sum rate, averaged over the batch (eq. (14)).

    Parameters
    ----------
    outputs : complex tensor ``(T, B, M, K)``
        The per-layer precoders (``model(H, power, noise_var)``).
    target : tuple
        ``(H, noise_var)`` as returned by :func:`~lib.learn.unfolded_wmmse.make_sampler`, ``H``
        ``(B, K, M)``.
    weights : real tensor ``(K,)`` or ``(B, K)``, optional
        User priorities ``alpha``.
    model : UnfoldedWMMSE, optional
        When given (the trainer passes the model it trains), ``weights`` default to the
        model's, so a weighted model is trained on its own weighted sum rate.
    last_only : bool
        Only the last layer's WSR (the objective when a network is judged by its output alone;
        chapter *Unfolded WMMSE*, Sec. 9). Use ``functools.partial(wsr_loss, last_only=True)``
        as the loss of :func:`lib.learn.fit`.

    Returns
    -------
    torch.Tensor
        Scalar, ``-(1/B) sum_b sum_t WSR(H_b, V_t,b)`` in bits/s/Hz (``t = T`` only with
        ``last_only``).
    """
    H, noise_var = target
    _check_H(H)
    B, K, M = H.shape
    want = (B, M, K)
    if not isinstance(outputs, torch.Tensor) or outputs.dim() != 4 or outputs.shape[1:] != want:
        got = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        raise ValueError(
            f"outputs must be the stacked per-layer precoders, shape (T, {B}, {M}, {K}), got {got}"
        )
    mw = getattr(model, "weights", None) if model is not None else None
    if weights is None:
        weights = mw
    elif mw is not None and not torch.equal(torch.as_tensor(weights).to(mw), mw):
        raise ValueError("wsr_loss got weights that differ from the model's weights")
    if last_only:
        outputs = outputs[-1:]
    return -_layer_wsr(outputs, H, noise_var, weights).sum(0).mean()


def make_sampler(
    users: int = 4,
    antennas: int = 4,
    snr_db=10.0,
    *,
    noise_var: float = 1.0,
    dtype=torch.complex128,
):
    """Sampler of i.i.d. Rayleigh channels for :func:`lib.learn.fit` / ``train_unrolled``.

    SNR is ``P / sigma^2`` with ``sigma^2 = noise_var``. ``snr_db`` may be a number or a pair
    ``(lo, hi)`` (a uniformly drawn SNR per sample).

    Returns
    -------
    callable
        ``sampler(B, generator) -> ((H, power, noise_var), (H, noise_var))``, ``H``
        ``(B, users, antennas)``, ``power`` and ``noise_var`` ``(B,)``.
    """
    check_positive_int(users, "users")
    check_positive_int(antennas, "antennas")
    rdt = torch.float64 if dtype == torch.complex128 else torch.float32

    def sampler(batch, gen):
        H = rayleigh(batch, users, antennas, generator=gen, dtype=dtype)
        if isinstance(snr_db, (tuple, list)):
            lo, hi = snr_db
            s = lo + (hi - lo) * torch.rand(batch, generator=gen, dtype=rdt)
            P = noise_var * db_to_lin(s)
        else:
            P = torch.full((batch,), noise_var * db_to_lin(float(snr_db)), dtype=rdt)
        s2 = torch.full((batch,), float(noise_var), dtype=rdt)
        return (H, P, s2), (H, s2)

    return sampler


def train_progressive(
    model: UnfoldedWMMSE,
    final_pgd_steps: int,
    sampler,
    *,
    steps_per_stage=500,
    lr=1e-3,
    batch_size=100,
    seed=0,
    device="cpu",
    progress=False,
    callback=None,
    plan=None,
    loss=wsr_loss,
    fit_kwargs=None,
):
    """Progressive extension of the PGD sequence (Pellaco et al., Sec. VI-B, Fig. 5).

    From a trained ``model`` with ``Q`` steps, repeatedly add one step per layer
    (:meth:`~lib.learn.UnfoldedWMMSE.extend_pgd`, warm start) and train all step sizes jointly for
    ``steps_per_stage`` Adam steps on :func:`~lib.learn.wsr_loss` (one :func:`lib.learn.fit` stage
    per
    added step, seeded ``seed + Q'`` with ``Q'`` the new number of steps), until
    ``final_pgd_steps``. ``callback(model, history)`` is called after each stage. ``plan``
    replaces the one fixed-length stage per added step (e.g. :func:`lib.learn.lr_stages` with a
    patience, validated through ``fit_kwargs = dict(val_data=..., val_fn=...)``, which are
    passed on to :func:`lib.learn.fit`); ``loss`` replaces :func:`~lib.learn.wsr_loss`.

    Returns
    -------
    (UnfoldedWMMSE, list of History)
        The extended model (on the CPU) and one history per added step.
    """
    if not isinstance(model, UnfoldedWMMSE):
        raise TypeError(f"model must be an UnfoldedWMMSE, got {type(model).__name__}")
    final_pgd_steps = check_positive_int(final_pgd_steps, "final_pgd_steps")
    if final_pgd_steps < model.pgd_steps:
        raise ValueError(f"final_pgd_steps must be >= the model's {model.pgd_steps} steps")
    steps_per_stage = check_positive_int(steps_per_stage, "steps_per_stage")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable: callback(model, history)")
    hists = []
    while model.pgd_steps < final_pgd_steps:
        model = model.extend_pgd(1)
        h = fit(
            model,
            wsr_loss,
            sampler,
            plan=[Stage(f"extend-{model.pgd_steps}", steps_per_stage)] if plan is None else plan,
            lr=lr,
            batch_size=batch_size,
            seed=seed + model.pgd_steps,
            device=device,
            progress=progress,
            **(fit_kwargs or {}),
        )
        model.cpu()
        hists.append(h)
        if callback is not None:
            callback(model, h)
    return model, hists


# --------------------------------------------------------------------------- #
# Evaluation
# --------------------------------------------------------------------------- #
@torch.no_grad()
def per_layer_wsr(model: UnfoldedWMMSE, H, power, noise_var) -> torch.Tensor:
    """Weighted sum rate after every layer, ``(T, B)`` bits/s/Hz (no autograd).

    Uses the model's user priorities ``model.weights``.
    """
    return _layer_wsr(model(H, power, noise_var), H, noise_var, model.weights)


@torch.no_grad()
def truncated_wmmse_wsr(H, power, noise_var, iters: int, weights=None) -> torch.Tensor:
    """WSR of the classical WMMSE truncated after ``1..iters`` iterations, ``(iters, B)``.

    Matched-filter start, :func:`lib.precoding.wmmse` with ``history=True``.
    """
    iters = check_positive_int(iters, "iters")
    _, Vs = wmmse(H, power, noise_var, iters, weights, history=True)
    return torch.stack([sum_rate(H, Vs[i], noise_var, weights) for i in range(1, iters + 1)])
