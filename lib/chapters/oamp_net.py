"""OAMP-Net where OAMP's formulas are only approximate: the problems and the stored networks.

Chapter ``unrolling_lista``, section 5. OAMP's step and error-variance formulas are exact in the
large-system limit for a right-orthogonally invariant ``A`` and the prior its denoiser assumes;
OAMP-Net (He, Wen & Jin 2018) learns a step ``gamma_t`` and a variance scale ``theta_t`` per
layer (:class:`lib.learn.OAMPNet`, ``T = 8`` layers, Bernoulli-Gaussian denoiser with
``p = 0.1``). :data:`~lib.chapters.oamp_net.OAMP_PROBLEMS` names the three problems,
:func:`~lib.chapters.oamp_problem` builds one (``A``, the training/test sampler),
:func:`~lib.chapters.load_oamp_net` loads the network that ``scripts/train_oamp_net.py`` trained
on it from ``results/oamp_net/`` (float32 state dicts, ``torch.load(weights_only=True)``,
``strict=True``) and :func:`~lib.chapters.oamp_net_results` reads its ``results.json``.

* ``"kappa100"``: ``M=250, N=500``, condition number 100 (``lib.sparse.ill_conditioned_matrix``,
  seed 3), Bernoulli-Gaussian ``x``, 40 dB;
* ``"n64"``: ``M=32, N=64``, Gaussian ``A`` (seed 10), Bernoulli-Gaussian ``x``, 40 dB: small
  dimensions, where the per-sample error-variance estimates fluctuate;
* ``"n64_discrete"``: the same ``A`` and SNR, a discrete prior ``x_i in {-1, 0, +1}`` with
  ``P(x_i != 0) = 0.1`` (same second moment), denoised with the Bernoulli-Gaussian denoiser of
  the other two problems (a mismatched prior).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from lib import sparse
from lib.core.checks import check_number, check_positive_int, check_real
from lib.core.resources import results_dir
from lib.learn.storage import load_state_dict_file
from lib.learn.unrolled_amp import OAMPNet
from lib.learn.unrolled_sparse import make_sampler

__all__ = [
    "OAMP_PROBLEMS",
    "OAMP_T",
    "oamp_problem",
    "discrete_sampler",
    "load_oamp_net",
    "oamp_net_results",
]

#: The problem names, in the order of the chapter's table.
OAMP_PROBLEMS = ("kappa100", "n64", "n64_discrete")
#: Layers of every OAMP-Net of this module; activity and SNR of every problem.
OAMP_T, _P, _SNR_DB = 8, 0.1, 40.0
#: Folder of the stored networks found when ``lib`` was imported (``results/oamp_net``,
#: :func:`lib.core.results_dir`); the loaders look it up again on every call with ``path=None``.
OAMP_RESULTS_DIR = results_dir("oamp_net")


def discrete_sampler(A: torch.Tensor, p: float, snr_db: float):
    """Sampler ``(batch, generator) -> ((y, noise_var), x)`` with ``x_i = b_i s_i``.

    ``b_i ~ Bernoulli(p)``, ``s_i = +-1`` with equal probability (so ``E x_i^2 = p``, as for the
    unit-variance Bernoulli-Gaussian prior), ``y = A x + w`` with
    ``noise_var = lib.sparse.noise_var_for_snr(A, p, snr_db)``.
    """
    check_real(A, "A", ndim=2)
    p = check_number(p, "p", lo=0, hi=1, lo_open=True, hi_open=True)
    snr_db = check_number(snr_db, "snr_db")
    M, N = A.shape
    nv = sparse.noise_var_for_snr(A, p, snr_db)
    nv_t = torch.tensor(nv, dtype=A.dtype)

    def sampler(batch, generator):
        b = torch.rand(batch, N, generator=generator, dtype=A.dtype) < p
        s = torch.randint(0, 2, (batch, N), generator=generator).to(A.dtype) * 2 - 1
        x = b * s
        w = torch.randn(batch, M, generator=generator, dtype=A.dtype) * math.sqrt(nv)
        return (x @ A.T + w, nv_t), x

    return sampler


def oamp_problem(name: str, dtype: torch.dtype = torch.float32):
    """``(A, sampler)`` of problem ``name`` (one of
    :data:`~lib.chapters.oamp_net.OAMP_PROBLEMS`), ``A`` in ``dtype``."""
    if name == "kappa100":
        g = torch.Generator().manual_seed(3)
        A = sparse.ill_conditioned_matrix(250, 500, 100.0, generator=g).to(dtype)
        return A, make_sampler(A, _P, _SNR_DB)
    if name in ("n64", "n64_discrete"):
        A = sparse.gaussian_matrix(32, 64, generator=torch.Generator().manual_seed(10)).to(dtype)
        if name == "n64":
            return A, make_sampler(A, _P, _SNR_DB)
        return A, discrete_sampler(A, _P, _SNR_DB)
    raise ValueError(f"name must be one of {OAMP_PROBLEMS}, got {name!r}")


def _file(path, name) -> Path:
    f = (results_dir("oamp_net") if path is None else Path(path)) / name
    if not f.exists():
        raise FileNotFoundError(
            f"{f} is missing: the stored OAMP-Nets are produced by "
            "`python scripts/train_oamp_net.py` (see results/oamp_net/README.md)"
        )
    return f


def load_oamp_net(
    name: str, path: str | Path | None = None, dtype: torch.dtype = torch.float64
) -> OAMPNet:
    """The trained OAMP-Net of problem ``name``, on that problem's ``A`` in ``dtype``."""
    A, _ = oamp_problem(name, dtype)
    model = OAMPNet(A, check_positive_int(OAMP_T, "T"), p=_P)
    return load_state_dict_file(
        model, _file(path, f"{name}.pt"), what=f"the stored OAMP-Net of {name!r}", dtype=dtype
    )


def oamp_net_results(path: str | Path | None = None) -> dict:
    """The contents of ``results/oamp_net/results.json``."""
    return json.loads(_file(path, "results.json").read_text())
