"""The smallest unfolded network: gradient descent on least squares with one learned step per
iteration. Chapter :doc:`pytorch_primer` (eqs. ``eq-primer-gd``, ``eq-primer-poly``).

Unfolding ``T`` iterations of gradient descent on ``f(x) = 0.5 ||y - A x||^2``,
``x_{t+1} = x_t + gamma_t A^H (y - A x_t)`` from ``x_0 = 0``, and learning the ``T`` step sizes
``gamma_t`` gives a network with ``T`` parameters whose output error is the polynomial
``prod_t (I - gamma_t A^H A)`` applied to ``-x*``. Initialised at a constant step it **is**
:func:`lib.sparse.ls_gradient_descent` with that step; trained on a family of problems it learns
the polynomial that fits the family's spectrum, and conjugate gradients with the same number of
iterations (:func:`lib.sparse.ls_conjugate_gradient`) bounds what it can reach on every problem.

* :class:`~lib.learn.UnfoldedGD` -- the network, an :class:`~lib.learn.UnrolledModel` whose
  layer ``t`` holds ``log gamma_t`` (the steps stay positive); called as ``model(y, A)`` like the
  classical solvers, real or complex, and returns the per-layer stack ``(T, B, N)``;
* :func:`~lib.learn.excess_loss_db` -- its training loss, the relative excess residual of the
  last layer in dB (:func:`lib.sparse.excess_db`, unchecked);
* :func:`~lib.learn.ls_sampler` -- fresh problems ``y = A x + w`` for a fixed ``A`` with their
  least-squares solutions, the sampler of :func:`lib.learn.fit`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lib.core.checks import (
    _complex_dtype,
    _real_dtype,
    check_number,
    check_positive_int,
    check_tensor,
    same_device,
)
from lib.learn.unrolling import UnrolledModel
from lib.sparse.least_squares import _check_A_ls, _check_y_A_ls, _mhv, _mv, _sq_norm

__all__ = ["UnfoldedGD", "excess_loss_db", "ls_sampler"]

_REAL = (torch.float32, torch.float64)


class _StepLayer(nn.Module):
    """One unfolded iteration: its step ``gamma_t = exp(log_step)``."""

    def __init__(self, step: float, dtype: torch.dtype):
        super().__init__()
        self.log_step = nn.Parameter(torch.tensor(math.log(step), dtype=dtype))

    @property
    def step(self) -> torch.Tensor:
        return self.log_step.exp()


def _initial_steps(step, T: int) -> list[float]:
    if isinstance(step, torch.Tensor):
        if step.dim() == 0:
            step = float(step)
        else:
            check_tensor(step, "step", shape=(T,), complex_=False, lo=0, lo_open=True)
            return [float(s) for s in step.detach().cpu()]
    if isinstance(step, (list, tuple)):
        if len(step) != T:
            raise ValueError(f"step must be a number or have T = {T} entries, got {len(step)}")
        return [check_number(s, "step[t]", lo=0, lo_open=True) for s in step]
    return [check_number(step, "step", lo=0, lo_open=True)] * T


class UnfoldedGD(UnrolledModel):
    """``T`` gradient steps on ``0.5 ||y - A x||^2`` with a learned step per iteration.

    Layer ``t`` computes ``x_{t+1} = x_t + gamma_t A^H (y - A x_t)`` (chapter
    :doc:`pytorch_primer`, eq. ``eq-primer-gd``) from ``x_0 = 0``; ``gamma_t = exp(theta_t)``
    with the learned ``theta_t`` (log domain: positive steps, and a relative change per Adam
    step). At initialisation the network computes the iterates of
    :func:`lib.sparse.ls_gradient_descent` with the same steps.

    Parameters
    ----------
    T : int
        Number of layers (iterations).
    step : float, sequence of float or torch.Tensor
        Initial steps ``> 0``: one number for every layer (e.g.
        :func:`lib.sparse.optimal_constant_step`) or ``T`` of them (e.g.
        :func:`lib.sparse.chebyshev_steps`).
    dtype : torch.dtype
        Of the parameters, ``torch.float64`` (default) or ``torch.float32``; the model then
        takes real or complex inputs of that precision (``complex128`` or ``complex64``).

    Notes
    -----
    ``model(y, A, n_layers=None)`` with ``y`` ``(B, M)`` and ``A`` ``(M, N)`` or ``(B, M, N)``
    (one dtype, the model's device) returns the stack ``(n_layers, B, N)`` of the iterates
    ``x_1, ..., x_{n_layers}``, of the dtype of ``y``.
    """

    def __init__(self, T: int, step=1.0, *, dtype: torch.dtype = torch.float64):
        T = check_positive_int(T, "T")
        if dtype not in _REAL:
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        super().__init__([_StepLayer(s, dtype) for s in _initial_steps(step, T)])

    def init_state(self, y, A):
        y, A = _check_y_A_ls(y, A)
        p = self.layers[0].log_step
        if _real_dtype(y) != p.dtype:
            raise TypeError(
                f"y is {y.dtype} but the step sizes are {p.dtype}: use inputs of dtype "
                f"{p.dtype} or {_complex_dtype(p.dtype)}, or convert the model "
                f"(model.to({_real_dtype(y)}))"
            )
        same_device(y, p, names=("y", "the model's step sizes"))
        return torch.zeros(y.shape[0], A.shape[-1], dtype=y.dtype, device=y.device)

    def layer_forward(self, layer, x, t, y, A):
        return x + layer.step * _mhv(A, y - _mv(A, x))

    def steps(self) -> torch.Tensor:
        """The step sizes ``gamma_1..gamma_T``, ``(T,)`` (differentiable)."""
        return torch.stack([layer.step for layer in self.layers])

    @torch.no_grad()
    def set_steps(self, steps) -> None:
        """Set every step size: a number or ``T`` positive numbers (a sequence or tensor)."""
        for layer, s in zip(self.layers, _initial_steps(steps, self.num_layers)):
            layer.log_step.fill_(math.log(s))


def excess_loss_db(outputs: torch.Tensor, x_star: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Training loss: relative excess residual of the last layer in dB (ratio of sums),
    ``10 log10(sum ||A (x_T - x*)||^2 / sum ||A x*||^2)``.

    :func:`lib.sparse.excess_db` of ``outputs[-1]`` without its entry checks of values (it runs
    at every training step); ``functools.partial(excess_loss_db, A=A)`` is a loss for
    :func:`lib.learn.fit`. Chapter :doc:`pytorch_primer`, eq. ``eq-primer-excess``.

    Parameters
    ----------
    outputs : torch.Tensor
        The stacked per-layer estimates ``(t, B, N)`` of :class:`~lib.learn.UnfoldedGD`.
    x_star : torch.Tensor
        ``(B, N)`` least-squares solutions.
    A : torch.Tensor
        ``(M, N)`` or ``(B, M, N)``.

    Returns
    -------
    torch.Tensor
        0-d, real, in dB.
    """
    for name, t in (("outputs", outputs), ("x_star", x_star), ("A", A)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if outputs.dim() != 3 or x_star.dim() != 2 or outputs.shape[1:] != x_star.shape:
        raise ValueError(
            "outputs must be the stacked per-layer estimates (t, B, N) with x_star (B, N); got "
            f"outputs {tuple(outputs.shape)} and x_star {tuple(x_star.shape)}"
        )
    err = _sq_norm(_mv(A, outputs[-1] - x_star)).sum()
    return 10.0 * torch.log10(err / _sq_norm(_mv(A, x_star)).sum())


def ls_sampler(A: torch.Tensor, noise_var: float, *, signal_var: float = 1.0):
    """Sampler ``(batch, generator) -> ((y, A), x_star)`` of least-squares problems for one ``A``.

    ``y = A x + w`` with ``x ~ N(0, signal_var I)`` and ``w ~ N(0, noise_var I)`` (circularly
    symmetric complex Gaussian for a complex ``A``), and ``x* = A^+ y`` its least-squares
    solution (the pseudo-inverse is computed once). Draws are made on the CPU generator and
    moved to ``A``'s device (the rule of :mod:`lib.core.runtime`).

    Parameters
    ----------
    A : torch.Tensor
        ``(M, N)``, real or complex.
    noise_var : float
        ``>= 0``.
    signal_var : float
        ``> 0``.

    Returns
    -------
    callable
        ``sampler(B, generator)`` returning ``((y, A), x_star)``, ``y`` ``(B, M)``,
        ``x_star`` ``(B, N)``, of the dtype of ``A``.
    """
    A = _check_A_ls(A)
    if A.dim() != 2:
        raise ValueError(f"A must be one (M, N) matrix, got shape {tuple(A.shape)}")
    nv = check_number(noise_var, "noise_var", lo=0)
    sv = check_number(signal_var, "signal_var", lo=0, lo_open=True)
    M, N = A.shape
    A_pinv = torch.linalg.pinv(A)

    def sampler(batch: int, generator: torch.Generator):
        batch = check_positive_int(batch, "batch")
        x = torch.randn(batch, N, generator=generator, dtype=A.dtype).to(A.device)
        w = torch.randn(batch, M, generator=generator, dtype=A.dtype).to(A.device)
        y = math.sqrt(sv) * x @ A.T + math.sqrt(nv) * w
        return (y, A), y @ A_pinv.T

    return sampler
