"""Tests of lib.learn.outage_loss: the annealing outage approximation (Schynol & Pesavento,
eq. (51)), the adaptive annealing coefficient (52), the quantile penalty (53), the primal-dual
Lagrangian (49) with its dual ascent and the convergence metric (54)."""

from __future__ import annotations

import math

import pytest
import torch

from lib.learn import (
    DualAscent,
    PrimalDualOutageLoss,
    adaptive_annealing,
    group_outage,
    log_margins,
    outage_convergence_metric,
    quantile_penalty,
    soft_outage,
)

F64 = torch.float64


def _batch(B=40, K=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    sinr = 10.0 * torch.exp(0.8 * torch.randn(B, K, generator=gen, dtype=F64))
    groups = torch.arange(B) % 2
    return sinr, groups


def test_soft_outage_tends_to_the_indicator():
    sinr, _ = _batch()
    ind = (sinr < 10.0).to(F64)
    errs = [float((soft_outage(sinr, 10.0, b) - ind).abs().max()) for b in (1.0, 10.0, 1e4)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-3
    assert float(soft_outage(torch.full((1, 1), 4.0, dtype=F64), 4.0, 3.0)) == 0.5
    # per-instance beta broadcasts
    b = torch.tensor([[1.0], [100.0]], dtype=F64)
    s = soft_outage(sinr[:2], 10.0, b)
    torch.testing.assert_close(s[1], soft_outage(sinr[1:2], 10.0, 100.0)[0])


def test_adaptive_annealing_rule_and_scale_free():
    m = torch.linspace(-2.0, 3.0, 101, dtype=F64)  # 0.1-quantile -1.5
    b = adaptive_annealing(m, 0.1, beta_max=50.0, scale=1.0)
    assert not b.requires_grad and b.dim() == 0
    assert math.isclose(float(b), 1 / 1.5, rel_tol=1e-9)
    # constraint met (quantile >= 0) or barely violated: the upper bound
    assert float(adaptive_annealing(m + 2.0, 0.1, beta_max=50.0)) == 50.0
    assert float(adaptive_annealing(m + 1.49, 0.1, beta_max=50.0)) == 50.0
    # exponential averaging
    b2 = adaptive_annealing(m, 0.1, beta_max=50.0, previous=10.0, step=0.25)
    assert math.isclose(float(b2), 0.75 * 10 + 0.25 / 1.5, rel_tol=1e-9)
    # scale-free: SINRs and targets multiplied by c give the same beta and the same loss
    sinr, groups = _batch()
    gam = torch.full_like(sinr, 10.0)
    for c in (1e-3, 1e4):
        b_ref = adaptive_annealing(log_margins(sinr, gam), 0.1, beta_max=50.0)
        b_c = adaptive_annealing(log_margins(c * sinr, c * gam), 0.1, beta_max=50.0)
        torch.testing.assert_close(b_ref, b_c)
        crit = PrimalDualOutageLoss(2, 0.1, lambda_init=1.0, beta_init=b_ref.item())
        power = torch.ones(sinr.shape[0], dtype=F64)
        torch.testing.assert_close(
            crit(sinr, power, gam, groups), crit(c * sinr, power, c * gam, groups)
        )


def test_quantile_penalty_matches_a_direct_computation():
    sinr, _ = _batch(B=13, K=3)
    m = torch.log(sinr / 10.0).flatten()
    v, _ = torch.sort(m)
    pos = 0.1 * (v.numel() - 1)
    lo = math.floor(pos)
    q = v[lo] + (pos - lo) * (v[lo + 1] - v[lo])
    torch.testing.assert_close(quantile_penalty(sinr, 10.0, 0.1), -q)
    # positive iff the outage exceeds rho
    assert float(quantile_penalty(sinr * 100, 10.0, 0.1)) < 0
    assert float(quantile_penalty(sinr / 100, 10.0, 0.1)) > 0
    # its gradient comes from at most two samples (the "common mistake")
    s = sinr.clone().requires_grad_(True)
    quantile_penalty(s, 10.0, 0.1).backward()
    assert 1 <= int((s.grad != 0).sum()) <= 2


def test_annealing_gradient_reaches_many_samples_and_is_finite():
    sinr, groups = _batch()
    s = sinr.clone().requires_grad_(True)
    p = torch.full((s.shape[0],), 5.0, dtype=F64, requires_grad=True)
    crit = PrimalDualOutageLoss(2, 0.1, lambda_init=1.0, beta_init=2.0, power_scale=100.0)
    loss = crit(s, p, 10.0, groups)
    loss.backward()
    assert torch.isfinite(s.grad).all() and torch.isfinite(p.grad).all()
    assert int((s.grad != 0).sum()) == s.numel()  # every sample contributes
    assert bool((s.grad < 0).all())  # more SINR, less outage
    torch.testing.assert_close(p.grad, torch.full_like(p, 1 / (100.0 * s.shape[0])))
    # infeasible designs (SINR 0): finite margin, zero gradient
    s0 = torch.zeros(2, 3, dtype=F64, requires_grad=True)
    crit(s0, torch.zeros(2, dtype=F64), 10.0, torch.tensor([0, 1])).backward()
    assert torch.isfinite(s0.grad).all()
    # the log objective
    crit_log = PrimalDualOutageLoss(2, 0.1, power="log", power_scale=100.0)
    torch.testing.assert_close(
        crit_log.objective(torch.tensor([1.0, 100.0], dtype=F64)),
        torch.tensor(0.5 * math.log(0.01), dtype=F64),
    )


@pytest.mark.parametrize("constraint", ["annealing", "quantile"])
def test_dual_step_direction_and_bounds(constraint):
    B, K = 40, 2
    sinr = torch.full((B, K), 100.0, dtype=F64)
    groups = torch.arange(B) % 3  # group 2 is never in outage
    sinr[groups == 0] = 1.0  # group 0 always in outage
    sinr[(groups == 1) & (torch.arange(B) % 2 == 1)] = 0.0  # half of group 1
    crit = PrimalDualOutageLoss(
        4, 0.1, constraint=constraint, dual_lr=0.5, lambda_max=2.0, lambda_init=1.0, beta_init=5.0
    )
    crit(sinr, torch.ones(B, dtype=F64), 10.0, groups)
    lam = crit.dual_step()
    assert float(lam[0]) > 1.0 and float(lam[1]) > 1.0 and float(lam[2]) < 1.0
    assert float(lam[3]) == 1.0  # group absent from the batch: unchanged
    for _ in range(50):
        crit(sinr, torch.ones(B, dtype=F64), 10.0, groups)
        lam = crit.dual_step()
    assert float(lam[0]) == 2.0 and float(lam[2]) == 0.0 and float(lam[3]) == 1.0
    if constraint == "annealing":  # met constraint: beta goes to its bound; violated: below
        assert float(crit.beta[2]) > 50 and float(crit.beta[0]) < 5.0
    # explicit constraints, lr scale, and the state in the state dict
    crit.dual_step(torch.tensor([-10.0, 0.0, 10.0, 0.0]), lr_scale=0.1)
    torch.testing.assert_close(crit.duals[[0, 2]], torch.tensor([1.5, 0.5], dtype=F64))
    fresh = PrimalDualOutageLoss(4, 0.1, constraint=constraint)
    fresh.load_state_dict(crit.state_dict())
    torch.testing.assert_close(fresh.duals, crit.duals)
    torch.testing.assert_close(fresh.beta, crit.beta)
    cb = DualAscent(crit, 1e-3)
    d = cb.state_dict()
    crit.duals.zero_()
    cb.load_state_dict(d)
    torch.testing.assert_close(crit.duals, d["duals"])


def test_group_outage_and_convergence_metric():
    sinr = torch.tensor([[1.0, 20.0], [20.0, 20.0], [1.0, 1.0], [20.0, 20.0]], dtype=F64)
    groups = torch.tensor([0, 0, 1, 1])
    out, counts = group_outage(sinr, 10.0, groups, 3)
    torch.testing.assert_close(out[:2], torch.tensor([0.25, 0.5], dtype=F64))
    assert math.isnan(float(out[2])) and counts.tolist() == [2.0, 2.0, 0.0]
    power = torch.tensor([10.0, 30.0, 50.0, 70.0], dtype=F64)
    v = outage_convergence_metric(
        power, sinr, 10.0, groups, 3, rho=0.3, lambda_bound=4.0, power_scale=100.0
    )
    assert math.isclose(v, 0.4 + 4.0 * 0.2, rel_tol=1e-12)


def test_input_checks():
    sinr, groups = _batch(B=4, K=2)
    with pytest.raises(ValueError, match="beta"):
        soft_outage(sinr, 10.0, 0.0)
    with pytest.raises(ValueError, match="sinr"):
        soft_outage(sinr[0], 10.0, 1.0)
    with pytest.raises(TypeError, match="sinr"):
        soft_outage(sinr.to(torch.complex128), 10.0, 1.0)
    with pytest.raises(ValueError, match="targets"):
        soft_outage(sinr, torch.ones(3, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="targets"):
        soft_outage(sinr, -1.0, 1.0)
    for rho in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="rho"):
            quantile_penalty(sinr, 10.0, rho)
        with pytest.raises(ValueError, match="rho"):
            PrimalDualOutageLoss(2, rho)
    with pytest.raises(ValueError, match="quantile"):
        adaptive_annealing(torch.zeros(3, dtype=F64), 0.0, beta_max=1.0)
    with pytest.raises(ValueError, match="beta_max"):
        adaptive_annealing(torch.zeros(3, dtype=F64), 0.1, beta_max=0.0)
    with pytest.raises(ValueError, match="empty"):
        adaptive_annealing(torch.zeros(0, dtype=F64), 0.1, beta_max=1.0)
    crit = PrimalDualOutageLoss(2, 0.1)
    power = torch.ones(4, dtype=F64)
    with pytest.raises(ValueError, match="groups must lie in"):
        crit(sinr, power, 10.0, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="groups must lie in"):
        crit(sinr, power, 10.0, torch.tensor([0, -1, 1, 0]))
    with pytest.raises(TypeError, match="groups"):
        crit(sinr, power, 10.0, groups.to(F64))
    with pytest.raises(ValueError, match="groups"):
        crit(sinr, power, 10.0, groups[:3])
    with pytest.raises(ValueError, match="power"):
        crit(sinr, power[:3], 10.0, groups)
    with pytest.raises(RuntimeError, match="loss call"):
        PrimalDualOutageLoss(2, 0.1).dual_step()
    with pytest.raises(ValueError, match="constraint"):
        PrimalDualOutageLoss(2, 0.1, constraint="penalty")
    with pytest.raises(ValueError, match="lambda_init"):
        PrimalDualOutageLoss(2, 0.1, lambda_max=1.0, lambda_init=2.0)
    with pytest.raises(ValueError, match="constraints"):
        crit.dual_step(torch.zeros(3))
