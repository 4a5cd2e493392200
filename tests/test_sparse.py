"""Tests of lib.sparse: denoisers, ISTA/FISTA, AMP, state evolution, VAMP/OAMP, oracle, NMSE."""

from __future__ import annotations

import contextlib
import inspect
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib import sparse as sp
from lib.core import set_threads
from lib.phy import complex_normal, ula_response
from lib.sparse.evolution import _np_denoiser, _scalar_mse

set_threads(1)

M, N, P, SNR_DB = 250, 500, 0.1, 40.0


@pytest.fixture(scope="module")
def reference():
    """The book's reference problem (Borgerding et al. 2017): M=250, N=500, p=0.1, 40 dB."""
    g = torch.Generator().manual_seed(0)
    A = sp.gaussian_matrix(M, N, generator=g)
    x = sp.bernoulli_gaussian(100, N, P, generator=g)
    y, nv = sp.measure(A, x, SNR_DB, P, generator=g)
    return A, x, y, nv


def _per_sample_db(h, x):
    return 10 * torch.log10(((h - x) ** 2).sum(-1) / (x**2).sum(-1))


# --------------------------------------------------------------------------- #
# Generators
# --------------------------------------------------------------------------- #
def test_generators_shapes_and_statistics():
    g = torch.Generator().manual_seed(1)
    x = sp.bernoulli_gaussian(400, 500, 0.1, generator=g)
    assert x.shape == (400, 500) and x.dtype == torch.float64
    assert abs(float((x != 0).double().mean()) - 0.1) < 0.005
    assert abs(float((x**2).mean()) - 0.1) < 0.01
    A = sp.gaussian_matrix(250, 500, generator=g)
    assert abs(float((A**2).sum()) / 500 - 1) < 0.02
    assert sp.gaussian_matrix(3, 4, batch=2, generator=g).shape == (2, 3, 4)


@pytest.mark.parametrize("cond", [1.0, 10.0, 1000.0])
def test_ill_conditioned_matrix(cond):
    g = torch.Generator().manual_seed(2)
    A = sp.ill_conditioned_matrix(50, 80, cond, generator=g)
    s = torch.linalg.svdvals(A)
    assert float(s.max() / s.min()) == pytest.approx(cond, rel=1e-8)
    assert float((A**2).sum()) == pytest.approx(80, rel=1e-10)
    Ab = sp.ill_conditioned_matrix(20, 30, cond, generator=g, batch=3)
    assert Ab.shape == (3, 20, 30)


def test_haar_is_orthogonal():
    q = sp.haar_orthogonal(30, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(q.T @ q, torch.eye(30, dtype=q.dtype), atol=1e-12)


def test_noise_var_and_measured_snr():
    g = torch.Generator().manual_seed(4)
    A = sp.gaussian_matrix(M, N, generator=g)
    assert sp.noise_var_for_snr(A, P, SNR_DB) == pytest.approx(P * N / M * 1e-4)
    x = sp.bernoulli_gaussian(200, N, P, generator=g)
    y, nv = sp.measure(A, x, 10.0, P, generator=g)
    clean = x @ A.T
    snr = float((clean**2).sum() / ((y - clean) ** 2).sum())
    assert 10 * math.log10(snr) == pytest.approx(10.0, abs=0.2)


# --------------------------------------------------------------------------- #
# Denoisers
# --------------------------------------------------------------------------- #
floats = st.floats(-10, 10, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(r=floats, r2=floats, tau=st.floats(0, 5))
def test_soft_threshold_properties(r, r2, tau):
    t = torch.tensor([r, r2], dtype=torch.float64)
    e = sp.soft_threshold(t, tau)
    # shrinks towards zero, keeps the sign, is odd, zero inside the dead zone
    assert torch.all(e.abs() <= t.abs() + 1e-15)
    assert torch.all(e * t >= 0)
    assert torch.allclose(sp.soft_threshold(-t, tau), -e)
    assert torch.all(e[t.abs() <= tau] == 0)
    assert torch.allclose(e[t.abs() > tau].abs(), t[t.abs() > tau].abs() - tau)
    # non-expansive (it is a proximal map)
    assert abs(float(e[0] - e[1])) <= abs(r - r2) + 1e-12


def test_soft_threshold_is_the_prox_of_l1():
    r = torch.linspace(-3, 3, 61, dtype=torch.float64)
    u = torch.linspace(-4, 4, 80001, dtype=torch.float64)
    tau = 0.7
    cost = 0.5 * (u[None, :] - r[:, None]) ** 2 + tau * u.abs()[None, :]
    brute = u[cost.argmin(1)]
    assert torch.allclose(sp.soft_threshold(r, tau), brute, atol=2e-4)


def test_soft_threshold_complex_and_per_sample():
    r = torch.tensor([3 + 4j, 0.1j], dtype=torch.complex128)
    e = sp.soft_threshold(r, 1.0)
    assert torch.allclose(e, torch.tensor([(3 + 4j) * 4 / 5, 0], dtype=torch.complex128))
    rb = torch.ones(2, 3, dtype=torch.float64)
    e = sp.soft_threshold(rb, torch.tensor([0.5, 2.0], dtype=torch.float64))
    assert torch.allclose(e, torch.tensor([[0.5] * 3, [0.0] * 3], dtype=torch.float64))
    with pytest.raises(ValueError, match="tau"):
        sp.soft_threshold(rb, -1.0)


def test_bg_denoiser_is_posterior_mean_and_derivative():
    p, tau2, s = 0.1, 0.05, 1.0
    r = torch.linspace(-2, 2, 41, dtype=torch.float64, requires_grad=True)
    xhat, d = sp.bg_mmse_denoiser(r, tau2, p, s)
    # posterior mean by brute-force integration over x (Gaussian slab) plus the spike at 0
    xs = torch.linspace(-8, 8, 40001, dtype=torch.float64)
    lik = torch.exp(-0.5 * (r.detach()[:, None] - xs[None, :]) ** 2 / tau2)
    slab = p * torch.exp(-0.5 * xs**2 / s) / math.sqrt(2 * math.pi * s)
    spike = (1 - p) * torch.exp(-0.5 * r.detach() ** 2 / tau2)
    dx = xs[1] - xs[0]
    num = (lik * slab * xs).sum(1) * dx
    den = (lik * slab).sum(1) * dx + spike
    assert torch.allclose(xhat.detach(), num / den, atol=1e-8)
    (grad,) = torch.autograd.grad(xhat.sum(), r)
    assert torch.allclose(d.detach(), grad, atol=1e-10)
    # per-sample tau2
    rb = torch.stack([r.detach(), r.detach()])
    xb, _ = sp.bg_mmse_denoiser(rb, torch.tensor([0.05, 0.5], dtype=torch.float64), p)
    assert torch.allclose(xb[0], xhat.detach())
    assert torch.allclose(xb[1], sp.bg_mmse_denoiser(r.detach(), 0.5, p)[0])


# --------------------------------------------------------------------------- #
# ISTA / FISTA
# --------------------------------------------------------------------------- #
def test_ista_objective_decreases_monotonically(reference):
    A, x, y, _ = reference
    lam = 0.003
    _, hist = sp.ista(y[:10], A, lam, 200, history=True)
    obj = torch.stack([sp.lasso_objective(y[:10], A, h, lam) for h in hist])  # (iters, batch)
    assert torch.all(obj[1:] <= obj[:-1] * (1 + 1e-12))
    # FISTA reaches a lower objective in the same number of iterations
    xf = sp.fista(y[:10], A, lam, 200)
    assert torch.all(sp.lasso_objective(y[:10], A, xf, lam) < obj[-1])


def test_fista_with_constant_momentum_is_ista(reference):
    A, _, y, _ = reference
    a = sp.ista(y[:4], A, 0.01, 30)
    b = sp.fista(y[:4], A, 0.01, 30, momentum=lambda t: 1.0)
    assert torch.allclose(a, b, atol=1e-12)
    assert sp.fista_momentum(1.0) == pytest.approx((1 + math.sqrt(5)) / 2)


def test_batched_matrices_match_per_sample_runs():
    g = torch.Generator().manual_seed(5)
    Ab = sp.gaussian_matrix(30, 60, batch=3, generator=g)
    x = sp.bernoulli_gaussian(3, 60, 0.1, generator=g)
    y, nv = sp.measure(Ab, x, 30.0, 0.1, generator=g)
    fns = (
        lambda yy, AA, xx: sp.ista(yy, AA, 0.01, 20),
        lambda yy, AA, xx: sp.fista(yy, AA, 0.01, 20),
        lambda yy, AA, xx: sp.amp(yy, AA, 10),
        lambda yy, AA, xx: sp.vamp(yy, AA, nv, 10, p=0.1),
        lambda yy, AA, xx: sp.oamp(yy, AA, nv, 10, p=0.1),
        lambda yy, AA, xx: sp.support_oracle(yy, AA, xx != 0),
    )
    for fn in fns:
        out = fn(y, Ab, x)
        for i in range(3):
            one = fn(y[i : i + 1], Ab[i], x[i : i + 1])
            assert torch.allclose(out[i : i + 1], one, atol=1e-9)


# --------------------------------------------------------------------------- #
# AMP and state evolution
# --------------------------------------------------------------------------- #
def test_state_evolution_quadrature_matches_monte_carlo():
    g = torch.Generator().manual_seed(6)
    n = 1_000_000
    X = sp.bernoulli_gaussian(1, n, 0.1, generator=g)[0]
    for tau2 in (1e-4, 1e-2):
        R = X + math.sqrt(tau2) * torch.randn(n, generator=g, dtype=torch.float64)
        mc = float(((sp.soft_threshold(R, 1.2 * math.sqrt(tau2)) - X) ** 2).mean())
        mc_bg = float(((sp.bg_mmse_denoiser(R, tau2, 0.1)[0] - X) ** 2).mean())
        eta = _np_denoiser("soft", 1.2, 0.1, 1.0)
        quad, _ = _scalar_mse(eta, tau2, 0.1, 1.0, 4001)
        quad_bg, _ = _scalar_mse(_np_denoiser("bg", None, 0.1, 1.0), tau2, 0.1, 1.0, 4001)
        assert quad == pytest.approx(mc, rel=0.02)
        assert quad_bg == pytest.approx(mc_bg, rel=0.02)


def test_amp_tracks_state_evolution_on_reference_problem(reference):
    """Within 1 dB: the median per-sample NMSE at every iteration, and the batch NMSE
    (ratio of sums) at the start and at convergence. In the steep middle part the ratio of
    sums lags behind by about one iteration because it is dominated by the slowest samples."""
    A, x, y, nv = reference
    for den, iters in (("soft", 60), ("bg", 20)):
        _, h = sp.amp(y, A, iters, denoiser=den, alpha=1.14, p=P, history=True)
        se = 10 * np.log10(sp.state_evolution((M, N), P, nv, iters, denoiser=den, alpha=1.14))
        median = np.median(_per_sample_db(h, x).numpy(), axis=1)
        assert np.abs(median - se).max() < 1.0, (den, np.abs(median - se).max())
        ros = sp.nmse_db(h, x).numpy()
        assert np.abs(ros - se)[:3].max() < 1.0
        assert abs(ros[-1] - se[-1]) < 1.0


def test_bayes_optimal_amp_reaches_the_oracle(reference):
    A, x, y, nv = reference
    x_or = sp.support_oracle(y, A, x != 0)
    oracle = float(sp.nmse_db(x_or, x))
    assert -47.0 < oracle < -45.0
    amp_bg = float(sp.nmse_db(sp.amp(y, A, 15, denoiser="bg", p=P), x))
    assert oracle < amp_bg < oracle + 1.0


def test_calibrated_lasso_matches_amp_fixed_point(reference):
    A, x, y, nv = reference
    alpha = 1.14
    lam = sp.calibrated_lambda((M, N), P, nv, alpha)
    x_f = sp.fista(y, A, lam, 400)
    x_a = sp.amp(y, A, 80, alpha=alpha)
    assert abs(float(sp.nmse_db(x_f, x)) - float(sp.nmse_db(x_a, x))) < 1.0


def test_vamp_and_oamp_beat_amp_at_condition_number_100():
    g = torch.Generator().manual_seed(7)
    A = sp.ill_conditioned_matrix(M, N, 100.0, generator=g)
    x = sp.bernoulli_gaussian(20, N, P, generator=g)
    y, nv = sp.measure(A, x, SNR_DB, P, generator=g)
    amp_db = float(sp.nmse_db(sp.amp(y, A, 30, denoiser="bg", p=P), x))
    vamp_db = float(sp.nmse_db(sp.vamp(y, A, nv, 30, p=P), x))
    oamp_db = float(sp.nmse_db(sp.oamp(y, A, nv, 30, p=P), x))
    oracle_db = float(sp.nmse_db(sp.support_oracle(y, A, x != 0), x))
    assert amp_db > 0  # AMP fails
    assert vamp_db < -35 and oamp_db < -35
    assert vamp_db > oracle_db - 0.5 and oamp_db > oracle_db - 0.5


# --------------------------------------------------------------------------- #
# Oracle and NMSE
# --------------------------------------------------------------------------- #
def test_lmmse_is_the_best_linear_estimator_and_matches_its_formula():
    g = torch.Generator().manual_seed(21)
    A = sp.gaussian_matrix(60, 120, generator=g)
    x = sp.bernoulli_gaussian(4000, 120, P, generator=g)
    y, nv = sp.measure(A, x, 20.0, P, generator=g)
    xh = sp.lmmse(y, A, nv, signal_var=P)
    # the closed form, solved directly, with a per-sample noise variance too
    nvs = nv * torch.linspace(0.5, 2.0, 4000, dtype=A.dtype)
    for noise in (nv, nvs):
        G = P * A @ A.T + torch.as_tensor(noise).reshape(-1, 1, 1) * torch.eye(60, dtype=A.dtype)
        direct = P * torch.linalg.solve(G, y.unsqueeze(-1)).squeeze(-1) @ A
        assert torch.allclose(sp.lmmse(y, A, noise, signal_var=P), direct, rtol=1e-7, atol=1e-9)
    # its expected NMSE, and 10 log10(1 - M/N) at high SNR
    emp = float(sp.nmse(xh, x))
    assert emp == pytest.approx(sp.lmmse_nmse(A, float(nv), signal_var=P), rel=0.03)
    assert 10 * math.log10(sp.lmmse_nmse(A, 1e-9, signal_var=P)) == pytest.approx(
        10 * math.log10(0.5), abs=0.01
    )
    # any other linear map does worse: perturb the LMMSE matrix in random directions
    W = sp.lmmse(torch.eye(60, dtype=A.dtype), A, nv, signal_var=P)  # the matrix, as rows
    for _ in range(3):
        D = 0.02 * torch.randn(60, 120, generator=g, dtype=A.dtype)
        assert float(sp.nmse(y @ (W + D), x)) > emp
    with pytest.raises(ValueError, match="signal_var"):
        sp.lmmse(y, A, nv, signal_var=0.0)
    with pytest.raises(ValueError, match="noise_var"):
        sp.lmmse(y, A, -1.0, signal_var=P)


def test_support_oracle_noiseless_is_exact():
    g = torch.Generator().manual_seed(8)
    A = sp.gaussian_matrix(40, 80, generator=g)
    x = sp.bernoulli_gaussian(6, 80, 0.15, generator=g)
    x[0] = 0  # an empty support
    xo = sp.support_oracle(x @ A.T, A, x != 0)
    assert torch.allclose(xo, x, atol=1e-10)


def test_nmse_is_a_ratio_of_sums_with_history_axis():
    x = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    xh = torch.tensor([[0.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    assert float(sp.nmse(xh, x)) == pytest.approx(1 / 10)
    assert float(sp.nmse_db(xh, x)) == pytest.approx(-10.0)
    h = torch.stack([xh, x + 1e-3])
    assert sp.nmse_db(h, x).shape == (2,)
    # per sample: the first sample lost all its energy, the second none
    assert sp.nmse(xh, x, per_sample=True).tolist() == [1.0, 0.0]
    assert sp.nmse_db(h, x, per_sample=True).shape == (2, 2)
    with pytest.raises(ValueError, match="all-zero row"):
        sp.nmse(xh, torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64), per_sample=True)


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #
def test_bad_inputs_are_rejected(reference):
    A, x, y, nv = reference
    with pytest.raises(ValueError, match=r"y must have shape \(batch, 250\)"):
        sp.ista(y[:, :10], A, 0.1, 5)
    with pytest.raises(ValueError, match="A must have 2 or 3 dimensions"):
        sp.amp(y, A[0], 5)
    with pytest.raises(TypeError, match="A must be a real"):
        sp.amp(y, A.to(torch.complex128), 5)
    with pytest.raises(TypeError, match="y must be a real"):
        sp.fista(y.to(torch.complex128), A, 0.1, 5)
    with pytest.raises(ValueError, match="same batch size"):
        sp.amp(y[:3], torch.stack([A, A]), 5)
    with pytest.raises(ValueError, match="p must be in"):
        sp.bernoulli_gaussian(2, 5, -0.1)
    with pytest.raises(ValueError, match="p must be in"):
        sp.vamp(y, A, nv, 5, p=1.5)
    with pytest.raises(ValueError, match="noise_var must be > 0"):
        sp.vamp(y, A, -1.0, 5, p=0.1)
    with pytest.raises(ValueError, match="x0 must have shape"):
        sp.ista(y, A, 0.1, 5, x0=torch.zeros(3, N, dtype=torch.float64))
    with pytest.raises(ValueError, match="iters must be >= 1"):
        sp.ista(y, A, 0.1, 0)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        sp.ista(y, A, -0.1, 5)
    with pytest.raises(ValueError, match="needs the sparsity p"):
        sp.amp(y, A, 5, denoiser="bg")
    with pytest.raises(ValueError, match="xhat must have shape"):
        sp.nmse_db(x[:, :10], x)
    with pytest.raises(ValueError, match="cond must be >= 1"):
        sp.ill_conditioned_matrix(5, 6, 0.5)
    with pytest.raises(ValueError, match="x_support_mask must have shape"):
        sp.support_oracle(y, A, (x != 0)[:, :5])
    with pytest.raises(ValueError, match="underdetermined"):
        sp.support_oracle(y[:1], A, torch.ones(1, N, dtype=torch.bool))


# --------------------------------------------------------------------------- #
# Checks at the entry, not in the loop (issue 10, section 4)
# --------------------------------------------------------------------------- #
@contextlib.contextmanager
def _count_host_syncs():
    """Count the tensor -> Python conversions (each one a device synchronisation on a GPU)."""
    counts = {"n": 0}
    names = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist")
    originals = {name: getattr(torch.Tensor, name) for name in names}

    def wrap(orig):
        def wrapper(self, *args, **kwargs):
            counts["n"] += 1
            return orig(self, *args, **kwargs)

        return wrapper

    for name, orig in originals.items():
        setattr(torch.Tensor, name, wrap(orig))
    try:
        yield counts
    finally:
        for name, orig in originals.items():
            setattr(torch.Tensor, name, orig)


_ALGORITHMS = {
    "ista": lambda y, A, nv, T: sp.ista(y, A, 0.01, T),
    "fista": lambda y, A, nv, T: sp.fista(y, A, 0.01, T),
    "amp_soft": lambda y, A, nv, T: sp.amp(y, A, T),
    "amp_bg": lambda y, A, nv, T: sp.amp(y, A, T, denoiser="bg", p=0.1),
    "vamp": lambda y, A, nv, T: sp.vamp(y, A, nv, T, p=0.1),
    "vamp_damped": lambda y, A, nv, T: sp.vamp(y, A, nv, T, p=0.1, damping=0.7),
    "oamp": lambda y, A, nv, T: sp.oamp(y, A, nv, T, p=0.1),
}


@pytest.mark.parametrize("name", sorted(_ALGORITHMS))
def test_iterations_do_not_synchronise(name):
    """The number of host synchronisations does not grow with the number of iterations."""
    g = torch.Generator().manual_seed(11)
    A = sp.gaussian_matrix(20, 40, generator=g)
    x = sp.bernoulli_gaussian(3, 40, 0.1, generator=g)
    y, nv = sp.measure(A, x, 30.0, 0.1, generator=g)
    fn = _ALGORITHMS[name]
    with _count_host_syncs() as few:
        fn(y, A, nv, 2)
    with _count_host_syncs() as many:
        fn(y, A, nv, 25)
    assert many["n"] == few["n"], (few["n"], many["n"])
    assert few["n"] > 0  # the entry checks themselves are counted: the counter works


# --------------------------------------------------------------------------- #
# The sparse-estimator interface: estimator(y, A, noise_var) (issue 10, section 2)
# --------------------------------------------------------------------------- #
def test_noise_var_keyword_is_accepted_where_unused(reference):
    A, x, y, nv = reference
    y = y[:5]
    for fn in (
        lambda **kw: sp.ista(y, A, 0.01, 10, **kw),
        lambda **kw: sp.fista(y, A, 0.01, 10, **kw),
        lambda **kw: sp.amp(y, A, 10, **kw),
    ):
        assert torch.equal(fn(), fn(noise_var=nv))
        assert torch.equal(fn(), fn(noise_var=torch.full((5,), nv, dtype=torch.float64)))
        with pytest.raises(ValueError, match="noise_var must be >= 0"):
            fn(noise_var=-1.0)
        with pytest.raises(ValueError, match="noise_var must be finite"):
            fn(noise_var=math.nan)


def test_signatures_of_the_classical_estimators():
    """noise_var: keyword-only where unused (ISTA, FISTA, AMP), third positional where used."""
    for fn in (sp.ista, sp.fista, sp.amp):
        par = inspect.signature(fn).parameters["noise_var"]
        assert par.kind is inspect.Parameter.KEYWORD_ONLY and par.default is None
    for fn in (sp.vamp, sp.oamp):
        assert list(inspect.signature(fn).parameters)[:4] == ["y", "A", "noise_var", "iters"]


@pytest.mark.parametrize("name", sorted(_ALGORITHMS))
def test_history_stack_shape_and_last_entry(name):
    g = torch.Generator().manual_seed(12)
    A = sp.gaussian_matrix(20, 40, generator=g)
    x = sp.bernoulli_gaussian(3, 40, 0.1, generator=g)
    y, nv = sp.measure(A, x, 30.0, 0.1, generator=g)
    fns = {
        "ista": lambda **kw: sp.ista(y, A, 0.01, 7, **kw),
        "fista": lambda **kw: sp.fista(y, A, 0.01, 7, **kw),
        "amp_soft": lambda **kw: sp.amp(y, A, 7, **kw),
        "amp_bg": lambda **kw: sp.amp(y, A, 7, denoiser="bg", p=0.1, **kw),
        "vamp": lambda **kw: sp.vamp(y, A, nv, 7, p=0.1, **kw),
        "vamp_damped": lambda **kw: sp.vamp(y, A, nv, 7, p=0.1, damping=0.7, **kw),
        "oamp": lambda **kw: sp.oamp(y, A, nv, 7, p=0.1, **kw),
    }
    xh, stack = fns[name](history=True)
    assert stack.shape == (7, 3, 40) and torch.equal(stack[-1], xh)
    _, curve = fns[name](history=lambda v: float(sp.nmse_db(v, x)))
    assert curve.shape == (7,) and curve[-1] == pytest.approx(float(sp.nmse_db(xh, x)))
    with pytest.raises(TypeError, match="history must be a bool or a callable"):
        fns[name](history="yes")


# --------------------------------------------------------------------------- #
# One formula (issue 10, section 7)
# --------------------------------------------------------------------------- #
def test_state_evolution_numbers_unchanged():
    """Values of the state evolution before the NumPy Bernoulli-Gaussian formula was replaced
    by the torch one (lib at commit c5aa9da), to 1e-12 relative."""
    bg = sp.state_evolution(0.5, 0.1, 2e-5, 30, denoiser="bg")
    soft = sp.state_evolution(0.5, 0.1, 2e-5, 30, alpha=1.14)
    fp = sp.se_fixed_point(0.5, 0.1, 2e-5, denoiser="bg")["nmse"]
    old_bg = [0.3812682508931587, 3.311249386727768e-05, 2.7535301311837304e-05]
    old_soft = [0.45129808180014636, 0.004319279651094195, 0.00018944883446102685]
    assert np.allclose(bg[[0, 9, 29]], old_bg, rtol=1e-12, atol=0)
    assert np.allclose(soft[[0, 9, 29]], old_soft, rtol=1e-12, atol=0)
    assert fp == pytest.approx(2.7535301677699555e-05, rel=1e-12)


@pytest.mark.parametrize("p", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("tau2", [1e-6, 1e-2, 3.0])
def test_state_evolution_denoisers_are_the_algorithms_denoisers(p, tau2):
    grid = np.linspace(-5, 5, 1001)
    rt = torch.from_numpy(grid)
    bg = _np_denoiser("bg", None, p, 1.0)(grid, tau2)
    assert np.allclose(bg, sp.bg_mmse_denoiser(rt, tau2, p)[0].numpy(), rtol=1e-12, atol=1e-300)
    soft = _np_denoiser("soft", 1.3, p, 1.0)(grid, tau2)
    assert np.array_equal(soft, sp.soft_threshold(rt, 1.3 * math.sqrt(tau2)).numpy())


def test_few_path_channel_uses_the_ula_response():
    g = torch.Generator().manual_seed(13)
    h, ha = sp.few_path_channel(32, 3, generator=g, on_grid=True)
    assert h.dtype == torch.complex128 and h.shape == (32,)
    assert int((ha.abs() > 1e-9).sum()) == 3  # exactly L-sparse on the DFT grid
    assert float(ha.abs().pow(2).sum()) == pytest.approx(float(h.abs().pow(2).sum()), rel=1e-12)
    # the same draws by hand: grid indices, CN(0, 1) gains, lib.phy.ula_response
    g = torch.Generator().manual_seed(13)
    idx = torch.randperm(32, generator=g)[:3].to(torch.float64)
    gains = complex_normal(3, generator=g)
    ref = ula_response(32, 2 * idx / 32 - 1).T @ gains / math.sqrt(3)
    assert torch.allclose(h, ref, atol=1e-12)
    with pytest.raises(ValueError, match="n_paths must be <= n_antennas = 4 on the grid"):
        sp.few_path_channel(4, 5, on_grid=True)


# --------------------------------------------------------------------------- #
# Robustness (issue 10, section 5): dtypes, devices, non-finite numbers
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", sorted(_ALGORITHMS))
def test_float32_problems_stay_float32(name):
    g = torch.Generator().manual_seed(14)
    A = sp.gaussian_matrix(30, 60, generator=g, dtype=torch.float32)
    x = sp.bernoulli_gaussian(4, 60, 0.1, generator=g, dtype=torch.float32)
    y, nv = sp.measure(A, x, 30.0, 0.1, generator=g)
    assert y.dtype == torch.float32
    xh = _ALGORITHMS[name](y, A, nv, 10)
    assert xh.dtype == torch.float32 and bool(torch.isfinite(xh).all())


def test_measure_and_starts_do_not_cast_silently(reference):
    A, x, y, nv = reference
    with pytest.raises(TypeError, match="x must have the dtype of A"):
        sp.measure(A, x.float(), 30.0, 0.1)
    with pytest.raises(TypeError, match="x0 must have the dtype of y"):
        sp.ista(y, A, 0.1, 3, x0=torch.zeros_like(x, dtype=torch.float32))
    with pytest.raises(TypeError, match="x_support_mask must have dtype bool"):
        sp.support_oracle(y, A, (x != 0).double())
    with pytest.raises(TypeError, match="y and A must have the same dtype"):
        sp.oamp(y.float(), A, nv, 3, p=0.1)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda A: sp.noise_var_for_snr(A, 0.1, math.nan), ValueError, "snr_db must be a finite"),
        (lambda A: sp.noise_var_for_snr(A, 0.1, math.inf), ValueError, "snr_db must be a finite"),
        (lambda A: sp.noise_var_for_snr(A, math.nan, 10.0), ValueError, "p must be a finite"),
        (
            lambda A: sp.measure(A, torch.zeros(2, 500, dtype=A.dtype), -math.inf, 0.1),
            ValueError,
            "snr_db",
        ),
        (
            lambda A: sp.bernoulli_gaussian(2, 5, 0.1, dtype=torch.complex128),
            TypeError,
            "dtype must be",
        ),
        (lambda A: sp.gaussian_matrix(2, 5, dtype=torch.int64), TypeError, "dtype must be"),
        (lambda A: sp.bernoulli_gaussian(2, 5, 0.1, signal_var=math.inf), ValueError, "signal_var"),
        (lambda A: sp.ill_conditioned_matrix(5, 6, math.inf), ValueError, "cond must be a finite"),
        (lambda A: sp.ill_conditioned_matrix(5, 6, math.nan), ValueError, "cond must be a finite"),
        (
            lambda A: sp.ista(
                torch.zeros(1, 3, dtype=torch.float64),
                torch.zeros(3, 4, dtype=torch.float64),
                0.1,
                2,
            ),
            ValueError,
            "A is zero",
        ),
        (
            lambda A: sp.amp(torch.zeros(1, 250, dtype=A.dtype), A, 2, alpha=math.nan),
            ValueError,
            "alpha must be a finite",
        ),
        (
            lambda A: sp.amp(
                torch.zeros(1, 250, dtype=A.dtype), A, 2, denoiser="bg", p=0.1, signal_var=0.0
            ),
            ValueError,
            "signal_var must be > 0",
        ),
        (
            lambda A: sp.amp(torch.zeros(1, 250, dtype=A.dtype), A, 2, onsager=1),
            TypeError,
            "onsager must be a bool",
        ),
        (
            lambda A: sp.vamp(torch.zeros(1, 250, dtype=A.dtype), A, 1e-3, 2, p=0.1, damping=0.0),
            ValueError,
            r"damping must be in \(0, 1\]",
        ),
        (
            lambda A: sp.vamp(torch.zeros(1, 250, dtype=A.dtype), A, math.nan, 2, p=0.1),
            ValueError,
            "noise_var must be finite",
        ),
        (
            lambda A: sp.oamp(
                torch.zeros(1, 250, dtype=A.dtype), A, 1e-3, 2, p=0.1, signal_var=-1.0
            ),
            ValueError,
            "signal_var must be > 0",
        ),
        (
            lambda A: sp.fista(torch.zeros(1, 250, dtype=A.dtype), A, 0.1, 2, momentum=2.0),
            TypeError,
            "momentum must be a callable",
        ),
        (
            lambda A: sp.state_evolution(0.5, 0.1, 1e-3, 3, n_grid=2),
            ValueError,
            "n_grid must be >= 3",
        ),
        (
            lambda A: sp.state_evolution(0.5, 0.1, math.nan, 3),
            ValueError,
            "noise_var must be a finite",
        ),
        (
            lambda A: sp.state_evolution(math.inf, 0.1, 1e-3, 3),
            ValueError,
            "delta must be a finite",
        ),
        (lambda A: sp.se_fixed_point(0.5, 0.1, 1e-3, rtol=0.0), ValueError, "rtol must be > 0"),
        (
            lambda A: sp.se_fixed_point(0.5, 0.1, 1e-3, max_iters=0),
            ValueError,
            "max_iters must be >= 1",
        ),
        (lambda A: sp.optimal_alpha(0.5, 0.1, 1e-3, bounds=(2.0, 1.0)), ValueError, "bounds"),
        (
            lambda A: sp.optimal_alpha(0.5, 0.1, 1e-3, bounds=2.0),
            TypeError,
            "bounds must be a pair",
        ),
        (lambda A: sp.calibrated_lambda(0.5, 0.1, 1e-3, -1.0), ValueError, "alpha must be >= 0"),
        (lambda A: sp.soft_threshold(torch.ones(3), math.nan), ValueError, "tau must be a finite"),
        (
            lambda A: sp.bg_mmse_denoiser(torch.ones(3), math.inf, 0.1),
            ValueError,
            "tau2 must be a finite",
        ),
        (
            lambda A: sp.bg_mmse_denoiser(torch.ones(3), torch.tensor([1.0, 0.0, 1.0]), 0.1),
            ValueError,
            "tau2 must be > 0",
        ),
        (
            lambda A: sp.soft_threshold(torch.ones(2, 3), torch.tensor([0.5, math.nan])),
            ValueError,
            "tau contains NaN",
        ),
    ],
)
def test_non_finite_and_out_of_range_arguments_are_rejected(reference, call, exc, match):
    A = reference[0]
    with pytest.raises(exc, match=match):
        call(A)


def test_generators_take_the_requested_device():
    g = torch.Generator().manual_seed(15)
    assert sp.bernoulli_gaussian(2, 5, 0.1, generator=g, device="meta").device.type == "meta"
    assert sp.gaussian_matrix(2, 5, generator=g, device="meta").device.type == "meta"
    assert sp.gaussian_matrix(2, 5, batch=2, device="meta").device.type == "meta"
    # the generator's numbers do not depend on the device they are moved to
    a = sp.gaussian_matrix(3, 4, generator=torch.Generator().manual_seed(1), device="cpu")
    b = sp.gaussian_matrix(3, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sparse_pipeline_on_cuda_matches_cpu():
    g = lambda: torch.Generator().manual_seed(16)  # noqa: E731
    A = sp.gaussian_matrix(30, 60, generator=g(), device="cuda")
    x = sp.bernoulli_gaussian(4, 60, 0.1, generator=g(), device="cuda")
    y, nv = sp.measure(A, x, 30.0, 0.1, generator=g())
    y_cpu, _ = sp.measure(A.cpu(), x.cpu(), 30.0, 0.1, generator=g())
    assert y.device.type == "cuda" and torch.allclose(y.cpu(), y_cpu, atol=1e-12)
    for name, fn in _ALGORITHMS.items():
        out = fn(y, A, nv, 10)
        assert out.device.type == "cuda", name
        assert torch.allclose(out.cpu(), fn(y_cpu, A.cpu(), nv, 10), atol=1e-8), name
    assert sp.support_oracle(y, A, x != 0).device.type == "cuda"


def test_se_fixed_point_reports_non_convergence():
    fp = sp.se_fixed_point(0.5, 0.1, 1e-3, max_iters=2)
    assert fp["converged"] is False and fp["iters"] == 2
    fp = sp.se_fixed_point(0.5, 0.1, 1e-3)
    assert fp["converged"] is True and fp["iters"] < 2000
