"""Tests of lib.precoding.hybrid: digital sub-problem, greedy and exhaustive selection."""

import functools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.chapters.hybrid import draw_instances
from lib.phy import channels_from_covariance, dft_codebook, upa_covariance
from lib.precoding import (
    HybridResult,
    digital_min_power,
    exhaustive_search,
    fully_digital_min_power,
    greedy_codebook_selection,
    hybrid_sinr,
    init_codewords,
    min_power_socp,
    power_weights,
    sinr_rtol,
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


# --------------------------------------------------------------------------- #
# Precision, units and robustness of the hybrid family (issue 10, section 5)
# --------------------------------------------------------------------------- #
C64, C128 = torch.complex64, torch.complex128


def _chapter_setup(B=12, seed=0):
    """The set-up of book/hybrid_arrays_codebooks.ipynb: draw_instances defaults (4 users,
    8x4 UPA), the 2x2-oversampled DFT codebook (128 codewords), N_RF = 5, 10 dB."""
    H, _ = draw_instances(B, torch.Generator().manual_seed(seed))
    C, _, _ = dft_codebook(8, 4, (2, 2))
    return H, C, 5, 10.0


def test_greedy_complex64_agrees_with_complex128_on_the_chapter_setup():
    H, C, n_rf, gam = _chapter_setup()
    r64 = greedy_codebook_selection(H, C, n_rf, gam, 1.0)
    r32 = greedy_codebook_selection(H.to(C64), C, n_rf, gam, 1.0)
    assert bool(r64.feasible.all()) and torch.equal(r32.feasible, r64.feasible)
    assert r32.V_bb.dtype == C64 and r32.weighted_power.dtype == torch.float32
    assert torch.equal(r32.index, r64.index)  # same codewords chosen
    rel = (r32.history.double() - r64.history).abs() / r64.history
    assert float(rel.max()) < 1e-4
    s = r32.sinr(H.to(C64), 1.0)
    assert float(s.min()) >= gam * (1 - sinr_rtol(torch.float32))


@pytest.mark.parametrize("weighting", ["rf", "baseband"])
def test_digital_and_fully_digital_complex64_agree_with_complex128(weighting):
    H, C, n_rf, gam = _chapter_setup(B=40, seed=1)
    F = C[:, init_codewords(H, C, n_rf)].permute(1, 0, 2)
    a = digital_min_power(H, F, gam, 1.0, weighting=weighting)
    b = digital_min_power(H.to(C64), F.to(C64), gam, 1.0, weighting=weighting)
    assert bool(a.feasible.all()) and torch.equal(a.feasible, b.feasible)
    rel = (b.weighted_power.double() - a.weighted_power).abs() / a.weighted_power
    assert float(rel.max()) < 1e-4
    fa = fully_digital_min_power(H, gam, 1.0)
    fb = fully_digital_min_power(H.to(C64), gam, 1.0)
    assert bool(fa.feasible.all()) and torch.equal(fa.feasible, fb.feasible)
    rel = (fb.weighted_power.double() - fa.weighted_power).abs() / fa.weighted_power
    assert float(rel.max()) < 1e-4


def test_greedy_small_instance_complex64_does_not_crash():
    # the small instance of the chapter (3 users, 4x2 UPA, 2x1 oversampled codebook, N_RF = 3):
    # candidates equal to another chain's codeword once raised LinAlgError in complex64
    Hs, _ = draw_instances(30, torch.Generator().manual_seed(2), users=3, n_h=4, n_v=2)
    Cs, _, _ = dft_codebook(4, 2, (2, 1))
    a = greedy_codebook_selection(Hs, Cs, 3, 10.0, 1.0, n_steps=6)
    b = greedy_codebook_selection(Hs.to(C64), Cs, 3, 10.0, 1.0, n_steps=6)
    assert torch.equal(a.feasible, b.feasible) and bool(a.feasible.any())
    ok = a.feasible
    rel = (b.weighted_power[ok].double() - a.weighted_power[ok]).abs() / a.weighted_power[ok]
    assert float(rel.max()) < 1e-3
    e = exhaustive_search(Hs.to(C64), Cs, 3, 10.0, 1.0)
    assert bool((b.weighted_power[ok] >= e.weighted_power[ok] * (1 - 1e-4)).all())


_HU = _instance(B=4, K=2, nh=4, nv=2, seed=3)
_CU, _, _ = dft_codebook(4, 2)
_FU = _CU[:, init_codewords(_HU, _CU, 3)].permute(1, 0, 2)


def _designs(H, noise_var):
    return {
        "digital": digital_min_power(H, _FU, GAMMA, noise_var),
        "fully_digital": fully_digital_min_power(H, GAMMA, noise_var),
        "greedy": greedy_codebook_selection(H, _CU, 3, GAMMA, noise_var, n_steps=2),
    }


_BASE_U = _designs(_HU, 1.0)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log_c=st.floats(min_value=-7.0, max_value=3.0))
def test_hybrid_family_is_invariant_to_units(log_c):
    c = 10.0**log_c
    common = _designs(_HU * c, c * c)
    alone = _designs(_HU * c, 1.0)
    for name, base in _BASE_U.items():
        assert bool(base.feasible.all()), name
        assert torch.equal(common[name].feasible, base.feasible), name
        assert torch.equal(alone[name].feasible, base.feasible), name
        w = base.weighted_power
        torch.testing.assert_close(common[name].weighted_power, w, rtol=1e-8, atol=0)
        torch.testing.assert_close(alone[name].weighted_power * c * c, w, rtol=1e-8, atol=0)
        if base.index is not None and name == "greedy":
            assert torch.equal(common[name].index, base.index)


@pytest.mark.parametrize("dtype", [C64, C128])
def test_minus_130_db_path_loss_is_served(dtype):
    H, C, n_rf, gam = _chapter_setup(B=6, seed=4)
    c = 10 ** (-130 / 20)
    ref = greedy_codebook_selection(H.to(dtype), C, n_rf, gam, 1.0, n_steps=2)
    r = greedy_codebook_selection((H * c).to(dtype), C, n_rf, gam, c * c, n_steps=2)
    assert bool(ref.feasible.all()) and torch.equal(r.feasible, ref.feasible)
    rtol = 1e-4 if dtype == C64 else 1e-9
    torch.testing.assert_close(r.weighted_power, ref.weighted_power, rtol=rtol, atol=0)


@pytest.mark.parametrize("dtype", [C64, C128])
@pytest.mark.parametrize("weighting", ["rf", "baseband"])
def test_parallel_channels_at_0_db_make_candidates_infeasible_not_raise(dtype, weighting):
    H = _instance(B=3, K=2, nh=4, nv=2, seed=5)
    H[0, 1] = H[0, 0]  # identical channels
    H[1, 1] = 0.5j * H[1, 0]  # parallel channels
    H = H.to(dtype)
    C, _, _ = dft_codebook(4, 2)
    r = greedy_codebook_selection(H, C, 3, 1.0, 1.0, weighting=weighting)  # 0 dB target
    assert r.feasible.tolist() == [False, False, True]
    assert bool(torch.isinf(r.weighted_power[:2]).all()) and not bool(torch.isnan(r.V_bb).any())
    e = exhaustive_search(H, C, 3, 1.0, 1.0, weighting=weighting)
    assert e.feasible.tolist() == [False, False, True]


def test_hybrid_sinr_rejects_negative_and_non_finite_powers():
    H = _instance(B=2, K=2)
    C, _, _ = dft_codebook(4, 2)
    F = C[:, :3].expand(2, 8, 3)
    d = digital_min_power(H, F, GAMMA, 1.0)
    with pytest.raises(ValueError, match="powers must be >= 0"):
        hybrid_sinr(H, F, d.V_bb, -d.powers, 1.0)
    with pytest.raises(ValueError, match="powers contains NaN or infinite"):
        hybrid_sinr(H, F, d.V_bb, torch.full_like(d.powers, torch.inf), 1.0)
    with pytest.raises(ValueError, match=r"powers must have shape \(2, 2\)"):
        hybrid_sinr(H, F, d.V_bb, d.powers[:, :1], 1.0)
    with pytest.raises(TypeError, match="powers must be a real floating tensor"):
        hybrid_sinr(H, F, d.V_bb, d.powers.to(torch.complex128), 1.0)


@pytest.mark.parametrize(
    "kw,exc,msg",
    [
        ({"max_power": -1.0}, ValueError, "max_power must be finite and > 0"),
        ({"max_power": float("inf")}, ValueError, "max_power must be finite and > 0"),
        ({"max_power": True}, TypeError, "max_power must be None or a number"),
        ({"n_steps": -1}, ValueError, "n_steps must be >= 0"),
        ({"chunk": 0}, ValueError, "chunk must be >= 1"),
        ({"init": torch.zeros(2, 2)}, TypeError, "init must be an integer"),
        ({"init": torch.zeros(2, 3, dtype=torch.long)}, ValueError, r"init must have shape"),
        ({"init": torch.full((2, 2), 99)}, ValueError, r"init must hold codeword indices"),
        ({"iters": 0}, ValueError, "iters must be >= 1"),
        ({"max_power_ratio": 1.0}, ValueError, "max_power_ratio"),
    ],
)
def test_greedy_rejects_bad_settings(kw, exc, msg):
    H = _instance(B=2, K=2)
    C, _, _ = dft_codebook(4, 2)
    with pytest.raises(exc, match=msg):
        greedy_codebook_selection(H, C, 2, GAMMA, 1.0, **kw)


def test_greedy_and_exhaustive_reject_bad_codebook_and_n_rf():
    H = _instance(B=2, K=2)
    C, _, _ = dft_codebook(4, 2)
    with pytest.raises(ValueError, match=r"codebook must have shape \(8, codewords\)"):
        greedy_codebook_selection(H, C[:4], 2, GAMMA, 1.0)
    with pytest.raises(TypeError, match="codebook must be a complex tensor"):
        exhaustive_search(H, C.real, 2, GAMMA, 1.0)
    with pytest.raises(ValueError, match=r"n_rf must be <= min\(M, C\) = 3"):
        exhaustive_search(H, C[:, :3], 4, GAMMA, 1.0)


def test_greedy_loop_calls_no_checked_function(monkeypatch):
    """Checks run at the entry: their number does not grow with the number of greedy steps."""
    import lib.core.checks as checks
    import lib.precoding.hybrid as hyb
    import lib.precoding.power_min as pm

    H = _instance(B=3, K=2)
    C, _, _ = dft_codebook(4, 2)
    counts = {"n": 0}

    def counting(f):
        def wrapped(*a, **k):
            counts["n"] += 1
            return f(*a, **k)

        return wrapped

    for mod in (hyb, pm):
        for name in ("check_complex", "check_real", "per_user", "_check_H", "_scalar"):
            if hasattr(mod, name):
                monkeypatch.setattr(mod, name, counting(getattr(mod, name)))
    monkeypatch.setattr(checks, "check_tensor", counting(checks.check_tensor))
    used = []
    for steps in (1, 4):
        counts["n"] = 0
        greedy_codebook_selection(H, C, 3, GAMMA, 1.0, n_steps=steps)
        used.append(counts["n"])
    assert used[0] == used[1] and used[0] > 0


def test_designers_usable_with_partial_and_keywords():
    """The hybrid-designer form ``designer(H_hat, sinr_targets=..., noise_var=...)``."""
    H = _instance(B=3, K=2)
    C, _, _ = dft_codebook(4, 2)
    designers = {
        "greedy": functools.partial(greedy_codebook_selection, codebook=C, n_rf=3, n_steps=3),
        "exhaustive": functools.partial(exhaustive_search, codebook=C, n_rf=3),
        "fully_digital": fully_digital_min_power,
    }
    for name, designer in designers.items():
        d = designer(H, sinr_targets=GAMMA, noise_var=0.5)
        assert isinstance(d, HybridResult), name
        assert d.feasible.shape == (3,) and d.weighted_power.shape == (3,), name
        assert bool(d.feasible.all()), name
        s = d.sinr(H, 0.5)
        assert float(s.min()) >= GAMMA * (1 - sinr_rtol(torch.float64)), name
    # fully_digital_min_power also takes them positionally
    a = fully_digital_min_power(H, GAMMA, 0.5)
    b = designers["fully_digital"](H, sinr_targets=GAMMA, noise_var=0.5)
    assert torch.equal(a.weighted_power, b.weighted_power)


def test_result_sinr_of_an_infeasible_design_is_zero():
    H = _instance(B=2, K=3)
    C, _, _ = dft_codebook(4, 2)
    F = C[:, :2].expand(2, 8, 2)
    res = digital_min_power(H, F, 10.0, 1.0)  # infeasible, see test_infeasible_reported_not_nan
    assert not bool(res.feasible.any())
    assert torch.equal(res.sinr(H, 1.0), torch.zeros(2, 3, dtype=torch.float64))
