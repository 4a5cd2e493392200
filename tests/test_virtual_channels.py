"""Tests of lib.precoding.virtual: minimum power with PSD virtual channels (Schynol & Pesavento,
eqs. (25)-(27), (31)-(32)) and its implicit gradient (eqs. (41)-(46) for PSD R_kj): reduction to
the rank-one solvers, the SDP relaxation (37), the Jacobian, finite differences, cvxpylayers,
infeasible samples, permutations, float32 and input checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lib.core import set_threads
from lib.phy import rayleigh
from lib.precoding import (
    min_power_duality,
    min_power_implicit,
    min_power_psd,
    virtual_channels,
    virtual_min_power,
)
from lib.precoding.implicit import _from_real, _to_real
from lib.precoding.virtual import _jacobian, _residual

set_threads(1)

C128 = torch.complex128


def _instance(B, K, M, seed, spread=1.0):
    gen = torch.Generator().manual_seed(seed)
    H = rayleigh(B, K, M, generator=gen)
    gam = 0.5 + 2.0 * torch.rand(B, K, generator=gen, dtype=torch.float64)
    s2 = 0.3 + torch.rand(B, generator=gen, dtype=torch.float64)
    a = 0.5 + spread * torch.rand(B, K, K, generator=gen, dtype=torch.float64)
    b = 0.1 * spread * torch.rand(B, K, K, generator=gen, dtype=torch.float64)
    return H, a, b, gam, s2


def _random_psd(B, K, M, seed, rank=None):
    """General per-pair PSD ``R_kj`` (full rank unless ``rank``), a few times the identity."""
    gen = torch.Generator().manual_seed(seed)
    r = M if rank is None else rank
    X = torch.randn(B, K, K, M, r, generator=gen, dtype=C128) / r**0.5
    R = X @ X.mH
    off = 1.0 - torch.eye(K, dtype=torch.float64)
    return R * (1.0 - 0.8 * off).to(C128)[None, :, :, None, None]  # weaker interference


def _sdp(R, gam, s2):
    """SDP relaxation (37) with cvxpy + Clarabel: ``(total power, W list, duals)``."""
    cp = pytest.importorskip("cvxpy")
    K, M = R.shape[0], R.shape[-1]
    Ws = [cp.Variable((M, M), hermitian=True) for _ in range(K)]
    qos = []
    for k in range(K):
        interf = sum(cp.real(cp.trace(R[k, j] @ Ws[j])) for j in range(K) if j != k)
        qos.append(cp.real(cp.trace(R[k, k] @ Ws[k])) / gam[k] - interf >= s2)
    prob = cp.Problem(
        cp.Minimize(sum(cp.real(cp.trace(W)) for W in Ws)), qos + [W >> 0 for W in Ws]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Solution may be inaccurate"
        prob.solve(solver=cp.CLARABEL)
    # Clarabel reports some of these small SDPs as "optimal_inaccurate" on some CPUs (the
    # same problem, the same versions); the checks of the caller verify the solution to 1e-5
    # (objective, rank, duals, strong duality), so an inaccurate flag alone is no failure.
    assert prob.status in ("optimal", "optimal_inaccurate"), prob.status
    return prob.value, [W.value for W in Ws], np.array([float(c.dual_value) for c in qos])


def _loss(res, coef):
    c_p, c_v = coef
    feas = res.feasible[:, None]
    p = torch.where(feas, res.powers, 0.0)
    q = torch.where(feas, res.uplink_powers, 0.0)
    return p.sum() + (c_p * p).sum() + (c_p * q).sum() + (c_v.conj() * res.V).real.sum()


def _coef(B, K, M, seed=7):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.rand(B, K, generator=gen, dtype=torch.float64),
        torch.randn(B, M, K, generator=gen, dtype=C128),
    )


# --------------------------------------------------------------------------- #
# Forward
# --------------------------------------------------------------------------- #
def test_rank_one_reproduces_the_rank_one_solvers():
    H, _, _, gam, s2 = _instance(5, 3, 4, seed=1)
    ones, zeros = (
        torch.ones(5, 3, 3, dtype=torch.float64),
        torch.zeros(5, 3, 3, dtype=torch.float64),
    )
    res = virtual_min_power(H, ones, zeros, gam, s2)
    ref = min_power_duality(H, gam, s2)
    assert bool(res.feasible.all()) and bool(ref.feasible.all())
    torch.testing.assert_close(res.powers, ref.powers, rtol=1e-10, atol=0)
    imp = min_power_implicit(H, gam, s2)  # same phase convention h_k^H w_k > 0
    torch.testing.assert_close(res.V, imp.V, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(res.uplink_powers, imp.uplink_powers, rtol=1e-9, atol=0)
    # general entry point, default phase reference: the same powers and |h_k^H w_j|
    gen = min_power_psd(virtual_channels(H, ones, zeros), gam, s2)
    torch.testing.assert_close(gen.powers, ref.powers, rtol=1e-10, atol=0)
    torch.testing.assert_close((H @ gen.V).abs(), (H @ ref.V).abs(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["virtual", "full_rank", "rank_two"])
def test_agrees_with_the_sdp_relaxation_and_is_rank_one(kind):
    B, K, M = 3, 3, 4
    H, a, b, gam, s2 = _instance(B, K, M, seed=2)
    if kind == "virtual":
        R = virtual_channels(H, a, b)
    else:
        R = _random_psd(B, K, M, seed=3, rank=None if kind == "full_rank" else 2)
        gam = gam * 0.5
    res = min_power_psd(R, gam, s2)
    assert bool(res.feasible.all())
    for i in range(B):
        val, Ws, duals = _sdp(R[i].numpy(), gam[i].numpy(), float(s2[i]))
        assert abs(val - float(res.total_power[i])) <= 1e-5 * val
        for W in Ws:  # the SDP solution is rank one
            ev = np.linalg.eigvalsh(W)
            assert ev[-2] <= 1e-5 * ev[-1]
        np.testing.assert_allclose(res.uplink_powers[i].numpy(), duals * float(s2[i]), rtol=1e-5)
        # strong duality: sum of uplink powers = downlink power
        assert abs(float(res.uplink_powers[i].sum()) - val) <= 1e-5 * val
    # the downlink SINR equalities hold with the PSD channels
    Wt = res.V.mT
    Q = torch.einsum("bjm,bkjmn,bjn->bkj", Wt.conj(), R, Wt).real
    sig = torch.diagonal(Q, dim1=-2, dim2=-1)
    torch.testing.assert_close(sig / (Q.sum(-1) - sig + s2[:, None]), gam, rtol=1e-9, atol=0)


def test_infeasible_samples_are_flagged_without_nan():
    B, K, M = 4, 3, 2
    H, a, b, gam, s2 = _instance(B, K, M, seed=4)
    gam = gam.clone()
    gam[1] = 50.0  # three users on two antennas at 12 dB (after * 0.3): infeasible
    a, b = a.clone(), b.clone()
    a[2, 0, 0] = b[2, 0, 0] = 0.0  # no wanted signal for user 0
    b[3] = 0.0
    H = H.clone()
    H[3, 1] = H[3, 0]  # parallel users 0 and 1 and 2, interference not attenuated
    H[3, 2] = H[3, 0]
    a[3] = 1.0
    gam[3] = 1.0 / 0.3  # parallel channels need sum_k gamma_k / (1 + gamma_k) < 1
    Hr, ar, br = (x.clone().requires_grad_(True) for x in (H, a, b))
    res = virtual_min_power(Hr, ar, br, gam * 0.3, s2)
    assert res.feasible.tolist() == [True, False, False, False]
    assert bool(torch.isinf(res.powers[1:]).all()) and bool((res.V[1:] == 0).all())
    assert bool(torch.isfinite(res.powers[0]).all()) and not bool(torch.isnan(res.V).any())
    _loss(res, _coef(B, K, M)).backward()
    for g in (Hr.grad, ar.grad, br.grad):
        assert bool(torch.isfinite(g).all()) and bool((g[1:] == 0).all())
        assert float(g[0].abs().max()) > 0
    # the feasible sample is solved as alone
    alone = virtual_min_power(H[:1], a[:1], b[:1], gam[:1] * 0.3, s2[:1])
    torch.testing.assert_close(res.powers[:1], alone.powers, rtol=1e-12, atol=0)


def test_permuting_users_permutes_the_solution():
    B, K, M = 3, 4, 5
    H, a, b, gam, s2 = _instance(B, K, M, seed=5)
    perm = torch.tensor([2, 0, 3, 1])
    res = virtual_min_power(H, a, b, gam, s2)
    rp = virtual_min_power(
        H[:, perm], a[:, perm][:, :, perm], b[:, perm][:, :, perm], gam[:, perm], s2
    )
    assert bool(res.feasible.all())
    torch.testing.assert_close(rp.powers, res.powers[:, perm], rtol=1e-9, atol=0)
    torch.testing.assert_close(rp.V, res.V[:, :, perm], rtol=1e-8, atol=1e-11)


def test_float32_runs_and_agrees_with_float64():
    B, K, M = 4, 3, 4
    H, a, b, gam, s2 = _instance(B, K, M, seed=6)
    ref = virtual_min_power(H, a, b, gam, s2)
    H32, a32, b32 = H.to(torch.complex64), a.float().requires_grad_(True), b.float()
    res = virtual_min_power(H32, a32, b32, gam.float(), s2.float())
    assert res.V.dtype == torch.complex64 and res.powers.dtype == torch.float32
    assert bool(res.feasible.all())
    torch.testing.assert_close(res.powers.double(), ref.powers, rtol=2e-3, atol=0)
    res.total_power.sum().backward()
    assert bool(torch.isfinite(a32.grad).all())


def test_scale_invariance():
    H, a, b, gam, s2 = _instance(2, 3, 4, seed=8)
    res = virtual_min_power(H, a, b, gam, s2)
    scaled = virtual_min_power(3.0 * H, a, b, gam, 9.0 * s2)
    torch.testing.assert_close(scaled.powers, res.powers, rtol=1e-10, atol=0)


# --------------------------------------------------------------------------- #
# Gradient
# --------------------------------------------------------------------------- #
def test_jacobian_is_the_derivative_of_the_residual():
    B, K, M = 2, 3, 4
    R = _random_psd(B, K, M, seed=9)
    _, _, _, gam, _ = _instance(B, K, M, seed=9)
    res = min_power_psd(R, gam * 0.5, 1.0)  # R normalised here: unit noise and rescale
    assert bool(res.feasible.all())
    # rebuild the normalised unknowns: unit noise, R itself (scale 1 problem)
    gen = torch.Generator().manual_seed(10)
    C = torch.randn(B, K, M, generator=gen, dtype=C128)
    W, lam = res.V, res.uplink_powers
    a = (C.conj() * W.mT).sum(-1)
    W = W * (a.conj() / a.abs())[:, None, :]
    rho = 1.0 / (C.conj() * W.mT).sum(-1).real
    x = torch.cat([_to_real(W), lam], dim=-1)

    def F(x):
        return _residual(_from_real(x, M, K), x[:, 2 * M * K :], R, gam * 0.5, C, rho)

    assert float(F(x).abs().max()) < 1e-12
    Jn = torch.autograd.functional.jacobian(F, x)
    Jn = torch.stack([Jn[i, :, i] for i in range(B)])
    torch.testing.assert_close(_jacobian(W, lam, R, gam * 0.5, C, rho), Jn, rtol=0, atol=1e-12)


def _fd_check(fun, args, seed, rel=1e-5):
    gen = torch.Generator().manual_seed(seed)
    leaves = [x.clone().requires_grad_(True) for x in args]
    fun(*leaves).backward()
    for i, x in enumerate(args):
        d = torch.randn(x.shape, dtype=x.dtype, generator=gen)
        if x.dim() == 5:  # Hermitian directions for R
            d = d + d.mH
        h = 1e-6
        plus = [y.clone() for y in args]
        minus = [y.clone() for y in args]
        plus[i], minus[i] = x + h * d, x - h * d
        fd = float(fun(*plus) - fun(*minus)) / (2 * h)
        an = float((leaves[i].grad.conj() * d).real.sum())
        assert abs(fd - an) <= rel * abs(an), (i, fd, an)


def test_gradient_matches_finite_differences_for_virtual_channels():
    B, K, M = 3, 3, 4
    H, a, b, gam, s2 = _instance(B, K, M, seed=11)
    coef = _coef(B, K, M)
    _fd_check(lambda *x: _loss(virtual_min_power(*x), coef), (H, a, b, gam, s2), seed=12)


def test_gradient_matches_finite_differences_for_general_psd():
    B, K, M = 2, 3, 3
    R = _random_psd(B, K, M, seed=13)
    _, _, _, gam, s2 = _instance(B, K, M, seed=13)
    coef = _coef(B, K, M)
    _fd_check(lambda *x: _loss(min_power_psd(*x), coef), (R, 0.5 * gam, s2), seed=14)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_power_gradient_matches_cvxpylayers():
    cp = pytest.importorskip("cvxpy")
    layers = pytest.importorskip("cvxpylayers.torch")
    K, M, s2 = 2, 3, 0.5
    H, a, b, gam, _ = _instance(1, K, M, seed=15)
    h = H[0].conj().resolve_conj().numpy()  # rows hh_k
    g = (np.abs(h) ** 2).sum(-1) / M
    A, Bc = cp.Parameter((K, K)), cp.Parameter((K, K))
    Zs = [cp.Variable((2 * M, 2 * M), PSD=True) for _ in range(K)]  # [[X, -Y], [Y, X]]
    cons = []
    for Z in Zs:
        cons += [Z[:M, :M] == Z[M:, M:], Z[:M, M:] == -Z[M:, :M]]

    def form(k, j):  # Re tr(R_kj W_j) = a_kj hh_k^H W_j hh_k + b_kj g_k tr(W_j)
        v = np.concatenate([h[k].real, h[k].imag])
        quad = cp.sum(cp.multiply(np.outer(v, v), Zs[j]))
        return cp.multiply(A[k, j], quad) + cp.multiply(Bc[k, j], g[k] * cp.trace(Zs[j]) / 2)

    for k in range(K):
        interf = sum(form(k, j) for j in range(K) if j != k)
        cons.append(form(k, k) / float(gam[0, k]) - interf >= s2)
    prob = cp.Problem(cp.Minimize(sum(cp.trace(Z) for Z in Zs) / 2), cons)
    assert prob.is_dpp()
    layer = layers.CvxpyLayer(prob, parameters=[A, Bc], variables=Zs)
    at, bt = a[0].clone().requires_grad_(True), b[0].clone().requires_grad_(True)
    Z = layer(at, bt, solver_args={"eps": 1e-10, "max_iters": 100000})
    sum(z.diagonal().sum() for z in Z).div(2).backward()
    ar, br = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    res = virtual_min_power(H, ar, br, gam, s2)
    res.total_power.sum().backward()
    torch.testing.assert_close(ar.grad[0], at.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(br.grad[0], bt.grad, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- #
# Input checks
# --------------------------------------------------------------------------- #
def test_input_checks_name_the_argument():
    H, a, b, gam, s2 = _instance(2, 2, 3, seed=16)
    R = virtual_channels(H, a, b)
    with pytest.raises(TypeError, match="R"):
        min_power_psd(R.numpy(), gam, s2)
    with pytest.raises(TypeError, match="R"):
        min_power_psd(R.real, gam, s2)
    with pytest.raises(ValueError, match="R"):
        min_power_psd(R[:, :, :1], gam, s2)
    bad = R.clone()
    bad[0, 0, 1, 0, 1] += 0.5
    with pytest.raises(ValueError, match="Hermitian"):
        min_power_psd(bad, gam, s2)
    ind = R.clone()
    ind[0, 1, 1] = -ind[0, 1, 1]
    with pytest.raises(ValueError, match="positive semidefinite"):
        min_power_psd(ind, gam, s2)
    with pytest.raises(ValueError, match="sinr_targets"):
        min_power_psd(R, 0.0, s2)
    with pytest.raises(ValueError, match="noise_var"):
        min_power_psd(R, gam, -1.0)
    with pytest.raises(ValueError, match="phase_ref"):
        min_power_psd(R, gam, s2, phase_ref=H[:, :1])
    with pytest.raises(TypeError, match="unknown solver settings"):
        min_power_psd(R, gam, s2, iterations=3)
    with pytest.raises(ValueError, match="a must be >= 0"):
        virtual_channels(H, -a, b)
    nan = b.clone()
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="b"):
        virtual_channels(H, a, nan)
    with pytest.raises(TypeError, match="a"):
        virtual_channels(H, a.float(), b)
    with pytest.raises(ValueError, match="b"):
        virtual_channels(H, a, b[:, :1])
    with pytest.raises(TypeError, match="H_hat"):
        virtual_channels(H.real, a, b)


# --------------------------------------------------------------------------- #
# Per-sample convergence (index compaction) against the whole-batch fixed point
# --------------------------------------------------------------------------- #
def test_compacted_fixed_point_equals_the_whole_batch_loop(monkeypatch):
    import lib.precoding.virtual as virtual

    B, K, M = 10, 3, 4
    H, a, b, gam, s2 = _instance(B, K, M, seed=17)
    gam = gam * torch.linspace(0.2, 4.0, B, dtype=torch.float64)[:, None]  # various iterations
    gam[3] = 60.0  # infeasible: three users on four antennas at 18 dB with PSD errors
    a, b = a.clone(), b.clone()
    a[5, 1, 1] = b[5, 1, 1] = 0.0  # unusable: no wanted signal for user 1
    coef = _coef(B, K, M)

    def run(fn):
        monkeypatch.setattr(virtual, "_psd_duality", fn)
        leaves = [x.clone().requires_grad_(True) for x in (H, a, b, gam, s2)]
        res = virtual_min_power(*leaves)
        _loss(res, coef).backward()
        return res, [x.grad for x in leaves]

    fast, g_fast = run(virtual._psd_duality)
    full, g_full = run(virtual._psd_duality_full)
    assert torch.equal(fast.feasible, full.feasible)
    assert not bool(fast.feasible[[3, 5]].any()) and int(fast.feasible.sum()) >= 6
    f = fast.feasible
    torch.testing.assert_close(fast.powers[f], full.powers[f], rtol=1e-9, atol=0)
    torch.testing.assert_close(fast.uplink_powers[f], full.uplink_powers[f], rtol=1e-9, atol=0)
    torch.testing.assert_close(fast.V, full.V, rtol=1e-8, atol=1e-12)
    for gf, gr in zip(g_fast, g_full):
        torch.testing.assert_close(gf, gr, rtol=1e-8, atol=1e-12)
    # the same directly on the normalised fixed point, with a cap that stops some samples
    R = virtual_channels(H, a, b)
    for iters in (3, 500):
        outs = [
            fn(R, gam, iters, 1e-12, 1e12)
            for fn in (virtual._psd_duality, virtual._psd_duality_full)
        ]
        (Vf, pf, ff), (Vr, pr, fr) = outs
        assert torch.equal(ff, fr)
        torch.testing.assert_close(pf, pr, rtol=1e-9, atol=0)
        torch.testing.assert_close(Vf, Vr, rtol=1e-8, atol=1e-12)
