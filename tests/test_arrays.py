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
    R2 = upa_covariance(4, 3, torch.tensor([0.1, -0.3]), torch.tensor([0.2, 0.5]), 0.2)
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
