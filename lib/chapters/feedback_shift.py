"""The shift experiments of the chapter *CSI feedback under distribution shift*.

* :func:`~lib.chapters.feedback_scenario` -- test channels of every scenario (the training
  distribution, other sites, an unseen city, 3GPP 38.901, SNR and path-count shifts);
* :func:`~lib.chapters.stored_feedback_model` -- the stored decoders of
  ``results/csi_feedback`` (:func:`~lib.chapters.unfolded_feedback_decoder` builds the unfolded
  one at its classical start);
* :func:`~lib.chapters.feedback_methods` -- the four methods behind one interface
  ``data -> H_hat``;
* :func:`~lib.chapters.evaluate_feedback`, :func:`~lib.chapters.evaluate_feedback_grid` --
  NMSE against the full channel and RZF sum rate, with the truncation floor and perfect CSI as
  limits (the layout of ``results/csi_feedback/summary.json``).
"""

from __future__ import annotations

import math

import torch

from lib.chapters.csi_feedback import (
    FEEDBACK_SOURCE_SITES,
    CSFeedback,
    FeedbackSetup,
    site_feedback_images,
    tr38901_feedback_images,
    type2_subband_feedback,
)
from lib.core.checks import check_complex, check_number, check_positive_int, check_tensor
from lib.phy import load_site

#: The default set-up (frozen).
_SETUP = FeedbackSetup()

__all__ = [
    "FEEDBACK_METHODS",
    "FEEDBACK_SCENARIOS",
    "FEEDBACK_SCENARIO_LABELS",
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
]


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


def feedback_scenario(name: str, n: int, setup: FeedbackSetup = _SETUP, *,
                      seed: int = 0) -> dict:  # fmt: skip
    """``n`` test channels of the scenario ``name`` (with ``channels=True``).

    * ``"source"``: the validation users of ``FEEDBACK_SOURCE_SITES`` (those of
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


def stored_feedback_model(kind: str, ratio: float, setup: FeedbackSetup = _SETUP, *,
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


def feedback_methods(ratio: float, setup: FeedbackSetup = _SETUP, *, directory=None,
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
        if "Unfolded" in methods:
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


def _check_pair(H_hat, H):
    check_complex(H, "H", ndim=3)
    check_tensor(H_hat, "H_hat", complex_=True, shape=tuple(H.shape))


def feedback_nmse(H_hat: torch.Tensor, H: torch.Tensor, *, per_sample: bool = False):
    """NMSE (dB) of fed-back channels ``(B, N_c, M)`` against the true ones, the ratio of
    means over the batch (``per_sample=True``: the per-sample values, a tensor)."""
    _check_pair(H_hat, H)
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

    _check_pair(H_hat, H)
    K = check_positive_int(users, "users")
    stride = check_positive_int(stride, "stride")
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
                           seed: int = 0, setup: FeedbackSetup = _SETUP,
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
