"""One interface per task: the call signatures that classical and learned methods share.

The book compares classical algorithms with learned ones on the same axes, swaps one for the
other by name (:mod:`lib.methods`), and will wrap any method of a task generically (a classical
fallback around a learned model). That works because every method of a task is called the same
way. The three tasks and their contracts are written here as :class:`typing.Protocol` classes;
:mod:`lib.methods` makes every method of the book satisfy its protocol, and
``tests/test_protocols.py`` runs every registered method against the contract.

* :class:`lib.core.Precoder` -- ``V = precoder(H, power, noise_var)``: multi-user downlink
  precoding (:doc:`downlink_beamforming`, :doc:`unfolded_wmmse`).
* :class:`lib.core.SparseEstimator` -- ``x_hat = estimator(y, A, noise_var)`` and the
  per-iteration / per-layer stack ``estimator.stack(y, A, noise_var)``
  (:doc:`sparse_recovery`, :doc:`unrolling_lista`).
* :class:`lib.core.HybridDesigner` -- ``design = designer(H_hat, sinr_targets, noise_var)``:
  QoS power minimisation with a hybrid (analog codebook + digital) beamformer
  (:doc:`hybrid_arrays_codebooks`, :doc:`hybrid_imperfect_csi_outage`).

Settings that are not data (iteration counts, regularisation, the codebook, the number of RF
chains, a trained network) are fixed when the method is built (a constructor or
:func:`functools.partial`), never passed at call time, so that any two methods of a task are
interchangeable. A method that needs more per-instance data than the protocol's arguments
(a robust design's CSI error energy) takes it as an optional keyword with a default set in
its constructor. Shapes follow the :doc:`notation` page: ``B`` batch, ``K`` users, ``M``
base-station antennas, ``N_RF`` RF chains, ``T`` iterations or unrolled layers; in sparse
recovery ``A`` is ``(M, N)`` (``M`` measurements, ``N`` unknowns).

The protocols are :func:`typing.runtime_checkable`: ``isinstance(obj, SparseEstimator)`` checks
that ``obj`` has the methods (and, for :class:`lib.core.HybridDesigner`, the attributes) of the
protocol. It does not check signatures or shapes; the contract test does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # the interfaces depend on no algorithm module at run time
    import torch

    from lib.precoding.hybrid import HybridResult

__all__ = ["Precoder", "SparseEstimator", "HybridDesigner"]


@runtime_checkable
class Precoder(Protocol):
    """A downlink precoder ``V = precoder(H, power, noise_var)``.

    The transmitter with ``M`` antennas serves ``K`` single-antenna users; user ``k`` receives
    ``H[:, k, :] @ V @ s + n_k`` with ``n_k ~ CN(0, noise_var)`` (Pellaco et al., eq. (1)). A
    precoder maps a batch of channels to a batch of precoders meeting the total power
    constraint ``tr(V V^H) <= P`` of the weighted sum-rate problem (Pellaco et al., eq. (3)).
    Chapters: :doc:`downlink_beamforming`, :doc:`unfolded_wmmse`.

    Satisfied by :func:`lib.precoding.mrt`, :func:`lib.precoding.zf`, :func:`lib.precoding.rzf`,
    ``functools.partial(lib.precoding.wmmse, iters=...)`` and
    :class:`lib.methods.UnrolledPrecoder` (the deep-unfolded WMMSE and later learned
    precoders); :data:`~lib.methods.precoders.PRECODERS` builds each by name.
    """

    def __call__(self, H: torch.Tensor, power, noise_var) -> torch.Tensor:
        """Precode a batch of channels.

        Parameters
        ----------
        H : torch.Tensor
            ``(B, K, M)`` complex (``complex64`` or ``complex128``); row ``k`` is ``h_k^H``.
        power : float or torch.Tensor
            Total transmit power ``P`` (linear), a scalar or ``(B,)``.
        noise_var : float or torch.Tensor
            Noise variance ``sigma^2`` (linear), a scalar or ``(B,)``. Methods that do not
            need it (MRT, ZF) accept and ignore it.

        Returns
        -------
        torch.Tensor
            ``V`` of shape ``(B, M, K)``, the dtype and device of ``H``, finite, with
            ``tr(V V^H) <= P`` per sample (up to rounding of the dtype); column ``k`` is the
            beamformer ``v_k`` of user ``k``.
        """
        ...


@runtime_checkable
class SparseEstimator(Protocol):
    """A sparse-recovery estimator ``x_hat = estimator(y, A, noise_var)``.

    Model ``y = A x + w`` with ``w ~ N(0, noise_var I)``, ``x`` sparse (Bernoulli-Gaussian in
    the book). Iterative algorithms and unrolled networks also expose the whole trajectory
    through ``stack``, which is what the NMSE-versus-iteration figures plot.
    Chapters: :doc:`sparse_recovery`, :doc:`unrolling_lista`,
    :doc:`unrolling_distribution_shift`.

    Satisfied by :class:`lib.methods.IterativeEstimator` (ISTA, FISTA, AMP, VAMP, OAMP with
    their settings fixed) and :class:`lib.methods.UnrolledEstimator` (LISTA, LISTA-CP, lean
    ISTA, ALISTA, TISTA, LAMP, OAMP-Net, the MLP);
    :data:`~lib.methods.estimators.SPARSE_ESTIMATORS` builds
    each by name.

    A learned model takes ``A`` as an input where its architecture allows it (networks built
    around ``A``: the lean ISTA family, LAMP, OAMP-Net use a new matrix with their learned
    scalars kept); networks whose learned matrices replace ``A`` (LISTA, LISTA-CP, the MLP)
    raise ``ValueError`` when called with a matrix other than the one they were built on.
    """

    def __call__(self, y: torch.Tensor, A: torch.Tensor, noise_var) -> torch.Tensor:
        """Estimate the sparse signals of a batch of measurements.

        Parameters
        ----------
        y : torch.Tensor
            Measurements, ``(B, M)`` real (``float32`` or ``float64``).
        A : torch.Tensor
            Sensing matrix, ``(M, N)`` or ``(B, M, N)``, real, the dtype of ``y``.
            Learned models take one ``(M, N)`` matrix.
        noise_var : float or torch.Tensor
            Noise variance ``sigma^2``, a scalar or ``(B,)``; methods that estimate it from the
            residual (ISTA, FISTA, AMP, LAMP, LISTA) accept and ignore it.

        Returns
        -------
        torch.Tensor
            ``x_hat`` of shape ``(B, N)``, the dtype and device of ``y``, finite.
        """
        ...

    def stack(self, y: torch.Tensor, A: torch.Tensor, noise_var) -> torch.Tensor:
        """The estimate after every iteration or layer.

        Parameters
        ----------
        y, A, noise_var
            As for calling the estimator.

        Returns
        -------
        torch.Tensor
            ``(T, B, N)``: entry ``t`` is the estimate after iteration (layer) ``t + 1``, so
            ``stack(y, A, noise_var)[-1]`` equals ``estimator(y, A, noise_var)``. A black-box
            network has ``T = 1``.
        """
        ...


@runtime_checkable
class HybridDesigner(Protocol):
    """A QoS hybrid-beamforming design ``design = designer(H_hat, sinr_targets, noise_var)``.

    Minimise the allocated power subject to ``SINR_k >= gamma_k`` for every user with a hybrid
    beamformer ``F_RF V_bb`` whose analog columns come from a codebook (Schynol and Pesavento,
    eqs. (2)-(4), (12)). The codebook ``(M, C)``, the number of RF chains ``N_RF`` and the
    method's knobs (greedy steps, margin, loading, power budget) are constructor settings.
    Chapters: :doc:`hybrid_arrays_codebooks`, :doc:`hybrid_imperfect_csi_outage`.

    Satisfied by the designers of :mod:`lib.methods` (greedy codeword selection, exhaustive
    search, a fixed analog matrix, the fully digital bound, the margin, diagonal-loading and
    SDP robust designs); :data:`~lib.methods.designers.HYBRID_DESIGNERS` builds each by name.

    Attributes
    ----------
    batched : bool
        ``True`` when the whole batch is solved in batched torch calls; ``False`` for the
        per-instance convex-solver references (cvxpy), which are for small batches only.
    """

    batched: bool

    def __call__(self, H_hat: torch.Tensor, sinr_targets, noise_var) -> HybridResult:
        """Design a hybrid beamformer for a batch of (estimated) channels.

        Parameters
        ----------
        H_hat : torch.Tensor
            ``(B, K, M)`` complex channels (true or estimated); row ``k`` is ``h_k^H``.
        sinr_targets : float or torch.Tensor
            Linear SINR targets ``gamma_k``: a scalar, ``(K,)`` or ``(B, K)``.
        noise_var : float or torch.Tensor
            Noise variance ``sigma^2``, a scalar or ``(B,)``.

        Returns
        -------
        lib.precoding.HybridResult
            ``F_RF`` ``(B, M, N_RF)``, unit-norm digital weights ``V_bb`` ``(B, N_RF, K)``,
            downlink powers ``powers`` ``(B, K)``, the allocated power ``weighted_power``
            ``(B,)`` and ``feasible``, a bool tensor ``(B,)``; the dtype of ``H_hat``.
            Where ``feasible`` is ``True``, :func:`lib.precoding.hybrid_sinr` of the design on
            ``H_hat`` meets the targets (a robust design meets them with room to spare); where
            it is ``False``, ``powers`` and ``weighted_power`` are ``+inf`` (never NaN).
        """
        ...
