"""lib.phy.channels: channel statistics, shapes and the received-signal model."""

import math

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
    with pytest.raises(ValueError, match=r"rho must be in \[0, 1\), got 1.0"):
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


# --------------------------------------------------------------------------- #
# Robustness (issue 10, section 5)
# --------------------------------------------------------------------------- #
def _hermitian_psd(n=4, dtype=torch.complex128):
    X = channels.rayleigh(1, n, n, generator=gen(3), dtype=dtype)[0]
    return X @ X.mH + 0.1 * torch.eye(n, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("scale", [1e-10, 1e-3, 1.0, 1e8])
def test_psd_sqrt_tolerance_is_relative(scale, dtype):
    """The Hermitian and PSD checks do not depend on the units of R."""
    R = _hermitian_psd(dtype=dtype) * scale
    S = channels.psd_sqrt(R)
    tol = 1e-4 if dtype == torch.complex64 else 1e-10
    assert float((S @ S - R).abs().max()) <= tol * float(R.abs().max())
    non_hermitian = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=dtype) * scale
    with pytest.raises(ValueError, match="R must be Hermitian"):
        channels.psd_sqrt(non_hermitian)
    slightly = _hermitian_psd(dtype=dtype).clone()
    slightly[0, 1] += 1e-2 * float(slightly.abs().max())  # 1 % asymmetry
    with pytest.raises(ValueError, match="R must be Hermitian"):
        channels.psd_sqrt(slightly * scale)
    indefinite = torch.diag(torch.tensor([1.0, -1e-2], dtype=dtype)) * scale
    with pytest.raises(ValueError, match="positive semidefinite"):
        channels.psd_sqrt(indefinite)


def test_psd_sqrt_accepts_rounding_noise_and_zero():
    R = _hermitian_psd()
    noisy = R + 1e-14 * channels.rayleigh(1, 4, 4, generator=gen(4))[0]  # not exactly Hermitian
    channels.psd_sqrt(noisy)
    assert torch.equal(
        channels.psd_sqrt(torch.zeros(3, 3, dtype=torch.complex128)),
        torch.zeros(3, 3, dtype=torch.complex128),
    )
    Rb = torch.stack([_hermitian_psd(), 1e-12 * _hermitian_psd()])  # per-matrix scale
    S = channels.psd_sqrt(Rb)
    assert torch.allclose(S[1] @ S[1], Rb[1], rtol=0, atol=1e-20)
    with pytest.raises(ValueError, match="R must be Hermitian"):
        channels.psd_sqrt(
            torch.stack(
                [
                    _hermitian_psd(),
                    1e-12
                    * torch.tensor(
                        [[1.0, 1.0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]],
                        dtype=torch.complex128,
                    ),
                ]
            )
        )
    with pytest.raises(TypeError, match="R must have dtype"):
        channels.psd_sqrt(torch.eye(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="rtol must be >= 0"):
        channels.psd_sqrt(R, rtol=-1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, "complex64"])
def test_generators_reject_a_real_dtype(dtype):
    for fn in (
        lambda: channels.complex_normal(2, 3, dtype=dtype),
        lambda: channels.rayleigh(2, 2, 2, dtype=dtype),
        lambda: channels.qpsk(2, 2, dtype=dtype),
        lambda: channels.awgn((2, 2), 1.0, dtype=dtype),
    ):
        with pytest.raises(TypeError, match="dtype must be torch.complex64 or torch.complex128"):
            fn()


@pytest.mark.parametrize("rho", [math.nan, math.inf, -0.1])
def test_exponential_correlation_rejects_bad_rho(rho):
    with pytest.raises(ValueError, match="rho must be"):
        channels.exponential_correlation(3, rho)


def test_received_signal_rejects_mixed_dtypes_and_awgn_shapes():
    H = channels.rayleigh(4, 2, 3)
    V = channels.rayleigh(4, 3, 2, dtype=torch.complex64)
    s = channels.qpsk(4, 2)
    with pytest.raises(TypeError, match="H, V, s must have the same dtype"):
        channels.received_signal(H, V, s, 1.0)
    with pytest.raises(ValueError, match="noise_var must be finite"):
        channels.received_signal(H, V.to(H.dtype), s, math.nan)
    with pytest.raises(ValueError, match="shape must be a non-empty tuple"):
        channels.awgn((), 1.0)
    with pytest.raises(TypeError, match=r"shape\[1\] must be an int"):
        channels.awgn((2, 2.0), 1.0)


def test_draws_take_the_requested_device_and_dtype():
    """A CPU generator's numbers are moved to the device (meta stands in for a GPU)."""
    z = channels.complex_normal(3, 2, generator=gen(), dtype=torch.complex64, device="meta")
    assert z.device.type == "meta" and z.dtype == torch.complex64
    assert channels.qpsk(2, 2, generator=gen(), device="meta").device.type == "meta"
    assert channels.awgn((2, 3), 0.5, generator=gen(), device="meta").device.type == "meta"
    n = channels.awgn((3, 2), 0.5, generator=gen(), dtype=torch.complex64)
    assert n.dtype == torch.complex64
    ref = channels.complex_normal(3, 2, generator=gen(), dtype=torch.complex64) * 0.5**0.5
    assert torch.allclose(n, ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_channels_on_cuda_match_cpu():
    H = channels.rayleigh(3, 2, 4, generator=gen(5), device="cuda")
    assert H.device.type == "cuda"
    assert torch.equal(H.cpu(), channels.rayleigh(3, 2, 4, generator=gen(5)))
    R = channels.exponential_correlation(4, 0.5).cuda()
    Hc = channels.correlated_rayleigh(5, R, users=2, generator=gen(6))
    assert Hc.device.type == "cuda"
    V = channels.rayleigh(3, 4, 2, device="cuda")
    y = channels.received_signal(H, V, channels.qpsk(3, 2, device="cuda"), 0.1, generator=gen())
    assert y.device.type == "cuda"
