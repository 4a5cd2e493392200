"""Tests of lib.precoding.hybrid: digital sub-problem, greedy and exhaustive selection."""

import math

import pytest
import torch

from lib.chapters.hybrid import draw_instances
from lib.phy import channels_from_covariance, dft_codebook, upa_covariance
from lib.precoding import (
    digital_min_power,
    exhaustive_search,
    fully_digital_min_power,
    greedy_codebook_selection,
    hybrid_sinr,
    init_codewords,
    min_power_socp,
    power_weights,
)

GAMMA = 10 ** (5 / 10)


def _instance(B=6, K=2, nh=4, nv=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    ah = (torch.rand(B, K, generator=g, dtype=torch.float64) * 2 - 1) * math.pi / 3
    av = (torch.rand(B, K, generator=g, dtype=torch.float64) * 2 - 1) * math.pi / 6
    R = upa_covariance(nh, nv, ah, av, math.radians(10))
    return channels_from_covariance(R, generator=g)


@pytest.mark.parametrize("weighting", ["rf", "baseband"])
def test_digital_subproblem_meets_targets_and_matches_socp(weighting):
    H = _instance(B=4, K=3)
    C, _, _ = dft_codebook(4, 2, (2, 2))
    idx = init_codewords(H, C, 4)
    F = C[:, idx].permute(1, 0, 2)
    res = digital_min_power(H, F, GAMMA, 1.0, weighting=weighting)
    assert bool(res.feasible.all())
    s = hybrid_sinr(H, F, res.V_bb, res.powers, 1.0)
    assert torch.allclose(s, torch.full_like(s, GAMMA), rtol=1e-6)
    w = power_weights(F, res.V_bb, weighting)
    assert torch.allclose((w * res.powers).sum(-1), res.weighted_power, rtol=1e-8)
    # reference: cvxpy SOCP on the equivalent standard problem
    if weighting == "baseband":
        Heq = H @ F
    else:
        L = torch.linalg.cholesky(F.mH @ F)
        Heq = torch.linalg.solve_triangular(L, (H @ F).mH, upper=False).mH
    ref = min_power_socp(Heq, GAMMA, 1.0)
    assert torch.allclose(ref.total_power, res.weighted_power, rtol=1e-4)


def test_rf_weighting_with_identity_is_fully_digital():
    H = _instance(B=3, K=2, nh=2, nv=2)
    F = torch.eye(4, dtype=H.dtype).expand(3, 4, 4)
    a = digital_min_power(H, F, GAMMA, 0.5)
    b = fully_digital_min_power(H, GAMMA, 0.5)
    assert torch.allclose(a.weighted_power, b.weighted_power, rtol=1e-8)


def test_infeasible_reported_not_nan():
    H = _instance(B=2, K=3)
    C, _, _ = dft_codebook(4, 2)
    F = C[:, :2].expand(2, 8, 2)
    res = digital_min_power(H, F, 10.0, 1.0)  # 3 users, 2 RF chains, 3*10/11 > 2: infeasible
    assert not bool(res.feasible.any())
    assert bool(torch.isinf(res.weighted_power).all())
    assert not bool(torch.isnan(res.V_bb).any())


def test_greedy_monotone_and_above_fully_digital_and_exhaustive():
    H = _instance(B=8, K=2)
    C, _, _ = dft_codebook(4, 2)  # 8 orthogonal codewords
    fd = fully_digital_min_power(H, GAMMA, 1.0)
    gr = greedy_codebook_selection(H, C, 3, GAMMA, 1.0, n_steps=6)
    ex = exhaustive_search(H, C, 3, GAMMA, 1.0)
    h = gr.history
    assert h.shape == (8, 7)
    assert bool((h[:, 1:] <= h[:, :-1] * (1 + 1e-9)).all())
    ok = gr.feasible
    assert bool(ok.all())
    assert bool((gr.weighted_power >= fd.weighted_power * (1 - 1e-9)).all())
    assert bool((gr.weighted_power >= ex.weighted_power * (1 - 1e-9)).all())
    assert bool((ex.weighted_power >= fd.weighted_power * (1 - 1e-9)).all())
    # selected columns of greedy are distinct codewords
    assert all(len(set(row.tolist())) == 3 for row in gr.index)


def test_init_codewords_linearly_independent():
    # 2-antenna ULA, 4x oversampled: 8 codewords in C^2, any two distinct ones are independent,
    # but 3 never are; n_rf = 2 must give a full-rank F.
    H = _instance(B=5, K=2, nh=2, nv=1)
    C, _, _ = dft_codebook(2, 1, (4, 1))
    idx = init_codewords(H, C, 2)
    F = C[:, idx].permute(1, 0, 2)
    assert bool((torch.linalg.matrix_rank(F) == 2).all())
    # 2x2 UPA: codewords a_h(x)b_1 ... a_h(x)b_3 with O_v = 3 share a_h; rank must still be n_rf
    H = _instance(B=5, K=3, nh=2, nv=2)
    C, _, _ = dft_codebook(2, 2, (1, 3))
    idx = init_codewords(H, C, 4)
    assert bool((torch.linalg.matrix_rank(C[:, idx].permute(1, 0, 2)) == 4).all())


def test_bad_input_rejected():
    H = _instance(B=2, K=2)
    C, _, _ = dft_codebook(4, 2)
    F = C[:, :2].expand(2, 8, 2)
    with pytest.raises(ValueError, match="weighting"):
        digital_min_power(H, F, GAMMA, 1.0, weighting="analog")
    with pytest.raises(ValueError, match="F_RF"):
        digital_min_power(H, F[:, :4], GAMMA, 1.0)
    with pytest.raises(TypeError, match="H"):
        digital_min_power(H.real, F, GAMMA, 1.0)
    with pytest.raises(ValueError, match="sinr_targets"):
        digital_min_power(H, F, -1.0, 1.0)
    with pytest.raises(ValueError, match="n_rf"):
        init_codewords(H, C, 9)
    with pytest.raises(ValueError, match="noise_var"):
        greedy_codebook_selection(H, C, 2, GAMMA, -1.0)


def test_draw_instances_shapes_seed_and_bad_input():
    H, R = draw_instances(3, torch.Generator().manual_seed(5), users=2, n_h=4, n_v=2)
    assert H.shape == (3, 2, 8) and R.shape == (3, 2, 8, 8) and H.is_complex()
    assert torch.allclose(R, R.mH)
    H2, R2 = draw_instances(3, torch.Generator().manual_seed(5), users=2, n_h=4, n_v=2)
    assert torch.equal(H, H2) and torch.equal(R, R2)  # reproducible with a seed
    # the draws of the former notebook helper: angles first, then the channels
    g = torch.Generator().manual_seed(5)
    ah = (torch.rand(3, 2, generator=g, dtype=torch.float64) * 2 - 1) * math.pi / 3
    av = (torch.rand(3, 2, generator=g, dtype=torch.float64) * 2 - 1) * math.pi / 6
    R3 = upa_covariance(4, 2, ah, av, math.radians(10))
    assert torch.equal(R, R3) and torch.equal(H, channels_from_covariance(R3, generator=g))
    with pytest.raises(ValueError, match="batch"):
        draw_instances(0)
    with pytest.raises(ValueError, match="users"):
        draw_instances(2, users=0)
    with pytest.raises(ValueError, match="spread"):
        draw_instances(2, spread=-0.1)
