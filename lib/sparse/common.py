"""Shared helpers of the sparse-recovery modules: entry checks of ``y``, ``A`` and ``x0``, batched
products ``A x`` and ``A^T z``, and the per-iteration history collector (``history=True`` or a
callable). Book chapter *Sparse recovery*.

Shapes: ``A`` is ``(M, N)`` or ``(B, M, N)``, ``x`` is ``(B, N)``, ``y`` is ``(B, M)``.

Every public algorithm validates its inputs once, at the entry, with these helpers; the
iterations then run unchecked (no ``bool(...)`` on a tensor, i.e. no device synchronisation,
inside a loop).
"""

from __future__ import annotations

import numpy as np
import torch

from lib.core.checks import check_number, check_real, check_tensor, per_sample, same_device

__all__ = []


# --------------------------------------------------------------------------- #
# Validation helpers
# --------------------------------------------------------------------------- #
def _check_prob(p, name: str = "p") -> float:
    """A probability in ``(0, 1]`` (the sparsity of a Bernoulli-Gaussian prior)."""
    return check_number(p, name, lo=0.0, hi=1.0, lo_open=True)


def _check_pos_float(v, name: str, *, allow_zero: bool = False) -> float:
    """A finite number ``> 0`` (``>= 0`` with ``allow_zero``)."""
    return check_number(v, name, lo=0.0, lo_open=not allow_zero)


def _check_A(A) -> torch.Tensor:
    check_tensor(A, "A", ndim=(2, 3), finite=False)  # finiteness: once, in check_real below
    if A.is_complex():
        raise TypeError(
            f"A must be a real floating tensor (float32/float64), got {A.dtype}; "
            "lib.sparse covers real-valued sparse recovery only"
        )
    check_real(A, "A")
    return A


def _check_yA(y, A) -> tuple[torch.Tensor, torch.Tensor]:
    """Check ``y`` (batch, M) against ``A`` (M, N) or (batch, M, N): shape, dtype, device."""
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
    same_device(y, A, names=("y", "A"))
    return y, A


def _check_x0(x0, batch: int, n: int, ref: torch.Tensor) -> torch.Tensor | None:
    """An optional start ``x0`` (batch, N) with ``ref``'s dtype and device (no silent cast)."""
    if x0 is None:
        return None
    check_real(x0, "x0", shape=(batch, n))
    if x0.dtype != ref.dtype:
        raise TypeError(f"x0 must have the dtype of y ({ref.dtype}), got {x0.dtype}")
    same_device(x0, ref, names=("x0", "y"))
    return x0


def _check_noise_var_unused(noise_var, batch: int, ref: torch.Tensor) -> None:
    """Validate a ``noise_var`` that an algorithm accepts for a common signature but ignores."""
    if noise_var is not None:
        per_sample(
            noise_var, "noise_var", batch, dtype=ref.dtype, device=ref.device, allow_zero=True
        )


def _check_history(history) -> None:
    if not (isinstance(history, bool) or callable(history)):
        raise TypeError(f"history must be a bool or a callable, got {type(history).__name__}")


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
    """Collects per-iteration estimates (``history=True``) or ``f(estimate)`` (callable).

    ``result(x)`` returns ``x`` (``history=False``), or ``(x, stack)`` with ``stack`` the
    ``(iters, batch, N)`` tensor of the estimates (``history=True``) or the stacked values
    ``f(x_t)`` (a tensor if ``f`` returns tensors, else a NumPy array).
    """

    def __init__(self, history):
        _check_history(history)
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
