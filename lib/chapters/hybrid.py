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
* :data:`~lib.chapters.hybrid.OUTAGE_CHAPTER`, :func:`~lib.chapters.outage_setup` -- the set-up
  of the chapter *Hybrid beamforming under imperfect CSI*; :func:`~lib.chapters.outage_study` --
  its pipeline (margin bisected and loading factor swept on validation data, every design
  evaluated on test data); :func:`~lib.chapters.conic_sdp_outage` -- the conic robust SDP on
  given analog beams; :func:`~lib.chapters.outage_summary` -- a JSON-ready summary;
  :func:`~lib.chapters.outage_results` -- the stored large-sample evaluation
  (``results/hybrid_outage``, written by ``scripts/eval_hybrid_outage.py``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import torch

from lib.core.checks import check_positive_int
from lib.core.evaluation import mean_se
from lib.core.resources import results_dir
from lib.core.units import db_to_lin, lin_to_db
from lib.phy import arrays, csi
from lib.precoding.hybrid import HybridResult, greedy_codebook_selection
from lib.precoding.robust import (
    OutageResult,
    bisect_margin,
    empirical_outage,
    loaded_min_power,
    robust_sdp_design,
)

__all__ = [
    "draw_instances",
    "ImperfectCSIData",
    "imperfect_csi_dataset",
    "margin_design",
    "margin_outage",
    "loaded_design",
    "mean_power_db",
    "instance_standard_error",
    "OUTAGE_CHAPTER",
    "outage_setup",
    "OutageStudy",
    "outage_study",
    "SDPOutage",
    "conic_sdp_outage",
    "outage_summary",
    "outage_results",
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


#: The set-up of the chapter *Hybrid beamforming under imperfect CSI*: an ``n_h x n_v`` UPA,
#: ``users`` users, ``n_rf`` RF chains, SINR target, spread, pilot SNR and power cap in dB, unit
#: noise, nominal outage ``rho``; the plain (32-codeword) DFT codebook and one greedy sweep.
OUTAGE_CHAPTER = dict(
    n_h=8,
    n_v=4,
    users=4,
    n_rf=5,
    gamma_db=10.0,
    spread_deg=10.0,
    pilot_db=10.0,
    max_power_db=20.0,
    noise_var=1.0,
    rho=0.1,
)


def outage_setup() -> tuple[dict, dict, float]:
    """The keyword sets of :data:`~lib.chapters.hybrid.OUTAGE_CHAPTER`.

    Returns
    -------
    tuple
        ``(setup, draw, pilot)``: ``setup`` the keywords ``codebook``, ``n_rf``,
        ``sinr_targets``, ``noise_var``, ``max_power`` of
        :func:`~lib.chapters.imperfect_csi_dataset` and :func:`~lib.chapters.margin_design`
        (linear scale, the plain DFT codebook of :func:`lib.phy.dft_codebook`), ``draw`` those
        of :func:`~lib.chapters.draw_instances` and ``pilot`` the linear pilot SNR.
    """
    c = OUTAGE_CHAPTER
    codebook, _, _ = arrays.dft_codebook(c["n_h"], c["n_v"])
    setup = dict(
        codebook=codebook,
        n_rf=c["n_rf"],
        sinr_targets=db_to_lin(c["gamma_db"]),
        noise_var=c["noise_var"],
        max_power=db_to_lin(c["max_power_db"]),
    )
    draw = dict(users=c["users"], n_h=c["n_h"], n_v=c["n_v"], spread=math.radians(c["spread_deg"]))
    return setup, draw, db_to_lin(c["pilot_db"])


class OutageStudy(NamedTuple):
    """Output of :func:`~lib.chapters.outage_study`; every :class:`lib.precoding.OutageResult`
    is on the test set.

    Attributes
    ----------
    margin_db : float
        The margin bisected on the validation set.
    margin_trace : list
        ``(margin_db, validation outage)`` pairs the bisection evaluated.
    kappa : float
        The loading factor of least validation outage.
    kappa_val : dict
        ``kappa -> validation outage``.
    perf : OutageResult
        G-HBF-perf on the test set.
    naive : OutageResult
        The naive design.
    marg : OutageResult
        G-HBF-marg at ``margin_db``.
    loaded : OutageResult
        Diagonal loading at ``kappa``.
    margin_curve : dict
        ``margin_db -> OutageResult`` on the test set.
    kappa_curve : dict
        ``kappa -> OutageResult`` on the test set.
    naive_design : HybridResult
        The naive design on the test estimates (its analog beams serve the conic SDP).
    marg_design : HybridResult
        The G-HBF-marg design on the test estimates.
    """

    margin_db: float
    margin_trace: list
    kappa: float
    kappa_val: dict
    perf: OutageResult
    naive: OutageResult
    marg: OutageResult
    loaded: OutageResult
    margin_curve: dict
    kappa_curve: dict
    naive_design: HybridResult
    marg_design: HybridResult


def outage_study(
    val: ImperfectCSIData,
    test: ImperfectCSIData,
    *,
    rho: float,
    margins,
    kappas,
    margin_hi: float = 8.0,
    margin_iters: int = 5,
    codebook,
    n_rf: int,
    sinr_targets,
    noise_var,
    max_power: float,
) -> OutageStudy:
    """The pipeline of the chapter *Hybrid beamforming under imperfect CSI*.

    On ``val``: the margin of G-HBF-marg bisected (:func:`lib.precoding.bisect_margin` on
    ``[0, margin_hi]`` dB, ``margin_iters`` halvings) to the smallest one whose outage is at
    most ``rho``, and the loading factor swept over ``kappas``
    (:func:`~lib.chapters.loaded_design` on the naive analog beams), keeping the one of least
    outage. On ``test``: G-HBF-perf (greedy on the true channels), the naive design, G-HBF-marg
    at every margin of ``margins`` and at the bisected one, and the loading at every ``kappa``,
    all by :func:`lib.precoding.empirical_outage`.

    Parameters
    ----------
    val, test : ImperfectCSIData
        Of :func:`~lib.chapters.imperfect_csi_dataset`.
    rho : float
        Nominal outage in ``(0, 1)``.
    margins : iterable of float
        Margins (dB) of the test trade-off curve (0, the naive design, is always added).
    kappas : sequence of float
        Loading factors, ``>= 0``.
    margin_hi : float
        Upper end of the bisection bracket (dB).
    margin_iters : int
        Halvings of the bracket.
    codebook, n_rf, sinr_targets, noise_var, max_power
        As in :func:`~lib.chapters.margin_design`.

    Returns
    -------
    OutageStudy
    """
    if not 0 < rho < 1:
        raise ValueError(f"rho must be in (0, 1), got {rho}")
    kappas = [float(k) for k in kappas]
    if not kappas:
        raise ValueError("kappas must not be empty")
    targets = dict(sinr_targets=sinr_targets, noise_var=noise_var, max_power=max_power)
    setup = dict(codebook=codebook, n_rf=n_rf, **targets)
    m_star, trace = bisect_margin(
        lambda m: margin_outage(val.H, val.H_hat, m, **setup).rate,
        nominal=rho,
        lo=0.0,
        hi=margin_hi,
        iters=margin_iters,
    )
    naive_val = margin_design(val.H_hat, 0.0, **setup)
    kappa_val = {}
    for kappa in kappas:
        design = loaded_design(val.H_hat, naive_val, val.error_energy, kappa, **targets)
        kappa_val[kappa] = empirical_outage(val.H, design, **targets).rate
    k_star = min(kappas, key=lambda k: kappa_val[k])  # first of least outage

    perf = greedy_codebook_selection(test.H, codebook, n_rf, **targets)
    margin_curve, designs = {}, {}
    for m in sorted({0.0, m_star, *map(float, margins)}):
        designs[m] = margin_design(test.H_hat, m, **setup)
        margin_curve[m] = empirical_outage(test.H, designs[m], **targets)
    kappa_curve = {}
    for kappa in kappas:
        design = loaded_design(test.H_hat, designs[0.0], test.error_energy, kappa, **targets)
        kappa_curve[kappa] = empirical_outage(test.H, design, **targets)
    return OutageStudy(
        margin_db=m_star,
        margin_trace=trace,
        kappa=k_star,
        kappa_val=kappa_val,
        perf=empirical_outage(test.H, perf, **targets),
        naive=margin_curve[0.0],
        marg=margin_curve[m_star],
        loaded=kappa_curve[k_star],
        margin_curve=margin_curve,
        kappa_curve=kappa_curve,
        naive_design=designs[0.0],
        marg_design=designs[m_star],
    )


class SDPOutage(NamedTuple):
    """Output of :func:`~lib.chapters.conic_sdp_outage`.

    Attributes
    ----------
    outage : OutageResult
        On the true channels (infeasible or above ``max_power``: in outage, charged
        ``max_power``).
    design : HybridResult
        The SDP's design.
    served : torch.Tensor
        ``(B,)`` bool: feasible and within ``max_power``.
    times : list
        cvxpy solve time per instance (s).
    rank_ratio : float
        Largest second-to-first eigenvalue ratio of the SDP's solutions.
    """

    outage: OutageResult
    design: HybridResult
    served: torch.Tensor
    times: list
    rank_ratio: float


def conic_sdp_outage(
    H, H_hat, R, F_RF, *, pilot: float, rho: float, sinr_targets, noise_var, max_power: float
) -> SDPOutage:
    """The conic robust SDP (:func:`lib.precoding.robust_sdp_design`) on the analog beams
    ``F_RF``, with the MMSE error covariances at pilot SNR ``pilot``, and its outage on ``H``.

    Parameters
    ----------
    H, H_hat : torch.Tensor
        ``(B, K, M)`` true channels and their MMSE estimates.
    R : torch.Tensor
        ``(B, K, M, M)`` channel covariances.
    F_RF : torch.Tensor
        ``(B, M, N_RF)`` analog beams (e.g. those of the naive design).
    pilot : float
        Linear pilot SNR of the estimates.
    rho : float
        Per-user outage level of the SDP's ellipsoid.
    sinr_targets, noise_var, max_power
        As in :func:`lib.precoding.empirical_outage`.

    Returns
    -------
    SDPOutage
    """
    C_err = csi.mmse_error_covariance(R, pilot)
    design, times, ratio = robust_sdp_design(
        H_hat, F_RF, C_err, sinr_targets, noise_var, outage=rho
    )
    outage = empirical_outage(H, design, sinr_targets, noise_var, max_power=max_power)
    served = design.feasible & (design.weighted_power <= max_power)
    return SDPOutage(outage, design, served, [float(t) for t in times], float(ratio))


def outage_summary(result: OutageResult, perf: OutageResult | None = None, n=None) -> dict:
    """Outage, its standard error and the mean power of ``result`` on its first ``n``
    instances, as a JSON-ready dict.

    Parameters
    ----------
    result : OutageResult
    perf : OutageResult, optional
        G-HBF-perf on the same instances: adds ``below_perf``, the fraction of instances on
        which ``result`` allocates less power than it.
    n : int, optional
        Only the first ``n`` instances (all by default).

    Returns
    -------
    dict
        ``outage``, ``se`` (:func:`~lib.chapters.instance_standard_error`), ``power_db``
        (:func:`~lib.chapters.mean_power_db`), ``instances`` and, with ``perf``,
        ``below_perf``.
    """
    n = result.in_outage.shape[0] if n is None else check_positive_int(n, "n")
    in_out, power = result.in_outage[:n], result.power[:n]
    out = {
        "outage": float(in_out.double().mean()),
        "se": instance_standard_error(in_out),
        "power_db": float(lin_to_db(power.mean())),
        "instances": int(in_out.shape[0]),
    }
    if perf is not None:
        out["below_perf"] = float((power < perf.power[:n]).double().mean())
    return out


def outage_results(path: str | Path | None = None) -> dict:
    """The stored evaluation of the chapter *Hybrid beamforming under imperfect CSI*.

    Reads ``results.json`` of ``results/hybrid_outage`` (found by :func:`lib.core.results_dir`),
    written by ``python scripts/eval_hybrid_outage.py`` (see its ``README.md``).

    Parameters
    ----------
    path : str or pathlib.Path, optional
        A folder holding ``results.json`` instead of the stored one.

    Returns
    -------
    dict
        ``setup``, ``n_val``, ``n_test``, ``margin`` (bisection), ``kappa`` (sweep), ``methods``
        (per design ``outage``, ``se``, ``power_db``, ``below_perf``), ``margin_curve``,
        ``kappa_curve``, ``sdp`` (per analog-beam choice), ``command``, ``seconds``.
    """
    folder = results_dir("hybrid_outage", must_exist=True) if path is None else Path(path)
    f = folder / "results.json"
    if not f.exists():
        raise FileNotFoundError(
            f"{f} is missing: it is produced by `python scripts/eval_hybrid_outage.py` "
            "(see results/hybrid_outage/README.md)"
        )
    return json.loads(f.read_text())
