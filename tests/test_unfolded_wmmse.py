"""Tests of lib.learn.unfolded_wmmse: eq. (12), projection, Algorithm 1, training, stored sweep."""

import functools
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.chapters import unfolded_wmmse as chapter
from lib.learn import UnrolledModel, fit, train_unrolled
from lib.learn.flops import flops_rzf, flops_unfolded_wmmse, flops_wmmse, flops_zf
from lib.learn.unfolded_wmmse import (
    PGDStepSizes,
    UnfoldedWMMSE,
    make_sampler,
    per_layer_wsr,
    pgd_gradient,
    pgd_precoder,
    project_power_ball,
    train_progressive,
    truncated_wmmse_wsr,
    wsr_loss,
)
from lib.phy import rayleigh
from lib.precoding import (
    matched_filter_init,
    sum_rate,
    wmmse,
    wmmse_precoder,
    wmmse_receivers,
    wmmse_weights,
)

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
STORED = ROOT / "results" / "unfolded_wmmse" / "step_sizes.json"


def _setup(B=6, K=4, M=4, P=10.0, s2=1.0, seed=0, shrink=0.7):
    g = torch.Generator().manual_seed(seed)
    H = rayleigh(B, K, M, generator=g)
    V = matched_filter_init(H, P) * shrink
    u = wmmse_receivers(H, V, s2)
    w = wmmse_weights(H, V, u, s2)
    return H, V, u, w


def _f(H, V, u, w, s2, a):
    """The V sub-problem objective (9a) written out from the MSE (10)."""
    G = H @ V
    G2 = G.real**2 + G.imag**2
    gkk = torch.diagonal(G, dim1=-2, dim2=-1)
    e = (
        (G2 * (u.abs() ** 2)[:, :, None]).sum(-1)
        - 2 * (u.conj() * gkk).real
        + s2 * u.abs() ** 2
        + 1
    )
    return (a * (w * e - torch.log2(w))).sum(-1)


@pytest.mark.parametrize("weights", [None, torch.tensor([1.0, 0.5, 2.0, 1.5], dtype=torch.float64)])
def test_gradient_eq12_matches_autograd(weights):
    H, V, u, w = _setup()
    a = torch.ones(4, dtype=torch.float64) if weights is None else weights
    Vr = V.clone().requires_grad_(True)
    _f(H, Vr, u, w, 1.0, a).sum().backward()
    assert torch.allclose(Vr.grad, pgd_gradient(H, V, u, w, weights), atol=1e-12, rtol=0)


def _branch_projection(V, P):
    n = V.abs().square().sum(dim=(-2, -1)).sqrt()
    out = V.clone()
    for b in range(V.shape[0]):
        if n[b] ** 2 > P:
            out[b] = V[b] / n[b] * math.sqrt(P)
    return out


@settings(max_examples=40, deadline=None)
@given(scale=st.floats(0.0, 5.0), P=st.floats(0.01, 100.0), seed=st.integers(0, 2**16))
def test_relu_projection_equals_branch_form(scale, P, seed):
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(3, 4, 2, dtype=torch.complex128, generator=g) * scale
    Z = project_power_ball(V, P)
    assert torch.allclose(Z, _branch_projection(V, P), atol=1e-12, rtol=1e-12)
    assert bool((Z.abs().square().sum(dim=(-2, -1)) <= P * (1 + 1e-12)).all())
    assert torch.allclose(project_power_ball(Z, P), Z, atol=1e-12, rtol=1e-12)  # idempotent


def test_pgd_converges_to_closed_form_wmmse_update():
    """Many small PGD steps solve the convex sub-problem (9), whose solution is eq. (5c)."""
    H, V, u, w = _setup(B=4, P=10.0)
    A = (H.mH * (w * u.abs() ** 2).to(H.dtype)[:, None, :]) @ H
    lmax = torch.linalg.eigvalsh(A)[:, -1].max()
    steps = torch.full((3000,), float(0.5 / lmax), dtype=torch.float64)  # gamma < 1 / (2 lmax)
    Vp = pgd_precoder(H, V, u, w, 10.0, steps)
    Vc = wmmse_precoder(H, u, w, 10.0)
    a = torch.ones(4, dtype=torch.float64)
    f_p, f_c = _f(H, Vp, u, w, 1.0, a), _f(H, Vc, u, w, 1.0, a)
    assert bool((f_p >= f_c - 1e-9).all())  # the closed form is the minimiser
    assert torch.allclose(f_p, f_c, atol=1e-6, rtol=0)
    assert torch.allclose(Vp, Vc, atol=1e-3, rtol=0)


def test_forward_matches_manual_algorithm_1():
    H, _, _, _ = _setup(B=5)
    P, s2 = torch.full((5,), 10.0, dtype=torch.float64), 1.0
    G = torch.tensor([[0.5, 2.0, 0.3, 0.1], [0.2, 0.4, -0.1, 1.0]], dtype=torch.float64)
    model = UnfoldedWMMSE.from_step_sizes(G)
    assert isinstance(model, UnrolledModel) and model.num_layers == 2
    out = model(H, P, s2)
    assert out.shape == (2, 5, 4, 4)
    V = matched_filter_init(H, P)
    for l in range(2):
        u = wmmse_receivers(H, V, s2)
        w = wmmse_weights(H, V, u, s2)
        for k in range(4):
            V = project_power_ball(V - G[l, k] * pgd_gradient(H, V, u, w), P)
        assert torch.allclose(out[l], V, atol=1e-12, rtol=0)
    assert torch.equal(model.precode(H, P, s2), out[-1])
    assert bool((out.abs().square().sum(dim=(-2, -1)) <= 10.0 * (1 + 1e-12)).all())


def test_step_parameterisations_and_round_trip():
    m = UnfoldedWMMSE(3, 5, same_step=True)
    assert sum(p.numel() for p in m.parameters()) == 3
    assert m.step_sizes().shape == (3, 5)
    m = UnfoldedWMMSE(2, 4, log_steps=True, init_step=0.5)
    assert torch.allclose(m.step_sizes(), torch.full((2, 4), 0.5, dtype=torch.float64))
    G = torch.rand(3, 4, dtype=torch.float64) + 0.1
    for log in (False, True):
        m2 = UnfoldedWMMSE.from_step_sizes(G, log_steps=log)
        assert torch.allclose(m2.step_sizes(), G, atol=1e-14)
    with pytest.raises(ValueError, match="positive"):
        PGDStepSizes(4, -1.0, log_steps=True)
    with pytest.raises(ValueError, match="init"):
        PGDStepSizes(4, [1.0, 2.0])


def test_normalised_momentum_forward_matches_manual_loop():
    """Normalised steps gamma / tr(A) and heavy-ball momentum, written out by hand."""
    H, _, _, _ = _setup(B=5, seed=4)
    P, s2 = torch.full((5,), 100.0, dtype=torch.float64), 1.0
    G = torch.tensor([[0.5, 2.0, 0.3], [0.2, 0.4, 1.0]], dtype=torch.float64)
    Bt = torch.tensor([[0.7, -0.2], [1.3, 0.4]], dtype=torch.float64)
    model = UnfoldedWMMSE.from_step_sizes(G, betas=Bt, normalised_steps=True)
    assert model.momentum and model.normalised_steps
    assert torch.allclose(model.momentum_coeffs(), Bt)
    out = model(H, P, s2)
    V = matched_filter_init(H, P)
    for t in range(2):
        u = wmmse_receivers(H, V, s2)
        w = wmmse_weights(H, V, u, s2)
        A = (H.mH * (w * u.abs() ** 2).to(H.dtype)[:, None, :]) @ H
        tr = torch.diagonal(A, dim1=-2, dim2=-1).real.sum(-1)
        V_prev = V
        for q in range(3):
            Y = V if q == 0 else V + Bt[t, q - 1] * (V - V_prev)
            V_prev = V
            g = (G[t, q] / tr).to(H.dtype)[:, None, None]
            V = project_power_ball(Y - g * pgd_gradient(H, Y, u, w, A=A), P)
        assert torch.allclose(out[t], V, atol=1e-12, rtol=0)
    # zero momentum is plain PGD; the flag without betas changes nothing else
    plain = UnfoldedWMMSE.from_step_sizes(G, betas=torch.zeros(2, 2, dtype=torch.float64))
    assert torch.allclose(plain(H, P, s2), UnfoldedWMMSE.from_step_sizes(G)(H, P, s2), atol=1e-13)
    with pytest.raises(ValueError, match="betas"):
        UnfoldedWMMSE.from_step_sizes(G, betas=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="momentum_init"):
        PGDStepSizes(3, 1.0, momentum=True, momentum_init=[0.1, 0.2, 0.3])


@pytest.mark.parametrize("c", [0.01, 10.0, 1000.0])
def test_normalised_steps_are_scale_free(c):
    """P -> c P, sigma^2 -> c sigma^2 scales every layer's V by sqrt(c) exactly when the steps
    are divided by tr(A) (A scales like 1/c), so the WSR is unchanged; fixed steps are not."""
    H, _, _, _ = _setup(B=8, seed=5)
    G = torch.tensor([[0.5, 2.0, 0.3, 0.9]] * 3, dtype=torch.float64)
    for normalised in (True, False):
        m = UnfoldedWMMSE.from_step_sizes(G, normalised_steps=normalised)
        r1 = per_layer_wsr(m, H, 100.0, 1.0)
        r2 = per_layer_wsr(m, H, 100.0 * c, c)
        same = torch.allclose(r1, r2, atol=1e-9, rtol=0)
        assert same if normalised else not same


def test_momentum_model_trains_and_round_trips():
    torch.manual_seed(0)
    m = UnfoldedWMMSE(2, 3, init_step=0.5, log_steps=True, normalised_steps=True, momentum=True)
    assert sum(p.numel() for p in m.parameters()) == 2 * 3 + 2 * 2
    sampler = make_sampler(4, 4, 20.0)
    (H, P, s2), _ = sampler(500, torch.Generator().manual_seed(9))
    before = per_layer_wsr(m, H, P, s2)[-1].mean()
    loss = functools.partial(wsr_loss, last_only=True)
    fit(m, loss, sampler, steps=60, lr=3e-2, batch_size=100, progress=False)
    after = per_layer_wsr(m, H, P, s2)[-1].mean()
    assert after > before + 0.3  # 20 dB: the untrained steps are far from good
    assert bool((m.momentum_coeffs() != 0).any())
    m2 = UnfoldedWMMSE.from_step_sizes(
        m.step_sizes(), betas=m.momentum_coeffs(), normalised_steps=True
    )
    assert torch.allclose(m2(H, P, s2), m(H, P, s2), atol=1e-12)
    m3 = m.extend_pgd(1)
    assert m3.momentum_coeffs().shape == (2, 3) and bool((m3.momentum_coeffs()[:, -1] == 0).all())


def test_extend_pgd_warm_start():
    G = torch.tensor([[0.5, 2.0, 0.3, 0.1], [0.2, 0.4, -0.1, 1.0]], dtype=torch.float64)
    m = UnfoldedWMMSE.from_step_sizes(G).extend_pgd(2)
    assert m.pgd_steps == 6
    assert torch.allclose(m.step_sizes()[:, :4], G)
    assert torch.allclose(m.step_sizes()[:, 4:], G[:, -1:].expand(2, 2))
    with pytest.raises(ValueError, match="same_step"):
        UnfoldedWMMSE(2, 4, same_step=True).extend_pgd()


def test_loss_is_minus_sum_over_layers_of_wsr():
    (H, P, s2), target = make_sampler(4, 4, 10.0)(8, torch.Generator().manual_seed(3))
    m = UnfoldedWMMSE(3, 4)
    out = m(H, P, s2)
    ref = -sum(sum_rate(H, out[l], s2).mean() for l in range(3))
    assert torch.allclose(wsr_loss(out, target), ref, atol=1e-12)
    assert torch.allclose(per_layer_wsr(m, H, P, s2).sum(0).mean(), -ref, atol=1e-12)
    last = wsr_loss(out, target, last_only=True)
    assert torch.allclose(last, -sum_rate(H, out[-1], s2).mean(), atol=1e-12)


def test_truncated_wmmse_matches_lib_downlink():
    H, _, _, _ = _setup(B=7)
    tr = truncated_wmmse_wsr(H, 10.0, 1.0, 3)
    assert tr.shape == (3, 7)
    assert torch.allclose(tr[2], sum_rate(H, wmmse(H, 10.0, 1.0, 3), 1.0), atol=1e-12)
    assert bool((tr[1:] >= tr[:-1] - 1e-9).all())  # WMMSE is monotone


def test_training_improves_wsr_and_progressive_extension():
    sampler = make_sampler(4, 4, 10.0)
    m = UnfoldedWMMSE(1, 4)
    H = rayleigh(2000, 4, 4, generator=torch.Generator().manual_seed(11))
    before = float(per_layer_wsr(m, H, 10.0, 1.0).mean())
    h = train_unrolled(
        m, sampler, wsr_loss, finetune_steps=60, lr=3e-2, batch_size=64, progress=False
    )
    after = float(per_layer_wsr(m, H, 10.0, 1.0).mean())
    assert len(h) == 60 and after > before + 0.3
    seen = []
    m2, hists = train_progressive(
        m,
        6,
        sampler,
        steps_per_stage=5,
        lr=1e-2,
        batch_size=32,
        callback=lambda mm, h: seen.append(mm.pgd_steps),
    )
    assert m2.pgd_steps == 6 and seen == [5, 6] and len(hists) == 2


def test_validation():
    H, V, u, w = _setup()
    with pytest.raises(TypeError, match="H"):
        pgd_gradient(H.real, V, u, w)
    with pytest.raises(ValueError, match="V"):
        pgd_gradient(H, V[:, :3], u, w)
    with pytest.raises(ValueError, match="step_sizes"):
        pgd_precoder(H, V, u, w, 1.0, torch.zeros(0, dtype=torch.float64))
    with pytest.raises(ValueError, match="power"):
        project_power_ball(V, -1.0)
    with pytest.raises(ValueError, match="layers"):
        UnfoldedWMMSE(0)
    with pytest.raises(ValueError, match="gammas"):
        UnfoldedWMMSE.from_step_sizes(torch.ones(3))


def test_flop_counts():
    # unfolded: linear in L and (affinely) in K; WMMSE: linear in iterations, cubic in M
    assert flops_unfolded_wmmse(4, 4, 4, 4) == 4 * flops_unfolded_wmmse(4, 4, 1, 4)
    d1 = flops_unfolded_wmmse(4, 4, 1, 5) - flops_unfolded_wmmse(4, 4, 1, 4)
    d2 = flops_unfolded_wmmse(4, 4, 1, 9) - flops_unfolded_wmmse(4, 4, 1, 8)
    assert d1 == d2 > 0
    assert flops_wmmse(4, 4, 3) == 3 * flops_wmmse(4, 4, 1)
    big = flops_wmmse(64, 4, 1) / flops_wmmse(32, 4, 1)
    assert 7 < big <= 8.5  # O(M^3)
    big_u = flops_unfolded_wmmse(64, 4, 1, 4) / flops_unfolded_wmmse(32, 4, 1, 4)
    assert 3 < big_u <= 4.5  # O(K M^2)
    assert flops_unfolded_wmmse(4, 4, 1, 4) < flops_wmmse(4, 4, 1)
    assert 0 < flops_zf(4, 4) < flops_rzf(4, 4) < flops_wmmse(4, 4, 1)
    # normalisation: tr(A) (M adds), a reciprocal, Q products; momentum 6 M K per step q >= 2
    base = flops_unfolded_wmmse(4, 4, 1, 7)
    assert flops_unfolded_wmmse(4, 4, 1, 7, normalised_steps=True) == base + 4 + 1 + 7
    assert flops_unfolded_wmmse(4, 4, 1, 7, momentum=True) == base + 6 * 6 * 16
    accel = functools.partial(flops_unfolded_wmmse, normalised_steps=True, momentum=True)
    assert accel(4, 4, 1, 7) <= flops_wmmse(4, 4, 1) < accel(4, 4, 1, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_forward_matches_cpu():
    H, _, _, _ = _setup(B=3)
    m = UnfoldedWMMSE(2, 4)
    out = m(H, 10.0, 1.0)
    out_c = m.cuda()(H.cuda(), 10.0, 1.0).cpu()
    assert torch.allclose(out, out_c, atol=1e-10)


# ---- the stored sweep -------------------------------------------------------------------- #
def _stored():
    if not STORED.exists():
        pytest.skip("results/unfolded_wmmse/step_sizes.json not present")
    return json.loads(STORED.read_text())["models"]


@pytest.mark.parametrize(
    "name",
    [
        "snr10_L1_K4_free",
        "snr10_L4_K4_free",
        "snr20_L2_K4_log",
        "snr20_L3_K8_free",
        "snr5_L1_K4_same-sweep",
        "snr10_L3_K7_accel",
        "snr20_L6_K7_accel",
    ],
)
def test_stored_step_sizes_reproduce_stored_wsr(name):
    models = _stored()
    if name not in models:
        pytest.skip(f"{name} not in the stored sweep")
    e = models[name]
    snr, L, K, variant = e["snr_db"], e["L"], e["K"], name.split("_", 3)[3]
    assert chapter.model_key(snr, L, K, variant) == name
    model = chapter.stored_model(snr, L, K, variant)
    assert torch.allclose(model.step_sizes(), torch.tensor(e["step_sizes"], dtype=torch.float64))
    P = chapter.power_for_snr(e["snr_db"])
    # 1) fresh channels (not the stored test set): within 4 combined standard errors
    H = rayleigh(3000, 4, 4, generator=torch.Generator().manual_seed(424242))
    r = per_layer_wsr(model, H, P, 1.0)[-1]
    se = math.hypot(float(r.std()) / math.sqrt(3000), e["test"]["wsr_se"])
    assert abs(float(r.mean()) - e["test"]["wsr_per_layer"][-1]) < 4 * se
    # 2) the stored gain over truncated WMMSE keeps its sign on fresh channels when it is clear
    tr = truncated_wmmse_wsr(H, P, 1.0, e["L"])[-1]
    d, dse = float((r - tr).mean()), float((r - tr).std()) / math.sqrt(3000)
    stored_d = e["test"]["diff_vs_trunc"]
    assert abs(d - stored_d) < 4 * math.hypot(dse, e["test"]["diff_se_paired"])


# ---- weighted sum rate, validation once per forward pass ---------------------------------- #
def test_weighted_model_is_trained_on_its_weighted_sum_rate():
    """The loss reads the model's priorities: a weighted model's first training loss is minus
    the weighted WSR summed over layers (it was the unweighted one: -9.4 instead of -16.3)."""
    w = torch.tensor([4.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    sampler = make_sampler(4, 4, 10.0)
    model = UnfoldedWMMSE(2, 4, weights=w)
    (H, P, s2), _ = sampler(200, torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model(H, P, s2)
    weighted = -sum(sum_rate(H, out[t], s2, w).mean() for t in range(2)).item()
    unweighted = -sum(sum_rate(H, out[t], s2).mean() for t in range(2)).item()
    assert weighted < unweighted - 3
    for train in (
        lambda: train_unrolled(model, sampler, wsr_loss, finetune_steps=1, batch_size=200,
                               lr=1e-9, seed=5, progress=False),
        lambda: fit(model, wsr_loss, sampler, steps=1, batch_size=200, lr=1e-9, seed=5,
                    progress=False),
    ):  # fmt: skip
        h = train()
        assert h.loss[0] == pytest.approx(weighted, abs=1e-6)
    assert per_layer_wsr(model, H, P, s2).mean(1).sum().item() == pytest.approx(-weighted, abs=1e-5)
    assert "weights" not in model.state_dict()  # a non-persistent buffer
    target = (H, s2)
    with pytest.raises(ValueError, match="differ"):
        wsr_loss(out, target, torch.ones(4, dtype=torch.float64), model=model)


def test_loss_and_model_reject_mis_shaped_inputs():
    (H, P, s2), target = make_sampler(4, 4, 10.0)(6, torch.Generator().manual_seed(0))
    m = UnfoldedWMMSE(2, 4)
    out = m(H, P, s2)
    with pytest.raises(ValueError, match="stacked per-layer"):
        wsr_loss(out[-1], target)  # the last layer only, not the stack
    with pytest.raises(ValueError, match="users"):
        UnfoldedWMMSE(2, 4, weights=torch.ones(3, dtype=torch.float64))(H, P, s2)
    with pytest.raises(ValueError, match="weights"):
        UnfoldedWMMSE(2, 4, weights=torch.tensor([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="power"):
        m(H, -1.0, s2)
    with pytest.raises(ValueError, match="noise_var"):
        m(H, P, float("nan"))
    with pytest.raises(ValueError, match="H"):
        m(H * float("nan"), P, s2)
    with pytest.raises(ValueError, match="init"):
        PGDStepSizes(4, float("inf"))


def test_inputs_are_checked_once_not_per_layer(monkeypatch):
    """Host synchronisations (tensor -> bool / Python number) do not grow with the depth."""
    counts = {"n": 0}
    orig_bool, orig_item = torch.Tensor.__bool__, torch.Tensor.item

    def counting_bool(self):
        counts["n"] += 1
        return orig_bool(self)

    def counting_item(self):
        counts["n"] += 1
        return orig_item(self)

    H, _, _, _ = _setup(B=8)
    monkeypatch.setattr(torch.Tensor, "__bool__", counting_bool)
    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    syncs = []
    for T in (1, 5):
        model = UnfoldedWMMSE(T, 4, weights=torch.ones(4, dtype=torch.float64))
        counts["n"] = 0
        with torch.no_grad():
            model(H, 10.0, 1.0)
        syncs.append(counts["n"])
    assert syncs[0] == syncs[1] and syncs[0] <= 6


def test_chapter_test_set_and_stored_sweep_helpers(tmp_path):
    H = chapter.test_channels(10.0, 50)
    ref = rayleigh(50, 4, 4, generator=torch.Generator().manual_seed(1100))
    assert torch.equal(H, ref)  # the stored evaluation's channels
    assert torch.equal(chapter.test_channels(10.0, 50), H) and H.shape == (50, 4, 4)
    assert chapter.power_for_snr(20.0) == pytest.approx(100.0)
    assert chapter.model_key(7.5, 3, 5, "log") == "snr7.5_L3_K5_log"
    with pytest.raises(FileNotFoundError, match="train_unfolded_wmmse"):
        chapter.stored_sweep(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        chapter.stored_sweep(bad)
    sweep = {"models": {"snr10_L1_K4_same": {"step_sizes": [[0.5, 0.5, 0.5, 0.5]],
                                              "same_step": True}}}  # fmt: skip
    m = chapter.stored_model(10.0, 1, 4, "same", sweep=sweep)
    assert m.same_step and count_params(m) == 1
    with pytest.raises(KeyError, match="snr10_L2_K4_same"):
        chapter.stored_model(10.0, 2, 4, "same", sweep=sweep)
    # the validation set: fixed, and not the test set
    Hv = chapter.validation_channels(10.0, 50)
    assert torch.equal(Hv, chapter.validation_channels(10.0, 50)) and not torch.equal(Hv, H)
    with pytest.raises(ValueError, match="snr_db"):
        chapter.validation_channels(float("nan"))
    # an accelerated entry is rebuilt with its momentum and normalised steps
    acc = {"step_sizes": [[0.5, 1.0, 0.2]], "momentum": [[0.3, 1.2]], "same_step": False,
           "normalised_steps": True}  # fmt: skip
    m = chapter.stored_model(10.0, 1, 3, "accel", sweep={"models": {"snr10_L1_K3_accel": acc}})
    assert m.normalised_steps and torch.allclose(
        m.momentum_coeffs(), torch.tensor([[0.3, 1.2]], dtype=torch.float64)
    )


def count_params(m):
    return sum(p.numel() for p in m.parameters())
