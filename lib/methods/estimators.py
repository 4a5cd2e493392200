"""Sparse estimators behind the :class:`~lib.core.SparseEstimator` interface
``(y, A, noise_var) -> x_hat``: ISTA, FISTA, AMP, VAMP, OAMP and every learned sparse model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from lib.chapters import pretrained_sparse
from lib.core.checks import check_positive_int, check_real, per_sample
from lib.learn.unrolled_amp import LAMP, OAMPNet
from lib.learn.unrolled_sparse import LISTA, LeanISTA, MLPRecovery, with_matrix
from lib.learn.unrolling import UnrolledModel
from lib.sparse.message_passing import DEFAULT_ALPHA, amp, oamp, vamp
from lib.sparse.proximal import fista, ista

__all__ = ["IterativeEstimator", "UnrolledEstimator", "pretrained_estimator", "SPARSE_ESTIMATORS"]


# --------------------------------------------------------------------------- #
# Sparse estimators
# --------------------------------------------------------------------------- #
class IterativeEstimator:
    """A classical iterative sparse-recovery algorithm with its settings fixed.

    ``IterativeEstimator(lib.sparse.ista, 200, lam=0.01)(y, A, noise_var)`` runs
    ``ista(y, A, lam=0.01, iters=200)``. The algorithm is called with keyword arguments
    ``iters``, ``history`` and, if ``uses_noise_var``, ``noise_var``; everything else is a
    fixed setting. Batched ``A`` ``(B, M, N)`` is accepted (the algorithms handle it).
    Chapter: :doc:`sparse_recovery`.

    Parameters
    ----------
    algorithm : callable
        One of :func:`lib.sparse.ista`, :func:`lib.sparse.fista`, :func:`lib.sparse.amp`,
        :func:`lib.sparse.vamp`, :func:`lib.sparse.oamp`, or a function with their calling
        convention (``algorithm(y, A, ..., iters=T, history=bool, **settings)``).
    iters : int
        Number of iterations ``T``.
    uses_noise_var : bool
        Whether the algorithm uses ``noise_var`` (VAMP, OAMP); ISTA, FISTA and AMP validate
        and ignore it.
    **settings
        Fixed keyword settings (``lam``, ``step``, ``denoiser``, ``alpha``, ``p``, ...).
    """

    def __init__(self, algorithm: Callable, iters: int, *, uses_noise_var: bool, **settings):
        if not callable(algorithm):
            raise TypeError(f"algorithm must be callable, got {type(algorithm).__name__}")
        self.algorithm = algorithm
        self.iters = check_positive_int(iters, "iters")
        self.uses_noise_var = bool(uses_noise_var)
        self.settings = settings

    def _run(self, y, A, noise_var, history: bool):
        # every algorithm validates noise_var; only VAMP and OAMP use it
        kw = dict(self.settings, iters=self.iters, history=history, noise_var=noise_var)
        return self.algorithm(y, A, **kw)

    def __call__(self, y: torch.Tensor, A: torch.Tensor, noise_var) -> torch.Tensor:
        """The estimate after ``T`` iterations, ``(B, N)``."""
        return self._run(y, A, noise_var, False)

    def stack(self, y: torch.Tensor, A: torch.Tensor, noise_var) -> torch.Tensor:
        """The estimates after every iteration, ``(T, B, N)``."""
        return self._run(y, A, noise_var, True)[1]

    def __repr__(self) -> str:
        name = getattr(self.algorithm, "__name__", type(self.algorithm).__name__)
        return f"IterativeEstimator({name}, iters={self.iters}, {self.settings})"


_MATRIX_INPUT = (LeanISTA, LAMP, OAMPNet)  # networks built around A: with_matrix re-points them


class UnrolledEstimator:
    """A learned sparse-recovery network as a ``SparseEstimator``.

    The network (an :class:`lib.learn.UnrolledModel` called as ``model(y, noise_var)``,
    returning its per-layer estimates ``(T, B, N)``) is tied to the matrix ``A`` it was built
    and trained on. Called with that matrix it runs as is. Called with another ``(M, N)``
    matrix:

    * networks built around ``A`` -- :class:`lib.learn.LeanISTA` (lean ISTA, ALISTA, TISTA),
      :class:`lib.learn.LAMP`, :class:`lib.learn.OAMPNet` -- run on a copy re-pointed at the new
      matrix with the learned scalars kept (:func:`lib.learn.with_matrix`);
    * networks whose learned matrices replace ``A`` -- :class:`lib.learn.LISTA` (full or
      LISTA-CP) and :class:`lib.learn.MLPRecovery` -- raise ``ValueError``: they cannot use a
      new matrix without retraining (:doc:`unrolling_distribution_shift`).

    Only a single ``(M, N)`` matrix is accepted (``ValueError`` for ``(B, M, N)``). When ``y``
    has another dtype or device than the network, a cast copy of the network is used for that
    call; otherwise the network itself, so gradients reach its parameters (the adapter can be
    trained in place). Chapter: :doc:`unrolling_lista`.

    Parameters
    ----------
    model : lib.learn.UnrolledModel
        The network.
    A : torch.Tensor, optional
        ``(M, N)``: the matrix the network was built on; defaults to ``model.A``. Required for
        :class:`lib.learn.MLPRecovery`, which does not store it.
    """

    def __init__(self, model: UnrolledModel, A: torch.Tensor | None = None):
        if not isinstance(model, UnrolledModel):
            raise TypeError(f"model must be an UnrolledModel, got {type(model).__name__}")
        if A is None:
            A = getattr(model, "A", None)
            if not isinstance(A, torch.Tensor):
                raise ValueError(
                    f"{type(model).__name__} does not store its sensing matrix: pass A, the "
                    "(M, N) matrix it was trained on"
                )
        check_real(A, "A", ndim=2)
        self.model = model
        self.A = A.detach()
        self.takes_matrix = isinstance(model, _MATRIX_INPUT)

    def _model_for(self, y: torch.Tensor, A: torch.Tensor) -> UnrolledModel:
        check_real(y, "y", ndim=2)
        check_real(A, "A")
        if A.dim() != 2:
            raise ValueError(
                f"{type(self.model).__name__} takes one (M, N) sensing matrix, got A of shape "
                f"{tuple(A.shape)}; call it once per matrix"
            )
        if y.dtype != A.dtype:
            raise TypeError(f"y and A must have the same dtype, got {y.dtype} and {A.dtype}")
        model = self.model
        ref = next(iter(model.parameters()), None)
        if ref is not None and (ref.dtype != y.dtype or ref.device != y.device):
            model = copy.deepcopy(model).to(dtype=y.dtype, device=y.device)
        same = A.shape == self.A.shape and torch.equal(A, self.A.to(dtype=A.dtype, device=A.device))
        if same:
            return model
        if not self.takes_matrix:
            raise ValueError(
                f"{type(self.model).__name__} is tied to the sensing matrix it was trained on "
                f"(shape {tuple(self.A.shape)}): its learned matrices replace A, so it cannot be "
                "called with another A; retrain it, or use a network built around A "
                "(lean ISTA, ALISTA, TISTA, LAMP, OAMP-Net)"
            )
        return with_matrix(model, A)

    def stack(self, y: torch.Tensor, A: torch.Tensor, noise_var) -> torch.Tensor:
        """Per-layer estimates ``(T, B, N)`` (``T = 1`` for the MLP)."""
        model = self._model_for(y, A)
        per_sample(
            noise_var, "noise_var", y.shape[0], dtype=y.dtype, device=y.device, allow_zero=True
        )
        return model(y, noise_var)

    def __call__(self, y: torch.Tensor, A: torch.Tensor, noise_var) -> torch.Tensor:
        """The last layer's estimate, ``(B, N)``."""
        return self.stack(y, A, noise_var)[-1]

    def __repr__(self) -> str:
        return f"UnrolledEstimator({type(self.model).__name__}, T={self.model.num_layers})"


def pretrained_estimator(name: str, path=None, dtype: torch.dtype = torch.float64):
    """A stored, trained network of the deep-unfolding chapters as a ``SparseEstimator``.

    Loads ``name`` (one of :data:`~lib.chapters.pretrained_sparse.MODELS`) with
    :func:`~lib.chapters.load` and ties it to the stored reference matrix
    (:func:`~lib.chapters.reference_matrix`). Chapter: :doc:`unrolling_lista`.

    Parameters
    ----------
    name : str
        The stored network.
    path : str or pathlib.Path, optional
        Folder of the stored files (default ``results/unrolled_sparse``).
    dtype : torch.dtype
        Dtype of the network and of the reference matrix.

    Returns
    -------
    UnrolledEstimator
    """
    model = pretrained_sparse.load(name, path, dtype)
    A = pretrained_sparse.reference_matrix(dtype, path)
    return UnrolledEstimator(model, A)


def _iterative(algorithm, uses_noise_var, **fixed):
    def factory(A=None, p: float = 0.1, T: int = 16, **settings):
        kw = dict(fixed)
        if "p" in kw:  # the prior's sparsity comes from the problem
            kw["p"] = p
        kw.update(settings)
        return IterativeEstimator(algorithm, T, uses_noise_var=uses_noise_var, **kw)

    factory.__doc__ = (
        f"``{algorithm.__name__}`` with ``T`` iterations (settings {fixed}; ``A`` unused)."
    )
    return factory


def _unrolled(build):
    def factory(A, p: float = 0.1, T: int = 16, **settings):
        check_real(A, "A", ndim=2)
        return UnrolledEstimator(build(A, p, check_positive_int(T, "T"), **settings), A)

    factory.__doc__ = build.__doc__
    return factory


# Defaults of the learned models: the chapter's initialisations (lib.chapters.pretrained_sparse
# ``build``), with the number of layers and the sparsity taken from the problem.
def _lista(A, p, T, lam=0.01):
    """LISTA with full per-layer matrices (:class:`lib.learn.LISTA`), at ISTA; tied to ``A``."""
    return LISTA(A, T, lam)


def _lista_cp(A, p, T, lam=0.01):
    """LISTA-CP (:class:`lib.learn.LISTA`, ``coupled=True``), at ISTA; tied to ``A``."""
    return LISTA(A, T, lam, coupled=True)


def _lean_ista(A, p, T, lam=0.01):
    """Lean ISTA: step and threshold per layer (:class:`lib.learn.LeanISTA`), at ISTA."""
    return LeanISTA(A, T, weight="transpose", lam=lam)


def _alista(A, p, T, step=0.5, lam=0.04):
    """ALISTA: analytic weight (:class:`lib.learn.LeanISTA`, ``weight="analytic"``)."""
    return LeanISTA(A, T, weight="analytic", step=step, lam=lam)


def _tista(A, p, T):
    """TISTA: pseudo-inverse weight, residual error variance, Bernoulli-Gaussian MMSE denoiser."""
    return LeanISTA(A, T, weight="pinv", threshold="adaptive", denoiser="mmse", p=p)


def _tista_soft(A, p, T, beta=1.1):
    """TISTA with a soft threshold ``beta_t tau_t`` (:class:`lib.learn.LeanISTA`)."""
    return LeanISTA(A, T, weight="pinv", threshold="adaptive", denoiser="soft", beta=beta)


def _lamp_soft(A, p, T, alpha=DEFAULT_ALPHA):
    """LAMP with a learned soft threshold per layer (:class:`lib.learn.LAMP`), at AMP."""
    return LAMP(A, T, denoiser="soft", alpha=alpha)


def _lamp_bg(A, p, T):
    """LAMP with a learned Bernoulli-Gaussian denoiser per layer (:class:`lib.learn.LAMP`)."""
    return LAMP(A, T, denoiser="bg", p=p)


def _oampnet(A, p, T):
    """OAMP-Net (:class:`lib.learn.OAMPNet`), at OAMP."""
    return OAMPNet(A, T, p=p)


def _mlp(A, p, T, hidden=pretrained_sparse.MLP_SHAPE[0], depth=pretrained_sparse.MLP_SHAPE[1]):
    """Black-box MLP ``y -> x`` (:class:`lib.learn.MLPRecovery`, one layer); tied to ``A``."""
    M, N = A.shape
    return MLPRecovery(M, N, hidden=hidden, depth=depth, dtype=A.dtype)


#: Registry of sparse estimators, ``name -> factory(A, p=0.1, T=16, **settings)``.
#: Classical (:class:`~lib.methods.IterativeEstimator`): ``"ista"``, ``"fista"`` (``lam=0.01``),
#: ``"amp"`` (soft threshold, ``alpha = DEFAULT_ALPHA``), ``"amp_bg"`` (Bernoulli-Gaussian
#: denoiser), ``"vamp"``, ``"oamp"``. Learned (:class:`~lib.methods.UnrolledEstimator`, built
#: untrained on
#: ``A``): ``"lista"``, ``"lista_cp"``, ``"lean_ista"``, ``"alista"``, ``"tista"``,
#: ``"tista_soft"``, ``"lamp_soft"``, ``"lamp_bg"``, ``"oamp_net"``, ``"mlp"``. A stored,
#: trained network: :func:`~lib.methods.pretrained_estimator`.
SPARSE_ESTIMATORS: dict[str, Callable[..., object]] = {
    "ista": _iterative(ista, False, lam=0.01),
    "fista": _iterative(fista, False, lam=0.01),
    "amp": _iterative(amp, False, denoiser="soft", alpha=DEFAULT_ALPHA),
    "amp_bg": _iterative(amp, False, denoiser="bg", p=0.1),
    "vamp": _iterative(vamp, True, p=0.1),
    "oamp": _iterative(oamp, True, p=0.1),
    "lista": _unrolled(_lista),
    "lista_cp": _unrolled(_lista_cp),
    "lean_ista": _unrolled(_lean_ista),
    "alista": _unrolled(_alista),
    "tista": _unrolled(_tista),
    "tista_soft": _unrolled(_tista_soft),
    "lamp_soft": _unrolled(_lamp_soft),
    "lamp_bg": _unrolled(_lamp_bg),
    "oamp_net": _unrolled(_oampnet),
    "mlp": _unrolled(_mlp),
}
