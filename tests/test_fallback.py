"""The classical fallback wrapper, its monitors and the deployment metrics."""

import functools
import itertools
import math

import pytest
import torch

from lib.methods import (
    EnsembleMonitor,
    Fallback,
    IterativeEstimator,
    MahalanobisMonitor,
    RateSelfCheck,
    ResidualMonitor,
    auroc,
    fallback_metrics,
    roc_curve,
)
from lib.precoding import mrt, rzf, sum_rate, zf
from lib.sparse import amp, bernoulli_gaussian, gaussian_matrix, nmse_db


def _sparse_problem(B=400, M=60, N=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = gaussian_matrix(M, N, generator=g)
    x = bernoulli_gaussian(B, N, 0.1, generator=g)
    y = x @ A.T + 0.01 * torch.randn(B, M, generator=g, dtype=A.dtype)
    return y, A, x


class _Counting(IterativeEstimator):
    """AMP that records how many samples it was called on."""

    def __init__(self, iters):
        super().__init__(amp, iters, uses_noise_var=False)
        self.seen = 0

    def __call__(self, y, A, noise_var):
        self.seen += y.shape[0]
        return super().__call__(y, A, noise_var)


def test_sparse_fallback_triggers_at_the_calibrated_rate_and_merges():
    y, A, x = _sparse_problem()
    learned = IterativeEstimator(amp, 2, uses_noise_var=False)  # a weak "learned" method
    classical = _Counting(30)
    fb = Fallback(learned, classical, ResidualMonitor(), task="sparse")
    thr = fb.calibrate(y, A, 1e-4, trigger_rate=0.25)
    assert math.isfinite(thr)
    classical.seen = 0
    res = fb.run(y, A, 1e-4)
    assert res.trigger_rate == pytest.approx(0.25, abs=1.5 / len(y))
    assert classical.seen == int(res.triggered.sum())  # the classical branch ran only there
    t = res.triggered
    assert torch.equal(res.output[~t], learned(y, A, 1e-4)[~t])
    assert torch.allclose(res.output[t], classical(y[t], A, 1e-4))
    assert set(res.seconds) == {"learned", "monitor", "classical"}
    # the residual flags the worst learned estimates: wrapping helps
    assert float(nmse_db(res.output, x)) < float(nmse_db(res.learned, x))


def test_per_sample_arguments_are_selected_and_shared_ones_kept():
    g = torch.Generator().manual_seed(1)
    B, K, M = 64, 4, 8
    H = torch.randn(B, K, M, dtype=torch.complex128, generator=g)
    P = torch.linspace(1, 100, B, dtype=torch.float64)
    seen = {}

    def classical(H, power, noise_var):
        seen["P"] = power
        return rzf(H, power, noise_var)

    fb = Fallback(mrt, classical, RateSelfCheck(), task="precoder")
    fb.calibrate(H, P, 1.0, trigger_rate=0.5)
    res = fb.run(H, P, 1.0)
    assert torch.equal(seen["P"], P[res.triggered])
    s = res.score
    assert bool(((s >= 0) & (s <= 1)).all())
    t = res.triggered
    assert torch.allclose(res.output[t], rzf(H[t], P[t], 1.0))


def test_rate_self_check_is_one_minus_rate_over_single_user_bound():
    g = torch.Generator().manual_seed(2)
    H = torch.randn(16, 3, 6, dtype=torch.complex128, generator=g)
    V = zf(H, 10.0, 1.0)
    s = RateSelfCheck()((H, 10.0, 1.0), V)
    bound = torch.log2(1 + 10.0 * H.abs().pow(2).sum(-1)).sum(-1)
    assert torch.allclose(s, 1 - sum_rate(H, V, 1.0) / bound)


def test_mismatched_interfaces_and_bad_inputs_raise():
    y, A, _ = _sparse_problem(B=20)
    est = IterativeEstimator(amp, 5, uses_noise_var=False)
    with pytest.raises(TypeError, match="share the 'sparse' interface"):
        Fallback(est, zf, ResidualMonitor(), task="sparse")  # zf is no SparseEstimator
    with pytest.raises(TypeError, match="share the 'precoder' interface"):
        Fallback(zf, lambda H: H, RateSelfCheck(), task="precoder")
    with pytest.raises(ValueError, match="task"):
        Fallback(est, est, ResidualMonitor(), task="detector")
    with pytest.raises(TypeError, match="monitor"):
        Fallback(est, est, "residual", task="sparse")
    fb = Fallback(est, est, ResidualMonitor(), task="sparse")
    with pytest.raises(ValueError, match="threshold is not set"):
        fb.run(y, A, 0.0)
    fb.calibrate(y, A, 0.0, trigger_rate=0.1)
    y_bad = y.clone()
    y_bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        fb.run(y_bad, A, 0.0)
    with pytest.raises(TypeError, match="positional"):
        fb.run(y, A)
    with pytest.raises(ValueError, match="trigger_rate"):
        fb.calibrate(y, A, 0.0, trigger_rate=1.5)
    bad_monitor = Fallback(est, est, lambda args, out: out, task="sparse", threshold=0.0)
    with pytest.raises(ValueError, match=r"\(B,\) tensor"):
        bad_monitor.run(y, A, 0.0)


def test_map_task_wraps_one_input_decoders():
    s = torch.randn(50, 8, dtype=torch.float64)
    fb = Fallback(lambda s: 2 * s, lambda s: s, lambda a, out: out.abs().amax(-1),
                  task="map", threshold=3.0)  # fmt: skip
    res = fb.run(s)
    t = res.triggered
    assert torch.equal(t, (2 * s).abs().amax(-1) > 3.0)
    assert torch.equal(res.output[t], s[t]) and torch.equal(res.output[~t], 2 * s[~t])


def test_auroc_matches_the_pairwise_definition():
    g = torch.Generator().manual_seed(3)
    score = torch.randint(0, 6, (40,), generator=g).double()  # many ties
    pos = torch.rand(40, generator=g) < 0.4
    pairs = [
        1.0 if a > b else 0.5 if a == b else 0.0
        for a, b in itertools.product(score[pos].tolist(), score[~pos].tolist())
    ]
    assert auroc(score, pos) == pytest.approx(sum(pairs) / len(pairs))
    x = torch.arange(10.0)
    assert auroc(x, x >= 5) == 1.0 and auroc(-x, x >= 5) == 0.0
    assert auroc(torch.zeros(10), x >= 5) == 0.5
    assert math.isnan(auroc(x, torch.zeros(10, dtype=torch.bool)))


def test_fallback_metrics_on_a_hand_example():
    ll = torch.tensor([1.0, 1.0, 5.0, 1.0])  # learned loss
    lc = torch.tensor([2.0, 2.0, 2.0, 2.0])  # classical loss
    trig = torch.tensor([False, False, True, False])
    score = torch.tensor([0.1, 0.2, 0.9, 0.3])
    m = fallback_metrics(ll, lc, trig, score)
    assert m["trigger_rate"] == 0.25
    assert m["gain_learned"] == pytest.approx(2 - 2.0)  # mean 2 vs mean 2: no gain alone
    assert m["gain_retained"] is None
    assert m["gain_wrapped"] == pytest.approx(2 - 1.25)
    assert m["worse_than_classical_rate"] == 0.0 and m["worst_excess"] == 0.0
    assert m["learned_worse_rate"] == 0.25 and m["auroc"] == 1.0
    m2 = fallback_metrics(ll, lc, torch.zeros(4, dtype=torch.bool), score)
    assert m2["worse_than_classical_rate"] == 0.25 and m2["worst_excess"] == 3.0
    ll2 = torch.tensor([1.0, 1.0, 3.0, 1.0])
    m3 = fallback_metrics(ll2, lc, trig)
    assert m3["gain_retained"] == pytest.approx((2 - 1.25) / (2 - 1.5))
    with pytest.raises(ValueError, match="finite"):
        fallback_metrics(torch.tensor([math.inf]), torch.tensor([0.0]), torch.tensor([False]))
    with pytest.raises(ValueError, match=r"\(B,\)"):
        fallback_metrics(ll, lc[:3], trig)


def test_mahalanobis_scores_shifted_inputs_higher():
    g = torch.Generator().manual_seed(4)
    d = 5
    train = torch.randn(2000, d, generator=g, dtype=torch.float64)
    mon = MahalanobisMonitor(lambda args: args[0], shrinkage=0.0)
    with pytest.raises(ValueError, match="not fitted"):
        mon((train,), None)
    mon.fit(train)
    s_in = mon((torch.randn(2000, d, generator=g, dtype=torch.float64),), None)
    s_out = mon((2 + torch.randn(2000, d, generator=g, dtype=torch.float64),), None)
    assert float(s_in.mean()) == pytest.approx(d, rel=0.1)  # chi-square with d dof
    assert auroc(torch.cat([s_in, s_out]), torch.arange(4000) >= 2000) > 0.95


def test_ensemble_disagreement_is_zero_for_identical_members():
    y, A, _ = _sparse_problem(B=30)
    est = IterativeEstimator(amp, 10, uses_noise_var=False)
    mon = EnsembleMonitor([est, est])
    assert torch.allclose(mon((y, A, 0.0), est(y, A, 0.0)), torch.zeros(30, dtype=y.dtype))
    other = IterativeEstimator(amp, 2, uses_noise_var=False)
    assert bool((EnsembleMonitor([other])((y, A, 0.0), est(y, A, 0.0)) > 0).all())
    with pytest.raises(ValueError, match="at least 2"):
        EnsembleMonitor([est], include_output=False)


def test_partial_precoders_are_accepted():
    H = torch.randn(8, 2, 4, dtype=torch.complex128)
    fb = Fallback(functools.partial(rzf), zf, RateSelfCheck(), task="precoder", threshold=2.0)
    assert torch.allclose(fb(H, 1.0, 1.0), rzf(H, 1.0, 1.0))  # threshold above every score


def test_roc_curve_runs_from_origin_to_one_and_its_area_is_the_auroc():
    g = torch.Generator().manual_seed(4)
    score = torch.randint(0, 8, (60,), generator=g).double()  # ties
    pos = torch.rand(60, generator=g) < 0.3
    fpr, tpr = roc_curve(score, pos)
    assert fpr.dtype == tpr.dtype == torch.float64
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert bool((fpr.diff() >= 0).all() and (tpr.diff() >= 0).all())
    assert float(torch.trapezoid(tpr, fpr)) == pytest.approx(auroc(score, pos))
    # hand example: scores 3 > 2 > 1 with labels +, -, +
    fpr, tpr = roc_curve(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([True, False, True]))
    assert fpr.tolist() == [0.0, 0.0, 1.0, 1.0] and tpr.tolist() == [0.0, 0.5, 0.5, 1.0]
    with pytest.raises(ValueError, match="both classes"):
        roc_curve(torch.arange(4.0), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="positive"):
        roc_curve(torch.arange(4.0), torch.ones(3, dtype=torch.bool))


def test_residual_monitor_relative_to_noise_by_hand():
    A = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    x_hat = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    nv = torch.tensor([0.5, 2.0], dtype=torch.float64)
    # residuals: y - A x_hat = (0, 0, 1) and (1, 1, 1): energies 1 and 3; M = 3
    s = ResidualMonitor("noise")((y, A, nv), x_hat)
    assert s.tolist() == pytest.approx([1 / (3 * 0.5), 3 / (3 * 2.0)])
    s = ResidualMonitor()((y, A, nv), x_hat)
    assert s.tolist() == pytest.approx([1 / 14, 3 / 3])
    # batched A gives the same scores
    s_b = ResidualMonitor("noise")((y, A.expand(2, 3, 2), nv), x_hat)
    assert s_b.tolist() == pytest.approx([1 / 1.5, 0.5])
    with pytest.raises(ValueError, match="relative_to"):
        ResidualMonitor("signal")
