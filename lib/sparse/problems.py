"""Compressed-sensing problem generators: Bernoulli-Gaussian signals, Gaussian, Haar and
ill-conditioned sensing matrices, the noise variance for a nominal SNR (Borgerding et al. 2017),
noisy measurements y = A x + w, and a few-path channel that is sparse in the angular domain.
Chapter: *Sparse recovery*.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lib.core.checks import check_positive_int, check_real
from lib.core.units import db_to_lin
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
) -> torch.Tensor:
    """Bernoulli-Gaussian signals ``x`` of shape ``(batch, n)``.

    Each entry is non-zero with probability ``p`` and then drawn from
    ``N(0, signal_var)``, so ``E[x_i^2] = p * signal_var``.
    """
    batch = check_positive_int(batch, "batch")
    n = check_positive_int(n, "n")
    p = _check_prob(p)
    signal_var = _check_pos_float(signal_var, "signal_var")
    support = torch.rand(batch, n, generator=generator, dtype=dtype) < p
    vals = torch.randn(batch, n, generator=generator, dtype=dtype) * math.sqrt(signal_var)
    return vals * support


def gaussian_matrix(
    m: int,
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    batch: int | None = None,
) -> torch.Tensor:
    """Sensing matrix with i.i.d. ``N(0, 1/m)`` entries: ``(m, n)``, or ``(batch, m, n)``.

    Its columns have unit norm on average and ``E||A||_F^2 = n``.
    """
    m = check_positive_int(m, "m")
    n = check_positive_int(n, "n")
    shape = (m, n) if batch is None else (check_positive_int(batch, "batch"), m, n)
    return torch.randn(*shape, generator=generator, dtype=dtype) / math.sqrt(m)


def haar_orthogonal(
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    batch: int | None = None,
) -> torch.Tensor:
    """Haar-distributed random orthogonal matrix ``(n, n)`` (or ``(batch, n, n)``).

    QR decomposition of a Gaussian matrix with the signs of ``diag(R)`` moved into ``Q``
    (Mezzadri 2007), which makes the distribution exactly uniform.
    """
    n = check_positive_int(n, "n")
    shape = (n, n) if batch is None else (check_positive_int(batch, "batch"), n, n)
    g = torch.randn(*shape, generator=generator, dtype=dtype)
    q, r = torch.linalg.qr(g)
    sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    sign[sign == 0] = 1
    return q * sign.unsqueeze(-2)


def ill_conditioned_matrix(
    m: int,
    n: int,
    cond: float,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    batch: int | None = None,
) -> torch.Tensor:
    """Sensing matrix ``U diag(s) V^T`` with a prescribed condition number.

    ``U`` and ``V`` are Haar-random orthogonal matrices and the ``min(m, n)`` singular
    values are geometrically spaced with ``s_max / s_min = cond`` (Rangan, Schniter and
    Fletcher 2019, Sec. VII), scaled so that ``||A||_F^2 = n`` exactly, like the Gaussian
    matrix on average. ``cond = 1`` gives a row-orthogonal matrix.
    """
    m = check_positive_int(m, "m")
    n = check_positive_int(n, "n")
    cond = _check_pos_float(cond, "cond")
    if cond < 1:
        raise ValueError(
            f"cond must be >= 1 (ratio of largest to smallest singular value), got {cond}"
        )
    k = min(m, n)
    s = cond ** (-torch.linspace(0.0, 1.0, k, dtype=dtype))
    s = s * math.sqrt(n / float((s**2).sum()))
    u = haar_orthogonal(m, generator=generator, dtype=dtype, batch=batch)[..., :, :k]
    v = haar_orthogonal(n, generator=generator, dtype=dtype, batch=batch)[..., :, :k]
    return (u * s) @ v.transpose(-2, -1)


def noise_var_for_snr(
    A: torch.Tensor, p: float, snr_db: float, *, signal_var: float = 1.0
) -> float:
    """Noise variance for a given SNR, as in Borgerding, Schniter and Rangan (2017).

    ``sigma^2 = p * signal_var * N / M * 10^(-snr_db / 10)``. For a matrix with
    ``||A||_F^2 = N`` (exactly for :func:`ill_conditioned_matrix`, on average for
    :func:`gaussian_matrix`) this is ``E||A x||^2 / M / SNR``: the nominal SNR per
    measurement. Only the shape of ``A`` is used.
    """
    A = _check_A(A)
    p = _check_prob(p)
    signal_var = _check_pos_float(signal_var, "signal_var")
    if isinstance(snr_db, bool) or not isinstance(snr_db, (int, float, np.integer, np.floating)):
        raise TypeError(f"snr_db must be a number, got {type(snr_db).__name__}")
    m, n = A.shape[-2], A.shape[-1]
    return p * signal_var * n / m * db_to_lin(-float(snr_db))


def measure(
    A: torch.Tensor,
    x: torch.Tensor,
    snr_db: float,
    p: float,
    *,
    generator: torch.Generator | None = None,
    signal_var: float = 1.0,
) -> tuple[torch.Tensor, float]:
    """Noisy measurements ``y = A x + w`` of shape ``(batch, M)`` and the noise variance used.

    The noise variance is :func:`noise_var_for_snr` ``(A, p, snr_db)``.
    """
    A = _check_A(A)
    n = A.shape[-1]
    check_real(x, "x", shape=("batch", n))
    if A.dim() == 3 and A.shape[0] != x.shape[0]:
        raise ValueError(f"A {tuple(A.shape)} and x {tuple(x.shape)} must have the same batch size")
    noise_var = noise_var_for_snr(A, p, snr_db, signal_var=signal_var)
    clean = _mv(A, x.to(A.dtype))
    w = torch.randn(clean.shape, generator=generator, dtype=A.dtype) * math.sqrt(noise_var)
    return clean + w, noise_var


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
    Returns ``(h, h_angular)`` with ``h_angular = F h`` for the unitary DFT ``F``, both
    complex ``(n_antennas,)``; ``h_angular`` has about ``n_paths`` significant entries
    (exactly ``n_paths`` on the grid, with leakage off the grid).
    """
    n = check_positive_int(n_antennas, "n_antennas")
    L = check_positive_int(n_paths, "n_paths")
    if on_grid:
        idx = torch.randperm(n, generator=generator)[:L].to(torch.float64)
        u = 2 * idx / n - 1
    else:
        u = 2 * torch.rand(L, generator=generator, dtype=torch.float64) - 1
    g = torch.complex(
        torch.randn(L, generator=generator, dtype=torch.float64),
        torch.randn(L, generator=generator, dtype=torch.float64),
    ) / math.sqrt(2)
    k = torch.arange(n, dtype=torch.float64)
    steer = torch.exp(1j * math.pi * k.unsqueeze(-1) * u.unsqueeze(0))  # (n, L)
    h = steer @ g / math.sqrt(L)
    h_ang = torch.fft.fft(h, norm="ortho")
    return h, h_ang
