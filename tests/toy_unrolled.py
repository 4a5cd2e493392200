"""A toy unrolled network shared by the trainer and unrolling tests (not a test module).

``UnrolledGD(T, step)`` unrolls ``T`` gradient steps ``x <- x - step * A^T (A x - y)`` on a fixed
6 x 4 least-squares problem ``A0``; ``sampler`` draws ``(inputs, target) = ((A0 x, A0), x)`` and
``last_mse`` is the MSE of the last layer.
"""

import torch
from torch import nn

from lib.learn import UnrolledModel

A0 = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) / 6**0.5


class GDLayer(nn.Module):
    """x <- x - step * A^T (A x - y)."""

    def __init__(self, step):
        super().__init__()
        self.step = nn.Parameter(torch.tensor(float(step), dtype=torch.float64))

    def forward(self, x, y, A):
        return x - self.step * (x @ A.T - y) @ A


class UnrolledGD(UnrolledModel):
    def __init__(self, T, step):
        super().__init__([GDLayer(step) for _ in range(T)])

    def init_state(self, y, A):
        return torch.zeros(y.shape[0], A.shape[1], dtype=y.dtype, device=y.device)


def sampler(batch, gen):
    x = torch.randn(batch, A0.shape[1], generator=gen, dtype=torch.float64)
    return (x @ A0.T, A0), x


def last_mse(out, x):
    return ((out[-1] - x) ** 2).mean()
