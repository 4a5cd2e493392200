"""Input validation shared by every module.

The helpers raise :class:`TypeError` for a wrong type or dtype and :class:`ValueError` for a
wrong shape or range, and always name the offending argument and what was expected, so that a
reader's mistake is reported where it happens rather than as a NaN three functions later.
Public entry points call them once; inner loops do not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "check_tensor",
    "check_complex",
    "check_real",
    "per_sample",
    "check_positive_int",
    "per_user",
]


def _real_dtype(x: torch.Tensor) -> torch.dtype:
    if x.is_complex():
        return torch.float64 if x.dtype == torch.complex128 else torch.float32
    return x.dtype if x.is_floating_point() else torch.get_default_dtype()


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #
def _shape_str(shape: Sequence) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_tensor(
    x,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    shape: Sequence[int | str | None] | None = None,
    complex_: bool | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """Check that ``x`` is a torch tensor of the expected rank, shape and kind.

    Parameters
    ----------
    x : object
        The argument to check.
    name : str
        The argument's name, used in the error message.
    ndim : int or sequence of int, optional
        Allowed numbers of dimensions.
    shape : sequence, optional
        Expected shape; an entry that is a string or ``None`` matches any size
        (the string names the dimension in the message, e.g. ``"batch"``).
    complex_ : bool, optional
        ``True`` requires a complex dtype, ``False`` a real floating dtype.
    finite : bool
        Reject NaN or infinite entries.

    Returns
    -------
    torch.Tensor
        ``x`` itself.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if shape is not None:
        want = _shape_str(shape)
        if x.dim() != len(shape) or any(
            isinstance(s, int) and s != d for s, d in zip(shape, x.shape)
        ):
            raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                f"got shape {tuple(x.shape)}"
            )
    if complex_ is True and not x.is_complex():
        raise TypeError(f"{name} must be a complex tensor (complex64/complex128), got {x.dtype}")
    if complex_ is False and (x.is_complex() or not x.is_floating_point()):
        raise TypeError(f"{name} must be a real floating tensor (float32/float64), got {x.dtype}")
    if finite and (x.is_floating_point() or x.is_complex()) and x.numel() > 0:
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or infinite entries")
    return x


def check_complex(x, name: str, *, ndim=None, shape=None) -> torch.Tensor:
    """Shorthand for :func:`check_tensor` with ``complex_=True``."""
    return check_tensor(x, name, ndim=ndim, shape=shape, complex_=True)


def check_real(x, name: str, *, ndim=None, shape=None) -> torch.Tensor:
    """Shorthand for :func:`check_tensor` with ``complex_=False``."""
    return check_tensor(x, name, ndim=ndim, shape=shape, complex_=False)


def per_sample(
    value,
    name: str,
    batch: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    positive: bool = True,
    allow_zero: bool = False,
) -> torch.Tensor:
    """Turn a scalar or a ``(batch,)`` tensor into a real ``(batch,)`` tensor, checking its range.

    Used for ``power`` and ``noise_var`` arguments, which may be one number for
    the whole batch or one per sample.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number or a tensor, got bool")
    if isinstance(value, (int, float, np.integer, np.floating)):
        t = torch.full((batch,), float(value), dtype=dtype, device=device)
    elif isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must be real, got {value.dtype}")
        if value.dim() == 0:
            t = value.to(dtype=dtype, device=device).expand(batch).clone()
        elif value.shape == (batch,):
            t = value.to(dtype=dtype, device=device)
        else:
            raise ValueError(
                f"{name} must be a scalar or have shape ({batch},), got {tuple(value.shape)}"
            )
    else:
        raise TypeError(f"{name} must be a number or a torch.Tensor, got {type(value).__name__}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite")
    if positive:
        bad = (t < 0) if allow_zero else (t <= 0)
        if bool(bad.any()):
            rel = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{name} must be {rel}, got min {float(t.min()):.4g}")
    return t


def check_positive_int(n, name: str, *, minimum: int = 1) -> int:
    """Check that ``n`` is an integer ``>= minimum`` and return it."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    return int(n)


def per_user(
    value,
    name: str,
    batch: int,
    users: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    allow_zero: bool = False,
) -> torch.Tensor:
    """A scalar, ``(K,)`` or ``(B, K)`` positive quantity as a real ``(B, K)`` tensor.

    The one parser of per-user quantities such as SINR targets ``gamma_k`` (linear scale) or
    per-user error energies. Python and NumPy numbers, NumPy arrays and torch tensors are
    accepted; every entry must be finite and ``> 0`` (``>= 0`` with ``allow_zero``), so that
    an infinite target or a NaN is reported here and not as a hang or a NaN downstream.

    Parameters
    ----------
    value : float, array or torch.Tensor
        Scalar, shape ``(K,)`` or ``(B, K)``.
    name : str
        Argument name used in error messages.
    batch, users : int
        ``B`` and ``K``.
    dtype, device
        Of the returned tensor (take those of the channel the quantity belongs to).

    Returns
    -------
    torch.Tensor
        Real ``(B, K)`` tensor (possibly an expanded view: do not write into it).
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number or a real tensor, got bool")
    if isinstance(value, (int, float, np.integer, np.floating)):
        g = torch.full((batch, users), float(value), dtype=dtype, device=device)
    elif isinstance(value, (torch.Tensor, np.ndarray)):
        t = torch.as_tensor(value)
        if t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must be real, got {t.dtype}")
        if t.dim() == 0 or t.shape == (users,):
            g = t.to(dtype=dtype, device=device).expand(batch, users)
        elif t.shape == (batch, users):
            g = t.to(dtype=dtype, device=device)
        else:
            raise ValueError(
                f"{name} must be a scalar or have shape ({users},) or ({batch}, {users}), "
                f"got {tuple(t.shape)}"
            )
    else:
        raise TypeError(f"{name} must be a number or a torch.Tensor, got {type(value).__name__}")
    if not bool(torch.isfinite(g).all()):
        raise ValueError(f"{name} must be finite (linear scale, not dB)")
    bad = (g < 0) if allow_zero else (g <= 0)
    if bool(bad.any()):
        rel = ">= 0" if allow_zero else "> 0"
        raise ValueError(
            f"{name} must be {rel} (linear scale, not dB), got min {float(g.min()):.4g}"
        )
    return g
