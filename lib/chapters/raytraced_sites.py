"""Pipeline of the chapter *Channels from ray tracing*: per-site statistics next to i.i.d.
Rayleigh and 3GPP TR 38.901 UMi/UMa channels, sum rates of the classical precoders, and the
site-shift experiment (a statistical beamspace fitted on one site, used on another).

* :func:`~lib.chapters.reference_channels` -- ``"rayleigh"``, ``"umi"``, ``"uma"`` draws (the last
  two from ``sionna.phy``) in the book's shapes, with per-path powers, delays and LOS flags;
* :func:`~lib.chapters.channel_statistics` -- one row of the chapter's statistics table from
  channels and, where known, paths;
* :func:`~lib.chapters.site_channel_statistics` -- that row for a stored site;
* :func:`~lib.chapters.precoder_sum_rates` -- ZF, RZF and WMMSE sum rates over SNRs;
* :func:`~lib.chapters.eigen_beamspace`, :func:`~lib.chapters.beamspace_sum_rate` -- the
  ``D`` strongest eigenvectors of a site covariance as a fixed analog front end and RZF behind
  it (the statistical pre-beamforming of joint spatial division and multiplexing);
* :func:`~lib.chapters.spatial_split` -- users split by region (west/east of the median), so
  that test users are not the neighbours of training users.
"""

from __future__ import annotations

import math

import torch

from lib.core.checks import check_number, check_positive_int, check_tensor
from lib.phy import (
    beams_for_power,
    covariance_rank,
    dft_codebook,
    rayleigh,
    rms_angular_spread,
    rms_delay_spread,
    significant_paths,
    spatial_covariance,
    user_correlation,
)
from lib.precoding import dpc_sum_capacity, rzf, sum_rate, wmmse, zf

__all__ = [
    "REFERENCE_MODELS",
    "reference_channels",
    "channel_statistics",
    "site_channel_statistics",
    "precoder_sum_rates",
    "eigen_beamspace",
    "beamspace_sum_rate",
    "spatial_split",
]

#: The reference models of the statistics table.
REFERENCE_MODELS = ("rayleigh", "umi", "uma")


def _tr38901(model: str, batch: int, K: int, n_h: int, n_v: int, seed: int, carrier: float):
    from sionna.phy import config
    from sionna.phy.channel import gen_single_sector_topology
    from sionna.phy.channel.tr38901 import PanelArray, UMa, UMi

    def panel(rows, cols):
        return PanelArray(num_rows_per_panel=rows, num_cols_per_panel=cols,
                          polarization="single", polarization_type="V",
                          antenna_pattern="omni", carrier_frequency=carrier)  # fmt: skip

    config.seed = seed  # sionna.phy's generators (this also seeds torch's global one)
    cls = UMi if model == "umi" else UMa
    ch = cls(carrier_frequency=carrier, o2i_model="low", ut_array=panel(1, 1),
             bs_array=panel(n_v, n_h), direction="downlink")  # fmt: skip
    topo = gen_single_sector_topology(batch_size=batch, num_ut=K, scenario=model,
                                      indoor_probability=0.0)  # fmt: skip
    ch.set_topology(*topo)
    a, tau = ch(num_time_samples=1, sampling_frequency=1.0)
    a = a[:, :, 0, 0, :, :, 0].to(torch.complex128)  # (batch, K, M, clusters)
    H = a.sum(-1)
    # Sionna's PanelArray orders elements column by column; only statistics that do not depend
    # on the element order are computed from H, except beams_for_power (a 2-D DFT codebook is
    # invariant to swapping the roles of rows and columns when n_h = n_v)
    power = (a.abs() ** 2).mean(-2)  # per-cluster power (batch, K, clusters)
    los = ch._scenario.los[:, 0, :] if hasattr(ch, "_scenario") else None
    return H, power.double(), tau[:, :, 0, :].double(), los


def reference_channels(model: str, batch: int, users: int, n_h: int = 8, n_v: int = 8, *,
                       seed: int = 0, carrier_hz: float = 3.5e9):  # fmt: skip
    """``batch`` samples of ``users`` single-antenna users for an ``n_h x n_v`` BS array.

    ``"rayleigh"``: i.i.d. :math:`\\mathcal{CN}(0, 1)` entries (no paths). ``"umi"``/``"uma"``:
    3GPP TR 38.901 urban micro/macro of ``sionna.phy`` (single sector, outdoor users, omni
    vertically polarised elements, path loss and shadowing), normalised like a site (divided by
    the square root of the mean path gain of the draw, so ``E ||h||^2 = M``); ``seed`` sets
    ``sionna.phy.config.seed``, which also seeds torch's global generator.

    Returns
    -------
    dict
        ``H`` ``(batch, K, M)`` complex128; for 38.901 also ``power`` and ``tau``
        ``(batch, K, clusters)`` (cluster powers and delays) and ``los`` ``(batch, K)``.
    """
    if model not in REFERENCE_MODELS:
        raise ValueError(f"model must be one of {REFERENCE_MODELS}, got {model!r}")
    batch = check_positive_int(batch, "batch")
    K = check_positive_int(users, "users")
    if model == "rayleigh":
        g = torch.Generator().manual_seed(seed)
        return {"H": rayleigh(batch, K, n_h * n_v, generator=g)}
    H, power, tau, los = _tr38901(model, batch, K, n_h, n_v, seed, carrier_hz)
    scale = (H.abs() ** 2).sum(-1).mean() / H.shape[-1]
    out = {"H": H / scale.sqrt(), "power": power, "tau": tau}
    if los is not None:
        out["los"] = los
    return out


def channel_statistics(H, *, power=None, tau=None, azimuth=None, los=None, R=None,
                       n_h: int = 8, n_v: int = 8) -> dict:  # fmt: skip
    """One row of the statistics table: medians over users of the path statistics (when
    ``power`` is given; delay spread in ns, azimuth spread of departure in degrees), the mean
    user correlation of the samples ``H`` ``(B, K, M)``, the median number of DFT beams for 90 %
    of a user's power, and the eigenvalues of the covariance ``R`` (default: of ``H``) for 90 %.
    """
    cb = dft_codebook(n_h, n_v)[0].to(H.dtype)
    row = {
        "user_correlation": float(user_correlation(H).mean()),
        "beams_90": float(beams_for_power(H, cb).double().median()),
        "cov_rank_90": int(covariance_rank(spatial_covariance(H.reshape(-1, H.shape[-1]))
                                           if R is None else R)),  # fmt: skip
    }
    if los is not None:
        row["los_fraction"] = float(los.double().mean())
    if power is not None:
        p = power.reshape(-1, power.shape[-1])
        row["paths_20db"] = float(significant_paths(p).double().median())
        if tau is not None:
            ds = rms_delay_spread(p, tau.reshape(p.shape))
            row["delay_spread_ns"] = float(ds.median()) * 1e9
        if azimuth is not None:
            asd = rms_angular_spread(p, azimuth.reshape(p.shape))
            row["azimuth_spread_deg"] = math.degrees(float(asd.median()))
    return row


def site_channel_statistics(site, batch: int = 500, users: int = 4, n_h: int = 8, n_v: int = 8,
                            *, seed: int = 0) -> dict:  # fmt: skip
    """:func:`channel_statistics` of a :class:`lib.phy.RayTracedSite`: paths of all its users,
    the covariance of all its users, correlations of ``batch`` samples of ``users`` users."""
    H, _ = site.sample(batch, users, torch.Generator().manual_seed(seed), n_h, n_v,
                       dtype=torch.complex128)  # fmt: skip
    allH = site.channels(None, n_h, n_v, dtype=torch.complex128)
    power = (site.a.abs() ** 2).double()
    return channel_statistics(
        H, power=power, tau=site.tau.double(), azimuth=site.phi_t.double(), los=site.los,
        R=spatial_covariance(allH), n_h=n_h, n_v=n_v,
    )  # fmt: skip


def precoder_sum_rates(H, snr_db, *, wmmse_iters: int = 100, methods=("zf", "rzf", "wmmse",
                       "dpc")) -> dict:  # fmt: skip
    """Mean sum rate (bit/s/Hz) on ``H`` ``(B, K, M)`` at every SNR ``P / sigma^2`` of
    ``snr_db`` (unit noise) of ``methods``: ``"zf"``, ``"rzf"``, ``"wmmse"`` (started from RZF,
    ``wmmse_iters`` iterations) and the sum capacity ``"dpc"`` (the limit):
    ``{method: [rate per SNR]}``."""
    bad = set(methods) - {"zf", "rzf", "wmmse", "dpc"}
    if bad:
        raise ValueError(f"unknown methods {sorted(bad)}; choose from zf, rzf, wmmse, dpc")
    out = {m: [] for m in methods}
    for snr in snr_db:
        P = 10 ** (snr / 10)
        V_rzf = rzf(H, P, 1.0)
        for m in methods:
            if m == "dpc":
                out[m].append(float(dpc_sum_capacity(H, P, 1.0).mean()))
                continue
            if m == "zf":
                V = zf(H, P)
            elif m == "rzf":
                V = V_rzf
            else:
                V = wmmse(H, P, 1.0, iters=wmmse_iters, V0=V_rzf)
            out[m].append(float(sum_rate(H, V, 1.0).mean()))
    return out


def eigen_beamspace(H, D: int) -> torch.Tensor:
    """The ``D`` strongest eigenvectors ``(M, D)`` of the covariance of the users ``H``
    ``(U, M)``: a statistical analog front end fitted on those users."""
    check_tensor(H, "H", complex_=True, ndim=2)
    D = check_positive_int(D, "D")
    if D > H.shape[-1]:
        raise ValueError(f"D = {D} exceeds the {H.shape[-1]} antennas")
    _, vecs = torch.linalg.eigh(spatial_covariance(H))
    return vecs[:, -D:].flip(-1)


def beamspace_sum_rate(H, B, snr_db: float) -> float:
    """Mean RZF sum rate on the effective channels ``H B`` ``(batch, K, D)``, the precoder
    ``B W`` with ``W`` the RZF precoder of ``H B`` (``B`` orthonormal keeps the power)."""
    check_tensor(H, "H", complex_=True, ndim=3)
    check_tensor(B, "B", complex_=True, shape=(H.shape[-1], None))
    P = 10 ** (check_number(snr_db, "snr_db") / 10)
    Heff = H @ B.to(H.dtype)
    W = rzf(Heff, P, 1.0)
    return float(sum_rate(H, B.to(H.dtype) @ W, 1.0).mean())


def spatial_split(site, axis: int = 0):
    """Indices ``(train, test)`` of the users of ``site`` below / above the median of their
    ``axis`` coordinate (0: x, 1: y): two disjoint regions of the sector."""
    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 (x) or 1 (y), got {axis!r}")
    x = site.positions[:, axis]
    m = x.median()
    return torch.nonzero(x <= m).flatten(), torch.nonzero(x > m).flatten()
