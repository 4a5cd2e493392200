"""lib.phy.channels: channel statistics, shapes and the received-signal model."""

import pytest
import torch

from lib.phy import channels


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_rayleigh_shape_and_statistics():
    H = channels.rayleigh(20000, 2, 3, generator=gen())
    assert H.shape == (20000, 2, 3) and H.dtype == torch.complex128
    assert abs(float((H.abs() ** 2).mean()) - 1.0) < 0.02
    assert abs(float(H.mean().abs())) < 0.02
    # circular symmetry: E[h^2] = 0
    assert abs(complex((H**2).mean())) < 0.02


def test_complex64_and_reproducible():
    a = channels.rayleigh(5, 2, 2, generator=gen(1), dtype=torch.complex64)
    b = channels.rayleigh(5, 2, 2, generator=gen(1), dtype=torch.complex64)
    assert a.dtype == torch.complex64 and torch.equal(a, b)


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.9])
def test_exponential_correlation_is_toeplitz_psd(rho):
    R = channels.exponential_correlation(5, rho)
    assert torch.allclose(R, R.mH)
    assert torch.allclose(torch.diagonal(R).real, torch.ones(5, dtype=torch.float64))
    assert float(torch.linalg.eigvalsh(R).min()) > 0
    assert abs(float(R[0, 2].real) - rho**2) < 1e-12


def test_psd_sqrt_squares_back_and_rejects():
    R = channels.exponential_correlation(4, 0.7)
    S = channels.psd_sqrt(R)
    assert torch.allclose(S @ S, R, atol=1e-12) and torch.allclose(S, S.mH, atol=1e-12)
    rank1 = torch.ones(3, 3, dtype=torch.complex128)  # singular: Cholesky would fail
    S1 = channels.psd_sqrt(rank1)
    assert torch.allclose(S1 @ S1, rank1, atol=1e-10)
    with pytest.raises(ValueError, match="Hermitian"):
        channels.psd_sqrt(torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.complex128))
    with pytest.raises(ValueError, match="positive semidefinite"):
        channels.psd_sqrt(torch.diag(torch.tensor([1.0, -1.0], dtype=torch.complex128)))


def test_correlated_rayleigh_covariance_per_user():
    R = torch.stack(
        [channels.exponential_correlation(3, 0.2), channels.exponential_correlation(3, 0.95)]
    )
    H = channels.correlated_rayleigh(60000, R, generator=gen(2))
    assert H.shape == (60000, 2, 3)
    for k in range(2):
        h = H[:, k, :].conj()  # row k is h_k^H
        R_hat = h.T @ h.conj() / h.shape[0]
        assert (R_hat - R[k]).abs().max() < 0.03


def test_correlated_rayleigh_validation():
    R = channels.exponential_correlation(3, 0.5)
    with pytest.raises(ValueError, match="users is required"):
        channels.correlated_rayleigh(4, R)
    with pytest.raises(TypeError, match="R must be a complex tensor"):
        channels.correlated_rayleigh(4, R.real, users=2)
    with pytest.raises(ValueError, match="rho must lie in"):
        channels.exponential_correlation(3, 1.0)


def test_qpsk_unit_energy():
    s = channels.qpsk(1000, 3, generator=gen())
    assert s.shape == (1000, 3)
    assert torch.allclose(s.abs(), torch.ones_like(s.abs()))


def test_received_signal_noiseless_and_noise_power():
    H = channels.rayleigh(4, 2, 3, generator=gen())
    V = channels.rayleigh(4, 3, 2, generator=gen(1))
    s = channels.qpsk(4, 2, generator=gen())
    y = channels.received_signal(H, V, s, 0.0)
    assert torch.allclose(y, (H @ V @ s.unsqueeze(-1)).squeeze(-1))
    n = channels.awgn((50000, 2), torch.full((50000,), 0.25), generator=gen())
    assert abs(float((n.abs() ** 2).mean()) - 0.25) < 0.01


def test_received_signal_rejects_bad_shapes():
    H = channels.rayleigh(4, 2, 3)
    s = channels.qpsk(4, 2)
    with pytest.raises(ValueError, match=r"V must have shape \(4, 3, streams\)"):
        channels.received_signal(H, channels.rayleigh(4, 2, 2), s, 1.0)
    with pytest.raises(TypeError, match="H must be a complex tensor"):
        channels.received_signal(H.real, channels.rayleigh(4, 3, 2), s, 1.0)
    with pytest.raises(ValueError, match="noise_var must be >= 0"):
        channels.received_signal(H, channels.rayleigh(4, 3, 2), s, -1.0)
