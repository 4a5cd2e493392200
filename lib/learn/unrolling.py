"""A small, generic toolkit for deep unfolding (algorithm unrolling).

Deep unfolding takes ``T`` iterations of a known iterative algorithm, makes a bounded set of
its parameters trainable *per iteration*, and trains the resulting ``T``-layer network end to
end on a task loss (Gregor & LeCun 2010; Pellaco et al., "Deep unfolding of the weighted MMSE
beamforming algorithm", section I-B). This module holds the parts that do not depend on the
algorithm being unrolled:

* :class:`UnrolledModel` -- a base class whose layers are ``torch.nn.Module`` objects and
  whose forward pass keeps every layer's output (for per-layer losses and NMSE-vs-layer plots);
* :func:`train_unrolled` -- a trainer with **layer-wise growth then joint fine-tuning**, Adam,
  fresh samples at every step from a data sampler, an optional penalty (e.g. a contraction
  penalty), seeded, on CPU or GPU, with a tqdm progress bar that can be switched off;
* :func:`count_parameters`, :func:`freeze_layers`.

The trainer is deliberately generic: it takes a model, a sampler
``sampler(batch_size, generator) -> (inputs, target)`` and a loss
``loss_fn(outputs, target) -> scalar``. ``inputs`` is a tensor or a tuple of tensors passed
positionally to the model; ``target`` may be ``None`` for unsupervised losses (as in the
unfolded WMMSE, where the loss is the negative sum rate computed from ``inputs``; there the
sampler can return the channel as target too).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from lib.core.checks import check_positive_int
from lib.core.runtime import get_device

__all__ = [
    "UnrolledModel",
    "TrainHistory",
    "train_unrolled",
    "count_parameters",
    "freeze_layers",
    "to_device",
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
    """Number of (trainable) scalar parameters of a model; complex entries count twice."""
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


def to_device(obj, device: torch.device):
    """Move a tensor, or a (nested) tuple/list/dict of tensors, to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(to_device(o, device) for o in obj)
    if isinstance(obj, list):
        return [to_device(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------- #
# The trainer
# --------------------------------------------------------------------------- #
@dataclass
class TrainHistory:
    """Loss trace of :func:`train_unrolled`.

    ``loss[i]`` is the training loss (without the penalty) at step ``i``, measured on the fresh
    batch of that step; ``stage[i]`` names the stage (``"grow-3"``, ``"refine-3"``, ``"finetune"``)
    and ``depth[i]`` the number of active layers.
    """

    loss: list[float] = field(default_factory=list)
    penalty: list[float] = field(default_factory=list)
    stage: list[str] = field(default_factory=list)
    depth: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.loss)

    def boundaries(self) -> list[tuple[int, str]]:
        """``(step, stage)`` at which each stage starts (for marking a loss-curve plot)."""
        out, prev = [], None
        for i, s in enumerate(self.stage):
            if s != prev:
                out.append((i, s))
                prev = s
        return out


def _call(model, inputs, n_layers):
    if isinstance(inputs, tuple):
        return model(*inputs, n_layers=n_layers)
    return model(inputs, n_layers=n_layers)


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
) -> TrainHistory:
    """Train an unrolled model: layer-wise growth, then joint fine-tuning of all layers.

    Growth (skipped when ``steps_per_layer == refine_steps == 0``): for ``t = 1, ..., T``,

    1. *grow*: train only layer ``t`` (earlier layers frozen) for ``steps_per_layer`` steps, the
       loss taken on the output of the ``t``-layer network;
    2. *refine*: train layers ``1..t`` jointly for ``refine_steps`` steps at ``refine_lr``.

    Then *finetune*: train all ``T`` layers jointly for ``finetune_steps`` steps at
    ``finetune_lr``. Every step draws a fresh batch ``sampler(batch_size, generator)`` (so
    there is no fixed training set to over-fit) and takes one Adam step on
    ``loss_fn(model(*inputs, n_layers=t), target) + penalty_weight * penalty(model, t)``.
    Shared (non-layer) parameters are trained in every stage.

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
        outputs of shape ``(t, ...)``.
    penalty : callable, optional
        ``penalty(model, t) -> scalar tensor`` added with weight ``penalty_weight``.
    seed : int
        Seeds the data generator and torch's global generator (for any random init).
    device : str or torch.device
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    progress : bool
        Show a tqdm progress bar.
    history : TrainHistory, optional
        Append to an existing history (to continue a run).

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
    for name, v in (
        ("steps_per_layer", steps_per_layer),
        ("refine_steps", refine_steps),
        ("finetune_steps", finetune_steps),
    ):
        check_positive_int(v, name, minimum=0)
    check_positive_int(batch_size, "batch_size")
    for name, v in (("lr", lr), ("refine_lr", refine_lr), ("finetune_lr", finetune_lr)):
        if v is not None and not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a positive number, got {v!r}")
    if penalty_weight < 0:
        raise ValueError(f"penalty_weight must be >= 0, got {penalty_weight}")
    refine_lr = lr if refine_lr is None else refine_lr
    finetune_lr = lr if finetune_lr is None else finetune_lr

    dev = get_device(device)
    model.to(dev)
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    hist = TrainHistory() if history is None else history
    T = model.num_layers

    stages: list[tuple[str, int, Sequence[int] | None, int, float]] = []
    if steps_per_layer > 0 or refine_steps > 0:
        for t in range(1, T + 1):
            if steps_per_layer > 0:
                stages.append((f"grow-{t}", t, [t - 1], steps_per_layer, lr))
            if refine_steps > 0:
                stages.append((f"refine-{t}", t, list(range(t)), refine_steps, refine_lr))
    if finetune_steps > 0:
        stages.append(("finetune", T, None, finetune_steps, finetune_lr))
    total = sum(s[3] for s in stages)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="training", leave=False)
    was_training = model.training
    model.train()
    saved_flags = [p.requires_grad for p in model.parameters()]
    try:
        originally = {id(p) for p, f in zip(model.parameters(), saved_flags) if f}
        for name, depth, trainable, steps, stage_lr in stages:
            freeze_layers(model, trainable)
            for p in model.parameters():  # never train what the caller froze
                if id(p) not in originally:
                    p.requires_grad_(False)
            params = [p for p in model.parameters() if p.requires_grad]
            if not params:
                # nothing to train in this stage (e.g. a layer without parameters)
                if bar is not None:
                    bar.update(steps)
                continue
            opt = torch.optim.Adam(params, lr=stage_lr)
            for _ in range(steps):
                inputs, target = to_device(sampler(batch_size, gen), dev)
                out = _call(model, inputs, depth)
                loss = loss_fn(out, target)
                pen = (
                    penalty(model, depth) if (penalty is not None and penalty_weight > 0) else None
                )
                total_loss = loss if pen is None else loss + penalty_weight * pen
                if not torch.isfinite(total_loss):
                    raise FloatingPointError(
                        f"training loss became {float(total_loss.detach())} in stage {name!r}; "
                        "lower the learning rate or check the sampler"
                    )
                opt.zero_grad(set_to_none=True)
                total_loss.backward()
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                opt.step()
                hist.loss.append(float(loss.detach()))
                hist.penalty.append(0.0 if pen is None else float(pen.detach()))
                hist.stage.append(name)
                hist.depth.append(depth)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(stage=name, loss=f"{hist.loss[-1]:.3g}", refresh=False)
    finally:
        for p, f in zip(model.parameters(), saved_flags):
            p.requires_grad_(f)
        model.train(was_training)
        if bar is not None:
            bar.close()
    return hist
