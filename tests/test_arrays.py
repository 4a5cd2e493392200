"""Tests of lib.phy.arrays: UPA steering, local-scattering covariances, DFT codebooks."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.phy import (
    beam_gain,
    channels,
    channels_from_covariance,
    dft_codebook,
    kron_covariance,
    local_scattering_covariance,
    ula_response,
    upa_covariance,
    upa_steering,
)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 12),
    angle=st.floats(-1.4, 1.4),
    spread_deg=st.floats(0.5, 40.0),
    pas=st.sampled_from(["gaussian", "laplacian"]),
)
def test_covariance_hermitian_psd_unit_diagonal(n, angle, spread_deg, pas):
    R = local_scattering_covariance(n, angle, math.radians(spread_deg), pas=pas)
    assert R.shape == (n, n)
    assert torch.allclose(R, R.mH, atol=1e-12)
    assert torch.allclose(torch.diagonal(R).real, torch.ones(n, dtype=torch.float64), atol=1e-12)
    assert float(torch.linalg.eigvalsh(R).min()) > -1e-10


def test_small_spread_matches_closed_form_approximation():
    # Gaussian PAS, small spread: [R]_{m,l} ~ exp(j pi d sin(t)) exp(-(pi d cos(t) s)^2 / 2)
    n, t, s = 8, 0.4, math.radians(2.0)
    R = local_scattering_covariance(n, t, s, n_quad=401)
    d = torch.arange(n, dtype=torch.float64)
    approx = torch.polar(
        torch.exp(-0.5 * (math.pi * d * math.cos(t) * s) ** 2), math.pi * d * math.sin(t)
    )
    assert torch.allclose(R[:, 0], approx, atol=5e-3)


def test_spread_to_zero_gives_rank_one():
    R = local_scattering_covariance(6, 0.3, 1e-6)
    a = ula_response(6, math.sin(0.3))
    assert torch.allclose(R, a[:, None] * a.conj()[None, :], atol=1e-6)


def test_kron_and_upa_covariance():
    Rh = local_scattering_covariance(4, torch.tensor([0.1, -0.3]), 0.2)
    Rv = local_scattering_covariance(3, torch.tensor([0.2, 0.5]), 0.2, pas="laplacian")
    R = kron_covariance(Rh, Rv)
    assert R.shape == (2, 12, 12)
    assert torch.allclose(R[1], torch.kron(Rh[1], Rv[1]))
    R2 = upa_covariance(
        4, 3, torch.tensor([0.1, -0.3], dtype=torch.float64), torch.tensor([0.2, 0.5]).double(), 0.2
    )
    assert torch.allclose(
        torch.diagonal(R2, dim1=-2, dim2=-1).real.sum(-1),
        torch.full((2,), 12.0, dtype=torch.float64),
    )


def test_rayleigh_sample_covariance():
    g = torch.Generator().manual_seed(1)
    R = upa_covariance(3, 2, 0.3, -0.2, math.radians(10))
    h = channels.correlated_rayleigh(40000, R, users=1, generator=g)[:, 0, :].conj()  # column h
    S = (h[:, :, None] * h[:, None, :].conj()).mean(0)
    assert (S - R).abs().max() < 0.03
    Rs = channels.psd_sqrt(R)
    assert torch.allclose(Rs @ Rs, R, atol=1e-10)


def test_channels_from_covariance_one_draw_per_covariance():
    g = torch.Generator().manual_seed(2)
    u = torch.tensor([[0.3, -0.4], [0.0, 0.6]], dtype=torch.float64)  # (instances, users)
    R = upa_covariance(3, 2, u, torch.zeros_like(u), math.radians(10)).expand(5000, 2, 2, 6, 6)
    H = channels_from_covariance(R, generator=g)
    assert H.shape == (5000, 2, 2, 6)
    S = torch.einsum("bikn,bikm->ikmn", H, H.conj()) / H.shape[0]  # E[h h^H], h = conj(row)
    assert (S - R[0]).abs().max() < 0.1
    with pytest.raises(ValueError, match="R"):
        channels_from_covariance(torch.zeros(2, 3, 4, dtype=torch.complex128))


def test_codebook_groups_orthonormal():
    C, groups, u = dft_codebook(4, 2, (2, 3))
    assert C.shape == (8, 48) and u.shape == (48, 2)
    assert torch.allclose(C.abs().pow(2).sum(0), torch.ones(48, dtype=torch.float64))
    for q in range(6):
        Cq = C[:, groups == q]
        assert Cq.shape == (8, 8)
        assert torch.allclose(Cq.mH @ Cq, torch.eye(8, dtype=C.dtype), atol=1e-12)
    # codewords are steering vectors towards their direction cosines: gain N
    gains = torch.stack([beam_gain(C[:, i], 4, 2, u[i, 0], u[i, 1]) for i in range(48)])
    assert torch.allclose(gains, torch.full((48,), 8.0, dtype=torch.float64))


def test_steering_shapes_and_norm():
    a = upa_steering(4, 2, torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64))
    assert a.shape == (5, 8)
    assert torch.allclose(a.abs().pow(2).sum(-1), torch.ones(5, dtype=torch.float64))


def test_gradients_flow_to_angle():
    t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    R = local_scattering_covariance(4, t, 0.1)
    R[0, 1].real.backward()
    assert t.grad is not None and torch.isfinite(t.grad)


def test_bad_input_rejected():
    with pytest.raises(ValueError, match="spread"):
        local_scattering_covariance(4, 0.1, 0.0)
    with pytest.raises(ValueError, match="pas"):
        local_scattering_covariance(4, 0.1, 0.1, pas="uniform")
    with pytest.raises(TypeError, match="n"):
        local_scattering_covariance(4.0, 0.1, 0.1)
    with pytest.raises(TypeError, match="R_h"):
        kron_covariance(torch.eye(2), torch.eye(2, dtype=torch.complex128))
    with pytest.raises(TypeError, match="oversampling"):
        dft_codebook(4, 4, 2)
    with pytest.raises(TypeError, match="angle"):
        local_scattering_covariance(4, torch.tensor(0.1 + 0j), 0.1)


# --------------------------------------------------------------------------- #
# Robustness (issue 10, section 5)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "spread",
    [
        math.nan,
        math.inf,
        -0.1,
        0.0,
        torch.tensor([0.1, math.nan], dtype=torch.float64),
        torch.tensor([0.1, -0.2], dtype=torch.float64),
        torch.tensor([0.1, math.inf], dtype=torch.float64),
    ],
)
def test_local_scattering_rejects_bad_spread(spread):
    with pytest.raises(ValueError, match="spread (must be|contains NaN or infinite)"):
        local_scattering_covariance(4, 0.1, spread)
    with pytest.raises(ValueError, match="spread (must be|contains NaN or infinite)"):
        upa_covariance(2, 2, 0.1, 0.2, spread)


@pytest.mark.parametrize(
    "angle", [math.nan, math.inf, -math.inf, torch.tensor([0.0, math.nan], dtype=torch.float64)]
)
def test_local_scattering_rejects_bad_angle(angle):
    with pytest.raises(ValueError, match="angle"):
        local_scattering_covariance(4, angle, 0.1)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_steering_rejects_non_finite_direction(bad):
    with pytest.raises(ValueError, match="u must be a finite number"):
        ula_response(4, bad)
    with pytest.raises(ValueError, match="u_v must be a finite number"):
        upa_steering(2, 2, 0.1, bad)
    C, _, _ = dft_codebook(2, 2)
    with pytest.raises(ValueError, match="u_h"):
        beam_gain(C[:, 0], 2, 2, bad, 0.0)


def test_local_scattering_rejects_bad_width_and_quadrature():
    with pytest.raises(ValueError, match="width must be > 0"):
        local_scattering_covariance(4, 0.1, 0.1, width=0.0)
    with pytest.raises(ValueError, match="width must be a finite number"):
        local_scattering_covariance(4, 0.1, 0.1, width=math.nan)
    with pytest.raises(ValueError, match="n_quad must be >= 3"):
        local_scattering_covariance(4, 0.1, 0.1, n_quad=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
def test_dft_codebook_rejects_a_real_dtype(dtype):
    """A real dtype would silently drop the imaginary part of every codeword."""
    with pytest.raises(TypeError, match="dtype must be torch.complex64 or torch.complex128"):
        dft_codebook(4, 2, (2, 2), dtype=dtype)


def test_dft_codebook_complex64_and_device():
    C64, g, u = dft_codebook(4, 2, (2, 2), dtype=torch.complex64)
    C128, _, _ = dft_codebook(4, 2, (2, 2))
    assert C64.dtype == torch.complex64 and torch.allclose(C64, C128.to(torch.complex64))
    Cm, gm, um = dft_codebook(2, 2, device="meta")
    assert Cm.device.type == gm.device.type == um.device.type == "meta"


def test_numbers_follow_the_tensor_arguments():
    """A Python number takes the dtype and device of the tensor it is combined with."""
    a32 = torch.tensor([0.1, -0.3], dtype=torch.float32)
    R = local_scattering_covariance(4, a32, 0.2)
    assert R.dtype == torch.complex64
    assert upa_steering(2, 2, a32, 0.0).dtype == torch.complex64
    C, _, _ = dft_codebook(2, 2, dtype=torch.complex64)
    assert beam_gain(C[:, 0], 2, 2, 0.0, 0.0).dtype == torch.float32
    m = torch.zeros(2, dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match="u_h, u_v must be on the same device"):
        upa_steering(2, 2, torch.zeros(2, dtype=torch.float64), m)


def test_kron_rejects_mixed_dtypes():
    Rh = local_scattering_covariance(2, 0.1, 0.2)
    with pytest.raises(TypeError, match="R_h, R_v must have the same dtype"):
        kron_covariance(Rh, Rh.to(torch.complex64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_arrays_on_cuda():
    a = torch.tensor([0.1, -0.3], dtype=torch.float64, device="cuda")
    R = upa_covariance(2, 2, a, a, 0.2)
    assert R.device.type == "cuda"
    H = channels_from_covariance(R, generator=torch.Generator().manual_seed(0))
    assert H.device.type == "cuda"
    C, _, _ = dft_codebook(2, 2, device="cuda")
    assert beam_gain(C[:, 0], 2, 2, 0.0, 0.0).device.type == "cuda"
