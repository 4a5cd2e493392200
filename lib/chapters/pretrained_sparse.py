"""The deep-unfolding chapters' reference problem and their stored, pre-trained networks.

Reference problem (chapters ``unrolling_lista`` and ``unrolling_distribution_shift``):
``y = A x + w`` with a fixed Gaussian sensing matrix ``A`` of shape ``(M, N) = (250, 500)``
(``lib.sparse.gaussian_matrix`` with ``torch.Generator`` seed 0), Bernoulli-Gaussian ``x``
with activity ``P = 0.1``, SNR ``SNR_DB = 40`` dB, networks of ``T = 16`` layers.

The networks are trained by ``scripts/train_unrolled_sparse.py`` (CPU or ``--device cuda``),
which stores in ``results/unrolled_sparse/``: ``A.pt`` (``{"A": A}``, float64), one float32 state
dict ``<name>.pt`` per model and ``results.json`` (per-layer test NMSE, parameter counts, training
times and the command line). This module is the single place that knows how to rebuild them:

* :func:`reference_matrix` loads the stored ``A``; :func:`generate_reference_matrix` regenerates
  it;
* :func:`build` is the model registry (a name -> untrained network at its classical initialisation),
  :data:`MODELS` the names the script trains;
* :func:`load` rebuilds a network and loads its stored weights (``torch.load(weights_only=True)``);
* :func:`test_set` is the standard test set on which ``results.json`` was measured;
* :func:`stored_results` reads ``results.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lib import sparse
from lib.core.checks import check_positive_int, check_real
from lib.learn.unrolled_sparse import LAMP, LISTA, LeanISTA, MLPRecovery, make_sampler
from lib.learn.unrolling import UnrolledModel

__all__ = [
    "M",
    "N",
    "P",
    "SNR_DB",
    "T",
    "LAM",
    "MODELS",
    "RESULTS_DIR",
    "generate_reference_matrix",
    "reference_matrix",
    "build",
    "load",
    "test_set",
    "stored_results",
]

M, N, P, SNR_DB, T = 250, 500, 0.1, 40.0, 16
LAM = 0.01  # LASSO weight of the ISTA initialisation (theta_0 = LAM / L)

#: Names known to :func:`build`, in the order the training script trains them by default.
MODELS = ["lean_ista", "alista", "tista", "tista_soft", "lamp_soft", "lamp_bg", "lista_cp", "mlp"]

#: Default location of the stored weights: ``<repository>/results/unrolled_sparse``.
RESULTS_DIR = Path(__file__).resolve().parents[2] / "results" / "unrolled_sparse"


def _dir(path: str | Path | None) -> Path:
    return RESULTS_DIR if path is None else Path(path)


def _require(file: Path) -> Path:
    if not file.exists():
        raise FileNotFoundError(
            f"{file} is missing: the stored networks of the deep-unfolding chapters are "
            "produced by `python scripts/train_unrolled_sparse.py` "
            "(see results/unrolled_sparse/README.md)"
        )
    return file


def generate_reference_matrix(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Regenerate the reference sensing matrix: ``gaussian_matrix(250, 500)`` with seed 0.

    Used by the training script, which stores it as ``A.pt``; readers use :func:`reference_matrix`.
    """
    g = torch.Generator().manual_seed(0)
    return sparse.gaussian_matrix(M, N, generator=g, dtype=dtype)


def reference_matrix(
    dtype: torch.dtype = torch.float64, path: str | Path | None = None
) -> torch.Tensor:
    """The stored sensing matrix ``A`` (``(M, N)``) the networks were trained on.

    Loaded from ``<path>/A.pt`` (default :data:`RESULTS_DIR`) with ``weights_only=True``;
    ``FileNotFoundError`` naming the script that produces it if it is missing.
    """
    file = _require(_dir(path) / "A.pt")
    return torch.load(file, weights_only=True)["A"].to(dtype)


def build(name: str, A: torch.Tensor) -> UnrolledModel:
    """Untrained network ``name`` (one of :data:`MODELS`) on sensing matrix ``A``.

    Every unrolled model has ``T`` layers and starts at its classical algorithm: ``lean_ista``
    (ISTA, step and threshold per layer), ``alista`` (analytic weight), ``tista`` /
    ``tista_soft`` (pseudo-inverse weight, residual-based error variance, MMSE / soft denoiser),
    ``lamp_soft`` / ``lamp_bg`` (AMP with soft / Bernoulli-Gaussian denoiser), ``lista_cp``
    (coupled LISTA, full matrices); ``mlp`` is the black-box comparator.
    """
    check_real(A, "A", ndim=2)
    if name == "lean_ista":
        return LeanISTA(A, T, weight="transpose", lam=LAM)
    if name == "alista":
        return LeanISTA(A, T, weight="analytic", step=0.5, lam=0.04)
    if name == "tista":
        return LeanISTA(A, T, weight="pinv", threshold="adaptive", denoiser="mmse", p=P)
    if name == "tista_soft":
        return LeanISTA(A, T, weight="pinv", threshold="adaptive", denoiser="soft", beta=1.1)
    if name == "lamp_soft":
        return LAMP(A, T, denoiser="soft", alpha=sparse.DEFAULT_ALPHA)
    if name == "lamp_bg":
        return LAMP(A, T, denoiser="bg", p=P)
    if name == "lista_cp":
        return LISTA(A, T, LAM, coupled=True)
    if name == "mlp":
        m, n = A.shape
        return MLPRecovery(m, n, hidden=512, depth=2, dtype=A.dtype)
    raise ValueError(f"name must be one of {MODELS}, got {name!r}")


def load(
    name: str, path: str | Path | None = None, dtype: torch.dtype = torch.float64
) -> UnrolledModel:
    """Rebuild network ``name`` on the stored reference matrix and load its stored weights.

    ``path`` defaults to :data:`RESULTS_DIR`; the float32 state dict is cast to ``dtype``.
    """
    d = _dir(path)
    model = build(name, reference_matrix(dtype, d))
    sd = torch.load(_require(d / f"{name}.pt"), weights_only=True)
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=False)
    return model


def test_set(A: torch.Tensor, n: int = 2000, seed: int = 1234):
    """The standard test set ``(y, noise_var, x)`` of ``results.json``.

    ``make_sampler(A, P, SNR_DB)(n, Generator seed 1234)``; the stored results use ``A`` in
    float32 and ``n = 2000``.
    """
    n = check_positive_int(n, "n")
    g = torch.Generator().manual_seed(seed)
    (y, nv), x = make_sampler(A, P, SNR_DB)(n, g)
    return y, nv, x


test_set.__test__ = False  # not a pytest test when imported into a test module


def stored_results(path: str | Path | None = None) -> dict:
    """The contents of ``results.json`` (``{"command", "problem", "models": {name: {...}}}``)."""
    return json.loads(_require(_dir(path) / "results.json").read_text())
