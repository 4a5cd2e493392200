"""Channel models and the multi-user downlink signal model (book chapter *Channels*).

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

Random draws take a ``generator`` and a ``device``: with a generator the numbers are drawn on
the generator's device and moved to ``device`` (:mod:`lib.core.runtime`), so a seeded CPU
generator gives the same channels on every device.
"""

from __future__ import annotations

import torch

from lib.core.checks import (
    _eps,
    _real_dtype,
    check_complex,
    check_dtype,
    check_number,
    check_positive_int,
    check_tensor,
    per_sample,
    same_device,
    same_dtype,
)
from lib.core.runtime import draw_randn

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

_SQRT_HALF = 0.5**0.5


def complex_normal(
    *shape: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.complex128,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw i.i.d. circularly-symmetric :math:`\\mathcal{CN}(0, 1)` entries of the given shape.

    Real and imaginary parts are independent :math:`\\mathcal N(0, 1/2)` (the real parts are
    drawn first, then the imaginary parts).

    Parameters
    ----------
    *shape : int
        The shape, every entry ``>= 1``.
    generator : torch.Generator, optional
        Source of randomness (drawn on its device, then moved to ``device``).
    dtype : torch.dtype
        ``complex64`` or ``complex128``.
    device : torch.device or str, optional
        Device of the result.

    Returns
    -------
    torch.Tensor
        ``shape``, complex ``dtype``, on ``device``.
    """
    check_dtype(dtype, complex_=True)
    for i, s in enumerate(shape):
        check_positive_int(s, f"shape[{i}]")
    real = _real_dtype(dtype)
    re = draw_randn(*shape, generator=generator, dtype=real, device=device)
    im = draw_randn(*shape, generator=generator, dtype=real, device=device)
    return torch.complex(re, im) * _SQRT_HALF


def rayleigh(
    batch: int,
    users: int,
    antennas: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.complex128,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """I.i.d. Rayleigh-fading downlink channels ``H`` of shape ``(B, K, M)``.

    Every entry is :math:`\\mathcal{CN}(0, 1)`: unit average gain per antenna, so the average
    received SNR of a single-antenna link equals the transmit SNR (chapter *Channels*).

    Parameters
    ----------
    batch, users, antennas : int
        ``B``, ``K`` users and ``M`` base-station antennas.
    generator, dtype, device
        As in :func:`~lib.phy.complex_normal`.

    Returns
    -------
    torch.Tensor
        ``H`` ``(B, K, M)``, row ``k`` is :math:`\\mathbf h_k^{\\mathsf H}`.
    """
    return complex_normal(batch, users, antennas, generator=generator, dtype=dtype, device=device)


def exponential_correlation(antennas: int, rho: float, *, dtype=torch.complex128) -> torch.Tensor:
    """Exponential correlation model of a uniform linear array.

    :math:`[\\mathbf R]_{ij} = \\rho^{|i-j|}`, a classic one-parameter model (Loyka 2001;
    chapter *Channels*): ``rho = 0`` gives independent antennas, ``rho -> 1`` a rank-one
    channel. The diagonal is one, so the average gain per antenna is the same as for i.i.d.
    Rayleigh fading.

    Parameters
    ----------
    antennas : int
        ``M``.
    rho : float
        Correlation of neighbouring antennas, in ``[0, 1)``.
    dtype : torch.dtype
        ``complex64`` or ``complex128`` (the entries are real; the dtype is that of the
        complex channels drawn from ``R``).

    Returns
    -------
    torch.Tensor
        ``R`` ``(M, M)``.
    """
    check_positive_int(antennas, "antennas")
    rho = check_number(rho, "rho", lo=0.0, hi=1.0, hi_open=True)
    check_dtype(dtype, complex_=True)
    idx = torch.arange(antennas, dtype=torch.float64)
    dist = (idx[:, None] - idx[None, :]).abs()
    R = torch.pow(torch.tensor(rho, dtype=torch.float64), dist)
    if rho == 0.0:
        R = torch.eye(antennas, dtype=torch.float64)
    return R.to(dtype)


def _hermitian_psd_eigh(R: torch.Tensor, name: str, rtol: float | None = None, atol: float = 0.0):
    """Check that every matrix of ``R (..., n, n)`` is Hermitian PSD; return ``eigh(R)``.

    The tolerances are relative to each matrix's largest entry (Hermitian) or largest
    eigenvalue magnitude (PSD), so that the check does not depend on the units of ``R``:
    ``max|R - R^H| <= rtol max|R| + atol`` and ``lambda_min >= -(rtol max|lambda| + atol)``.
    The default ``rtol`` is ``sqrt(eps)`` of ``R``'s dtype (1.5e-8 in double, 3.5e-4 in single
    precision). One synchronisation per check.
    """
    if R.dim() < 2 or R.shape[-1] != R.shape[-2]:
        raise ValueError(f"{name} must be square in its last two dimensions, got {tuple(R.shape)}")
    tol = _eps(R) ** 0.5 if rtol is None else rtol
    if R.numel() == 0:
        return torch.linalg.eigh(R)
    scale = R.abs().amax(dim=(-2, -1))
    asym = (R - R.mH).abs().amax(dim=(-2, -1))
    if bool((asym > tol * scale + atol).any()):
        rel = float((asym / scale.clamp_min(torch.finfo(scale.dtype).tiny)).max())
        raise ValueError(
            f"{name} must be Hermitian ({name} == {name}^H): largest |{name} - {name}^H| is "
            f"{rel:.3g} of max|{name}|, tolerance {tol:.3g}"
        )
    evals, evecs = torch.linalg.eigh(R)
    top = evals.abs().amax(-1)
    low = evals.amin(-1)
    if bool((low < -(tol * top + atol)).any()):
        raise ValueError(
            f"{name} must be positive semidefinite, smallest eigenvalue {float(low.min()):.3g} "
            f"(largest magnitude {float(top.max()):.3g}, relative tolerance {tol:.3g})"
        )
    return evals, evecs


def psd_sqrt(R: torch.Tensor, *, rtol: float | None = None, atol: float = 0.0) -> torch.Tensor:
    """Hermitian square root :math:`\\mathbf R^{1/2}` of a Hermitian PSD matrix, by ``eigh``.

    :math:`\\mathbf R^{1/2} = \\mathbf U \\operatorname{diag}(\\sqrt{\\lambda})
    \\mathbf U^{\\mathsf H}`, which exists for singular ``R`` too (a Cholesky factor does not);
    eigenvalues that are negative within the tolerance are set to zero (chapter *Channels*,
    correlated Rayleigh fading).

    Parameters
    ----------
    R : torch.Tensor
        ``(n, n)`` or ``(K, n, n)``, real or complex floating.
    rtol : float, optional
        Relative tolerance of the Hermitian and PSD checks (default ``sqrt(eps)`` of the
        dtype), relative to ``max|R|`` and to the largest eigenvalue magnitude of each matrix,
        so a matrix and ``1e-10`` times it are accepted or rejected alike.
    atol : float
        Absolute floor added to both tolerances (default 0).

    Returns
    -------
    torch.Tensor
        ``R^{1/2}``, same shape, dtype and device as ``R``.

    Raises
    ------
    ValueError
        ``R`` is not square, not Hermitian, or has a clearly negative eigenvalue.
    """
    check_tensor(
        R, "R", ndim=(2, 3), dtype=(torch.float32, torch.float64, torch.complex64, torch.complex128)
    )
    if rtol is not None:
        rtol = check_number(rtol, "rtol", lo=0.0)
    atol = check_number(atol, "atol", lo=0.0)
    evals, evecs = _hermitian_psd_eigh(R, "R", rtol, atol)
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

    With :math:`\\mathbf z_k \\sim \\mathcal{CN}(\\mathbf 0, \\mathbf I)`, so that
    :math:`\\mathbb E[\\mathbf h_k \\mathbf h_k^{\\mathsf H}] = \\mathbf R_k` (chapter *Channels*).

    Parameters
    ----------
    batch : int
        ``B``, the number of channel realisations.
    R : torch.Tensor
        Complex Hermitian PSD covariance, ``(M, M)`` shared by all users (then ``users`` is
        required) or ``(K, M, M)`` per user.
    users : int, optional
        ``K`` when ``R`` is shared.
    generator : torch.Generator, optional
        Source of ``z`` (drawn on its device, then moved to ``R``'s device).

    Returns
    -------
    torch.Tensor
        ``H`` ``(B, K, M)`` with row ``k`` equal to :math:`\\mathbf h_k^{\\mathsf H}`, in the
        dtype and on the device of ``R``.
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
    z = complex_normal(batch, K, N, generator=generator, dtype=R.dtype, device=R.device)
    h = torch.einsum("kij,bkj->bki", root, z)  # h_k = R_k^{1/2} z_k
    return h.conj()  # row k is h_k^H


def qpsk(
    batch: int,
    streams: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.complex128,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Unit-energy QPSK symbols ``s`` of shape ``(B, streams)``: :math:`\\mathbb E|s|^2 = 1`.

    Parameters
    ----------
    batch, streams : int
        ``B`` and the number of streams.
    generator, dtype, device
        As in :func:`~lib.phy.complex_normal`.

    Returns
    -------
    torch.Tensor
        ``(B, streams)`` symbols :math:`(\\pm 1 \\pm j)/\\sqrt 2`.
    """
    check_positive_int(batch, "batch")
    check_positive_int(streams, "streams")
    check_dtype(dtype, complex_=True)
    at = generator.device if generator is not None else device
    bits = torch.randint(0, 2, (batch, streams, 2), generator=generator, device=at)
    if device is not None:
        bits = bits.to(device)
    pts = (1.0 - 2.0 * bits.to(_real_dtype(dtype))) * _SQRT_HALF
    return torch.complex(pts[..., 0], pts[..., 1]).to(dtype)


def awgn(
    shape: tuple[int, ...],
    noise_var,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.complex128,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Complex white Gaussian noise :math:`\\mathcal{CN}(0, \\sigma^2)` of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        Non-empty; ``shape[0]`` is the batch ``B``.
    noise_var : float or torch.Tensor
        :math:`\\sigma^2 \\ge 0`, a scalar or ``(B,)`` (one variance per sample).
    generator, dtype : optional
        As in :func:`~lib.phy.complex_normal`.
    device : torch.device or str, optional
        Device of the result (default: that of a tensor ``noise_var``, else the CPU).

    Returns
    -------
    torch.Tensor
        ``shape``, complex ``dtype``.
    """
    if not isinstance(shape, tuple) or len(shape) == 0:
        raise ValueError(f"shape must be a non-empty tuple, got {shape!r}")
    check_dtype(dtype, complex_=True)
    if device is None and isinstance(noise_var, torch.Tensor):
        device = noise_var.device
    var = per_sample(
        noise_var, "noise_var", shape[0], dtype=_real_dtype(dtype), device=device, allow_zero=True
    )
    n = complex_normal(*shape, generator=generator, dtype=dtype, device=device)
    return n * var.sqrt().reshape((-1,) + (1,) * (len(shape) - 1))


def received_signal(
    H: torch.Tensor,
    V: torch.Tensor,
    s: torch.Tensor,
    noise_var,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Downlink received signal :math:`\\mathbf y = \\mathbf H \\mathbf V \\mathbf s + \\mathbf n`.

    Chapter *Channels* (``book/channels.ipynb``), eq. ``eq-channels-rx``.

    Parameters
    ----------
    H : torch.Tensor
        ``(B, K, M)`` complex channel, row ``k`` = :math:`\\mathbf h_k^{\\mathsf H}`.
    V : torch.Tensor
        ``(B, M, streams)`` complex precoder, same dtype and device as ``H``.
    s : torch.Tensor
        ``(B, streams)`` complex data symbols, same dtype and device as ``H``.
    noise_var : float or torch.Tensor
        Scalar or ``(B,)`` noise variance :math:`\\sigma^2 \\ge 0`.
    generator : torch.Generator, optional
        Source of the noise (drawn on its device, then moved to ``H``'s device).

    Returns
    -------
    torch.Tensor
        ``y`` of shape ``(B, K)``.
    """
    check_complex(H, "H", ndim=3)
    b, k, n = H.shape
    check_complex(V, "V", shape=(b, n, "streams"))
    check_complex(s, "s", shape=(b, V.shape[-1]))
    same_device(H, V, s, names=("H", "V", "s"))
    same_dtype(H, V, s, names=("H", "V", "s"))
    y = torch.einsum("bkn,bns,bs->bk", H, V, s)
    return y + awgn((b, k), noise_var, generator=generator, dtype=H.dtype, device=H.device)
