"""Pipeline of the chapter *Generalizable precoding* (PaPP, arXiv:2601.21897) on the stored
ray-traced sites: the set-up, the source domains, the samplers of DeepAll / MLDG / MAML, the
CSI-error model and the evaluation of every precoder on the test sites.

* :class:`~lib.chapters.PaPPSetup` -- K = 4 users, an 8x8 UPA, site normalisation, the training
  SNRs and CSI-error levels, the source sites (splits ``train`` and ``meta``) and the test sites
  (``heldout`` and ``unseen_city``);
* :func:`~lib.chapters.csi_error` -- ``H_hat = sqrt(1 - beta^2) H + beta E`` with ``E`` i.i.d.
  ``CN(0, 1)`` entries (the site-normalised channel has unit mean gain per entry, so ``beta^2`` is
  the relative error power and ``H_hat`` keeps the channel's mean power);
* :func:`~lib.chapters.source_pool` -- per source site a fixed pool of samples of the training
  users with the reference sum rate ``R_WMMSE`` at every training SNR (the normaliser of the
  rate losses);
* :class:`~lib.chapters.DomainSampler` -- every step ``D`` domains (a site, an SNR, a CSI-error
  level), ``b`` samples each, as ``(D, b, ...)`` blocks;
* :func:`~lib.chapters.evaluate_precoders` -- sum rates of precoders on true channels given
  CSI with error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lib.core.checks import check_number, check_positive_int, check_tensor
from lib.phy import load_site, site_names
from lib.precoding import rzf, sum_rate, wmmse
from lib.precoding.common import _scalar

__all__ = [
    "PaPPSetup",
    "csi_error",
    "split_site_users",
    "source_pool",
    "DomainSampler",
    "reference_wmmse",
    "converged_wmmse",
    "site_test_channels",
    "build_papp_model",
    "phase_extraction_hybrid",
    "evaluate_precoders",
]


@dataclass(frozen=True)
class PaPPSetup:
    """The chapter's set-up (fields are the defaults of ``scripts/train_papp.py``)."""

    users: int = 4
    n_h: int = 8
    n_v: int = 8
    snr_db: tuple = (10.0, 15.0, 20.0, 25.0)
    betas: tuple = (0.0, 0.2, 0.4)
    source_sites: tuple = field(default_factory=lambda: tuple(
        site_names("train") + site_names("meta")))  # fmt: skip
    test_sites: tuple = field(default_factory=lambda: tuple(
        site_names("heldout") + site_names("unseen_city")))  # fmt: skip
    val_fraction: float = 0.2
    ref_iters: int = 300

    @property
    def antennas(self) -> int:
        return self.n_h * self.n_v


def csi_error(H: torch.Tensor, beta, generator: torch.Generator | None = None) -> torch.Tensor:
    """``H_hat = sqrt(1 - beta^2) H + beta E``, ``E`` i.i.d. ``CN(0, 1)``; ``beta`` in ``[0, 1]``,
    a number or ``(B,)`` (one level per sample of ``H`` ``(B, K, M)``)."""
    check_tensor(H, "H", complex_=True, ndim=3)
    if isinstance(beta, torch.Tensor):
        check_tensor(beta, "beta", complex_=False, shape=(H.shape[0],))
        if bool(((beta < 0) | (beta > 1)).any()):
            raise ValueError("beta must lie in [0, 1]")
        b = beta.to(device=H.device, dtype=H.real.dtype)[:, None, None]
    else:
        b = torch.tensor(check_number(beta, "beta", lo=0.0, hi=1.0), dtype=H.real.dtype,
                         device=H.device)  # fmt: skip
    E = torch.randn(H.shape, generator=generator, dtype=H.dtype, device="cpu").to(H.device)
    return torch.sqrt(1.0 - b * b) * H + b * E


def split_site_users(site, val_fraction: float = 0.2, seed: int = 0):
    """A fixed random split of a site's users into ``(train, validation)`` index tensors."""
    check_number(val_fraction, "val_fraction", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(site.n_users, generator=g)
    n_val = max(1, int(round(val_fraction * site.n_users)))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def reference_wmmse(H: torch.Tensor, snr_db, iters: int, chunk: int = 512) -> torch.Tensor:
    """Sum rate of WMMSE run ``iters`` iterations from the equal-power RZF start, unit noise,
    ``P = 10^(snr_db / 10)`` (``snr_db`` a number or ``(B,)``), in chunks of ``chunk`` samples;
    float64 ``(B,)``."""
    Hd = H.to(torch.complex128)
    snr = torch.as_tensor(snr_db, dtype=torch.float64).expand(H.shape[0])
    out = []
    for i in range(0, H.shape[0], chunk):
        h, P = Hd[i : i + chunk], 10.0 ** (snr[i : i + chunk] / 10.0)
        V = wmmse(h, P, 1.0, iters=iters, V0=rzf(h, P, 1.0, equal_power=True))
        out.append(sum_rate(h, V, 1.0))
    return torch.cat(out)


def converged_wmmse(H: torch.Tensor, power, noise_var, *, tol: float = 1e-4,
                    max_iters: int = 20000) -> torch.Tensor:  # fmt: skip
    """WMMSE run until an iteration gains less than ``tol`` bits/s/Hz (at most ``max_iters``),
    from the equal-power RZF (:func:`lib.precoding.rzf` with ``equal_power=True``); the
    precoder ``(B, M, K)``.

    On the site channels WMMSE is slow: from the total-power RZF it still gains several
    bits/s/Hz between 300 and 10,000 iterations at 25 dB, and from the equal-power RZF it
    reaches a better stationary point sooner, so that start is the default.
    """
    V0 = rzf(H, power, noise_var, equal_power=True)
    return wmmse(H, power, noise_var, iters=max_iters, V0=V0, tol=tol)


def site_test_channels(setup: PaPPSetup, name: str, samples: int, seed: int = 2026,
                  dtype=torch.complex128) -> torch.Tensor:  # fmt: skip
    """``samples`` test channels ``(samples, K, M)`` of the site ``name`` (all its users; a
    test site is never a source site)."""
    if name in setup.source_sites:
        raise ValueError(f"{name!r} is a source site; test sites are {setup.test_sites}")
    site = load_site(name)
    g = torch.Generator().manual_seed(seed)
    H, _ = site.sample(samples, setup.users, g, setup.n_h, setup.n_v, dtype=dtype)
    return H


def build_papp_model(record: dict, setup: PaPPSetup | None = None):
    """The untrained network of a training record of ``scripts/train_papp.py`` (its
    ``protocol``), ready for ``load_state_dict``."""
    from lib.learn import CNNPrecoderNet, PaPPNet

    setup = PaPPSetup() if setup is None else setup
    pr = record["protocol"]
    if pr["backbone"] == "cnn":
        return CNNPrecoderNet(setup.users, setup.antennas)
    return PaPPNet(setup.n_h, setup.n_v, pr["embed"], pr["hidden"], hybrid=pr["hybrid"],
                   n_rf=pr["n_rf"], normalise=not pr["no_normalise"],
                   structure=pr.get("student", "structure") == "structure")  # fmt: skip


def phase_extraction_hybrid(H: torch.Tensor, power, noise_var) -> torch.Tensor:
    """The classical hybrid baseline with ``N_RF = K`` RF chains (Liang, Xu & Dong 2014):
    analog columns with the phases of the users' channels, ``A = exp(j angle(H^H)) / sqrt(M)``,
    and equal-power RZF on the effective channel ``H A``, every stream scaled so that
    ``||A w_k||^2 = P / K``. Returns the overall precoder ``A W_dp`` ``(B, M, K)``."""
    check_tensor(H, "H", complex_=True, ndim=3)
    M = H.shape[-1]
    P = _scalar(power, "power", H)
    _scalar(noise_var, "noise_var", H)
    A = torch.polar(torch.full(H.mH.shape, 1.0 / M**0.5, dtype=H.real.dtype, device=H.device),
                    torch.angle(H.mH))  # fmt: skip
    W = rzf(H @ A, power, noise_var)
    V = A @ W
    K = H.shape[-2]
    n = torch.linalg.vector_norm(V, dim=-2).clamp_min(torch.finfo(H.real.dtype).tiny)
    return V * (torch.sqrt(P / K)[:, None] / n).to(H.dtype)[:, None, :]


def source_pool(setup: PaPPSetup, samples: int, split: str = "train", seed: int = 0,
                dtype=torch.complex64, progress=None, *,
                los_domains: bool = False) -> dict:  # fmt: skip
    """Fixed samples of every source site: ``{"H": (S, N, K, M), "rate_ref": (S, N, len(snr)),
    "sites": names}`` with users from the ``split`` part (``"train"`` or ``"val"``) of
    :func:`split_site_users`; ``rate_ref[s, n, i]`` is :func:`reference_wmmse` at
    ``setup.snr_db[i]`` with ``setup.ref_iters`` iterations.

    With ``los_domains`` the first ``N // 2`` samples of each site have line-of-sight users
    only and the others non-line-of-sight users only (the LOS/NLOS axis of the domains of
    :class:`DomainSampler`), and the pool also holds ``"los_samples"`` = ``N // 2``."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    samples = check_positive_int(samples, "samples")
    if los_domains and samples < 2:
        raise ValueError(f"los_domains needs samples >= 2, got {samples}")
    g = torch.Generator().manual_seed(seed)
    Hs, rs = [], []
    for name in setup.source_sites:
        site = load_site(name)
        tr, va = split_site_users(site, setup.val_fraction)
        users = tr if split == "train" else va
        if los_domains:
            los = site.los[users].cpu()
            for cls, m in (("line-of-sight", los), ("non-line-of-sight", ~los)):
                if int(m.sum()) < setup.users:
                    raise ValueError(
                        f"los_domains: site {name!r} has {int(m.sum())} {cls} {split} "
                        f"users, fewer than K = {setup.users}")  # fmt: skip
            H = torch.cat([
                site.sample(n, setup.users, g, setup.n_h, setup.n_v, pool=users[m],
                            dtype=dtype)[0]
                for n, m in ((samples // 2, los), (samples - samples // 2, ~los))
            ])  # fmt: skip
        else:
            H, _ = site.sample(samples, setup.users, g, setup.n_h, setup.n_v, pool=users,
                               dtype=dtype)  # fmt: skip
        Hs.append(H)
        rs.append(torch.stack([reference_wmmse(H, s, setup.ref_iters) for s in setup.snr_db], -1))
        if progress is not None:
            progress(name)
    out = {"H": torch.stack(Hs), "rate_ref": torch.stack(rs), "sites": list(setup.source_sites)}
    if los_domains:
        out["los_samples"] = samples // 2
    return out


class DomainSampler:
    """Batches of ``domains`` domain blocks for :func:`lib.learn.fit`.

    A domain is a source site, a training SNR and a CSI-error level (sites distinct within a
    batch) and, with ``los_domains``, the line-of-sight or non-line-of-sight users of the
    site (a pool of :func:`source_pool` with ``los_domains=True``).
    ``sampler(batch_size, generator)`` returns ``((H_true, H_hat, snr_db, rate_ref),
    None)`` with ``H_*`` ``(D, b, K, M)``, ``snr_db`` and ``rate_ref`` ``(D, b)``, ``b =
    batch_size // D``; ``H_hat`` has fresh error of the domain's ``beta``.
    """

    def __init__(self, pool: dict, setup: PaPPSetup, domains: int = 4, *,
                 los_domains: bool = False):  # fmt: skip
        self.H, self.rate = pool["H"], pool["rate_ref"]
        self.S, self.N = self.H.shape[:2]
        self.D = check_positive_int(domains, "domains")
        if self.D > self.S:
            raise ValueError(f"domains = {self.D} exceeds the {self.S} source sites")
        self.n_los = None
        if los_domains:
            if "los_samples" not in pool:
                raise ValueError("los_domains needs a pool of source_pool(..., los_domains=True)")
            self.n_los = int(pool["los_samples"])
            if not 0 < self.n_los < self.N:
                raise ValueError(f"pool['los_samples'] must be in (0, {self.N}), got {self.n_los}")
        self.snr = torch.tensor(setup.snr_db, dtype=torch.float64)
        self.betas = torch.tensor(setup.betas, dtype=torch.float64)

    def __call__(self, batch_size: int, generator: torch.Generator):
        b = batch_size // self.D
        if b < 1:
            raise ValueError(f"batch_size {batch_size} < domains {self.D}")
        site = torch.randperm(self.S, generator=generator)[: self.D]
        si = torch.randint(len(self.snr), (self.D,), generator=generator)
        bi = torch.randint(len(self.betas), (self.D,), generator=generator)
        if self.n_los is None:
            n = torch.randint(self.N, (self.D, b), generator=generator)
        else:  # a LOS (first n_los samples) or an NLOS domain (the rest) per block
            los = torch.randint(2, (self.D,), generator=generator).bool()
            size = torch.where(los, self.n_los, self.N - self.n_los)
            start = torch.where(los, 0, self.n_los)
            u = torch.rand(self.D, b, generator=generator, dtype=torch.float64)
            n = start[:, None] + (u * size[:, None]).long().clamp_max(size[:, None] - 1)
        H = self.H[site[:, None], n]
        rate = self.rate[site[:, None], n, si[:, None]].float()
        beta = self.betas[bi][:, None].expand(self.D, b).reshape(-1)
        H_hat = csi_error(H.reshape(-1, *H.shape[2:]), beta, generator).reshape(H.shape)
        snr = self.snr[si][:, None].expand(self.D, b).float()
        return (H, H_hat, snr, rate), None


def evaluate_precoders(precoders: dict, H: torch.Tensor, snr_db, *, H_hat=None) -> dict:
    """Sum rates ``(B,)`` of every ``precoders[name](H_hat, P, 1.0)`` on the true ``H`` at
    ``P = 10^(snr_db / 10)`` (unit noise); ``H_hat = H`` by default."""
    check_tensor(H, "H", complex_=True, ndim=3)
    Hh = H if H_hat is None else H_hat
    P = torch.as_tensor(10.0 ** (torch.as_tensor(snr_db, dtype=torch.float64) / 10.0))
    P = P.to(H.real.dtype).expand(H.shape[0])
    out = {}
    for name, f in precoders.items():
        V = f(Hh, P, 1.0)
        if not bool(torch.isfinite(V).all()):
            raise FloatingPointError(f"precoder {name!r} returned non-finite values")
        out[name] = sum_rate(H, V.to(H.dtype), 1.0)
    return out

