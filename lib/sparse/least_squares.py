"""Least squares ``min_x 0.5 ||y - A x||^2`` by gradient descent and conjugate gradients, real or
complex, batched. Chapter :doc:`pytorch_primer` (eqs. ``eq-primer-ls``, ``eq-primer-gd``,
``eq-primer-poly``, ``eq-primer-cg``).

The gradient of ``f(x) = 0.5 ||y - A x||^2`` is ``A^H (A x - y)`` (for a complex ``x`` this is
the steepest-ascent direction in ``R^{2N}``, which PyTorch's ``.grad`` returns), so gradient
descent with steps ``gamma_t`` reads ``x_{t+1} = x_t + gamma_t A^H (y - A x_t)``. Its error
after ``T`` steps is a polynomial in the Gram matrix ``A^H A`` applied to the initial error,
``x_T - x* = prod_t (I - gamma_t A^H A) (x_0 - x*)``:

* :func:`~lib.sparse.ls_gradient_descent` -- a constant step (by default the optimal constant
  ``2 / (L + mu)``, :func:`~lib.sparse.optimal_constant_step`) or a per-iteration schedule,
  e.g. the Chebyshev steps of :func:`~lib.sparse.chebyshev_steps` (Young 1953) or learned ones
  (:class:`lib.learn.UnfoldedGD`);
* :func:`~lib.sparse.ls_conjugate_gradient` -- conjugate gradients on the normal equations
  (CGLS; Hestenes and Stiefel 1952), which after ``T`` products with ``A`` and ``A^H`` has the
  smallest residual ``||y - A x_T||`` of every method whose iterate lies in the Krylov space
  ``x_0 + span{g, (A^H A) g, ..., (A^H A)^{T-1} g}``, ``g = A^H (y - A x_0)``: the limit of
  every step schedule on every problem;
* :func:`~lib.sparse.ls_solution`, :func:`~lib.sparse.excess_db` -- the minimiser ``x*`` and
  the relative excess residual ``sum ||A (x_hat - x*)||^2 / sum ||A x*||^2`` in dB (the
  book's ratio-of-sums convention).

Shapes: ``A`` ``(M, N)`` or ``(B, M, N)``, ``y`` ``(B, M)``, ``x`` ``(B, N)``; real (float32,
float64) or complex (complex64, complex128) with one dtype for ``y``, ``A`` and ``x0``. Inputs
are checked once at the entry; the iterations run unchecked. ``history=True`` returns
``(x_hat, stack)`` with the per-iteration stack ``(T, B, N)``; a callable ``history=f``
returns ``(x_hat, [f(x_1), ..., f(x_T)])`` stacked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lib.core.checks import (
    _real_dtype,
    check_number,
    check_positive_int,
    check_tensor,
    per_sample,
    same_device,
)
from lib.sparse.common import _History

__all__ = [
    "gram_eigenvalue_bounds",
    "optimal_constant_step",
    "chebyshev_steps",
    "ls_gradient_descent",
    "ls_conjugate_gradient",
    "ls_solution",
    "excess_db",
]


# --------------------------------------------------------------------------- #
# Checks and products (real or complex)
# --------------------------------------------------------------------------- #
_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def _check_A_ls(A) -> torch.Tensor:
    check_tensor(A, "A", ndim=(2, 3), finite=False)
    if A.dtype not in _DTYPES:
        raise TypeError(f"A must be float32/float64/complex64/complex128, got {A.dtype}")
    check_tensor(A, "A")  # finiteness, once
    return A


def _check_y_A_ls(y, A) -> tuple[torch.Tensor, torch.Tensor]:
    """``y`` ``(B, M)`` against ``A`` ``(M, N)`` or ``(B, M, N)``: shape, dtype and device."""
    A = _check_A_ls(A)
    m = A.shape[-2]
    check_tensor(y, "y", shape=("batch", m))
    if y.dtype != A.dtype:
        raise TypeError(f"y and A must have the same dtype, got {y.dtype} and {A.dtype}")
    if A.dim() == 3 and A.shape[0] != y.shape[0]:
        raise ValueError(
            f"A of shape (batch, M, N) = {tuple(A.shape)} must have the same batch size as "
            f"y of shape {tuple(y.shape)}"
        )
    same_device(y, A, names=("y", "A"))
    return y, A


def _check_x0_ls(x0, batch: int, n: int, ref: torch.Tensor) -> torch.Tensor | None:
    if x0 is None:
        return None
    check_tensor(x0, "x0", shape=(batch, n))
    if x0.dtype != ref.dtype:
        raise TypeError(f"x0 must have the dtype of y ({ref.dtype}), got {x0.dtype}")
    same_device(x0, ref, names=("x0", "y"))
    return x0


def _check_noise_var(noise_var, batch: int, ref: torch.Tensor) -> None:
    """Validate a ``noise_var`` accepted for the sparse-estimator signature (and unused)."""
    if noise_var is not None:
        per_sample(
            noise_var,
            "noise_var",
            batch,
            dtype=_real_dtype(ref),
            device=ref.device,
            allow_zero=True,
        )


def _mv(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A x`` for vectors ``x`` ``(..., N)``; ``A`` ``(M, N)`` or ``(B, M, N)`` (then ``x``
    is ``(B, N)`` or ``(..., B, N)``)."""
    if A.dim() == 2:
        return x @ A.T
    return torch.matmul(A, x.unsqueeze(-1)).squeeze(-1)


def _mhv(A: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``A^H z`` for vectors ``z`` ``(..., M)`` (``A^T z`` for a real ``A``)."""
    if A.dim() == 2:
        return z @ A.conj()
    return torch.matmul(A.mH, z.unsqueeze(-1)).squeeze(-1)


def _sq_norm(x: torch.Tensor) -> torch.Tensor:
    """``||x||^2`` along the last dimension (real, also for complex ``x``)."""
    return (x.real**2 + x.imag**2).sum(-1) if x.is_complex() else (x**2).sum(-1)


# --------------------------------------------------------------------------- #
# Spectrum and step sizes
# --------------------------------------------------------------------------- #
def gram_eigenvalue_bounds(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest and largest eigenvalue ``(mu, L)`` of the Gram matrix ``A^H A``.

    ``L = ||A||_2^2`` is the Lipschitz constant of the gradient of ``0.5 ||y - A x||^2`` and
    ``mu`` its strong-convexity constant (zero when ``A`` has fewer rows than columns, or is
    rank deficient). Chapter :doc:`pytorch_primer`, eq. ``eq-primer-rate``.

    Parameters
    ----------
    A : torch.Tensor
        ``(M, N)`` or ``(B, M, N)``, real or complex.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``mu`` and ``L``, real, 0-d or ``(B,)``; ``mu`` is clipped at zero (rounding).
    """
    A = _check_A_ls(A)
    ev = torch.linalg.eigvalsh(A.mH @ A)
    return ev[..., 0].clamp_min(0.0), ev[..., -1]


def optimal_constant_step(A: torch.Tensor) -> torch.Tensor:
    """The constant step ``2 / (L + mu)`` that minimises the worst-case contraction factor.

    With it gradient descent on ``0.5 ||y - A x||^2`` contracts the error by
    ``(kappa - 1) / (kappa + 1)``, ``kappa = L / mu``, per iteration, and no constant step
    does better in the worst case (Nocedal and Wright, Sec. 3.3; chapter :doc:`pytorch_primer`,
    eq. ``eq-primer-rate``).

    Parameters
    ----------
    A : torch.Tensor
        ``(M, N)`` or ``(B, M, N)``, real or complex, not zero.

    Returns
    -------
    torch.Tensor
        Real, 0-d or ``(B,)``.
    """
    mu, L = gram_eigenvalue_bounds(A)
    if bool((L == 0).any()):
        raise ValueError("A is zero: the step 2 / (L + mu) is undefined")
    return 2.0 / (L + mu)


def chebyshev_steps(
    mu: float,
    L: float,
    T: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The ``T`` Chebyshev steps on ``[mu, L]``: ``gamma_t = 1 / r_t`` with the Chebyshev nodes
    ``r_t = (L + mu)/2 + (L - mu)/2 cos((2t - 1) pi / (2T))``, ``t = 1..T``.

    Gradient descent with these steps (in any order) makes the error polynomial
    ``prod_t (1 - gamma_t lambda)`` the scaled Chebyshev polynomial, the smallest of all
    polynomials of degree ``T`` with value 1 at 0 in the worst case over ``lambda in [mu, L]``: its
    maximum there is ``1 / cosh(T arccosh((L + mu)/(L - mu)))`` (Young 1953; chapter
    :doc:`pytorch_primer`, eq. ``eq-primer-cheb``).

    Parameters
    ----------
    mu, L : float
        ``0 <= mu <= L``, ``L > 0`` (e.g. :func:`~lib.sparse.gram_eigenvalue_bounds`).
    T : int
        Number of steps.
    dtype, device
        Of the result (a real floating dtype).

    Returns
    -------
    torch.Tensor
        ``(T,)``, increasing (the nodes decrease with ``t``).
    """
    L = check_number(float(L) if isinstance(L, torch.Tensor) else L, "L", lo=0, lo_open=True)
    mu = check_number(float(mu) if isinstance(mu, torch.Tensor) else mu, "mu", lo=0, hi=L)
    T = check_positive_int(T, "T")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    t = torch.arange(1, T + 1, dtype=torch.float64)
    nodes = (L + mu) / 2 + (L - mu) / 2 * torch.cos((2 * t - 1) * math.pi / (2 * T))
    return (1.0 / nodes).to(dtype=dtype, device=device)


# --------------------------------------------------------------------------- #
# The solvers
# --------------------------------------------------------------------------- #
def _check_schedule(schedule, iters: int, batch: int, ref: torch.Tensor) -> torch.Tensor:
    """A ``(T,)`` or ``(T, B)`` positive step schedule as a ``(T, B, 1)`` real tensor."""
    rdt = _real_dtype(ref)
    if isinstance(schedule, Sequence) and not isinstance(schedule, (str, bytes)):
        schedule = torch.tensor([check_number(s, "schedule[t]") for s in schedule], dtype=rdt)
    check_tensor(schedule, "schedule", ndim=(1, 2), complex_=False, lo=0, lo_open=True)
    if schedule.shape[0] != iters or (schedule.dim() == 2 and schedule.shape[1] != batch):
        raise ValueError(
            f"schedule must have shape ({iters},) or ({iters}, {batch}) (iters, batch), "
            f"got {tuple(schedule.shape)}"
        )
    s = schedule.to(dtype=rdt, device=ref.device)
    return s[:, None, None] if s.dim() == 1 else s[:, :, None]


def ls_gradient_descent(
    y,
    A,
    iters: int,
    *,
    step=None,
    schedule=None,
    x0=None,
    history=False,
    noise_var=None,
):
    """Gradient descent on ``f(x) = 0.5 ||y - A x||^2``, batched, real or complex.

    ``x_{t+1} = x_t + gamma_t A^H (y - A x_t)`` from ``x_0`` (zero by default), with a constant
    ``gamma_t = step`` or a per-iteration ``gamma_t = schedule[t]`` (chapter
    :doc:`pytorch_primer`, eq. ``eq-primer-gd``).

    Parameters
    ----------
    y : torch.Tensor
        ``(B, M)`` observations, real or complex.
    A : torch.Tensor
        ``(M, N)`` or ``(B, M, N)``, the dtype and device of ``y``.
    iters : int
        ``T``, number of iterations.
    step : float or torch.Tensor, optional
        Constant step ``> 0``, a scalar or ``(B,)``; default the optimal constant
        ``2 / (L + mu)`` of each matrix (:func:`~lib.sparse.optimal_constant_step`).
    schedule : sequence of float or torch.Tensor, optional
        Per-iteration steps ``> 0``, shape ``(T,)`` (shared by the batch) or ``(T, B)``
        (e.g. :func:`~lib.sparse.chebyshev_steps`); exclusive with ``step``.
    x0 : torch.Tensor, optional
        ``(B, N)`` start, the dtype and device of ``y``.
    history : bool or callable
        ``True``: also return the iterates ``x_1..x_T`` ``(T, B, N)``; a callable ``f``: also
        return ``f(x_t)`` for ``t = 1..T``, stacked.
    noise_var : float or torch.Tensor, optional
        Accepted (validated, ``>= 0``) for the common estimator signature; unused.

    Returns
    -------
    torch.Tensor or (torch.Tensor, stack)
        ``x_T`` ``(B, N)``, and with ``history`` the stack.
    """
    iters = check_positive_int(iters, "iters")
    y, A = _check_y_A_ls(y, A)
    batch, n = y.shape[0], A.shape[-1]
    _check_noise_var(noise_var, batch, y)
    if step is not None and schedule is not None:
        raise ValueError("give either step (a constant) or schedule (per iteration), not both")
    rdt = _real_dtype(y)
    if schedule is not None:
        gammas = _check_schedule(schedule, iters, batch, y)
    else:
        if step is None:
            step = optimal_constant_step(A)
        g = per_sample(step, "step", batch, dtype=rdt, device=y.device)[:, None]
        gammas = g.expand(iters, batch, 1)
    x0 = _check_x0_ls(x0, batch, n, y)
    x = torch.zeros(batch, n, dtype=y.dtype, device=y.device) if x0 is None else x0.clone()
    hist = _History(history)
    for t in range(iters):
        x = x + gammas[t] * _mhv(A, y - _mv(A, x))
        hist.add(x)
    return hist.result(x)


def ls_conjugate_gradient(y, A, iters: int, *, x0=None, history=False, noise_var=None):
    """Conjugate gradients on the normal equations ``A^H A x = A^H y`` (CGLS), batched.

    Each iteration costs one product with ``A`` and one with ``A^H``, as a gradient step does.
    In exact arithmetic ``x_T`` minimises ``||y - A x||`` over ``x_0`` plus the ``T``-th Krylov
    space of ``A^H A`` and the initial gradient (Hestenes and Stiefel 1952; Nocedal and Wright,
    Ch. 5), so no step schedule of :func:`~lib.sparse.ls_gradient_descent` ends with a smaller
    residual on any problem; after ``N`` iterations it solves the problem (chapter
    :doc:`pytorch_primer`, eq. ``eq-primer-cg``). A sample whose residual has converged to zero
    stays put (its steps are set to zero instead of dividing by zero).

    Parameters
    ----------
    y, A, x0, noise_var
        As in :func:`~lib.sparse.ls_gradient_descent`.
    iters : int
        ``T``, number of iterations.
    history : bool or callable
        As in :func:`~lib.sparse.ls_gradient_descent`.

    Returns
    -------
    torch.Tensor or (torch.Tensor, stack)
        ``x_T`` ``(B, N)``, and with ``history`` the stack.
    """
    iters = check_positive_int(iters, "iters")
    y, A = _check_y_A_ls(y, A)
    batch, n = y.shape[0], A.shape[-1]
    _check_noise_var(noise_var, batch, y)
    x0 = _check_x0_ls(x0, batch, n, y)
    tiny = torch.finfo(_real_dtype(y)).tiny
    if x0 is None:
        x = torch.zeros(batch, n, dtype=y.dtype, device=y.device)
        r = y.clone()
    else:
        x = x0.clone()
        r = y - _mv(A, x)
    s = _mhv(A, r)
    p = s
    gamma = _sq_norm(s)
    hist = _History(history)
    for _ in range(iters):
        q = _mv(A, p)
        alpha = (gamma / _sq_norm(q).clamp_min(tiny))[:, None]
        x = x + alpha * p
        r = r - alpha * q
        s = _mhv(A, r)
        gamma_new = _sq_norm(s)
        p = s + (gamma_new / gamma.clamp_min(tiny))[:, None] * p
        gamma = gamma_new
        hist.add(x)
    return hist.result(x)


# --------------------------------------------------------------------------- #
# Solution and metric
# --------------------------------------------------------------------------- #
def ls_solution(y, A) -> torch.Tensor:
    """The minimum-norm least-squares solution ``x* = A^+ y``.

    Parameters
    ----------
    y : torch.Tensor
        ``(B, M)``, real or complex.
    A : torch.Tensor
        ``(M, N)`` or ``(B, M, N)``, the dtype and device of ``y``.

    Returns
    -------
    torch.Tensor
        ``x*`` ``(B, N)``.
    """
    y, A = _check_y_A_ls(y, A)
    return _mv(torch.linalg.pinv(A), y)


def excess_db(x_hat, x_star, A) -> torch.Tensor:
    """Relative excess residual in dB, ``10 log10(sum ||A (x_hat - x*)||^2 / sum ||A x*||^2)``.

    ``||A (x - x*)||^2 = ||y - A x||^2 - ||y - A x*||^2`` is twice the excess objective
    ``f(x) - f(x*)`` of least squares (the error in the energy norm of ``A^H A``), and
    ``||A x*||^2`` its value at ``x = 0``; sums run over the batch (the book's ratio-of-sums
    convention). Chapter :doc:`pytorch_primer`, eq. ``eq-primer-excess``. Differentiable.

    Parameters
    ----------
    x_hat : torch.Tensor
        ``(B, N)`` or a per-iteration stack ``(T, B, N)``.
    x_star : torch.Tensor
        ``(B, N)`` minimiser (:func:`~lib.sparse.ls_solution`), with ``A x*`` not all zero.
    A : torch.Tensor
        ``(M, N)`` or ``(B, M, N)``, the dtype and device of ``x_star``.

    Returns
    -------
    torch.Tensor
        Real, 0-d for ``(B, N)`` input, ``(T,)`` for a stack.
    """
    A = _check_A_ls(A)
    n = A.shape[-1]
    check_tensor(x_star, "x_star", shape=("batch", n))
    check_tensor(x_hat, "x_hat", ndim=(2, 3))
    if tuple(x_hat.shape[-2:]) != tuple(x_star.shape):
        b = x_star.shape[0]
        raise ValueError(
            f"x_hat must have shape ({b}, {n}) or (iters, {b}, {n}), got {tuple(x_hat.shape)}"
        )
    if A.dim() == 3 and A.shape[0] != x_star.shape[0]:
        raise ValueError(
            f"A of shape {tuple(A.shape)} must have the batch size of x_star, {x_star.shape[0]}"
        )
    if x_hat.dtype != A.dtype or x_star.dtype != A.dtype:
        raise TypeError(
            f"x_hat, x_star and A must have one dtype, got {x_hat.dtype}, {x_star.dtype} "
            f"and {A.dtype}"
        )
    same_device(x_hat, x_star, A, names=("x_hat", "x_star", "A"))
    ref = _sq_norm(_mv(A, x_star)).sum()
    if float(ref) == 0:
        raise ValueError("A x_star is all zero: the relative excess residual is undefined")
    return 10.0 * torch.log10(_sq_norm(_mv(A, x_hat - x_star)).sum(-1) / ref)
