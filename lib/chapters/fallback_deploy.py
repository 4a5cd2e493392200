"""The deployments of the chapter *Learned components behind a classical fallback*.

Five learned models of the book, each behind a classical method of its task with one monitor
(:class:`lib.methods.Fallback`), calibrated on in-distribution validation data for a target
trigger rate and scored on a matched and on shifted test sets:

====================  ====================  ===========  ==========================================
case                  learned               classical    monitor
====================  ====================  ===========  ==========================================
``CsiNet/TypeII``     stored CsiNet, 1/4    Type-II      Mahalanobis distance of CsiNet's codeword
``Unfolded/TypeII``   stored LAMP-BG, 1/4   Type-II      residual of the codeword
``LAMP/OAMP``         stored LAMP-BG, T=16  OAMP, 16 it  residual relative to the noise
``UWMMSE/RZF``        unfolded WMMSE, L=4   RZF          rate self-check
``PaPP/RZF``          stored PaPP student   RZF          rate self-check
====================  ====================  ===========  ==========================================

* :func:`~lib.chapters.fallback_case` builds one case (:class:`~lib.chapters.FallbackCase`:
  the wrapper, the loss, the validation and test sets);
* :func:`~lib.chapters.evaluate_case` scores it on every deployment
  (:func:`lib.methods.fallback_metrics` plus timings), the layout of
  ``results/fallback/summary.json`` (``scripts/eval_fallback.py``);
* :func:`~lib.chapters.codeword_monitor` is the CsiNet monitor, fitted on the training
  distribution by the script and stored (its mean and precision) in ``results/fallback``.
* ``FallbackCase.with_monitor`` puts the same two methods behind another monitor, e.g.
  :func:`~lib.chapters.papp_input_monitor`, the Mahalanobis distance of the channel's
  :func:`~lib.chapters.angular_profile` to the training channels of PaPP (fitted live in the
  chapter: the input-distribution monitor that sees the shift the rate self-check misses).

Losses are per sample and lower-is-better: NMSE in dB for the three estimators, minus the
sum rate (bit/s/Hz) on the true channel for the two precoders. CSI cases also have a limit,
the truncation floor (``FallbackCase.limit``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lib.core.checks import check_number, check_positive_int

__all__ = [
    "CodewordResidual",
    "FALLBACK_CASES",
    "FALLBACK_TOL",
    "FallbackCase",
    "TARGET_TRIGGER_RATE",
    "angular_profile",
    "codeword_monitor",
    "papp_input_monitor",
    "stored_papp_precoder",
    "fallback_case",
    "evaluate_case",
]

#: The wrapped models of the chapter, in the order of its tables.
FALLBACK_CASES = ("CsiNet/TypeII", "Unfolded/TypeII", "LAMP/OAMP", "UWMMSE/RZF", "PaPP/RZF")

#: Per case the loss difference (dB or bit/s/Hz) below which two methods count as equal when
#: deciding "worse than the classical method".
FALLBACK_TOL = {"CsiNet/TypeII": 0.5, "Unfolded/TypeII": 0.5, "LAMP/OAMP": 0.5,
                "UWMMSE/RZF": 0.1, "PaPP/RZF": 0.1}  # fmt: skip

#: Target trigger rate on in-distribution validation data.
TARGET_TRIGGER_RATE = 0.1


@dataclass
class FallbackCase:
    """One wrapped model: ``wrapper`` (a calibrated :class:`lib.methods.Fallback`), ``loss``
    ``(args, output, truth) -> (B,)``, the unit of the loss, and ``deployments``: name ->
    ``(kind, sampler)`` with ``kind`` ``"matched"`` or ``"shifted"`` and ``sampler(n, seed)
    -> (args, truth)``; ``validation`` the arguments the threshold was calibrated on;
    ``limit`` ``(args, truth) -> (B,)``, where one exists, the loss of the best output any
    method of the task could give (the truncation floor of the CSI decoders)."""

    name: str
    wrapper: object
    loss: Callable
    unit: str
    deployments: dict = field(default_factory=dict)
    validation: tuple = ()
    limit: Callable | None = None

    def with_monitor(self, monitor: Callable, *, trigger_rate: float = TARGET_TRIGGER_RATE,
                     name: str | None = None) -> FallbackCase:  # fmt: skip
        """The same learned and classical methods and deployments behind another
        ``monitor``, calibrated on the same validation arguments for ``trigger_rate``."""
        from lib.methods import Fallback

        old = self.wrapper
        w = Fallback(old.learned, old.classical, monitor, task=old.task)
        w.calibrate(*self.validation, trigger_rate=trigger_rate)
        return FallbackCase(self.name if name is None else name, w, self.loss, self.unit,
                            dict(self.deployments), self.validation, self.limit)  # fmt: skip


# --------------------------------------------------------------------------- #
# CSI feedback: CsiNet and the unfolded decoder behind Type-II
# --------------------------------------------------------------------------- #
class CodewordResidual:
    """The residual of a compressed-sensing feedback decoder, ``||y - A x_hat||^2 / ||y||^2``
    with ``y = A x`` the codeword of the observed channel and ``x_hat`` the image of the
    decoded channel (:class:`~lib.chapters.CSFeedback` ``fb``): the monitor of the
    ``Unfolded/TypeII`` case, for ``args = (H_obs,)`` and ``H_hat`` ``(B, N_c, M)``. The
    codeword carries no noise, so a decoder that explains it exactly scores 0; the base
    station has ``y`` and ``A``, so the score needs nothing it does not have."""

    def __init__(self, fb):
        from lib.chapters.csi_feedback import CSFeedback

        if not isinstance(fb, CSFeedback):
            raise TypeError(f"fb must be a CSFeedback, got {type(fb).__name__}")
        self.fb = fb

    def _y(self, H):
        return self.fb.encode(_image(H, self.fb.setup)).double()

    def __call__(self, args, H_hat):
        y = self._y(args[0])
        r = (y - self._y(H_hat)).pow(2).sum(-1)
        return r / y.pow(2).sum(-1).clamp_min(torch.finfo(y.dtype).tiny)


def _truncation_floor(s):
    from lib.chapters.feedback_shift import feedback_nmse
    from lib.phy import angular_delay, from_angular_delay

    def limit(args, H):
        X = angular_delay(H, s.n_h, s.n_v, s.n_taps)
        return feedback_nmse(from_angular_delay(X, s.n_h, s.n_v, s.n_subcarriers), H,
                             per_sample=True)  # fmt: skip

    return limit


def _feedback_deployments(s):
    from lib.chapters.feedback_shift import feedback_scenario

    def sampler(name):
        def f(n, seed):
            d = feedback_scenario(name, n, s, seed=seed)
            return (d["H_obs"],), d["H"]

        return f

    deps = {"matched": ("matched", sampler("source"))}
    for name in ("munich-other", "florence", "umi", "uma", "cdl-c", "snr-0dB"):
        deps[name] = ("shifted", sampler(name))
    return deps


def _feedback_loss(args, H_hat, H):
    from lib.chapters.feedback_shift import feedback_nmse

    return feedback_nmse(H_hat, H, per_sample=True)


def _feedback_parts(ratio: float = 0.25):
    from lib.chapters.csi_feedback import FeedbackSetup, type2_subband_feedback
    from lib.chapters.feedback_shift import stored_feedback_model
    from lib.phy import angular_delay, complexify_image, from_angular_delay, realify_image

    s = FeedbackSetup()
    net = stored_feedback_model("CsiNet", ratio, s)

    def image(H):
        return realify_image(angular_delay(H, s.n_h, s.n_v, s.n_taps)).float()

    def learned(H):
        Z = torch.cat([net(z) for z in image(H).split(500)])
        return from_angular_delay(complexify_image(Z).to(torch.complex64), s.n_h, s.n_v,
                                  s.n_subcarriers)  # fmt: skip

    def classical(H):
        return type2_subband_feedback(H, s)[0].to(torch.complex64)

    def codeword(args):
        with torch.no_grad():
            return torch.cat([net.encode(z) for z in image(args[0]).split(500)])

    return s, learned, classical, codeword


def codeword_monitor(codeword: Callable | None = None, *, directory=None, fit_draws: int = 0):
    """The Mahalanobis monitor on CsiNet's codewords (ratio 1/4).

    With ``fit_draws > 0`` it is fitted on that many draws of the training images
    (:func:`feedback_source_images` ``("train", draws=fit_draws, seed=12)``, what
    ``scripts/eval_fallback.py`` stores); otherwise its mean and precision are loaded from
    ``results/fallback/codeword_monitor.pt`` (``weights_only=True``).
    """
    from lib.methods import MahalanobisMonitor

    if codeword is None:
        codeword = _feedback_parts()[3]
    mon = MahalanobisMonitor(codeword, shrinkage=0.1)
    if fit_draws:
        from lib.chapters.csi_feedback import feedback_source_images

        tr = feedback_source_images("train", draws=check_positive_int(fit_draws, "fit_draws"),
                                    seed=12, channels=True)  # fmt: skip
        return mon.fit(tr["H"])
    from pathlib import Path

    from lib.core import results_dir

    d = Path(directory) if directory is not None else results_dir("fallback", must_exist=True)
    state = torch.load(d / "codeword_monitor.pt", weights_only=True)
    mon.mean, mon.precision = state["mean"].double(), state["precision"].double()
    return mon


def _feedback_validation(s, n_val):
    from lib.chapters.csi_feedback import feedback_source_images

    va = feedback_source_images("val", s, draws=1, seed=11, channels=True)
    return (va["H"][:n_val],)


def _csinet_case(n_val: int, directory=None) -> FallbackCase:
    from lib.methods import Fallback

    s, learned, classical, codeword = _feedback_parts()
    mon = codeword_monitor(codeword, directory=directory)
    w = Fallback(learned, classical, mon, task="map")
    val = _feedback_validation(s, n_val)
    w.calibrate(*val, trigger_rate=TARGET_TRIGGER_RATE)
    return FallbackCase("CsiNet/TypeII", w, _feedback_loss, "dB", _feedback_deployments(s),
                        val, _truncation_floor(s))  # fmt: skip


def _unfolded_feedback_case(n_val: int) -> FallbackCase:
    from lib.chapters.csi_feedback import CSFeedback, FeedbackSetup
    from lib.chapters.feedback_shift import feedback_methods
    from lib.methods import Fallback

    s = FeedbackSetup()
    methods = feedback_methods(0.25, s, methods=("TypeII", "Unfolded"))
    fb = CSFeedback(0.25, s)

    def learned(H):
        return methods["Unfolded"]({"X_obs": _image(H, s)})

    def classical(H):
        return methods["TypeII"]({"H_obs": H})

    w = Fallback(learned, classical, CodewordResidual(fb), task="map")
    val = _feedback_validation(s, n_val)
    w.calibrate(*val, trigger_rate=TARGET_TRIGGER_RATE)
    return FallbackCase("Unfolded/TypeII", w, _feedback_loss, "dB", _feedback_deployments(s),
                        val, _truncation_floor(s))  # fmt: skip


def _image(H, s):
    from lib.phy import angular_delay

    return angular_delay(H, s.n_h, s.n_v, s.n_taps).to(torch.complex64)


# --------------------------------------------------------------------------- #
# Sparse recovery: LAMP-BG behind OAMP
# --------------------------------------------------------------------------- #
def _lamp_case(n_val: int) -> FallbackCase:
    from lib.chapters.distribution_shift import (
        ShiftProblem,
        shifted_test_set,
        with_condition_number,
    )
    from lib.chapters.pretrained_sparse import reference_matrix
    from lib.methods import SPARSE_ESTIMATORS, Fallback, ResidualMonitor, pretrained_estimator
    from lib.sparse import nmse_db

    A = reference_matrix(torch.float64)
    classical = SPARSE_ESTIMATORS["oamp"](A, p=0.1, T=16)
    w = Fallback(pretrained_estimator("lamp_bg"), classical, ResidualMonitor("noise"),
                 task="sparse")  # fmt: skip
    base = ShiftProblem(A)
    yv, nv, _ = shifted_test_set(**base.kwargs(), n=n_val, seed=77)
    val = (yv, A, nv)
    w.calibrate(*val, trigger_rate=TARGET_TRIGGER_RATE)

    def sampler(problem):
        def f(n, seed):
            y, nv, x = shifted_test_set(**problem.kwargs(), n=n, seed=1000 + seed)
            return (y, problem.A, nv), x

        return f

    def loss(args, x_hat, x):
        return nmse_db(x_hat, x, per_sample=True)

    deps = {
        "matched": ("matched", sampler(base)),
        "snr-20dB": ("shifted", sampler(base.moved(snr_db=20.0))),
        "p-0.2": ("shifted", sampler(base.moved(p=0.2))),
        "amplitude-4": ("shifted", sampler(base.moved(amplitude=4.0))),
        "kappa-100": ("shifted", sampler(base.moved(A=with_condition_number(A, 100.0)))),
    }
    return FallbackCase("LAMP/OAMP", w, loss, "dB", deps, val)


# --------------------------------------------------------------------------- #
# Precoders: unfolded WMMSE and PaPP behind RZF
# --------------------------------------------------------------------------- #
def _rate_loss(args, V, H):
    from lib.precoding import sum_rate

    return -sum_rate(H, V, args[2])


def _batch(H, snr_db):
    B = H.shape[0]
    P = torch.full((B,), 10 ** (snr_db / 10), dtype=H.real.dtype)
    return (H, P, torch.ones(B, dtype=H.real.dtype)), H


def _uwmmse_case(n_val: int) -> FallbackCase:
    from lib.methods import Fallback, RateSelfCheck, pretrained_precoder
    from lib.phy.channels import correlated_rayleigh, exponential_correlation, rayleigh
    from lib.precoding import rzf

    w = Fallback(pretrained_precoder(20.0, 4), rzf, RateSelfCheck(), task="precoder")
    g = torch.Generator().manual_seed(77)
    val = _batch(rayleigh(n_val, 4, 4, generator=g, dtype=torch.complex128), 20.0)[0]
    w.calibrate(*val, trigger_rate=TARGET_TRIGGER_RATE)

    def sampler(K, M, snr_db, rho=0.0):
        def f(n, seed):
            g = torch.Generator().manual_seed(1000 + seed)
            if rho:
                H = correlated_rayleigh(n, exponential_correlation(M, rho), K, generator=g)
            else:
                H = rayleigh(n, K, M, generator=g, dtype=torch.complex128)
            return _batch(H, snr_db)

        return f

    deps = {
        "matched": ("matched", sampler(4, 4, 20.0)),
        "snr-10dB": ("shifted", sampler(4, 4, 10.0)),
        "snr-30dB": ("shifted", sampler(4, 4, 30.0)),
        "correlated-0.9": ("shifted", sampler(4, 4, 20.0, rho=0.9)),
        "M-8": ("shifted", sampler(4, 8, 20.0)),
    }
    return FallbackCase("UWMMSE/RZF", w, _rate_loss, "bit/s/Hz", deps, val)


def stored_papp_precoder(name: str = "PaPP"):
    """The stored PaPP student ``name`` of ``results/papp`` (``weights_only=True``) as a
    precoder ``(H, power, noise_var) -> V``: :class:`lib.learn.LearnedPrecoder` around it in
    float64 (chapter *Generalizable precoding*; ``PaPP-seed1``, ``PaPP-seed2`` are the
    students trained with other seeds)."""
    import json

    from lib.chapters.papp import build_papp_model
    from lib.core import results_dir
    from lib.learn import LearnedPrecoder

    d = results_dir("papp", must_exist=True)
    models = json.loads((d / "train.json").read_text())["models"]
    if name not in models:
        raise ValueError(f"name must be one of the stored models {sorted(models)}, got {name!r}")
    net = build_papp_model(models[name])
    net.load_state_dict(torch.load(d / f"{name}.pt", weights_only=True))
    return LearnedPrecoder(net.double())


def angular_profile(H: torch.Tensor, n_h: int, n_v: int) -> torch.Tensor:
    """Log angular power profile ``(B, n_h n_v)`` of channels ``H`` ``(B, K, M)`` of a
    ``n_v x n_h`` planar array (``M = n_h n_v``): the unitary 2-D DFT of each user's row, its
    power averaged over the users and normalised to sum one, ``log(p + 1e-6)``. The features
    of the input-distance monitor of the PaPP case (:func:`papp_input_monitor`)."""
    from lib.core.checks import check_complex

    check_complex(H, "H", ndim=3)
    B, K, M = H.shape
    if check_positive_int(n_h, "n_h") * check_positive_int(n_v, "n_v") != M:
        raise ValueError(f"H must have M = n_h * n_v = {n_h * n_v} antennas, got {M}")
    X = torch.fft.fft2(H.reshape(B, K, n_v, n_h), norm="ortho")
    p = X.abs().pow(2).mean(1).reshape(B, M)
    p = p / p.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    return torch.log(p + 1e-6)


def papp_input_monitor(n_per_site: int = 500, *, seed: int = 500):
    """A :class:`lib.methods.MahalanobisMonitor` on the :func:`angular_profile` of the
    channel, fitted on ``n_per_site`` channels drawn from the training users of each PaPP
    source site (generator seed ``seed + i`` for site ``i``; apart from the validation and
    test users). It looks at the input only, not at the learned output."""
    from lib.chapters.papp import PaPPSetup, split_site_users
    from lib.methods import MahalanobisMonitor
    from lib.phy import load_site

    n_per_site = check_positive_int(n_per_site, "n_per_site")
    s = PaPPSetup()
    Hs = []
    for i, name in enumerate(s.source_sites):
        site = load_site(name)
        train = split_site_users(site, s.val_fraction, seed=0)[0]
        g = torch.Generator().manual_seed(seed + i)
        Hs.append(site.sample(n_per_site, s.users, g, s.n_h, s.n_v, pool=train,
                              dtype=torch.complex128)[0])  # fmt: skip
    mon = MahalanobisMonitor(lambda args: angular_profile(args[0], s.n_h, s.n_v))
    return mon.fit(torch.cat(Hs))


def _papp_case(n_val: int, snr_db: float = 20.0) -> FallbackCase:
    from lib.chapters.papp import PaPPSetup, site_test_channels, split_site_users
    from lib.methods import Fallback, RateSelfCheck
    from lib.phy import load_site
    from lib.phy.channels import rayleigh
    from lib.precoding import rzf

    setup = PaPPSetup()
    w = Fallback(stored_papp_precoder(), rzf, RateSelfCheck(), task="precoder")

    def source(n, seed):
        per = math.ceil(n / len(setup.source_sites))
        Hs = []
        for i, name in enumerate(setup.source_sites):
            site = load_site(name)
            val = split_site_users(site, setup.val_fraction, seed=0)[1]
            g = torch.Generator().manual_seed(seed * 100 + i)
            Hs.append(site.sample(per, setup.users, g, setup.n_h, setup.n_v, pool=val,
                                  dtype=torch.complex128)[0])  # fmt: skip
        return _batch(torch.cat(Hs)[:n], snr_db)

    val = source(n_val, 77)[0]
    w.calibrate(*val, trigger_rate=TARGET_TRIGGER_RATE)

    def sites(names):
        def f(n, seed):
            per = math.ceil(n / len(names))
            Hs = [site_test_channels(setup, s, per, seed=2026 + seed) for s in names]
            return _batch(torch.cat(Hs)[:n], snr_db)

        return f

    def iid(n, seed):
        g = torch.Generator().manual_seed(1000 + seed)
        return _batch(rayleigh(n, setup.users, setup.antennas, generator=g,
                               dtype=torch.complex128), snr_db)  # fmt: skip

    heldout = [s for s in setup.test_sites if not s.startswith("florence")]
    city = [s for s in setup.test_sites if s.startswith("florence")]
    deps = {
        "matched": ("matched", lambda n, seed: source(n, 1 + seed)),
        "heldout-sites": ("shifted", sites(heldout)),
        "unseen-city": ("shifted", sites(city)),
        "iid-rayleigh": ("shifted", iid),
    }
    return FallbackCase("PaPP/RZF", w, _rate_loss, "bit/s/Hz", deps, val)


def fallback_case(name: str, *, n_val: int = 1000, directory=None) -> FallbackCase:
    """The wrapped model ``name`` (one of ``FALLBACK_CASES``), calibrated for a trigger
    rate of 10 % on ``n_val`` in-distribution validation samples (drawn apart from every test
    set). ``directory`` overrides ``results/fallback`` for the CsiNet monitor."""
    n_val = check_positive_int(n_val, "n_val")
    if name not in FALLBACK_CASES:
        raise ValueError(f"name must be one of {FALLBACK_CASES}, got {name!r}")
    if name == "CsiNet/TypeII":
        return _csinet_case(n_val, directory)
    if name == "Unfolded/TypeII":
        return _unfolded_feedback_case(n_val)
    if name == "LAMP/OAMP":
        return _lamp_case(n_val)
    if name == "UWMMSE/RZF":
        return _uwmmse_case(n_val)
    return _papp_case(n_val)


def evaluate_case(case: FallbackCase, *, n: int = 400, seed: int = 0, deployments=None,
                  keep_samples: bool = False) -> dict:  # fmt: skip
    """Score ``case`` on its deployments (all by default): per deployment the metrics of
    :func:`lib.methods.fallback_metrics` (with the case's tolerance), the mean losses of the
    learned, classical and wrapped systems (and ``loss_limit``, that of the case's limit,
    where it has one), and the timings of one wrapped call
    (``overhead``: monitor and triggered classical time over the learned time;
    ``classical_all``: the classical method on every sample, for comparison).

    A ``"shifted"`` entry pools the samples of all shifted deployments. ``keep_samples``
    adds the per-sample losses, scores and triggers (tensors) under ``"samples"``.
    """
    from lib.methods import fallback_metrics

    if not isinstance(case, FallbackCase):
        raise TypeError(f"case must be a FallbackCase, got {type(case).__name__}")
    n = check_positive_int(n, "n")
    check_number(seed, "seed")
    names = list(case.deployments) if deployments is None else list(deployments)
    unknown = [d for d in names if d not in case.deployments]
    if unknown:
        raise ValueError(f"deployments must be among {list(case.deployments)}, got {unknown}")
    tol = FALLBACK_TOL[case.name]
    out, pooled = {}, []
    for dep in names:
        kind, sampler = case.deployments[dep]
        args, truth = sampler(n, seed)
        r = case.wrapper.run(*args)
        t0 = time.perf_counter()
        with torch.no_grad():
            out_c = case.wrapper.classical(*args)
        t_all = time.perf_counter() - t0
        ll = case.loss(args, r.learned, truth).detach().double()
        lc = case.loss(args, out_c, truth).detach().double()
        m = fallback_metrics(ll, lc, r.triggered, r.score, tol=tol)
        lw = torch.where(r.triggered, lc, ll)
        if case.limit is not None:
            m["loss_limit"] = float(case.limit(args, truth).double().mean())
        m.update(kind=kind, loss_learned=float(ll.mean()), loss_classical=float(lc.mean()),
                 loss_wrapped=float(lw.mean()), seconds=dict(r.seconds),
                 classical_all=t_all, overhead=(r.seconds["monitor"] + r.seconds["classical"])
                 / max(r.seconds["learned"], 1e-12))  # fmt: skip
        if keep_samples:
            m["samples"] = {"learned": ll, "classical": lc, "score": r.score.double(),
                            "triggered": r.triggered}  # fmt: skip
        if kind == "shifted":
            pooled.append((ll, lc, r.triggered, r.score.double()))
        out[dep] = m
    if pooled:
        ll, lc, trig, sc = (torch.cat(t) for t in zip(*pooled))
        m = fallback_metrics(ll, lc, trig, sc, tol=tol)
        m.update(kind="pooled", loss_learned=float(ll.mean()), loss_classical=float(lc.mean()),
                 loss_wrapped=float(torch.where(trig, lc, ll).mean()))  # fmt: skip
        out["shifted"] = m
    return out
