"""Differentiable beam selection: a deterministic straight-through softmin (Schynol & Pesavento,
Sec. 4.3.1, eq. (35); chapter *Learned hybrid beamforming*).

The greedy correction of the hybrid beamformer (chapter *Hybrid beamforming: arrays, codebooks
and greedy codeword selection*) replaces the codeword of one RF chain by the candidate of least
allocated power, ``c* = argmin_c P_c`` (their eq. (19)). The argmin has no useful derivative.
The softmin

.. math::
    s_c = \\frac{\\exp(-d_c / \\tau)}{\\sum_{c'} \\exp(-d_{c'} / \\tau)},
    \\qquad d_c = \\log P_c - \\min_{c'} \\log P_{c'},

is a smooth proxy that tends to the one-hot selection as the annealing parameter
``tau -> 0``. The costs enter through the *logarithm* of the powers: that is the
instance-adaptive normalisation of the paper (the difference of exponents does not depend on
the absolute scale of the allocated power, which varies by orders of magnitude across
instances); ``d_c`` is the excess power of candidate ``c`` in nepers over the best one, so
``tau`` is a power ratio on a log scale (``tau = 0.1``: candidates within about 10 % of the best
power share the weight).

Blending codewords in the forward pass would correlate the combined channels of the users and
make the digital problem ill-conditioned or infeasible; the paper therefore uses a
deterministic variant of the straight-through Gumbel-softmax estimator: the forward pass
returns the hard one-hot selection, the backward pass the derivative of the softmin,

.. math::
    \\mathbf s^{\\mathrm{ST}} = \\mathbf e_{c^*} + \\mathbf s - \\operatorname{sg}(\\mathbf s),

with ``sg`` the stop-gradient. Candidates that cannot be selected (linearly dependent on the
other chains, or an infeasible digital problem: cost ``+inf``) get weight zero in both passes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lib.core.checks import check_number

__all__ = ["SoftminSelection", "softmin_select"]


class SoftminSelection(NamedTuple):
    """Result of :func:`softmin_select`.

    Attributes
    ----------
    weights : torch.Tensor
        ``(B, C)``: one-hot in the forward pass, with the softmin's derivative in the backward
        pass; rows of instances without an admissible candidate are zero.
    index : torch.Tensor
        ``(B,)`` long, the selected candidate (``-1`` where none is admissible).
    soft : torch.Tensor
        ``(B, C)`` the softmin proxy itself (for diagnostics and annealing schedules).
    feasible : torch.Tensor
        ``(B,)`` bool, whether an admissible candidate exists.
    """

    weights: torch.Tensor
    index: torch.Tensor
    soft: torch.Tensor
    feasible: torch.Tensor


def softmin_select(costs: torch.Tensor, tau, *, admissible: torch.Tensor | None = None):
    """Straight-through softmin selection of the candidate of least cost (eq. (35)).

    Parameters
    ----------
    costs : torch.Tensor
        Real ``(B, C)``, positive: the allocated power of each candidate (``+inf`` for an
        infeasible one). Gradients flow to the finite entries.
    tau : float
        Annealing parameter ``> 0`` on the log-power scale (see the module docstring).
    admissible : torch.Tensor, optional
        Bool ``(B, C)``; ``False`` excludes a candidate (weight zero in both passes).

    Returns
    -------
    SoftminSelection
        ``weights`` (``(B, C)``; multiply a ``(C, M)`` codebook or ``(B, C, M)`` candidates by
        it to get the selected codeword with the straight-through gradient), ``index``,
        ``soft`` and ``feasible``.
    """
    if not isinstance(costs, torch.Tensor) or costs.dim() != 2:
        raise ValueError(f"costs must be a (B, C) tensor, got {getattr(costs, 'shape', costs)}")
    if not costs.is_floating_point():
        raise TypeError(f"costs must be a real floating-point tensor, got {costs.dtype}")
    if costs.shape[1] == 0:
        raise ValueError("costs must have at least one candidate (C >= 1)")
    tau = check_number(tau, "tau")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if bool(torch.isnan(costs).any()) or bool((costs <= 0).any()):
        raise ValueError("costs must be positive powers (+inf for an infeasible candidate), no NaN")
    ok = torch.isfinite(costs)
    if admissible is not None:
        if admissible.shape != costs.shape or admissible.dtype != torch.bool:
            raise ValueError(
                f"admissible must be a bool tensor of shape {tuple(costs.shape)}, got "
                f"{admissible.dtype} {tuple(admissible.shape)}"
            )
        ok = ok & admissible.to(costs.device)
    return _select(costs, tau, ok)


def _select(costs: torch.Tensor, tau: float, ok: torch.Tensor) -> SoftminSelection:
    feasible = ok.any(-1)
    log_p = torch.where(ok, costs, torch.ones_like(costs)).log()
    big = torch.finfo(costs.dtype).max
    masked = torch.where(ok, log_p, torch.full_like(log_p, big))
    index = masked.argmin(-1)
    best = masked.gather(-1, index[:, None]).detach()  # softmin is shift-invariant
    excess = torch.where(ok, log_p - best, torch.zeros_like(log_p))
    logits = torch.where(ok, -excess / tau, torch.full_like(excess, -torch.inf))
    logits = torch.where(feasible[:, None], logits, torch.zeros_like(logits))
    soft = torch.softmax(logits, -1) * feasible[:, None]
    hard = torch.zeros_like(soft).scatter_(-1, index[:, None], 1.0) * feasible[:, None]
    weights = hard + (soft - soft.detach())  # exactly one-hot in the forward pass
    return SoftminSelection(weights, torch.where(feasible, index, -1), soft, feasible)
