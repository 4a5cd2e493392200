"""Data of the CSI-feedback experiments: angular-delay images of ray-traced OFDM channels.

* :class:`~lib.chapters.FeedbackSetup` -- array, OFDM numerology, kept delay taps and timing
  offset;
* :func:`~lib.chapters.site_feedback_images` -- images of the users of stored sites
  (:func:`lib.phy.load_site`), one random phase per path and draw (the small-scale phase that
  a position alone does not fix), optionally only the strongest paths and a noisy
  observation at a given SNR; unit energy per sample, with the truncated energy returned so
  that :func:`lib.phy.feedback_nmse_db` scores against the full channel;
* :func:`~lib.chapters.tr38901_feedback_images` -- the same images of 3GPP TR 38.901 channels
  (UMi, UMa of ``sionna.phy`` and its CDL profiles), the statistical scenarios of the shift
  experiments;
* :func:`~lib.chapters.type2_subband_feedback` -- Type-II-like DFT feedback per subband
  (:func:`lib.phy.type2_quantize` on each subband's mean channel), the classical reference;
* :class:`~lib.chapters.CSFeedback` -- compressed-sensing feedback with a Gaussian matrix;

and the pipeline of the chapter *CSI feedback under distribution shift*: the test scenarios
(:func:`~lib.chapters.feedback_scenario`), the stored decoders
(:func:`~lib.chapters.stored_feedback_model`), the four methods behind one interface
``data -> H_hat`` (:func:`~lib.chapters.feedback_methods`), and their NMSE and RZF sum rate
with the limits (:func:`~lib.chapters.evaluate_feedback`,
:func:`~lib.chapters.evaluate_feedback_grid`, the layout of
``results/csi_feedback/summary.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lib.core.checks import (
    check_complex,
    check_dtype,
    check_number,
    check_positive_int,
    check_real,
)
from lib.phy import (
    angular_delay,
    dft_codebook,
    load_site,
    subcarrier_frequencies,
    type2_quantize,
    upa_positions,
)
from lib.phy.raytraced import _channels
from lib.sparse import gaussian_matrix

__all__ = [
    "FEEDBACK_SOURCE_SITES",
    "FeedbackSetup",
    "CSFeedback",
    "FEEDBACK_METHODS",
    "FEEDBACK_SCENARIOS",
    "evaluate_feedback",
    "evaluate_feedback_grid",
    "ratio_label",
    "feedback_methods",
    "feedback_nmse",
    "feedback_scenario",
    "feedback_sum_rate",
    "feedback_training_record",
    "stored_feedback_model",
    "unfolded_feedback_decoder",
    "FEEDBACK_SCENARIO_LABELS",
    "feedback_source_images",
    "site_feedback_images",
    "TR38901_FEEDBACK_MODELS",
    "tr38901_feedback_images",
    "type2_subband_feedback",
]

#: The site group the learned decoders train on: the training sites of Munich.
FEEDBACK_SOURCE_SITES = ("munich-r1", "munich-r2", "munich-s1")


@dataclass(frozen=True)
class FeedbackSetup:
    """Set-up of the feedback experiments.

    ``n_h x n_v`` UPA (``M = 64``), ``n_subcarriers`` spaced ``spacing`` Hz (a delay tap is
    ``1 / (N_c Delta f)``, 130 ns by default), the first ``n_taps`` taps kept, and the first
    arrival placed ``timing_offset`` taps after zero so that the leakage of an off-grid first
    path to negative delays is kept rather than wrapped to the last taps.
    """

    n_h: int = 8
    n_v: int = 8
    n_subcarriers: int = 256
    spacing: float = 30e3
    n_taps: int = 16
    timing_offset: float = 2.0
    carrier_hz: float = 3.5e9

    def __post_init__(self):
        for name in ("n_h", "n_v", "n_subcarriers", "n_taps"):
            check_positive_int(getattr(self, name), name)
        check_number(self.spacing, "spacing", lo=0, lo_open=True)
        check_number(self.carrier_hz, "carrier_hz", lo=0, lo_open=True)
        check_number(self.timing_offset, "timing_offset", lo=0, hi=self.n_taps)
        if self.n_taps > self.n_subcarriers:
            raise ValueError(f"n_taps must be <= n_subcarriers = {self.n_subcarriers}, "
                             f"got {self.n_taps}")  # fmt: skip

    @property
    def M(self) -> int:
        return self.n_h * self.n_v

    @property
    def tap_s(self) -> float:
        return 1.0 / (self.n_subcarriers * self.spacing)


def _aligned_delays(a, tau, offset_s):
    present = a.abs() > 0
    inf = torch.full_like(tau, math.inf)
    t0 = torch.where(present, tau, inf).min(-1, keepdim=True).values
    return torch.where(present, tau - t0 + offset_s, torch.zeros_like(tau))


def site_feedback_images(names, setup: FeedbackSetup = FeedbackSetup(), *, users=None,
                         draws: int = 1, paths: int | None = None, snr_db=None,
                         generator: torch.Generator | None = None,
                         dtype=torch.complex64, chunk: int = 512,
                         channels: bool = False) -> dict:  # fmt: skip
    """Angular-delay images of the users of the sites ``names``.

    Parameters
    ----------
    names : str or list of str
        Stored sites.
    setup : FeedbackSetup
    users : dict of str to LongTensor, optional
        The users to take per site (default all).
    draws : int
        Images per user, each with fresh uniform phases on the paths.
    paths : int, optional
        Keep only the ``paths`` strongest paths of each user (a sparser channel).
    snr_db : float, optional
        Observation noise: ``X_obs`` is the image of ``H + N`` with i.i.d. complex Gaussian
        ``N`` of power ``mean |H|^2 / SNR`` per entry (the user's channel estimate); the
        reference ``X`` stays noise-free.
    generator : torch.Generator, optional
    dtype : torch.dtype
        ``complex64`` or ``complex128`` of the returned images.
    chunk : int
        Users per batch of the channel computation.
    channels : bool
        Also return the unit-energy frequency-domain channels ``H`` ``(B, N_c, M)`` and the
        observed ``H_obs`` (``H`` plus the noise of ``snr_db``, same scaling) for feedback
        that works per subcarrier (:func:`~lib.chapters.type2_subband_feedback`).

    Returns
    -------
    dict
        ``X`` ``(B, M, T)`` (unit energy ``||X||_F^2 + tail = 1`` per sample), ``tail``
        ``(B,)`` the truncated energy, ``X_obs`` (the observed image, equal to ``X`` without
        ``snr_db``, same scaling), ``site`` ``(B,)`` the index into ``names``, ``los``
        ``(B,)``.
    """
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("names must list at least one site")
    draws = check_positive_int(draws, "draws")
    if paths is not None:
        paths = check_positive_int(paths, "paths")
    if snr_db is not None:
        snr_db = check_number(snr_db, "snr_db")
    chunk = check_positive_int(chunk, "chunk")
    if not isinstance(setup, FeedbackSetup):
        raise TypeError(f"setup must be a FeedbackSetup, got {type(setup).__name__}")
    check_dtype(dtype, "dtype", complex_=True)
    if users is not None:
        missing = [n for n in names if n not in users]
        if missing:
            raise ValueError(f"users has no entry for the sites {missing}")
    s = setup
    f = s.carrier_hz + subcarrier_frequencies(s.n_subcarriers, s.spacing)
    out = {"X": [], "tail": [], "X_obs": [], "site": [], "los": [], "H": [], "H_obs": []}
    for i, name in enumerate(names):
        site = load_site(name, dtype=torch.complex128)
        idx = torch.arange(site.n_users) if users is None else users[name]
        if users is not None:
            bad = idx.is_floating_point() or idx.is_complex() or idx.ndim != 1
            if bad or (len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= site.n_users)):
                raise ValueError(f"users[{name!r}] must be a 1-D integer tensor of indices in "
                                 f"[0, {site.n_users})")  # fmt: skip
        pos = upa_positions(s.n_h, s.n_v, site.boresight)
        idx = idx.repeat(draws)
        for start in range(0, len(idx), chunk):
            j = idx[start : start + chunk]
            a = site.a[j]
            if paths is not None and paths < a.shape[-1]:
                keep = a.abs().topk(paths, dim=-1).indices
                a = torch.zeros_like(a).scatter(-1, keep, a.gather(-1, keep))
            phase = 2 * math.pi * torch.rand(a.shape, generator=generator, dtype=torch.float64)
            a = a * torch.polar(torch.ones_like(phase), phase)
            tau = _aligned_delays(a, site.tau[j].double(), s.timing_offset * s.tap_s)
            H = _channels(a, site.theta_t[j], site.phi_t[j], pos, tau, f)
            _append_images(out, H, s, snr_db, generator, channels)
            out["site"].append(torch.full((len(j),), i, dtype=torch.long))
            out["los"].append(site.los[j])
    return _collect(out, dtype)


def _append_images(out, H, s, snr_db, generator, channels):
    """Normalise ``H`` ``(B, N_c, M)`` to unit energy and append its images to ``out``."""
    energy = H.abs().pow(2).sum((-1, -2))
    H = H / energy.sqrt()[:, None, None]
    if channels:
        out["H"].append(H)
    X = angular_delay(H, s.n_h, s.n_v, s.n_taps)
    out["tail"].append((1 - X.abs().pow(2).sum((-1, -2))).clamp(min=0.0))
    out["X"].append(X)
    if snr_db is not None:
        sigma2 = 10 ** (-snr_db / 10) / (s.n_subcarriers * s.M)
        H_obs = H + math.sqrt(sigma2) * torch.randn(H.shape, generator=generator, dtype=H.dtype)
        X_obs = angular_delay(H_obs, s.n_h, s.n_v, s.n_taps)
    else:
        H_obs, X_obs = H, X
    out["X_obs"].append(X_obs)
    if channels:
        out["H_obs"].append(H_obs)


def _collect(out, dtype):
    res = {k: torch.cat(v) for k, v in out.items() if v}
    for k in ("X", "X_obs", "H", "H_obs"):
        if k in res:
            res[k] = res[k].to(dtype)
    res["tail"] = res["tail"].to(res["X"].real.dtype)
    return res


#: The 38.901 scenarios of :func:`tr38901_feedback_images`.
TR38901_FEEDBACK_MODELS = ("umi", "uma", "cdl-a", "cdl-b", "cdl-c", "cdl-d", "cdl-e")


def _tr38901_paths(model, n, s, delay_spread):
    """Per-antenna path coefficients ``(n, M, P)`` (book element order) and delays ``(n, P)``."""
    from sionna.phy.channel import gen_single_sector_topology
    from sionna.phy.channel.tr38901 import CDL, PanelArray, UMa, UMi

    def panel(rows, cols):
        return PanelArray(num_rows_per_panel=rows, num_cols_per_panel=cols,
                          polarization="single", polarization_type="V",
                          antenna_pattern="omni", carrier_frequency=s.carrier_hz)  # fmt: skip

    ut, bs = panel(1, 1), panel(s.n_v, s.n_h)
    if model.startswith("cdl-"):
        ch = CDL(model[-1].upper(), delay_spread, s.carrier_hz, ut, bs, direction="downlink")
        a, tau = ch(n, 1, 1.0)
    else:
        cls = UMi if model == "umi" else UMa
        ch = cls(carrier_frequency=s.carrier_hz, o2i_model="low", ut_array=ut, bs_array=bs,
                 direction="downlink")  # fmt: skip
        ch.set_topology(*gen_single_sector_topology(batch_size=n, num_ut=1, scenario=model,
                                                    indoor_probability=0.0))  # fmt: skip
        a, tau = ch(num_time_samples=1, sampling_frequency=1.0)
    a = a[:, 0, 0, 0, :, :, 0].to(torch.complex128)  # (n, M, P), Sionna element order
    # Sionna numbers the elements column by column from the top row; the book's element
    # (m_h, m_v) is row m_h n_v + m_v counted from the bottom (lib.phy.upa_positions)
    P = a.shape[-1]
    a = a.reshape(n, s.n_h, s.n_v, P).flip(2).reshape(n, s.M, P)
    tau = tau.reshape(n, -1, P)[:, 0].double()
    return a, tau


def tr38901_feedback_images(model: str, n: int, setup: FeedbackSetup = FeedbackSetup(), *,
                            seed: int = 0, snr_db=None, delay_spread: float = 100e-9,
                            dtype=torch.complex64, channels: bool = False) -> dict:  # fmt: skip
    """Angular-delay images of ``n`` 3GPP TR 38.901 channels of ``sionna.phy``.

    ``"umi"``/``"uma"``: urban micro/macro, single sector, outdoor users, one user per drop
    (its own topology, path loss removed by the unit-energy normalisation); ``"cdl-a"`` ...
    ``"cdl-e"``: the clustered delay line profiles with RMS delay spread ``delay_spread``
    (fixed cluster delays and angles, random phases per drop). The BS is an ``n_h x n_v`` panel
    of omnidirectional vertically polarised elements, the user a single antenna. The channel
    on subcarrier ``n`` (baseband frequency ``f_n``) is
    ``H[n, m] = sum_p a[m, p] exp(-j 2 pi f_n (tau_p - tau_min + timing_offset / (N_c df)))``,
    with the first arrival placed as :func:`site_feedback_images` places it, then normalised,
    transformed and truncated the same way.

    Parameters
    ----------
    model : str
        One of :data:`TR38901_FEEDBACK_MODELS`.
    n : int
        Number of channels.
    setup : FeedbackSetup
    seed : int
        Sets ``sionna.phy.config.seed`` (which also seeds torch's global generator); the
        observation noise of ``snr_db`` is drawn from its own generator seeded by ``seed``.
    snr_db : float, optional
        Observation noise as in :func:`site_feedback_images`.
    delay_spread : float
        RMS delay spread (s) of the CDL profiles (ignored by UMi/UMa, whose spreads are drawn).
    dtype : torch.dtype
    channels : bool
        Also return the unit-energy channels ``H`` and ``H_obs`` ``(n, N_c, M)``.

    Returns
    -------
    dict
        ``X``, ``tail``, ``X_obs`` (and ``H``, ``H_obs``) as :func:`site_feedback_images`
        returns them.
    """
    if model not in TR38901_FEEDBACK_MODELS:
        raise ValueError(f"model must be one of {TR38901_FEEDBACK_MODELS}, got {model!r}")
    n = check_positive_int(n, "n")
    if not isinstance(setup, FeedbackSetup):
        raise TypeError(f"setup must be a FeedbackSetup, got {type(setup).__name__}")
    if snr_db is not None:
        snr_db = check_number(snr_db, "snr_db")
    check_number(delay_spread, "delay_spread", lo=0, lo_open=True)
    check_dtype(dtype, "dtype", complex_=True)
    from sionna.phy import config

    s = setup
    config.seed = int(seed)
    a, tau = _tr38901_paths(model, n, s, delay_spread)
    tau = _aligned_delays(a.abs().pow(2).sum(1), tau, s.timing_offset * s.tap_s)
    f = subcarrier_frequencies(s.n_subcarriers, s.spacing).to(tau)
    phase = torch.polar(torch.ones((), dtype=tau.dtype), -2 * math.pi * f[:, None] * tau[:, None])
    H = torch.einsum("bnp,bmp->bnm", phase, a)
    out = {"X": [], "tail": [], "X_obs": [], "H": [], "H_obs": []}
    g = torch.Generator().manual_seed(int(seed))
    _append_images(out, H, s, snr_db, g, channels)
    return _collect(out, dtype)


def type2_subband_feedback(H: torch.Tensor, setup: FeedbackSetup = FeedbackSetup(), *,
                           n_subbands: int = 16, n_beams: int = 4, amp_bits: int = 3,
                           phase_bits: int = 3, oversampling=(4, 4)):  # fmt: skip
    """Type-II-like feedback of OFDM channels, one report per subband.

    The ``N_c`` subcarriers are split into ``n_subbands`` contiguous subbands; each subband's
    mean channel is quantised by :func:`lib.phy.type2_quantize` (``L = n_beams`` beams of an
    oversampled 2-D DFT codebook, ``amp_bits``/``phase_bits`` per beam, the strongest
    coefficient's magnitude reported as a gain and its phase the reference) and the
    reconstruction is used on every subcarrier of the subband. The reconstruction is aligned
    to each subband's common phase (which no precoder depends on), so its NMSE is the one that
    matters for precoding and is optimistic as a channel estimate.

    Parameters
    ----------
    H : torch.Tensor
        ``(B, N_c, M)`` complex.
    setup : FeedbackSetup
        The array ``n_h x n_v`` (``M``).
    n_subbands : int
        Must divide ``N_c``.

    Returns
    -------
    (torch.Tensor, int)
        ``H_hat`` ``(B, N_c, M)`` and the feedback bits per user (all subbands).
    """
    check_complex(H, "H", ndim=3)
    B, Nc, M = H.shape
    if M != setup.M:
        raise ValueError(f"H must have M = {setup.M} antennas (setup), got {M}")
    S = check_positive_int(n_subbands, "n_subbands")
    if Nc % S:
        raise ValueError(f"n_subbands must divide N_c = {Nc}, got {S}")
    cb, groups, _ = dft_codebook(setup.n_h, setup.n_v, oversampling, dtype=H.dtype,
                              device=H.device)  # fmt: skip
    mean = H.reshape(B, S, Nc // S, M).mean(2)  # (B, S, M), subbands in the user axis
    fb = type2_quantize(mean, cb, groups, n_beams=n_beams, amp_bits=amp_bits,
                        phase_bits=phase_bits, n_h=setup.n_h, n_v=setup.n_v,
                        oversampling=oversampling)  # fmt: skip
    H_hat = fb.H_hat[:, :, None, :].expand(B, S, Nc // S, M).reshape(B, Nc, M)
    return H_hat, fb.bits * S


def feedback_source_images(part: str, setup: FeedbackSetup = FeedbackSetup(), *,
                           draws: int = 1, seed: int = 0, val_fraction: float = 0.2,
                           **kwargs) -> dict:  # fmt: skip
    """Images of the ``part`` (``"train"`` or ``"val"``) users of
    :data:`FEEDBACK_SOURCE_SITES`.

    The users of each site are split once (:func:`lib.chapters.split_site_users` with seed 0,
    ``val_fraction`` for validation), independently of ``seed``, which draws the path phases;
    ``kwargs`` go to :func:`site_feedback_images`.
    """
    from lib.chapters.papp import split_site_users

    if part not in ("train", "val"):
        raise ValueError(f"part must be 'train' or 'val', got {part!r}")
    users = {}
    for name in FEEDBACK_SOURCE_SITES:
        train, val = split_site_users(load_site(name), val_fraction, seed=0)
        users[name] = train if part == "train" else val
    g = torch.Generator().manual_seed(seed)
    return site_feedback_images(list(FEEDBACK_SOURCE_SITES), setup, users=users, draws=draws,
                                generator=g, **kwargs)  # fmt: skip


class CSFeedback:
    """Compressed-sensing feedback of angular-delay images with a random Gaussian matrix.

    The user sends ``y = A x`` (``m = ratio * 2 M T`` reals, the codeword size of CsiNet at the
    same ratio, :func:`lib.learn.codeword_size`) with ``x = sqrt(2 M T) vec(Z)`` the real image
    ``Z`` (:func:`lib.phy.realify_image`) scaled to unit mean energy per entry for unit-energy
    channels, and ``A`` ``(m, 2 M T)`` i.i.d. ``N(0, 1/m)`` (:func:`lib.sparse.gaussian_matrix`,
    drawn from ``seed``; both ends know it). Any :class:`lib.core.SparseEstimator` decodes it:
    ``X_hat = fb.image(estimator(y, fb.A, noise_var))``.

    Parameters
    ----------
    ratio : float
        Compression ratio in ``(0, 1]``.
    setup : FeedbackSetup
    seed : int
    dtype : torch.dtype
        Real dtype of ``A`` and of the vectors.
    """

    def __init__(self, ratio: float, setup: FeedbackSetup = FeedbackSetup(), *, seed: int = 0,
                 dtype=torch.float32):  # fmt: skip
        from lib.learn.csinet import codeword_size

        if not isinstance(setup, FeedbackSetup):
            raise TypeError(f"setup must be a FeedbackSetup, got {type(setup).__name__}")
        check_dtype(dtype, "dtype", complex_=False)
        self.setup, self.ratio = setup, float(ratio)
        self.n = 2 * setup.M * setup.n_taps
        self.m = codeword_size(ratio, setup.M, setup.n_taps)
        g = torch.Generator().manual_seed(int(seed))
        self.A = gaussian_matrix(self.m, self.n, generator=g, dtype=torch.float64).to(dtype)

    def vector(self, X: torch.Tensor) -> torch.Tensor:
        """``(B, M, T)`` complex images to the ``(B, 2 M T)`` real vectors ``x``."""
        s = self.setup
        check_complex(X, "X", shape=("batch", s.M, s.n_taps))
        Z = torch.stack([X.real, X.imag], dim=1).reshape(X.shape[0], -1)
        return (Z * math.sqrt(self.n)).to(self.A.dtype)

    def encode(self, X: torch.Tensor) -> torch.Tensor:
        """The codewords ``y = A x`` ``(B, m)`` of ``(B, M, T)`` images."""
        return self.vector(X) @ self.A.T

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2 M T)`` vectors back to ``(B, M, T)`` complex images."""
        s = self.setup
        check_real(x, "x", shape=("batch", self.n))
        Z = (x / math.sqrt(self.n)).reshape(-1, 2, s.M, s.n_taps)
        return torch.complex(Z[:, 0], Z[:, 1])


# --------------------------------------------------------------------------- #
# The shift experiments of the chapter: scenarios, the four decoders, scoring

#: Methods of the feedback comparison, in the order of the tables.
FEEDBACK_METHODS = ("TypeII", "CS-AMP", "Unfolded", "CsiNet")

_SITE_SCENARIOS = {
    "source": (FEEDBACK_SOURCE_SITES, {}),
    "munich-other": (("munich-r3", "munich-s2"), {}),
    "florence": (("florence-r1", "florence-r2", "florence-s1"), {}),
    "snr-10dB": (FEEDBACK_SOURCE_SITES, {"snr_db": 10.0}),
    "snr-0dB": (FEEDBACK_SOURCE_SITES, {"snr_db": 0.0}),
    "paths-2": (FEEDBACK_SOURCE_SITES, {"paths": 2}),
}
_TR38901_SCENARIOS = {"umi": "umi", "uma": "uma", "cdl-c": "cdl-c"}

#: Plain-language names of the scenarios (figure axes and tables).
FEEDBACK_SCENARIO_LABELS = {
    "source": "Munich, training sites",
    "munich-other": "Munich, other sites",
    "florence": "Florence (unseen city)",
    "umi": "38.901 UMi",
    "uma": "38.901 UMa",
    "cdl-c": "38.901 CDL-C",
    "snr-10dB": "SNR 10 dB",
    "snr-0dB": "SNR 0 dB",
    "paths-2": "2 strongest paths",
}

#: Scenarios of :func:`feedback_scenario`, the training distribution first.
FEEDBACK_SCENARIOS = tuple(_SITE_SCENARIOS)[:3] + tuple(_TR38901_SCENARIOS) + tuple(
    _SITE_SCENARIOS
)[3:]


def feedback_scenario(name: str, n: int, setup: FeedbackSetup = FeedbackSetup(), *,
                      seed: int = 0) -> dict:  # fmt: skip
    """``n`` test channels of the scenario ``name`` (with ``channels=True``).

    * ``"source"``: the validation users of :data:`FEEDBACK_SOURCE_SITES` (those of
      :func:`feedback_source_images`), phases drawn from ``100 + seed`` (never the training
      or validation draws);
    * ``"munich-other"``: all users of the other Munich sites; ``"florence"``: all users of the
      Florence sites (a city the decoders never saw);
    * ``"umi"``, ``"uma"``, ``"cdl-c"``: 3GPP TR 38.901 (:func:`tr38901_feedback_images`);
    * ``"snr-10dB"``, ``"snr-0dB"``: the source users observed at that SNR (the encoder sees
      ``X_obs``, the scoring uses the true channel); ``"paths-2"``: the source users with only
      their two strongest paths.

    Site users are drawn without replacement from the pooled users of the scenario's sites
    (generator ``seed``).
    """
    if name not in FEEDBACK_SCENARIOS:
        raise ValueError(f"name must be one of {FEEDBACK_SCENARIOS}, got {name!r}")
    n = check_positive_int(n, "n")
    if name in _TR38901_SCENARIOS:
        return tr38901_feedback_images(_TR38901_SCENARIOS[name], n, setup, seed=seed,
                                       channels=True)  # fmt: skip
    from lib.chapters.papp import split_site_users

    sites, kwargs = _SITE_SCENARIOS[name]
    pools = []
    for site in sites:
        if sites == FEEDBACK_SOURCE_SITES:
            pools.append(split_site_users(load_site(site), 0.2, seed=0)[1])
        else:
            pools.append(torch.arange(load_site(site).n_users))
    sizes = [len(p) for p in pools]
    if n > sum(sizes):
        raise ValueError(f"n must be <= {sum(sizes)} (the users of {name!r}), got {n}")
    g = torch.Generator().manual_seed(100 + int(seed))
    pick = torch.randperm(sum(sizes), generator=g)[:n].sort().values
    users, start = {}, 0
    for site, pool, size in zip(sites, pools, sizes, strict=True):
        mine = pick[(pick >= start) & (pick < start + size)] - start
        users[site] = pool[mine]
        start += size
    return site_feedback_images(list(sites), setup, users=users, generator=g, channels=True,
                                **kwargs)  # fmt: skip


def _ratio_name(prefix: str, ratio: float) -> str:
    from fractions import Fraction

    frac = Fraction(ratio).limit_denominator(1024)
    return f"{prefix}-cr{frac.denominator}" if frac.numerator == 1 else f"{prefix}-r{ratio:g}"


def unfolded_feedback_decoder(fb: CSFeedback, layers: int, p: float):
    """LAMP-BG (:class:`lib.learn.LAMP` with the Bernoulli-Gaussian denoiser) for the feedback
    ``fb``, ``layers`` layers, every layer at classical AMP-BG with activity ``p`` and signal
    variance ``1 / p`` (so that the untrained network is the classical CS decoder; three
    learned scalars per layer: activity, signal variance, noise scale)."""
    from lib.learn import LAMP

    if not isinstance(fb, CSFeedback):
        raise TypeError(f"fb must be a CSFeedback, got {type(fb).__name__}")
    p = check_number(p, "p", lo=0, hi=1, lo_open=True, hi_open=True)
    model = LAMP(fb.A, check_positive_int(layers, "layers"), denoiser="bg", p=p)
    with torch.no_grad():
        for layer in model.layers:
            layer.log_var.fill_(math.log(1 / p))
    return model


def feedback_training_record(directory=None) -> dict:
    """The training records (``train.json``) of the stored feedback decoders, by model name."""
    import json
    from pathlib import Path

    from lib.core import results_dir

    d = Path(directory) if directory is not None else results_dir("csi_feedback", must_exist=True)
    path = d / "train.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: see results/csi_feedback/README.md")
    return json.loads(path.read_text())["models"]


def stored_feedback_model(kind: str, ratio: float, setup: FeedbackSetup = FeedbackSetup(), *,
                          directory=None, energy_weight: float = 0.0):  # fmt: skip
    """The stored decoder ``kind`` (``"CsiNet"`` or ``"Unfolded"``, the LAMP-BG of
    ``scripts/train_unfolded_feedback.py``) for compression ``ratio``, in evaluation mode.

    Weights are loaded with ``torch.load(..., weights_only=True)``; ``energy_weight`` selects the
    CsiNet trained with the energy-conservation term of that weight.

    Raises
    ------
    ValueError
        No stored model of that kind was trained for ``ratio`` (the message lists the ratios
        that were).
    """
    from lib.learn import CsiNet

    if kind not in ("CsiNet", "Unfolded"):
        raise ValueError(f"kind must be 'CsiNet' or 'Unfolded', got {kind!r}")
    ratio = check_number(ratio, "ratio", lo=0, hi=1, lo_open=True)
    prefix = "CsiNet" if kind == "CsiNet" else "LAMP"
    suffix = f"-energy{energy_weight:g}" if energy_weight else ""
    records = feedback_training_record(directory)
    name = _ratio_name(prefix, ratio) + suffix
    if name not in records:
        stored = sorted(r["ratio"] for k, r in records.items()
                        if k == _ratio_name(prefix, r["ratio"]) + suffix)  # fmt: skip
        raise ValueError(f"no stored {kind} decoder for ratio {ratio:g}"
                         f"{' and energy weight ' + format(energy_weight, 'g') if suffix else ''}"
                         f"; stored ratios: {stored}")  # fmt: skip
    rec = records[name]
    from pathlib import Path

    from lib.core import results_dir

    d = Path(directory) if directory is not None else results_dir("csi_feedback", must_exist=True)
    state = torch.load(d / f"{name}.pt", weights_only=True)
    if kind == "CsiNet":
        model = CsiNet(ratio, setup.M, setup.n_taps, n_refine=rec.get("n_refine", 2))
    else:
        model = unfolded_feedback_decoder(CSFeedback(ratio, setup), rec["layers"], rec["p_init"])
    model.load_state_dict(state)
    return model.eval()


def feedback_methods(ratio: float, setup: FeedbackSetup = FeedbackSetup(), *, directory=None,
                     amp_iters: int = 30, methods=FEEDBACK_METHODS) -> dict:  # fmt: skip
    """The feedback methods at compression ``ratio``, each ``data -> H_hat`` ``(B, N_c, M)``.

    ``data`` is a dict of :func:`feedback_scenario` (the user's observation ``X_obs``/``H_obs``
    is what is fed back). ``"TypeII"``: :func:`type2_subband_feedback` (its own bit budget,
    the same at every ratio); ``"CS-AMP"``: :class:`CSFeedback` decoded by ``amp_iters``
    iterations of AMP with the Bernoulli-Gaussian denoiser at the activity tuned on the
    validation images (recorded with the unfolded decoder); ``"Unfolded"`` and ``"CsiNet"``:
    the stored decoders (:func:`stored_feedback_model`).
    """
    from lib.phy import complexify_image, from_angular_delay, realify_image
    from lib.sparse import amp

    unknown = [m for m in methods if m not in FEEDBACK_METHODS]
    if unknown:
        raise ValueError(f"methods must be among {FEEDBACK_METHODS}, got {unknown}")
    s = setup
    fb = CSFeedback(ratio, s)

    def channels(X_hat):
        return from_angular_delay(X_hat.to(torch.complex64), s.n_h, s.n_v, s.n_subcarriers)

    def type2(data):
        return type2_subband_feedback(data["H_obs"], s)[0].to(torch.complex64)

    out = {}
    if "TypeII" in methods:
        out["TypeII"] = type2
    if "CS-AMP" in methods or "Unfolded" in methods:
        lamp = stored_feedback_model("Unfolded", ratio, s, directory=directory)
        rec = feedback_training_record(directory)[_ratio_name("LAMP", ratio)]
        p = rec["p_init"]

        def cs_amp(data):
            y = fb.encode(data["X_obs"]).double()
            x = amp(y, fb.A.double(), amp_iters, denoiser="bg", p=p, signal_var=1 / p)
            return channels(fb.image(x.float()))

        def unfolded(data):
            with torch.no_grad():
                return channels(fb.image(lamp(fb.encode(data["X_obs"]))[-1]))

        if "CS-AMP" in methods:
            out["CS-AMP"] = cs_amp
        if "Unfolded" in methods:
            out["Unfolded"] = unfolded
    if "CsiNet" in methods:
        net = stored_feedback_model("CsiNet", ratio, s, directory=directory)

        def csinet(data):
            Z = realify_image(data["X_obs"]).float()
            with torch.no_grad():
                return channels(complexify_image(torch.cat([net(z) for z in Z.split(500)])))

        out["CsiNet"] = csinet
    return out


def feedback_nmse(H_hat: torch.Tensor, H: torch.Tensor, *, per_sample: bool = False):
    """NMSE (dB) of fed-back channels ``(B, N_c, M)`` against the true ones, the ratio of
    means over the batch (``per_sample=True``: the per-sample values, a tensor)."""
    err = (H_hat.to(H.dtype) - H).abs().pow(2).sum((-1, -2))
    ref = H.abs().pow(2).sum((-1, -2))
    if per_sample:
        return 10 * torch.log10(err / ref)
    return 10 * math.log10(float(err.mean() / ref.mean()))


def feedback_sum_rate(H_hat: torch.Tensor, H: torch.Tensor, *, users: int = 4,
                      snr_db: float = 10.0, stride: int = 16) -> float:  # fmt: skip
    """Mean sum rate (bit/s/Hz) of RZF precoding computed on the fed-back channels.

    Consecutive samples form groups of ``users`` users; on every ``stride``-th subcarrier each
    group's base station precodes with :func:`lib.precoding.rzf` on ``H_hat`` at ``P / sigma^2
    = snr_db`` (channels scaled to unit mean energy per antenna and subcarrier, the book's
    ``E |h_m|^2 = 1``, so the array gain is on top of ``snr_db``) and the rate is
    :func:`lib.precoding.sum_rate` with the true channels ``H``; ``H_hat = H`` gives the
    perfect-CSI limit.
    """
    from lib.precoding import rzf, sum_rate

    K = check_positive_int(users, "users")
    B, Nc, M = H.shape
    G = B // K
    if G == 0:
        raise ValueError(f"users must be <= the batch size {B}, got {K}")

    def groups(X):
        X = X[: G * K, ::stride].to(torch.complex128) * math.sqrt(Nc * M)
        n = X.shape[1]
        return X.reshape(G, K, n, M).transpose(1, 2).reshape(G * n, K, M)

    Ht, Hh = groups(H), groups(H_hat)
    noise = 10 ** (-check_number(snr_db, "snr_db") / 10)
    V = rzf(Hh, 1.0, noise)
    return float(sum_rate(Ht, V, noise).mean())


def evaluate_feedback(data: dict, methods: dict, *, users: int = 4, snr_db: float = 10.0,
                      stride: int = 16) -> dict:  # fmt: skip
    """NMSE (dB) and RZF sum rate of every method on one scenario, with the limits.

    Returns
    -------
    dict
        ``{"nmse_db": {method: dB, "limit": truncation floor}, "sum_rate": {method: bit/s/Hz,
        "limit": perfect CSI}}``; the NMSE limit is that of the true channel truncated to the
        fed-back taps (``10 log10 E[tail]``), which no decoder of a ``T``-tap image can beat.
    """
    H = data["H"]
    res = {"nmse_db": {}, "sum_rate": {}}
    for name, method in methods.items():
        H_hat = method(data)
        res["nmse_db"][name] = feedback_nmse(H_hat, H)
        res["sum_rate"][name] = feedback_sum_rate(H_hat, H, users=users, snr_db=snr_db,
                                                  stride=stride)  # fmt: skip
    res["nmse_db"]["limit"] = 10 * math.log10(float(data["tail"].mean()))
    res["sum_rate"]["limit"] = feedback_sum_rate(H, H, users=users, snr_db=snr_db, stride=stride)
    return res


def ratio_label(ratio: float) -> str:
    """``0.25 -> "1/4"`` (the key of a compression ratio in the results)."""
    from fractions import Fraction

    return str(Fraction(ratio).limit_denominator(1024))


def evaluate_feedback_grid(ratios, scenarios=FEEDBACK_SCENARIOS, *, n: int = 400,
                           seed: int = 0, setup: FeedbackSetup = FeedbackSetup(),
                           directory=None, **kwargs) -> dict:  # fmt: skip
    """:func:`evaluate_feedback` of every method at every ratio on every scenario.

    Each scenario's ``n`` channels (:func:`feedback_scenario` with ``seed``) are drawn once and
    shared by all ratios; Type-II feedback, which has no ratio, is computed once per scenario
    and reported at every ratio. ``kwargs`` go to :func:`evaluate_feedback`.

    Returns
    -------
    dict
        ``{scenario: {ratio_label: {"nmse_db": {...}, "sum_rate": {...}}}}`` in the order of
        ``scenarios`` and ``ratios`` (the layout of ``results/csi_feedback/summary.json``).
    """
    methods = {r: feedback_methods(r, setup, directory=directory,
                                   methods=FEEDBACK_METHODS[1:]) for r in ratios}  # fmt: skip
    type2 = feedback_methods(ratios[0], setup, directory=directory, methods=("TypeII",))
    out = {}
    for sc in scenarios:
        data = feedback_scenario(sc, n, setup, seed=seed)
        ref = evaluate_feedback(data, type2, **kwargs)
        out[sc] = {}
        for r in ratios:
            res = evaluate_feedback(data, methods[r], **kwargs)
            out[sc][ratio_label(r)] = {
                key: {"TypeII": ref[key]["TypeII"], **res[key]} for key in ("nmse_db", "sum_rate")
            }
    return out
