"""Tests of lib.phy.csi: MMSE estimation and the Type-II-like feedback quantiser."""

import math

import pytest
import torch

from lib.phy import (
    channels_from_covariance,
    dft_codebook,
    estimation_nmse_db,
    mmse_error_covariance,
    mmse_estimate,
    type2_feedback_bits,
    type2_quantize,
    upa_covariance,
)


def _channels(B=400, K=2, nh=4, nv=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    ah = (torch.rand(B, K, generator=g, dtype=torch.float64) * 2 - 1) * math.pi / 3
    av = (torch.rand(B, K, generator=g, dtype=torch.float64) * 2 - 1) * math.pi / 6
    R = upa_covariance(nh, nv, ah, av, math.radians(10))
    H = channels_from_covariance(R, generator=g)
    return H, R, g


@pytest.mark.parametrize("rho", [0.1, 1.0, 10.0])
def test_mmse_nmse_matches_error_covariance(rho):
    H, R, g = _channels(B=1500)
    Hh = mmse_estimate(H, R, rho, generator=g)
    C = mmse_error_covariance(R, rho)
    theory = 10 * math.log10(
        float(
            torch.diagonal(C, dim1=-2, dim2=-1).real.sum()
            / torch.diagonal(R, dim1=-2, dim2=-1).real.sum()
        )
    )
    assert abs(estimation_nmse_db(Hh, H) - theory) < 0.25


def test_mmse_orthogonality_principle():
    H, R, g = _channels(B=3000, K=1)
    Hh = mmse_estimate(H, R, 1.0, generator=g)
    e = (H - Hh)[:, 0]
    cross = (e[:, :, None] * Hh[:, 0, None, :].conj()).mean(0)
    assert cross.abs().max() < 0.05


def test_error_covariance_limits_and_psd():
    _, R, _ = _channels(B=3)
    C = mmse_error_covariance(R, 1.0)
    assert torch.allclose(C, C.mH, atol=1e-12)
    assert float(torch.linalg.eigvalsh(C).min()) > -1e-10
    assert torch.allclose(mmse_error_covariance(R, 1e-9), R, atol=1e-7)
    assert mmse_error_covariance(R, 1e9).abs().max() < 1e-7


def test_type2_exact_for_codeword_channel_and_monotone_in_beams():
    C, groups, _ = dft_codebook(4, 2, (2, 2))
    H = (3.0 * C[:, 5]).conj()[None, None, :]  # channel along one codeword
    fb = type2_quantize(H, C, groups, n_beams=1)
    assert torch.allclose(fb.H_hat, H, atol=1e-12)
    assert int(fb.beams[0, 0, 0]) == 5
    Hr, _, _ = _channels(B=200)
    nmse = [
        estimation_nmse_db(type2_quantize(Hr, C, groups, n_beams=L, phase_bits=4).H_hat, Hr)
        for L in (1, 2, 4, 8)
    ]
    assert all(a > b for a, b in zip(nmse, nmse[1:]))


def test_type2_bits_count():
    # 8x4 array, 4x4 oversampling, L=4, 3 amplitude + 3 phase bits:
    # 4 (group) + ceil(log2 C(32,4)=35960)=16 + 2 (strongest) + 3*6 = 40
    assert type2_feedback_bits(8, 4, (4, 4), 4, 3, 3) == 40


def test_bad_input_rejected():
    H, R, _ = _channels(B=2)
    with pytest.raises(ValueError, match="pilot_power"):
        mmse_estimate(H, R, -1.0)
    with pytest.raises(TypeError, match="H"):
        mmse_estimate(H.real, R, 1.0)
    with pytest.raises(ValueError, match="R"):
        mmse_estimate(H, R[:, :1], 1.0)
    C, groups, _ = dft_codebook(4, 2)
    with pytest.raises(ValueError, match="n_beams"):
        type2_quantize(H, C, groups, n_beams=9)
