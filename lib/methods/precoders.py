"""Precoders behind the :class:`~lib.core.Precoder` interface ``(H, power, noise_var) -> V``:
the classical linear precoders and WMMSE, and adapters for unrolled (learned) precoders.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from lib.chapters import unfolded_wmmse as unfolded_pipeline
from lib.core.checks import check_positive_int
from lib.learn.unfolded_wmmse import UnfoldedWMMSE
from lib.learn.unrolling import UnrolledModel
from lib.precoding.linear import mrt, rzf, zf
from lib.precoding.weighted_mmse import wmmse

__all__ = ["UnrolledPrecoder", "pretrained_precoder", "PRECODERS"]


# --------------------------------------------------------------------------- #
# Precoders
# --------------------------------------------------------------------------- #
class UnrolledPrecoder:
    """A learned precoder whose network returns its per-layer precoders, as a ``Precoder``.

    ``model(H, power, noise_var)`` must return the stack ``(T, B, M, K)`` of the precoders
    after each layer (as :class:`lib.learn.UnfoldedWMMSE` does, Pellaco et al., Algorithm 1);
    the precoder is the last layer's. Gradients flow through the call, so the adapter can be
    trained or fine-tuned in place. Chapter: :doc:`unfolded_wmmse`.

    Parameters
    ----------
    model : lib.learn.UnrolledModel
        The (trained or untrained) network; its parameters are cast to the dtype of ``H`` by
        the network itself (the step sizes of :class:`lib.learn.UnfoldedWMMSE` are).
    """

    def __init__(self, model: UnrolledModel):
        if not isinstance(model, UnrolledModel):
            raise TypeError(f"model must be an UnrolledModel, got {type(model).__name__}")
        self.model = model

    def stack(self, H: torch.Tensor, power, noise_var) -> torch.Tensor:
        """Per-layer precoders, ``(T, B, M, K)``; ``stack(...)[-1]`` is the call's precoder."""
        return self.model(H, power, noise_var)

    def __call__(self, H: torch.Tensor, power, noise_var) -> torch.Tensor:
        """The network's precoder ``V`` ``(B, M, K)``: the output of the last layer."""
        return self.stack(H, power, noise_var)[-1]

    def __repr__(self) -> str:
        return f"UnrolledPrecoder({type(self.model).__name__}, T={self.model.num_layers})"


def pretrained_precoder(
    snr_db: float, layers: int, pgd_steps: int = 4, variant: str = "free"
) -> UnrolledPrecoder:
    """A stored, trained unfolded WMMSE of the chapter's sweep as a ``Precoder``.

    :func:`~lib.chapters.stored_model` (the step sizes of
    ``results/unfolded_wmmse/step_sizes.json``) behind :class:`~lib.methods.UnrolledPrecoder`.
    Chapter:
    :doc:`unfolded_wmmse`.

    Parameters
    ----------
    snr_db : float
        The SNR the network was trained at.
    layers, pgd_steps : int
        ``T`` layers and PGD steps per layer of the stored network.
    variant : str
        The stored variant (see :func:`~lib.chapters.model_key`).

    Returns
    -------
    UnrolledPrecoder
    """
    return UnrolledPrecoder(unfolded_pipeline.stored_model(snr_db, layers, pgd_steps, variant))


def _mrt() -> Callable:
    """MRT (:func:`lib.precoding.mrt`); no settings."""
    return mrt


def _zf() -> Callable:
    """ZF (:func:`lib.precoding.zf`); no settings."""
    return zf


def _rzf(reg=None) -> Callable:
    """RZF (:func:`lib.precoding.rzf`); ``reg`` overrides ``beta = K sigma^2 / P``."""
    return rzf if reg is None else functools.partial(rzf, reg=reg)


def _wmmse(iters: int = 100, weights=None, tol: float | None = None) -> Callable:
    """WMMSE (:func:`lib.precoding.wmmse`) with ``iters`` iterations from the matched filter."""
    iters = check_positive_int(iters, "iters")
    return functools.partial(wmmse, iters=iters, weights=weights, tol=tol)


def _unfolded_wmmse(
    layers: int = 4,
    pgd_steps: int = 4,
    *,
    step_sizes=None,
    model: UnfoldedWMMSE | None = None,
    **kw,
) -> UnrolledPrecoder:
    """Deep-unfolded WMMSE (:class:`lib.learn.UnfoldedWMMSE`).

    Untrained (``layers`` x ``pgd_steps`` step sizes at ``init_step``) by default; with
    ``step_sizes`` ``(L, K)`` (e.g. read from ``results/unfolded_wmmse/step_sizes.json``) the
    trained model; with ``model`` a given network. ``kw`` goes to the constructor.
    """
    if model is None:
        if step_sizes is not None:
            model = UnfoldedWMMSE.from_step_sizes(step_sizes, **kw)
        else:
            model = UnfoldedWMMSE(layers, pgd_steps, **kw)
    return UnrolledPrecoder(model)


#: Registry of precoders, ``name -> factory(**settings) -> Precoder``.
#: ``"mrt"``, ``"zf"``, ``"rzf"``, ``"wmmse"``: :mod:`lib.precoding`;
#: ``"unfolded_wmmse"``: :class:`lib.learn.UnfoldedWMMSE` behind
#: :class:`~lib.methods.UnrolledPrecoder`.
PRECODERS: dict[str, Callable[..., Callable]] = {
    "mrt": _mrt,
    "zf": _zf,
    "rzf": _rzf,
    "wmmse": _wmmse,
    "unfolded_wmmse": _unfolded_wmmse,
}
