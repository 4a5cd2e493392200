"""Deep-unfolded WMMSE beamforming (Pellaco, Bengtsson & Jaldén, 2020).

The classical WMMSE algorithm (Shi et al. 2011; :func:`lib.precoding.wmmse`) alternates the
receiver update ``u`` (eq. (5b)), the MSE-weight update ``w`` (eq. (5a)) and a closed-form
precoder update (eq. (5c)) that needs a matrix inverse, an eigendecomposition and a bisection
for the Lagrange multiplier. Pellaco et al. replace the precoder update by ``K`` steps of
projected gradient descent (PGD) on the convex sub-problem (9),

.. math::  \\tilde{\\mathbf V}^{(k)} = \\mathbf V^{(k-1)}
           - \\gamma^{(k)}\\nabla f(\\mathbf V^{(k-1)}),
           \\qquad \\mathbf V^{(k)} = \\Pi_{\\mathcal C}\\{\\tilde{\\mathbf V}^{(k)}\\},

with ``nabla f(v_i) = 2 A v_i - 2 alpha_i w_i u_i h_i`` (eq. (12)), ``A = sum_i alpha_i w_i
|u_i|^2 h_i h_i^H`` (eq. (6)) and the projection onto the power ball written without branches,
``Pi(V) = sqrt(P) V / (relu(||V|| - sqrt(P)) + sqrt(P))`` (Sec. VI-A). Unfolding ``L`` such
iterations (Algorithm 1) gives a network whose only trainable parameters are the ``L x K``
step sizes ``gamma_l^(k)``, trained without labels on minus the sum over layers of the
weighted sum rate (eq. (14)).

Everything is batched and complex-valued (PyTorch autograd handles complex tensors, so the
real-valued embedding of the paper is not needed). The ``u`` and ``w`` updates and the rate
are those of :mod:`lib.precoding`; the model is an :class:`lib.learn.UnrolledModel`, trained
with :func:`lib.learn.train_unrolled`.

Shapes: ``H`` ``(batch, users, antennas)`` (row ``k`` is ``h_k^H``), ``V``
``(batch, antennas, users)``, ``power`` and ``noise_var`` scalars or ``(batch,)``.

Contents

* :func:`pgd_gradient`, :func:`project_power_ball`, :func:`pgd_precoder` -- eqs. (12)-(13).
* :class:`PGDStepSizes`, :class:`UnfoldedWMMSE` -- Algorithm 1 as an unrolled model
  (``same_step`` ablation, ``log_steps`` parameterisation, :meth:`UnfoldedWMMSE.extend_pgd`).
* :func:`wsr_loss`, :func:`make_sampler`, :func:`train_progressive` -- eq. (14) and training.
* :func:`per_layer_wsr`, :func:`truncated_wmmse_wsr` -- evaluation per layer / iteration.
* :func:`flops_wmmse`, :func:`flops_unfolded_wmmse`, :func:`flops_zf`, :func:`flops_rzf` --
  operation counts per channel.
"""

from __future__ import annotations

import torch
from torch import nn

from lib.core.checks import check_complex, check_positive_int, check_tensor, per_sample
from lib.core.units import db_to_lin
from lib.learn.unrolling import UnrolledModel, train_unrolled
from lib.phy.channels import rayleigh
from lib.precoding.common import user_weights
from lib.precoding.linear import matched_filter_init, sum_rate
from lib.precoding.weighted_mmse import wmmse, wmmse_receivers, wmmse_weights

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
# Helpers
# --------------------------------------------------------------------------- #
def _rdt(H: torch.Tensor) -> torch.dtype:
    return torch.float64 if H.dtype == torch.complex128 else torch.float32


def _check_H(H) -> torch.Tensor:
    check_complex(H, "H", shape=("batch", "users", "antennas"))
    if min(H.shape) == 0:
        raise ValueError(
            f"H must have non-empty shape (batch, users, antennas), got {tuple(H.shape)}"
        )
    return H


def _check_V(V, H, name="V") -> torch.Tensor:
    B, K, M = H.shape
    check_complex(V, name, shape=(B, M, K))
    if V.dtype != H.dtype:
        raise TypeError(f"{name} must have the dtype of H ({H.dtype}), got {V.dtype}")
    return V


def _per_sample(value, name, H, *, allow_zero=False) -> torch.Tensor:
    return per_sample(
        value, name, H.shape[0], dtype=_rdt(H), device=H.device, allow_zero=allow_zero
    )


def _abs2(x: torch.Tensor) -> torch.Tensor:
    return x.real.square() + x.imag.square()


def _gram_A(H, u, w, a) -> torch.Tensor:
    """``A = sum_k alpha_k w_k |u_k|^2 h_k h_k^H`` (Pellaco et al., eq. (6)), ``(batch, M, M)``."""
    c = (a * w * _abs2(u)).to(H.dtype)
    return (H.mH * c[:, None, :]) @ H


# --------------------------------------------------------------------------- #
# The PGD reformulation of the V sub-problem (eqs. (9)-(13))
# --------------------------------------------------------------------------- #
def pgd_gradient(H, V, u, w, weights=None, *, A: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient of the V sub-problem (9) (Pellaco et al., eq. (12)), shape ``(batch, M, K)``.

    ``f(V) = sum_i alpha_i (w_i e_i - log2 w_i)`` with the MSE
    ``e_i = sum_j |u_i|^2 |h_i^H v_j|^2 - 2 Re(conj(u_i) h_i^H v_i) + sigma^2 |u_i|^2 + 1``
    (``u`` and ``w`` fixed). Column ``i`` of the result is
    ``nabla f(v_i) = 2 A v_i - 2 alpha_i w_i u_i h_i`` with ``A`` of eq. (6): twice the
    Wirtinger derivative ``df/d conj(v_i)``, i.e. the steepest-ascent direction of ``f`` in
    ``C^M = R^{2M}`` (what PyTorch's autograd returns for a real loss of a complex tensor).
    ``A`` may be passed when it is already known (it does not depend on ``V``).
    """
    _check_H(H)
    _check_V(V, H)
    B, K, M = H.shape
    check_complex(u, "u", shape=(B, K))
    check_tensor(w, "w", shape=(B, K), complex_=False)
    a = user_weights(weights, H)
    if A is None:
        A = _gram_A(H, u, w, a)
    R = H.mH * ((a * w).to(H.dtype) * u)[:, None, :]  # columns alpha_k w_k u_k h_k
    return 2.0 * (A @ V - R)


def project_power_ball(V: torch.Tensor, power) -> torch.Tensor:
    """Projection onto ``{V : tr(V V^H) <= P}`` without branches (Pellaco et al., Sec. VI-A).

    ``Pi(V) = sqrt(P) V / (relu(||V||_F - sqrt(P)) + sqrt(P))``: ``V`` itself inside the ball,
    ``sqrt(P) V / ||V||_F`` outside -- the branch form of eq. (13). Differentiable except on
    the sphere ``||V||_F = sqrt(P)``. ``V`` is ``(batch, M, K)`` (any dtype), ``power`` a
    scalar or ``(batch,)``.
    """
    check_tensor(V, "V", ndim=3)
    rdt = _rdt(V) if V.is_complex() else V.dtype
    P = per_sample(power, "power", V.shape[0], dtype=rdt, device=V.device)
    sp = torch.sqrt(P)
    nrm = torch.sqrt(_abs2(V).sum(dim=(-2, -1)) if V.is_complex() else V.square().sum(dim=(-2, -1)))
    scale = sp / (torch.relu(nrm - sp) + sp)
    return V * scale.to(V.dtype)[:, None, None]


def pgd_precoder(H, V, u, w, power, step_sizes, weights=None) -> torch.Tensor:
    """``K`` PGD steps (12a)-(12b) on the V sub-problem from ``V``, ``K = len(step_sizes)``.

    ``step_sizes`` is a real tensor ``(K,)`` (or a sequence of floats); gradients flow to it.
    ``A`` (eq. (6)) is formed once and reused by every step, so a step costs one
    ``(M x M) @ (M x K)`` product per channel: ``O(K M^2)`` per layer, no inverse.
    """
    _check_H(H)
    _check_V(V, H)
    B, K, M = H.shape
    check_complex(u, "u", shape=(B, K))
    check_tensor(w, "w", shape=(B, K), complex_=False)
    if not isinstance(step_sizes, torch.Tensor):
        step_sizes = torch.as_tensor(list(step_sizes), dtype=_rdt(H))
    check_tensor(step_sizes, "step_sizes", ndim=1, complex_=False)
    if step_sizes.numel() == 0:
        raise ValueError("step_sizes must contain at least one step")
    P = _per_sample(power, "power", H)
    a = user_weights(weights, H)
    A = _gram_A(H, u, w, a)
    R = H.mH * ((a * w).to(H.dtype) * u)[:, None, :]
    sp = torch.sqrt(P)
    for k in range(step_sizes.shape[0]):
        Vt = V - step_sizes[k].to(H.dtype) * (2.0 * (A @ V - R))
        nrm = torch.sqrt(_abs2(Vt).sum(dim=(-2, -1)))
        V = Vt * (sp / (torch.relu(nrm - sp) + sp)).to(H.dtype)[:, None, None]
    return V


# --------------------------------------------------------------------------- #
# The unfolded network (Algorithm 1)
# --------------------------------------------------------------------------- #
class PGDStepSizes(nn.Module):
    """Trainable step sizes ``gamma_l^(1..K)`` of one layer.

    ``same_step=True`` ties them (one parameter per layer, the paper's "same gamma"
    ablation). ``log_steps=True`` stores ``log gamma`` (positive steps, multiplicative Adam
    updates); otherwise ``gamma`` itself, free in R as in the paper.
    """

    def __init__(
        self, pgd_steps: int, init=1.0, *, same_step=False, log_steps=False, dtype=torch.float64
    ):
        super().__init__()
        K = check_positive_int(pgd_steps, "pgd_steps")
        init_t = torch.as_tensor(init, dtype=dtype).flatten()
        if init_t.numel() == 1:
            init_t = init_t.expand(1 if same_step else K).clone()
        elif same_step or init_t.numel() != K:
            raise ValueError(
                f"init must be a number or have {K} entries (same_step=False), got {init_t.numel()}"
            )
        if log_steps and bool((init_t <= 0).any()):
            raise ValueError("log_steps=True needs positive initial step sizes")
        self.pgd_steps = K
        self.same_step = bool(same_step)
        self.log_steps = bool(log_steps)
        self.param = nn.Parameter(torch.log(init_t) if log_steps else init_t.clone())

    def forward(self) -> torch.Tensor:
        g = torch.exp(self.param) if self.log_steps else self.param
        return g.expand(self.pgd_steps) if self.same_step else g


class UnfoldedWMMSE(UnrolledModel):
    """Deep-unfolded WMMSE (Pellaco et al., Algorithm 1, Fig. 1) as an unrolled model.

    ``L = layers`` layers, each: ``u`` (eq. (5b), :func:`lib.precoding.wmmse_receivers`),
    ``w`` (eq. (5a), :func:`lib.precoding.wmmse_weights`), then ``K = pgd_steps`` PGD steps
    (:func:`pgd_precoder`) with the layer's trainable step sizes. Starts from the matched
    filter at full power (:func:`lib.precoding.matched_filter_init`).

    ``model(H, power, noise_var)`` returns the per-layer precoders ``(L, batch, M, users)``
    (for the loss of eq. (14)); :meth:`precode` returns the last one, with the signature of
    the other precoders. ``weights`` are the user priorities ``alpha`` (``None``: ones).
    """

    def __init__(
        self,
        layers: int,
        pgd_steps: int = 4,
        *,
        init_step=1.0,
        same_step=False,
        log_steps=False,
        weights=None,
        dtype=torch.float64,
    ):
        L = check_positive_int(layers, "layers")
        K = check_positive_int(pgd_steps, "pgd_steps")
        init = torch.as_tensor(init_step, dtype=dtype)
        if init.dim() == 2:
            if init.shape[0] != L:
                raise ValueError(
                    f"init_step must have {L} rows (one per layer), got {tuple(init.shape)}"
                )
            inits = list(init)
        else:
            inits = [init] * L
        super().__init__(
            [
                PGDStepSizes(K, g, same_step=same_step, log_steps=log_steps, dtype=dtype)
                for g in inits
            ]
        )
        self.pgd_steps = K
        self.same_step = bool(same_step)
        self.log_steps = bool(log_steps)
        self.weights = weights

    # -- UnrolledModel interface ------------------------------------------------ #
    def init_state(self, H, power, noise_var):
        _check_H(H)
        return matched_filter_init(H, power)

    def layer_forward(self, layer, V, t, H, power, noise_var):
        u = wmmse_receivers(H, V, noise_var)
        w = wmmse_weights(H, V, u, noise_var)
        return pgd_precoder(H, V, u, w, power, layer(), self.weights)

    # -- convenience ---------------------------------------------------------------- #
    def precode(self, H, power, noise_var) -> torch.Tensor:
        """The network's precoder ``V`` ``(batch, M, users)`` (output of the last layer)."""
        return self(H, power, noise_var)[-1]

    def step_sizes(self) -> torch.Tensor:
        """The step sizes ``Gamma`` as an ``(L, K)`` tensor (detached)."""
        return torch.stack([layer().detach() for layer in self.layers])

    @classmethod
    def from_step_sizes(
        cls, gammas, *, same_step=False, log_steps=False, weights=None, dtype=torch.float64
    ) -> UnfoldedWMMSE:
        """A model with given step sizes ``(L, K)`` (e.g. loaded from a JSON file)."""
        g = torch.as_tensor(gammas, dtype=dtype)
        if g.dim() != 2 or g.numel() == 0:
            raise ValueError(f"gammas must have shape (L, K), got {tuple(g.shape)}")
        if same_step:
            init = g[:, :1]
        else:
            init = g
        model = cls(
            g.shape[0],
            g.shape[1],
            init_step=1.0,
            same_step=same_step,
            log_steps=log_steps,
            weights=weights,
            dtype=dtype,
        )
        with torch.no_grad():
            for layer, row in zip(model.layers, init):
                layer.param.copy_(torch.log(row) if log_steps else row)
        return model

    def extend_pgd(self, extra: int = 1) -> UnfoldedWMMSE:
        """Progressive extension (Pellaco et al., Sec. VI-B, Fig. 5): a new model with ``K + extra``
        PGD steps per layer, the first ``K`` step sizes copied from this model and every added
        step warm-started at the value of the layer's last step. Not for ``same_step`` models.
        """
        extra = check_positive_int(extra, "extra")
        if self.same_step:
            raise ValueError("extend_pgd is for models with free step sizes (same_step=False)")
        G = self.step_sizes()
        G = torch.cat([G, G[:, -1:].expand(-1, extra)], dim=1)
        return UnfoldedWMMSE.from_step_sizes(
            G, log_steps=self.log_steps, weights=self.weights, dtype=G.dtype
        )


# --------------------------------------------------------------------------- #
# Loss, data and training
# --------------------------------------------------------------------------- #
def wsr_loss(outputs: torch.Tensor, target, weights=None) -> torch.Tensor:
    """Minus the sum over layers of the weighted sum rate, averaged over the batch (eq. (14)).

    ``outputs`` ``(L, batch, M, K)`` are the per-layer precoders, ``target = (H, noise_var)``
    (as returned by :func:`make_sampler`). Uses :func:`lib.precoding.sum_rate`.
    """
    H, noise_var = target
    L, B = outputs.shape[:2]
    s2 = _per_sample(noise_var, "noise_var", H)
    Hr = H.unsqueeze(0).expand(L, *H.shape).reshape(L * B, *H.shape[1:])
    r = sum_rate(Hr, outputs.reshape(L * B, *outputs.shape[2:]), s2.repeat(L), weights)
    return -r.view(L, B).sum(0).mean()


def make_sampler(
    users: int = 4,
    antennas: int = 4,
    snr_db=10.0,
    *,
    noise_var: float = 1.0,
    dtype=torch.complex128,
):
    """Sampler of i.i.d. Rayleigh channels for :func:`lib.learn.train_unrolled`.

    SNR is ``P / sigma^2`` with ``sigma^2 = noise_var``. ``snr_db`` may be a number or a pair
    ``(lo, hi)`` (a uniformly drawn SNR per sample). Returns
    ``sampler(batch, gen) -> ((H, power, noise_var), (H, noise_var))``.
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
):
    """Progressive extension of the PGD sequence (Pellaco et al., Fig. 5).

    From a trained ``model`` with ``K`` steps, repeatedly add one step per layer
    (:meth:`UnfoldedWMMSE.extend_pgd`, warm start) and train all step sizes jointly for
    ``steps_per_stage`` Adam steps with :func:`lib.learn.train_unrolled` and
    :func:`wsr_loss`, until ``final_pgd_steps``. ``callback(model)`` is called after each stage.
    Returns ``(model, histories)``.
    """
    final_pgd_steps = check_positive_int(final_pgd_steps, "final_pgd_steps")
    if final_pgd_steps < model.pgd_steps:
        raise ValueError(f"final_pgd_steps must be >= the model's {model.pgd_steps} steps")
    hists = []
    while model.pgd_steps < final_pgd_steps:
        model = model.extend_pgd(1)
        h = train_unrolled(
            model,
            sampler,
            wsr_loss,
            finetune_steps=steps_per_stage,
            lr=lr,
            batch_size=batch_size,
            seed=seed + model.pgd_steps,
            device=device,
            progress=progress,
        )
        model.cpu()
        hists.append(h)
        if callback is not None:
            callback(model)
    return model, hists


# --------------------------------------------------------------------------- #
# Evaluation
# --------------------------------------------------------------------------- #
@torch.no_grad()
def per_layer_wsr(model: UnfoldedWMMSE, H, power, noise_var) -> torch.Tensor:
    """Weighted sum rate after every layer, ``(L, batch)`` bits/s/Hz (no autograd)."""
    out = model(H, power, noise_var)
    L, B = out.shape[:2]
    s2 = _per_sample(noise_var, "noise_var", H)
    Hr = H.unsqueeze(0).expand(L, *H.shape).reshape(L * B, *H.shape[1:])
    return sum_rate(Hr, out.reshape(L * B, *out.shape[2:]), s2.repeat(L), model.weights).view(L, B)


@torch.no_grad()
def truncated_wmmse_wsr(H, power, noise_var, iters: int, weights=None) -> torch.Tensor:
    """WSR of the classical WMMSE truncated after ``1..iters`` iterations, ``(iters, batch)``.

    Matched-filter start, :func:`lib.precoding.wmmse` with ``history=True``.
    """
    iters = check_positive_int(iters, "iters")
    _, Vs = wmmse(H, power, noise_var, iters, weights, history=True)
    return torch.stack([sum_rate(H, Vs[i], noise_var, weights) for i in range(1, iters + 1)])
