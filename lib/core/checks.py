"""Input validation shared by every module: shape, dtype, device, finiteness and range, for torch
tensors and for Python/NumPy numbers.

The helpers raise ``TypeError`` for a wrong type or dtype and ``ValueError`` for a
wrong shape, device or range, and always name the offending argument and what was expected, so
that a reader's mistake is reported where it happens rather than as a NaN (or a hang) three
functions later. Public entry points call them once; inner loops and per-iteration blocks do
not (every finiteness or range check of a tensor is one ``bool(...)``, i.e. one device
synchronisation: each check below costs at most one when the input is valid).

* :func:`~lib.core.check_number` -- a Python or NumPy scalar (rejects ``bool``, NaN, ``inf`` unless
  allowed, out-of-range values);
* :func:`~lib.core.check_positive_int` -- an integer ``>= minimum``;
* :func:`~lib.core.check_tensor`, :func:`~lib.core.check_complex`, :func:`~lib.core.check_real` --
  a tensor's rank, shape,
  kind, dtype, device, finiteness and range;
* :func:`~lib.core.check_dtype` -- a ``dtype`` argument (e.g. of a generator such as ``rayleigh``);
* :func:`~lib.core.same_device`, :func:`~lib.core.same_dtype` -- several tensors that must live
  together;
* :func:`~lib.core.per_sample`, :func:`~lib.core.per_user` -- the parsers of scalar-or-tensor
  arguments such as
  ``power``, ``noise_var`` (``(B,)``) and SINR targets (``(B, K)``).

The conventions are those of ``CONTRIBUTING.md`` (book page *Notation and conventions*).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "check_number",
    "check_positive_int",
    "check_tensor",
    "check_complex",
    "check_real",
    "check_dtype",
    "same_device",
    "same_dtype",
    "per_sample",
    "per_user",
]

_NUMBER = (int, float, np.integer, np.floating)
_BOOL = (bool, np.bool_)
_REAL_OF = {torch.complex128: torch.float64, torch.complex64: torch.float32}
_COMPLEX_OF = {torch.float64: torch.complex128, torch.float32: torch.complex64}


# --------------------------------------------------------------------------- #
# dtype helpers (the one place that maps complex <-> real dtypes)
# --------------------------------------------------------------------------- #
def _real_dtype(x: torch.Tensor | torch.dtype) -> torch.dtype:
    """The real dtype that goes with a tensor or dtype: complex128 -> float64, complex64 ->
    float32, a real floating dtype itself, anything else (integers) the default dtype."""
    dt = x if isinstance(x, torch.dtype) else x.dtype
    if dt.is_complex:
        return _REAL_OF.get(dt, torch.float32)
    return dt if dt.is_floating_point else torch.get_default_dtype()


def _complex_dtype(x: torch.Tensor | torch.dtype) -> torch.dtype:
    """The complex dtype that goes with a tensor or dtype: float64 -> complex128, else
    complex64 (a complex dtype is returned unchanged)."""
    dt = x if isinstance(x, torch.dtype) else x.dtype
    if dt.is_complex:
        return dt
    return _COMPLEX_OF.get(dt, torch.complex64)


def _eps(x: torch.Tensor | torch.dtype) -> float:
    """Machine epsilon of the real dtype that goes with ``x`` (for dtype-relative tolerances)."""
    return float(torch.finfo(_real_dtype(x)).eps)


# --------------------------------------------------------------------------- #
# Shared pieces: range text, number and value checks
# --------------------------------------------------------------------------- #
def _fmt(v) -> str:
    return str(v) if isinstance(v, (int, np.integer)) else f"{float(v):g}"


def _range_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    """``"> 0"``, ``">= 1"``, ``"<= 1"`` or ``"in (0, 1]"``; empty when unbounded."""
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_fmt(lo)}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {_fmt(hi)}"
    return ""


def _outside(v, lo, hi, lo_open: bool, hi_open: bool):
    """``v`` outside the range (works elementwise on tensors and on Python numbers)."""
    out = False
    if lo is not None:
        out = (v <= lo) if lo_open else (v < lo)
    if hi is not None:
        out = out | ((v >= hi) if hi_open else (v > hi))
    return out


def _is_number(x) -> bool:
    return isinstance(x, _NUMBER) and not isinstance(x, _BOOL)


def _check_values(
    t: torch.Tensor,
    name: str,
    *,
    finite: bool,
    lo=None,
    hi=None,
    lo_open: bool = False,
    hi_open: bool = False,
    finite_msg: str | None = None,
    hint: str = "",
) -> None:
    """Finiteness and range of the entries of a real tensor ``t``, with one synchronisation.

    NaN is always rejected; ``inf`` only when ``finite``. ``hint`` is appended to the range
    message (e.g. ``" (linear scale, not dB)"``).
    """
    if t.numel() == 0:
        return
    bad = ~torch.isfinite(t) if finite else torch.isnan(t)
    if lo is not None or hi is not None:
        bad = bad | _outside(t, lo, hi, lo_open, hi_open)
    if not bool(bad.any()):
        return
    if bool(torch.isnan(t).any()) or (finite and not bool(torch.isfinite(t).all())):
        raise ValueError(finite_msg or f"{name} contains NaN or infinite entries")
    t_min, t_max = float(t.min()), float(t.max())
    which, worst = ("min", t_min) if _outside(t_min, lo, hi, lo_open, hi_open) else ("max", t_max)
    raise ValueError(
        f"{name} must be {_range_text(lo, hi, lo_open, hi_open)}{hint}, got {which} {worst:.4g}"
    )


def check_number(
    x,
    name: str,
    *,
    lo=None,
    hi=None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
    finite: bool = True,
) -> float | int:
    """Check a Python or NumPy scalar and return it as a Python ``float`` (``int`` if ``integer``).

    Parameters
    ----------
    x : object
        The argument to check.
    name : str
        The argument's name, used in the error message.
    lo, hi : float, optional
        Bounds of the allowed range (``None``: unbounded on that side).
    lo_open, hi_open : bool
        Exclude the bound itself (``lo_open=True, lo=0`` means ``x > 0``).
    integer : bool
        Require an ``int`` (or NumPy integer); floats such as ``2.0`` are rejected.
    finite : bool
        Reject ``inf`` and ``-inf`` (default). NaN is rejected in every case.

    Returns
    -------
    float or int
        The value as a Python number.

    Raises
    ------
    TypeError
        ``x`` is a ``bool``, not a real number, or (``integer=True``) not an integer.
    ValueError
        ``x`` is NaN, infinite (``finite=True``) or outside the range; the message names
        ``name`` and the range.
    """
    kind = "an int" if integer else "a real number"
    if isinstance(x, _BOOL) or not _is_number(x):
        raise TypeError(f"{name} must be {kind}, got {type(x).__name__}")
    if integer and not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be {kind}, got {type(x).__name__}")
    v = int(x) if integer else float(x)
    rng = _range_text(lo, hi, lo_open, hi_open)
    if not integer and (math.isnan(v) or (finite and math.isinf(v))):
        what = "a finite number" if finite else "a number (not NaN)"
        raise ValueError(f"{name} must be {what}{' ' + rng if rng else ''}, got {v}")
    if _outside(v, lo, hi, lo_open, hi_open):
        raise ValueError(f"{name} must be {rng}, got {v}")
    return v


def check_positive_int(n, name: str, *, minimum: int = 1) -> int:
    """Check that ``n`` is an integer ``>= minimum`` and return it as a Python ``int``.

    Parameters
    ----------
    n : object
        The argument to check (``int`` or NumPy integer; ``bool`` and floats are rejected).
    name : str
        The argument's name, used in the error message.
    minimum : int
        The smallest allowed value.

    Returns
    -------
    int
        ``n``.
    """
    return check_number(n, name, lo=minimum, integer=True)


# --------------------------------------------------------------------------- #
# Tensors
# --------------------------------------------------------------------------- #
def _shape_str(shape: Sequence) -> str:
    """``(B, K)`` style; a one-element shape keeps Python's trailing comma, ``(N,)``."""
    inner = ", ".join(str(s) for s in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def _dtype_str(dtypes: Sequence[torch.dtype]) -> str:
    names = [str(d).replace("torch.", "") for d in dtypes]
    return names[0] if len(names) == 1 else "one of (" + ", ".join(names) + ")"


def _device_matches(actual: torch.device, want: torch.device) -> bool:
    if actual.type != want.type:
        return False
    return want.index is None or actual.index == want.index


def check_tensor(
    x,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    shape: Sequence[int | str | None] | None = None,
    complex_: bool | None = None,
    finite: bool = True,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    device: torch.device | str | None = None,
    lo=None,
    hi=None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> torch.Tensor:
    """Check that ``x`` is a torch tensor of the expected rank, shape, kind, dtype, device, range.

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
        Reject NaN or infinite entries (one synchronisation). With ``finite=False`` the
        entries are not inspected unless a range is given (then NaN is still rejected).
    dtype : torch.dtype or sequence of torch.dtype, optional
        Allowed dtypes.
    device : torch.device or str, optional
        Required device (``"cuda"`` matches any CUDA device, ``"cuda:1"`` only that one).
    lo, hi : float, optional
        Range of the entries of a real tensor (``lo_open``/``hi_open`` exclude the bound).

    Returns
    -------
    torch.Tensor
        ``x`` itself.

    Raises
    ------
    TypeError
        ``x`` is not a tensor, or has the wrong kind or dtype.
    ValueError
        Wrong rank, shape or device, non-finite entries, or entries outside the range.
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
    if dtype is not None:
        allowed_dt = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        if x.dtype not in allowed_dt:
            raise TypeError(f"{name} must have dtype {_dtype_str(allowed_dt)}, got {x.dtype}")
    if device is not None and not _device_matches(x.device, torch.device(device)):
        raise ValueError(f"{name} must be on device {torch.device(device)}, got {x.device}")
    ranged = lo is not None or hi is not None
    if ranged and (x.is_complex() or x.dtype == torch.bool):
        raise TypeError(f"{name} must be a real tensor to have a range, got {x.dtype}")
    if x.is_complex():
        if finite and x.numel() > 0 and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or infinite entries")
    elif ranged or (finite and x.is_floating_point()):
        _check_values(
            x,
            name,
            finite=finite and x.is_floating_point(),
            lo=lo,
            hi=hi,
            lo_open=lo_open,
            hi_open=hi_open,
        )
    return x


def check_complex(
    x, name: str, *, ndim=None, shape=None, finite: bool = True, dtype=None, device=None
) -> torch.Tensor:
    """Shorthand for :func:`~lib.core.check_tensor` with ``complex_=True`` (complex64 or
    complex128).

    Parameters
    ----------
    x, name, ndim, shape, finite, dtype, device
        As in :func:`~lib.core.check_tensor`.

    Returns
    -------
    torch.Tensor
        ``x`` itself.
    """
    return check_tensor(
        x, name, ndim=ndim, shape=shape, complex_=True, finite=finite, dtype=dtype, device=device
    )


def check_real(
    x, name: str, *, ndim=None, shape=None, finite: bool = True, dtype=None, device=None
) -> torch.Tensor:
    """Shorthand for :func:`~lib.core.check_tensor` with ``complex_=False`` (float32 or float64).

    Parameters
    ----------
    x, name, ndim, shape, finite, dtype, device
        As in :func:`~lib.core.check_tensor`.

    Returns
    -------
    torch.Tensor
        ``x`` itself.
    """
    return check_tensor(
        x, name, ndim=ndim, shape=shape, complex_=False, finite=finite, dtype=dtype, device=device
    )


_FLOATING = (torch.float32, torch.float64)
_COMPLEX = (torch.complex64, torch.complex128)


def check_dtype(
    dtype, name: str = "dtype", *, complex_: bool | None = None, allowed=None
) -> torch.dtype:
    """Check a ``dtype`` argument and return it.

    Parameters
    ----------
    dtype : object
        The argument to check.
    name : str
        The argument's name, used in the error message.
    complex_ : bool, optional
        ``True`` allows ``complex64``/``complex128``, ``False`` ``float32``/``float64``,
        ``None`` any of the four.
    allowed : sequence of torch.dtype, optional
        Explicit list of allowed dtypes (overrides ``complex_``).

    Returns
    -------
    torch.dtype
        ``dtype``.

    Raises
    ------
    TypeError
        ``dtype`` is not a ``torch.dtype`` or not an allowed one (e.g. a real dtype where the
        quantity is complex: casting would silently drop the imaginary part).
    """
    if allowed is None:
        allowed = {True: _COMPLEX, False: _FLOATING, None: _FLOATING + _COMPLEX}[complex_]
    allowed = tuple(allowed)
    if not isinstance(dtype, torch.dtype) or dtype not in allowed:
        shown = " or ".join(str(d) for d in allowed)
        raise TypeError(f"{name} must be {shown}, got {dtype}")
    return dtype


def _names(n: int, names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [f"argument {i}" for i in range(n)]
    names = list(names)
    if len(names) != n:
        raise ValueError(f"names must have one entry per tensor ({n}), got {len(names)}")
    return names


def _collect(tensors, names, attr: str) -> list:
    """``(label, tensor.<attr>)`` of every tensor that is not ``None`` (TypeError otherwise)."""
    seen = []
    for t, label in zip(tensors, _names(len(tensors), names)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{label} must be a torch.Tensor, got {type(t).__name__}")
        seen.append((label, getattr(t, attr)))
    return seen


def same_device(*tensors, names: Sequence[str] | None = None) -> torch.device | None:
    """Check that the given tensors live on one device and return it.

    Parameters
    ----------
    *tensors : torch.Tensor or None
        The tensors (``None`` entries, e.g. omitted optional arguments, are skipped).
    names : sequence of str, optional
        Their argument names, one per entry of ``tensors``, used in the error message.

    Returns
    -------
    torch.device or None
        The common device (``None`` when every entry is ``None``).

    Raises
    ------
    TypeError
        An entry is neither a tensor nor ``None``.
    ValueError
        The tensors are on different devices; the message lists each argument's device.
    """
    seen = _collect(tensors, names, "device")
    if seen and any(d != seen[0][1] for _, d in seen):
        where = ", ".join(f"{label} on {d}" for label, d in seen)
        together = ", ".join(label for label, _ in seen)
        raise ValueError(f"{together} must be on the same device, got {where}")
    return seen[0][1] if seen else None


def same_dtype(*tensors, names: Sequence[str] | None = None) -> torch.dtype | None:
    """Check that the given tensors have one dtype and return it (no silent casts).

    Parameters
    ----------
    *tensors : torch.Tensor or None
        The tensors (``None`` entries are skipped).
    names : sequence of str, optional
        Their argument names, one per entry.

    Returns
    -------
    torch.dtype or None
        The common dtype (``None`` when every entry is ``None``).

    Raises
    ------
    TypeError
        An entry is not a tensor, or the dtypes differ (the message lists each one).
    """
    seen = _collect(tensors, names, "dtype")
    if seen and any(d != seen[0][1] for _, d in seen):
        what = ", ".join(f"{label} is {d}" for label, d in seen)
        together = ", ".join(label for label, _ in seen)
        raise TypeError(f"{together} must have the same dtype, got: {what}")
    return seen[0][1] if seen else None


# --------------------------------------------------------------------------- #
# Scalar-or-tensor parsers
# --------------------------------------------------------------------------- #
def _real_input(value, name: str) -> float | torch.Tensor:
    """A Python/NumPy number as ``float`` (not yet range-checked), a NumPy array or a tensor as
    a real tensor; ``TypeError`` for anything else, for ``bool`` and for complex values."""
    if isinstance(value, _BOOL):
        raise TypeError(f"{name} must be a number or a real tensor, got bool")
    if _is_number(value):
        return float(value)
    if isinstance(value, np.ndarray):
        value = torch.as_tensor(value)
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be real, got {value.dtype}")
        return value
    raise TypeError(f"{name} must be a number or a torch.Tensor, got {type(value).__name__}")


def _check_scalar_range(v: float, name: str, lo, lo_open: bool, finite_msg: str, hint: str):
    if not math.isfinite(v):
        raise ValueError(finite_msg)
    if lo is not None and _outside(v, lo, None, lo_open, False):
        raise ValueError(
            f"{name} must be {_range_text(lo, None, lo_open, False)}{hint}, got min {v:.4g}"
        )


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
    """Turn a scalar or a ``(B,)`` tensor into a real ``(B,)`` tensor, checking its range.

    Used for ``power`` and ``noise_var`` arguments, which may be one number for the whole
    batch or one per sample (``CONTRIBUTING.md``, *lib conventions*).

    Parameters
    ----------
    value : float, NumPy array or torch.Tensor
        A Python/NumPy number, a 0-d tensor, or shape ``(B,)``; finite.
    name : str
        Argument name used in error messages.
    batch : int
        ``B``.
    dtype, device
        Of the returned tensor (take those of the input the quantity belongs to).
    positive : bool
        Require every entry ``> 0`` (``>= 0`` with ``allow_zero``).
    allow_zero : bool
        Accept zeros (e.g. a noiseless ``noise_var``).

    Returns
    -------
    torch.Tensor
        Real ``(B,)`` tensor (it may share memory with a ``(B,)`` tensor ``value`` of the same
        dtype and device: do not write into it).
    """
    v = _real_input(value, name)
    lo = 0.0 if positive else None
    finite_msg = f"{name} must be finite"
    if isinstance(v, float):
        _check_scalar_range(v, name, lo, not allow_zero, finite_msg, "")
        return torch.full((batch,), v, dtype=dtype, device=device)
    if v.dim() == 0:
        t = v.to(dtype=dtype, device=device).expand(batch).clone()
    elif v.shape == (batch,):
        t = v.to(dtype=dtype, device=device)
    else:
        raise ValueError(f"{name} must be a scalar or have shape ({batch},), got {tuple(v.shape)}")
    _check_values(t, name, finite=True, lo=lo, lo_open=not allow_zero, finite_msg=finite_msg)
    return t


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
    allow_zero : bool
        Accept zeros.

    Returns
    -------
    torch.Tensor
        Real ``(B, K)`` tensor (possibly an expanded view: do not write into it).
    """
    v = _real_input(value, name)
    hint = " (linear scale, not dB)"
    finite_msg = f"{name} must be finite{hint}"
    if isinstance(v, float):
        _check_scalar_range(v, name, 0.0, not allow_zero, finite_msg, hint)
        return torch.full((batch, users), v, dtype=dtype, device=device)
    if v.dim() == 0 or v.shape == (users,):
        g = v.to(dtype=dtype, device=device).expand(batch, users)
    elif v.shape == (batch, users):
        g = v.to(dtype=dtype, device=device)
    else:
        raise ValueError(
            f"{name} must be a scalar or have shape ({users},) or ({batch}, {users}), "
            f"got {tuple(v.shape)}"
        )
    _check_values(
        g, name, finite=True, lo=0.0, lo_open=not allow_zero, finite_msg=finite_msg, hint=hint
    )
    return g
