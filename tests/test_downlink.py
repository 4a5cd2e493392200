"""Tests of lib.precoding: rates, linear precoders, WMMSE, DPC sum capacity, power minimisation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib import precoding as dl
from lib.core import set_threads
from lib.phy import rayleigh

set_threads(1)


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _power(V):
    return (V.abs() ** 2).sum(dim=(-2, -1))


# --------------------------------------------------------------------------- #
# SINR and sum rate
# --------------------------------------------------------------------------- #
def test_sinr_matches_definition_loop():
    H = rayleigh(3, 3, 4, generator=_gen(0))
    V = rayleigh(3, 4, 3, generator=_gen(1))
    s2 = torch.tensor([0.1, 1.0, 2.0], dtype=torch.float64)
    got = dl.sinr(H, V, s2)
    for b in range(3):
        for k in range(3):
            h = H[b, k]  # row = h_k^H
            sig = abs(h @ V[b, :, k]) ** 2
            interf = sum(abs(h @ V[b, :, j]) ** 2 for j in range(3) if j != k)
            assert got[b, k].item() == pytest.approx((sig / (interf + s2[b])).item(), rel=1e-12)


def test_sum_rate_weights_shapes():
    H = rayleigh(4, 3, 3, generator=_gen(2))
    V = dl.mrt(H, 1.0)
    g = dl.sinr(H, V, 0.5)
    w = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    r1 = dl.sum_rate(H, V, 0.5, w)
    r2 = dl.sum_rate(H, V, 0.5, w.expand(4, 3).clone())
    torch.testing.assert_close(r1, (w * torch.log2(1 + g)).sum(-1))
    torch.testing.assert_close(r1, r2)
    assert dl.sum_rate(H, V, 0.5).shape == (4,)


# --------------------------------------------------------------------------- #
# Power constraint and linear precoders
# --------------------------------------------------------------------------- #
@settings(max_examples=15, deadline=None)
@given(
    K=st.integers(1, 4),
    extra=st.integers(0, 3),
    snr_db=st.floats(-10, 30),
    seed=st.integers(0, 10_000),
)
def test_every_precoder_meets_power_constraint(K, extra, snr_db, seed):
    M = K + extra
    H = rayleigh(5, K, M, generator=_gen(seed))
    P = torch.rand(5, generator=_gen(seed + 1), dtype=torch.float64) * 10 + 0.1
    s2 = P / 10 ** (snr_db / 10)
    for V in (
        dl.mrt(H, P),
        dl.zf(H, P),
        dl.rzf(H, P, s2),
        dl.matched_filter_init(H, P),
        dl.wmmse(H, P, s2, 3),
    ):
        assert V.shape == (5, M, K)
        assert torch.all(_power(V) <= P * (1 + 1e-9))
    # the linear precoders and the WMMSE (active constraint) use the full budget
    for V in (dl.mrt(H, P), dl.zf(H, P), dl.rzf(H, P, s2)):
        torch.testing.assert_close(_power(V), P, rtol=1e-9, atol=0)


def test_wmmse_uses_full_power_when_users_equal_antennas():
    H = rayleigh(50, 4, 4, generator=_gen(3))
    V = dl.wmmse(H, 2.0, 0.2, 10)
    torch.testing.assert_close(
        _power(V), torch.full((50,), 2.0, dtype=torch.float64), rtol=1e-9, atol=0
    )


def test_zf_nulls_interference():
    H = rayleigh(20, 3, 5, generator=_gen(4))
    G = H @ dl.zf(H, 1.0)
    off = G - torch.diag_embed(torch.diagonal(G, dim1=-2, dim2=-1))
    assert off.abs().max() < 1e-10 * G.abs().max()
    assert torch.diagonal(G, dim1=-2, dim2=-1).abs().min() > 1e-3


def test_rzf_limits():
    H = rayleigh(10, 3, 4, generator=_gen(5))
    torch.testing.assert_close(dl.rzf(H, 1.0, 1e-12), dl.zf(H, 1.0), rtol=1e-6, atol=1e-8)
    # huge noise: RZF direction -> MRT
    torch.testing.assert_close(dl.rzf(H, 1.0, 1e9), dl.mrt(H, 1.0), rtol=1e-6, atol=1e-8)


def test_zf_rejects_more_users_than_antennas():
    H = rayleigh(2, 5, 4, generator=_gen(6))
    with pytest.raises(ValueError, match="users <= antennas"):
        dl.zf(H, 1.0)


# --------------------------------------------------------------------------- #
# WMMSE
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("K,M,snr_db", [(4, 4, 10.0), (4, 4, 20.0), (6, 4, 5.0), (2, 5, 0.0)])
def test_wmmse_wsr_monotone(K, M, snr_db):
    H = rayleigh(100, K, M, generator=_gen(7))
    alpha = torch.rand(K, generator=_gen(8), dtype=torch.float64) + 0.5
    s2 = 10 ** (-snr_db / 10)
    V, Vs = dl.wmmse(H, 1.0, s2, 15, alpha, history=True)
    assert Vs.shape == (16, 100, M, K)
    torch.testing.assert_close(Vs[-1], V)
    rates = torch.stack([dl.sum_rate(H, Vt, s2, alpha) for Vt in Vs])
    assert torch.all(rates[1:] >= rates[:-1] - 1e-9)
    assert torch.all(rates[-1] > rates[0])


def test_wmmse_tol_stops_samples_and_stays_monotone():
    H = rayleigh(200, 4, 4, generator=_gen(9))
    s2 = 0.1
    V_fixed = dl.wmmse(H, 1.0, s2, 200)
    V_tol = dl.wmmse(H, 1.0, s2, 200, tol=1e-6)
    r_fixed, r_tol = dl.sum_rate(H, V_fixed, s2), dl.sum_rate(H, V_tol, s2)
    assert (r_fixed - r_tol).abs().max() < 1e-3
    _, Vs = dl.wmmse(H, 1.0, s2, 20, tol=1e-2, history=True)
    rates = torch.stack([dl.sum_rate(H, Vt, s2) for Vt in Vs])
    assert torch.all(rates[1:] >= rates[:-1] - 1e-9)
    moved = torch.stack([(Vs[t] != Vs[t - 1]).flatten(1).any(-1) for t in range(1, 21)])
    assert torch.all(moved[1:] <= moved[:-1])  # a stopped sample never moves again
    assert moved[-1].sum() < moved[0].sum() == 200


def test_wmmse_zero_iterations_returns_init_and_V0_is_used():
    H = rayleigh(5, 3, 3, generator=_gen(10))
    torch.testing.assert_close(dl.wmmse(H, 1.0, 0.1, 0), dl.matched_filter_init(H, 1.0))
    V0 = dl.zf(H, 1.0)
    V1 = dl.wmmse(H, 1.0, 0.1, 1, V0=V0)
    u = dl.wmmse_receivers(H, V0, 0.1)
    w = dl.wmmse_weights(H, V0, u, 0.1)
    torch.testing.assert_close(V1, dl.wmmse_precoder(H, u, w, 1.0))


def test_wmmse_blocks_mmse_properties():
    H = rayleigh(30, 4, 4, generator=_gen(11))
    V = dl.rzf(H, 1.0, 0.1)
    u = dl.wmmse_receivers(H, V, 0.1)
    w = dl.wmmse_weights(H, V, u, 0.1)
    # at the MMSE receiver, w = 1/e = 1 + SINR (rate-MSE relation)
    torch.testing.assert_close(w, 1 + dl.sinr(H, V, 0.1), rtol=1e-10, atol=0)
    # any other receiver has a larger MSE, i.e. a smaller weight 1/e
    u2 = u + 0.05 * torch.complex(
        torch.randn(30, 4, generator=_gen(99), dtype=torch.float64),
        torch.randn(30, 4, generator=_gen(98), dtype=torch.float64),
    )
    assert torch.all(dl.wmmse_weights(H, V, u2, 0.1) <= w + 1e-12)


def test_wmmse_precoder_solves_lagrangian_stationarity():
    """V satisfies (A + mu I) v_k = alpha_k w_k u_k h_k with mu >= 0 and the power budget."""
    H = rayleigh(20, 3, 4, generator=_gen(12))
    alpha = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    V0 = dl.mrt(H, 1.0)
    u = dl.wmmse_receivers(H, V0, 0.3)
    w = dl.wmmse_weights(H, V0, u, 0.3)
    V = dl.wmmse_precoder(H, u, w, 1.0, alpha)
    Hh = H.mH
    c = (alpha * w * u.abs() ** 2).to(H.dtype)
    A = (Hh * c[:, None, :]) @ H
    R = Hh * ((alpha * w).to(H.dtype) * u)[:, None, :]
    resid = A @ V - R  # = -mu V
    mu = -(resid * V.conj()).sum(dim=(-2, -1)).real / _power(V)
    assert torch.all(mu >= -1e-9)
    torch.testing.assert_close(resid, -mu.to(H.dtype)[:, None, None] * V, rtol=1e-7, atol=1e-9)


def test_bisect_mu_root():
    g = _gen(13)
    lam = torch.rand(50, 4, generator=g, dtype=torch.float64) + 0.01
    phi = torch.rand(50, 4, generator=g, dtype=torch.float64)
    P = 0.5
    mu = dl.bisect_mu(lam, phi, P)
    p0 = (phi / lam**2).sum(-1)
    pm = (phi / (lam + mu[:, None]) ** 2).sum(-1)
    active = p0 > P
    torch.testing.assert_close(pm[active], torch.full_like(pm[active], P), rtol=1e-9, atol=0)
    assert torch.all(mu[~active] == 0)


# --------------------------------------------------------------------------- #
# DPC sum capacity
# --------------------------------------------------------------------------- #
def test_dpc_matches_cvxpy_and_bounds_wmmse():
    H = rayleigh(4, 3, 3, generator=_gen(14))
    s2 = torch.tensor([1.0, 0.1, 0.01, 0.3], dtype=torch.float64)
    c, q, gap = dl.dpc_sum_capacity(H, 1.0, s2, return_powers=True)
    c_ref = dl.dpc_sum_capacity_cvxpy(H, 1.0, s2)
    torch.testing.assert_close(c, c_ref, rtol=0, atol=1e-4)
    assert torch.all(gap <= 1e-6)
    torch.testing.assert_close(q.sum(-1), torch.ones(4, dtype=torch.float64), rtol=1e-9, atol=0)
    assert torch.all(c >= dl.sum_rate(H, dl.wmmse(H, 1.0, s2, 50), s2) - 1e-6)


def test_dpc_single_user_is_mrt_capacity():
    H = rayleigh(10, 1, 4, generator=_gen(15))
    c = dl.dpc_sum_capacity(H, 2.0, 0.5)
    ref = torch.log2(1 + 2.0 * (H.abs() ** 2).sum((-2, -1)) / 0.5)
    torch.testing.assert_close(c, ref, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- #
# Power minimisation: SOCP vs uplink-downlink duality
# --------------------------------------------------------------------------- #
def test_socp_and_duality_agree_on_feasible_instances():
    g = _gen(16)
    H = rayleigh(6, 4, 4, generator=g)
    gam = 10 ** (torch.rand(6, 4, generator=g, dtype=torch.float64) * 1.5 - 0.5)  # -5..10 dB
    r_dual = dl.min_power_duality(H, gam, 0.1)
    r_socp = dl.min_power_socp(H, gam, 0.1)
    assert r_dual.feasible.all() and r_socp.feasible.all()
    diff_db = 10 * torch.log10(r_dual.total_power / r_socp.total_power)
    assert diff_db.abs().max() < 1e-4
    # the duality solution meets every target with equality
    torch.testing.assert_close(dl.sinr(H, r_dual.V, 0.1), gam, rtol=1e-8, atol=0)
    torch.testing.assert_close(r_dual.powers, (r_dual.V.abs() ** 2).sum(-2))


def test_socp_and_duality_flag_infeasible_instance():
    # two users with the same channel cannot both reach SINR 2: gamma_1 gamma_2 < 1 is needed
    h = rayleigh(1, 1, 3, generator=_gen(17))
    h2 = rayleigh(1, 1, 3, generator=_gen(18))
    H = torch.cat([torch.cat([h, h], 1), torch.cat([h2, h2 * 1j], 1)], 0)  # (2, 2, 3)
    good = rayleigh(1, 2, 3, generator=_gen(19))
    H = torch.cat([H, good], 0)
    r_dual = dl.min_power_duality(H, 2.0, 1.0)
    r_socp = dl.min_power_socp(H, 2.0, 1.0)
    assert r_dual.feasible.tolist() == [False, False, True]
    assert r_socp.feasible.tolist() == [False, False, True]
    for r in (r_dual, r_socp):
        assert not torch.isnan(r.V).any() and not torch.isnan(r.powers).any()
        assert torch.isinf(r.total_power[:2]).all() and torch.all(r.V[:2] == 0)


def test_duality_batched_any_shape_no_nan():
    g = _gen(20)
    H = rayleigh(300, 6, 3, generator=g)  # more users than antennas
    gam_db = torch.rand(300, 1, generator=g, dtype=torch.float64) * 6 - 4  # -4..2 dB per sample
    gam = (10 ** (gam_db / 10)).expand(300, 6)
    r = dl.min_power_duality(H, gam, 1.0)
    assert r.V.shape == (300, 3, 6) and r.powers.shape == (300, 6)
    assert 0 < r.feasible.sum() < 300  # a mixed batch
    assert not torch.isnan(r.V).any() and not torch.isnan(r.powers).any()
    # necessary condition for feasibility: sum_k gamma_k / (1 + gamma_k) <= n
    assert torch.all((gam / (1 + gam)).sum(-1)[r.feasible] <= 3)
    s = dl.sinr(H[r.feasible], r.V[r.feasible], 1.0)
    torch.testing.assert_close(s, gam[r.feasible], rtol=1e-7, atol=0)
    # spot check against the SOCP: two flagged infeasible, two flagged feasible
    pick = torch.cat([torch.nonzero(~r.feasible)[:2, 0], torch.nonzero(r.feasible)[:2, 0]])
    assert dl.min_power_socp(H[pick], gam[pick], 1.0).feasible.tolist() == [
        False,
        False,
        True,
        True,
    ]


# --------------------------------------------------------------------------- #
# Input validation
# --------------------------------------------------------------------------- #
def test_rejects_bad_inputs():
    H = rayleigh(2, 3, 4, generator=_gen(21))
    with pytest.raises(TypeError, match="H must be a complex tensor"):
        dl.mrt(H.real, 1.0)
    with pytest.raises(ValueError, match=r"H must have shape \(batch, users, antennas\)"):
        dl.zf(H[0], 1.0)
    with pytest.raises(ValueError, match="power must be > 0"):
        dl.rzf(H, -1.0, 0.1)
    with pytest.raises(ValueError, match="noise_var must be > 0"):
        dl.wmmse(H, 1.0, 0.0, 3)
    with pytest.raises(ValueError, match=r"power must be a scalar or have shape \(2,\)"):
        dl.mrt(H, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"V must have shape \(2, 4, 3\)"):
        dl.sinr(H, torch.zeros(2, 3, 4, dtype=torch.complex128), 1.0)
    with pytest.raises(ValueError, match=r"weights must have shape"):
        dl.sum_rate(H, dl.mrt(H, 1.0), 1.0, torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="sinr_targets must be > 0"):
        dl.min_power_duality(H, -1.0, 1.0)
    with pytest.raises(TypeError, match="iters must be an int"):
        dl.wmmse(H, 1.0, 1.0, 2.5)
    with pytest.raises(ValueError, match="V0 must satisfy the power constraint"):
        dl.wmmse(H, 1.0, 1.0, 2, V0=2 * dl.mrt(H, 1.0))


def test_blocks_are_differentiable():
    """The unfolded-WMMSE chapter backpropagates through the u and w updates."""
    H = rayleigh(4, 3, 3, generator=_gen(22))
    V = dl.mrt(H, 1.0).clone().requires_grad_(True)
    u = dl.wmmse_receivers(H, V, 0.1)
    w = dl.wmmse_weights(H, V, u, 0.1)
    Vn = dl.wmmse_precoder(H, u, w, 1.0)
    loss = -dl.sum_rate(H, Vn, 0.1).sum() - torch.log(w).sum()
    loss.backward()
    assert torch.isfinite(V.grad).all() and V.grad.abs().sum() > 0


def test_complex64_runs_with_single_precision_power():
    H = rayleigh(50, 4, 4, generator=_gen(23), dtype=torch.complex64)
    V = dl.wmmse(H, 1.0, 0.1, 5)
    assert V.dtype == torch.complex64
    assert torch.all((_power(V) - 1).abs() < 1e-5)
    assert math.isfinite(dl.sum_rate(H, V, 0.1).mean().item())


def test_socp_accepts_tensors_with_the_conjugate_bit():
    H = rayleigh(2, 2, 3, generator=_gen(30))
    lazy = H.conj()  # a view with the conjugate bit set (as .mH returns)
    assert lazy.is_conj()
    res_lazy = dl.min_power_socp(lazy, 0.5, 1.0)
    res_plain = dl.min_power_socp(lazy.resolve_conj(), 0.5, 1.0)
    assert torch.allclose(res_lazy.powers, res_plain.powers)
