"""Least squares by gradient descent and conjugate gradients, and the unfolded gradient descent
with learned steps (lib.sparse.least_squares, lib.learn.unfolded_gd; chapter *Learning with
PyTorch for unfolding*)."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from lib.learn import UnfoldedGD, excess_loss_db, fit, ls_sampler
from lib.sparse import (
    chebyshev_steps,
    excess_db,
    gram_eigenvalue_bounds,
    ls_conjugate_gradient,
    ls_gradient_descent,
    ls_solution,
    optimal_constant_step,
)

DTYPES = [torch.float32, torch.float64, torch.complex64, torch.complex128]


def _eps(dtype) -> float:
    return torch.finfo(torch.empty(0, dtype=dtype).real.dtype).eps


def _problem(M=12, N=6, B=5, dtype=torch.float64, seed=0, batch_A=False):
    g = torch.Generator().manual_seed(seed)
    shape = (B, M, N) if batch_A else (M, N)
    A = torch.randn(*shape, generator=g, dtype=torch.complex128) / math.sqrt(M)
    y = torch.randn(B, M, generator=g, dtype=torch.complex128)
    if not dtype.is_complex:
        A, y = A.real.contiguous(), y.real.contiguous()
    return y.to(dtype), A.to(dtype)


# --------------------------------------------------------------------------- #
# Classical solvers
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("batch_A", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_cg_solves_the_normal_equations_in_N_iterations(dtype, batch_A):
    y, A = _problem(dtype=dtype, batch_A=batch_A)
    N = A.shape[-1]
    x_star = ls_solution(y, A)
    x_cg = ls_conjugate_gradient(y, A, N)
    assert x_cg.dtype == dtype
    torch.testing.assert_close(x_cg, x_star, rtol=0, atol=1e-10)
    # one more iteration after convergence stays put (no 0/0)
    x_more = ls_conjugate_gradient(y, A, N + 3)
    assert bool(torch.isfinite(x_more).all())
    torch.testing.assert_close(x_more, x_star, rtol=0, atol=1e-10)
    # the SPD system A^H A x = A^H y itself
    G = A.mH @ A
    rhs = (A.mH @ y.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close((G @ x_cg.unsqueeze(-1)).squeeze(-1), rhs, rtol=0, atol=1e-10)


def test_cg_has_the_smallest_residual_of_every_step_schedule():
    """CG is optimal over the Krylov space: no GD schedule beats it on any sample."""
    y, A = _problem(M=30, N=15, B=50, seed=3)
    T = 4
    r_cg = ((y - ls_conjugate_gradient(y, A, T) @ A.T) ** 2).sum(-1)
    mu, L = gram_eigenvalue_bounds(A)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        schedule = torch.rand(T, generator=g, dtype=torch.float64) * 2 / float(L)
        r_gd = ((y - ls_gradient_descent(y, A, T, schedule=schedule) @ A.T) ** 2).sum(-1)
        assert bool((r_cg <= r_gd * (1 + 1e-10)).all())
    cheb = chebyshev_steps(float(mu), float(L), T)
    r_ch = ((y - ls_gradient_descent(y, A, T, schedule=cheb) @ A.T) ** 2).sum(-1)
    assert bool((r_cg <= r_ch * (1 + 1e-10)).all())


def test_gd_with_the_optimal_constant_step_contracts_at_the_rate():
    y, A = _problem(M=20, N=8, B=1)
    mu, L = gram_eigenvalue_bounds(A)
    kappa = float(L / mu)
    rho = (kappa - 1) / (kappa + 1)
    ev, V = torch.linalg.eigh(A.T @ A)
    # the worst case: x* an eigenvector of the extreme eigenvalues; the error shrinks by rho
    for v in (V[:, 0], V[:, -1]):
        x_star = v[None, :]
        y = x_star @ A.T
        _, stack = ls_gradient_descent(y, A, 10, history=True)
        err = (stack - x_star).norm(dim=-1).squeeze(-1)
        torch.testing.assert_close(err, rho ** torch.arange(1, 11, dtype=err.dtype))
    # and for any other x* by at most rho
    y, A = _problem(M=20, N=8, B=20, seed=4)
    mu, L = gram_eigenvalue_bounds(A)
    rho = float((L - mu) / (L + mu))
    x_star = ls_solution(y, A)
    _, stack = ls_gradient_descent(y, A, 10, history=True)
    err = torch.cat([x_star.norm(dim=-1)[None], (stack - x_star).norm(dim=-1)])
    assert bool((err[1:] <= rho * err[:-1] * (1 + 1e-12)).all())
    torch.testing.assert_close(optimal_constant_step(A), 2 / (L + mu))


def test_chebyshev_steps_reach_the_chebyshev_bound():
    mu, L, T = 0.1, 2.5, 7
    steps = chebyshev_steps(mu, L, T)
    assert steps.shape == (T,) and bool((steps[1:] > steps[:-1]).all())
    lam = torch.linspace(mu, L, 20001, dtype=torch.float64)
    poly = torch.prod(1 - steps[:, None] * lam[None, :], dim=0)
    bound = 1 / math.cosh(T * math.acosh((L + mu) / (L - mu)))
    assert abs(float(poly.abs().max()) - bound) < 1e-6 * bound
    assert chebyshev_steps(mu, L, T, dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize("dtype", DTYPES)
def test_gd_schedule_constant_and_history_agree(dtype):
    y, A = _problem(dtype=dtype)
    c = float(optimal_constant_step(A))
    x1, stack = ls_gradient_descent(y, A, 5, step=c, history=True)
    x2 = ls_gradient_descent(y, A, 5, schedule=[c] * 5)
    x3 = ls_gradient_descent(y, A, 5)
    assert x1.dtype == dtype and stack.shape == (5, 5, 6) and stack.dtype == dtype
    tol = dict(rtol=50 * _eps(dtype), atol=50 * _eps(dtype))
    torch.testing.assert_close(x1, x2, **tol)
    torch.testing.assert_close(x1, x3, **tol)
    torch.testing.assert_close(stack[-1], x1)
    # a (T, B) schedule and a batch of matrices
    sched = torch.full((5, 5), c, dtype=torch.float64)
    torch.testing.assert_close(ls_gradient_descent(y, A, 5, schedule=sched), x1, **tol)
    A_b = torch.stack([A] * 5)
    torch.testing.assert_close(ls_gradient_descent(y, A_b, 5, step=c), x1, **tol)
    torch.testing.assert_close(
        ls_conjugate_gradient(y, A_b, 3), ls_conjugate_gradient(y, A, 3), **tol
    )
    _, curve = ls_conjugate_gradient(y, A, 3, history=lambda x: float(x.abs().sum()))
    assert curve.shape == (3,)


def test_excess_db_is_the_excess_residual():
    y, A = _problem(M=15, N=5, B=7)
    x_star = ls_solution(y, A)
    x = ls_gradient_descent(y, A, 3)
    excess = ((y - x @ A.T) ** 2).sum() - ((y - x_star @ A.T) ** 2).sum()
    want = 10 * torch.log10(excess / ((x_star @ A.T) ** 2).sum())
    torch.testing.assert_close(excess_db(x, x_star, A), want)
    _, stack = ls_gradient_descent(y, A, 3, history=True)
    assert excess_db(stack, x_star, A).shape == (3,)
    torch.testing.assert_close(excess_db(stack, x_star, A)[-1], want)


# --------------------------------------------------------------------------- #
# The learned model
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", DTYPES)
def test_unfolded_gd_at_constant_steps_is_classical_gd(dtype):
    y, A = _problem(dtype=dtype)
    rdt = torch.empty(0, dtype=dtype).real.dtype
    c = float(optimal_constant_step(A))
    model = UnfoldedGD(6, c, dtype=rdt)
    out = model(y, A)
    assert out.shape == (6, 5, 6) and out.dtype == dtype
    _, stack = ls_gradient_descent(y, A, 6, step=c, history=True)
    tol = dict(rtol=100 * _eps(dtype), atol=100 * _eps(dtype))
    torch.testing.assert_close(out, stack, **tol)
    # per-layer steps: the same as a schedule
    cheb = chebyshev_steps(*map(float, gram_eigenvalue_bounds(A)), 6, dtype=rdt)
    model.set_steps(cheb)
    torch.testing.assert_close(model.steps().detach(), cheb)
    torch.testing.assert_close(model(y, A)[-1], ls_gradient_descent(y, A, 6, schedule=cheb), **tol)
    assert model(y, A, n_layers=2).shape == (2, 5, 6)


def test_unfolded_gd_gradients_flow_and_match_finite_differences():
    y, A = _problem(M=12, N=6, B=8)
    x_star = ls_solution(y, A)
    model = UnfoldedGD(4, [0.3, 0.5, 0.7, 0.9])
    loss = excess_loss_db(model(y, A), x_star, A)
    loss.backward()
    grads = torch.stack([lay.log_step.grad for lay in model.layers])
    assert bool(torch.isfinite(grads).all()) and bool((grads != 0).all())
    h = 1e-6
    for t in range(4):
        vals = []
        for sign in (1, -1):
            with torch.no_grad():
                model.layers[t].log_step += sign * h
                vals.append(float(excess_loss_db(model(y, A), x_star, A)))
                model.layers[t].log_step -= sign * h
        assert abs((vals[0] - vals[1]) / (2 * h) - float(grads[t])) < 1e-6
    torch.testing.assert_close(
        excess_loss_db(model(y, A), x_star, A), excess_db(model(y, A)[-1], x_star, A)
    )


def test_unfolded_gd_trains_with_fit_and_beats_its_initialisation():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(20, 10, generator=g, dtype=torch.float64) / math.sqrt(20)
    sampler = ls_sampler(A, 0.01)
    val = sampler(200, torch.Generator().manual_seed(1))
    model = UnfoldedGD(3, float(optimal_constant_step(A)))
    loss = partial(excess_loss_db, A=A)
    with torch.no_grad():
        before = float(loss(model(*val[0]), val[1]))
    hist = fit(model, loss, sampler, steps=150, lr=0.05, batch_size=64, progress=False)
    with torch.no_grad():
        after = float(loss(model(*val[0]), val[1]))
    assert len(hist) == 150 and after < before - 1.0
    cg = float(excess_db(ls_conjugate_gradient(val[0][0], A, 3), val[1], A))
    assert cg <= after + 1e-9  # CG bounds every schedule on every problem


def test_ls_sampler_returns_the_least_squares_solution():
    A = torch.randn(9, 4, dtype=torch.complex128)
    (y, A_out), x_star = ls_sampler(A, 0.1)(6, torch.Generator().manual_seed(0))
    assert A_out is A and y.shape == (6, 9) and y.dtype == torch.complex128
    torch.testing.assert_close(x_star, ls_solution(y, A))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_device_follows_the_inputs():
    y, A = _problem(dtype=torch.complex64)
    y, A = y.cuda(), A.cuda()
    model = UnfoldedGD(3, 0.5, dtype=torch.float32).cuda()
    assert model(y, A).device.type == "cuda"
    assert ls_gradient_descent(y, A, 3).device.type == "cuda"
    assert ls_conjugate_gradient(y, A, 3).device.type == "cuda"
    with pytest.raises(ValueError, match="same device"):
        model(y.cpu(), A.cpu())


def test_device_mismatch_is_reported_on_the_cpu():
    y, A = _problem()
    model = UnfoldedGD(2, 0.5).to("meta")
    with pytest.raises(ValueError, match="the model's step sizes must be on the same device"):
        model(y, A)


# --------------------------------------------------------------------------- #
# Input checks
# --------------------------------------------------------------------------- #
def test_input_checks_name_the_argument():
    y, A = _problem()
    with pytest.raises(TypeError, match="y and A must have the same dtype"):
        ls_gradient_descent(y.float(), A, 3)
    with pytest.raises(ValueError, match=r"y must have shape \(batch, 12\)"):
        ls_conjugate_gradient(y[:, :5], A, 3)
    with pytest.raises(ValueError, match="iters must be >= 1"):
        ls_gradient_descent(y, A, 0)
    with pytest.raises(TypeError, match="A must be float32"):
        ls_gradient_descent(y, A.to(torch.int64), 2)
    with pytest.raises(ValueError, match="either step"):
        ls_gradient_descent(y, A, 2, step=0.1, schedule=[0.1, 0.1])
    with pytest.raises(ValueError, match=r"schedule must have shape \(3,\)"):
        ls_gradient_descent(y, A, 3, schedule=[0.1, 0.1])
    with pytest.raises(ValueError, match="schedule must be > 0"):
        ls_gradient_descent(y, A, 2, schedule=[0.1, -0.1])
    with pytest.raises(ValueError, match="step must be > 0"):
        ls_gradient_descent(y, A, 2, step=-1.0)
    with pytest.raises(ValueError, match="noise_var"):
        ls_conjugate_gradient(y, A, 2, noise_var=-1.0)
    with pytest.raises(ValueError, match="x0 must have shape"):
        ls_conjugate_gradient(y, A, 2, x0=torch.zeros(5, 3, dtype=y.dtype))
    with pytest.raises(ValueError, match="A contains NaN"):
        ls_solution(y, A * float("nan"))
    with pytest.raises(ValueError, match="mu must be in"):
        chebyshev_steps(3.0, 2.0, 4)
    with pytest.raises(ValueError, match="x_hat must have shape"):
        excess_db(torch.zeros(5, 7, dtype=y.dtype), torch.zeros(5, 6, dtype=y.dtype), A)
    with pytest.raises(ValueError, match="A is zero"):
        optimal_constant_step(torch.zeros(3, 2))


def test_model_checks_name_the_argument():
    y, A = _problem(dtype=torch.complex64)
    with pytest.raises(TypeError, match="step sizes are torch.float64"):
        UnfoldedGD(3, 0.5)(y, A)
    assert UnfoldedGD(3, 0.5, dtype=torch.float32)(y, A).dtype == torch.complex64
    with pytest.raises(ValueError, match="step must be > 0"):
        UnfoldedGD(3, 0.0)
    with pytest.raises(ValueError, match="T = 3 entries"):
        UnfoldedGD(3, [0.1, 0.2])
    with pytest.raises(ValueError, match="T must be >= 1"):
        UnfoldedGD(0, 0.1)
    with pytest.raises(TypeError, match="dtype must be"):
        UnfoldedGD(2, 0.1, dtype=torch.complex64)
    with pytest.raises(ValueError, match="n_layers must be <= 3"):
        UnfoldedGD(3, 0.5, dtype=torch.float32)(y, A, n_layers=4)
    with pytest.raises(ValueError, match="stacked per-layer"):
        excess_loss_db(torch.zeros(5, 6), torch.zeros(5, 6), torch.zeros(7, 6))
    with pytest.raises(ValueError, match="noise_var must be >= 0"):
        ls_sampler(torch.ones(3, 2), -1.0)
    with pytest.raises(ValueError, match="one \\(M, N\\) matrix"):
        ls_sampler(torch.ones(2, 3, 2), 0.1)
