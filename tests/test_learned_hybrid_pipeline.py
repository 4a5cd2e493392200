"""lib.chapters.learned_hybrid: the learned chapter's set-up, data, evaluation and training
protocol on tiny problems, and the errors a reader gets for bad input."""

from __future__ import annotations

import math

import pytest
import torch

from lib import chapters
from lib.chapters import LearnedHybridProblem, TrainingProtocol
from lib.core import set_threads
from lib.learn import UnfoldedGreedyHBF
from lib.precoding import greedy_codebook_selection

set_threads(1)

TINY = dict(n_h=4, n_v=2, n_rf=2, users=(2, 2), gamma_db=5.0, groups="10,20")


def _net():
    torch.manual_seed(0)
    return UnfoldedGreedyHBF(8, 2, 1, pair_hidden=8, dtype=torch.float64)


def test_draw_labels_groups_and_keeps_served_instances():
    prob = LearnedHybridProblem(**TINY)
    Hh, eps, g, H = prob.draw(12, torch.Generator().manual_seed(0), 2)
    assert Hh.shape == H.shape == (12, 2, 8) and eps.shape == (12, 2)
    assert set(g.tolist()) <= {0, 1} and bool((eps > 0).all())
    _, eps1, g1, _ = prob.draw(12, torch.Generator().manual_seed(0), 2, group=1)
    assert bool((g1 == 1).all())
    # better pilots (group 20 dB) give smaller error variances on the same kind of draw
    _, eps0, _, _ = prob.draw(200, torch.Generator().manual_seed(1), 2, group=0)
    _, eps1, _, _ = prob.draw(200, torch.Generator().manual_seed(1), 2, group=1)
    assert float(eps1.mean()) < float(eps0.mean())
    tests = [prob.draw(8, torch.Generator().manual_seed(2), 2, group=j) for j in range(2)]
    designs = [
        greedy_codebook_selection(d[3], prob.codebook, prob.n_rf, **prob.targets) for d in tests
    ]
    perf = chapters.group_outage_table(prob, tests, designs)
    assert all(r["outage"] == 0.0 for r in perf.values())  # served under perfect CSI


def test_digital_problem_uses_the_identity_and_no_greedy_step():
    prob = LearnedHybridProblem(**TINY, digital=True)
    data = prob.draw(4, torch.Generator().manual_seed(3), 2)
    res = prob.call(_net(), data[0], data[1], 0.1)
    assert res.F_RF.shape == (4, 8, 8) and res.history.shape == (4, 0)
    eye = torch.eye(8, dtype=res.F_RF.dtype)
    torch.testing.assert_close(res.F_RF[0] @ res.F_RF[0].mH, eye)  # the columns of I


def test_training_protocol_runs_and_keeps_the_best_weights():
    prob = LearnedHybridProblem(**TINY)
    val = prob.draw(16, torch.Generator().manual_seed(4), 2)
    net = _net()
    protocol = TrainingProtocol(steps=6, batch=4, val_every=3, lr_patience=3, patience=6)
    hist, crit = chapters.train_learned_hybrid(net, prob, val, protocol, seed=0)
    assert len(hist) == 6 and hist.val_step == [0, 3, 6]
    assert crit.duals.shape == (2,) and bool(((crit.duals >= 0) & (crit.duals <= 10)).all())
    design = chapters.learned_hybrid_design(net, prob, val)
    rec = chapters.outage_record(prob, val, design)
    assert set(rec) == {"outage", "outage_se", "power_db"} and math.isfinite(rec["power_db"])


def test_an_unreachable_target_is_reported_not_nan():
    prob = LearnedHybridProblem(**TINY)
    Hh, eps, _, H = prob.draw(4, torch.Generator().manual_seed(5), 2)
    net = _net()
    cb = prob.codebook
    res = net(Hh, eps, cb, prob.n_rf, 1e6, prob.noise_var, max_power=prob.max_power)
    assert not bool(res.feasible.any())  # 60 dB on every user: no design
    assert bool(torch.isfinite(res.powers).all()) and float(res.powers.detach().abs().sum()) == 0.0
    sinr = res.sinr(H, prob.noise_var)
    assert bool(torch.isfinite(sinr).all()) and bool((sinr == 0).all())
    with pytest.raises(RuntimeError, match="infeasible for almost every"):
        LearnedHybridProblem(**{**TINY, "gamma_db": 60.0}).draw(4, torch.Generator(), 2)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="users"):
        LearnedHybridProblem(users=(0, 2))
    with pytest.raises(ValueError, match="pair"):
        LearnedHybridProblem(users=4)
    with pytest.raises(ValueError, match="rho"):
        LearnedHybridProblem(rho=1.5)
    with pytest.raises(ValueError, match="n_rf"):
        LearnedHybridProblem(n_h=2, n_v=1, n_rf=3)
    with pytest.raises(ValueError, match="empty pilot range"):
        LearnedHybridProblem(groups="20-10")
    prob = LearnedHybridProblem(**TINY)
    with pytest.raises(ValueError, match="group must be in 0..1"):
        prob.draw(2, torch.Generator(), 2, group=2)
    with pytest.raises(ValueError, match="one test set and one design per group"):
        chapters.group_outage_table(prob, [], [])
    with pytest.raises(ValueError, match="protocol.loss"):
        chapters.train_learned_hybrid(_net(), prob, None, TrainingProtocol(loss="hinge"))
    Hh, eps, _, _ = prob.draw(2, torch.Generator().manual_seed(6), 2)
    with pytest.raises(ValueError, match="err_var must have shape"):
        prob.call(_net(), Hh, eps[:, :1], 0.1)  # one error variance for two users
