"""CSI feedback in the angular-delay domain: the representation CsiNet and compressed-sensing
feedback work on.

A user's OFDM channel is ``H`` ``(..., N_c, M)``: row ``n`` is the channel of subcarrier ``n``
to the ``M = n_h n_v`` base-station antennas (the book's UPA order, element ``(m_h, m_v)`` at
index ``m_h n_v + m_v``). Its angular-delay image (as in Wen, Shih and Jin 2018) is

.. math:: X = F_a^H H^T F_d, \\qquad X \\in \\mathbb{C}^{M \\times N_c},

where ``F_a^H`` applies the unitary 2-D FFT over the array (``n_h x n_v``) and ``F_d`` the
unitary inverse FFT over the subcarriers, which maps a path of delay ``tau`` to delay tap
``tau N_c Delta f``. With the delays measured from the first arrival (timing advance), the
energy sits in the first taps; feedback keeps ``T`` of them (``X`` ``(..., M, T)``) and the
rest is the **truncation error**, a floor no codec can go below (both transforms are unitary,
so the NMSE of a reconstruction on the full channel is that of the image plus the truncated
energy).

* :func:`~lib.phy.angular_delay` / :func:`~lib.phy.from_angular_delay` -- the transform pair;
* :func:`~lib.phy.feedback_nmse_db` -- NMSE on the full channel from the image error and the
  truncated energy;
* :func:`~lib.phy.realify_image` / :func:`~lib.phy.complexify_image` -- the ``(2, M, T)``
  real image a convolutional network takes, and back.
"""

from __future__ import annotations

import math

import torch

from lib.core.checks import check_complex, check_positive_int, check_real, check_tensor

__all__ = [
    "angular_delay",
    "from_angular_delay",
    "feedback_nmse_db",
    "realify_image",
    "complexify_image",
]


def _check_array(n_h, n_v, M):
    n_h = check_positive_int(n_h, "n_h")
    n_v = check_positive_int(n_v, "n_v")
    if n_h * n_v != M:
        raise ValueError(f"n_h * n_v must equal the number of antennas M = {M}, "
                         f"got {n_h} * {n_v}")  # fmt: skip
    return n_h, n_v


def _angular(H, n_h, n_v, inverse=False):
    """Unitary 2-D DFT over the last axis (``M = n_h n_v`` antennas); no checks."""
    shape = H.shape
    G = H.reshape(*shape[:-1], n_h, n_v)
    G = (torch.fft.ifft2 if inverse else torch.fft.fft2)(G, norm="ortho")
    return G.reshape(shape)


def angular_delay(H: torch.Tensor, n_h: int, n_v: int, n_taps: int | None = None):
    """Angular-delay image ``X = F_a^H H^T F_d`` of OFDM channels, truncated to ``n_taps``.

    Parameters
    ----------
    H : torch.Tensor
        ``(..., N_c, M)`` complex, one row per subcarrier.
    n_h, n_v : int
        Array size, ``n_h n_v = M``.
    n_taps : int, optional
        Keep the first ``n_taps`` delay taps (``<= N_c``; default all).

    Returns
    -------
    torch.Tensor
        ``(..., M, n_taps)`` complex, same dtype as ``H``.
    """
    check_complex(H, "H")
    if H.ndim < 2:
        raise ValueError(f"H must have shape (..., N_c, M), got {tuple(H.shape)}")
    Nc, M = H.shape[-2:]
    n_h, n_v = _check_array(n_h, n_v, M)
    T = Nc if n_taps is None else check_positive_int(n_taps, "n_taps")
    if T > Nc:
        raise ValueError(f"n_taps must be <= N_c = {Nc}, got {T}")
    X = torch.fft.ifft(_angular(H, n_h, n_v), dim=-2, norm="ortho")  # delay taps (.., Nc, M)
    return X[..., :T, :].transpose(-1, -2)


def from_angular_delay(X: torch.Tensor, n_h: int, n_v: int, n_subcarriers: int):
    """Channels ``(..., N_c, M)`` from an image ``(..., M, T)`` whose taps beyond ``T`` are
    zero (the inverse of :func:`~lib.phy.angular_delay` after truncation).

    Parameters
    ----------
    X : torch.Tensor
        ``(..., M, T)`` complex.
    n_h, n_v : int
        Array size, ``n_h n_v = M``.
    n_subcarriers : int
        ``N_c >= T``.
    """
    check_complex(X, "X")
    if X.ndim < 2:
        raise ValueError(f"X must have shape (..., M, T), got {tuple(X.shape)}")
    M, T = X.shape[-2:]
    n_h, n_v = _check_array(n_h, n_v, M)
    Nc = check_positive_int(n_subcarriers, "n_subcarriers")
    if Nc < T:
        raise ValueError(f"n_subcarriers must be >= the number of taps T = {T}, got {Nc}")
    full = torch.zeros(*X.shape[:-2], Nc, M, dtype=X.dtype, device=X.device)
    full[..., :T, :] = X.transpose(-1, -2)
    return _angular(torch.fft.fft(full, dim=-2, norm="ortho"), n_h, n_v, inverse=True)


def feedback_nmse_db(X_hat: torch.Tensor, X: torch.Tensor, tail=None, *, per_sample=False):
    """NMSE (dB) of reconstructed images against the full channels:

    .. math:: \\mathrm{NMSE} = \\frac{\\mathbb{E}\\,[\\|X - \\hat X\\|_F^2 + e]}
              {\\mathbb{E}\\,[\\|X\\|_F^2 + e]},

    ``e`` the energy of the truncated taps (``tail``; zero when omitted: the NMSE of the
    image alone). The expectations are over the batch (the ratio of means, as in CsiNet's
    papers); ``per_sample=True`` returns the per-sample ratios in dB instead.

    Parameters
    ----------
    X_hat, X : torch.Tensor
        ``(B, M, T)`` complex, same shape.
    tail : torch.Tensor, optional
        ``(B,)`` real, ``>= 0``.
    """
    check_complex(X, "X", ndim=3)
    check_tensor(X_hat, "X_hat", complex_=True, shape=tuple(X.shape))
    if tail is None:
        tail = torch.zeros(X.shape[0], dtype=X.real.dtype, device=X.device)
    check_real(tail, "tail", shape=(X.shape[0],))
    if bool((tail < 0).any()):
        raise ValueError("tail must be >= 0 (an energy)")
    num = (X - X_hat).abs().pow(2).sum((-1, -2)) + tail
    den = X.abs().pow(2).sum((-1, -2)) + tail
    if bool((den <= 0).any()):
        raise ValueError("X has an all-zero sample (with zero tail): the NMSE is undefined")
    if per_sample:
        return 10 * torch.log10(num / den)
    return 10 * math.log10(float(num.mean() / den.mean()))


def realify_image(X: torch.Tensor) -> torch.Tensor:
    """``(..., M, T)`` complex to ``(..., 2, M, T)`` real (real and imaginary planes)."""
    check_complex(X, "X")
    return torch.stack([X.real, X.imag], dim=-3)


def complexify_image(Z: torch.Tensor) -> torch.Tensor:
    """``(..., 2, M, T)`` real to ``(..., M, T)`` complex (inverse of
    :func:`~lib.phy.realify_image`)."""
    check_real(Z, "Z")
    if Z.ndim < 3 or Z.shape[-3] != 2:
        raise ValueError(f"Z must have shape (..., 2, M, T), got {tuple(Z.shape)}")
    return torch.complex(Z[..., 0, :, :], Z[..., 1, :, :])
