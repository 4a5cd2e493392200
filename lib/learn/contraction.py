"""Contraction of unrolled ISTA-type networks: per-layer Lipschitz bounds and their penalty.

Chapter *Unrolling ISTA* (section on stability). A layer ``x_{t+1} = soft(S_t x_t + b_t,
theta_t)`` is ``||S_t||_2``-Lipschitz in ``x_t`` because the soft threshold is 1-Lipschitz, so
a ``T``-layer network is ``prod_t ||S_t||_2``-Lipschitz in its initial point. This module gives
the maps ``S_t`` of :class:`~lib.learn.LISTA` and :class:`~lib.learn.LeanISTA`, their spectral
norms, a differentiable penalty on norms above ``rho_max`` (for ``train_unrolled(penalty=...)``)
and the empirical per-layer error ratio.

Shapes: ``A`` ``(M, N)``, estimates ``(T, B, N)``, truth ``x`` ``(B, N)``.
"""

from __future__ import annotations

import torch

from lib.core.checks import check_real
from lib.learn.unrolled_sparse import LISTA, LeanISTA
from lib.learn.unrolling import UnrolledModel

__all__ = ["layer_operators", "contraction_factors", "contraction_penalty", "error_contraction"]


def layer_operators(model: UnrolledModel) -> list[torch.Tensor]:
    """The linear maps ``S_t`` acting on ``x_t`` in ``x_{t+1} = soft(S_t x_t + b_t, theta_t)``.

    Parameters
    ----------
    model : LISTA or LeanISTA
        :class:`~lib.learn.LISTA`: the learned ``S_t`` (``I - W_t A`` for LISTA-CP);
        :class:`~lib.learn.LeanISTA`
        with ``threshold="learned"``: ``I - gamma_t W^T A``.

    Returns
    -------
    list of torch.Tensor
        ``T`` matrices ``(N, N)`` (differentiable in the learned parameters).
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
    """Per-layer Lipschitz bounds ``rho_t = ||S_t||_2``, a ``(T,)`` tensor without gradient.

    The whole network is then ``prod_t rho_t``-Lipschitz in its initial point ``x_0`` (a
    composition of Lipschitz maps; exercise in the chapter).
    """
    with torch.no_grad():
        return torch.stack([torch.linalg.matrix_norm(S, ord=2) for S in layer_operators(model)])


def contraction_penalty(model: UnrolledModel, n_layers: int | None = None, *, rho_max=1.0):
    """Spectral-norm penalty ``sum_t relu(||S_t||_2 - rho_max)^2`` over the first ``n_layers``.

    Differentiable (through the largest singular value); pass it to
    :func:`lib.learn.train_unrolled` as ``penalty``. Returns a scalar tensor.
    """
    ops = layer_operators(model)
    if n_layers is not None:
        ops = ops[:n_layers]
    norms = torch.stack([torch.linalg.matrix_norm(S, ord=2) for S in ops])
    return (torch.relu(norms - rho_max) ** 2).sum()


def error_contraction(xs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Empirical per-layer error ratio ``||x_{t+1} - x|| / ||x_t - x||`` (ratio of sums).

    Parameters
    ----------
    xs : real tensor ``(T, B, N)``
        Per-layer estimates (``x_0 = 0`` is prepended).
    x : real tensor ``(B, N)``
        The truth.

    Returns
    -------
    torch.Tensor
        ``(T,)``.
    """
    check_real(xs, "xs", ndim=3)
    check_real(x, "x", shape=("batch", xs.shape[-1]))
    full = torch.cat([torch.zeros_like(xs[:1]), xs], 0)
    err = ((full - x) ** 2).sum((1, 2)).sqrt()
    return err[1:] / err[:-1]
