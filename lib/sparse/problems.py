"""Compressed-sensing problem generators: Bernoulli-Gaussian signals, Gaussian, Haar and
ill-conditioned sensing matrices, the noise variance for a nominal SNR (Borgerding et al. 2017),
noisy measurements y = A x + w (eq. ``eq-sparse-model``), and a few-path channel that is sparse
in the angular domain. Sparse recovery chapter (``book/sparse_recovery.ipynb``).

Random draws take a ``generator`` and a ``device``: with a generator the numbers are drawn on
the generator's device and moved to ``device`` (the rule of :mod:`lib.core.runtime`), so a
seeded CPU generator gives the same problem on every device; :func:`~lib.sparse.measure` draws its
noise
for the device and dtype of ``A``.
"""

from __future__ import annotations

import math

import torch

from lib.core.checks import check_dtype, check_number, check_positive_int, check_real, same_device
from lib.core.runtime import draw_rand, draw_randn
from lib.core.units import db_to_lin
from lib.phy.arrays import ula_response
from lib.phy.channels import complex_normal
from lib.sparse.common import _check_A, _check_pos_float, _check_prob, _mv

__all__ = [
    "bernoulli_gaussian",
    "gaussian_matrix",
    "haar_orthogonal",
    "ill_conditioned_matrix",
    "noise_var_for_snr",
    "measure",
    "few_path_channel",
]


# --------------------------------------------------------------------------- #
# Problem generators
# --------------------------------------------------------------------------- #
def bernoulli_gaussian(
    batch: int,
    n: int,
    p: float,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    signal_var: float = 1.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Bernoulli-Gaussian signals ``x`` of shape ``(B, N)`` (Sparse recovery chapter).

    Each entry is non-zero with probability ``p`` and then drawn from
    ``N(0, signal_var)``, so ``E[x_i^2] = p * signal_var``.

    Parameters
    ----------
    batch, n : int
        ``B`` and ``N``.
    p : float
        Sparsity in ``(0, 1]``.
    generator : torch.Generator, optional
        Source of randomness (drawn on its device, then moved to ``device``).
    dtype : torch.dtype
        ``float32`` or ``float64``.
    signal_var : float
        ``> 0``.
    device : torch.device or str, optional
        Device of the result.

    Returns
    -------
    torch.Tensor
        ``x`` ``(B, N)``.
    """
    batch = check_positive_int(batch, "batch")
    n = check_positive_int(n, "n")
    p = _check_prob(p)
    signal_var = _check_pos_float(signal_var, "signal_var")
    check_dtype(dtype, complex_=False)
    support = draw_rand(batch, n, generator=generator, dtype=dtype, device=device) < p
    vals = draw_randn(batch, n, generator=generator, dtype=dtype, device=device)
    return vals * math.sqrt(signal_var) * support


def gaussian_matrix(
    m: int,
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    batch: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Sensing matrix with i.i.d. ``N(0, 1/M)`` entries: ``(M, N)``, or ``(B, M, N)``.

    Its columns have unit norm on average and ``E||A||_F^2 = N``.

    Parameters
    ----------
    m, n : int
        ``M`` measurements and ``N`` unknowns.
    generator, dtype, device
        As in :func:`~lib.sparse.bernoulli_gaussian`.
    batch : int, optional
        ``B`` independent matrices.

    Returns
    -------
    torch.Tensor
        ``A``.
    """
    m = check_positive_int(m, "m")
    n = check_positive_int(n, "n")
    check_dtype(dtype, complex_=False)
    shape = (m, n) if batch is None else (check_positive_int(batch, "batch"), m, n)
    return draw_randn(*shape, generator=generator, dtype=dtype, device=device) / math.sqrt(m)


def haar_orthogonal(
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    batch: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Haar-distributed random orthogonal matrix ``(N, N)`` (or ``(B, N, N)``).

    QR decomposition of a Gaussian matrix with the signs of ``diag(R)`` moved into ``Q``
    (Mezzadri 2007), which makes the distribution exactly uniform.

    Parameters
    ----------
    n : int
        ``N``.
    generator, dtype, batch, device
        As in :func:`~lib.sparse.gaussian_matrix`.

    Returns
    -------
    torch.Tensor
        ``Q`` with ``Q^T Q = I``.
    """
    n = check_positive_int(n, "n")
    check_dtype(dtype, complex_=False)
    shape = (n, n) if batch is None else (check_positive_int(batch, "batch"), n, n)
    g = draw_randn(*shape, generator=generator, dtype=dtype, device=device)
    q, r = torch.linalg.qr(g)
    sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    sign[sign == 0] = 1
    return q * sign.unsqueeze(-2)


def _geometric_spectrum(k: int, n: int, cond: float, dtype, device=None) -> torch.Tensor:
    """``k`` geometrically spaced singular values, ``s_0 / s_{k-1} = cond``, ``sum s_i^2 = n``.

    The spectrum of :func:`~lib.sparse.ill_conditioned_matrix` (unchecked core, also used by
    :func:`~lib.chapters.with_condition_number`).
    """
    s = cond ** (-torch.linspace(0.0, 1.0, k, dtype=dtype, device=device))
    return s * math.sqrt(n / float((s**2).sum()))


def ill_conditioned_matrix(
    m: int,
    n: int,
    cond: float,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    batch: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Sensing matrix ``U diag(s) V^T`` with a prescribed condition number.

    ``U`` and ``V`` are Haar-random orthogonal matrices and the ``min(m, n)`` singular
    values are geometrically spaced with ``s_max / s_min = cond`` (Rangan, Schniter and
    Fletcher 2019, Sec. VII), scaled so that ``||A||_F^2 = n`` exactly, like the Gaussian
    matrix on average. ``cond = 1`` gives a row-orthogonal matrix.

    Parameters
    ----------
    m, n : int
        ``M`` and ``N``.
    cond : float
        Condition number ``>= 1`` (finite).
    generator, dtype, batch, device
        As in :func:`~lib.sparse.gaussian_matrix`.

    Returns
    -------
    torch.Tensor
        ``A`` ``(M, N)`` or ``(B, M, N)``.
    """
    m = check_positive_int(m, "m")
    n = check_positive_int(n, "n")
    cond = check_number(cond, "cond", lo=1.0)  # ratio of largest to smallest singular value
    check_dtype(dtype, complex_=False)
    s = _geometric_spectrum(min(m, n), n, cond, dtype)
    k = s.shape[0]
    u = haar_orthogonal(m, generator=generator, dtype=dtype, batch=batch, device=device)
    v = haar_orthogonal(n, generator=generator, dtype=dtype, batch=batch, device=device)
    u, v = u[..., :, :k], v[..., :, :k]
    return (u * s.to(u.device)) @ v.transpose(-2, -1)


def noise_var_for_snr(
    A: torch.Tensor, p: float, snr_db: float, *, signal_var: float = 1.0
) -> float:
    """Noise variance for a given SNR, as in Borgerding, Schniter and Rangan (2017).

    ``sigma^2 = p * signal_var * N / M * 10^(-snr_db / 10)``. For a matrix with
    ``||A||_F^2 = N`` (exactly for :func:`~lib.sparse.ill_conditioned_matrix`, on average for
    :func:`~lib.sparse.gaussian_matrix`) this is ``E||A x||^2 / M / SNR``: the nominal SNR per
    measurement. Only the shape of ``A`` is used.

    Parameters
    ----------
    A : torch.Tensor
        ``(M, N)`` or ``(B, M, N)``.
    p : float
        Sparsity in ``(0, 1]``.
    snr_db : float
        Nominal SNR in dB, finite.
    signal_var : float
        ``> 0``.

    Returns
    -------
    float
        ``sigma^2 > 0``.
    """
    A = _check_A(A)
    p = _check_prob(p)
    signal_var = _check_pos_float(signal_var, "signal_var")
    snr_db = check_number(snr_db, "snr_db")
    m, n = A.shape[-2], A.shape[-1]
    return p * signal_var * n / m * db_to_lin(-snr_db)


def measure(
    A: torch.Tensor,
    x: torch.Tensor,
    snr_db: float,
    p: float,
    *,
    generator: torch.Generator | None = None,
    signal_var: float = 1.0,
) -> tuple[torch.Tensor, float]:
    """Noisy measurements ``y = A x + w`` (eq. ``eq-sparse-model``) and the noise variance used.

    The noise variance is :func:`~lib.sparse.noise_var_for_snr` ``(A, p, snr_db)`` and
    ``w ~ N(0, sigma^2 I)``.

    Parameters
    ----------
    A : torch.Tensor
        ``(M, N)`` or ``(B, M, N)`` real.
    x : torch.Tensor
        ``(B, N)``, same dtype and device as ``A``.
    snr_db : float
        Nominal SNR in dB.
    p : float
        Sparsity used for the nominal signal power.
    generator : torch.Generator, optional
        Source of the noise: drawn on the generator's device and moved to ``A``'s device
        (without a generator, drawn on ``A``'s device).
    signal_var : float
        ``> 0``.

    Returns
    -------
    (torch.Tensor, float)
        ``y`` ``(B, M)`` (dtype and device of ``A``) and ``sigma^2``.
    """
    A = _check_A(A)
    n = A.shape[-1]
    check_real(x, "x", shape=("batch", n))
    if A.dim() == 3 and A.shape[0] != x.shape[0]:
        raise ValueError(f"A {tuple(A.shape)} and x {tuple(x.shape)} must have the same batch size")
    if x.dtype != A.dtype:
        raise TypeError(f"x must have the dtype of A ({A.dtype}), got {x.dtype}")
    same_device(A, x, names=("A", "x"))
    noise_var = noise_var_for_snr(A, p, snr_db, signal_var=signal_var)
    clean = _mv(A, x)
    w = draw_randn(*clean.shape, generator=generator, dtype=A.dtype, device=A.device)
    return clean + w * math.sqrt(noise_var), noise_var


# --------------------------------------------------------------------------- #
# Why channels are sparse
# --------------------------------------------------------------------------- #
def few_path_channel(
    n_antennas: int,
    n_paths: int,
    *,
    generator: torch.Generator | None = None,
    on_grid: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A few-path uniform-linear-array channel and its angular-domain (DFT) representation.

    ``h = sum_l g_l a(theta_l) / sqrt(n_paths)`` with half-wavelength steering vectors
    ``a(theta)_k = exp(j pi k sin theta)``, ``g_l ~ CN(0, 1)`` and ``sin theta_l`` uniform in
    [-1, 1) (``on_grid=True`` puts ``sin theta_l`` on the DFT grid ``2 i / n_antennas - 1``).
    The steering vectors are :func:`lib.phy.ula_response` and the gains
    :func:`lib.phy.complex_normal` (Sparse recovery chapter, "Why wireless channels are sparse").

    Parameters
    ----------
    n_antennas : int
        ``M``, the number of antennas.
    n_paths : int
        ``L`` (``<= M`` with ``on_grid``).
    generator : torch.Generator, optional
        A CPU generator (or ``None``); the result is on the CPU.
    on_grid : bool
        Put the paths on the DFT grid.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``(h, h_angular)`` with ``h_angular = F h`` for the unitary DFT ``F``, both complex128
        ``(M,)``; ``h_angular`` has about ``L`` significant entries (exactly ``L`` on the
        grid, with leakage off the grid).
    """
    n = check_positive_int(n_antennas, "n_antennas")
    L = check_positive_int(n_paths, "n_paths")
    if not isinstance(on_grid, bool):
        raise TypeError(f"on_grid must be a bool, got {type(on_grid).__name__}")
    if on_grid and L > n:
        raise ValueError(f"n_paths must be <= n_antennas = {n} on the grid, got {L}")
    if on_grid:
        idx = torch.randperm(n, generator=generator)[:L].to(torch.float64)
        u = 2 * idx / n - 1
    else:
        u = 2 * torch.rand(L, generator=generator, dtype=torch.float64) - 1
    g = complex_normal(L, generator=generator, dtype=torch.complex128)
    steer = ula_response(n, u).T  # (n, L): a(theta_l)_k = exp(j pi k sin theta_l)
    h = steer @ g / math.sqrt(L)
    h_ang = torch.fft.fft(h, norm="ortho")
    return h, h_ang
