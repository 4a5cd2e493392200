"""Shared helpers of the sparse-recovery modules: entry checks of y, A and x0, batched
products A x and A^T z, and the per-iteration history collector (``history=True`` or a callable).

Shapes: ``A`` is ``(M, N)`` or ``(B, M, N)``, ``x`` is ``(B, N)``, ``y`` is ``(B, M)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lib.core.checks import check_real, check_tensor, per_sample

__all__ = []


# --------------------------------------------------------------------------- #
# Validation helpers
# --------------------------------------------------------------------------- #
def _check_prob(p, name: str = "p") -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in (0, 1], got {type(p).__name__}")
    p = float(p)
    if not (0.0 < p <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {p}")
    return p


def _check_pos_float(v, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v}")
    return v


def _check_A(A) -> torch.Tensor:
    check_tensor(A, "A", ndim=(2, 3))
    if A.is_complex():
        raise TypeError(
            f"A must be a real floating tensor (float32/float64), got {A.dtype}; "
            "lib.sparse covers real-valued sparse recovery only"
        )
    check_real(A, "A")
    return A


def _check_yA(y, A) -> tuple[torch.Tensor, torch.Tensor]:
    """Check ``y`` (batch, M) against ``A`` (M, N) or (batch, M, N)."""
    A = _check_A(A)
    m = A.shape[-2]
    if isinstance(y, torch.Tensor) and y.is_complex():
        raise TypeError(f"y must be a real floating tensor (float32/float64), got {y.dtype}")
    check_real(y, "y", shape=("batch", m))
    if A.dim() == 3 and A.shape[0] != y.shape[0]:
        raise ValueError(
            f"A of shape (batch, M, N) = {tuple(A.shape)} must have the same batch size as "
            f"y of shape {tuple(y.shape)}"
        )
    if y.dtype != A.dtype:
        raise TypeError(f"y and A must have the same dtype, got {y.dtype} and {A.dtype}")
    return y, A


def _check_x0(x0, batch: int, n: int, dtype) -> torch.Tensor | None:
    if x0 is None:
        return None
    check_real(x0, "x0", shape=(batch, n))
    return x0.to(dtype)


def _per_sample_col(value, name: str, batch: int, ref: torch.Tensor, **kw) -> torch.Tensor:
    """A scalar or ``(batch,)`` value as a ``(batch, 1)`` column of ``ref``'s dtype."""
    return per_sample(value, name, batch, dtype=ref.dtype, device=ref.device, **kw).unsqueeze(-1)


def _mv(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A x`` for a batch of vectors ``x`` (batch, N) and ``A`` (M, N) or (batch, M, N)."""
    if A.dim() == 2:
        return x @ A.T
    return torch.bmm(A, x.unsqueeze(-1)).squeeze(-1)


def _mtv(A: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``A^T z`` for a batch of vectors ``z`` (batch, M)."""
    if A.dim() == 2:
        return z @ A
    return torch.bmm(A.transpose(1, 2), z.unsqueeze(-1)).squeeze(-1)


class _History:
    """Collects per-iteration estimates (``history=True``) or ``f(estimate)`` (callable)."""

    def __init__(self, history):
        if not (isinstance(history, bool) or callable(history)):
            raise TypeError(f"history must be a bool or a callable, got {type(history).__name__}")
        self.mode = history
        self.items: list = []

    def add(self, x: torch.Tensor) -> None:
        if self.mode is True:
            self.items.append(x)
        elif callable(self.mode):
            self.items.append(self.mode(x))

    def result(self, x: torch.Tensor):
        if self.mode is False:
            return x
        items = self.items
        if items and isinstance(items[0], torch.Tensor):
            stacked = torch.stack(items)
        else:
            stacked = np.asarray(items)
        return x, stacked
