"""The straight-through softmin beam selection (lib.learn.softmin_select)."""

import math

import pytest
import torch

from lib.learn import softmin_select


def _costs(B=6, C=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, C, generator=g, dtype=dtype) * 10 + 0.1


def test_forward_is_the_hard_argmin():
    c = _costs()
    sel = softmin_select(c, 0.3)
    assert torch.equal(sel.index, c.argmin(-1))
    assert torch.equal(sel.weights, torch.nn.functional.one_hot(c.argmin(-1), 5).double())
    assert torch.allclose(sel.soft.sum(-1), torch.ones(6, dtype=torch.float64))


def test_backward_is_the_softmin_derivative():
    c = _costs().requires_grad_(True)
    v = torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (softmin_select(c, 0.3).weights * v).sum().backward()
    c2 = c.detach().clone().requires_grad_(True)
    proxy = torch.softmax(-torch.log(c2) / 0.3, -1)  # eq. (35) with log-power costs
    (proxy * v).sum().backward()
    assert torch.allclose(c.grad, c2.grad, rtol=1e-12, atol=1e-14)


def test_scale_invariance_and_annealing_limit():
    c = _costs()
    a, b = softmin_select(c, 0.5).soft, softmin_select(1e6 * c, 0.5).soft
    assert torch.allclose(a, b, rtol=1e-12)
    sharp = softmin_select(c, 1e-4).soft
    assert torch.allclose(sharp, softmin_select(c, 0.5).weights.detach(), atol=1e-12)


def test_excluded_and_infeasible_candidates():
    c = _costs()
    c[0, c[0].argmin()] = math.inf  # the best one becomes infeasible
    adm = torch.ones(6, 5, dtype=torch.bool)
    adm[1, :] = False  # no admissible candidate
    adm[2, 3] = False
    c.requires_grad_(True)
    sel = softmin_select(c, 0.3, admissible=adm)
    assert not bool(sel.feasible[1]) and int(sel.index[1]) == -1
    assert torch.all(sel.weights[1] == 0) and torch.all(sel.soft[1] == 0)
    soft = sel.soft.detach()
    assert float(soft[2, 3]) == 0.0 and float(soft[0].max()) < 1.0
    assert torch.isfinite(sel.soft).all()
    (sel.weights * torch.arange(5.0, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(c.grad).all() and torch.all(c.grad[1] == 0)
    assert float(c.grad[2, 3]) == 0.0


def test_selected_codeword_carries_the_gradient():
    cb = torch.randn(5, 8, dtype=torch.complex128)
    c = _costs().requires_grad_(True)
    f = softmin_select(c, 0.3).weights.to(cb.dtype) @ cb  # (B, M) selected codewords
    assert torch.allclose(f.detach(), cb[c.argmin(-1)])
    f.abs().sum().backward()
    assert c.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(costs=torch.ones(3)), ValueError),
        (dict(costs=torch.ones(2, 3, dtype=torch.long)), TypeError),
        (dict(costs=torch.ones(2, 0)), ValueError),
        (dict(costs=-torch.ones(2, 3)), ValueError),
        (dict(costs=torch.full((2, 3), math.nan)), ValueError),
        (dict(costs=torch.ones(2, 3), tau=0.0), ValueError),
        (dict(costs=torch.ones(2, 3), admissible=torch.ones(2, 2, dtype=torch.bool)), ValueError),
    ],
)
def test_input_checks(kwargs, error):
    kwargs.setdefault("tau", 0.3)
    with pytest.raises(error):
        softmin_select(**kwargs)


def test_float32():
    sel = softmin_select(_costs(dtype=torch.float32), 0.3)
    assert sel.weights.dtype == torch.float32
