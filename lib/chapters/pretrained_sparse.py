"""The deep-unfolding chapters' reference problem and their stored, pre-trained networks.

Reference problem (chapters ``unrolling_lista`` and ``unrolling_distribution_shift``), the
frozen set-up object :data:`~lib.chapters.pretrained_sparse.REFERENCE` (a
:class:`~lib.chapters.SparseReference`):
``y = A x + w`` with a fixed
Gaussian sensing matrix ``A`` of shape ``(M, N) = (250, 500)`` (``lib.sparse.gaussian_matrix``
with ``torch.Generator`` seed 0), Bernoulli-Gaussian ``x`` with activity ``p = 0.1``, SNR
``snr_db = 40`` dB, networks of ``T = 16`` layers, LASSO weight ``lam = 0.01`` of the ISTA
initialisation.

The networks are trained by ``scripts/train_unrolled_sparse.py`` (CPU or ``--device cuda``;
one protocol for every network, :func:`lib.learn.plateau_plan` after a learning-rate sweep),
which stores in ``results/unrolled_sparse/``: ``A.pt`` (``{"A": A}``, float64), one float32 state
dict ``<name>.pt`` per model and ``results.json`` (per model: test NMSE per layer at
initialisation and trained, the sweep, the validation curve, parameters, steps, samples, CPU
time and the command line). This module is the single place that knows how to rebuild them:

* :func:`~lib.chapters.reference_matrix` loads the stored ``A``;
  :func:`~lib.chapters.generate_reference_matrix` regenerates
  it;
* :func:`~lib.chapters.build` is the model registry (a name -> untrained network at its classical
  initialisation),
  :data:`~lib.chapters.pretrained_sparse.MODELS` the names the script trains;
* :func:`~lib.chapters.load` rebuilds a network and loads its stored weights
  (``torch.load(weights_only=True)``,
  ``strict=True``: a file with wrong keys, a truncated, empty or foreign file is an error naming
  the file);
* :func:`~lib.chapters.test_set` is the standard test set on which ``results.json`` was measured;
* :func:`~lib.chapters.stored_results` reads ``results.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from lib import sparse
from lib.core.checks import check_positive_int, check_real
from lib.core.resources import results_dir
from lib.learn.storage import load_file, load_state_dict_file
from lib.learn.unrolled_amp import LAMP, OAMPNet
from lib.learn.unrolled_sparse import LISTA, LeanISTA, MLPRecovery, make_sampler
from lib.learn.unrolling import UnrolledModel

__all__ = [
    "SparseReference",
    "REFERENCE",
    "MODELS",
    "MLP_SHAPE",
    "RESULTS_DIR",
    "generate_reference_matrix",
    "reference_matrix",
    "build",
    "load",
    "test_set",
    "stored_results",
]


@dataclass(frozen=True)
class SparseReference:
    """The deep-unfolding chapters' reference problem (built once, passed around, never mutated).

    Attributes
    ----------
    M : int
        Measurements: ``A`` is ``(M, N)``.
    N : int
        Signal length.
    p : float
        Activity (sparsity) of the Bernoulli-Gaussian signal (not a power).
    snr_db : float
        SNR of :func:`lib.sparse.noise_var_for_snr`, dB.
    T : int
        Layers of every unrolled network.
    lam : float
        LASSO weight of the ISTA initialisation (``theta_0 = lam / L``).
    """

    M: int = 250
    N: int = 500
    p: float = 0.1
    snr_db: float = 40.0
    T: int = 16
    lam: float = 0.01


#: The reference problem of ``results/unrolled_sparse`` and of both chapters.
REFERENCE = SparseReference()

#: Shape ``(hidden width, hidden layers)`` of the stored black-box MLP, the smallest network
#: within 0.01 dB of the best of the training script's sweep over ``MLP_SHAPES`` (the stored
#: results record the sweep).
MLP_SHAPE = (512, 2)

#: Names known to :func:`~lib.chapters.build`, in the order the training script trains them by
#: default.
MODELS = [
    "lean_ista",
    "alista",
    "tista",
    "tista_soft",
    "lamp_soft",
    "lamp_bg",
    "lista_cp",
    "oamp_net",
    "mlp",
]

#: Folder of the stored weights found when ``lib`` was imported (``results/unrolled_sparse`` of
#: the repository or of the installed package, :func:`lib.core.results_dir`); the loaders look it
#: up again on every call with ``path=None``.
RESULTS_DIR = results_dir("unrolled_sparse")


def _dir(path: str | Path | None) -> Path:
    return results_dir("unrolled_sparse") if path is None else Path(path)


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

    Used by the training script, which stores it as ``A.pt``; readers use
    :func:`~lib.chapters.reference_matrix`.
    """
    g = torch.Generator().manual_seed(0)
    return sparse.gaussian_matrix(REFERENCE.M, REFERENCE.N, generator=g, dtype=dtype)


def reference_matrix(
    dtype: torch.dtype = torch.float64, path: str | Path | None = None
) -> torch.Tensor:
    """The stored sensing matrix ``A`` (``(M, N)``) the networks were trained on.

    Loaded from ``<path>/A.pt`` (default :data:`~lib.chapters.pretrained_sparse.RESULTS_DIR`) with
    ``weights_only=True``;
    ``FileNotFoundError`` naming the script that produces it if it is missing.
    """
    file = _require(_dir(path) / "A.pt")
    d = load_file(file, "the reference matrix {'A': (M, N) tensor}")
    if not (isinstance(d, dict) and isinstance(d.get("A"), torch.Tensor) and d["A"].dim() == 2):
        raise ValueError(f"{file} does not hold the reference matrix {{'A': (M, N) tensor}}")
    return d["A"].to(dtype)


def build(name: str, A: torch.Tensor, reference: SparseReference = REFERENCE) -> UnrolledModel:
    """Untrained network ``name`` (one of :data:`~lib.chapters.pretrained_sparse.MODELS`) on
    sensing matrix ``A``
    ``(M, N)``.

    Every unrolled model has ``reference.T`` layers and starts at its classical algorithm:
    ``lean_ista`` (ISTA, step and threshold per layer), ``alista`` (analytic weight), ``tista`` /
    ``tista_soft`` (pseudo-inverse weight, residual-based error variance, MMSE / soft denoiser),
    ``lamp_soft`` / ``lamp_bg`` (AMP with soft / Bernoulli-Gaussian denoiser), ``lista_cp``
    (coupled LISTA, full matrices), ``oamp_net`` (OAMP with learned step and scale); ``mlp`` is
    the black-box comparator (shape
    :data:`~lib.chapters.pretrained_sparse.MLP_SHAPE`). ``reference`` gives
    ``T``, the sparsity ``p`` of the Bayesian denoisers and the ISTA weight ``lam``.

    Returns
    -------
    UnrolledModel
    """
    check_real(A, "A", ndim=2)
    if not isinstance(reference, SparseReference):
        raise TypeError(f"reference must be a SparseReference, got {type(reference).__name__}")
    T, p, lam = reference.T, reference.p, reference.lam
    if name == "lean_ista":
        return LeanISTA(A, T, weight="transpose", lam=lam)
    if name == "alista":
        return LeanISTA(A, T, weight="analytic", step=0.5, lam=0.04)
    if name == "tista":
        return LeanISTA(A, T, weight="pinv", threshold="adaptive", denoiser="mmse", p=p)
    if name == "tista_soft":
        return LeanISTA(A, T, weight="pinv", threshold="adaptive", denoiser="soft", beta=1.1)
    if name == "lamp_soft":
        return LAMP(A, T, denoiser="soft", alpha=sparse.DEFAULT_ALPHA)
    if name == "lamp_bg":
        return LAMP(A, T, denoiser="bg", p=p)
    if name == "lista_cp":
        return LISTA(A, T, lam, coupled=True)
    if name == "oamp_net":
        return OAMPNet(A, T, p=p)
    if name == "mlp":
        m, n = A.shape
        return MLPRecovery(m, n, hidden=MLP_SHAPE[0], depth=MLP_SHAPE[1], dtype=A.dtype)
    raise ValueError(f"name must be one of {MODELS}, got {name!r}")


def load(
    name: str, path: str | Path | None = None, dtype: torch.dtype = torch.float64
) -> UnrolledModel:
    """Rebuild network ``name`` on the stored reference matrix and load its stored weights.

    ``path`` defaults to :data:`~lib.chapters.pretrained_sparse.RESULTS_DIR`; the float32 state
    dict is cast to
    ``dtype`` and
    loaded with ``strict=True`` (:func:`lib.learn.load_state_dict_file`).

    Raises
    ------
    FileNotFoundError
        A stored file is missing (the message names the script that produces it).
    lib.learn.StoredFileError
        The file is empty, truncated, foreign, or its keys do not fit the network.
    """
    d = _dir(path)
    model = build(name, reference_matrix(dtype, d))
    file = _require(d / f"{name}.pt")
    return load_state_dict_file(model, file, what=f"the stored weights of {name!r}", dtype=dtype)


def test_set(A: torch.Tensor, n: int = 2000, seed: int = 1234):
    """The standard test set ``(y, noise_var, x)`` of ``results.json``.

    ``make_sampler(A, REFERENCE.p, REFERENCE.snr_db)(n, Generator seed 1234)``; the stored
    results use ``A`` in float32 and ``n = 2000``. ``y`` ``(n, M)``, ``x`` ``(n, N)``,
    ``noise_var`` a scalar tensor.
    """
    n = check_positive_int(n, "n")
    g = torch.Generator().manual_seed(seed)
    (y, nv), x = make_sampler(A, REFERENCE.p, REFERENCE.snr_db)(n, g)
    return y, nv, x


test_set.__test__ = False  # not a pytest test when imported into a test module


def stored_results(path: str | Path | None = None) -> dict:
    """The contents of ``results.json`` (``{"command", "problem", "models": {name: {...}}}``).

    ``FileNotFoundError`` naming the training script when it is missing.
    """
    return json.loads(_require(_dir(path) / "results.json").read_text())
