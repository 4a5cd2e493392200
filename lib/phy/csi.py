"""Imperfect channel state information: noisy MMSE estimation and Type-II-like DFT feedback.

Two CSI-degradation models of Schynol and Pesavento, Sec. 5.1.4:

* **Noisy MMSE estimate** (their eq. (55), after Bjornson et al.): the transmitter observes
  ``y = sqrt(rho) h + n``, ``n ~ CN(0, I)``, with pilot power ``rho``, and forms

  .. math:: \\hat h = R (R + \\rho^{-1} I)^{-1} (h + \\rho^{-1/2} n),

  with error covariance ``C = R - R (R + I/rho)^{-1} R``.
* **DFT feedback quantiser** modelled after the 3GPP Type-II codebook (narrowband, one
  polarisation): expand ``h`` on each orthogonal group of an oversampled 2-D DFT codebook,
  keep the ``L`` strongest coefficients, quantise their amplitudes relative to the strongest
  (3 dB steps) and their phases (PSK), reconstruct, and report the group with the smallest
  reconstruction error.

Functions take the book's downlink matrix ``H`` of shape ``(B, K, N)`` with rows ``h_k^H`` and
per-user covariances ``R`` ``(B, K, N, N)`` of the column vectors ``h_k`` (as built by
:mod:`lib.phy.arrays`). Book chapter *Hybrid beamforming under imperfect CSI: outage*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lib.core.checks import (
    _real_dtype,
    check_complex,
    check_positive_int,
    check_tensor,
    per_sample,
    same_device,
    same_dtype,
)
from lib.phy.channels import _hermitian_psd_eigh, complex_normal

__all__ = [
    "mmse_estimate",
    "mmse_error_covariance",
    "estimation_nmse_db",
    "type2_quantize",
    "type2_feedback_bits",
    "Type2Feedback",
]


def _check_HR(H, R):
    check_complex(H, "H", ndim=3)
    check_complex(R, "R", shape=(H.shape[0], H.shape[1], H.shape[2], H.shape[2]))
    same_device(H, R, names=("H", "R"))
    same_dtype(H, R, names=("H", "R"))


def _eig_R(R: torch.Tensor):
    """Checked eigendecomposition of the covariances, eigenvalues clamped at zero."""
    lam, U = _hermitian_psd_eigh(R, "R")
    return lam.clamp_min(0), U


def mmse_estimate(H, R, pilot_power, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noisy MMSE channel estimate with pilot power ``rho`` (Schynol and Pesavento, eq. (55);
    chapter
    *Hybrid beamforming under imperfect CSI*, eq. ``eq-hbfo-mmse``).

    ``hat h = R (R + I/rho)^{-1} (h + rho^{-1/2} n)`` with ``n ~ CN(0, I)`` drawn by
    :func:`lib.phy.complex_normal`.

    Parameters
    ----------
    H : torch.Tensor
        ``(B, K, N)`` complex, rows ``h_k^H`` (true channels).
    R : torch.Tensor
        ``(B, K, N, N)`` complex Hermitian PSD covariances of the columns ``h_k``, same dtype
        and device as ``H``.
    pilot_power : float or torch.Tensor
        Pilot SNR ``rho > 0`` (linear, noise variance one), a scalar or ``(B,)``.
    generator : torch.Generator, optional
        Source of the pilot noise. The noise is drawn on the generator's device and moved to
        ``H``'s device (without a generator, drawn on ``H``'s device), so a CPU generator gives
        the same estimate on every device.

    Returns
    -------
    torch.Tensor
        ``H_hat`` ``(B, K, N)``, rows ``hat h_k^H``, dtype and device of ``H``.
    """
    _check_HR(H, R)
    real = _real_dtype(H)
    rho = per_sample(pilot_power, "pilot_power", H.shape[0], dtype=real, device=H.device)
    n = complex_normal(*H.shape, generator=generator, dtype=H.dtype, device=H.device)
    lam, U = _eig_R(R)
    d = lam / (lam + 1.0 / rho[:, None, None])  # eigenvalues of R (R + I/rho)^{-1}
    shrink = (U * d[..., None, :].to(U.dtype)) @ U.mH
    h = H.conj()
    y = h + n / rho.sqrt()[:, None, None]
    h_hat = (shrink @ y[..., None]).squeeze(-1)
    return h_hat.conj()


def mmse_error_covariance(R, pilot_power) -> torch.Tensor:
    """Error covariance ``C = R - R (R + I/rho)^{-1} R`` of the MMSE estimate.

    Schynol and Pesavento, Sec. 5.1.4 (after their eq. (55)); computed in the eigenbasis of ``R`` as
    ``lam / (1 + rho lam)``, which is PSD by construction.

    Parameters
    ----------
    R : torch.Tensor
        ``(B, K, N, N)`` complex Hermitian PSD covariances.
    pilot_power : float or torch.Tensor
        ``rho > 0``, scalar or ``(B,)``.

    Returns
    -------
    torch.Tensor
        ``C`` ``(B, K, N, N)``, like ``R``.
    """
    check_complex(R, "R", ndim=4)
    rho = per_sample(pilot_power, "pilot_power", R.shape[0], dtype=_real_dtype(R), device=R.device)
    lam, U = _eig_R(R)
    c = lam / (1.0 + rho[:, None, None] * lam)  # lam - lam^2/(lam + 1/rho)
    return (U * c[..., None, :].to(U.dtype)) @ U.mH


def estimation_nmse_db(H_hat: torch.Tensor, H: torch.Tensor) -> float:
    """NMSE in dB, ratio of sums over the whole set: ``10 log10(sum |H_hat - H|^2 / sum |H|^2)``.

    Parameters
    ----------
    H_hat, H : torch.Tensor
        Complex, same shape and device; ``H`` not all zero.

    Returns
    -------
    float
        The NMSE in dB; ``-inf`` for a perfect estimate.

    Raises
    ------
    ValueError
        ``H`` is all zero (the NMSE is undefined).
    """
    check_complex(H_hat, "H_hat")
    check_complex(H, "H", shape=tuple(H_hat.shape))
    same_device(H_hat, H, names=("H_hat", "H"))
    den = float(H.abs().pow(2).sum())
    if den == 0.0:
        raise ValueError("H is all zero: the NMSE is undefined")
    num = float((H_hat - H).abs().pow(2).sum())
    return 10.0 * math.log10(num / den) if num > 0 else -math.inf


@dataclass
class Type2Feedback:
    """Result of :func:`~lib.phy.type2_quantize`.

    Attributes
    ----------
    H_hat : torch.Tensor
        ``(B, K, N)`` reconstructed channels (rows ``hat h^H``).
    group : torch.Tensor
        ``(B, K)`` long, the reported orthogonal group.
    beams : torch.Tensor
        ``(B, K, L)`` long, the reported codeword indices (columns of the codebook).
    bits : int
        Feedback bits per user (:func:`~lib.phy.type2_feedback_bits`; ``-1`` when not counted).
    """

    H_hat: torch.Tensor
    group: torch.Tensor
    beams: torch.Tensor
    bits: int


def _amp_levels(amp_bits: int, dtype, device) -> torch.Tensor:
    """Amplitude alphabet ``{1, 2^{-1/2}, 2^{-1}, ..., 0}``: ``2^b - 1`` 3 dB steps and zero."""
    n = 2**amp_bits
    k = torch.arange(n - 1, dtype=dtype, device=device)
    lev = torch.pow(torch.tensor(0.5, dtype=dtype, device=device), k / 2)
    return torch.cat([lev, torch.zeros(1, dtype=dtype, device=device)])


def type2_feedback_bits(
    n_h: int, n_v: int, oversampling, n_beams: int, amp_bits: int, phase_bits: int
) -> int:
    """Feedback bits per user of :func:`~lib.phy.type2_quantize`.

    ``log2(O_h O_v)`` (group) + ``ceil(log2 C(N, L))`` (beam subset) + ``ceil(log2 L)``
    (strongest beam, amplitude 1 and phase 0 by convention) + ``(L - 1)(amp_bits + phase_bits)``.
    The overall gain (strongest coefficient magnitude) is assumed known, like a CQI report.

    Parameters
    ----------
    n_h, n_v : int
        Array size, ``N = n_h n_v``.
    oversampling : pair of int
        ``(O_h, O_v)``.
    n_beams : int
        ``L``, ``1 <= L <= N``.
    amp_bits, phase_bits : int
        ``>= 1``.

    Returns
    -------
    int
        Bits per user.
    """
    n_h = check_positive_int(n_h, "n_h")
    n_v = check_positive_int(n_v, "n_v")
    if not isinstance(oversampling, (tuple, list)) or len(oversampling) != 2:
        raise TypeError(f"oversampling must be a pair (O_h, O_v), got {oversampling!r}")
    o_h = check_positive_int(oversampling[0], "oversampling[0]")
    o_v = check_positive_int(oversampling[1], "oversampling[1]")
    N = n_h * n_v
    L = check_positive_int(n_beams, "n_beams")
    if L > N:
        raise ValueError(f"n_beams must be <= N = {N}, got {L}")
    amp_bits = check_positive_int(amp_bits, "amp_bits")
    phase_bits = check_positive_int(phase_bits, "phase_bits")
    G = o_h * o_v
    return (
        math.ceil(math.log2(G))
        + math.ceil(math.log2(math.comb(N, L)))
        + math.ceil(math.log2(L))
        + (L - 1) * (amp_bits + phase_bits)
    )


def type2_quantize(
    H: torch.Tensor,
    codebook: torch.Tensor,
    groups: torch.Tensor,
    *,
    n_beams: int = 4,
    amp_bits: int = 3,
    phase_bits: int = 3,
    n_h: int | None = None,
    n_v: int | None = None,
    oversampling=None,
) -> Type2Feedback:
    """DFT Type-II-like feedback quantisation of each user's channel (Schynol and Pesavento, Sec.
    5.1.4).

    The quantiser acts on ``h_k`` (the complex conjugate of row ``k``); the strongest
    coefficient keeps its magnitude (assumed reported as a gain) and its phase is the
    reference, since a common phase of ``h_k`` does not change any SINR. A zero channel
    quantises to zero: ``H_hat`` is zero (never NaN), the reported group is 0, and the beams
    are ``L`` codewords of group 0 (any choice reconstructs zero).

    Parameters
    ----------
    H : torch.Tensor
        ``(B, K, N)`` complex, rows ``h_k^H``.
    codebook, groups : torch.Tensor
        From :func:`lib.phy.dft_codebook`: ``(N, G N)`` codewords (same dtype and device as
        ``H``) and their group index ``(G N,)`` (integers ``0..G-1``, ``N`` codewords each).
    n_beams : int
        ``L``, the number of reported beams per user, ``<= N``.
    amp_bits, phase_bits : int
        Amplitude bits (3 dB steps relative to the strongest, plus zero) and ``2^phase_bits``-PSK.
    n_h, n_v, oversampling : optional
        Only used to count the feedback bits (``bits = -1`` when omitted).

    Returns
    -------
    Type2Feedback
        Reconstructed channels, reported group and beams, and the bit count.
    """
    check_complex(H, "H", ndim=3)
    check_complex(codebook, "codebook", ndim=2)
    N = H.shape[-1]
    if codebook.shape[0] != N or codebook.shape[1] % N != 0:
        raise ValueError(
            f"codebook must have shape ({N}, G * {N}) (G orthogonal groups of N codewords), "
            f"got {tuple(codebook.shape)}"
        )
    check_tensor(groups, "groups", shape=(codebook.shape[1],))
    if groups.is_floating_point() or groups.is_complex() or groups.dtype == torch.bool:
        raise TypeError(f"groups must be an integer tensor, got {groups.dtype}")
    same_device(H, codebook, groups, names=("H", "codebook", "groups"))
    same_dtype(H, codebook, names=("H", "codebook"))
    L = check_positive_int(n_beams, "n_beams")
    if L > N:
        raise ValueError(f"n_beams must be <= N = {N}, got {L}")
    check_positive_int(amp_bits, "amp_bits")
    check_positive_int(phase_bits, "phase_bits")
    G = codebook.shape[1] // N
    counts = torch.bincount(groups.clamp(0, G), minlength=G + 1)
    if int(groups.min()) < 0 or int(groups.max()) >= G or bool((counts[:G] != N).any()):
        raise ValueError(f"groups must hold each of 0..{G - 1} exactly N = {N} times")
    order = torch.argsort(groups, stable=True)
    B = codebook[:, order].reshape(N, G, N).permute(1, 0, 2)  # (G, N, N): orthonormal bases
    h = H.conj()  # (b, k, N)
    coef = torch.einsum("gnm,bkn->bkgm", B.conj(), h)  # coefficients per group (b, k, G, N)
    mag = coef.abs()
    top_mag, top_idx = mag.topk(L, dim=-1)  # (b, k, G, L)
    top_c = coef.gather(-1, top_idx)
    ref = top_c[..., :1]
    # strongest -> 1; a zero channel has ref = 0 and every coefficient 0: divide by 1 instead
    rel = top_c / torch.where(ref == 0, torch.ones_like(ref), ref)
    real = mag.dtype
    levels = _amp_levels(amp_bits, real, H.device)
    a_q = levels[(rel.abs()[..., None] - levels).abs().argmin(-1)]
    n_ph = 2**phase_bits
    ph = torch.round(torch.angle(rel) / (2 * math.pi / n_ph)) * (2 * math.pi / n_ph)
    q = torch.polar(a_q, ph) * ref.abs()  # reference phase dropped
    # reconstruct in each group: sum_l q_l b_{g, idx_l}; compare with h up to a common phase
    Bsel = B[None, None].expand(h.shape[0], h.shape[1], G, N, N)
    cols = Bsel.gather(-1, top_idx[..., None, :].expand(-1, -1, -1, N, -1))  # (b, k, G, N, L)
    rec = (cols @ q[..., None]).squeeze(-1)  # (b, k, G, N)
    # phase-aligned error: min_phi ||h - e^{j phi} rec||^2
    inner = (rec.conj() * h[:, :, None, :]).sum(-1)
    err = h.abs().pow(2).sum(-1)[:, :, None] + rec.abs().pow(2).sum(-1) - 2 * inner.abs()
    g_best = err.argmin(-1)  # (b, k)
    gi = g_best[..., None, None].expand(-1, -1, 1, N)
    rec_best = rec.gather(2, gi).squeeze(2)
    ph_best = inner.gather(2, g_best[..., None]).squeeze(-1)
    rec_best = (
        rec_best * torch.polar(torch.ones_like(ph_best.real), torch.angle(ph_best))[..., None]
    )
    beams_in_group = top_idx.gather(2, g_best[..., None, None].expand(-1, -1, 1, L)).squeeze(2)
    beams = order[(g_best[..., None] * N + beams_in_group).reshape(-1)].reshape(
        beams_in_group.shape
    )
    bits = -1
    if n_h is not None and n_v is not None and oversampling is not None:
        bits = type2_feedback_bits(n_h, n_v, oversampling, L, amp_bits, phase_bits)
    return Type2Feedback(H_hat=rec_best.conj(), group=g_best, beams=beams, bits=bits)
