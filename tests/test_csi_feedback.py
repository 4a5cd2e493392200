"""CSI feedback building blocks: the angular-delay transform pair and CsiNet."""

import math

import pytest
import torch

from lib.learn import CsiNet, codeword_size
from lib.phy import (
    angular_delay,
    complexify_image,
    feedback_nmse_db,
    from_angular_delay,
    realify_image,
    upa_steering,
)


def _channels(B=5, Nc=32, M=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, Nc, M, dtype=torch.complex128, generator=g)


def test_transform_is_unitary_and_inverts():
    H = _channels()
    X = angular_delay(H, 4, 4)
    assert X.shape == (5, 16, 32)
    assert torch.allclose(X.abs().pow(2).sum((-1, -2)), H.abs().pow(2).sum((-1, -2)))
    assert torch.allclose(from_angular_delay(X, 4, 4, 32), H)


def test_single_path_lands_on_its_beam_and_tap():
    # one path on the DFT grid: beam (1, 2) of a 4 x 4 UPA, delay of 3 taps
    n_h, n_v, Nc, tap = 4, 4, 32, 3
    u_h = torch.tensor(2 * 1 / n_h)
    u_v = torch.tensor(2 * 2 / n_v)
    a = upa_steering(n_h, n_v, u_h, u_v).reshape(-1).to(torch.complex128)
    n = torch.arange(Nc, dtype=torch.float64)
    ramp = torch.polar(torch.ones(Nc, dtype=torch.float64), -2 * math.pi * n * tap / Nc)
    H = (ramp[:, None] * a.conj()[None, :])[None]  # rows h^H per subcarrier
    X = angular_delay(H, n_h, n_v)
    energy = X.abs().pow(2)[0]
    m, t = divmod(int(energy.argmax()), Nc)
    assert t == tap
    assert float(energy.max() / energy.sum()) > 1 - 1e-9
    assert m == int(X.abs()[0, :, tap].argmax())


def test_truncated_nmse_equals_full_channel_nmse():
    H = _channels(seed=1)
    T = 8
    X = angular_delay(H, 4, 4, T)
    full = angular_delay(H, 4, 4)
    tail = full.abs().pow(2).sum((-1, -2)) - X.abs().pow(2).sum((-1, -2))
    g = torch.Generator().manual_seed(2)
    X_hat = X + 0.3 * torch.randn(X.shape, dtype=X.dtype, generator=g)
    H_hat = from_angular_delay(X_hat, 4, 4, 32)
    direct = 10 * math.log10(float((H - H_hat).abs().pow(2).sum() / H.abs().pow(2).sum()))
    assert feedback_nmse_db(X_hat, X, tail) == pytest.approx(direct, abs=1e-9)
    per = feedback_nmse_db(X_hat, X, tail, per_sample=True)
    assert per.shape == (5,)
    # a perfect reconstruction of the kept taps leaves exactly the truncation floor
    floor = 10 * math.log10(float(tail.sum() / (tail + X.abs().pow(2).sum((-1, -2))).sum()))
    assert feedback_nmse_db(X, X, tail) == pytest.approx(floor)


def test_realify_round_trip():
    X = angular_delay(_channels(), 4, 4, 8)
    Z = realify_image(X)
    assert Z.shape == (5, 2, 16, 8) and not Z.is_complex()
    assert torch.equal(complexify_image(Z), X)


def test_feedback_input_errors():
    H = _channels()
    with pytest.raises(ValueError, match="n_h \\* n_v"):
        angular_delay(H, 4, 3)
    with pytest.raises(ValueError, match="n_taps"):
        angular_delay(H, 4, 4, 33)
    with pytest.raises(TypeError):
        angular_delay(H.real, 4, 4)
    X = angular_delay(H, 4, 4, 8)
    with pytest.raises(ValueError, match="n_subcarriers"):
        from_angular_delay(X, 4, 4, 4)
    bad = X.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError):
        feedback_nmse_db(bad, X)
    with pytest.raises(ValueError, match="tail"):
        feedback_nmse_db(X, X, -torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="all-zero"):
        feedback_nmse_db(X, torch.zeros_like(X))
    with pytest.raises(ValueError, match="Z must have shape"):
        complexify_image(torch.zeros(5, 3, 16, 8))


def test_codeword_size():
    assert codeword_size(1 / 4, 64, 16) == 512
    assert codeword_size(1 / 32, 64, 16) == 64
    with pytest.raises(ValueError, match="positive integer"):
        codeword_size(1 / 3, 64, 16)
    with pytest.raises(ValueError, match="ratio"):
        codeword_size(0.0, 64, 16)
    with pytest.raises(ValueError, match="ratio"):
        codeword_size(1.5, 64, 16)


def test_csinet_shapes_halves_and_checks():
    torch.manual_seed(0)
    net = CsiNet(1 / 16, 16, 8).eval()
    assert net.m == 16
    Z = torch.randn(3, 2, 16, 8)
    out = net(Z)
    assert out.shape == Z.shape
    s = net.encode(Z)
    assert s.shape == (3, 16)
    assert torch.allclose(net.decode(s), out)
    with pytest.raises(ValueError, match="Z"):
        net(torch.randn(3, 2, 16, 4))  # an image size the model was not built for
    with pytest.raises(ValueError, match="s"):
        net.decode(torch.randn(3, 32))  # a codeword of another compression ratio
    with pytest.raises(TypeError):
        net(torch.randn(3, 2, 16, 8, dtype=torch.complex64))


def test_csinet_learns_a_low_rank_image_family():
    # images spanned by 4 fixed patterns are compressible to 16 reals: training lowers the
    # NMSE far below that of the untrained network
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(4, 2 * 16 * 8, generator=g)

    def batch(n):
        return (torch.randn(n, 4, generator=g) @ basis).view(n, 2, 16, 8)

    torch.manual_seed(0)
    net = CsiNet(1 / 16, 16, 8)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    Zv = batch(256)

    def nmse():
        net.eval()
        with torch.no_grad():
            e = float((net(Zv) - Zv).pow(2).sum() / Zv.pow(2).sum())
        net.train()
        return e

    before = nmse()
    for _ in range(300):
        Z = batch(64)
        loss = (net(Z) - Z).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = nmse()
    assert after < 0.1 * before


# --------------------------------------------------------------------------- #
# ray-traced feedback images
# --------------------------------------------------------------------------- #
def _users(name, n=120):
    return {name: torch.arange(n)}


def test_site_images_unit_energy_and_truncation_floor():
    from lib.chapters import FeedbackSetup, site_feedback_images

    s = FeedbackSetup()
    assert s.tap_s == pytest.approx(1 / (256 * 30e3))
    assert round(s.tap_s * 1e9) == 130  # the docstring's default tap
    g = torch.Generator().manual_seed(0)
    d = site_feedback_images("munich-r1", users=_users("munich-r1"), generator=g)
    X, tail = d["X"], d["tail"]
    assert X.shape == (120, 64, 16) and X.dtype == torch.complex64
    total = X.abs().pow(2).sum((-1, -2)).double() + tail.double()
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    # ray-traced channels are compact in delay: 16 of 256 taps keep about 99 % of the energy
    floor = feedback_nmse_db(X, X, tail)
    assert -21 < floor < -17.5  # -19.2 dB measured for these users
    # without the timing offset the first path's leakage to negative delays wraps away
    s0 = FeedbackSetup(timing_offset=0.0)
    g = torch.Generator().manual_seed(0)
    d0 = site_feedback_images("munich-r1", s0, users=_users("munich-r1"), generator=g)
    assert feedback_nmse_db(d0["X"], d0["X"], d0["tail"]) > floor + 1
    assert torch.equal(d["X_obs"], X)


def test_site_images_draws_paths_and_noise():
    from lib.chapters import site_feedback_images

    g = torch.Generator().manual_seed(1)
    d = site_feedback_images("munich-r1", users=_users("munich-r1", 40), draws=2,
                             generator=g)  # fmt: skip
    assert d["X"].shape[0] == 80
    # two draws of one user differ only in path phases: same total path power
    assert not torch.allclose(d["X"][:40], d["X"][40:])
    one = site_feedback_images("munich-r1", users=_users("munich-r1", 40), paths=1,
                               generator=g)  # fmt: skip
    # one path: its energy sits in few angular bins (the strongest bin holds a large share)
    share = one["X"].abs().pow(2).flatten(1).max(1).values / (1 - one["tail"])
    share_all = d["X"].abs().pow(2).flatten(1).max(1).values / (1 - d["tail"])
    assert float(share.median()) > float(share_all.median())
    # white observation noise: only T / N_c of it survives the truncation
    noisy = site_feedback_images("munich-r1", users=_users("munich-r1", 40), snr_db=10.0,
                                 generator=g)  # fmt: skip
    err = feedback_nmse_db(noisy["X_obs"], noisy["X"], noisy["tail"] * 0)
    expected = -10.0 + 10 * math.log10(16 / 256)
    assert err == pytest.approx(expected, abs=1.0)
    with pytest.raises(ValueError, match="names"):
        site_feedback_images([])
    with pytest.raises(ValueError, match="draws"):
        site_feedback_images("munich-r1", draws=0)
    with pytest.raises(ValueError, match="no entry"):
        site_feedback_images("munich-r1", users={"munich-r2": torch.arange(3)})
    with pytest.raises(ValueError, match="indices"):
        site_feedback_images("munich-r1", users={"munich-r1": torch.tensor([10**6])})
    with pytest.raises(TypeError):
        site_feedback_images("munich-r1", users=_users("munich-r1", 2), dtype=torch.float32)
    with pytest.raises(TypeError, match="FeedbackSetup"):
        site_feedback_images("munich-r1", {"n_taps": 16})


def test_feedback_setup_checks():
    from lib.chapters import FeedbackSetup

    with pytest.raises(ValueError, match="n_taps"):
        FeedbackSetup(n_subcarriers=8, n_taps=16)
    with pytest.raises(ValueError, match="timing_offset"):
        FeedbackSetup(timing_offset=-1.0)
    with pytest.raises(ValueError, match="spacing"):
        FeedbackSetup(spacing=0.0)


def test_type2_subband_feedback():
    from lib.chapters import FeedbackSetup, site_feedback_images, type2_subband_feedback
    from lib.phy import type2_feedback_bits

    g = torch.Generator().manual_seed(3)
    d = site_feedback_images("munich-r1", users=_users("munich-r1", 60), channels=True,
                             generator=g)  # fmt: skip
    H = d["H"]
    assert H.shape == (60, 256, 64)
    # the images are those of the returned channels
    assert torch.allclose(angular_delay(H, 8, 8, 16), d["X"], atol=1e-5)
    errs = []
    for L in (1, 4, 8):
        H_hat, bits = type2_subband_feedback(H, n_beams=L)
        assert bits == 16 * type2_feedback_bits(8, 8, (4, 4), L, 3, 3)
        assert torch.isfinite(H_hat).all()
        errs.append(float((H - H_hat).abs().pow(2).sum() / H.abs().pow(2).sum()))
    assert errs[0] > errs[1] > errs[2]  # more beams, better reconstruction
    with pytest.raises(ValueError, match="n_subbands"):
        type2_subband_feedback(H, n_subbands=7)
    with pytest.raises(ValueError, match="antennas"):
        type2_subband_feedback(H[..., :16], FeedbackSetup())


def test_source_images_split_users_and_reject_a_bad_part():
    from lib.chapters import FEEDBACK_SOURCE_SITES, feedback_source_images
    from lib.chapters.papp import split_site_users
    from lib.phy import load_site

    va = feedback_source_images("val", draws=1, seed=3)
    n_val = sum(len(split_site_users(load_site(n), 0.2, seed=0)[1])
                for n in FEEDBACK_SOURCE_SITES)  # fmt: skip
    assert va["X"].shape[0] == n_val
    assert set(va["site"].tolist()) == set(range(len(FEEDBACK_SOURCE_SITES)))
    again = feedback_source_images("val", draws=1, seed=3)
    assert torch.equal(va["X"], again["X"])
    with pytest.raises(ValueError, match="part"):
        feedback_source_images("test")


def test_cs_feedback_round_trip_and_amp_decoding():
    from lib.chapters import CSFeedback, FeedbackSetup, site_feedback_images
    from lib.sparse import amp

    setup = FeedbackSetup()
    d = site_feedback_images("munich-r1", setup, users={"munich-r1": torch.arange(60)},
                             generator=torch.Generator().manual_seed(0))  # fmt: skip
    fb = CSFeedback(0.25, setup, dtype=torch.float64)
    assert fb.A.shape == (512, 2048)
    x = fb.vector(d["X"].to(torch.complex128))
    assert torch.allclose(fb.image(x), d["X"].to(torch.complex128))
    # unit-energy channels: the vector has mean energy (1 - tail) per entry
    assert torch.allclose(x.pow(2).mean(1), (1 - d["tail"]).double(), atol=1e-5)
    y = fb.encode(d["X"].to(torch.complex128))
    assert y.shape == (60, 512)
    x_hat = amp(y, fb.A, 30, denoiser="bg", p=0.1, signal_var=10.0)
    assert feedback_nmse_db(fb.image(x_hat), d["X"].to(torch.complex128), d["tail"].double()) < -8
    assert torch.equal(CSFeedback(0.25, setup, dtype=torch.float64).A, fb.A)  # same seed
    with pytest.raises(ValueError, match="ratio"):
        CSFeedback(0.3, setup)
    with pytest.raises(TypeError, match="setup"):
        CSFeedback(0.25, "default")
    with pytest.raises(ValueError, match="X"):
        fb.vector(d["X"][:, :8])


def test_energy_concentration_by_hand_and_errors():
    from lib.chapters import energy_concentration

    X = torch.tensor([[3.0, 1.0, 0.0, 0.0]], dtype=torch.complex64)  # energies 9, 1, 0, 0
    assert abs(energy_concentration(X, 0.25) - 0.9) < 1e-6
    assert abs(energy_concentration(X, 0.5) - 1.0) < 1e-6
    with pytest.raises(ValueError, match="q must be"):
        energy_concentration(X, 0.0)
    with pytest.raises(ValueError, match="positive energy"):
        energy_concentration(torch.zeros(1, 4, dtype=torch.complex64))


def test_feedback_scores_reject_mismatched_channels():
    from lib.chapters import feedback_nmse, feedback_sum_rate

    H = torch.randn(8, 16, 4, dtype=torch.complex64)
    with pytest.raises(ValueError, match="H_hat"):
        feedback_nmse(H[:, :8], H)
    with pytest.raises(ValueError, match="H_hat"):
        feedback_sum_rate(H[:4], H)
    with pytest.raises(ValueError, match="stride"):
        feedback_sum_rate(H, H, stride=0)
