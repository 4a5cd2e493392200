"""Channel statistics that tell deployment sites and channel models apart (chapter *Channels from
ray tracing*).

Path statistics take per-path powers ``p`` ``(..., L)`` (zero for an absent path):

* :func:`~lib.phy.rms_delay_spread` -- :math:`\\sqrt{\\overline{\\tau^2} - \\bar\\tau^2}` with
  power weights;
* :func:`~lib.phy.rms_angular_spread` -- the circular spread of 3GPP TR 38.901 (Annex A.1),
  :math:`\\sqrt{-2\\ln|\\sum_\\ell p_\\ell e^{j\\varphi_\\ell}/\\sum_\\ell p_\\ell|}`;
* :func:`~lib.phy.significant_paths` -- paths within ``threshold_db`` of the strongest.

Array statistics take channels ``H`` ``(..., K, M)`` (row ``k`` is
:math:`\\mathbf h_k^{\\mathsf H}`):

* :func:`~lib.phy.spatial_covariance` --
  :math:`\\mathbf R = \\mathbb E[\\mathbf h \\mathbf h^{\\mathsf H}]` over users;
* :func:`~lib.phy.covariance_rank` -- eigenvalues needed for a ``fraction`` of the power;
* :func:`~lib.phy.beams_for_power` -- orthogonal DFT beams needed for a ``fraction`` of a user's
  power (the angular spread as the array sees it);
* :func:`~lib.phy.user_correlation` -- :math:`|\\mathbf h_i^{\\mathsf H}\\mathbf h_j| /
  (\\|\\mathbf h_i\\|\\|\\mathbf h_j\\|)` of every pair of users of a sample;
* :func:`~lib.phy.correlation_matrix_distance` -- the correlation matrix distance of Herdin et
  al. (2005), :math:`1 - \\mathrm{tr}(\\mathbf R_1\\mathbf R_2) / (\\|\\mathbf R_1\\|_F
  \\|\\mathbf R_2\\|_F)`, 0 for covariances equal up to a scale and 1 for orthogonal ones.
"""

from __future__ import annotations

import torch

from lib.core.checks import check_number, check_tensor

__all__ = [
    "rms_delay_spread",
    "rms_angular_spread",
    "significant_paths",
    "spatial_covariance",
    "covariance_rank",
    "beams_for_power",
    "user_correlation",
    "correlation_matrix_distance",
]


def _check_power(power, name="power"):
    check_tensor(power, name, complex_=False, lo=0)
    if power.dim() == 0 or power.shape[-1] == 0:
        raise ValueError(f"{name} must have a path dimension (..., L) with L >= 1")
    if bool((power.sum(-1) <= 0).any()):
        raise ValueError(f"{name}: every entry of (...) needs a path of positive power")
    return power


def rms_delay_spread(power: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Power-weighted RMS delay spread ``(...,)`` (units of ``tau``) of paths ``(..., L)``."""
    _check_power(power)
    check_tensor(tau, "tau", complex_=False, shape=tuple(power.shape))
    w = power / power.sum(-1, keepdim=True)
    m = (w * tau).sum(-1)
    return ((w * (tau - m[..., None]) ** 2).sum(-1)).clamp_min(0).sqrt()


def rms_angular_spread(power: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Circular RMS angular spread ``(...,)`` in radians (3GPP TR 38.901, eq. (A-1)) of paths
    ``(..., L)`` with angles ``angle`` (radians)."""
    _check_power(power)
    check_tensor(angle, "angle", complex_=False, shape=tuple(power.shape))
    w = power / power.sum(-1, keepdim=True)
    r = (w * torch.polar(torch.ones_like(angle), angle)).sum(-1).abs()
    return (-2 * torch.log(r.clamp(min=1e-300, max=1.0))).clamp_min(0).sqrt()


def significant_paths(power: torch.Tensor, threshold_db: float = 20.0) -> torch.Tensor:
    """Number of paths ``(...,)`` whose power is within ``threshold_db`` of the strongest."""
    _check_power(power)
    thr = check_number(threshold_db, "threshold_db", lo=0)
    floor = power.amax(-1, keepdim=True) * 10 ** (-thr / 10)
    return ((power >= floor) & (power > 0)).sum(-1)


def spatial_covariance(H: torch.Tensor) -> torch.Tensor:
    """``R = E[h h^H]`` ``(..., M, M)`` over the users of ``H`` ``(..., U, M)`` (row = ``h^H``)."""
    check_tensor(H, "H", complex_=True, ndim=tuple(range(2, 8)))
    return H.mH @ H / H.shape[-2]


def covariance_rank(R: torch.Tensor, fraction: float = 0.9) -> torch.Tensor:
    """Least number of eigenvalues of ``R`` ``(..., M, M)`` whose sum reaches ``fraction`` of
    the trace (integer tensor ``(...,)``)."""
    check_tensor(R, "R", complex_=True, ndim=tuple(range(2, 8)))
    f = check_number(fraction, "fraction", lo=0, hi=1, lo_open=True)
    lam = torch.linalg.eigvalsh(R).flip(-1).clamp_min(0)
    c = lam.cumsum(-1) / lam.sum(-1, keepdim=True)
    return (c < f - 1e-12).sum(-1) + 1


def beams_for_power(H: torch.Tensor, codebook: torch.Tensor, fraction: float = 0.9):
    """Least number of the orthonormal beams ``codebook`` ``(M, M)`` whose received power
    reaches ``fraction`` of each user's ``||h||^2``; ``H`` ``(..., M)`` gives ``(...,)``."""
    check_tensor(H, "H", complex_=True)
    M = H.shape[-1]
    check_tensor(codebook, "codebook", complex_=True, shape=(M, M))
    f = check_number(fraction, "fraction", lo=0, hi=1, lo_open=True)
    g = (H @ codebook.to(H.dtype)).abs() ** 2  # |h^H f_b|^2, (..., M)
    g = g.sort(-1, descending=True).values
    c = g.cumsum(-1) / g.sum(-1, keepdim=True)
    return (c < f - 1e-9).sum(-1) + 1


def user_correlation(H: torch.Tensor) -> torch.Tensor:
    """``|h_i^H h_j| / (||h_i|| ||h_j||)`` for every pair ``i < j`` of ``H`` ``(..., K, M)``:
    ``(..., K (K - 1) / 2)``."""
    check_tensor(H, "H", complex_=True, ndim=tuple(range(2, 8)))
    K = H.shape[-2]
    if K < 2:
        raise ValueError(f"H must hold at least 2 users (dimension -2), got {K}")
    Hn = H / torch.linalg.vector_norm(H, dim=-1, keepdim=True)
    G = (Hn @ Hn.mH).abs()
    i, j = torch.triu_indices(K, K, 1)
    return G[..., i, j]


def correlation_matrix_distance(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Correlation matrix distance (Herdin et al., 2005) of Hermitian PSD ``R1``, ``R2``
    ``(..., M, M)``: ``1 - tr(R1 R2) / (||R1||_F ||R2||_F)`` in ``[0, 1]``."""
    check_tensor(R1, "R1", complex_=True, ndim=tuple(range(2, 8)))
    check_tensor(R2, "R2", complex_=True, ndim=tuple(range(2, 8)))
    if R1.shape[-2:] != R2.shape[-2:]:
        raise ValueError(f"R1 and R2 must be M x M of one size, got {tuple(R1.shape)} and "
                         f"{tuple(R2.shape)}")  # fmt: skip
    tr = (R1 * R2.mT).sum((-2, -1)).real  # tr(R1 R2)
    n1 = torch.linalg.matrix_norm(R1)
    n2 = torch.linalg.matrix_norm(R2)
    return (1 - tr / (n1 * n2)).clamp(0, 1)
