"""Tests of lib.learn.learned_hybrid: the unrolled greedy hybrid beamformer U-G-HBF-GCN of Schynol
& Pesavento (Sec. 4.1-4.3, eqs. (19), (25)-(35)): reduction to the classical greedy
(a = 1, b = 0), gradients (implicit solver and straight-through softmin), infeasible samples,
the projection (33), permutation equivariance, several K, the FCN ablation and input checks."""

from __future__ import annotations

import pytest
import torch

from lib.chapters.hybrid import draw_instances
from lib.core import set_threads
from lib.learn import LearnedHybridResult, UnfoldedGreedyHBF, hybrid_features
from lib.phy.arrays import dft_codebook
from lib.precoding import greedy_codebook_selection

set_threads(1)

F64 = torch.float64
N_RF = 3


def _setup(K=3, B=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    H, _ = draw_instances(B, gen, users=K, n_h=4, n_v=2)
    cb = dft_codebook(4, 2, (2, 1))[0]  # 16 codewords of the 4x2 UPA
    eps = 0.02 + 0.1 * torch.rand(B, K, generator=gen, dtype=F64)
    gam = 1.0 + 2.0 * torch.rand(B, K, generator=gen, dtype=F64)
    return H, eps, cb, gam


def _net(degree=1, seed=0):
    torch.manual_seed(seed)
    return UnfoldedGreedyHBF(hidden=8, layers=2, degree=degree, pair_hidden=8, dtype=F64)


@pytest.fixture(scope="module")
def case():
    return _setup()


@pytest.mark.parametrize("weighting", ["rf", "baseband"])
def test_nominal_coefficients_are_the_classical_greedy(case, weighting):
    H, eps, cb, gam = case
    B, K, _ = H.shape
    a, b = torch.ones(B, K, K, dtype=F64), torch.zeros(B, K, K, dtype=F64)
    net = UnfoldedGreedyHBF(hidden=4, layers=1, weighting=weighting, dtype=F64)
    out = net(H, eps, cb, N_RF, gam, 0.5, n_steps=4, coefficients=(a, b))
    ref = greedy_codebook_selection(H, cb, N_RF, gam, 0.5, n_steps=4, weighting=weighting)
    assert isinstance(out, LearnedHybridResult)
    assert torch.equal(out.index, ref.index)
    assert bool(ref.feasible.all()) and torch.equal(out.feasible, ref.feasible)
    torch.testing.assert_close(out.virtual_powers, ref.powers, rtol=1e-6, atol=0)
    torch.testing.assert_close(out.weighted_power, ref.weighted_power, rtol=1e-6, atol=0)
    torch.testing.assert_close(out.history, ref.history[:, 1:], rtol=1e-6, atol=0)
    torch.testing.assert_close(out.F_RF, ref.F_RF)
    # the beams meet the targets on the estimates exactly (no projection without max_power)
    torch.testing.assert_close(out.sinr(H, 0.5), gam, rtol=1e-6, atol=0)


def test_gradients_reach_the_network(case):
    H, eps, cb, gam = case
    net = _net()
    out = net(H, eps, cb, N_RF, gam, 1.0, max_power=1e3)
    assert bool(out.feasible.all())
    out.weighted_power.sum().backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads.values())
    for name in (
        "gcn.layers.0.taps.0.weight",
        "gcn.layers.0.taps.1.weight",
        "node.weight",
        "pair_a.out.weight",
        "pair_b.out.weight",
    ):
        assert float(grads[name].norm()) > 0, name


def test_straight_through_path_and_direct_path(case):
    H, eps, cb, gam = case
    B, K, _ = H.shape
    gen = torch.Generator().manual_seed(3)
    a0 = 0.8 + 0.4 * torch.rand(B, K, K, generator=gen, dtype=F64)
    b0 = 0.05 * torch.rand(B, K, K, generator=gen, dtype=F64)
    net = UnfoldedGreedyHBF(hidden=4, layers=1, dtype=F64)
    # forward: exact codewords; backward: the softmin (35) carries a gradient to F_RF
    a = a0.clone().requires_grad_(True)
    out = net(H, eps, cb, N_RF, gam, 1.0, n_steps=N_RF, coefficients=(a, b0))
    torch.testing.assert_close(out.F_RF, cb[:, out.index].permute(1, 0, 2))
    (ga,) = torch.autograd.grad(out.F_RF.real.sum(), a)
    assert float(ga.abs().sum()) > 0
    # fixed configuration (no steps): the gradient is the implicit one, checked by differences
    b = b0.clone().requires_grad_(True)
    out = net(H, eps, cb, N_RF, gam, 1.0, n_steps=0, coefficients=(a0, b))
    (gb,) = torch.autograd.grad(out.weighted_power.sum(), b)
    d = torch.randn(B, K, K, generator=gen, dtype=F64).abs() * 0.01
    h = 1e-4

    def f(bb):
        res = net(H, eps, cb, N_RF, gam, 1.0, n_steps=0, coefficients=(a0, bb))
        return float(res.weighted_power.sum())

    fd = (f(b0 + h * d) - f(b0 - h * d)) / (2 * h)
    assert abs(fd - float((gb * d).sum())) <= 1e-4 * abs(fd)


def test_infeasible_instances_contribute_zero_gradient():
    H, eps, cb, gam = _setup(seed=1)
    H = H.clone()
    H[0, 1] = H[0, 0]  # identical users: infeasible for any coefficients in the bounds
    gam = gam.clone()
    gam[0] = 1e6
    B, K, _ = H.shape
    a = torch.ones(B, K, K, dtype=F64, requires_grad=True)
    b = torch.full((B, K, K), 0.05, dtype=F64, requires_grad=True)
    net = _net()
    out = net(H, eps, cb, N_RF, gam, 1.0, max_power=1e4, coefficients=(a, b))
    assert not bool(out.feasible[0]) and bool(out.feasible[1:].all())
    assert bool((out.powers[0] == 0).all()) and bool(torch.isinf(out.virtual_powers[0]).all())
    assert bool((out.V_bb[0] == 0).all()) and bool((out.sinr(H, 1.0)[0] == 0).all())
    ga, gb = torch.autograd.grad(out.weighted_power.sum(), (a, b))
    assert bool(torch.isfinite(ga).all()) and bool(torch.isfinite(gb).all())
    assert float(ga[0].abs().max()) == 0 and float(gb[0].abs().max()) == 0
    assert float(ga[1:].abs().sum()) > 0
    # through the network: finite, no NaN
    out = net(H, eps, cb, N_RF, gam, 1.0, max_power=1e4)
    assert not bool(out.feasible[0])
    out.weighted_power.sum().backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in net.parameters())


def test_projection_onto_the_power_constraint(case):
    H, eps, cb, gam = case
    net = _net().eval()
    free = net(H, eps, cb, N_RF, gam, 1.0)
    torch.testing.assert_close(free.powers, free.virtual_powers)
    p_max = 0.5 * float(free.weighted_power.detach().min())
    out = net(H, eps, cb, N_RF, gam, 1.0, max_power=p_max)
    assert torch.equal(out.index, free.index)
    K = H.shape[1]
    w = (out.F_RF @ out.V_bb).abs().square().sum(-2)  # RF weights of eq. (4)
    assert bool((w * out.powers <= p_max / K * (1 + 1e-12)).all())
    assert bool((out.weighted_power <= p_max * (1 + 1e-12)).all())
    assert bool((out.powers <= out.virtual_powers * (1 + 1e-12)).all())
    assert bool((out.sinr(H, 1.0) < gam).any())  # clipped users fall below their targets


def test_permutation_equivariance(case):
    H, eps, cb, gam = case
    net = _net()
    perm = torch.tensor([2, 0, 1])
    out = net(H, eps, cb, N_RF, gam, 1.0, max_power=1e3)
    outp = net(H[:, perm], eps[:, perm], cb, N_RF, gam[:, perm], 1.0, max_power=1e3)
    assert torch.equal(outp.index, out.index)
    torch.testing.assert_close(outp.a, out.a[:, perm][:, :, perm])
    torch.testing.assert_close(outp.b, out.b[:, perm][:, :, perm])
    torch.testing.assert_close(outp.powers, out.powers[:, perm], rtol=1e-6, atol=0)
    torch.testing.assert_close(outp.V_bb, out.V_bb[:, :, perm], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("degree", [0, 2])
def test_several_users_same_weights_and_fcn(degree):
    net = _net(degree=degree)
    for K in (2, 3):
        H, eps, cb, gam = _setup(K=K, seed=K)
        out = net(H, eps, cb, N_RF, gam, 1.0, max_power=1e3)
        assert out.powers.shape == (4, K) and out.a.shape == (4, K, K)
        assert bool(out.feasible.all()) and bool(torch.isfinite(out.weighted_power).all())
        assert bool((out.a > 0).all()) and bool((torch.diagonal(out.b, dim1=1, dim2=2) > 0).all())


def test_features():
    H, eps, _, gam = _setup()
    X, S = hybrid_features(H, eps, gam, 0.5)
    M = H.shape[-1]
    gain = H.abs().square().sum(-1)
    torch.testing.assert_close(X[..., 0], gam.log())
    torch.testing.assert_close(X[..., 1], (gain / 0.5).log())
    torch.testing.assert_close(X[..., 2], (M * eps / gain).log())
    assert S.shape == (4, 3, 3) and bool((torch.diagonal(S, dim1=1, dim2=2) == 0).all())
    X0, _ = hybrid_features(H, torch.zeros_like(eps), gam, 0.5)  # perfect CSI: finite
    assert bool(torch.isfinite(X0).all())


def test_input_checks(case):
    H, eps, cb, gam = case
    net = _net()
    with pytest.raises(ValueError, match="err_var"):
        net(H, eps[:, :2], cb, N_RF, gam, 1.0)
    with pytest.raises(ValueError, match="err_var"):
        net(H, -eps, cb, N_RF, gam, 1.0)
    with pytest.raises(ValueError, match="codeword"):
        net(H, eps, cb[:, :0], N_RF, gam, 1.0)
    with pytest.raises(ValueError, match="n_rf"):
        net(H, eps, cb, 9, gam, 1.0)
    with pytest.raises(ValueError, match="tau"):
        net(H, eps, cb, N_RF, gam, 1.0, tau=0.0)
    with pytest.raises(ValueError, match="max_power"):
        net(H, eps, cb, N_RF, gam, 1.0, max_power=-1.0)
    with pytest.raises(TypeError, match="H_hat"):
        net(H.to(torch.complex64), eps.float(), cb, N_RF, gam, 1.0)
    with pytest.raises(ValueError, match="sinr_targets"):
        net(H, eps, cb, N_RF, gam[:, :2], 1.0)
    bad = torch.ones(4, 3, 3, dtype=F64)
    with pytest.raises(ValueError, match="coefficients b"):
        net(H, eps, cb, N_RF, gam, 1.0, coefficients=(bad, -bad))
    with pytest.raises(TypeError, match="coefficients"):
        net(H, eps, cb, N_RF, gam, 1.0, coefficients=bad)
    with pytest.raises(TypeError, match="dtype"):
        UnfoldedGreedyHBF(dtype=torch.complex64)
