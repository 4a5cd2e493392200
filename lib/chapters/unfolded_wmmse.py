"""The unfolded-WMMSE chapter's set-up, test sets and stored step sizes (chapter *Unfolded WMMSE*).

One place for what the notebook ``book/unfolded_wmmse.ipynb``, the training script
``scripts/train_unfolded_wmmse.py`` and ``benchmarks/bench_unfolded_wmmse.py`` share:

* :data:`~lib.chapters.unfolded_wmmse.SETUP` (a :class:`~lib.chapters.DownlinkSetup`): ``K = 4``
  users, ``M = 4``
  antennas, noise
  variance 1, power ``P = 10^(SNR/10)`` times the noise variance, 10,000 test channels per SNR,
  the SNR grid of the paper's Fig. 6 (Pellaco et al. 2020);
* :func:`~lib.chapters.test_channels`: the stored evaluation's test set of one SNR (i.i.d. Rayleigh,
  ``torch.Generator`` seed ``1000 + 10 * SNR``);
* :func:`~lib.chapters.model_key`, :func:`~lib.chapters.stored_sweep`,
  :func:`~lib.chapters.stored_entry`, :func:`~lib.chapters.stored_model`: the
  networks of ``results/unfolded_wmmse/step_sizes.json`` (their step sizes ``(T, Q)``;
  the file's keys use the paper's names ``L`` layers and ``K`` PGD steps).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from lib.core.checks import check_number, check_positive_int
from lib.core.resources import results_dir
from lib.core.units import db_to_lin
from lib.learn.unfolded_wmmse import UnfoldedWMMSE
from lib.phy.channels import rayleigh

__all__ = [
    "DownlinkSetup",
    "SETUP",
    "SWEEP_FILE",
    "power_for_snr",
    "test_channels",
    "validation_channels",
    "model_key",
    "stored_sweep",
    "stored_entry",
    "stored_model",
]


@dataclass(frozen=True)
class DownlinkSetup:
    """Set-up of the unfolded-WMMSE chapter (Pellaco et al., Sec. VII).

    Attributes
    ----------
    users : int
        ``K``; channels ``H`` are ``(B, K, M)``.
    antennas : int
        ``M``.
    noise_var : float
        ``sigma^2``.
    n_test : int
        Test channels per SNR.
    snrs_db : tuple of float
        The SNR grid of the sweep (Fig. 6).
    """

    users: int = 4
    antennas: int = 4
    noise_var: float = 1.0
    n_test: int = 10_000
    snrs_db: tuple[float, ...] = (5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0)


#: The chapter's set-up.
SETUP = DownlinkSetup()

#: The stored sweep found when ``lib`` was imported (``results/unfolded_wmmse/step_sizes.json``,
#: :func:`lib.core.results_dir`); :func:`~lib.chapters.stored_sweep` looks it up again on every
#: call.
SWEEP_FILE = results_dir("unfolded_wmmse") / "step_sizes.json"


def power_for_snr(snr_db: float, setup: DownlinkSetup = SETUP) -> float:
    """Transmit power ``P = 10^(snr_db / 10) sigma^2`` (SNR = ``P / sigma^2``)."""
    return float(db_to_lin(float(snr_db))) * setup.noise_var


def test_channels(
    snr_db: float, n: int | None = None, setup: DownlinkSetup = SETUP
) -> torch.Tensor:
    """The stored evaluation's test channels of one SNR, complex128 ``(n, K, M)``.

    ``n`` defaults to ``setup.n_test``; i.i.d. ``CN(0, 1)`` entries
    (:func:`lib.phy.rayleigh`) from ``torch.Generator().manual_seed(1000 + round(10 * snr_db))``
    (a smaller ``n`` is not a prefix of the full set: draw the full set and slice it).
    """
    n = setup.n_test if n is None else check_positive_int(n, "n")
    g = torch.Generator().manual_seed(1000 + int(round(10 * float(snr_db))))
    return rayleigh(n, setup.users, setup.antennas, generator=g)


test_channels.__test__ = False  # not a pytest test when imported into a test module


def validation_channels(snr_db: float, n: int = 2000, setup: DownlinkSetup = SETUP) -> torch.Tensor:
    """The validation channels of one SNR, ``(n, K, M)`` complex128: i.i.d. Rayleigh,
    ``torch.Generator`` seed ``5000 + 10 * SNR`` (disjoint from the training stream and the
    test set); what the plateau protocol of ``scripts/train_unfolded_wmmse.py`` validates on.
    """
    check_positive_int(n, "n")
    snr_db = check_number(snr_db, "snr_db")
    g = torch.Generator().manual_seed(5000 + int(round(10 * snr_db)))
    return rayleigh(n, setup.users, setup.antennas, generator=g, dtype=torch.complex128)


def model_key(snr_db: float, layers: int, pgd_steps: int = 4, variant: str = "free") -> str:
    """Key of a stored network: ``f"snr{snr_db:g}_L{layers}_K{pgd_steps}_{variant}"``.

    ``variant``: ``free``, ``same``, ``log``, ``lr``, ``accel`` or ``<v>-sweep`` (see
    ``results/unfolded_wmmse/README.md``); ``L`` and ``K`` are the paper's names of the
    numbers of layers ``T`` and PGD steps ``Q``.
    """
    return f"snr{float(snr_db):g}_L{layers}_K{pgd_steps}_{variant}"


def stored_sweep(path: str | Path | None = None) -> dict:
    """The contents of ``step_sizes.json`` (``{"models": {key: entry}, "commands", "setup"}``).

    ``FileNotFoundError`` naming the script that produces the file if it is missing.
    """
    file = results_dir("unfolded_wmmse") / "step_sizes.json" if path is None else Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} is missing: the stored step sizes of the unfolded-WMMSE chapter are "
            "produced by `python scripts/train_unfolded_wmmse.py` "
            "(see results/unfolded_wmmse/README.md)"
        )
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not a valid sweep file: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ValueError(f"{file} has no 'models' table")
    return data


def stored_entry(
    snr_db: float, layers: int, pgd_steps: int = 4, variant: str = "free", *, sweep=None
) -> dict:
    """One stored network's record (step sizes, settings, test WSR); ``KeyError`` if absent."""
    models = (stored_sweep() if sweep is None else sweep)["models"]
    k = model_key(snr_db, layers, pgd_steps, variant)
    if k not in models:
        raise KeyError(f"no stored network {k!r} in the sweep")
    return models[k]


def stored_model(
    snr_db: float, layers: int, pgd_steps: int = 4, variant: str = "free", *, sweep=None
) -> UnfoldedWMMSE:
    """The stored network ``model_key(snr_db, layers, pgd_steps, variant)`` as a model.

    ``UnfoldedWMMSE.from_step_sizes(entry["step_sizes"], same_step=entry["same_step"])``
    (the stored step sizes are values, so a log-domain network is rebuilt in the linear
    parameterisation: the same forward pass); an entry with ``"momentum"`` coefficients
    ``(T, Q - 1)`` and ``"normalised_steps": true`` (the ``accel`` series) is rebuilt with
    them. ``sweep`` is a loaded :func:`~lib.chapters.stored_sweep`
    (read from :data:`~lib.chapters.unfolded_wmmse.SWEEP_FILE` when ``None``).
    """
    e = stored_entry(snr_db, layers, pgd_steps, variant, sweep=sweep)
    return UnfoldedWMMSE.from_step_sizes(
        e["step_sizes"],
        betas=e.get("momentum"),
        same_step=e["same_step"],
        normalised_steps=e.get("normalised_steps", False),
    )
