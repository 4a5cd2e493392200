"""Imperfect channel state information: noisy MMSE estimation and Type-II-like DFT feedback.

Two CSI-degradation models of Schynol et al., Sec. 5.1.4:

* **Noisy MMSE estimate** (their eq. (55), after Bjornson et al.): the transmitter observes
  ``y = sqrt(rho) h + n``, ``n ~ CN(0, I)``, with pilot power ``rho``, and forms

  .. math:: \\hat h = R (R + \\rho^{-1} I)^{-1} (h + \\rho^{-1/2} n),

  with error covariance ``C = R - R (R + I/rho)^{-1} R``.
* **DFT feedback quantiser** modelled after the 3GPP Type-II codebook (narrowband, one
  polarisation): expand ``h`` on each orthogonal group of an oversampled 2-D DFT codebook,
  keep the ``L`` strongest coefficients, quantise their amplitudes relative to the strongest
  (3 dB steps) and their phases (PSK), reconstruct, and report the group with the smallest
  reconstruction error.

Functions take the book's downlink matrix ``H`` of shape ``(batch, users, N)`` with rows
``h_k^H`` and per-user covariances ``R`` ``(batch, users, N, N)`` of the column vectors
``h_k`` (as built by :mod:`lib.phy.arrays`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lib.core.checks import check_complex, check_positive_int, per_sample
from lib.core.units import lin_to_db

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


def _shrinkage(R: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """``R (R + I/rho)^{-1}`` for a ``(batch,)`` pilot power, by eigendecomposition of ``R``."""
    lam, U = torch.linalg.eigh(R)
    lam = lam.clamp_min(0)
    d = lam / (lam + 1.0 / rho[:, None, None])
    return (U * d[..., None, :].to(U.dtype)) @ U.mH


def mmse_estimate(H, R, pilot_power, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noisy MMSE channel estimate with pilot power ``rho`` (Schynol et al., eq. (55)).

    Parameters
    ----------
    H : torch.Tensor
        ``(batch, users, N)`` complex, rows ``h_k^H`` (true channels).
    R : torch.Tensor
        ``(batch, users, N, N)`` complex covariances of the columns ``h_k``.
    pilot_power : float or (batch,) tensor
        Pilot SNR ``rho`` (linear, noise variance one).

    Returns
    -------
    torch.Tensor
        ``H_hat`` with the same shape, rows ``hat h_k^H``.
    """
    _check_HR(H, R)
    rho = per_sample(pilot_power, "pilot_power", H.shape[0], device=H.device)
    real = torch.float64 if H.dtype == torch.complex128 else torch.float32
    n = torch.complex(
        torch.randn(H.shape, dtype=real, generator=generator),
        torch.randn(H.shape, dtype=real, generator=generator),
    ) / math.sqrt(2.0)
    h = H.conj()
    y = h + n / rho.sqrt()[:, None, None].to(real)
    h_hat = (_shrinkage(R, rho.to(real)) @ y[..., None]).squeeze(-1)
    return h_hat.conj()


def mmse_error_covariance(R, pilot_power) -> torch.Tensor:
    """Error covariance ``C = R - R (R + I/rho)^{-1} R`` of the MMSE estimate.

    Shape ``(batch, users, N, N)``, like ``R``.
    """
    check_complex(R, "R", ndim=4)
    rho = per_sample(pilot_power, "pilot_power", R.shape[0], device=R.device)
    real = torch.float64 if R.dtype == torch.complex128 else torch.float32
    lam, U = torch.linalg.eigh(R)
    lam = lam.clamp_min(0)
    c = lam / (1.0 + rho.to(real)[:, None, None] * lam)  # lam - lam^2/(lam + 1/rho)
    return (U * c[..., None, :].to(U.dtype)) @ U.mH


def estimation_nmse_db(H_hat: torch.Tensor, H: torch.Tensor) -> float:
    """NMSE in dB, ratio of sums over the whole set: ``10 log10(sum |H_hat - H|^2 / sum |H|^2)``."""
    check_complex(H_hat, "H_hat")
    check_complex(H, "H", shape=tuple(H_hat.shape))
    return float(lin_to_db(float((H_hat - H).abs().pow(2).sum() / H.abs().pow(2).sum())))


@dataclass
class Type2Feedback:
    """Result of :func:`type2_quantize`.

    ``H_hat`` ``(batch, users, N)`` reconstructed channels (rows ``hat h^H``); ``group`` and
    ``beams`` ``(batch, users)`` / ``(batch, users, L)`` the reported group and codeword indices;
    ``bits`` the feedback bits per user (:func:`type2_feedback_bits`).
    """

    H_hat: torch.Tensor
    group: torch.Tensor
    beams: torch.Tensor
    bits: int


def _amp_levels(amp_bits: int, dtype) -> torch.Tensor:
    """Amplitude alphabet ``{1, 2^{-1/2}, 2^{-1}, ..., 0}``: ``2^b - 1`` 3 dB steps and zero."""
    n = 2**amp_bits
    lev = torch.pow(torch.tensor(0.5, dtype=dtype), torch.arange(n - 1, dtype=dtype) / 2)
    return torch.cat([lev, torch.zeros(1, dtype=dtype)])


def type2_feedback_bits(
    n_h: int, n_v: int, oversampling, n_beams: int, amp_bits: int, phase_bits: int
) -> int:
    """Feedback bits per user of :func:`type2_quantize`.

    ``log2(O_h O_v)`` (group) + ``ceil(log2 C(N, L))`` (beam subset) + ``ceil(log2 L)``
    (strongest beam, amplitude 1 and phase 0 by convention) + ``(L - 1)(amp_bits + phase_bits)``.
    The overall gain (strongest coefficient magnitude) is assumed known, like a CQI report.
    """
    N = n_h * n_v
    G = oversampling[0] * oversampling[1]
    return (
        math.ceil(math.log2(G))
        + math.ceil(math.log2(math.comb(N, n_beams)))
        + math.ceil(math.log2(n_beams))
        + (n_beams - 1) * (amp_bits + phase_bits)
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
    """DFT Type-II-like feedback quantisation of each user's channel.

    Parameters
    ----------
    H : torch.Tensor
        ``(batch, users, N)`` complex, rows ``h_k^H``.
    codebook, groups : torch.Tensor
        From :func:`lib.phy.dft_codebook`: ``(N, G N)`` codewords and their group index.
    n_beams : int
        ``L``, the number of reported beams per user.
    amp_bits, phase_bits : int
        Amplitude bits (3 dB steps relative to the strongest, plus zero) and ``2^phase_bits``-PSK.
    n_h, n_v, oversampling : optional
        Only used to count the feedback bits (``bits = -1`` when omitted).

    The quantiser acts on ``h_k`` (the complex conjugate of row ``k``); the strongest
    coefficient keeps its magnitude (assumed reported as a gain) and its phase is the
    reference, since a common phase of ``h_k`` does not change any SINR.
    """
    check_complex(H, "H", ndim=3)
    check_complex(codebook, "codebook", ndim=2)
    N = H.shape[-1]
    if codebook.shape[0] != N:
        raise ValueError(
            f"codebook must have shape ({N}, n_codewords), got {tuple(codebook.shape)}"
        )
    L = check_positive_int(n_beams, "n_beams")
    if L > N:
        raise ValueError(f"n_beams must be <= N = {N}, got {L}")
    check_positive_int(amp_bits, "amp_bits")
    check_positive_int(phase_bits, "phase_bits")
    G = int(groups.max()) + 1
    order = torch.argsort(groups, stable=True)
    B = (
        codebook[:, order].to(H.dtype).reshape(N, G, N).permute(1, 0, 2)
    )  # (G, N, N): orthonormal bases
    h = H.conj()  # (b, k, N)
    coef = torch.einsum("gnm,bkn->bkgm", B.conj(), h)  # coefficients per group (b, k, G, N)
    mag = coef.abs()
    top_mag, top_idx = mag.topk(L, dim=-1)  # (b, k, G, L)
    top_c = coef.gather(-1, top_idx)
    ref = top_c[..., :1]
    rel = top_c / ref  # strongest -> 1
    real = mag.dtype
    levels = _amp_levels(amp_bits, real)
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
