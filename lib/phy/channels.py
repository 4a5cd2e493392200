"""Channel models and the multi-user downlink signal model.

Shapes (the book's conventions page, used by every module):

* ``H``: ``(batch, users, antennas)``, complex. Row ``k`` is
  :math:`\\mathbf h_k^{\\mathsf H}`, so user ``k`` receives
  :math:`y_k = \\mathbf h_k^{\\mathsf H} \\mathbf V \\mathbf s + n_k`.
* ``V``: ``(batch, antennas, streams)``; ``s``: ``(batch, streams)``;
  ``y``: ``(batch, users)``.
* ``R``: a transmit (antenna) covariance ``(antennas, antennas)`` shared by all
  users, or ``(users, antennas, antennas)`` one per user.

The i.i.d. Rayleigh model draws :math:`\\mathbf h_k \\sim \\mathcal{CN}(\\mathbf 0, \\mathbf I)`;
the correlated model draws :math:`\\mathbf h_k = \\mathbf R_k^{1/2} \\mathbf z_k` with
:math:`\\mathbf z_k \\sim \\mathcal{CN}(\\mathbf 0, \\mathbf I)`, so that
:math:`\\mathbb E[\\mathbf h_k \\mathbf h_k^{\\mathsf H}] = \\mathbf R_k`.
"""

from __future__ import annotations

import torch

from lib.core.checks import check_complex, check_positive_int, check_tensor, per_sample

__all__ = [
    "complex_normal",
    "rayleigh",
    "exponential_correlation",
    "psd_sqrt",
    "correlated_rayleigh",
    "qpsk",
    "awgn",
    "received_signal",
]

_COMPLEX = (torch.complex64, torch.complex128)


def _check_complex_dtype(dtype: torch.dtype) -> None:
    if dtype not in _COMPLEX:
        raise TypeError(f"dtype must be torch.complex64 or torch.complex128, got {dtype}")


def complex_normal(
    *shape: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.complex128
) -> torch.Tensor:
    """Draw i.i.d. circularly-symmetric :math:`\\mathcal{CN}(0, 1)` entries of the given shape.

    Real and imaginary parts are independent :math:`\\mathcal N(0, 1/2)`.
    """
    _check_complex_dtype(dtype)
    for i, s in enumerate(shape):
        check_positive_int(s, f"shape[{i}]")
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    re = torch.randn(*shape, generator=generator, dtype=real)
    im = torch.randn(*shape, generator=generator, dtype=real)
    return torch.complex(re, im) * (0.5**0.5)


def rayleigh(
    batch: int,
    users: int,
    antennas: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.complex128,
) -> torch.Tensor:
    """I.i.d. Rayleigh-fading downlink channels ``H`` of shape ``(batch, users, antennas)``.

    Every entry is :math:`\\mathcal{CN}(0, 1)`: unit average gain per antenna,
    so the average received SNR of a single-antenna link equals the transmit SNR.
    """
    return complex_normal(batch, users, antennas, generator=generator, dtype=dtype)


def exponential_correlation(antennas: int, rho: float, *, dtype=torch.complex128) -> torch.Tensor:
    """Exponential correlation model of a uniform linear array.

    :math:`[\\mathbf R]_{ij} = \\rho^{|i-j|}`.

    A classic one-parameter model (Loyka 2001): ``rho = 0`` gives independent
    antennas, ``rho -> 1`` a rank-one channel. The diagonal is one, so the
    average gain per antenna is the same as for i.i.d. Rayleigh fading.
    """
    check_positive_int(antennas, "antennas")
    if not isinstance(rho, (int, float)) or isinstance(rho, bool):
        raise TypeError(f"rho must be a real number, got {type(rho).__name__}")
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"rho must lie in [0, 1), got {rho}")
    _check_complex_dtype(dtype)
    idx = torch.arange(antennas, dtype=torch.float64)
    dist = (idx[:, None] - idx[None, :]).abs()
    R = torch.pow(torch.tensor(float(rho), dtype=torch.float64), dist)
    if rho == 0.0:
        R = torch.eye(antennas, dtype=torch.float64)
    return R.to(dtype)


def psd_sqrt(R: torch.Tensor, *, atol: float = 1e-10) -> torch.Tensor:
    """Hermitian square root :math:`\\mathbf R^{1/2}` of a Hermitian PSD matrix.

    Batched over leading dimensions, computed with ``eigh``.

    Raises ``ValueError`` if ``R`` is not Hermitian or has a clearly negative eigenvalue.
    """
    check_tensor(R, "R", ndim=(2, 3))
    if R.shape[-1] != R.shape[-2]:
        raise ValueError(f"R must be square in its last two dimensions, got {tuple(R.shape)}")
    scale = R.abs().amax().clamp_min(1.0)
    if not torch.allclose(R, R.mH, atol=atol * float(scale) * 1e2):
        raise ValueError("R must be Hermitian (R == R^H)")
    evals, evecs = torch.linalg.eigh(R)
    if bool((evals < -1e-8 * scale).any()):
        raise ValueError(
            f"R must be positive semidefinite, smallest eigenvalue {float(evals.min()):.3g}"
        )
    root = evals.clamp_min(0.0).sqrt().to(evecs.dtype)
    return (evecs * root.unsqueeze(-2)) @ evecs.mH


def correlated_rayleigh(
    batch: int,
    R: torch.Tensor,
    users: int | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Correlated Rayleigh channels :math:`\\mathbf h_k = \\mathbf R_k^{1/2} \\mathbf z_k`.

    Parameters
    ----------
    batch : int
        Number of channel realisations.
    R : torch.Tensor
        Complex covariance, ``(antennas, antennas)`` shared by all users (then
        ``users`` is required) or ``(users, antennas, antennas)`` per user.
    users : int, optional
        Number of users when ``R`` is shared.

    Returns
    -------
    torch.Tensor
        ``H`` of shape ``(batch, users, antennas)`` with row ``k`` equal to
        :math:`\\mathbf h_k^{\\mathsf H}`, in the dtype of ``R``.
    """
    check_positive_int(batch, "batch")
    check_complex(R, "R", ndim=(2, 3))
    if R.dim() == 2:
        if users is None:
            raise ValueError("users is required when R is a single (antennas, antennas) matrix")
        check_positive_int(users, "users")
        R = R.unsqueeze(0).expand(users, -1, -1)
    elif users is not None and users != R.shape[0]:
        raise ValueError(f"users={users} does not match R of shape {tuple(R.shape)}")
    K, N = R.shape[0], R.shape[-1]
    root = psd_sqrt(R)  # (K, N, N)
    z = complex_normal(batch, K, N, generator=generator, dtype=R.dtype)
    h = torch.einsum("kij,bkj->bki", root, z)  # h_k = R_k^{1/2} z_k
    return h.conj()  # row k is h_k^H


def qpsk(
    batch: int,
    streams: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.complex128,
) -> torch.Tensor:
    """Unit-energy QPSK symbols ``s`` of shape ``(batch, streams)``: :math:`\\mathbb E|s|^2 = 1`."""
    check_positive_int(batch, "batch")
    check_positive_int(streams, "streams")
    _check_complex_dtype(dtype)
    bits = torch.randint(0, 2, (batch, streams, 2), generator=generator)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    pts = (1.0 - 2.0 * bits.to(real)) * (0.5**0.5)
    return torch.complex(pts[..., 0], pts[..., 1]).to(dtype)


def awgn(
    shape: tuple[int, ...],
    noise_var,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.complex128,
) -> torch.Tensor:
    """Complex white Gaussian noise :math:`\\mathcal{CN}(0, \\sigma^2)` of ``shape``.

    ``noise_var`` is a scalar or a ``(shape[0],)`` tensor (one variance per sample).
    """
    if not isinstance(shape, tuple) or len(shape) == 0:
        raise ValueError(f"shape must be a non-empty tuple, got {shape!r}")
    var = per_sample(noise_var, "noise_var", shape[0], allow_zero=True)
    n = complex_normal(*shape, generator=generator, dtype=dtype)
    return n * var.sqrt().to(n.real.dtype).reshape((-1,) + (1,) * (len(shape) - 1))


def received_signal(
    H: torch.Tensor,
    V: torch.Tensor,
    s: torch.Tensor,
    noise_var,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Downlink received signal :math:`\\mathbf y = \\mathbf H \\mathbf V \\mathbf s + \\mathbf n`.

    Parameters
    ----------
    H : ``(batch, users, antennas)`` complex channel, row ``k`` = :math:`\\mathbf h_k^{\\mathsf H}`.
    V : ``(batch, antennas, streams)`` complex precoder.
    s : ``(batch, streams)`` complex data symbols.
    noise_var : scalar or ``(batch,)`` noise variance :math:`\\sigma^2`.

    Returns
    -------
    ``y`` of shape ``(batch, users)``.
    """
    check_complex(H, "H", ndim=3)
    b, k, n = H.shape
    check_complex(V, "V", shape=(b, n, "streams"))
    check_complex(s, "s", shape=(b, V.shape[-1]))
    y = torch.einsum("bkn,bns,bs->bk", H, V.to(H.dtype), s.to(H.dtype))
    return y + awgn((b, k), noise_var, generator=generator, dtype=H.dtype)
