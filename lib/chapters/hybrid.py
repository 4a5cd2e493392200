"""Pipelines of the hybrid-beamforming chapters (Part III): the instances they draw, the
imperfect-CSI data set, and thin, tested wrappers so that the notebooks only call and print.

* :func:`~lib.chapters.draw_instances` -- the chapters' random multi-user instances (channels and
  covariances).
* :func:`~lib.chapters.imperfect_csi_dataset` -- instances served under perfect CSI, their MMSE
  estimates
  and per-user error energies.
* :func:`~lib.chapters.margin_design` / :func:`~lib.chapters.margin_outage` -- G-HBF-marg: the
  greedy hybrid design on the
  estimates with every SINR target raised by a margin (dB), and its outage on true channels.
* :func:`~lib.chapters.loaded_design` -- :func:`lib.precoding.loaded_min_power` on a base design's
  analog
  matrix with loading ``kappa`` times the error energy.
* :func:`~lib.chapters.mean_power_db`, :func:`~lib.chapters.instance_standard_error` -- summaries
  of an
  :class:`lib.precoding.OutageResult`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from lib.core.checks import check_positive_int
from lib.core.evaluation import mean_se
from lib.core.units import db_to_lin, lin_to_db
from lib.phy import arrays, csi
from lib.precoding.hybrid import HybridResult, greedy_codebook_selection
from lib.precoding.robust import OutageResult, empirical_outage, loaded_min_power

__all__ = [
    "draw_instances",
    "ImperfectCSIData",
    "imperfect_csi_dataset",
    "margin_design",
    "margin_outage",
    "loaded_design",
    "mean_power_db",
    "instance_standard_error",
]


class ImperfectCSIData(NamedTuple):
    """Output of :func:`~lib.chapters.imperfect_csi_dataset`.

    Attributes
    ----------
    H : torch.Tensor
        ``(kept, K, M)`` true channels of the kept instances.
    H_hat : torch.Tensor
        ``(kept, K, M)`` their MMSE estimates.
    R : torch.Tensor
        ``(kept, K, M, M)`` channel covariances.
    error_energy : torch.Tensor
        ``(kept, K)`` mean diagonal of the MMSE error covariance per user.
    kept : torch.Tensor
        ``(batch,)`` bool mask of the drawn batch.
    """

    H: torch.Tensor
    R: torch.Tensor
    H_hat: torch.Tensor
    error_energy: torch.Tensor
    kept: torch.Tensor


def imperfect_csi_dataset(
    batch: int,
    generator: torch.Generator | None,
    *,
    pilot: float,
    codebook,
    n_rf: int,
    sinr_targets,
    noise_var,
    max_power: float,
    **draw_kw,
) -> ImperfectCSIData:
    """Draw ``batch`` instances, keep those served under perfect CSI, estimate their channels.

    Instances come from :func:`~lib.chapters.draw_instances` (``draw_kw`` passed on); those for
    which the
    greedy design on the *true* channels (G-HBF-perf, Schynol and Pesavento, Sec. 5) is infeasible
    within ``max_power`` are dropped, so that every outage measured later is due to the CSI
    error. The rest get an MMSE estimate at linear pilot SNR ``pilot``
    (:func:`lib.phy.mmse_estimate`, same ``generator``) and the error energy ``tr(C_k) / M``
    per user. Chapter: *Hybrid beamforming under imperfect CSI*.

    Parameters
    ----------
    batch : int
        Number of instances drawn.
    generator : torch.Generator or None
        Source of the instances and of the estimation noise.
    pilot : float
        Linear pilot SNR, finite and ``> 0``.
    codebook, n_rf, sinr_targets, noise_var, max_power
        Of :func:`lib.precoding.greedy_codebook_selection` (``max_power`` is ``P_max``).
    **draw_kw
        ``users``, ``n_h``, ``n_v``, ``spread``, ``pas`` of :func:`~lib.chapters.draw_instances`.

    Returns
    -------
    ImperfectCSIData
        ``H``, ``R``, ``H_hat`` of the kept instances, ``error_energy`` ``(kept, K)`` and the
        ``(batch,)`` mask ``kept``.
    """
    if not (isinstance(pilot, (int, float)) and math.isfinite(pilot) and pilot > 0):
        raise ValueError(f"pilot must be finite and > 0, got {pilot}")
    H, R = draw_instances(batch, generator, **draw_kw)
    perf = greedy_codebook_selection(
        H, codebook, n_rf, sinr_targets, noise_var, max_power=max_power
    )
    keep = perf.feasible
    H, R = H[keep], R[keep]
    H_hat = csi.mmse_estimate(H, R, pilot, generator=generator)
    eps = torch.diagonal(csi.mmse_error_covariance(R, pilot), dim1=-2, dim2=-1).real.mean(-1)
    return ImperfectCSIData(H, R, H_hat, eps, keep)


def margin_design(
    H_hat, margin_db: float, *, codebook, n_rf: int, sinr_targets, noise_var, max_power: float
) -> HybridResult:
    """G-HBF-marg: greedy hybrid design on the estimates with every SINR target raised.

    The targets are multiplied by ``10^(margin_db / 10)`` and the design is
    :func:`lib.precoding.greedy_codebook_selection` on ``H_hat`` (Schynol and Pesavento, Sec. 5, the
    margin baseline); ``margin_db = 0`` is the naive design that trusts the estimates.

    Parameters
    ----------
    H_hat : torch.Tensor
        ``(B, K, M)`` complex channel estimates.
    margin_db : float
        SINR margin in dB (finite).
    codebook, n_rf, sinr_targets, noise_var, max_power
        Of :func:`lib.precoding.greedy_codebook_selection` (nominal targets).

    Returns
    -------
    HybridResult
    """
    if not math.isfinite(margin_db):
        raise ValueError(f"margin_db must be finite, got {margin_db}")
    return greedy_codebook_selection(
        H_hat, codebook, n_rf, sinr_targets * db_to_lin(margin_db), noise_var, max_power=max_power
    )


def margin_outage(
    H_true,
    H_hat,
    margin_db: float,
    *,
    codebook,
    n_rf: int,
    sinr_targets,
    noise_var,
    max_power: float,
) -> OutageResult:
    """Outage on the true channels of the :func:`~lib.chapters.margin_design` computed on ``H_hat``.

    Evaluated by :func:`lib.precoding.empirical_outage` with the nominal targets (Schynol et
    al., eq. (10)); this is the function :func:`lib.precoding.bisect_margin` bisects.

    Parameters
    ----------
    H_true, H_hat : torch.Tensor
        ``(B, K, M)`` true channels and their estimates.
    margin_db : float
        SINR margin in dB.
    codebook, n_rf, sinr_targets, noise_var, max_power
        As in :func:`~lib.chapters.margin_design`.

    Returns
    -------
    OutageResult
    """
    design = margin_design(
        H_hat,
        margin_db,
        codebook=codebook,
        n_rf=n_rf,
        sinr_targets=sinr_targets,
        noise_var=noise_var,
        max_power=max_power,
    )
    return empirical_outage(H_true, design, sinr_targets, noise_var, max_power=max_power)


def loaded_design(
    H_hat,
    base: HybridResult,
    error_energy,
    kappa: float,
    *,
    sinr_targets,
    noise_var,
    max_power: float,
) -> HybridResult:
    """Diagonal loading on the analog matrix of ``base``.

    :func:`lib.precoding.loaded_min_power` on ``base.F_RF`` with loading
    ``kappa * error_energy`` (``kappa >= 0`` scales the per-user error energy).

    Parameters
    ----------
    H_hat : torch.Tensor
        ``(B, K, M)`` complex channel estimates.
    base : HybridResult
        The design whose analog matrix ``F_RF`` ``(B, M, N_RF)`` is kept.
    error_energy : torch.Tensor
        ``(B, K)`` (or ``(B,)``) error energies ``eps_k``.
    kappa : float
        Loading factor, finite and ``>= 0``.
    sinr_targets, noise_var, max_power
        As in :func:`lib.precoding.loaded_min_power`.

    Returns
    -------
    HybridResult
    """
    if not (isinstance(kappa, (int, float)) and math.isfinite(kappa) and kappa >= 0):
        raise ValueError(f"kappa must be finite and >= 0, got {kappa}")
    return loaded_min_power(
        H_hat, base.F_RF, sinr_targets, noise_var, kappa * error_energy, max_power=max_power
    )


def mean_power_db(result: OutageResult) -> float:
    """Mean allocated power of an :class:`lib.precoding.OutageResult` in dB.

    Infeasible designs are charged ``max_power`` (see :func:`lib.precoding.empirical_outage`).

    Parameters
    ----------
    result : OutageResult

    Returns
    -------
    float
        ``10 log10(mean power)``.
    """
    return float(lin_to_db(result.power.mean()))


def instance_standard_error(result) -> float:
    """Standard error of an outage rate with the *instance* (not the user) as the sample.

    Users of one instance share a design and are not independent, so the rate is treated as
    the mean of the per-instance outage fractions: ``std(fractions) / sqrt(batch)`` (unbiased
    std).

    Parameters
    ----------
    result : OutageResult or torch.Tensor
        An :class:`lib.precoding.OutageResult` or its ``(B, K)`` bool ``in_outage``, ``B >= 2``.

    Returns
    -------
    float
    """
    in_outage = result.in_outage if isinstance(result, OutageResult) else torch.as_tensor(result)
    if in_outage.dim() != 2 or in_outage.shape[0] < 2:
        shape = tuple(in_outage.shape)
        raise ValueError(f"in_outage must be (batch >= 2, users), got shape {shape}")
    return mean_se(in_outage.double().mean(-1))[1]


def draw_instances(
    batch: int,
    generator: torch.Generator | None = None,
    *,
    users: int = 4,
    n_h: int = 8,
    n_v: int = 4,
    spread: float = math.radians(10.0),
    pas: str = "gaussian",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random multi-user instances of the hybrid chapters: channels ``H`` and covariances ``R``.

    Every user gets a horizontal angle uniform in ``[-pi/3, pi/3]`` and a vertical angle
    uniform in ``[-pi/6, pi/6]`` (in this order, both drawn from
    ``generator``), the Kronecker local-scattering covariance of an ``n_h x n_v`` UPA with
    angular ``spread`` and power angular spectrum ``pas``
    (:func:`lib.phy.upa_covariance`), and one Rayleigh channel drawn from it
    (:func:`lib.phy.channels_from_covariance`, same ``generator``). The defaults are the
    chapters' setup: 4 users, 8x4 UPA, 10 degrees Gaussian spread.

    Parameters
    ----------
    batch : int
        ``B``.
    generator : torch.Generator, optional
    users : int
        ``K``.
    n_h, n_v : int
        UPA size, ``M = n_h n_v``.
    spread : float
        Angular standard deviation in radians, finite and ``> 0``.
    pas : {"gaussian", "laplacian"}
        Power angular spectrum.

    Returns
    -------
    tuple of torch.Tensor
        ``H`` ``(B, K, M)`` complex128 with rows ``h_k^H`` and ``R`` ``(B, K, M, M)``.
    """
    batch = check_positive_int(batch, "batch")
    users = check_positive_int(users, "users")
    n_h = check_positive_int(n_h, "n_h")
    n_v = check_positive_int(n_v, "n_v")
    if not (math.isfinite(spread) and spread > 0):
        raise ValueError(f"spread must be finite and > 0, got {spread}")
    # written as ``* math.pi / 3`` (not ``* (math.pi / 3)``) to keep the chapters' draws bit-exact
    ah = (torch.rand(batch, users, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi / 3
    av = (torch.rand(batch, users, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi / 6
    R = arrays.upa_covariance(n_h, n_v, ah, av, spread, pas=pas)
    H = arrays.channels_from_covariance(R, generator=generator)
    return H, R
