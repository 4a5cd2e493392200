"""Distribution shift for sparse recovery: shifted test problems and a side-by-side evaluation.

Chapter ``unrolling_distribution_shift``. Networks are trained on one operating point
(sensing matrix ``A``, activity ``p``, SNR, unit-variance non-zeros) and tested after moving
*one* quantity at a time. For a method ``k`` and a test problem ``s``, with
``NMSE_k(s)`` in dB (ratio of sums over the test set, ``lib.sparse.nmse_db``), the chapter reports

* the degradation ``Delta_k(s) = NMSE_k(s) - NMSE_k(s_0)`` relative to the same method at the
  training point ``s_0`` (:func:`~lib.chapters.degradation_db`; chapter eq.
  ``eq-shift-degradation``), and
* the gap ``NMSE_k(s) - NMSE_oracle(s)`` to the support oracle at the *shifted* point
  (:func:`~lib.chapters.gap_to_oracle_db`), since the limit itself moves with an SNR or sparsity
  shift.

Shifted problems: a :class:`~lib.chapters.ShiftProblem` (sensing matrix, activity, SNR, amplitude
of the
non-zeros; its defaults are the training point :data:`~lib.chapters.pretrained_sparse.REFERENCE`),
:func:`~lib.chapters.shifted_test_set` and :func:`~lib.chapters.with_condition_number` (same
singular vectors, new singular
values). :func:`~lib.chapters.evaluate_shift`
evaluates a dictionary of trained models, the classical references (AMP with the soft threshold;
AMP, OAMP and VAMP with the training prior; the linear MMSE estimator) and the support oracle on
one shifted problem;
:func:`~lib.chapters.reference_shifts` and :func:`~lib.chapters.sweep_shifts` run the chapter's
four sweeps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from lib import sparse
from lib.chapters.pretrained_sparse import REFERENCE
from lib.core.checks import check_positive_int, check_real
from lib.learn.unrolled_sparse import has_sensing_matrix, make_sampler, with_matrix
from lib.learn.unrolling import UnrolledModel
from lib.sparse.problems import _geometric_spectrum

__all__ = [
    "REFERENCES",
    "ShiftProblem",
    "Shift",
    "with_condition_number",
    "shifted_test_set",
    "evaluate_shift",
    "reference_shifts",
    "sweep_shifts",
    "degradation_db",
    "gap_to_oracle_db",
]

#: Keys that :func:`~lib.chapters.evaluate_shift` adds after the models' own keys.
REFERENCES = ("amp_soft", "amp_bg", "oamp", "vamp", "lmmse", "oracle")


def with_condition_number(A: torch.Tensor, kappa: float) -> torch.Tensor:
    """``A_kappa = U diag(s_kappa) V^T``: the singular vectors of ``A``, new singular values.

    ``A = U diag(s) V^T`` (thin SVD, ``A`` of shape ``(M, N)``, ``M <= N``); ``s_kappa`` is the
    geometric profile ``kappa^(-i/(M-1))``, ``i = 0..M-1`` (condition number ``kappa``), scaled so
    that ``||A_kappa||_F^2 = N`` like a Gaussian matrix with unit-norm columns. Unlike
    :func:`lib.sparse.ill_conditioned_matrix` (Haar-random singular vectors, the same spectrum)
    only the spectrum changes, so the shift is a pure conditioning shift of the training matrix.

    Parameters
    ----------
    A : real tensor ``(M, N)``, ``M <= N``
    kappa : float
        Condition number ``>= 1``.

    Returns
    -------
    torch.Tensor
        ``(M, N)``, the dtype and device of ``A``.
    """
    check_real(A, "A", ndim=2)
    kappa = float(kappa)
    if not kappa >= 1:
        raise ValueError(f"kappa must be >= 1 (largest / smallest singular value), got {kappa}")
    M, N = A.shape
    if M > N:
        raise ValueError(f"A must be wide (M <= N), got shape {tuple(A.shape)}")
    U, _, Vh = torch.linalg.svd(A, full_matrices=False)
    return (U * _geometric_spectrum(M, N, kappa, A.dtype, A.device)) @ Vh


@dataclass(frozen=True)
class ShiftProblem:
    """One test problem: sensing matrix ``A`` ``(M, N)``, activity ``p``, SNR and amplitude.

    The defaults are the training point (:data:`~lib.chapters.pretrained_sparse.REFERENCE`,
    amplitude 1); ``moved`` returns a copy with one quantity changed and ``kwargs``
    the keyword arguments of :func:`~lib.chapters.evaluate_shift` /
    :func:`~lib.chapters.shifted_test_set`.
    """

    A: torch.Tensor
    p: float = REFERENCE.p
    snr_db: float = REFERENCE.snr_db
    amplitude: float = 1.0

    def moved(self, **changes) -> ShiftProblem:
        """A copy with the given fields replaced (e.g. ``moved(snr_db=10.0)``)."""
        return dataclasses.replace(self, **changes)

    def kwargs(self) -> dict:
        """``dict(A=..., p=..., snr_db=..., amplitude=...)``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def shifted_test_set(
    A: torch.Tensor,
    p: float = REFERENCE.p,
    snr_db: float = REFERENCE.snr_db,
    *,
    amplitude: float = 1.0,
    n: int = 300,
    seed: int = 5,
):
    """Test set ``(y, noise_var, x)`` of ``n`` samples of ``make_sampler(A, p, snr_db, amplitude)``.

    ``x`` ``(n, N)`` Bernoulli-Gaussian with activity ``p`` and non-zero standard deviation
    ``amplitude`` (the SNR is kept at ``snr_db``, so an amplitude shift is a pure change of
    scale), ``y`` ``(n, M)``, drawn from ``torch.Generator().manual_seed(seed)``.
    """
    n = check_positive_int(n, "n")
    (y, nv), x = make_sampler(A, p, snr_db, amplitude=amplitude)(
        n, torch.Generator().manual_seed(seed)
    )
    return y, nv, x


def evaluate_shift(
    models: Mapping[str, UnrolledModel],
    A: torch.Tensor,
    p: float = REFERENCE.p,
    snr_db: float = REFERENCE.snr_db,
    *,
    amplitude: float = 1.0,
    n: int = 300,
    seed: int = 5,
    references: bool = True,
    iterations: int = REFERENCE.T,
    prior_p: float = REFERENCE.p,
    diverged_db: float = 60.0,
) -> dict[str, float]:
    """NMSE (dB) at the last layer of every model, the classical references and the oracle.

    All methods see the same test set :func:`~lib.chapters.shifted_test_set`
    ``(A, p, snr_db, amplitude, n,
    seed)``. Model-based networks (:class:`~lib.learn.LeanISTA`, ``LAMP``,
    ``OAMPNet``) whose matrix differs from ``A`` are *told* the new matrix
    (:func:`~lib.learn.with_matrix`: learned scalars kept); full LISTA and the MLP keep
    the matrices they learned. A diverged method (NaN or infinite NMSE) is reported at
    ``diverged_db`` so that it stays on a plot's axes.

    Parameters
    ----------
    models : mapping of str to UnrolledModel
        Trained networks ``model(y, noise_var) -> (T, B, N)``.
    A : real tensor ``(M, N)``
        The test problem's sensing matrix.
    p, snr_db, amplitude : float
        Activity, SNR (dB) and non-zero amplitude of the test problem (defaults: the
        training point, :data:`~lib.chapters.pretrained_sparse.REFERENCE`).
    n, seed : int
        Test-set size and generator seed.
    references : bool
        Also report, in this order, ``"amp_soft"`` (AMP with the soft threshold, no prior),
        ``"amp_bg"``, ``"oamp"`` and ``"vamp"`` (AMP, OAMP and VAMP with the Bernoulli-Gaussian
        denoiser of the *training* prior ``prior_p``, unit variance), all with ``iterations``
        iterations, ``"lmmse"`` (:func:`lib.sparse.lmmse` with the training prior's variance
        ``prior_p``: the best linear estimator at the training point) and ``"oracle"`` (least
        squares on the true support).
    iterations : int
    prior_p : float
    diverged_db : float

    Returns
    -------
    dict of str to float
        NMSE in dB (ratio of sums over the test set), the models' keys first.
    """
    check_real(A, "A", ndim=2)
    y, nv, x = shifted_test_set(A, p, snr_db, amplitude=amplitude, n=n, seed=seed)
    out: dict[str, float] = {}
    with torch.no_grad():
        for k, m in models.items():
            if has_sensing_matrix(m) and not torch.equal(m.A, A.to(m.A.dtype)):
                m = with_matrix(m, A)
            out[k] = sparse.nmse_db(m(y, nv)[-1], x).item()
        if references:
            out["amp_soft"] = sparse.nmse_db(
                sparse.amp(y, A, iterations, denoiser="soft"), x
            ).item()
            out["amp_bg"] = sparse.nmse_db(
                sparse.amp(y, A, iterations, denoiser="bg", p=prior_p), x
            ).item()
            for key, alg in (("oamp", sparse.oamp), ("vamp", sparse.vamp)):
                out[key] = sparse.nmse_db(alg(y, A, nv, iterations, p=prior_p), x).item()
            out["lmmse"] = sparse.nmse_db(sparse.lmmse(y, A, nv, signal_var=prior_p), x).item()
            out["oracle"] = sparse.nmse_db(sparse.support_oracle(y, A, x != 0), x).item()
    return {k: (v if math.isfinite(v) else float(diverged_db)) for k, v in out.items()}


@dataclass(frozen=True)
class Shift:
    """One quantity moved away from its training value.

    ``values`` are the tested values, ``train_value`` the training one, ``problem(v)`` the
    keyword arguments of :func:`~lib.chapters.evaluate_shift` (``A``, ``p``, ``snr_db``,
    ``amplitude``) for
    value ``v``; ``log_scale`` says how to plot ``values``.
    """

    values: Sequence[float]
    train_value: float
    problem: Callable[[float], dict]
    log_scale: bool = False


def reference_shifts(
    A: torch.Tensor, p: float = REFERENCE.p, snr_db: float = REFERENCE.snr_db
) -> dict[str, Shift]:
    """The chapter's four sweeps around the training point ``(A, p, snr_db, amplitude 1)``.

    SNR 10..50 dB, activity 0.05..0.25, amplitude 0.25..4 (same SNR), and condition number
    3..300 by :func:`~lib.chapters.with_condition_number` (the training value is ``A``'s own
    condition number).

    Returns
    -------
    dict of str to Shift
    """
    check_real(A, "A", ndim=2)
    s = torch.linalg.svdvals(A)
    base = ShiftProblem(A, p, snr_db)
    return {
        "SNR (dB)": Shift(
            [10, 20, 30, 40, 50], snr_db, lambda v: base.moved(snr_db=float(v)).kwargs()
        ),
        "sparsity p": Shift([0.05, 0.1, 0.15, 0.2, 0.25], p, lambda v: base.moved(p=v).kwargs()),
        "amplitude a": Shift(
            [0.25, 0.5, 1.0, 2.0, 4.0],
            1.0,
            lambda v: base.moved(amplitude=v).kwargs(),
            log_scale=True,
        ),
        "condition number": Shift(
            [3, 10, 30, 100, 300],
            float(s[0] / s[-1]),
            lambda v: base.moved(A=with_condition_number(A, float(v))).kwargs(),
            log_scale=True,
        ),
    }


def sweep_shifts(
    models: Mapping[str, UnrolledModel], shifts: Mapping[str, Shift], **kwargs
) -> dict[str, list[dict[str, float]]]:
    """Run every sweep: ``{name: [evaluate_shift(models, **shift.problem(v), **kwargs) ...]}``.

    Returns
    -------
    dict of str to list of dict
        One :func:`~lib.chapters.evaluate_shift` result per value of every shift, in order.
    """
    return {
        name: [evaluate_shift(models, **sh.problem(v), **kwargs) for v in sh.values]
        for name, sh in shifts.items()
    }


def degradation_db(shifted: Mapping[str, float], reference: Mapping[str, float]) -> dict:
    """``Delta_k = NMSE_k(shifted) - NMSE_k(reference)`` in dB (eq. ``eq-shift-degradation``).

    Returns
    -------
    dict of str to float
        For every key in both results; positive means worse under the shift.
    """
    return {k: shifted[k] - reference[k] for k in shifted if k in reference}


def gap_to_oracle_db(result: Mapping[str, float]) -> dict:
    """``NMSE_k - NMSE_oracle`` in dB at the same (shifted) problem, for every method ``k``.

    Returns
    -------
    dict of str to float
        Every key of ``result`` except ``"oracle"``; ``ValueError`` if it has no oracle.
    """
    if "oracle" not in result:
        raise ValueError("result has no 'oracle' entry (evaluate_shift(..., references=True))")
    return {k: v - result["oracle"] for k, v in result.items() if k != "oracle"}
