"""lib.phy.statistics (channel statistics) and lib.chapters.raytraced_sites (the chapter's
pipeline): closed forms, invariances and bad input."""

import math

import pytest
import torch

from lib import chapters
from lib.phy import (
    beams_for_power,
    correlation_matrix_distance,
    covariance_rank,
    dft_codebook,
    load_site,
    rayleigh,
    rms_angular_spread,
    rms_delay_spread,
    significant_paths,
    site_names,
    spatial_covariance,
    upa_steering,
    user_correlation,
)

D64 = torch.float64


def test_delay_spread_closed_form_and_scale_invariance():
    p = torch.tensor([[1.0, 1.0], [1.0, 0.0], [3.0, 1.0]], dtype=D64)
    tau = torch.tensor([[0.0, 2e-7], [5e-7, 9e-7], [0.0, 4e-7]], dtype=D64)
    ds = rms_delay_spread(p, tau)
    # two equal paths T apart: T/2; one path: 0; weights 3/4, 1/4: sqrt(3/16) T
    assert torch.allclose(ds, torch.tensor([1e-7, 0.0, math.sqrt(3 / 16) * 4e-7], dtype=D64))
    assert torch.allclose(rms_delay_spread(5 * p, tau), ds)
    assert torch.allclose(rms_delay_spread(p, tau + 1e-6), ds)  # a common delay


def test_angular_spread_closed_form_and_wrap_around():
    d = 0.3
    p = torch.ones(1, 2, dtype=D64)
    asd = rms_angular_spread(p, torch.tensor([[-d, d]], dtype=D64))
    assert torch.allclose(asd, torch.tensor([math.sqrt(-2 * math.log(math.cos(d)))], dtype=D64))
    wrap = rms_angular_spread(p, torch.tensor([[math.pi - 0.01, -math.pi + 0.01]], dtype=D64))
    assert float(wrap) < 0.011  # 2 degrees apart across +-180, not 358
    one = rms_angular_spread(torch.tensor([[1.0, 0.0]], dtype=D64),
                             torch.tensor([[1.0, -2.0]], dtype=D64))  # fmt: skip
    assert float(one) == pytest.approx(0.0, abs=1e-7)


def test_significant_paths():
    p = torch.tensor([[1.0, 0.5, 0.011, 0.009, 0.0]], dtype=D64)
    assert int(significant_paths(p)) == 3  # within 20 dB: >= 0.01
    assert int(significant_paths(p, threshold_db=3.5)) == 2
    with pytest.raises(ValueError, match="threshold_db"):
        significant_paths(p, threshold_db=-1)


def test_covariance_rank_and_beams():
    a = upa_steering(4, 4, 0.25, -0.5)  # unit-norm steering vector
    H = a.conj()[None, None, :].expand(1, 3, 16)  # three users on one beam
    R = spatial_covariance(H[0])
    assert torch.allclose(R, R.mH) and int(covariance_rank(R)) == 1
    assert int(covariance_rank(torch.eye(16, dtype=torch.complex128))) == math.ceil(0.9 * 16)
    cb = dft_codebook(4, 4)[0]
    on_grid = cb[:, 5].conj()[None]  # the channel is codeword 5: one beam has all the power
    assert int(beams_for_power(on_grid, cb)) == 1
    Hr = rayleigh(200, 1, 16, generator=torch.Generator().manual_seed(0))[:, 0]
    assert float(beams_for_power(Hr, cb).double().mean()) > 8  # power spread over beams


def test_user_correlation():
    e = torch.eye(3, dtype=torch.complex128)
    assert torch.allclose(user_correlation(e[None]), torch.zeros(1, 3, dtype=D64))
    same = torch.ones(1, 2, 4, dtype=torch.complex128) * torch.tensor([1.0, 2.0])[:, None]
    assert torch.allclose(user_correlation(same), torch.ones(1, 1, dtype=D64))
    with pytest.raises(ValueError, match="at least 2 users"):
        user_correlation(torch.ones(1, 1, 4, dtype=torch.complex128))


def test_correlation_matrix_distance():
    g = torch.Generator().manual_seed(1)
    X = rayleigh(1, 10, 8, generator=g)[0]
    R = spatial_covariance(X)
    assert float(correlation_matrix_distance(R, 3.0 * R)) == pytest.approx(0.0, abs=1e-12)
    s = upa_steering(2, 4, 0.1, 0.3, normalize=False)
    d = correlation_matrix_distance(torch.eye(8, dtype=torch.complex128), torch.outer(s, s.conj()))
    assert float(d) == pytest.approx(1 - 1 / math.sqrt(8), abs=1e-12)
    Y = rayleigh(1, 10, 8, generator=g)[0]
    R2 = spatial_covariance(Y)
    assert float(correlation_matrix_distance(R, R2)) == pytest.approx(
        float(correlation_matrix_distance(R2, R)), abs=1e-12)  # fmt: skip
    e1, e2 = torch.zeros(8, 8, dtype=torch.complex128), torch.zeros(8, 8, dtype=torch.complex128)
    e1[0, 0], e2[1, 1] = 1, 1
    assert float(correlation_matrix_distance(e1, e2)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="M x M of one size"):
        correlation_matrix_distance(R, torch.eye(4, dtype=torch.complex128))


def test_path_statistics_reject_bad_input():
    with pytest.raises(ValueError, match="positive power"):
        rms_delay_spread(torch.zeros(1, 3, dtype=D64), torch.zeros(1, 3, dtype=D64))
    with pytest.raises(ValueError, match="power"):
        rms_delay_spread(-torch.ones(1, 3, dtype=D64), torch.zeros(1, 3, dtype=D64))
    with pytest.raises(ValueError, match="tau must have shape"):
        rms_delay_spread(torch.ones(1, 3, dtype=D64), torch.zeros(1, 2, dtype=D64))
    with pytest.raises(ValueError, match="fraction"):
        covariance_rank(torch.eye(3, dtype=torch.complex128), fraction=1.5)


# --------------------------------------------------------------------------- #
# the chapter pipeline
# --------------------------------------------------------------------------- #
def test_reference_channels_and_errors():
    d = chapters.reference_channels("rayleigh", 5, 3, 2, 2, seed=4)
    assert d["H"].shape == (5, 3, 4) and d["H"].dtype == torch.complex128
    assert torch.equal(d["H"], chapters.reference_channels("rayleigh", 5, 3, 2, 2, seed=4)["H"])
    with pytest.raises(ValueError, match="model must be one of"):
        chapters.reference_channels("winner", 5, 3)


def test_tr38901_reference_is_normalised_and_reproducible():
    d = chapters.reference_channels("umi", 20, 2, 2, 2, seed=3)
    assert d["H"].shape == (20, 2, 4)
    assert float((d["H"].abs() ** 2).sum(-1).mean() / 4) == pytest.approx(1.0, rel=1e-9)
    assert d["power"].shape[:2] == (20, 2) and d["tau"].shape == d["power"].shape
    d2 = chapters.reference_channels("umi", 20, 2, 2, 2, seed=3)
    assert torch.allclose(d["H"], d2["H"])


def test_precoder_sum_rates_order_and_errors():
    H = rayleigh(30, 3, 6, generator=torch.Generator().manual_seed(0))
    r = chapters.precoder_sum_rates(H, [0.0, 20.0], wmmse_iters=30)
    for i in range(2):
        assert r["zf"][i] <= r["wmmse"][i] + 1e-9 and r["wmmse"][i] <= r["dpc"][i] + 1e-6
    assert r["rzf"][1] > r["rzf"][0]
    with pytest.raises(ValueError, match="unknown methods"):
        chapters.precoder_sum_rates(H, [0.0], methods=("mmse",))


def test_beamspace_and_split():
    site = load_site(site_names()[0], dtype=torch.complex128)
    tr, te = chapters.spatial_split(site)
    assert len(set(tr.tolist()) & set(te.tolist())) == 0
    assert len(tr) + len(te) == site.n_users
    assert float(site.positions[tr, 0].max()) <= float(site.positions[te, 0].min())
    H = site.channels(tr, 4, 4)
    B = chapters.eigen_beamspace(H, 5)
    assert torch.allclose(B.mH @ B, torch.eye(5, dtype=B.dtype), atol=1e-10)
    Ht, _ = site.sample(20, 3, torch.Generator().manual_seed(0), 4, 4, pool=te)
    full = torch.linalg.qr(torch.randn(16, 16, dtype=torch.complex128))[0]
    # with all 16 dimensions the front end is a unitary rotation: RZF rate unchanged
    r_full = chapters.beamspace_sum_rate(Ht, full, 10.0)
    r_rzf = chapters.precoder_sum_rates(Ht, [10.0], methods=("rzf",))["rzf"][0]
    assert r_full == pytest.approx(r_rzf, rel=1e-9)
    with pytest.raises(ValueError, match="exceeds the 16 antennas"):
        chapters.eigen_beamspace(H, 17)
    with pytest.raises(ValueError, match="H must have"):
        chapters.eigen_beamspace(Ht, 4)  # a batch of samples, not the users of a site
    with pytest.raises(ValueError, match="B must have shape"):
        chapters.beamspace_sum_rate(Ht, B[:8], 10.0)
    with pytest.raises(TypeError, match="H must"):
        chapters.beamspace_sum_rate(Ht.real, B, 10.0)
    with pytest.raises(ValueError, match="axis must be 0"):
        chapters.spatial_split(site, axis=2)
