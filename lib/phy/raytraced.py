"""Channels from ray tracing: the book's multi-site dataset (chapter *Channels from ray tracing*).

``results/sites/`` holds, for every deployment site (one base station with a 120-degree sector
in a city scene of Sionna RT), the propagation paths to about a thousand user positions on a
grid: complex gain :math:`a_{u\\ell}`, delay :math:`\\tau_{u\\ell}`, zenith and azimuth of
departure :math:`(\\theta^{\\mathrm t}_{u\\ell}, \\varphi^{\\mathrm t}_{u\\ell})` and of arrival,
interaction types and the user's position (``scripts/generate_sites.py``, its README and
``manifest.json``). The paths were traced between single isotropic antennas; the BS array is
applied here, under the plane-wave (far-field) model, eq. :math:numref:`eq-rt-channel` of the
chapter:

.. math::

    [\\mathbf H]_{u m}(f) = \\sum_{\\ell} a_{u\\ell}\\,
    e^{\\,j 2\\pi\\, \\mathbf r_m^{\\mathsf T} \\mathbf k_{u\\ell}}\\,
    e^{-j 2\\pi f \\tau_{u\\ell}},

where :math:`\\mathbf k_{u\\ell} = \\mathbf k(\\theta^{\\mathrm t}_{u\\ell},
\\varphi^{\\mathrm t}_{u\\ell})` is the direction of departure of path :math:`\\ell`, with
:math:`\\mathbf k(\\theta, \\varphi) = (\\sin\\theta\\cos\\varphi,
\\sin\\theta\\sin\\varphi, \\cos\\theta)`, :math:`\\mathbf r_m` the position of BS antenna
``m`` relative to the array centre, in wavelengths, and ``f`` the absolute frequency:
the carrier :math:`f_c` for the narrowband channel, :math:`f_c + \\Delta f` on the subcarrier at
offset :math:`\\Delta f`. The gains :math:`a_{u\\ell}` are Sionna RT's ``Paths.a``, without the
propagation phase, which the last factor adds. Row ``u`` is
:math:`\\mathbf h_u^{\\mathsf H}` in the book's convention (user ``u`` receives
:math:`\\mathbf h_u^{\\mathsf H}\\mathbf x`).

* :func:`~lib.phy.site_manifest`, :func:`~lib.phy.site_names` -- the sites and their splits
  (``train``, ``meta``, ``heldout``, ``unseen_city``);
* :func:`~lib.phy.load_site` -- one site as a :class:`~lib.phy.RayTracedSite`;
* :func:`~lib.phy.upa_positions` -- element positions of a half-wavelength UPA facing the
  site's boresight (the ordering of :func:`~lib.phy.upa_steering`);
* :func:`~lib.phy.channels_from_paths` -- the sum above, batched;
* :func:`~lib.phy.subcarrier_frequencies` -- OFDM subcarrier offsets;
* :meth:`RayTracedSite.channels <lib.phy.RayTracedSite.channels>` and
  :meth:`RayTracedSite.sample <lib.phy.RayTracedSite.sample>` -- channels of given users, and
  multi-user samples of ``K`` distinct users per sample.

**Power normalisation.** Ray-traced gains carry the path loss (about -60 to -140 dB). With
``normalization="site"`` (the default) every channel of a site is divided by
:math:`\\sqrt{\\bar g_s}`, with
:math:`\\bar g_s = \\frac1U\\sum_u \\sum_\\ell |a_{u\\ell}|^2` the site's mean path gain, so
that :math:`\\mathbb E_u\\,\\|\\mathbf h_u\\|^2 \\approx M` over the site while the users
keep their path-loss differences; then the SNR ``P / sigma^2`` is the **site-average receive SNR
per antenna**, the quantity that the power-aware normalisation of the chapter *Generalizable
precoding* scales by (:math:`\\bar{\\mathbf H} = \\sqrt{P}\\,\\mathbf H / \\sigma`). With ``"user"``
each user's channel is scaled to :math:`\\|\\mathbf h_u\\|^2 = M` (``N M`` over ``N`` subcarriers;
spatial structure only); with
``"none"`` the traced gains are kept (then the SNR of user ``u`` is
:math:`P\\,\\|\\mathbf h_u\\|^2 / (M\\sigma^2)` with ``P`` and :math:`\\sigma^2` in watts).

**Array size.** The paths were traced to the array centre, so a larger array is valid while the
users are in its far field: the Fraunhofer distance :math:`2D^2/\\lambda` (``D`` the array
diagonal) must not exceed the site's least BS-user distance; a larger array is refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from lib.core.checks import check_dtype, check_number, check_positive_int, check_tensor
from lib.core.resources import results_dir

__all__ = [
    "SPEED_OF_LIGHT",
    "site_manifest",
    "site_names",
    "load_site",
    "upa_positions",
    "channels_from_paths",
    "subcarrier_frequencies",
    "RayTracedSite",
    "configure_ray_tracer",
]

#: Speed of light (m/s), the value Sionna RT uses.
SPEED_OF_LIGHT = 299_792_458.0
_SPLITS = ("train", "meta", "heldout", "unseen_city")
_NORMS = ("site", "user", "none")


#: Where Debian's ``libllvm19`` puts the library that Dr.Jit's CPU back end needs.
_LLVM_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libLLVM-19.so",
    "/usr/lib/aarch64-linux-gnu/libLLVM-19.so",
    "/usr/lib/llvm-19/lib/libLLVM.so",
)


def configure_ray_tracer() -> str | None:
    """Point Dr.Jit (Sionna RT's CPU back end) at LLVM 19 before ``sionna.rt`` is imported.

    Keeps ``DRJIT_LIBLLVM_PATH`` if it is set, otherwise sets it to the first LLVM 19 library
    found (Debian: ``apt-get install libllvm19``); older LLVM versions crash in Dr.Jit's code
    generation. Returns the path in use, or ``None`` when none was found (``sionna.rt`` then
    falls back to the default LLVM, if any).
    """
    import os

    if os.environ.get("DRJIT_LIBLLVM_PATH"):
        return os.environ["DRJIT_LIBLLVM_PATH"]
    for cand in _LLVM_CANDIDATES:
        if os.path.exists(cand):
            os.environ["DRJIT_LIBLLVM_PATH"] = cand
            return cand
    return None


def _folder():
    return results_dir("sites", must_exist=True)


@lru_cache(maxsize=4)
def _manifest_at(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def site_manifest() -> dict:
    """``results/sites/manifest.json``: carrier, ray budget and one record per site (name, scene,
    split, BS position, boresight, number of users, LOS fraction, median path gain, CPU s)."""
    return _manifest_at(str(_folder() / "manifest.json"))


def site_names(split: str | None = None) -> list[str]:
    """Names of the stored sites, all or those of one ``split`` (``"train"``, ``"meta"``,
    ``"heldout"``, ``"unseen_city"``)."""
    if split is not None and split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS} or None, got {split!r}")
    return [s["name"] for s in site_manifest()["sites"] if split in (None, s["split"])]


def upa_positions(n_h: int, n_v: int, boresight: float = 0.0, spacing: float = 0.5,
                  *, dtype=torch.float64, device=None) -> torch.Tensor:  # fmt: skip
    """Element positions (in wavelengths) of an ``n_h x n_v`` UPA centred at the origin, in the
    vertical plane facing azimuth ``boresight`` (radians): horizontal axis
    :math:`(-\\sin\\psi, \\cos\\psi, 0)`, vertical axis ``z``; element ``(m_h, m_v)`` is row
    ``m_h n_v + m_v`` as in :func:`~lib.phy.upa_steering`.

    Returns
    -------
    torch.Tensor
        ``(n_h n_v, 3)`` real.
    """
    n_h = check_positive_int(n_h, "n_h")
    n_v = check_positive_int(n_v, "n_v")
    boresight = check_number(boresight, "boresight")
    spacing = check_number(spacing, "spacing", lo=0, lo_open=True)
    dtype = check_dtype(dtype, "dtype", complex_=False)
    ih = torch.arange(n_h, dtype=dtype, device=device) - (n_h - 1) / 2
    iv = torch.arange(n_v, dtype=dtype, device=device) - (n_v - 1) / 2
    ih, iv = torch.meshgrid(ih, iv, indexing="ij")
    e_h = torch.tensor([-math.sin(boresight), math.cos(boresight), 0.0], dtype=dtype,
                       device=device)  # fmt: skip
    e_v = torch.tensor([0.0, 0.0, 1.0], dtype=dtype, device=device)
    pos = ih.reshape(-1, 1) * e_h + iv.reshape(-1, 1) * e_v
    return spacing * pos


def _directions(theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    st = torch.sin(theta)
    return torch.stack([st * torch.cos(phi), st * torch.sin(phi), torch.cos(theta)], -1)


def channels_from_paths(a, theta_t, phi_t, positions, *, tau=None, frequencies=None):
    """Channels of a BS array from path gains, departure angles and delays, eq.
    (eq-rt-channel).

    Parameters
    ----------
    a : torch.Tensor
        ``(..., L)`` complex path gains (zero for an absent path), as Sionna RT's ``Paths.a``:
        without the propagation phase :math:`e^{-j 2\\pi f \\tau}`.
    theta_t, phi_t : torch.Tensor
        ``(..., L)`` real zenith and azimuth of departure (radians).
    positions : torch.Tensor
        ``(M, 3)`` real element positions in wavelengths (:func:`~lib.phy.upa_positions`).
    tau : torch.Tensor, optional
        ``(..., L)`` delays (s); needed with ``frequencies``.
    frequencies : torch.Tensor, optional
        ``(N,)`` **absolute** frequencies (Hz): the carrier for the narrowband channel,
        carrier plus :func:`~lib.phy.subcarrier_frequencies` for OFDM. Without ``tau`` and
        ``frequencies`` the gains are summed as given (already baseband).

    Returns
    -------
    torch.Tensor
        ``(..., M)`` without ``frequencies``, otherwise ``(..., N, M)``; the dtype of ``a``.
        The phases :math:`2\\pi f\\tau` are formed in float64 whatever the dtype of ``a``.
    """
    check_tensor(a, "a", complex_=True, finite=False)
    shape = tuple(a.shape)
    for nm, x in (("theta_t", theta_t), ("phi_t", phi_t)):
        check_tensor(x, nm, complex_=False, shape=shape, finite=False)
    check_tensor(positions, "positions", complex_=False, shape=("M", 3))
    if (tau is None) != (frequencies is None):
        raise ValueError("tau and frequencies must be given together (or neither)")
    if tau is not None:
        check_tensor(tau, "tau", complex_=False, shape=shape, finite=False)
        check_tensor(frequencies, "frequencies", complex_=False, ndim=1)
    return _channels(a, theta_t, phi_t, positions, tau, frequencies)


def _channels(a, theta_t, phi_t, positions, tau=None, frequencies=None):
    rdt = a.real.dtype
    k = _directions(theta_t.to(rdt), phi_t.to(rdt))  # (..., L, 3)
    phase = 2 * math.pi * (k @ positions.to(device=a.device, dtype=rdt).T)  # (..., L, M)
    steer = torch.polar(torch.ones_like(phase), phase)
    if frequencies is None:
        return torch.einsum("...l,...lm->...m", a, steer)
    f = frequencies.to(device=a.device, dtype=torch.float64)
    cycles = tau.to(torch.float64)[..., None, :] * f[:, None]  # (..., N, L), f tau ~ 1e3-1e4
    delay = (-2 * math.pi * torch.frac(cycles)).to(rdt)
    ramp = torch.polar(torch.ones_like(delay), delay)
    return torch.einsum("...l,...nl,...lm->...nm", a, ramp, steer)


def subcarrier_frequencies(n: int, spacing: float, *, dtype=torch.float64, device=None):
    """Offsets from the carrier of ``n`` OFDM subcarriers ``spacing`` Hz apart, centred as in
    Sionna (``(k - floor(n/2)) spacing``, ``k = 0..n-1``)."""
    n = check_positive_int(n, "n")
    spacing = check_number(spacing, "spacing", lo=0, lo_open=True)
    return (torch.arange(n, dtype=dtype, device=device) - n // 2) * spacing


@dataclass
class RayTracedSite:
    """One stored site: per-user path parameters as tensors (users first, ``L`` paths each,
    strongest first, zero-padded) and the site's record of ``manifest.json``.

    Attributes
    ----------
    name : str
        The site's name (``"<scene>-r1"`` roof edge, ``"<scene>-s1"`` street).
    scene : str
        The Sionna RT scene.
    split : str
        ``"train"``, ``"meta"``, ``"heldout"`` or ``"unseen_city"``.
    bs_position : torch.Tensor
        ``(3,)`` metres.
    boresight : float
        Sector boresight azimuth (radians).
    carrier_hz : float
        Carrier frequency (Hz).
    positions : torch.Tensor
        ``(U, 3)`` user positions (m).
    a : torch.Tensor
        ``(U, L)`` complex gains.
    tau : torch.Tensor
        ``(U, L)`` delays (s).
    theta_t : torch.Tensor
        ``(U, L)`` zenith of departure (rad); ``phi_t`` the azimuth, ``theta_r`` and
        ``phi_r`` those of arrival.
    interactions : torch.Tensor
        ``(U, L)`` uint8: interaction types OR-ed over the path (Sionna's ``InteractionType``:
        1 specular, 8 diffraction; 0 line of sight); ``n_interactions`` their number.
    los : torch.Tensor
        ``(U,)`` bool, a line-of-sight path exists.
    captured : torch.Tensor
        ``(U,)`` fraction of the traced power in the stored paths.
    record : dict
        The site's record of ``manifest.json``.
    """

    name: str
    scene: str
    split: str
    bs_position: torch.Tensor
    boresight: float
    carrier_hz: float
    positions: torch.Tensor
    a: torch.Tensor
    tau: torch.Tensor
    theta_t: torch.Tensor
    phi_t: torch.Tensor
    theta_r: torch.Tensor
    phi_r: torch.Tensor
    interactions: torch.Tensor
    n_interactions: torch.Tensor
    los: torch.Tensor
    captured: torch.Tensor
    record: dict

    @property
    def n_users(self) -> int:
        return int(self.a.shape[0])

    @property
    def wavelength(self) -> float:
        return SPEED_OF_LIGHT / self.carrier_hz

    @property
    def path_gain(self) -> torch.Tensor:
        """``(U,)`` path gain :math:`\\sum_\\ell |a_{u\\ell}|^2` (linear)."""
        return (self.a.abs() ** 2).sum(-1).to(self.a.real.dtype)

    @property
    def mean_path_gain(self) -> float:
        """:math:`\\bar g_s`, the site's mean path gain (the ``"site"`` normalisation)."""
        return float(self.path_gain.double().mean())

    @property
    def distances(self) -> torch.Tensor:
        """``(U,)`` BS-user distances (m)."""
        return torch.linalg.vector_norm(self.positions - self.bs_position, dim=-1)

    def max_aperture(self) -> float:
        """Largest array diagonal (m) whose Fraunhofer distance ``2 D^2 / lambda`` is within
        the site's least BS-user distance."""
        return math.sqrt(float(self.distances.min()) * self.wavelength / 2)

    def users_in(self, region=None, *, los=None) -> torch.Tensor:
        """Indices of the users inside ``region`` ``(x_min, x_max, y_min, y_max)`` (metres,
        ``None``: everywhere) and, if ``los`` is given, with (``True``) or without a
        line-of-sight path."""
        keep = torch.ones(self.n_users, dtype=torch.bool, device=self.a.device)
        if region is not None:
            if len(region) != 4:
                raise ValueError(f"region must be (x_min, x_max, y_min, y_max), got {region!r}")
            x0, x1, y0, y1 = (check_number(v, "region", finite=False) for v in region)
            x, y = self.positions[:, 0], self.positions[:, 1]
            keep &= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        if los is not None:
            keep &= self.los if los else ~self.los
        return torch.nonzero(keep).flatten()

    def array(self, n_h: int, n_v: int) -> torch.Tensor:
        """Element positions (wavelengths) of an ``n_h x n_v`` half-wavelength UPA facing the
        sector, checked against :meth:`max_aperture`."""
        pos = upa_positions(n_h, n_v, self.boresight, device=self.a.device)
        diag = math.hypot(n_h - 1, n_v - 1) * 0.5 * self.wavelength
        if diag > self.max_aperture():
            raise ValueError(
                f"an {n_h}x{n_v} array (diagonal {diag:.2f} m) is larger than site "
                f"{self.name!r} supports: its users are in the far field only up to a diagonal "
                f"of {self.max_aperture():.2f} m (Fraunhofer distance within the least BS-user "
                f"distance {float(self.distances.min()):.1f} m)"
            )
        return pos

    def channels(self, users=None, n_h: int = 8, n_v: int = 8, *, normalization="site",
                 frequencies=None, dtype=None) -> torch.Tensor:  # fmt: skip
        """Channels of the users ``users`` (an index tensor of any shape, ``None``: all) for an
        ``n_h x n_v`` UPA: ``users.shape + (M,)``, or ``users.shape + (N, M)`` with
        ``frequencies`` (offsets from the carrier, Hz; the narrowband channel is the one at
        the carrier); ``normalization`` ``"site"``, ``"user"``
        or ``"none"`` (module docstring); complex64 unless ``dtype`` is given."""
        if normalization not in _NORMS:
            raise ValueError(f"normalization must be one of {_NORMS}, got {normalization!r}")
        dtype = self.a.dtype if dtype is None else check_dtype(dtype, "dtype", complex_=True)
        if users is None:
            users = torch.arange(self.n_users, device=self.a.device)
        check_tensor(users, "users", finite=False)
        if users.dtype not in (torch.int64, torch.int32) or users.numel() and (
            int(users.min()) < 0 or int(users.max()) >= self.n_users
        ):  # fmt: skip
            raise ValueError(
                f"users must be integer indices in 0..{self.n_users - 1} of site {self.name!r}"
            )
        pos = self.array(n_h, n_v)
        if frequencies is not None:
            check_tensor(frequencies, "frequencies", complex_=False, ndim=1)
        idx = users.to(self.a.device).long()
        a = self.a[idx].to(dtype)
        fc = torch.tensor([self.carrier_hz], dtype=torch.float64, device=a.device)
        f = fc if frequencies is None else fc + frequencies.to(a.device, torch.float64)
        H = _channels(a, self.theta_t[idx], self.phi_t[idx], pos, self.tau[idx], f)
        if frequencies is None:
            H = H[..., 0, :]
        if normalization == "site":
            H = H / math.sqrt(self.mean_path_gain)
        elif normalization == "user":
            dims = (-1,) if frequencies is None else (-2, -1)
            size = H.shape[-1] if frequencies is None else H.shape[-1] * H.shape[-2]
            norm = torch.linalg.vector_norm(H, dim=dims, keepdim=True)
            H = H * (math.sqrt(size) / norm)
        return H

    def sample(self, batch: int, users: int, generator: torch.Generator | None = None,
               n_h: int = 8, n_v: int = 8, *, pool=None, normalization="site",
               frequencies=None, dtype=None):  # fmt: skip
        """``batch`` multi-user samples of ``users`` = ``K`` distinct users each, drawn
        uniformly from ``pool`` (indices, e.g. :meth:`users_in`; ``None``: all users).

        Returns
        -------
        tuple
            ``(H, idx)``: ``H`` ``(batch, K, M)`` (or ``(batch, N, K, M)`` with
            ``frequencies``) and the user indices ``(batch, K)``.
        """
        batch = check_positive_int(batch, "batch")
        K = check_positive_int(users, "users")
        pool = torch.arange(self.n_users) if pool is None else pool.detach().cpu().long()
        if pool.dim() != 1:
            raise ValueError(f"pool must be a 1-D index tensor, got shape {tuple(pool.shape)}")
        if K > pool.numel():
            raise ValueError(
                f"users = {K} exceeds the {pool.numel()} users available at site {self.name!r}"
            )
        w = torch.ones(batch, pool.numel())
        pick = torch.multinomial(w, K, replacement=False, generator=generator)
        idx = pool[pick].to(self.a.device)
        H = self.channels(idx, n_h, n_v, normalization=normalization,
                          frequencies=frequencies, dtype=dtype)  # fmt: skip
        if frequencies is not None:
            H = H.transpose(-3, -2)  # (batch, N, K, M)
        return H, idx


def load_site(name: str, *, device=None, dtype=torch.complex64) -> RayTracedSite:
    """Load the stored site ``name`` (:func:`~lib.phy.site_names`) onto ``device``; gains in
    ``dtype`` (complex64 or complex128), the rest in the matching real dtype."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    dtype = check_dtype(dtype, "dtype", complex_=True)
    man = site_manifest()
    rec = {s["name"]: s for s in man["sites"]}
    if name not in rec:
        raise ValueError(f"unknown site {name!r}; the stored sites are {sorted(rec)}")
    r = rec[name]
    rdt = torch.float64 if dtype == torch.complex128 else torch.float32
    with np.load(_folder() / f"{name}.npz") as z:
        t = {k: torch.from_numpy(z[k]) for k in z.files}
    f = lambda k: t[k].to(device=device, dtype=rdt)  # noqa: E731
    return RayTracedSite(
        name=name, scene=r["scene"], split=r["split"],
        bs_position=torch.tensor(r["bs_position"], dtype=rdt, device=device),
        boresight=math.radians(r["boresight_deg"]), carrier_hz=float(man["carrier_hz"]),
        positions=f("position"), a=t["a"].to(device=device, dtype=dtype), tau=f("tau"),
        theta_t=f("theta_t"), phi_t=f("phi_t"), theta_r=f("theta_r"), phi_r=f("phi_r"),
        interactions=t["interactions"].to(device), n_interactions=t["n_interactions"].to(device),
        los=t["los"].to(device), captured=f("captured"), record=dict(r),
    )  # fmt: skip
