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
* :class:`~lib.chapters.CSFeedback` -- compressed-sensing feedback with a Gaussian matrix.

The shift experiments built on them are in :mod:`lib.chapters.feedback_shift`.
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
    "feedback_source_images",
    "site_feedback_images",
    "energy_concentration",
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
        One of ``TR38901_FEEDBACK_MODELS``.
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
    ``FEEDBACK_SOURCE_SITES``.

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


def energy_concentration(X: torch.Tensor, q: float = 0.05) -> float:
    """Mean share of an image's energy in its strongest ``q`` fraction of (complex) entries.

    Parameters
    ----------
    X : torch.Tensor
        ``(B, ...)`` complex images (one per row).
    q : float
        In ``(0, 1]``; at least one entry is counted.
    """
    check_complex(X, "X")
    if X.ndim < 2:
        raise ValueError(f"X must have shape (B, ...), got {tuple(X.shape)}")
    q = check_number(q, "q", lo=0, hi=1, lo_open=True)
    e = X.abs().pow(2).flatten(1).sort(-1, descending=True).values
    k = max(1, int(q * e.shape[1]))
    total = e.sum(1)
    if bool((total <= 0).any()):
        raise ValueError("every image in X must have positive energy")
    return float((e[:, :k].sum(1) / total).mean())

