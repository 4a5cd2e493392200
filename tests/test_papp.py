"""PaPP pieces (lib.learn.papp) and the chapter pipeline (lib.chapters.papp)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lib.chapters import DomainSampler, PaPPSetup, csi_error, evaluate_precoders
from lib.learn import (
    CNNPrecoderNet,
    LearnedPrecoder,
    PaPPNet,
    ReliabilityGate,
    maml_objective,
    mldg_objective,
    papp_rate,
    power_aware_input,
    power_aware_output,
    student_loss,
    unit_power,
)
from lib.phy import load_site, rayleigh
from lib.precoding import sum_rate, wmmse, wmmse_precoder, wmmse_receivers, wmmse_weights


def _H(B=8, K=4, M=16, seed=0, dtype=torch.complex128):
    return rayleigh(B, K, M, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _unit(B, M, K, seed=1, dtype=torch.complex128):
    g = torch.Generator().manual_seed(seed)
    return unit_power(torch.randn(B, M, K, generator=g, dtype=dtype))


@pytest.mark.parametrize("P,s2", [(1.0, 1.0), (316.0, 1.0), (10.0, 0.01), (0.5, 4.0)])
def test_sinr_invariance_of_the_power_aware_normalisation(P, s2):
    H = _H()
    W_bar = _unit(8, 16, 4)
    direct = sum_rate(H, power_aware_output(W_bar, P), s2)
    normalised = papp_rate(power_aware_input(H, P, s2), W_bar)
    torch.testing.assert_close(direct, normalised, rtol=1e-10, atol=1e-10)


def test_power_aware_input_checks_its_arguments():
    with pytest.raises(ValueError, match="power"):
        power_aware_input(_H(), -1.0, 1.0)
    with pytest.raises(ValueError, match="noise_var"):
        power_aware_input(_H(), 1.0, 0.0)


def _perm_check(model, H, **kw):
    perm = torch.tensor([2, 0, 3, 1])
    out = model(H, **kw)
    out_p = model(H[:, perm], **kw)
    return out, out_p, perm


@pytest.mark.parametrize("hybrid", [False, True])
def test_papp_is_permutation_equivariant_over_users(hybrid):
    torch.manual_seed(0)
    model = PaPPNet(4, 4, embed=16, hidden=16, hybrid=hybrid).double()
    H = power_aware_input(_H(), 100.0, 1.0)
    perm = torch.tensor([2, 0, 3, 1])
    W, W_T = model(H, teacher=True)
    Wp, W_Tp = model(H[:, perm], teacher=True)
    torch.testing.assert_close(Wp, W[:, :, perm], rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(W_Tp, W_T[:, :, perm], rtol=1e-6, atol=1e-8)
    f = model.backbone(H)
    torch.testing.assert_close(model.backbone(H[:, perm]), f[:, perm], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("K", [1, 2, 6])
def test_papp_accepts_any_number_of_users_and_outputs_unit_power(K):
    torch.manual_seed(0)
    model = PaPPNet(4, 4, embed=16, hidden=16).double()
    H = power_aware_input(_H(K=K), 10.0, 1.0)
    W, W_T = model(H, teacher=True)
    assert W.shape == W_T.shape == (8, 16, K)
    torch.testing.assert_close(torch.linalg.matrix_norm(W), torch.ones(8, dtype=torch.float64))
    torch.testing.assert_close(torch.linalg.matrix_norm(W_T), torch.ones(8, dtype=torch.float64))


def test_hybrid_student_has_phase_only_analog_precoder_invariant_to_user_order():
    torch.manual_seed(0)
    model = PaPPNet(4, 4, embed=16, hidden=16, hybrid=True, n_rf=3).double()
    H = power_aware_input(_H(), 100.0, 1.0)
    f = model.backbone(H)
    W, A, W_dp = model.student(f, H)
    assert A.shape == (8, 16, 3) and W_dp.shape == (8, 3, 4)
    torch.testing.assert_close(A.abs(), torch.full(A.shape, 0.25, dtype=torch.float64))
    torch.testing.assert_close(W, A @ W_dp)
    perm = torch.tensor([1, 3, 0, 2])
    _, A_p, _ = model.student(model.backbone(H[:, perm]), H[:, perm])
    torch.testing.assert_close(A_p, A, rtol=1e-7, atol=1e-9)


def test_one_wmmse_update_at_the_fixed_point_is_the_converged_precoder():
    """Why a perfect teacher loses nothing: the V-step from WMMSE's own (u, w) returns V."""
    H = _H(B=4, K=3, M=8)
    V = wmmse(H, 10.0, 1.0, iters=3000)
    u = wmmse_receivers(H, V, 1.0)
    w = wmmse_weights(H, V, u, 1.0)
    V1 = wmmse_precoder(H, u, w, 10.0)
    rel = (V1 - V).abs().amax() / V.abs().amax()
    assert float(rel) < 1e-4
    # a phase of u_k only rotates column k: the teacher predicts |u_k|
    V2 = wmmse_precoder(H, u.abs().to(u.dtype), w, 10.0)
    torch.testing.assert_close(sum_rate(H, V2, 1.0), sum_rate(H, V1, 1.0))


def test_teacher_is_differentiable_and_learns_toward_wmmse():
    torch.manual_seed(0)
    model = PaPPNet(2, 2, embed=16, hidden=16).double()
    H = power_aware_input(_H(B=32, K=2, M=4), 10.0, 1.0)
    opt = torch.optim.Adam(model.teacher.parameters(), lr=1e-2)
    f = model.backbone(H).detach()
    rates = []
    for _ in range(160):
        W_T = model.teacher(f, H)[0]
        loss = -papp_rate(H, W_T).mean()
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.teacher.parameters())
        opt.step()
        rates.append(-float(loss.detach()))
    ref = float(papp_rate(H, unit_power(wmmse(H, 1.0, 1.0, iters=500))).mean())
    # from equal weights (a ZF-like start) the teacher closes at least 40 % of the gap
    assert rates[-1] - rates[0] > 0.4 * (ref - rates[0]) > 0
    assert rates[-1] <= ref + 1e-6


def test_teacher_update_is_the_same_in_single_and_double_precision():
    """The teacher trains in float32 and is evaluated in float64: both must compute the same
    WMMSE update. On site channels at 25 dB the 64 x 64 update in single precision was a
    different precoder (max |dW| 0.34 on these 16 samples) and its implicit derivative became
    non-finite in training; the update now runs in double precision."""
    torch.manual_seed(0)
    net = PaPPNet()  # the 8 x 8 array of the chapter, M = 64
    site = load_site(PaPPSetup().test_sites[0], dtype=torch.complex128)
    H, _ = site.sample(16, 4, torch.Generator().manual_seed(0))
    H = power_aware_input(H, 10**2.5, 1.0)
    net64 = PaPPNet()
    net64.load_state_dict(net.state_dict())
    net64 = net64.double()
    W32 = net(H.to(torch.complex64), teacher=True)[1]
    assert W32.dtype == torch.complex64
    with torch.no_grad():
        W64 = net64(H, teacher=True)[1]
    assert float((W32.detach().to(torch.complex128) - W64).abs().max()) < 1e-5
    (-papp_rate(H.to(torch.complex64), W32).mean()).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.teacher.parameters())
    assert all(torch.isfinite(p.grad).all() for p in net.backbone.parameters())


def test_student_loss_is_mse_minus_normalised_rate_with_a_constant_target():
    H = power_aware_input(_H(), 100.0, 1.0)
    W = _unit(8, 16, 4, seed=2).requires_grad_(True)
    W_T = _unit(8, 16, 4, seed=3).requires_grad_(True)
    ref = torch.full((8,), 7.0, dtype=torch.float64)
    loss = student_loss(W, W_T, H, ref, 0.5)
    manual = ((W - W_T).abs() ** 2).sum((-2, -1)) - 0.5 * papp_rate(H, W) / ref
    torch.testing.assert_close(loss, manual.mean())
    loss.backward()
    assert W_T.grad is None and W.grad is not None


def test_reliability_gate_opens_after_the_imitation_plateau_and_checkpoints():
    values = iter([1.0, 0.5, 0.499, 0.498, 0.497, 0.1])
    gate = ReliabilityGate(lambda s: next(values), lambda_0=0.1, lambda_1=2.0, patience=3)

    class S:
        step = 0

    seen = []
    for i in range(5):
        S.step = 100 * (i + 1)
        gate.on_validation(S, 0.0)
        seen.append(gate.value)
    assert seen == [0.1, 0.1, 0.1, 0.1, 2.0] and gate.opened_at == 500
    other = ReliabilityGate(lambda s: 0.0)
    other.load_state_dict(gate.state_dict())
    assert other.open and other.opened_at == 500 and other.value == 1.0  # its own lambda_1
    with pytest.raises(ValueError, match="lambda_0"):
        ReliabilityGate(lambda s: 0.0, lambda_0=-1.0)


def _quad_loss(forward, batch):
    x, y = batch
    return ((forward(x).squeeze(-1) - y) ** 2).mean()


def _batches(seed, n=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(5, 3, generator=g, dtype=torch.float64),
             torch.randn(5, generator=g, dtype=torch.float64)) for _ in range(n)]  # fmt: skip


def test_mldg_gradient_is_delta_train_plus_beta_delta_gen_through_the_inner_step():
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False).double()
    tr, gen = _batches(1, 2), _batches(2, 1)
    alpha, beta = 0.1, 0.7
    obj, _, _ = mldg_objective(model, _quad_loss, tr, gen, alpha, beta)
    obj.backward()
    # closed form for L(w) = mean((X w - y)^2): grad 2 X^T (X w - y) / n, Hessian 2 X^T X / n
    w = model.weight.detach().reshape(-1)

    def grad_hess(batches, w):
        g = sum(2 * X.T @ (X @ w - y) / len(y) for X, y in batches) / len(batches)
        Hs = sum(2 * X.T @ X / len(y) for X, y in batches) / len(batches)
        return g, Hs

    g_tr, H_tr = grad_hess(tr, w)
    g_gen, _ = grad_hess(gen, w - alpha * g_tr)
    expected = g_tr + beta * (torch.eye(3, dtype=torch.float64) - alpha * H_tr) @ g_gen
    torch.testing.assert_close(model.weight.grad.reshape(-1), expected)


def test_maml_objective_adapts_per_task_with_second_order_gradient():
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False).double()
    tasks = [(_batches(s, 1)[0], _batches(s + 10, 1)[0]) for s in range(3)]
    alpha = 0.05
    obj, _ = maml_objective(model, _quad_loss, tasks, alpha)
    obj.backward()
    w = model.weight.detach().reshape(-1)
    total = torch.zeros(3, dtype=torch.float64)
    for (Xs, ys), (Xq, yq) in tasks:
        g_s = 2 * Xs.T @ (Xs @ w - ys) / len(ys)
        H_s = 2 * Xs.T @ Xs / len(ys)
        w1 = w - alpha * g_s
        g_q = 2 * Xq.T @ (Xq @ w1 - yq) / len(yq)
        total += (torch.eye(3, dtype=torch.float64) - alpha * H_s) @ g_q
    torch.testing.assert_close(model.weight.grad.reshape(-1), total / 3)
    with pytest.raises(ValueError, match="task"):
        maml_objective(model, _quad_loss, [])
    with pytest.raises(ValueError, match="meta"):
        mldg_objective(model, _quad_loss, tr := _batches(0, 1), [])
    assert tr


def test_learned_precoder_fits_the_interface_and_checks_its_input():
    torch.manual_seed(0)
    model = PaPPNet(4, 4, embed=16, hidden=16)
    pre = LearnedPrecoder(model)
    H = _H(K=4, M=16, dtype=torch.complex64)
    V = pre(H, 100.0, 2.0)
    assert V.shape == (8, 16, 4) and V.dtype == H.dtype
    torch.testing.assert_close(torch.linalg.matrix_norm(V) ** 2, torch.full((8,), 100.0))
    with pytest.raises(ValueError, match="antennas"):
        pre(_H(M=8, dtype=torch.complex64), 1.0, 1.0)
    bad = H.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        pre(bad, 1.0, 1.0)
    cnn = LearnedPrecoder(CNNPrecoderNet(users=4, antennas=16))
    with pytest.raises(ValueError, match="at most 4"):
        cnn(_H(K=5, M=16, dtype=torch.complex64), 1.0, 1.0)
    with pytest.raises(TypeError, match="nn.Module"):
        LearnedPrecoder(lambda H: H)


def test_ablation_without_normalisation_needs_the_snr_and_ignores_the_power_scale():
    torch.manual_seed(0)
    model = PaPPNet(4, 4, embed=16, hidden=16, normalise=False).double()
    H = _H()
    with pytest.raises(ValueError, match="snr_db"):
        model(H)
    pre = LearnedPrecoder(model)
    V = pre(H, 100.0, 1.0)
    snr = torch.full((8,), 20.0, dtype=torch.float64)
    torch.testing.assert_close(V / 10.0, model(H, snr).detach())


def test_csi_error_model_and_its_checks():
    H = _H(B=2000, K=2, M=8, dtype=torch.complex128)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(csi_error(H, 0.0, g), H)
    Hh = csi_error(H, 0.6, g)
    assert abs(float(Hh.abs().square().mean()) - float(H.abs().square().mean())) < 0.02
    err = Hh - math.sqrt(1 - 0.36) * H
    assert abs(float(err.abs().square().mean()) - 0.36) < 0.01
    with pytest.raises(ValueError, match="beta"):
        csi_error(H, 1.5)
    with pytest.raises(ValueError, match="beta"):
        csi_error(H, torch.full((2000,), -0.1, dtype=torch.float64))


def test_domain_sampler_draws_distinct_sites_and_evaluation_uses_true_channels():
    setup = PaPPSetup(source_sites=("a", "b", "c"), betas=(0.0, 0.4))
    H = _H(B=3 * 10, K=4, M=16, dtype=torch.complex64).reshape(3, 10, 4, 16)
    pool = {"H": H, "rate_ref": torch.rand(3, 10, 4, dtype=torch.float64) + 1}
    s = DomainSampler(pool, setup, domains=3)
    (Ht, Hh, snr, rate), target = s(12, torch.Generator().manual_seed(0))
    assert target is None and Ht.shape == Hh.shape == (3, 4, 4, 16)
    assert snr.shape == rate.shape == (3, 4)
    with pytest.raises(ValueError, match="domains"):
        DomainSampler(pool, setup, domains=4)
    from lib.precoding import rzf, zf

    Hs = H[0]
    rates = evaluate_precoders({"ZF": zf, "RZF": rzf}, Hs, 20.0, H_hat=Hs)
    torch.testing.assert_close(rates["ZF"], sum_rate(Hs, zf(Hs, 100.0), 1.0))


def test_count_flops_follows_the_stated_convention():
    from lib.learn import count_flops

    a = torch.randn(3, 5, dtype=torch.float64)
    b = torch.randn(5, 7, dtype=torch.float64)
    assert count_flops(torch.mm, a, b).by_kind == {"matmul": 2 * 3 * 5 * 7}
    ac, bc = a.to(torch.complex128), b.to(torch.complex128)
    assert count_flops(torch.mm, ac, bc).by_kind == {"matmul": 8 * 3 * 5 * 7}
    A = torch.eye(6, dtype=torch.complex128).expand(4, 6, 6).contiguous()
    assert count_flops(torch.linalg.eigh, A, per=4).by_kind == {"eigh": 8 * 9 * 6**3}
    assert count_flops(torch.add, a, a).total == 15
    H = rayleigh(10, 4, 16, generator=torch.Generator().manual_seed(0))
    c1 = count_flops(wmmse, H, 10.0, 1.0, iters=10, per=10)
    c2 = count_flops(wmmse, H, 10.0, 1.0, iters=20, per=10)
    assert 1.8 < c2.total / c1.total < 2.1  # linear in the iterations


def test_reliability_gate_counts_only_its_stage():
    gate = ReliabilityGate(lambda s: 1.0, patience=1, stage="student")

    class S:
        step = 5

        class stage:  # noqa: N801
            name = "teacher"

    for _ in range(3):
        gate.on_validation(S, 0.0)
    assert not gate.open
    S.stage.name = "student"
    gate.on_validation(S, 0.0)
    gate.on_validation(S, 0.0)
    assert gate.open


def test_structured_student_matches_the_optimal_beamforming_structure():
    from lib.learn import beamforming_structure

    H = _H(B=4, K=3, M=8)
    g = torch.Generator().manual_seed(5)
    lam = torch.softmax(torch.randn(4, 3, generator=g, dtype=torch.float64), -1)
    p = torch.softmax(torch.randn(4, 3, generator=g, dtype=torch.float64), -1)
    W = beamforming_structure(H, lam, p)
    Hh = H.mH  # columns h_k
    for b in range(4):
        S = torch.eye(8, dtype=H.dtype) + (Hh[b] * lam[b].to(H.dtype)) @ H[b]
        for k in range(3):
            v = torch.linalg.solve(S, Hh[b][:, k])
            v = v / torch.linalg.vector_norm(v) * p[b, k].sqrt()
            torch.testing.assert_close(W[b, :, k], v)
    torch.testing.assert_close(torch.linalg.matrix_norm(W), torch.ones(4, dtype=torch.float64))
    # as many samples as users (a (K, K) right-hand side must not become a batch of vectors)
    H4, lam4, p4 = H[:3], lam[:3], p[:3]
    torch.testing.assert_close(beamforming_structure(H4, lam4, p4)[1], W[1])


def test_phase_extraction_hybrid_is_phase_only_analog_with_equal_stream_powers():
    from lib.chapters import phase_extraction_hybrid

    H = _H(B=5, K=4, M=16)
    V = phase_extraction_hybrid(H, 8.0, 1.0)
    torch.testing.assert_close(V.abs().square().sum(-2), torch.full((5, 4), 2.0,
                                                                     dtype=torch.float64))
    A = torch.polar(torch.full((5, 16, 4), 0.25, dtype=torch.float64), torch.angle(H.mH))
    W_dp = torch.linalg.lstsq(A, V).solution  # V lies in the range of A
    torch.testing.assert_close(A @ W_dp, V)
    assert float(sum_rate(H, V, 1.0).mean()) > 0


def test_finetune_rate_improves_the_local_rate_and_leaves_the_original():
    from lib.learn import finetune_rate

    torch.manual_seed(0)
    model = PaPPNet(2, 2, embed=8, hidden=8).double()
    H = _H(B=16, K=2, M=4)
    H[:, 0] *= 0.3  # unequal users at 0 dB: equal power (the untrained head) is far off
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Hb = power_aware_input(H, 1.0, 1.0)
    with torch.no_grad():
        r0 = float(papp_rate(Hb, model(Hb)).mean())
    net = finetune_rate(model, H, [0.0], steps=60, lr=1e-2, batch=16)
    with torch.no_grad():
        r1 = float(papp_rate(Hb, net(Hb)).mean())
    r_wmmse = float(papp_rate(Hb, unit_power(wmmse(Hb, 1.0, 1.0, iters=500))).mean())
    assert r1 - r0 > 0.5 * (r_wmmse - r0) > 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    torch.testing.assert_close(net.teacher.state_dict(), model.teacher.state_dict())
    with pytest.raises(ValueError, match="snr_db"):
        finetune_rate(model, H, [])
    with pytest.raises(ValueError, match="beta"):
        finetune_rate(model, H, [20.0], beta=2.0)


def test_public_pieces_reject_wrong_input():
    from lib.chapters import phase_extraction_hybrid
    from lib.learn import beamforming_structure

    H = _H(B=4, K=3, M=8)
    ok = torch.full((4, 3), 1 / 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="lam"):
        beamforming_structure(H, torch.ones(4, 2, dtype=torch.float64), ok)
    with pytest.raises(ValueError, match="non-negative"):
        beamforming_structure(H, -ok, ok)
    with pytest.raises(ValueError, match="A must have shape"):
        beamforming_structure(H, ok, ok, A=torch.ones(4, 8, 5, dtype=torch.complex128))
    with pytest.raises((TypeError, ValueError), match="W_bar"):
        power_aware_output(torch.ones(2, 8, 3), 1.0)
    with pytest.raises(ValueError, match="inner_lr"):
        mldg_objective(nn.Linear(3, 1), _quad_loss, _batches(0, 1), _batches(1, 1), -1.0)
    with pytest.raises(ValueError, match="power"):
        phase_extraction_hybrid(H, -1.0, 1.0)


def test_domain_sampler_los_domains_draw_one_los_class_per_block():
    setup = PaPPSetup(source_sites=("a", "b", "c"), betas=(0.0,))
    N, n_los = 10, 5
    H = _H(B=3 * N, K=4, M=16, dtype=torch.complex64).reshape(3, N, 4, 16)
    # tag every sample by its index in the first entry, to read back which were drawn
    H[..., 0, 0] = torch.arange(N, dtype=torch.float32).expand(3, N)
    pool = {"H": H, "rate_ref": torch.rand(3, N, 4, dtype=torch.float64) + 1,
            "los_samples": n_los}  # fmt: skip
    s = DomainSampler(pool, setup, domains=3, los_domains=True)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(40):
        (Ht, _, _, _), _ = s(30, g)
        idx = Ht[..., 0, 0].real.long()  # (D, b)
        cls = idx < n_los
        assert (cls.all(1) | (~cls).all(1)).all()  # one class per domain block
        seen |= set(idx.flatten().tolist())
    assert seen == set(range(N))  # both classes and every sample are reachable
    with pytest.raises(ValueError, match="los_domains"):
        DomainSampler({"H": H, "rate_ref": pool["rate_ref"]}, setup, 3, los_domains=True)
    with pytest.raises(ValueError, match="los_samples"):
        DomainSampler({**pool, "los_samples": N}, setup, 3, los_domains=True)


def test_source_pool_los_domains_splits_each_site_by_line_of_sight(monkeypatch):
    from lib.chapters import papp as chapter
    from lib.chapters import source_pool
    from lib.phy import load_site

    setup = PaPPSetup(source_sites=("munich-r1",), ref_iters=5)
    site = load_site("munich-r1")
    pools = []

    class Recorder:  # the real site, recording the user pools it is sampled from
        los, n_users = site.los, site.n_users

        def sample(self, n, *a, pool=None, **kw):
            pools.append(pool)
            return site.sample(n, *a, pool=pool, **kw)

    monkeypatch.setattr(chapter, "load_site", lambda name: Recorder())
    pool = source_pool(setup, 6, "val", seed=1, los_domains=True)
    mixed = source_pool(setup, 2, "val", seed=1)
    assert pool["H"].shape[:2] == (1, 6) and pool["los_samples"] == 3
    assert "los_samples" not in mixed
    _, val = chapter.split_site_users(site, setup.val_fraction)
    los_pool, nlos_pool, mixed_pool = pools
    assert site.los[los_pool].all() and not site.los[nlos_pool].any()
    assert set(los_pool.tolist()) | set(nlos_pool.tolist()) == set(val.tolist())
    assert torch.equal(mixed_pool, val)


def test_source_pool_los_domains_rejects_a_site_without_enough_users_of_a_class(monkeypatch):
    from lib.chapters import papp as chapter
    from lib.chapters import source_pool
    from lib.phy import load_site

    site = load_site("munich-r1")

    class AllLos:  # the real site with every user marked line-of-sight
        los, n_users, sample = torch.ones_like(site.los), site.n_users, site.sample

    monkeypatch.setattr(chapter, "load_site", lambda name: AllLos())
    setup = PaPPSetup(source_sites=("munich-r1",), ref_iters=5)
    with pytest.raises(ValueError, match="0 non-line-of-sight val users"):
        source_pool(setup, 4, "val", los_domains=True)
