"""Uniform planar arrays, spatially correlated channels and oversampled 2-D DFT codebooks.

Book chapter *Hybrid beamforming: arrays and codebooks* (and *Channels* for the ULA response).

The transmitter of the hybrid-beamforming chapters is a uniform planar array (UPA)
of ``n_h x n_v`` antennas with half-wavelength spacing (Schynol and Pesavento, Sec. 5.1.4).
Antenna ``(m_h, m_v)`` is stacked at index ``m_h * n_v + m_v``, so that every
UPA quantity is a Kronecker product "horizontal (x) vertical".

Conventions (see ``CONTRIBUTING.md``):

* a *direction cosine* ``u = sin(theta)`` in ``[-1, 1)`` per axis; the ULA response of
  ``n`` half-wavelength spaced antennas is ``a(u)[m] = exp(j pi m u)``;
* covariances ``R = E[h h^H]`` of the channel *column* vector ``h`` of one user; the
  downlink channel matrix has rows ``h_k^H`` (``H = h.conj()``);
* every function is batched over leading dimensions and written with differentiable
  torch operations (gradients flow to angles and spreads);
* a Python number among the inputs takes the dtype and device of the tensor inputs (float64 on
  the CPU when there are none); NaN or infinite angles and non-positive spreads are rejected.
"""

from __future__ import annotations

import math

import torch

from lib.core.checks import (
    _is_number,
    _real_dtype,
    check_complex,
    check_dtype,
    check_number,
    check_positive_int,
    check_tensor,
    same_device,
    same_dtype,
)
from lib.phy import channels

__all__ = [
    "ula_response",
    "upa_steering",
    "local_scattering_covariance",
    "kron_covariance",
    "upa_covariance",
    "channels_from_covariance",
    "dft_codebook",
    "beam_gain",
]

_PAS = ("gaussian", "laplacian")


def _as_real(x, name: str, like: torch.Tensor | None = None, **range_) -> torch.Tensor:
    """A finite number or real tensor as a tensor; a number takes ``like``'s real dtype and device
    (float64 on the CPU without ``like``). ``range_`` (``lo=``, ``lo_open=``) bounds the values."""
    if _is_number(x):
        v = check_number(x, name, **range_)
        dtype = torch.float64 if like is None else _real_dtype(like)
        return torch.tensor(v, dtype=dtype, device=None if like is None else like.device)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a number or a real torch.Tensor, got {type(x).__name__}")
    check_tensor(x, name, complex_=False, **range_)
    return x


def _real_pair(a, b, names: tuple[str, str], **range_b):
    """Two angle-like arguments: numbers follow a tensor argument's dtype and device."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        same_device(a, b, names=names)
    like = a if isinstance(a, torch.Tensor) else b if isinstance(b, torch.Tensor) else None
    return _as_real(a, names[0], like), _as_real(b, names[1], like, **range_b)


def ula_response(n: int, u) -> torch.Tensor:
    """Half-wavelength ULA response ``a(u)[m] = exp(j pi m u)``, ``m = 0..n-1`` (not normalised).

    Parameters
    ----------
    n : int
        Number of antennas.
    u : float or torch.Tensor
        Direction cosine(s) ``sin(theta)``, finite, any shape ``S``.

    Returns
    -------
    torch.Tensor
        ``S + (n,)``, complex (``complex128`` for float64 ``u``), on ``u``'s device.
    """
    check_positive_int(n, "n")
    u = _as_real(u, "u")
    m = torch.arange(n, dtype=u.dtype, device=u.device)
    return torch.polar(torch.ones_like(u[..., None] * m), math.pi * u[..., None] * m)


def upa_steering(n_h: int, n_v: int, u_h, u_v, *, normalize: bool = True) -> torch.Tensor:
    """UPA steering vector ``a_h(u_h) (x) a_v(u_v)`` (antenna ``(m_h, m_v)`` at ``m_h n_v + m_v``).

    Parameters
    ----------
    n_h, n_v : int
        Antennas per row and column, ``N = n_h n_v``.
    u_h, u_v : float or torch.Tensor
        Horizontal and vertical direction cosines, broadcastable, on one device.
    normalize : bool
        Unit norm (a codeword) if ``True``, otherwise unit-modulus entries.

    Returns
    -------
    torch.Tensor
        ``broadcast(u_h, u_v) + (N,)`` complex.
    """
    u_h, u_v = _real_pair(u_h, u_v, ("u_h", "u_v"))
    a_h = ula_response(n_h, u_h)
    a_v = ula_response(n_v, u_v)
    a_h, a_v = torch.broadcast_tensors(a_h[..., :, None], a_v[..., None, :])
    a = (a_h * a_v).reshape(*a_h.shape[:-2], n_h * n_v)
    if normalize:
        a = a / math.sqrt(n_h * n_v)
    return a


def local_scattering_covariance(
    n: int, angle, spread, *, pas: str = "gaussian", n_quad: int = 257, width: float | None = None
) -> torch.Tensor:
    """Per-axis spatial covariance of a half-wavelength ULA under local scattering.

    .. math:: [R]_{m,l} = \\int e^{j\\pi (m-l)\\sin\\varphi} f(\\varphi)\\, d\\varphi ,

    with the power angular spectrum ``f`` a Gaussian (standard deviation ``spread``) or a
    Laplacian (``f ~ exp(-sqrt(2)|phi - angle| / spread)``, same standard deviation)
    around the nominal ``angle`` (radians), as in the clustered model of Forenza et al.
    (Bjornson et al. 2017, eq. (2.23); chapter *Hybrid beamforming: arrays and codebooks*, eq.
    ``eq-hbf-local-scattering``). The integral is computed by the composite trapezoidal
    rule on ``n_quad`` points over ``angle +- width * spread`` (default width 6 for Gaussian,
    12 for Laplacian) with the weights renormalised to sum to one, so that ``R`` is exactly
    Hermitian, Toeplitz, PSD and has a unit diagonal (unit power per antenna).

    Parameters
    ----------
    n : int
        Number of antennas on the axis.
    angle, spread : float or real tensor
        Nominal angle and angular standard deviation in radians, broadcastable, finite;
        ``spread > 0``. A number takes the dtype and device of a tensor argument.
    pas : {"gaussian", "laplacian"}
        The power angular spectrum.
    n_quad : int
        Quadrature points, ``>= 3``.
    width : float, optional
        Half-width of the integration window in units of ``spread``, ``> 0``.

    Returns
    -------
    torch.Tensor
        ``(..., n, n)`` complex covariance.

    Raises
    ------
    ValueError
        NaN or infinite ``angle`` or ``spread``, ``spread <= 0``, an unknown ``pas``.
    """
    check_positive_int(n, "n")
    check_positive_int(n_quad, "n_quad", minimum=3)
    if pas not in _PAS:
        raise ValueError(f"pas must be one of {_PAS}, got {pas!r}")
    angle, spread = _real_pair(angle, spread, ("angle", "spread"), lo=0.0, lo_open=True)
    if width is None:
        width = 6.0 if pas == "gaussian" else 12.0
    width = check_number(width, "width", lo=0.0, lo_open=True)
    angle, spread = torch.broadcast_tensors(angle, spread)
    t = torch.linspace(-width, width, n_quad, dtype=angle.dtype, device=angle.device)
    if pas == "gaussian":
        w = torch.exp(-0.5 * t**2)
    else:
        w = torch.exp(-math.sqrt(2.0) * t.abs())
    w = w.clone()
    w[0] = w[0] / 2  # trapezoid end points
    w[-1] = w[-1] / 2
    w = w / w.sum()
    phi = angle[..., None] + spread[..., None] * t  # (..., Q)
    # first column of the Toeplitz matrix: r[d] = sum_q w_q exp(j pi d sin phi_q)
    d = torch.arange(n, dtype=angle.dtype, device=angle.device)
    phase = math.pi * torch.sin(phi)[..., None, :] * d[:, None]  # (..., n, Q)
    r = (torch.polar(torch.ones_like(phase), phase) * w).sum(-1)  # (..., n)
    idx = torch.arange(n, device=angle.device)
    diff = idx[:, None] - idx[None, :]  # m - l
    R = r[..., diff.abs()]
    R = torch.where(diff >= 0, R, R.conj())
    return R


def kron_covariance(R_h: torch.Tensor, R_v: torch.Tensor) -> torch.Tensor:
    """Batched Kronecker product ``R = R_h (x) R_v``.

    Parameters
    ----------
    R_h, R_v : torch.Tensor
        ``(..., n_h, n_h)`` and ``(..., n_v, n_v)`` complex, broadcastable leading dimensions,
        same dtype and device.

    Returns
    -------
    torch.Tensor
        ``(..., N, N)``, ``N = n_h n_v``.
    """
    check_complex(R_h, "R_h")
    check_complex(R_v, "R_v")
    if R_h.dim() < 2 or R_h.shape[-1] != R_h.shape[-2]:
        raise ValueError(f"R_h must have shape (..., n_h, n_h), got {tuple(R_h.shape)}")
    if R_v.dim() < 2 or R_v.shape[-1] != R_v.shape[-2]:
        raise ValueError(f"R_v must have shape (..., n_v, n_v), got {tuple(R_v.shape)}")
    same_device(R_h, R_v, names=("R_h", "R_v"))
    same_dtype(R_h, R_v, names=("R_h", "R_v"))
    n_h, n_v = R_h.shape[-1], R_v.shape[-1]
    K = R_h[..., :, None, :, None] * R_v[..., None, :, None, :]
    return K.reshape(*K.shape[:-4], n_h * n_v, n_h * n_v)


def upa_covariance(
    n_h: int, n_v: int, angle_h, angle_v, spread, *, pas: str = "gaussian", n_quad: int = 257
) -> torch.Tensor:
    """Kronecker covariance of a UPA: per-axis local scattering, one ``spread`` for both axes.

    ``R = R_h(angle_h, spread) (x) R_v(angle_v, spread)`` with
    :func:`~lib.phy.local_scattering_covariance` per axis (Schynol and Pesavento, Sec. 5.1.4;
    chapter
    *Hybrid
    beamforming: arrays and codebooks*, eq. ``eq-hbf-local-scattering``).

    Parameters
    ----------
    n_h, n_v : int
        Antennas per row and column, ``N = n_h n_v``.
    angle_h, angle_v : float or real tensor
        Nominal angles (radians) per axis, broadcastable, finite.
    spread : float or real tensor
        Angular standard deviation ``> 0`` (radians), shared by both axes.
    pas, n_quad
        As in :func:`~lib.phy.local_scattering_covariance`.

    Returns
    -------
    torch.Tensor
        ``(..., N, N)`` complex, ``N = n_h n_v``.
    """
    R_h = local_scattering_covariance(n_h, angle_h, spread, pas=pas, n_quad=n_quad)
    R_v = local_scattering_covariance(n_v, angle_v, spread, pas=pas, n_quad=n_quad)
    return kron_covariance(R_h, R_v)


def channels_from_covariance(
    R: torch.Tensor, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One Rayleigh channel per covariance: ``R (..., K, N, N)`` -> ``H (..., K, N)``.

    A thin wrapper over :func:`lib.phy.correlated_rayleigh`, which draws ``batch`` channels
    from covariances *shared* by the batch. Here every instance has its own user covariances
    (``R`` of shape ``(B, K, N, N)``, e.g. from :func:`~lib.phy.upa_covariance` with per-instance
    angles), so all ``B * K`` covariances are passed as "users" of one draw. The result
    is the book's downlink matrix ``H`` (row ``k`` is :math:`\\mathbf h_k^{\\mathsf H}`,
    :math:`\\mathbf h_k = \\mathbf R_k^{1/2} \\mathbf z_k`); for many draws from one fixed
    covariance call :func:`lib.phy.correlated_rayleigh` directly.

    Parameters
    ----------
    R : torch.Tensor
        ``(..., K, N, N)`` complex Hermitian PSD covariances.
    generator : torch.Generator, optional
        Source of randomness (drawn on its device, then moved to ``R``'s device).

    Returns
    -------
    torch.Tensor
        ``H`` of shape ``R.shape[:-1]``.
    """
    check_complex(R, "R")
    if R.dim() < 2 or R.shape[-1] != R.shape[-2]:
        raise ValueError(f"R must have shape (..., users, n, n), got {tuple(R.shape)}")
    n = R.shape[-1]
    H = channels.correlated_rayleigh(1, R.reshape(-1, n, n), generator=generator)
    return H.reshape(R.shape[:-1])


def dft_codebook(
    n_h: int,
    n_v: int,
    oversampling=(1, 1),
    *,
    dtype=torch.complex128,
    device: torch.device | str | None = None,
):
    """Oversampled 2-D DFT codebook of a UPA.

    The horizontal grid has ``O_h n_h`` direction cosines ``u = 2 k / (O_h n_h)`` (wrapped to
    ``[-1, 1)``), likewise vertically; codeword ``(k_h, k_v)`` is the unit-norm steering vector
    ``a_h (x) a_v / sqrt(N)``. Codewords with ``k_h = q_h (mod O_h)`` and ``k_v = q_v (mod O_v)``
    form orthogonal group ``g = q_h O_v + q_v``: an orthonormal basis of ``C^N`` (chapter
    *Hybrid beamforming: arrays and codebooks*).

    Parameters
    ----------
    n_h, n_v : int
        Antennas per row and column, ``N = n_h n_v``.
    oversampling : pair of int
        ``(O_h, O_v)``.
    dtype : torch.dtype
        ``complex64`` or ``complex128`` (a real dtype would drop the codewords' imaginary part:
        ``TypeError``).
    device : torch.device or str, optional
        Device of the returned tensors.

    Returns
    -------
    codebook : torch.Tensor
        ``(N, O_h n_h * O_v n_v)`` complex, one unit-norm codeword per column, ordered by group
        and, within a group, by ``(i_h, i_v)`` with ``k = q + O i``.
    groups : torch.Tensor
        ``(n_codewords,)`` long, the orthogonal group of each codeword.
    u : torch.Tensor
        ``(n_codewords, 2)`` direction cosines ``(u_h, u_v)`` of the codewords (float64).
    """
    check_positive_int(n_h, "n_h")
    check_positive_int(n_v, "n_v")
    if not isinstance(oversampling, (tuple, list)) or len(oversampling) != 2:
        raise TypeError(f"oversampling must be a pair (O_h, O_v), got {oversampling!r}")
    o_h = check_positive_int(oversampling[0], "oversampling[0]")
    o_v = check_positive_int(oversampling[1], "oversampling[1]")
    check_dtype(dtype, complex_=True)
    q_h, q_v, i_h, i_v = torch.meshgrid(
        torch.arange(o_h), torch.arange(o_v), torch.arange(n_h), torch.arange(n_v), indexing="ij"
    )
    k_h = (q_h + o_h * i_h).reshape(-1)
    k_v = (q_v + o_v * i_v).reshape(-1)
    groups = (q_h * o_v + q_v).reshape(-1)
    u_h = torch.remainder(2.0 * k_h.double() / (o_h * n_h) + 1.0, 2.0) - 1.0
    u_v = torch.remainder(2.0 * k_v.double() / (o_v * n_v) + 1.0, 2.0) - 1.0
    C = upa_steering(n_h, n_v, u_h, u_v).T.contiguous().to(dtype)
    u = torch.stack([u_h, u_v], -1)
    if device is not None:
        C, groups, u = C.to(device), groups.to(device), u.to(device)
    return C, groups, u


def beam_gain(codeword: torch.Tensor, n_h: int, n_v: int, u_h, u_v) -> torch.Tensor:
    """Array gain ``|a(u_h, u_v)^H f|^2`` of a unit-norm codeword ``f`` towards ``(u_h, u_v)``.

    ``a`` is the unit-modulus steering vector, so the peak gain of a matched codeword is ``N``.

    Parameters
    ----------
    codeword : torch.Tensor
        ``(N,)`` complex, ``N = n_h n_v``.
    n_h, n_v : int
        Array size.
    u_h, u_v : float or torch.Tensor
        Direction cosines, broadcastable (numbers take the codeword's real dtype and device).

    Returns
    -------
    torch.Tensor
        ``broadcast(u_h, u_v)`` real gains.
    """
    check_positive_int(n_h, "n_h")
    check_positive_int(n_v, "n_v")
    check_complex(codeword, "codeword", ndim=1)
    if codeword.shape[0] != n_h * n_v:
        raise ValueError(f"codeword must have shape ({n_h * n_v},), got {tuple(codeword.shape)}")
    u_h = _as_real(u_h, "u_h", codeword)
    u_v = _as_real(u_v, "u_v", codeword)
    same_device(codeword, u_h, u_v, names=("codeword", "u_h", "u_v"))
    a = upa_steering(n_h, n_v, u_h, u_v, normalize=False).to(codeword.dtype)
    return (a.conj() @ codeword).abs() ** 2
