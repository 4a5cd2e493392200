"""One training loop for every learned model of the book: :func:`~lib.learn.fit` and its plans.

A training run is a **plan**, a list of :class:`~lib.learn.Stage` objects
(:mod:`lib.learn.plan`), each saying which parameters
train, how the model is called (e.g. the number of active layers of an unrolled network), the
learning rate (absolute, or a factor of the run's base rate), the maximum number of steps and
the early-stopping patience. :func:`~lib.learn.fit` executes a plan with fresh samples at every
step (or
minibatches of a fixed data set), Adam or any ``torch.optim`` optimiser (a fresh one per stage),
validation every ``val_every`` steps with early stopping and restoring of the best weights,
decay of the learning rate on a validation plateau, gradient clipping (a fixed norm, or adaptive
at a quantile of the recent gradient norms), checkpoints that a resumed run continues from bit
for bit, a ``tqdm`` progress bar and a :class:`~lib.learn.History` of everything.

The reference training recipes are plans:

* layer-wise growth then joint fine-tuning of an unrolled network (Borgerding, Schniter &
  Rangan 2017; chapter *Unrolling ISTA*): :func:`~lib.learn.growth_plan`, used by
  :func:`lib.learn.train_unrolled`;
* "lr x (1, 0.5, 0.1, 0.01), each stage until ``patience`` steps pass without validation
  improvement" (Borgerding et al.) or "lr x (1, 0.2, 0.02) with early stopping" (ALISTA,
  Liu et al. 2019): :func:`lib.learn.lr_stages`;
* progressive extension of the unfolded WMMSE (Pellaco et al., Sec. VI-B): a loop of single-stage
  fits on a growing model (:func:`lib.learn.train_progressive`).

Anything else goes through two hooks rather than a new loop: ``step_fn(model, batch, state) ->
loss`` replaces the default "forward, then ``loss(outputs, target)``" (teacher-student
distillation, MLDG/MAML inner steps, a Lagrangian), and :class:`~lib.learn.Callback` objects run at
stage
start and end, after every step and after every validation (a dual-variable update, logging, a
custom stopping rule); callbacks and a ``step_fn`` with ``state_dict``/``load_state_dict``
methods are checkpointed with the run.

Losses get their configuration from the model: a ``loss`` with a keyword parameter ``model``
is called as ``loss(outputs, target, model=model)`` (e.g. :func:`lib.learn.wsr_loss` reads the
user priorities of the model it trains).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lib.core.checks import check_number, check_positive_int
from lib.core.runtime import get_device
from lib.learn.plan import History, Stage, _takes_model, call_model, to_device
from lib.learn.storage import load_file

__all__ = ["TrainState", "Callback", "DatasetSampler", "fit"]

_CKPT_FORMAT = "lib.learn.fit/1"


@dataclass
class TrainState:
    """What :func:`~lib.learn.fit` exposes to a ``step_fn`` and to callbacks (mutable).

    ``step`` counts optimiser steps of the whole run, ``stage_step`` those of the current stage;
    ``best_metric`` / ``best_step`` refer to the current stage. Setting ``stop = True`` in a
    callback ends the current stage after the step or validation in progress.
    """

    model: nn.Module
    history: History
    device: torch.device
    generator: torch.Generator
    plan: list[Stage]
    stage: Stage | None = None
    stage_index: int = 0
    stage_step: int = 0
    step: int = 0
    lr: float = 0.0
    optimiser: torch.optim.Optimizer | None = None
    params: list = field(default_factory=list)
    best_metric: float = math.inf
    best_step: int = -1
    stop: bool = False


class Callback:
    """Hooks of :func:`~lib.learn.fit`; override what you need. ``state`` is the
    :class:`~lib.learn.TrainState`.

    A callback that carries state across steps (e.g. Lagrange multipliers) also defines
    ``state_dict()`` and ``load_state_dict(d)`` so that checkpoints include it.
    """

    def on_stage_start(self, state: TrainState) -> None:
        """Called after the stage's optimiser is built, before its first step."""

    def on_step_end(self, state: TrainState, loss: float) -> None:
        """Called after every optimiser step with the recorded training loss."""

    def on_validation(self, state: TrainState, metric: float) -> None:
        """Called after every validation with its metric (lower is better)."""

    def on_stage_end(self, state: TrainState) -> None:
        """Called when a stage ends (after restoring its best weights)."""


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #
class DatasetSampler:
    """Minibatches of a fixed data set in shuffled epochs, as a sampler of :func:`~lib.learn.fit`.

    ``dataset = (inputs, target)`` with ``inputs`` a tensor or a tuple of tensors and ``target``
    a tensor or ``None``; every tensor has the ``n`` samples along dimension 0.
    ``sampler(batch_size, generator)`` returns the next ``batch_size`` samples of a permutation
    drawn from ``generator`` (a new permutation when an epoch is used up; a batch never spans
    two epochs, the remainder of an epoch is dropped). Its position is part of a checkpoint.
    """

    def __init__(self, dataset):
        if not (isinstance(dataset, (tuple, list)) and len(dataset) == 2):
            raise TypeError("dataset must be a pair (inputs, target)")
        inputs, target = dataset
        tensors = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
        if target is not None:
            tensors.append(target)
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"dataset tensor {i} must be a torch.Tensor")
        n = tensors[0].shape[0] if tensors[0].dim() > 0 else 0
        if n == 0 or any(t.dim() == 0 or t.shape[0] != n for t in tensors):
            raise ValueError("every tensor of dataset must have the same, non-zero first dimension")
        self.inputs, self.target, self.n = inputs, target, n
        self._perm: torch.Tensor | None = None
        self._pos = 0

    def __call__(self, batch_size: int, generator: torch.Generator):
        if batch_size > self.n:
            raise ValueError(f"batch_size must be <= the data set size {self.n}, got {batch_size}")
        if self._perm is None or self._pos + batch_size > self.n:
            self._perm = torch.randperm(self.n, generator=generator)
            self._pos = 0
        idx = self._perm[self._pos : self._pos + batch_size]
        self._pos += batch_size

        def take(t):
            return t[idx.to(t.device)]

        inputs = (
            tuple(take(t) for t in self.inputs)
            if isinstance(self.inputs, (tuple, list))
            else take(self.inputs)
        )
        return inputs, (None if self.target is None else take(self.target))

    def state_dict(self) -> dict:
        return {"perm": self._perm, "pos": self._pos}

    def load_state_dict(self, d: Mapping) -> None:
        self._perm, self._pos = d["perm"], int(d["pos"])


# --------------------------------------------------------------------------- #
# The loop
# --------------------------------------------------------------------------- #
def _select_params(model: nn.Module, stage: Stage, originally: set[int]) -> list:
    """Set ``requires_grad`` for ``stage`` and return the parameters that train."""
    t = stage.trainable
    if t is None:
        for p in model.parameters():
            p.requires_grad_(id(p) in originally)
    elif callable(t):
        chosen = {id(p) for p in t(model)}
        for p in model.parameters():
            p.requires_grad_(id(p) in chosen and id(p) in originally)
    else:
        layers = getattr(model, "layers", None)
        if not isinstance(layers, nn.ModuleList):
            raise TypeError(
                f"stage {stage.name!r}: layer indices need a model with .layers (an UnrolledModel)"
            )
        for i in t:
            if i >= len(layers):
                raise ValueError(
                    f"stage {stage.name!r}: layer index {i} out of range for {len(layers)} layers"
                )
        wanted = set(t)
        in_layer = set()
        for i, layer in enumerate(layers):
            for p in layer.parameters():
                in_layer.add(id(p))
                p.requires_grad_(i in wanted)
        for p in model.parameters():  # shared parameters train in every stage
            if id(p) not in in_layer:
                p.requires_grad_(True)
        for p in model.parameters():
            if id(p) not in originally:
                p.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def _snapshot(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _stateful(obj) -> bool:
    return hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")


def fit(
    model: nn.Module,
    loss: Callable | None,
    data,
    *,
    plan: Sequence[Stage] | None = None,
    steps: int = 1000,
    lr: float = 1e-3,
    optimiser: Callable = torch.optim.Adam,
    batch_size: int = 256,
    step_fn: Callable | None = None,
    val_data=None,
    val_fn: Callable | None = None,
    val_every: int = 100,
    patience: int | None = None,
    min_delta: float = 0.0,
    restore_best: bool = True,
    lr_decay: float | None = None,
    lr_patience: int | None = None,
    min_lr: float = 0.0,
    grad_clip: float | None = None,
    clip_quantile: float | None = None,
    clip_window: int = 100,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    progress: bool = True,
    history: History | None = None,
    callbacks: Iterable[Callback] = (),
    desc: str = "training",
) -> History:
    """Train ``model`` in place by executing a plan of :class:`~lib.learn.Stage` objects.

    Every step draws a batch ``data(batch_size, generator)`` (a CPU ``torch.Generator``
    seeded with ``seed``; moved to ``device``), computes the objective
    ``step_fn(model, batch, state)`` -- by default
    ``loss(model(*inputs, **stage.forward_kwargs), target)`` for ``batch = (inputs, target)``
    -- and takes one optimiser step on the stage's trainable parameters. A non-finite objective
    raises ``FloatingPointError`` naming the stage.

    Parameters
    ----------
    model : nn.Module
        Moved to ``device`` and trained in place; ``requires_grad`` flags are restored at the end.
    loss : callable or None
        ``loss(outputs, target)`` (or ``loss(outputs, target, model=model)`` when it has a
        ``model`` keyword); may be ``None`` with a ``step_fn``.
    data : callable or (inputs, target)
        A sampler ``data(batch_size, generator) -> (inputs, target)`` (``inputs`` a tensor or a
        tuple passed positionally), or a fixed data set, wrapped in
        :class:`~lib.learn.DatasetSampler`.
    plan : sequence of Stage, optional
        Default: one stage ``Stage("train", steps)`` training everything at ``lr``.
    steps, lr : int, float
        Steps of the default plan; base learning rate of every stage without its own ``lr``.
    optimiser : callable
        ``optimiser(params, lr=lr) -> torch.optim.Optimizer``, built afresh at every stage.
    batch_size : int
    step_fn : callable, optional
        ``step_fn(model, batch, state) -> objective`` or ``-> (objective, logs)`` with ``logs``
        a dict of scalars recorded in ``History.logs`` (``logs["loss"]``, when present, is what
        ``History.loss`` records instead of the objective).
    val_data : (inputs, target), optional
        A fixed validation batch, evaluated every ``val_every`` steps and at the start of every
        stage; ``val_fn(model, batch, state) -> float`` (default: the loss, without gradients,
        in ``eval()`` mode) is the metric, lower is better.
    patience : int, optional
        End a stage after ``patience`` steps without validation improvement (a stage's own
        ``patience`` overrides it).
    min_delta : float
        A validation counts as an improvement for the patience and the learning-rate decay only
        when it beats the last such improvement by more than ``min_delta`` (``>= 0``; in the
        metric's units, e.g. 0.01 for a metric in dB); the best weights are kept either way.
    restore_best : bool
        At the end of each validated stage, load the weights with the best validation metric.
    lr_decay, lr_patience, min_lr
        Multiply the learning rate by ``lr_decay`` in ``(0, 1)`` after ``lr_patience`` steps
        without validation improvement (not below ``min_lr``).
    grad_clip : float, optional
        Clip the gradient norm at ``grad_clip`` (``torch.nn.utils.clip_grad_norm_``).
    clip_quantile, clip_window
        Adaptive clipping: clip at the ``clip_quantile`` quantile of the last ``clip_window``
        gradient norms (``grad_clip``, if given too, caps the threshold).
    checkpoint, checkpoint_every, resume
        Save the whole run state (model, optimiser, generators, history, stage position,
        early-stopping state, stateful callbacks and sampler) to ``checkpoint`` every
        ``checkpoint_every`` steps and at the end of every stage; with ``resume=True`` an
        existing checkpoint is loaded first, and the run continues as if never interrupted
        (bit for bit on the same machine and device).
    seed : int
        Seeds the data generator and torch's global generator (random initialisations).
    device : str or torch.device
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    progress : bool
        Show a ``tqdm`` progress bar.
    history : History, optional
        Append to an existing history (to continue a run without a checkpoint).
    callbacks : iterable of Callback

    Returns
    -------
    History
    """
    # ---- validation of the arguments (once) ---------------------------------------------
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if step_fn is None and not callable(loss):
        raise TypeError("loss must be callable: loss(outputs, target) -> scalar tensor")
    if step_fn is not None and not callable(step_fn):
        raise TypeError("step_fn must be callable: step_fn(model, batch, state) -> loss")
    if not callable(data):
        data = DatasetSampler(data)
    plan = [Stage("train", check_positive_int(steps, "steps", minimum=0))] if plan is None else plan
    plan = list(plan)
    for i, s in enumerate(plan):
        if not isinstance(s, Stage):
            raise TypeError(f"plan[{i}] must be a Stage, got {type(s).__name__}")
    lr = check_number(lr, "lr", lo=0, lo_open=True)
    if not callable(optimiser):
        raise TypeError("optimiser must be callable: optimiser(params, lr=lr)")
    batch_size = check_positive_int(batch_size, "batch_size")
    val_every = check_positive_int(val_every, "val_every")
    if patience is not None:
        patience = check_positive_int(patience, "patience")
    if lr_decay is not None:
        check_number(lr_decay, "lr_decay", lo=0, hi=1, lo_open=True, hi_open=True)
        if lr_patience is None:
            raise ValueError("lr_decay needs lr_patience (steps without validation improvement)")
    if lr_patience is not None:
        lr_patience = check_positive_int(lr_patience, "lr_patience")
    min_lr = check_number(min_lr, "min_lr", lo=0)
    min_delta = check_number(min_delta, "min_delta", lo=0)
    if grad_clip is not None:
        grad_clip = check_number(grad_clip, "grad_clip", lo=0, lo_open=True)
    if clip_quantile is not None:
        clip_quantile = check_number(clip_quantile, "clip_quantile", lo=0, hi=1, lo_open=True)
    clip_window = check_positive_int(clip_window, "clip_window")
    if checkpoint_every is not None:
        checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
        if checkpoint is None:
            raise ValueError("checkpoint_every needs a checkpoint path")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    seed = check_positive_int(seed, "seed", minimum=0)
    needs_val = patience is not None or lr_decay is not None or any(s.patience for s in plan)
    if needs_val and val_data is None:
        raise ValueError("early stopping (patience) and lr_decay need val_data")
    if val_fn is not None and not callable(val_fn):
        raise TypeError("val_fn must be callable: val_fn(model, batch, state) -> float")
    if val_data is not None and val_fn is None and not callable(loss):
        raise TypeError("validation without a loss needs val_fn(model, batch, state) -> float")
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history must be a History, got {type(history).__name__}")
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks[{i}] must be a Callback, got {type(cb).__name__}")

    # ---- set-up ------------------------------------------------------------------------
    dev = get_device(device)
    model.to(dev)
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    hist = History() if history is None else history
    state = TrainState(model=model, history=hist, device=dev, generator=gen, plan=plan)
    loss_kw = {"model": model} if (loss is not None and _takes_model(loss)) else {}
    if val_data is not None:
        val_data = to_device(val_data, dev)

    def default_step(model, batch, st):
        inputs, target = batch
        return loss(call_model(model, inputs, **st.stage.forward_kwargs), target, **loss_kw)

    def default_val(model, batch, st):
        inputs, target = batch
        with torch.no_grad():
            return float(
                loss(call_model(model, inputs, **st.stage.forward_kwargs), target, **loss_kw)
            )

    step = default_step if step_fn is None else step_fn
    validate = default_val if val_fn is None else val_fn
    stateful = [("data", data), ("step_fn", step_fn)] + [
        (f"callback{i}", cb) for i, cb in enumerate(callbacks)
    ]

    # resumable run state beyond the model and the optimiser
    run = {
        "stage_index": 0,
        "stage_step": 0,
        "step": 0,
        "elapsed": 0.0,
        "best_metric": math.inf,
        "ref_metric": math.inf,
        "best_step": -1,
        "since_best": 0,
        "since_decay": 0,
        "best_model": None,
        "lr": None,
        "norms": [],
        "validated": False,
    }
    if hist.time:  # continuing a history: wall time goes on from where it stopped
        run["elapsed"] = hist.time[-1]
    opt_state = None
    ckpt_path = None if checkpoint is None else Path(checkpoint)
    plan_sig = [(s.name, s.steps) for s in plan]
    if resume and ckpt_path.exists():
        ck = load_file(ckpt_path, "a training checkpoint of lib.learn.fit")
        if not isinstance(ck, dict) or ck.get("format") != _CKPT_FORMAT:
            raise ValueError(f"{ckpt_path} is not a checkpoint of lib.learn.fit")
        if [tuple(x) for x in ck["plan"]] != plan_sig:
            raise ValueError(
                f"{ckpt_path} was written by a run with another plan {ck['plan']}, not {plan_sig}"
            )
        try:
            model.load_state_dict(ck["model"], strict=True)
        except RuntimeError as e:
            raise ValueError(f"{ckpt_path}: the stored model does not fit: {e}") from None
        gen.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
        if dev.type == "cuda" and ck.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ck["cuda_rng"], dev)
        hist.load_dict(ck["history"])
        run.update(ck["run"])
        opt_state = ck["optimiser"]
        for key, obj in stateful:
            if obj is not None and _stateful(obj) and key in ck["stateful"]:
                obj.load_state_dict(ck["stateful"][key])

    def save_checkpoint():
        ck = {
            "format": _CKPT_FORMAT,
            "plan": plan_sig,
            "model": model.state_dict(),
            "optimiser": None if state.optimiser is None else state.optimiser.state_dict(),
            "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
            "history": hist.to_dict(),
            "run": {**run, "elapsed": run["elapsed"] + time.perf_counter() - t_start},
            "stateful": {k: o.state_dict() for k, o in stateful if o is not None and _stateful(o)},
        }
        tmp = ckpt_path.with_name(ckpt_path.name + ".tmp")
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ck, tmp)
        os.replace(tmp, ckpt_path)

    total = sum(s.steps for s in plan)
    done = sum(s.steps for s in plan[: run["stage_index"]]) + run["stage_step"]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=done, desc=desc, leave=False)
    was_training = model.training
    model.train()
    saved_flags = [p.requires_grad for p in model.parameters()]
    originally = {id(p) for p, f in zip(model.parameters(), saved_flags) if f}
    t_start = time.perf_counter()

    def do_validation(st_patience):
        """Validate, update the best state, decay the lr; returns True to stop the stage."""
        model.eval()
        try:
            metric = float(validate(model, val_data, state))
        finally:
            model.train()
        hist.val_step.append(run["step"])
        hist.val_metric.append(metric)
        hist.val_stage.append(state.stage.name)
        if metric < run["ref_metric"] - min_delta:
            run["ref_metric"] = metric
            run["since_best"] = run["since_decay"] = 0
        if metric < run["best_metric"]:
            run["best_metric"], run["best_step"] = metric, run["step"]
            if restore_best:
                run["best_model"] = _snapshot(model)
        state.best_metric, state.best_step = run["best_metric"], run["best_step"]
        for cb in callbacks:
            cb.on_validation(state, metric)
        if lr_decay is not None and run["since_decay"] >= lr_patience:
            run["lr"] = max(run["lr"] * lr_decay, min_lr)
            for g in state.optimiser.param_groups:
                g["lr"] = run["lr"]
            state.lr = run["lr"]
            run["since_decay"] = 0
        return st_patience is not None and run["since_best"] >= st_patience

    try:
        while run["stage_index"] < len(plan):
            stage = plan[run["stage_index"]]
            state.stage, state.stage_index = stage, run["stage_index"]
            fresh = run["stage_step"] == 0 and opt_state is None
            if fresh and stage.seed is not None:
                torch.manual_seed(stage.seed)
                gen.manual_seed(stage.seed)
            params = _select_params(model, stage, originally)
            state.params = params
            st_patience = stage.patience if stage.patience is not None else patience
            if not params or stage.steps == 0:  # nothing to train in this stage
                if bar is not None:
                    bar.update(stage.steps - run["stage_step"])
                run.update(stage_index=run["stage_index"] + 1, stage_step=0)
                continue
            if fresh:
                run["lr"] = stage.lr if stage.lr is not None else lr * stage.lr_factor
                run.update(
                    best_metric=math.inf,
                    ref_metric=math.inf,
                    best_step=-1,
                    since_best=0,
                    since_decay=0,
                    best_model=None,
                    validated=False,
                )
            opt = optimiser(params, lr=run["lr"])
            if opt_state is not None:
                opt.load_state_dict(opt_state)
                opt_state = None
            state.optimiser, state.lr = opt, run["lr"]
            state.best_metric, state.best_step = run["best_metric"], run["best_step"]
            state.stop = False
            if fresh:
                for cb in callbacks:
                    cb.on_stage_start(state)
            if val_data is not None and not run["validated"]:
                run["validated"] = True
                state.stage_step, state.step = run["stage_step"], run["step"]
                if do_validation(st_patience):
                    state.stop = True
            while run["stage_step"] < stage.steps and not state.stop:
                state.stage_step, state.step = run["stage_step"], run["step"]
                batch = to_device(data(batch_size, gen), dev)
                out = step(model, batch, state)
                logs = None
                if isinstance(out, tuple):
                    out, logs = out
                if not torch.isfinite(out):
                    raise FloatingPointError(
                        f"training loss became {float(out.detach())} in stage {stage.name!r}; "
                        "lower the learning rate or check the sampler"
                    )
                opt.zero_grad(set_to_none=True)
                out.backward()
                gnorm = math.nan
                if clip_quantile is not None:
                    with_grad = [p for p in params if p.grad is not None]
                    norm = torch.nn.utils.get_total_norm([p.grad for p in with_grad])
                    gnorm = float(norm)
                    norms = run["norms"]
                    if norms:
                        thr = float(np.quantile(norms, clip_quantile))
                        if grad_clip is not None:
                            thr = min(thr, grad_clip)
                        torch.nn.utils.clip_grads_with_norm_(with_grad, thr, norm)
                    norms.append(gnorm)
                    del norms[:-clip_window]
                elif grad_clip is not None:
                    gnorm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
                opt.step()
                rec = out if logs is None or "loss" not in logs else logs["loss"]
                value = float(rec.detach()) if isinstance(rec, torch.Tensor) else float(rec)
                hist.loss.append(value)
                hist.stage.append(stage.name)
                hist.lr.append(run["lr"])
                hist.time.append(run["elapsed"] + time.perf_counter() - t_start)
                hist.grad_norm.append(gnorm)
                for k, v in (logs or {}).items():
                    if k != "loss":
                        v = float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                        hist.logs.setdefault(k, []).append(v)
                run["stage_step"] += 1
                run["step"] += 1
                run["since_best"] += 1
                run["since_decay"] += 1
                state.stage_step, state.step = run["stage_step"], run["step"]
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(stage=stage.name, loss=f"{value:.3g}", refresh=False)
                for cb in callbacks:
                    cb.on_step_end(state, value)
                if val_data is not None and run["stage_step"] % val_every == 0:
                    if do_validation(st_patience):
                        state.stop = True
                if (
                    checkpoint_every is not None
                    and run["step"] % checkpoint_every == 0
                    and run["stage_step"] < stage.steps
                    and not state.stop
                ):
                    save_checkpoint()
            # ---- end of stage ----
            if bar is not None and run["stage_step"] < stage.steps:
                bar.update(stage.steps - run["stage_step"])
            if restore_best and run["best_model"] is not None:
                model.load_state_dict(run["best_model"])
            for cb in callbacks:
                cb.on_stage_end(state)
            run.update(stage_index=run["stage_index"] + 1, stage_step=0, best_model=None)
            state.optimiser = None
            if ckpt_path is not None:
                save_checkpoint()
    finally:
        for p, f in zip(model.parameters(), saved_flags):
            p.requires_grad_(f)
        model.train(was_training)
        if bar is not None:
            bar.close()
    return hist
