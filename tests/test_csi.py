"""Tests of lib.phy.csi: MMSE estimation and the Type-II-like feedback quantiser."""

import math

import pytest
import torch

from lib.phy import (
    channels_from_covariance,
    complex_normal,
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


# --------------------------------------------------------------------------- #
# Robustness (issue 10, section 5)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("zero_users", [[(0, 0)], [(0, 0), (1, 1)], "all"])
def test_type2_zero_channel_quantises_to_zero(zero_users):
    """A zero channel has no strongest coefficient to normalise by: the output is zero, not NaN,
    and the other users are quantised exactly as without it."""
    C, groups, _ = dft_codebook(4, 2, (2, 2))
    H, _, _ = _channels(B=2)
    Hz = H.clone()
    if zero_users == "all":
        Hz.zero_()
        zero_users = [(b, k) for b in range(2) for k in range(2)]
    for b, k in zero_users:
        Hz[b, k] = 0
    fb = type2_quantize(Hz, C, groups, n_beams=3)
    ref = type2_quantize(H, C, groups, n_beams=3)
    assert bool(torch.isfinite(fb.H_hat).all())
    for b in range(2):
        for k in range(2):
            if (b, k) in zero_users:
                assert bool((fb.H_hat[b, k] == 0).all()) and int(fb.group[b, k]) == 0
                assert bool((groups[fb.beams[b, k]] == 0).all())
            else:
                assert torch.equal(fb.H_hat[b, k], ref.H_hat[b, k])


def test_type2_validates_groups_and_codebook():
    H, _, _ = _channels(B=2)
    C, groups, _ = dft_codebook(4, 2, (2, 2))
    with pytest.raises(ValueError, match=r"groups must have shape \(32,\)"):
        type2_quantize(H, C, groups[:-1])
    with pytest.raises(TypeError, match="groups must be an integer tensor"):
        type2_quantize(H, C, groups.double())
    bad = groups.clone()
    bad[0] = 1  # group 0 then has N - 1 codewords
    with pytest.raises(ValueError, match="groups must hold each of 0..3 exactly N = 8 times"):
        type2_quantize(H, C, bad)
    with pytest.raises(ValueError, match=r"codebook must have shape \(8, G \* 8\)"):
        type2_quantize(H, C[:, :30], groups[:30])
    with pytest.raises(TypeError, match="H, codebook must have the same dtype"):
        type2_quantize(H, C.to(torch.complex64), groups)
    with pytest.raises(ValueError, match="amp_bits must be >= 1"):
        type2_quantize(H, C, groups, amp_bits=0)
    with pytest.raises(ValueError, match="n_beams must be <= N = 32"):
        type2_feedback_bits(8, 4, (4, 4), 33, 3, 3)
    with pytest.raises(TypeError, match="oversampling must be a pair"):
        type2_feedback_bits(8, 4, 4, 4, 3, 3)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_mmse_keeps_dtype_and_uses_complex_normal(dtype):
    """The pilot noise is lib.phy.complex_normal's draw, in the dtype of H."""
    H, R, _ = _channels(B=3)
    H, R = H.to(dtype), R.to(dtype)
    Hh = mmse_estimate(H, R, 2.0, generator=torch.Generator().manual_seed(4))
    assert Hh.dtype == dtype and Hh.shape == H.shape
    n = complex_normal(*H.shape, generator=torch.Generator().manual_seed(4), dtype=dtype)
    rho = 2.0
    lam, U = torch.linalg.eigh(R)
    shrink = (U * (lam / (lam + 1 / rho))[..., None, :].to(dtype)) @ U.mH
    ref = (shrink @ (H.conj() + n / rho**0.5)[..., None]).squeeze(-1).conj()
    tol = 1e-5 if dtype == torch.complex64 else 1e-12
    assert torch.allclose(Hh, ref, atol=tol)
    assert mmse_error_covariance(R, 2.0).dtype == dtype


@pytest.mark.parametrize("pilot", [math.nan, math.inf, 0.0, -1.0])
def test_mmse_rejects_bad_pilot_power(pilot):
    H, R, _ = _channels(B=2)
    with pytest.raises(ValueError, match="pilot_power must be"):
        mmse_estimate(H, R, pilot)
    with pytest.raises(ValueError, match="pilot_power must be"):
        mmse_error_covariance(R, pilot)


def test_mmse_rejects_mismatched_or_invalid_covariances():
    H, R, _ = _channels(B=2)
    with pytest.raises(TypeError, match="H, R must have the same dtype"):
        mmse_estimate(H, R.to(torch.complex64), 1.0)
    notpsd = R.clone()
    notpsd[0, 0] = -notpsd[0, 0]
    with pytest.raises(ValueError, match="R must be positive semidefinite"):
        mmse_estimate(H, notpsd, 1.0)
    nonherm = R.clone()
    nonherm[0, 0, 0, 1] += 0.5
    with pytest.raises(ValueError, match="R must be Hermitian"):
        mmse_error_covariance(nonherm, 1.0)


def test_estimation_nmse_edge_cases():
    H, _, _ = _channels(B=2)
    assert estimation_nmse_db(H, H) == -math.inf
    with pytest.raises(ValueError, match="H is all zero"):
        estimation_nmse_db(H, torch.zeros_like(H))
    with pytest.raises(ValueError, match="H_hat contains NaN"):
        estimation_nmse_db(H * math.nan, H)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_csi_on_cuda_matches_cpu():
    H, R, _ = _channels(B=4)
    a = mmse_estimate(H.cuda(), R.cuda(), 3.0, generator=torch.Generator().manual_seed(1))
    b = mmse_estimate(H, R, 3.0, generator=torch.Generator().manual_seed(1))
    assert a.device.type == "cuda" and torch.allclose(a.cpu(), b, atol=1e-10)
    C, groups, _ = dft_codebook(4, 2, (2, 2), device="cuda")
    fb = type2_quantize(H.cuda(), C, groups)
    assert fb.H_hat.device.type == "cuda"
