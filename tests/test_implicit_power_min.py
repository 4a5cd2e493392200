"""Tests of lib.precoding.implicit: the implicit gradient of the minimum-power problem
(Schynol & Pesavento, Theorem 4.2): the reduced system and its Jacobian, finite differences,
PyTorch's complex-gradient convention, infeasible samples, batching, dtypes and devices, input
checks, the forward against the SOCP and the gradient against cvxpylayers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lib.core import set_threads
from lib.phy import rayleigh
from lib.precoding import (
    digital_min_power,
    hybrid_min_power_implicit,
    min_power_duality,
    min_power_implicit,
    min_power_socp,
    sinr,
)
from lib.precoding.implicit import _from_real, _jacobian, _residual, _to_real

set_threads(1)

C64, C128 = torch.complex64, torch.complex128


def _instance(B, K, M, seed):
    gen = torch.Generator().manual_seed(seed)
    H = rayleigh(B, K, M, generator=gen)
    gam = 0.5 + 2.5 * torch.rand(B, K, generator=gen, dtype=torch.float64)
    s2 = 0.2 + torch.rand(B, generator=gen, dtype=torch.float64)
    return H, gam, s2


def _loss(res, coef):
    """A real loss touching every output: total power, p, q and the (phase-fixed) beams."""
    c_p, c_q, c_v = coef
    return (
        res.total_power.sum()
        + (c_p * res.powers).sum()
        + (c_q * res.uplink_powers).sum()
        + (c_v.conj() * res.V).real.sum()
        + (c_v * res.beams).imag.sum()
    )


def _coef(B, K, M, seed):
    gen = torch.Generator().manual_seed(seed + 100)
    c_p = torch.rand(B, K, generator=gen, dtype=torch.float64)
    c_q = torch.rand(B, K, generator=gen, dtype=torch.float64)
    c_v = torch.randn(B, M, K, generator=gen, dtype=C128)
    return c_p, c_q, c_v


def _grads(H, gam, s2, coef):
    H = H.clone().requires_grad_(True)
    gam = gam.clone().requires_grad_(True)
    s2 = s2.clone().requires_grad_(True)
    res = min_power_implicit(H, gam, s2)
    _loss(res, coef).backward()
    return res, H.grad, gam.grad, s2.grad


# --------------------------------------------------------------------------- #
# The reduced system
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("K, M", [(2, 4), (3, 5), (4, 3)])
def test_solution_solves_the_system_and_the_jacobian_is_its_derivative(K, M):
    H, gam, s2 = _instance(3, K, M, seed=K + M)
    gam = gam * 0.3 if K > M else gam  # K > M is feasible for low targets only
    res = min_power_implicit(H, gam, 1.0)
    assert bool(res.feasible.all())
    W, lam = res.V, res.uplink_powers  # unit noise: the normalised unknowns up to the scale
    a = torch.diagonal(H @ W, dim1=-2, dim2=-1)
    assert float(a.imag.abs().max()) < 1e-14 and bool((a.real > 0).all())  # h_k^H w_k > 0
    # strong duality: sum of uplink powers equals the downlink power
    torch.testing.assert_close(lam.sum(-1), res.total_power, rtol=1e-10, atol=0)
    rho = 1.0 / a.real
    F = _residual(W, lam, H, gam, rho)
    assert float(F.abs().max()) < 1e-9
    J = _jacobian(W, lam, H, gam, rho)
    x = torch.cat([_to_real(W), lam], dim=-1)
    n = 2 * M * K + K
    for b in range(3):

        def f(xx, b=b):
            Wb = _from_real(xx[None], M, K)
            return _residual(
                Wb, xx[None, 2 * M * K :], H[b : b + 1], gam[b : b + 1], rho[b : b + 1]
            )[0]

        Jb = torch.func.jacrev(f)(x[b])
        assert Jb.shape == (n, n)
        torch.testing.assert_close(J[b], Jb, rtol=1e-12, atol=1e-12)
    # Theorem 4.2: nonsingular (and, here, well conditioned)
    assert float(torch.linalg.cond(J).max()) < 1e6
    # without the phase term the real system is singular (phase ambiguity, redundant row)
    J0 = _jacobian(W, lam, H, gam, torch.zeros_like(rho))
    assert int(torch.linalg.matrix_rank(J0[0])) == n - K


def test_phase_term_is_equivalent_to_the_papers_row_and_column_removal():
    # Theorem 4.2 fixes Im(w_k[0]) = 0 and drops Im(e_k[0]); here the phase is fixed by
    # Im(h_k^H w_k) = 0 instead. The phase-invariant part of the derivative (d lambda) agrees.
    K, M = 3, 4
    H, gam, _ = _instance(1, K, M, seed=8)
    res = min_power_implicit(H, gam, 1.0)
    W, lam = res.V, res.uplink_powers
    rho = 1.0 / torch.diagonal(H @ W, dim1=-2, dim2=-1).real
    dH = torch.randn(1, K, M, generator=torch.Generator().manual_seed(9), dtype=C128)

    def dF(r):  # directional derivative of the residual w.r.t. H at fixed x
        def f(hr, hi):
            return _residual(W, lam, torch.complex(hr, hi), gam, r)[0]

        Jr, Ji = torch.func.jacrev(f, argnums=(0, 1))(H.real, H.imag)
        return (Jr * dH.real).sum((-3, -2, -1)) + (Ji * dH.imag).sum((-3, -2, -1))

    J = _jacobian(W, lam, H, gam, rho)[0]
    dlam_ours = torch.linalg.solve(J, -dF(rho))[-K:]
    n = 2 * M * K + K
    drop = [k * 2 * M + M for k in range(K)]  # Im of entry 0 of user k (unknown and equation)
    keep = [i for i in range(n) if i not in drop]
    J0 = _jacobian(W, lam, H, gam, torch.zeros_like(rho))[0][keep][:, keep]
    assert int(torch.linalg.matrix_rank(J0)) == n - K  # the paper's reduced system: full rank
    dlam_paper = torch.linalg.solve(J0, -dF(torch.zeros_like(rho))[keep])[-K:]
    torch.testing.assert_close(dlam_ours, dlam_paper, rtol=1e-9, atol=1e-12)
    t = 1e-6
    fd = (
        min_power_implicit(H + t * dH, gam, 1.0).uplink_powers
        - min_power_implicit(H - t * dH, gam, 1.0).uplink_powers
    )[0] / (2 * t)
    torch.testing.assert_close(dlam_ours, fd, rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------- #
# Forward
# --------------------------------------------------------------------------- #
def test_forward_matches_socp_and_duality():
    H, gam, s2 = _instance(4, 3, 5, seed=1)
    res = min_power_implicit(H, gam, s2)
    ref = min_power_socp(H, gam, s2)
    dual = min_power_duality(H, gam, s2)
    assert bool(ref.feasible.all()) and torch.equal(res.feasible, ref.feasible)
    torch.testing.assert_close(res.total_power, ref.total_power, rtol=1e-6, atol=0)
    torch.testing.assert_close(res.powers, ref.powers, rtol=1e-4, atol=0)  # SOCP accuracy
    # both fix the phase by h_k^H v_k > 0, so the beamformers agree, not just the powers
    torch.testing.assert_close(res.V, ref.V, rtol=0, atol=1e-4)
    torch.testing.assert_close(res.powers, dual.powers, rtol=1e-12, atol=0)
    torch.testing.assert_close(res.uplink_powers.sum(-1), res.total_power, rtol=1e-10, atol=0)
    s = sinr(H, res.V, s2)
    torch.testing.assert_close(s, gam, rtol=1e-9, atol=0)
    torch.testing.assert_close(
        torch.linalg.vector_norm(res.beams, dim=-2), torch.ones(4, 3).double()
    )


# --------------------------------------------------------------------------- #
# Gradients
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("K, M", [(2, 4), (3, 6), (4, 8), (3, 2)])
def test_gradients_match_finite_differences(K, M):
    B = 2
    H, gam, s2 = _instance(B, K, M, seed=10 * K + M)
    if K > M:
        gam = gam * 0.2
    coef = _coef(B, K, M, seed=K)
    res, gH, gg, gs = _grads(H, gam, s2, coef)
    assert bool(res.feasible.all())
    gen = torch.Generator().manual_seed(7)
    t = 1e-6
    for _ in range(3):
        dH = torch.randn(B, K, M, generator=gen, dtype=C128)
        dg = torch.randn(B, K, generator=gen, dtype=torch.float64) * 0.1
        ds = torch.randn(B, generator=gen, dtype=torch.float64) * 0.1

        def L(s, dH=dH, dg=dg, ds=ds):
            r = min_power_implicit(H + s * dH, gam + s * dg, s2 + s * ds)
            return float(_loss(r, coef))

        fd = (L(t) - L(-t)) / (2 * t)
        # PyTorch convention: grad = dL/dRe + j dL/dIm, so dL = Re(sum conj(grad) dH)
        an = float((gH.conj() * dH).real.sum() + (gg * dg).sum() + (gs * ds).sum())
        assert abs(fd - an) <= 1e-6 * abs(an), (fd, an)  # measured: ~1e-9
    # the power is proportional to the noise: dP/dsigma^2 = P / sigma^2 (exact by the scaling)
    H2 = H.clone()
    s2r = s2.clone().requires_grad_(True)
    r = min_power_implicit(H2, gam, s2r)
    r.total_power.sum().backward()
    torch.testing.assert_close(s2r.grad, r.total_power.detach() / s2, rtol=1e-10, atol=0)


def test_gradcheck_confirms_the_complex_convention():
    H, gam, s2 = _instance(1, 2, 3, seed=3)
    H = H.clone().requires_grad_(True)
    gam = gam.clone().requires_grad_(True)

    def f(H, gam):
        r = min_power_implicit(H, gam, 0.7)
        return r.total_power, r.uplink_powers, r.V

    assert torch.autograd.gradcheck(f, (H, gam), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_infeasible_samples_are_reported_and_get_zero_gradient():
    H, gam, _ = _instance(3, 2, 4, seed=5)
    H[1, 1] = H[1, 0]  # identical channels: SINR >= 1 for both users is impossible
    gam = gam.clamp_min(1.5)
    Hg = H.clone().requires_grad_(True)
    gg = gam.clone().requires_grad_(True)
    sg = torch.full((3,), 0.5, dtype=torch.float64, requires_grad=True)
    res = min_power_implicit(Hg, gg, sg)
    assert res.feasible.tolist() == [True, False, True]
    assert bool(torch.isinf(res.powers[1]).all()) and bool(torch.isinf(res.uplink_powers[1]).all())
    assert bool((res.V[1] == 0).all()) and bool((res.beams[1] == 0).all())
    assert not bool(torch.isnan(res.powers).any() | torch.isnan(res.V).any())
    # the raw total power is +inf for the infeasible sample; its gradient is still finite, zero
    (res.total_power.sum() + res.V.real.sum() + res.beams.imag.sum()).backward()
    for g in (Hg.grad, gg.grad, sg.grad):
        assert bool(torch.isfinite(torch.view_as_real(g) if g.is_complex() else g).all())
        assert bool((g[1] == 0).all())
        assert bool((g[0] != 0).any())
    # the feasible samples get the gradient they get alone
    H0 = H[:1].clone().requires_grad_(True)
    r0 = min_power_implicit(H0, gam[:1], 0.5)
    (r0.total_power.sum() + r0.V.real.sum() + r0.beams.imag.sum()).backward()
    torch.testing.assert_close(Hg.grad[:1], H0.grad, rtol=1e-10, atol=1e-12)


def test_batch_gradient_equals_per_instance_gradients():
    B, K, M = 4, 3, 5
    H, gam, s2 = _instance(B, K, M, seed=11)
    coef = _coef(B, K, M, seed=2)
    _, gH, gg, gs = _grads(H, gam, s2, coef)
    for b in range(B):
        sl = slice(b, b + 1)
        _, gHb, ggb, gsb = _grads(H[sl], gam[sl], s2[sl], tuple(c[sl] for c in coef))
        torch.testing.assert_close(gH[sl], gHb, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(gg[sl], ggb, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(gs[sl], gsb, rtol=1e-9, atol=1e-12)


def _devices():
    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    return out


@pytest.mark.parametrize("device", _devices())
def test_dtypes_and_devices(device):
    H, gam, s2 = _instance(3, 3, 6, seed=4)
    ref_g = None
    for dt in (C128, C64):
        Hd = H.detach().to(device=device, dtype=dt).clone().requires_grad_(True)
        gd = gam.to(device=device, dtype=torch.float32 if dt == C64 else torch.float64)
        res = min_power_implicit(Hd, gd, 0.5)
        rdt = gd.dtype
        assert res.V.dtype == dt and res.V.device == Hd.device
        assert res.powers.dtype == rdt and res.uplink_powers.dtype == rdt
        assert res.feasible.device == Hd.device
        res.total_power.sum().backward()
        assert Hd.grad.dtype == dt and Hd.grad.device == Hd.device
        g = Hd.grad.to("cpu", C128)
        if ref_g is None:
            ref_g = g
        else:  # single precision: the solver's tolerance is 4.9e-4 relative
            assert float((g - ref_g).abs().max() / ref_g.abs().max()) < 1e-2


def test_input_checks():
    H, gam, s2 = _instance(2, 3, 4, seed=0)
    with pytest.raises(TypeError, match="H"):
        min_power_implicit(H.real, gam, s2)
    with pytest.raises(ValueError, match=r"H must have shape \(batch, users, antennas\)"):
        min_power_implicit(H[0], gam, s2)
    with pytest.raises(ValueError, match="sinr_targets"):
        min_power_implicit(H, gam[:, :2], s2)
    with pytest.raises(ValueError, match="sinr_targets"):
        min_power_implicit(H, -1.0, s2)
    with pytest.raises(ValueError, match="noise_var"):
        min_power_implicit(H, gam, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="noise_var"):
        min_power_implicit(H, gam, 0.0)
    with pytest.raises(ValueError, match="iters"):
        min_power_implicit(H, gam, s2, iters=0)
    with pytest.raises(ValueError, match="tol"):
        min_power_implicit(H, gam, s2, tol=2.0)
    F = torch.randn(2, 4, 2, dtype=C128)
    with pytest.raises(ValueError, match="F_RF"):
        hybrid_min_power_implicit(H, F[:, :3], gam, s2)
    with pytest.raises(ValueError, match="weighting"):
        hybrid_min_power_implicit(H, F, gam, s2, weighting="power")
    with pytest.raises(TypeError, match="unknown solver settings"):
        hybrid_min_power_implicit(H, F, gam, s2, iterations=3)


# --------------------------------------------------------------------------- #
# Hybrid: the digital sub-problem (12) with both weightings
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("weighting", ["rf", "baseband"])
def test_hybrid_matches_digital_min_power_and_finite_differences(weighting):
    B, K, M, R = 2, 3, 8, 4
    H, gam, s2 = _instance(B, K, M, seed=21)
    gen = torch.Generator().manual_seed(22)
    F = torch.exp(2j * math.pi * torch.rand(B, M, R, generator=gen, dtype=torch.float64))
    F = F / math.sqrt(M)
    ref = digital_min_power(H, F, gam, s2, weighting=weighting)
    Hg = H.clone().requires_grad_(True)
    Fg = F.clone().requires_grad_(True)
    res = hybrid_min_power_implicit(Hg, Fg, gam, s2, weighting=weighting)
    assert bool(ref.feasible.all()) and torch.equal(res.feasible, ref.feasible)
    torch.testing.assert_close(res.weighted_power, ref.weighted_power, rtol=1e-10, atol=0)
    torch.testing.assert_close(res.powers, ref.powers, rtol=1e-9, atol=0)
    res.weighted_power.sum().backward()
    dH = torch.randn(B, K, M, generator=gen, dtype=C128)
    dF = torch.randn(B, M, R, generator=gen, dtype=C128) * 0.1
    t = 1e-6

    def P(s):
        r = hybrid_min_power_implicit(H + s * dH, F + s * dF, gam, s2, weighting=weighting)
        return float(r.weighted_power.sum())

    fd = (P(t) - P(-t)) / (2 * t)
    an = float((Hg.grad.conj() * dH).real.sum() + (Fg.grad.conj() * dF).real.sum())
    assert abs(fd - an) <= 1e-4 * abs(an), (fd, an)


# --------------------------------------------------------------------------- #
# cvxpylayers cross-check
# --------------------------------------------------------------------------- #
def _cvxpy_layer(K, M, gam, s2):
    """DPP SOCP of the min-power problem in real variables, parametrised by Re/Im of ``H``."""
    cp = pytest.importorskip("cvxpy")
    from cvxpylayers.torch import CvxpyLayer

    Hr, Hi = cp.Parameter((K, M)), cp.Parameter((K, M))
    Vr, Vi = cp.Variable((M, K)), cp.Variable((M, K))
    Gr, Gi = Hr @ Vr - Hi @ Vi, Hr @ Vi + Hi @ Vr  # h_k^H v_j
    cons = []
    for k in range(K):
        cons.append(Gi[k, k] == 0)
        rhs = cp.hstack([Gr[k, :], Gi[k, :], np.array([math.sqrt(s2)])])
        cons.append(cp.SOC(math.sqrt(1.0 + 1.0 / gam[k]) * Gr[k, k], rhs))
    prob = cp.Problem(cp.Minimize(cp.sum_squares(Vr) + cp.sum_squares(Vi)), cons)
    assert prob.is_dpp()
    return CvxpyLayer(prob, parameters=[Hr, Hi], variables=[Vr, Vi])


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("K, M", [(2, 4), (3, 5), (4, 8)])
def test_gradient_matches_cvxpylayers(K, M):
    pytest.importorskip(
        "cvxpylayers", reason="cvxpylayers is not installed (pip install -r requirements.txt)"
    )
    B, s2 = 3, 0.5
    H, _, _ = _instance(B, K, M, seed=30 + K)
    gam = [0.8 + 0.5 * k for k in range(K)]
    layer = _cvxpy_layer(K, M, gam, s2)
    Hr = H.real.clone().requires_grad_(True)
    Hi = H.imag.clone().requires_grad_(True)
    Vr, Vi = layer(Hr, Hi, solver_args={"eps_abs": 1e-11, "eps_rel": 1e-11, "max_iters": 100000})
    P_ref = (Vr.square() + Vi.square()).sum((-2, -1))
    P_ref.sum().backward()
    g_ref = torch.complex(Hr.grad, Hi.grad)

    Hg = H.clone().requires_grad_(True)
    res = min_power_implicit(Hg, torch.tensor(gam, dtype=torch.float64), s2)
    assert bool(res.feasible.all())
    res.total_power.sum().backward()
    torch.testing.assert_close(res.total_power, P_ref.detach(), rtol=1e-6, atol=0)
    rel = (Hg.grad - g_ref).abs().amax((-2, -1)) / Hg.grad.abs().amax((-2, -1))
    assert float(rel.max()) < 1e-4, rel
