"""The users' graph convolutional network (lib.learn.gcn): equivariance, any K, bounds."""

import pytest
import torch

from lib.learn.gcn import GCN, PairHead, correlation_shift, soft_bounded_exp
from lib.phy import rayleigh


def _graph(B=5, K=4, F=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    H = rayleigh(B, K, 8, generator=g)
    X = torch.randn(B, K, F, generator=g, dtype=dtype)
    return X, correlation_shift(H).to(dtype), H


def test_shift_operator_is_the_correlation_coefficient():
    _, S, H = _graph()
    k, j = 1, 3
    h1, h3 = H[2, k], H[2, j]
    rho = (h1.conj() @ h3).abs() / (h1.norm() * h3.norm())
    assert torch.allclose(S[2, k, j], rho.to(S.dtype))
    assert torch.allclose(S, S.mT) and torch.all(S.diagonal(dim1=-2, dim2=-1) == 0)
    assert float(S.max()) <= 1.0 and float(S.min()) >= 0.0
    H0 = H.clone()
    H0[0, 0] = 0
    assert torch.all(correlation_shift(H0)[0, 0] == 0)  # no edges, no NaN


@pytest.mark.parametrize("train", [True, False])
def test_permutation_equivariance(train):
    torch.manual_seed(0)
    gcn = GCN([3, 8, 8, 2], degree=2, dtype=torch.float64)
    pair = PairHead(2, 6, dtype=torch.float64)
    gcn.train(train)
    X, S, _ = _graph()
    perm = torch.tensor([2, 0, 3, 1])
    out = gcn(X, S)
    out_p = gcn(X[:, perm], S[:, perm][:, :, perm])
    assert torch.allclose(out_p, out[:, perm], rtol=1e-12)
    c, c_p = pair(out, S), pair(out_p, S[:, perm][:, :, perm])
    assert torch.allclose(c_p, c[:, perm][:, :, perm], rtol=1e-12)


def test_any_number_of_users_with_the_same_weights():
    torch.manual_seed(0)
    gcn = GCN([3, 8, 1], degree=3, dtype=torch.float64).eval()
    for K in (1, 2, 5, 7):
        X, S, _ = _graph(K=K)
        assert gcn(X, S).shape == (5, K, 1)


def test_degree_zero_is_a_per_user_mlp():
    torch.manual_seed(0)
    gcn = GCN([3, 8, 2], degree=0, dtype=torch.float64).eval()
    X, S, _ = _graph()
    assert torch.allclose(gcn(X, S), gcn(X, torch.rand_like(S)))  # the graph is ignored
    one = gcn(X[:, :1], S[:, :1, :1])
    assert torch.allclose(one[:, 0], gcn(X, S)[:, 0])


def test_graph_changes_the_output_for_degree_one_and_more():
    torch.manual_seed(0)
    gcn = GCN([3, 8, 2], degree=1, dtype=torch.float64).eval()
    X, S, _ = _graph()
    assert not torch.allclose(gcn(X, S), gcn(X, torch.zeros_like(S)))


def test_soft_bounds_and_gradients():
    torch.manual_seed(0)
    gcn = GCN([3, 8, 2], degree=2, bounds=(0.01, 10.0), dtype=torch.float64)
    X, S, _ = _graph()
    out = gcn(100 * X, S).detach()
    assert float(out.min()) > 0.01 and float(out.max()) < 10.0
    y = soft_bounded_exp(torch.tensor([0.0], dtype=torch.float64), 0.01, 10.0)
    assert torch.allclose(y, torch.tensor([0.1**0.5], dtype=torch.float64))
    gcn(X, S).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gcn.parameters())


def test_pair_head_has_zero_diagonal_and_positive_entries():
    pair = PairHead(2, 4, dtype=torch.float64)
    Z = torch.randn(3, 4, 2, dtype=torch.float64)
    S = torch.rand(3, 4, 4, dtype=torch.float64)
    c = pair(Z, S)
    assert torch.all(c.diagonal(dim1=-2, dim2=-1) == 0)
    off = c[:, ~torch.eye(4, dtype=torch.bool)]
    assert torch.all(off > 0)


def test_float32_default():
    gcn = GCN([3, 4, 1])
    X, S, _ = _graph(dtype=torch.float32)
    assert gcn(X, S).dtype == torch.float32


@pytest.mark.parametrize(
    "args, error",
    [
        ((torch.randn(2, 3, 4), torch.rand(2, 3, 3)), ValueError),  # wrong feature count
        ((torch.randn(2, 3, 3), torch.rand(2, 3, 2)), ValueError),  # S shape
        ((torch.randn(2, 3, 3), torch.rand(2, 3, 3, dtype=torch.float64)), TypeError),
        ((torch.randn(2, 3), torch.rand(2, 3, 3)), ValueError),
    ],
)
def test_input_checks(args, error):
    gcn = GCN([3, 4, 1])
    with pytest.raises(error):
        gcn(*args)


def test_constructor_checks():
    with pytest.raises(ValueError):
        GCN([3])
    with pytest.raises(ValueError):
        GCN([3, 2], bounds=(1.0, 0.5))
    with pytest.raises(ValueError):
        correlation_shift(torch.randn(2, 3, 4))
