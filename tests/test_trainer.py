"""Tests of the general trainer lib.learn.fit: plans, early stopping, lr decay, clipping,
checkpoint/resume (bit for bit), hooks, data sets and argument checks, on toy models."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from toy_unrolled import UnrolledGD, last_mse
from toy_unrolled import sampler as gd_sampler

from lib.learn import (
    Callback,
    DatasetSampler,
    History,
    Stage,
    StoredFileError,
    fit,
    lr_stages,
)

torch.set_num_threads(1)


class Affine(nn.Module):
    """y = w x + b with a scalar w and b (float64)."""

    def __init__(self, w=0.0, b=0.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(w), dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(float(b), dtype=torch.float64))

    def forward(self, x):
        return self.w * x + self.b


def line_sampler(batch, gen):
    """Noisy samples of y = 2 x - 1."""
    x = torch.randn(batch, generator=gen, dtype=torch.float64)
    return x, 2 * x - 1 + 0.3 * torch.randn(batch, generator=gen, dtype=torch.float64)


def mse(out, y):
    return ((out - y) ** 2).mean()


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


# --------------------------------------------------------------------------------------- #
def test_default_plan_trains_and_records_a_history():
    model = Affine()
    h = fit(model, mse, line_sampler, steps=300, lr=0.05, batch_size=32, progress=False)
    assert isinstance(h, History) and len(h) == 300
    assert len(h.stage) == len(h.lr) == len(h.time) == len(h.grad_norm) == 300
    assert set(h.stage) == {"train"} and h.lr == [0.05] * 300
    assert all(b >= a for a, b in zip(h.time, h.time[1:]))
    h2 = fit(model, mse, line_sampler, steps=5, batch_size=4, history=h, progress=False)
    assert h2 is h and len(h) == 305 and h.time[300] >= h.time[299]  # continued
    assert abs(model.w.item() - 2) < 0.1 and abs(model.b.item() + 1) < 0.1
    assert np.mean(h.loss[-50:]) < 0.5 * np.mean(h.loss[:10])
    assert all(math.isnan(g) for g in h.grad_norm)  # no clipping: not computed


def test_lr_stages_and_stage_lrs():
    plan = lr_stages(5, (1.0, 0.2, 0.02), name="alista")
    assert [s.name for s in plan] == ["alistax1", "alistax0.2", "alistax0.02"]
    plan.append(Stage("abs", 3, lr=0.7))
    h = fit(Affine(), mse, line_sampler, plan=plan, lr=0.5, batch_size=4, progress=False)
    assert h.lr == [0.5] * 5 + [0.1] * 5 + [0.5 * 0.02] * 5 + [0.7] * 3
    assert [s for _, s in h.boundaries()] == ["alistax1", "alistax0.2", "alistax0.02", "abs"]


def test_stage_seed_equals_separate_seeded_runs():
    m1, m2 = Affine(), Affine()
    plan = [Stage("a", 20, lr=0.1, seed=3), Stage("b", 10, lr=0.01, seed=8)]
    h = fit(m1, mse, line_sampler, plan=plan, batch_size=8, seed=99, progress=False)
    ha = fit(m2, mse, line_sampler, steps=20, lr=0.1, batch_size=8, seed=3, progress=False)
    hb = fit(m2, mse, line_sampler, steps=10, lr=0.01, batch_size=8, seed=8, progress=False)
    assert h.loss == ha.loss + hb.loss
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))


def test_trainable_subsets_and_forward_kwargs():
    model = UnrolledGD(3, 0.05)
    seen = []

    class Probe(Callback):
        def on_stage_start(self, state):
            seen.append([bool(l.step.requires_grad) for l in state.model.layers])

    plan = [
        Stage("layer1", 2, trainable=[1], forward_kwargs={"n_layers": 2}),
        Stage("callable", 2, trainable=lambda m: [m.layers[2].step]),
        Stage("all", 2),
    ]
    before = _params(model)
    fit(model, last_mse, gd_sampler, plan=plan, lr=0.01, batch_size=4, progress=False,
        callbacks=[Probe()])  # fmt: skip
    assert seen == [[False, True, False], [False, False, True], [True, True, True]]
    after = _params(model)
    assert not torch.equal(before[0], after[0])  # trained in the last stage only
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    with pytest.raises(ValueError, match="layer index"):
        fit(UnrolledGD(2, 0.1), last_mse, gd_sampler, plan=[Stage("x", 1, trainable=[5])],
            progress=False)  # fmt: skip
    with pytest.raises(TypeError, match="layers"):
        fit(Affine(), mse, line_sampler, plan=[Stage("x", 1, trainable=[0])], progress=False)


def _diverging():
    """Training data y = x, validation data y = -x: every step makes validation worse."""

    def train(batch, gen):
        x = torch.randn(batch, generator=gen, dtype=torch.float64)
        return x, x

    xv = torch.linspace(-1, 1, 50, dtype=torch.float64)
    return train, (xv, -xv)


def test_early_stopping_restores_the_best_weights():
    train, val = _diverging()
    model = Affine()
    h = fit(model, mse, train, steps=500, lr=0.05, batch_size=16, val_data=val, val_every=1,
            patience=7, progress=False)  # fmt: skip
    assert len(h) == 7  # stopped after 7 steps without improvement
    assert h.val_step[0] == 0 and h.best() == (0, h.val_metric[0])
    assert model.w.item() == 0.0 and model.b.item() == 0.0  # the initial (best) weights
    # without restoring, the last weights are kept (and are worse)
    model2 = Affine()
    fit(model2, mse, train, steps=500, lr=0.05, batch_size=16, val_data=val, val_every=1,
        patience=7, restore_best=False, progress=False)  # fmt: skip
    assert model2.w.item() > 0
    # a stage's own patience overrides the run's
    h3 = fit(Affine(), mse, train, plan=[Stage("s", 100, patience=3)], lr=0.05, batch_size=16,
             val_data=val, val_every=1, patience=50, progress=False)  # fmt: skip
    assert len(h3) == 3


def test_min_delta_ends_a_stage_that_only_creeps_but_keeps_its_best_weights():
    # a validation metric that improves by 0.001 per step forever: without min_delta the stage
    # never plateaus; with min_delta=0.01 it ends after `patience` steps of creeping, and the
    # best (last) weights are still the ones restored
    model = Affine()
    calls = []

    def val_fn(m, batch, st):
        calls.append(1)
        return -0.001 * len(calls)

    kw = dict(lr=0.01, batch_size=8, val_data=(torch.ones(1), torch.ones(1)), val_fn=val_fn,
              val_every=1, patience=5, progress=False)  # fmt: skip
    h = fit(model, mse, line_sampler, steps=40, **kw)
    assert len(h) == 40  # every validation is an improvement: no early stop
    calls.clear()
    h2 = fit(Affine(), mse, line_sampler, steps=40, min_delta=0.01, **kw)
    assert len(h2) == 5 and h2.best() == (5, h2.val_metric[-1])
    # a real improvement (> min_delta) resets the patience
    calls.clear()
    jumps = iter([0.0, -0.02, -0.021, -0.05, -0.051, -0.052, -0.053, -0.054, -0.055] + [-0.06] * 9)
    h3 = fit(Affine(), mse, line_sampler, steps=40, min_delta=0.01,
             **{**kw, "val_fn": lambda m, b, s: next(jumps)})  # fmt: skip
    assert len(h3) == 8  # improvements > 0.01 at steps 1 and 3, then 5 steps of creeping
    with pytest.raises(ValueError, match="min_delta"):
        fit(Affine(), mse, line_sampler, steps=1, min_delta=-1.0, progress=False)


def test_lr_decay_on_plateau():
    train, val = _diverging()
    h = fit(Affine(), mse, train, steps=12, lr=0.1, batch_size=8, val_data=val, val_every=1,
            lr_decay=0.5, lr_patience=4, min_lr=0.03, progress=False)  # fmt: skip
    assert h.lr == [0.1] * 4 + [0.05] * 4 + [0.03] * 4


def test_fixed_and_adaptive_gradient_clipping():
    # SGD: the update is lr times the clipped gradient
    def sgd(params, lr):
        return torch.optim.SGD(params, lr=lr)

    model = Affine(10.0, 10.0)  # far from the optimum: large gradients
    before = _params(model)
    h = fit(model, mse, line_sampler, steps=1, lr=0.1, optimiser=sgd, grad_clip=0.5,
            batch_size=8, progress=False)  # fmt: skip
    step = torch.stack([a - b for a, b in zip(_params(model), before)]).norm().item()
    assert h.grad_norm[0] > 0.5 and step == pytest.approx(0.1 * 0.5, rel=1e-6)

    class Steps(Callback):
        def __init__(self):
            self.prev, self.sizes = _params(model), []

        def on_step_end(self, state, loss):
            now = _params(state.model)
            self.sizes.append(torch.stack([a - b for a, b in zip(now, self.prev)]).norm().item())
            self.prev = now

    model = Affine(10.0, 10.0)
    cb = Steps()
    h = fit(model, mse, line_sampler, steps=30, lr=1e-3, optimiser=sgd, clip_quantile=0.5,
            clip_window=5, batch_size=8, progress=False, callbacks=[cb])  # fmt: skip
    norms = h.grad_norm
    assert cb.sizes[0] == pytest.approx(1e-3 * norms[0], rel=1e-9)  # nothing to compare with yet
    for i in range(1, 30):
        thr = float(np.quantile(norms[max(0, i - 5) : i], 0.5))
        assert cb.sizes[i] == pytest.approx(1e-3 * min(norms[i], thr), rel=1e-6)
    assert any(norms[i] > float(np.quantile(norms[max(0, i - 5) : i], 0.5)) for i in range(1, 30))


class Interrupt(Callback):
    def __init__(self, at):
        self.at = at

    def on_step_end(self, state, loss):
        if state.step == self.at:
            raise KeyboardInterrupt


class DualAscent(Callback):
    """Lagrange multiplier of the constraint w >= 1 (a primal-dual plan on top of fit)."""

    def __init__(self, rate=0.05):
        self.lam, self.rate = 0.0, rate

    def on_step_end(self, state, loss):
        self.lam = max(0.0, self.lam + self.rate * (1.0 - state.model.w.item()))

    def state_dict(self):
        return {"lam": self.lam}

    def load_state_dict(self, d):
        self.lam = d["lam"]


def _resumable_run(tmp_path, interrupt_at=None, resume=False):
    """A run with every stateful feature: two stages, validation with early stopping and lr
    decay, adaptive clipping, a data set sampler, global-RNG noise in a step_fn and a stateful
    callback (dual ascent)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, generator=g, dtype=torch.float64)
    data = DatasetSampler((x, 0.5 * x + 0.2 * torch.randn(64, generator=g, dtype=torch.float64)))
    dual = DualAscent()

    def step(model, batch, state):
        inputs, target = batch
        noise = 1e-3 * torch.randn(inputs.shape, dtype=inputs.dtype)  # torch's global RNG
        loss = mse(model(inputs + noise), target)
        pen = dual.lam * (1.0 - model.w)
        return loss + pen, {"loss": loss, "lam": dual.lam}

    xv = torch.linspace(-2, 2, 40, dtype=torch.float64)
    model = Affine(0.3, 0.0)
    cbs = [dual] if interrupt_at is None else [dual, Interrupt(interrupt_at)]
    plan = [Stage("a", 25, lr_factor=1.0), Stage("b", 40, lr_factor=0.3, patience=30)]
    h = fit(model, None, data, plan=plan, lr=0.05, batch_size=16, step_fn=step,
            val_data=(xv, 0.5 * xv), val_fn=lambda m, b, s: mse(m(b[0]), b[1]).detach(),
            val_every=4, lr_decay=0.5, lr_patience=8, clip_quantile=0.8, clip_window=6,
            checkpoint=tmp_path / "run.ckpt", checkpoint_every=5, resume=resume, seed=4,
            progress=False, callbacks=cbs)  # fmt: skip
    return model, h, dual


@pytest.mark.parametrize("interrupt_at", [13, 37])
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, interrupt_at):
    ref_model, ref_h, ref_dual = _resumable_run(tmp_path / "ref")
    assert ref_dual.lam > 0  # the constraint w >= 1 was active: the dual variable moved
    with pytest.raises(KeyboardInterrupt):
        _resumable_run(tmp_path / "cut", interrupt_at=interrupt_at)
    assert (tmp_path / "cut" / "run.ckpt").exists()
    model, h, dual = _resumable_run(tmp_path / "cut", resume=True)
    assert h.loss == ref_h.loss and h.lr == ref_h.lr and h.val_metric == ref_h.val_metric
    assert h.grad_norm == ref_h.grad_norm and h.logs == ref_h.logs
    assert dual.lam == ref_dual.lam
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p, q)
    # resuming a finished run returns at once with the same weights
    model2, h2, _ = _resumable_run(tmp_path / "cut", resume=True)
    assert h2.loss == ref_h.loss and torch.equal(model2.w, ref_model.w)


def test_checkpoint_of_another_plan_or_a_broken_file_is_an_error(tmp_path):
    ck = tmp_path / "c.ckpt"
    fit(Affine(), mse, line_sampler, steps=3, batch_size=4, checkpoint=ck, progress=False)
    with pytest.raises(ValueError, match="another plan"):
        fit(Affine(), mse, line_sampler, steps=4, batch_size=4, checkpoint=ck, resume=True,
            progress=False)  # fmt: skip
    raw = ck.read_bytes()
    for name, content in (("empty", b""), ("cut", raw[: len(raw) // 2]), ("text", b"hello")):
        bad = tmp_path / f"{name}.ckpt"
        bad.write_bytes(content)
        with pytest.raises(StoredFileError, match=name) as e:
            fit(Affine(), mse, line_sampler, steps=3, checkpoint=bad, resume=True,
                progress=False)  # fmt: skip
        assert "weights_only=False" not in str(e.value) and e.value.__cause__ is None
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"a": Affine()}, foreign)  # a pickled module: code, not weights
    with pytest.raises(StoredFileError, match="foreign") as e:
        fit(Affine(), mse, line_sampler, steps=3, checkpoint=foreign, resume=True, progress=False)
    assert "weights_only" not in str(e.value)
    other = tmp_path / "other.ckpt"
    torch.save({"x": torch.ones(2)}, other)
    with pytest.raises(ValueError, match="not a checkpoint"):
        fit(Affine(), mse, line_sampler, steps=3, checkpoint=other, resume=True, progress=False)


def test_loss_with_a_model_keyword_receives_the_model():
    got = []

    def loss(out, y, *, model):
        got.append(model)
        return mse(out, y)

    m = Affine()
    fit(m, loss, line_sampler, steps=2, batch_size=4, progress=False)
    assert got == [m, m]


def test_step_fn_logs_and_stop_from_a_callback():
    def step(model, batch, state):
        x, y = batch
        loss = mse(model(x), y)
        return 2 * loss, {"loss": loss, "w": model.w}

    class StopAt(Callback):
        def on_step_end(self, state, loss):
            state.stop = state.stage_step == 5

    h = fit(Affine(), None, line_sampler, plan=[Stage("a", 50), Stage("b", 3)], step_fn=step,
            batch_size=4, progress=False, callbacks=[StopAt()])  # fmt: skip
    assert [s for s in h.stage].count("a") == 5 and h.stage[-3:] == ["b"] * 3
    assert len(h.logs["w"]) == 8 and "loss" not in h.logs


def test_dataset_sampler_visits_every_sample_once_per_epoch():
    x = torch.arange(10, dtype=torch.float64)
    s = DatasetSampler((x, None))
    g = torch.Generator().manual_seed(0)
    seen = torch.cat([s(5, g)[0] for _ in range(2)])
    assert sorted(seen.tolist()) == list(range(10))
    s.load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="batch_size"):
        s(11, g)
    with pytest.raises(ValueError, match="first dimension"):
        DatasetSampler(((x, x[:3]), None))
    h = fit(Affine(), mse, (x, 2 * x), steps=4, batch_size=5, lr=1e-3, progress=False)
    assert len(h) == 4


def test_nan_loss_names_the_stage():
    def nan_loss(out, y):
        return out.sum() * float("nan")

    with pytest.raises(FloatingPointError, match="warm-up"):
        fit(Affine(), nan_loss, line_sampler, plan=[Stage("warm-up", 2)], progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-1.0), "lr"),
        (dict(lr=float("inf")), "lr"),
        (dict(grad_clip=-1.0), "grad_clip"),
        (dict(grad_clip=float("nan")), "grad_clip"),
        (dict(clip_quantile=1.5), "clip_quantile"),
        (dict(clip_window=0), "clip_window"),
        (dict(batch_size=0), "batch_size"),
        (dict(val_every=0), "val_every"),
        (dict(patience=0), "patience"),
        (dict(patience=5), "val_data"),
        (dict(lr_decay=1.0, lr_patience=3, val_data=(torch.ones(1), torch.ones(1))), "lr_decay"),
        (dict(lr_decay=0.5, val_data=(torch.ones(1), torch.ones(1))), "lr_patience"),
        (dict(min_lr=-1.0), "min_lr"),
        (dict(resume=True), "checkpoint"),
        (dict(checkpoint_every=5), "checkpoint"),
        (dict(steps=-1), "steps"),
    ],
)
def test_invalid_arguments_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit(Affine(), mse, line_sampler, progress=False, **kwargs)


def test_invalid_types_and_stages():
    with pytest.raises(TypeError, match="model"):
        fit(lambda x: x, mse, line_sampler)
    with pytest.raises(TypeError, match="loss"):
        fit(Affine(), None, line_sampler)
    with pytest.raises(TypeError, match="plan"):
        fit(Affine(), mse, line_sampler, plan=["stage"])
    with pytest.raises(TypeError, match="callbacks"):
        fit(Affine(), mse, line_sampler, callbacks=[print])
    with pytest.raises(TypeError, match="val_fn"):
        fit(Affine(), None, line_sampler, step_fn=lambda m, b, s: m.w, val_data=(1, 1))
    with pytest.raises(ValueError, match="Stage.steps"):
        Stage("x", -1)
    with pytest.raises(ValueError, match="Stage.lr"):
        Stage("x", 1, lr=0.0)
    with pytest.raises(ValueError, match="Stage.patience"):
        Stage("x", 1, patience=0)
    with pytest.raises(TypeError, match="trainable"):
        Stage("x", 1, trainable="all")


def test_progress_bar_runs():
    h = fit(Affine(), mse, line_sampler, steps=3, batch_size=4, progress=True)
    assert len(h) == 3
