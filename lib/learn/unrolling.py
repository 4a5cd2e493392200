"""The unrolled-network base class and layer-wise growth (chapter *Unrolling ISTA*).

Deep unfolding takes ``T`` iterations of a known iterative algorithm, makes a bounded set of
its parameters trainable *per iteration*, and trains the resulting ``T``-layer network end to
end on a task loss (Gregor & LeCun 2010; Pellaco et al., "Deep unfolding of the weighted MMSE
beamforming algorithm", section I-B). This module holds the parts that do not depend on the
algorithm being unrolled:

* :class:`~lib.learn.UnrolledModel` -- a base class whose layers are ``torch.nn.Module`` objects and
  whose forward pass keeps every layer's output, shape ``(T, ...)`` (for per-layer losses and
  NMSE-vs-layer plots);
* :func:`~lib.learn.growth_plan` -- **layer-wise growth then joint fine-tuning** (Borgerding,
  Schniter &
  Rangan 2017) as a plan of :class:`lib.learn.Stage` objects, and
  :func:`~lib.learn.train_unrolled`, which
  runs it with :func:`lib.learn.fit` (fresh samples at every step, an optional penalty such as
  a contraction penalty, seeded, CPU or GPU, a switchable tqdm progress bar, checkpoints);
* :func:`~lib.learn.count_parameters`, :func:`~lib.learn.freeze_layers`.

A sampler is ``sampler(batch_size, generator) -> (inputs, target)``, a loss
``loss_fn(outputs, target) -> scalar``; ``inputs`` is a tensor or a tuple of tensors passed
positionally to the model; ``target`` may be ``None`` for unsupervised losses (as in the
unfolded WMMSE, where the loss is the negative sum rate computed from the channel).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

import torch
from torch import nn

from lib.core.checks import check_number, check_positive_int
from lib.learn.plan import History, Stage, _takes_model, lr_stages
from lib.learn.trainer import TrainState, fit

__all__ = [
    "UnrolledModel",
    "TrainHistory",
    "growth_plan",
    "plateau_plan",
    "train_unrolled",
    "count_parameters",
    "freeze_layers",
]


# --------------------------------------------------------------------------- #
# The base model
# --------------------------------------------------------------------------- #
class UnrolledModel(nn.Module):
    """Base class of an unrolled (deep-unfolded) network.

    A subclass passes its layers (one ``nn.Module`` per unrolled iteration) to ``__init__``
    and implements three small methods:

    ``init_state(*inputs) -> state``
        the algorithm's initialisation (e.g. ``x_0 = 0``);
    ``layer_forward(layer, state, t, *inputs) -> state``
        one iteration with the parameters of ``layer`` (``t`` is the 0-based layer index);
        the default calls ``layer(state, *inputs)``;
    ``readout(state) -> tensor``
        the quantity the loss and the plots look at (e.g. the current estimate ``x_t``);
        the default returns ``state`` itself.

    ``model(*inputs, n_layers=None)`` runs the first ``n_layers`` layers (all by default) and
    returns the **stacked per-layer outputs**, a tensor of shape ``(n_layers, *readout_shape)``:
    ``out[t]`` is the output after layer ``t + 1``, so ``out[-1]`` is the network's estimate.
    Parameters that are not inside a layer (shared across layers) are trained in every stage.
    Subclasses validate their inputs once (in ``init_state`` or an overridden ``forward``);
    ``layer_forward`` runs unchecked.

    Parameters
    ----------
    layers : sequence of nn.Module
        One module per unrolled iteration, ``T >= 1`` of them.
    """

    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        layers = list(layers)
        if len(layers) == 0:
            raise ValueError("layers must contain at least one module")
        for i, layer in enumerate(layers):
            if not isinstance(layer, nn.Module):
                raise TypeError(f"layers[{i}] must be an nn.Module, got {type(layer).__name__}")
        self.layers = nn.ModuleList(layers)

    # -- to be specialised --------------------------------------------------- #
    def init_state(self, *inputs):  # pragma: no cover - abstract
        raise NotImplementedError

    def layer_forward(self, layer: nn.Module, state, t: int, *inputs):
        return layer(state, *inputs)

    def readout(self, state) -> torch.Tensor:
        return state

    # -- generic ------------------------------------------------------------- #
    @property
    def num_layers(self) -> int:
        """Number of unrolled layers ``T``."""
        return len(self.layers)

    def _check_n_layers(self, n_layers) -> int:
        if n_layers is None:
            return self.num_layers
        n_layers = check_positive_int(n_layers, "n_layers")
        if n_layers > self.num_layers:
            raise ValueError(
                f"n_layers must be <= {self.num_layers} (the model's depth), got {n_layers}"
            )
        return n_layers

    def forward(self, *inputs, n_layers: int | None = None) -> torch.Tensor:
        n_layers = self._check_n_layers(n_layers)
        state = self.init_state(*inputs)
        outs = []
        for t in range(n_layers):
            state = self.layer_forward(self.layers[t], state, t, *inputs)
            outs.append(self.readout(state))
        return torch.stack(outs)

    def layer_parameters(self, t: int) -> list[nn.Parameter]:
        """Trainable parameters of layer ``t`` (0-based)."""
        return [p for p in self.layers[t].parameters()]

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters that belong to no layer (shared by all layers)."""
        in_layers = {id(p) for p in self.layers.parameters()}
        return [p for p in self.parameters() if id(p) not in in_layers]


# --------------------------------------------------------------------------- #
# Utilities
# --------------------------------------------------------------------------- #
def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) real scalar parameters of a model; complex entries count twice.

    Returns
    -------
    int
    """
    total = 0
    for p in model.parameters():
        if trainable_only and not p.requires_grad:
            continue
        total += p.numel() * (2 if p.is_complex() else 1)
    return total


def freeze_layers(model: UnrolledModel, trainable: Sequence[int] | None) -> None:
    """Set ``requires_grad`` so that only the layers in ``trainable`` (and shared params) learn.

    ``None`` makes every parameter trainable again.
    """
    for t, layer in enumerate(model.layers):
        flag = trainable is None or t in trainable
        for p in layer.parameters():
            p.requires_grad_(flag)


# --------------------------------------------------------------------------- #
# Layer-wise growth as a plan of the general trainer
# --------------------------------------------------------------------------- #
class TrainHistory(History):
    """:class:`lib.learn.History` of :func:`~lib.learn.train_unrolled`, with its two per-step logs.

    ``loss[i]`` is the training loss (without the penalty) at step ``i``, measured on the fresh
    batch of that step; ``stage[i]`` names the stage (``"grow-3"``, ``"refine-3"``,
    ``"finetune"``), ``depth[i]`` the number of active layers and ``penalty[i]`` the penalty.
    """

    @property
    def penalty(self) -> list[float]:
        return self.logs.setdefault("penalty", [])

    @property
    def depth(self) -> list[int]:
        return [int(d) for d in self.logs.get("depth", [])]


def growth_plan(
    T: int,
    *,
    steps_per_layer: int = 0,
    refine_steps: int = 0,
    finetune_steps: int = 0,
    refine_factors: Sequence[float] = (1.0,),
    finetune_factors: Sequence[float] = (1.0,),
    patience: int | None = None,
) -> list[Stage]:
    """Layer-wise growth, then joint fine-tuning, of a ``T``-layer unrolled network.

    For ``t = 1, ..., T``: *grow* (``"grow-t"``: only layer ``t`` trains, the loss on the output
    of the ``t``-layer network, ``steps_per_layer`` steps at the base rate), then *refine*
    (layers ``1..t`` jointly, ``refine_steps`` steps at every factor of ``refine_factors``:
    ``"refine-t"``, or ``"refine-txF"`` with several factors); finally ``"finetune"`` (all ``T``
    layers, ``finetune_steps`` at every factor of ``finetune_factors``). Stages with zero steps
    are left out. Borgerding et al.'s schedule is ``refine_factors=(0.5, 0.1, 0.01)`` with a
    large step budget and ``patience=5000`` (early stopping on a validation set).

    Returns
    -------
    list of Stage
        The plan for :func:`lib.learn.fit` (``forward_kwargs={"n_layers": t}``).
    """
    T = check_positive_int(T, "T")
    for name, v in (
        ("steps_per_layer", steps_per_layer),
        ("refine_steps", refine_steps),
        ("finetune_steps", finetune_steps),
    ):
        check_positive_int(v, name, minimum=0)

    def names(base, factors):
        if len(factors) == 1:
            return [(base, float(factors[0]))]
        return [(f"{base}x{float(f):g}", float(f)) for f in factors]

    plan: list[Stage] = []
    if steps_per_layer > 0 or refine_steps > 0:
        for t in range(1, T + 1):
            fk = {"n_layers": t}
            if steps_per_layer > 0:
                plan.append(
                    Stage(
                        f"grow-{t}",
                        steps_per_layer,
                        trainable=[t - 1],
                        forward_kwargs=fk,
                        patience=patience,
                    )
                )
            if refine_steps > 0:
                for nm, f in names(f"refine-{t}", refine_factors):
                    plan.append(
                        Stage(
                            nm,
                            refine_steps,
                            lr_factor=f,
                            trainable=list(range(t)),
                            forward_kwargs=fk,
                            patience=patience,
                        )
                    )
    if finetune_steps > 0:
        for nm, f in names("finetune", finetune_factors):
            plan.append(
                Stage(
                    nm,
                    finetune_steps,
                    lr_factor=f,
                    forward_kwargs={"n_layers": T},
                    patience=patience,
                )
            )
    return plan


def plateau_plan(
    T: int,
    *,
    patience: int,
    final_patience: int,
    refine_factors: Sequence[float] = (0.5, 0.1, 0.01),
    final_factors: Sequence[float] = (0.1, 0.01),
    final: bool = True,
    max_steps: int = 10**6,
) -> list[Stage]:
    """The book's training protocol for unrolled networks: every stage to a validation plateau.

    For ``t = 1..T``: train layer ``t`` alone at the base rate (``"grow-t"``), then layers
    ``1..t`` jointly at each factor of ``refine_factors`` (``"refine-txF"``); every stage ends
    when ``patience`` steps pass without a validation improvement. Then (``final=True``) all
    ``T`` layers are fine-tuned at each factor of ``final_factors`` (``"finalxF"``), each until
    ``final_patience`` steps without improvement. This is Borgerding, Schniter & Rangan's
    schedule (base rate, then 0.5, 0.1, 0.01 of it, each stage to a plateau) with an explicit
    final fine-tuning; ``max_steps`` only caps a stage that never plateaus. Run it with
    :func:`lib.learn.fit` and a fixed validation set (``val_data``, ``val_every``, and
    ``min_delta`` to define the plateau). Chapter *Deep unfolding*, section 3.

    Returns
    -------
    list of Stage
    """
    T = check_positive_int(T, "T")
    patience = check_positive_int(patience, "patience")
    final_patience = check_positive_int(final_patience, "final_patience")
    plan = growth_plan(
        T,
        steps_per_layer=max_steps,
        refine_steps=max_steps,
        refine_factors=refine_factors,
        patience=patience,
    )
    if final:
        plan += lr_stages(
            max_steps,
            final_factors,
            patience=final_patience,
            name="final",
            forward_kwargs={"n_layers": T},
        )
    return plan


def train_unrolled(
    model: UnrolledModel,
    sampler: Callable,
    loss_fn: Callable,
    *,
    steps_per_layer: int = 0,
    refine_steps: int = 0,
    finetune_steps: int = 200,
    batch_size: int = 256,
    lr: float = 1e-3,
    refine_lr: float | None = None,
    finetune_lr: float | None = None,
    penalty: Callable | None = None,
    penalty_weight: float = 0.0,
    grad_clip: float | None = None,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    progress: bool = True,
    history: TrainHistory | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
) -> TrainHistory:
    """Train an unrolled model: layer-wise growth, then joint fine-tuning of all layers.

    Runs :func:`~lib.learn.growth_plan` with :func:`lib.learn.fit`. Growth (skipped when
    ``steps_per_layer == refine_steps == 0``): for ``t = 1, ..., T``,

    1. *grow*: train only layer ``t`` (earlier layers frozen) for ``steps_per_layer`` steps, the
       loss taken on the output of the ``t``-layer network;
    2. *refine*: train layers ``1..t`` jointly for ``refine_steps`` steps at ``refine_lr``.

    Then *finetune*: train all ``T`` layers jointly for ``finetune_steps`` steps at
    ``finetune_lr``. Every step draws a fresh batch ``sampler(batch_size, generator)`` (so
    there is no fixed training set to over-fit) and takes one Adam step (a fresh Adam per
    stage) on ``loss_fn(model(*inputs, n_layers=t), target) + penalty_weight * penalty(model,
    t)``. Shared (non-layer) parameters are trained in every stage.

    Why grow? A deep unrolled network initialised far from a good operating point has
    vanishing or exploding gradients through ``T`` nonlinear layers; growing it one layer at a
    time starts every stage from a network that already works (Borgerding, Schniter & Rangan).

    Parameters
    ----------
    model : UnrolledModel
        The network; it is moved to ``device`` and trained in place.
    sampler : callable
        ``sampler(batch_size, generator) -> (inputs, target)``; ``inputs`` a tensor or a tuple
        of tensors passed positionally to the model. The generator is a CPU
        ``torch.Generator`` seeded with ``seed``; the batch is moved to ``device``.
    loss_fn : callable
        ``loss_fn(outputs, target) -> scalar tensor``, ``outputs`` the stacked per-layer
        outputs of shape ``(t, ...)``; a ``model`` keyword, if it has one, receives the model.
    steps_per_layer, refine_steps, finetune_steps : int
        Steps of every grow and refine stage and of the final fine-tuning (``>= 0``).
    batch_size : int
    lr, refine_lr, finetune_lr : float
        Learning rates (positive, finite); ``refine_lr`` and ``finetune_lr`` default to ``lr``.
    penalty : callable, optional
        ``penalty(model, t) -> scalar tensor`` added with weight ``penalty_weight >= 0``.
    grad_clip : float, optional
        Maximum gradient norm (positive, finite).
    seed : int
        Seeds the data generator and torch's global generator (for any random init).
    device : str or torch.device
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    progress : bool
        Show a tqdm progress bar.
    history : TrainHistory, optional
        Append to an existing history (to continue a run).
    checkpoint, checkpoint_every, resume
        As in :func:`lib.learn.fit`: save the run every ``checkpoint_every`` steps and continue
        an interrupted run bit for bit with ``resume=True``.

    Returns
    -------
    TrainHistory
    """
    if not isinstance(model, UnrolledModel):
        raise TypeError(f"model must be an UnrolledModel, got {type(model).__name__}")
    if not callable(sampler):
        raise TypeError(
            "sampler must be callable: sampler(batch_size, generator) -> (inputs, target)"
        )
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable: loss_fn(outputs, target) -> scalar")
    if penalty is not None and not callable(penalty):
        raise TypeError("penalty must be callable: penalty(model, n_layers) -> scalar")
    check_positive_int(batch_size, "batch_size")
    lr = check_number(lr, "lr", lo=0, lo_open=True)
    pos = dict(lo=0, lo_open=True)
    refine_lr = lr if refine_lr is None else check_number(refine_lr, "refine_lr", **pos)
    finetune_lr = lr if finetune_lr is None else check_number(finetune_lr, "finetune_lr", **pos)
    if grad_clip is not None:
        check_number(grad_clip, "grad_clip", lo=0, lo_open=True)
    penalty_weight = check_number(penalty_weight, "penalty_weight", lo=0)
    if history is not None and not isinstance(history, TrainHistory):
        raise TypeError(f"history must be a TrainHistory, got {type(history).__name__}")

    plan = growth_plan(
        model.num_layers,
        steps_per_layer=steps_per_layer,
        refine_steps=refine_steps,
        finetune_steps=finetune_steps,
    )
    kind_lr = {"grow": lr, "refine": refine_lr, "finetune": finetune_lr}
    plan = [dataclasses.replace(s, lr=kind_lr[s.name.split("-")[0]]) for s in plan]
    use_pen = penalty is not None and penalty_weight > 0
    takes_model = _takes_model(loss_fn)

    def step(model, batch, state: TrainState):
        inputs, target = batch
        depth = state.stage.forward_kwargs["n_layers"]
        kw = {"n_layers": depth}
        out = model(*inputs, **kw) if isinstance(inputs, tuple) else model(inputs, **kw)
        loss = loss_fn(out, target, model=model) if takes_model else loss_fn(out, target)
        pen = penalty(model, depth) if use_pen else None
        total = loss if pen is None else loss + penalty_weight * pen
        return total, {"loss": loss, "penalty": 0.0 if pen is None else pen, "depth": depth}

    hist = TrainHistory() if history is None else history
    return fit(
        model,
        None,
        sampler,
        plan=plan,
        lr=lr,
        batch_size=batch_size,
        step_fn=step,
        grad_clip=grad_clip,
        seed=seed,
        device=device,
        progress=progress,
        history=hist,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=resume,
    )
