"""Training plans and their record: :class:`~lib.learn.Stage`, :func:`~lib.learn.lr_stages` and
:class:`~lib.learn.History`.

A plan is a list of :class:`~lib.learn.Stage` objects (which parameters train, how the model is
called,
the learning rate, the maximum number of steps, the early-stopping patience, an optional seed)
that :func:`lib.learn.fit` executes; a :class:`~lib.learn.History` is what a run records per step
and per
validation. Layer-wise growth (:func:`lib.learn.growth_plan`), Borgerding et al.'s and ALISTA's
learning-rate schedules (:func:`~lib.learn.lr_stages`) are plans. Chapter *Unrolling ISTA*.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from lib.core.checks import check_number, check_positive_int

__all__ = ["Stage", "lr_stages", "History", "to_device", "call_model"]


# --------------------------------------------------------------------------- #
# Small helpers
# --------------------------------------------------------------------------- #
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


def call_model(model: nn.Module, inputs, **kwargs):
    """``model(*inputs, **kwargs)`` when ``inputs`` is a tuple, else ``model(inputs, **kwargs)``."""
    if isinstance(inputs, tuple):
        return model(*inputs, **kwargs)
    return model(inputs, **kwargs)


def _takes_model(loss: Callable) -> bool:
    try:
        params = inspect.signature(loss).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
    p = params.get("model")
    return p is not None and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)


# --------------------------------------------------------------------------- #
# Plans
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Stage:
    """One stage of a training plan.

    Parameters
    ----------
    name : str
        Recorded in the history (``"grow-3"``, ``"finetune"``, ...).
    steps : int
        Maximum number of optimiser steps (``>= 0``).
    lr : float, optional
        Absolute learning rate; when ``None`` the rate is ``fit(lr=...) * lr_factor``.
    lr_factor : float
        Factor of the run's base learning rate (ignored when ``lr`` is given).
    trainable : sequence of int, callable or None
        Which parameters train: ``None`` all of them; layer indices of an
        :class:`~lib.learn.UnrolledModel` (its shared, non-layer parameters train too); or
        ``trainable(model) -> iterable of parameters``. Parameters the caller froze
        (``requires_grad=False``) stay frozen.
    forward_kwargs : mapping
        Keyword arguments of the model call in the default step and the validation
        (e.g. ``{"n_layers": 3}``).
    patience : int, optional
        Early stopping: end the stage when this many steps passed without a validation
        improvement (overrides ``fit(patience=...)``; needs validation data).
    seed : int, optional
        Re-seed the data generator and torch's global generator at the start of the stage.
    """

    name: str = "train"
    steps: int = 0
    lr: float | None = None
    lr_factor: float = 1.0
    trainable: Sequence[int] | Callable | None = None
    forward_kwargs: Mapping[str, Any] = field(default_factory=dict)
    patience: int | None = None
    seed: int | None = None

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise TypeError(f"Stage.name must be a str, got {type(self.name).__name__}")
        check_positive_int(self.steps, "Stage.steps", minimum=0)
        if self.lr is not None:
            check_number(self.lr, "Stage.lr", lo=0, lo_open=True)
        check_number(self.lr_factor, "Stage.lr_factor", lo=0, lo_open=True)
        if self.patience is not None:
            check_positive_int(self.patience, "Stage.patience")
        if self.seed is not None:
            check_positive_int(self.seed, "Stage.seed", minimum=0)
        if not isinstance(self.forward_kwargs, Mapping):
            raise TypeError("Stage.forward_kwargs must be a mapping")
        t = self.trainable
        if t is not None and not callable(t):
            if isinstance(t, (str, bytes)) or not isinstance(t, Sequence):
                raise TypeError("Stage.trainable must be None, layer indices or a callable")
            for i in t:
                check_positive_int(i, "Stage.trainable[i]", minimum=0)


def lr_stages(
    steps: int,
    factors: Sequence[float] = (1.0, 0.5, 0.1, 0.01),
    *,
    patience: int | None = None,
    name: str = "lr",
    trainable=None,
    forward_kwargs: Mapping[str, Any] | None = None,
) -> list[Stage]:
    """A learning-rate plan: one stage per factor of the base rate, each of at most ``steps``.

    ``lr_stages(10**6, (1, 0.5, 0.1, 0.01), patience=5000)`` is Borgerding et al.'s schedule
    (each stage until 5,000 steps pass without validation improvement);
    ``lr_stages(10**6, (1, 0.2, 0.02), patience=...)`` is ALISTA's. Stage names are
    ``f"{name}x{factor:g}"``.
    """
    steps = check_positive_int(steps, "steps", minimum=0)
    if len(factors) == 0:
        raise ValueError("factors must contain at least one learning-rate factor")
    fk = dict(forward_kwargs or {})
    return [
        Stage(
            f"{name}x{float(f):g}",
            steps,
            lr_factor=check_number(f, "factors[i]", lo=0, lo_open=True),
            patience=patience,
            trainable=trainable,
            forward_kwargs=fk,
        )
        for f in factors
    ]


# --------------------------------------------------------------------------- #
# History and state
# --------------------------------------------------------------------------- #
@dataclass
class History:
    """Everything a run recorded, per step and per validation.

    Per step ``i``: ``loss[i]`` (training loss on that step's batch, without penalties a
    ``step_fn`` logs separately), ``stage[i]``, ``lr[i]``, ``time[i]`` (seconds since the run
    started, accumulated over resumed runs), ``grad_norm[i]`` (before clipping; NaN when no
    clipping computed it) and ``logs[key][i]`` for every extra value a ``step_fn`` returned.
    Per validation ``j``: ``val_step[j]`` (the number of steps taken before it),
    ``val_metric[j]``, ``val_stage[j]``.
    """

    loss: list[float] = field(default_factory=list)
    stage: list[str] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    logs: dict[str, list[float]] = field(default_factory=dict)
    val_step: list[int] = field(default_factory=list)
    val_metric: list[float] = field(default_factory=list)
    val_stage: list[str] = field(default_factory=list)

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

    def best(self) -> tuple[int, float] | None:
        """``(step, metric)`` of the lowest validation metric, ``None`` without validation."""
        if not self.val_metric:
            return None
        j = int(np.argmin(self.val_metric))
        return self.val_step[j], self.val_metric[j]

    def to_dict(self) -> dict:
        """Plain lists and dicts (what a checkpoint stores)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(History)}

    def load_dict(self, d: Mapping) -> None:
        """Replace the contents by those of ``to_dict`` output ``d`` (in place)."""
        for f in fields(History):
            setattr(self, f.name, copy.deepcopy(d[f.name]))
