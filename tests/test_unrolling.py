"""Tests of the generic unrolling toolkit (lib.learn.unrolling) on a toy unrolled descent."""

import pytest
import torch
from torch import nn
from toy_unrolled import UnrolledGD, last_mse, sampler

from lib.learn import (
    TrainHistory,
    UnrolledModel,
    count_parameters,
    fit,
    freeze_layers,
    growth_plan,
    plateau_plan,
    to_device,
    train_unrolled,
)

torch.set_num_threads(1)


def test_forward_matches_manual_loop_and_keeps_every_layer():
    model = UnrolledGD(5, 0.3)
    (y, A), x = sampler(7, torch.Generator().manual_seed(1))
    out = model(y, A)
    assert out.shape == (5, 7, 4)
    z = torch.zeros(7, 4, dtype=torch.float64)
    for t in range(5):
        z = z - 0.3 * (z @ A.T - y) @ A
        assert torch.allclose(out[t], z, atol=1e-14, rtol=0)
    out3 = model(y, A, n_layers=3)
    assert out3.shape == (3, 7, 4)
    assert torch.equal(out3, out[:3])


def test_n_layers_validation():
    model = UnrolledGD(3, 0.1)
    (y, A), _ = sampler(2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="n_layers"):
        model(y, A, n_layers=4)
    with pytest.raises(ValueError, match="n_layers"):
        model(y, A, n_layers=0)
    with pytest.raises(TypeError, match="n_layers"):
        model(y, A, n_layers=1.5)
    with pytest.raises(ValueError, match="at least one"):
        UnrolledGD(0, 0.1)
    with pytest.raises(TypeError, match="layers\\[0\\]"):
        UnrolledModel([lambda s: s])


def test_training_reduces_loss_and_is_seeded():
    def run():
        model = UnrolledGD(4, 0.05)
        hist = train_unrolled(
            model,
            sampler,
            last_mse,
            steps_per_layer=10,
            refine_steps=5,
            finetune_steps=30,
            batch_size=32,
            lr=0.05,
            seed=3,
            progress=False,
        )
        return model, hist

    m1, h1 = run()
    m2, h2 = run()
    assert len(h1) == 4 * 15 + 30
    assert h1.loss == h2.loss
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    # the trained network beats its initialisation (small steps) on fresh data
    (y, A), x = sampler(500, torch.Generator().manual_seed(99))
    init = UnrolledGD(4, 0.05)
    with torch.no_grad():
        assert last_mse(m1(y, A), x) < 0.5 * last_mse(init(y, A), x)
    stages = [s for _, s in h1.boundaries()]
    assert stages[:3] == ["grow-1", "refine-1", "grow-2"] and stages[-1] == "finetune"
    assert h1.depth[0] == 1 and h1.depth[-1] == 4


def test_growth_trains_only_the_new_layer():
    model = UnrolledGD(3, 0.05)
    seen = []

    def probe(model, t):
        seen.append((t, [bool(l.step.requires_grad) for l in model.layers]))
        return torch.zeros((), dtype=torch.float64)

    train_unrolled(
        model,
        sampler,
        last_mse,
        steps_per_layer=2,
        refine_steps=1,
        finetune_steps=1,
        batch_size=8,
        lr=0.01,
        penalty=probe,
        penalty_weight=1.0,
        progress=False,
    )
    assert seen[0] == (1, [True, False, False])
    assert seen[2] == (1, [True, False, False])  # refine-1: layers 1..1
    assert seen[3] == (2, [False, True, False])
    assert seen[5] == (2, [True, True, False])
    assert seen[-1] == (3, [True, True, True])
    # flags restored afterwards
    assert all(p.requires_grad for p in model.parameters())


def test_caller_frozen_parameters_stay_frozen():
    model = UnrolledGD(3, 0.05)
    model.layers[1].step.requires_grad_(False)
    before = model.layers[1].step.detach().clone()
    train_unrolled(
        model,
        sampler,
        last_mse,
        steps_per_layer=3,
        finetune_steps=5,
        batch_size=8,
        lr=0.05,
        progress=False,
    )
    assert torch.equal(model.layers[1].step.detach(), before)
    assert not model.layers[1].step.requires_grad
    assert model.layers[0].step.item() != 0.05


def test_shared_parameters_and_counts():
    class WithShared(UnrolledGD):
        def __init__(self):
            super().__init__(2, 0.1)
            self.scale = nn.Parameter(torch.ones((), dtype=torch.float64))

        def readout(self, state):
            return self.scale * state

    m = WithShared()
    assert count_parameters(m) == 3
    assert [p is m.scale for p in m.shared_parameters()] == [True]
    assert len(m.layer_parameters(1)) == 1
    freeze_layers(m, [0])
    assert count_parameters(m) == 2
    assert count_parameters(m, trainable_only=False) == 3
    freeze_layers(m, None)
    assert count_parameters(m) == 3

    class C(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(2, 3, dtype=torch.complex64))

    assert count_parameters(C()) == 12


def test_penalty_is_added_and_recorded():
    model = UnrolledGD(2, 0.05)

    def pen(model, t):
        return sum((l.step - 0.2) ** 2 for l in model.layers[:t])

    h = train_unrolled(
        model,
        sampler,
        last_mse,
        finetune_steps=300,
        batch_size=8,
        lr=0.05,
        penalty=pen,
        penalty_weight=1e4,
        progress=False,
    )
    assert len(h.penalty) == 300 and h.penalty[-1] < h.penalty[0]
    assert all(abs(l.step.item() - 0.2) < 0.02 for l in model.layers)


def test_argument_validation_and_nan_detection():
    model = UnrolledGD(2, 0.05)
    with pytest.raises(TypeError, match="model"):
        train_unrolled(nn.Linear(2, 2), sampler, last_mse)
    with pytest.raises(TypeError, match="sampler"):
        train_unrolled(model, None, last_mse)
    with pytest.raises(TypeError, match="loss_fn"):
        train_unrolled(model, sampler, 3)
    with pytest.raises(ValueError, match="batch_size"):
        train_unrolled(model, sampler, last_mse, batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        train_unrolled(model, sampler, last_mse, lr=-1.0)
    with pytest.raises(ValueError, match="finetune_steps"):
        train_unrolled(model, sampler, last_mse, finetune_steps=-1)

    def nan_loss(out, x):
        return out.sum() * float("nan")

    with pytest.raises(FloatingPointError, match="finetune"):
        train_unrolled(model, sampler, nan_loss, finetune_steps=2, progress=False)


def test_history_can_be_continued_and_to_device():
    model = UnrolledGD(2, 0.05)
    h = train_unrolled(model, sampler, last_mse, finetune_steps=3, batch_size=4, progress=False)
    h2 = train_unrolled(
        model, sampler, last_mse, finetune_steps=2, batch_size=4, progress=False, history=h
    )
    assert h2 is h and len(h) == 5 and isinstance(h, TrainHistory)
    moved = to_device({"a": (torch.ones(1), [torch.zeros(2)]), "b": 3}, torch.device("cpu"))
    assert moved["b"] == 3 and moved["a"][1][0].shape == (2,)


def test_progress_bar_runs():
    model = UnrolledGD(2, 0.05)
    h = train_unrolled(model, sampler, last_mse, finetune_steps=2, batch_size=4, progress=True)
    assert len(h) == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(grad_clip=-1.0), "grad_clip"),
        (dict(grad_clip=0.0), "grad_clip"),
        (dict(grad_clip=float("inf")), "grad_clip"),
        (dict(lr=float("nan")), "lr"),
        (dict(refine_lr=0.0), "refine_lr"),
        (dict(finetune_lr=float("inf")), "finetune_lr"),
        (dict(penalty_weight=-1.0), "penalty_weight"),
        (dict(penalty_weight=float("nan")), "penalty_weight"),
        (dict(steps_per_layer=-2), "steps_per_layer"),
        (dict(checkpoint_every=3), "checkpoint"),
    ],
)
def test_invalid_settings_are_value_errors(kwargs, match):
    """grad_clip=-1 once trained uphill; every setting is now checked before training."""
    model = UnrolledGD(2, 0.05)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=match):
        train_unrolled(model, sampler, last_mse, finetune_steps=3, progress=False, **kwargs)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_growth_plan_stages():
    plan = growth_plan(2, steps_per_layer=3, refine_steps=2, finetune_steps=4,
                       refine_factors=(0.5, 0.1), finetune_factors=(1.0,))  # fmt: skip
    assert [s.name for s in plan] == [
        "grow-1", "refine-1x0.5", "refine-1x0.1", "grow-2", "refine-2x0.5", "refine-2x0.1",
        "finetune",
    ]  # fmt: skip
    assert [s.steps for s in plan] == [3, 2, 2, 3, 2, 2, 4]
    assert plan[3].trainable == [1] and plan[4].trainable == [0, 1]
    assert plan[4].lr_factor == 0.5 and plan[-1].forward_kwargs == {"n_layers": 2}
    assert growth_plan(3, finetune_steps=5)[0].name == "finetune"


def test_plateau_plan_ends_every_stage_at_a_validation_plateau():
    plan = plateau_plan(2, patience=5, final_patience=9)
    assert [s.name for s in plan] == [
        "grow-1", "refine-1x0.5", "refine-1x0.1", "refine-1x0.01",
        "grow-2", "refine-2x0.5", "refine-2x0.1", "refine-2x0.01", "finalx0.1", "finalx0.01",
    ]  # fmt: skip
    assert [s.patience for s in plan] == [5] * 8 + [9, 9]
    assert plan[4].trainable == [1] and plan[5].trainable == [0, 1] and plan[8].trainable is None
    assert plan[7].lr_factor == 0.01 and plan[-1].forward_kwargs == {"n_layers": 2}
    assert [s.name for s in plateau_plan(1, patience=1, final_patience=1, final=False)][-1] == (
        "refine-1x0.01"
    )
    # executed by fit on the toy network: every stage stops by the plateau rule, far below the
    # step cap, and the run improves on the initialisation
    model = UnrolledGD(3, 0.05)
    val = sampler(200, torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = float(last_mse(model(*val[0]), val[1]))
    h = fit(model, last_mse, sampler, plan=plateau_plan(3, patience=20, final_patience=40),
            lr=0.05, batch_size=32, val_data=val, val_every=5, min_delta=1e-4,
            progress=False)  # fmt: skip
    lengths = {}
    for s in h.stage:
        lengths[s] = lengths.get(s, 0) + 1
    assert len(lengths) == 14 and max(lengths.values()) < 2000
    with torch.no_grad():
        assert float(last_mse(model(*val[0]), val[1])) < 0.5 * before
    with pytest.raises(ValueError, match="patience"):
        plateau_plan(2, patience=0, final_patience=5)


def test_train_unrolled_resumes_bit_for_bit(tmp_path):
    def run(ckpt, interrupt=False, resume=False):
        model = UnrolledGD(3, 0.05)
        calls = {"n": 0}

        def samp(batch, gen):
            calls["n"] += 1
            if interrupt and calls["n"] == 23:
                raise KeyboardInterrupt
            return sampler(batch, gen)

        h = train_unrolled(model, samp, last_mse, steps_per_layer=5, refine_steps=2,
                           finetune_steps=10, batch_size=8, lr=0.05, seed=1, progress=False,
                           checkpoint=ckpt, checkpoint_every=4, resume=resume)  # fmt: skip
        return model, h

    ref_m, ref_h = run(tmp_path / "a.ckpt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.ckpt", interrupt=True)
    m, h = run(tmp_path / "b.ckpt", resume=True)
    assert h.loss == ref_h.loss and h.depth == ref_h.depth and h.stage == ref_h.stage
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), ref_m.parameters()))
