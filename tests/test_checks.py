"""lib.core.checks: every check accepts what it should and rejects the rest with the right
exception type and a message that names the argument and the expected shape or range."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.core import checks
from lib.core.checks import (
    _complex_dtype,
    _real_dtype,
    check_complex,
    check_dtype,
    check_number,
    check_positive_int,
    check_real,
    check_tensor,
    per_sample,
    per_user,
    same_device,
    same_dtype,
)


# --------------------------------------------------------------------------- #
# check_number
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "value, kw, expected",
    [
        (2, {}, 2.0),
        (2.5, {}, 2.5),
        (np.float64(0.25), {"lo": 0.0, "hi": 1.0}, 0.25),
        (np.float32(0.5), {"lo": 0.0, "lo_open": True}, 0.5),
        (np.int64(3), {"integer": True, "lo": 1}, 3),
        (0.0, {"lo": 0.0}, 0.0),  # closed bound includes the bound
        (1.0, {"lo": 0.0, "hi": 1.0, "lo_open": True}, 1.0),
        (math.inf, {"finite": False}, math.inf),
        (-math.inf, {"finite": False, "hi": 0.0}, -math.inf),
    ],
)
def test_check_number_accepts(value, kw, expected):
    out = check_number(value, "x", **kw)
    assert out == expected
    assert type(out) is (int if kw.get("integer") else float)


@pytest.mark.parametrize(
    "value, kw, exc, match",
    [
        (True, {}, TypeError, "gamma must be a real number, got bool"),
        (np.bool_(True), {}, TypeError, "gamma must be a real number, got bool"),
        ("1.0", {}, TypeError, "gamma must be a real number, got str"),
        (1 + 2j, {}, TypeError, "gamma must be a real number, got complex"),
        (None, {}, TypeError, "gamma must be a real number, got NoneType"),
        (torch.tensor(1.0), {}, TypeError, "gamma must be a real number, got Tensor"),
        (2.0, {"integer": True}, TypeError, "gamma must be an int, got float"),
        (True, {"integer": True}, TypeError, "gamma must be an int, got bool"),
        (math.nan, {}, ValueError, "gamma must be a finite number, got nan"),
        (math.nan, {"finite": False}, ValueError, r"gamma must be a number \(not NaN\)"),
        (math.inf, {}, ValueError, "gamma must be a finite number, got inf"),
        (-math.inf, {"lo": 0.0}, ValueError, "gamma must be a finite number >= 0, got -inf"),
        (math.inf, {"finite": False, "hi": 1.0}, ValueError, "gamma must be <= 1, got inf"),
        (-0.5, {"lo": 0.0}, ValueError, "gamma must be >= 0, got -0.5"),
        (0.0, {"lo": 0.0, "lo_open": True}, ValueError, "gamma must be > 0, got 0.0"),
        (1.5, {"hi": 1.0}, ValueError, "gamma must be <= 1, got 1.5"),
        (1.0, {"hi": 1.0, "hi_open": True}, ValueError, "gamma must be < 1, got 1.0"),
        (0.0, {"lo": 0, "hi": 1, "lo_open": True}, ValueError, r"gamma must be in \(0, 1\]"),
        (2.0, {"lo": 0, "hi": 1, "hi_open": True}, ValueError, r"gamma must be in \[0, 1\)"),
        (1e-12, {"lo": 1e-10}, ValueError, "gamma must be >= 1e-10, got 1e-12"),
        (0, {"lo": 1, "integer": True}, ValueError, "gamma must be >= 1, got 0"),
    ],
)
def test_check_number_rejects(value, kw, exc, match):
    with pytest.raises(exc, match=match):
        check_number(value, "gamma", **kw)


@settings(max_examples=200, deadline=None)
@given(
    x=st.floats(allow_nan=True, allow_infinity=True),
    lo=st.floats(-1e6, 1e6),
    width=st.floats(0, 1e6),
    lo_open=st.booleans(),
    hi_open=st.booleans(),
)
def test_check_number_is_exactly_the_interval(x, lo, width, lo_open, hi_open):
    """Property: accepted iff x is finite and inside the interval, and then returned unchanged."""
    hi = lo + width
    inside = (
        math.isfinite(x) and (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)
    )
    if inside:
        assert check_number(x, "x", lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open) == x
    else:
        with pytest.raises(ValueError, match="^x must be"):
            check_number(x, "x", lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)


def test_check_positive_int():
    assert check_positive_int(3, "iters") == 3
    assert check_positive_int(np.int32(2), "iters") == 2
    assert check_positive_int(0, "n", minimum=0) == 0
    with pytest.raises(TypeError, match="iters must be an int, got float"):
        check_positive_int(2.0, "iters")
    with pytest.raises(TypeError, match="iters must be an int, got bool"):
        check_positive_int(True, "iters")
    with pytest.raises(ValueError, match="iters must be >= 1, got 0"):
        check_positive_int(0, "iters")
    with pytest.raises(ValueError, match="n_quad must be >= 3, got 2"):
        check_positive_int(2, "n_quad", minimum=3)


# --------------------------------------------------------------------------- #
# check_tensor and friends
# --------------------------------------------------------------------------- #
def test_check_tensor_messages():
    x = torch.zeros(2, 3, dtype=torch.complex64)
    assert check_complex(x, "H", shape=("batch", 3)) is x
    with pytest.raises(TypeError, match="H must be a torch.Tensor, got list"):
        check_tensor([1, 2], "H")
    with pytest.raises(ValueError, match=r"H must have shape \(batch, 4\), got \(2, 3\)"):
        check_tensor(x, "H", shape=("batch", 4))
    with pytest.raises(ValueError, match=r"H must have 3 dimensions, got shape \(2, 3\)"):
        check_tensor(x, "H", ndim=3)
    with pytest.raises(ValueError, match="H must have 3 or 4 dimensions"):
        check_tensor(x, "H", ndim=(3, 4))
    with pytest.raises(TypeError, match="A must be a real floating tensor"):
        check_real(x, "A")
    with pytest.raises(TypeError, match="A must be a real floating tensor"):
        check_real(torch.zeros(2, dtype=torch.int64), "A")
    with pytest.raises(TypeError, match="H must be a complex tensor"):
        check_complex(torch.zeros(2), "H")


@pytest.mark.parametrize(
    "bad",
    [
        torch.tensor([1.0, float("nan")]),
        torch.tensor([float("inf"), 1.0]),
        torch.tensor([complex(1, float("nan"))]),
        torch.tensor([complex(float("inf"), 0)]),
    ],
)
def test_check_tensor_finite(bad):
    with pytest.raises(ValueError, match="y contains NaN or infinite entries"):
        check_tensor(bad, "y")
    assert check_tensor(bad, "y", finite=False) is bad  # the opt-out
    kind = bad.is_complex()
    with pytest.raises(ValueError, match="y contains NaN or infinite"):
        (check_complex if kind else check_real)(bad, "y")
    assert (check_complex if kind else check_real)(bad, "y", finite=False) is bad


def test_check_tensor_integer_and_empty_tensors_pass_the_finite_check():
    check_tensor(torch.arange(3), "idx")
    check_tensor(torch.zeros(0), "empty")
    check_tensor(torch.zeros(0), "empty", lo=1.0)


def test_check_tensor_dtype_and_device():
    x = torch.zeros(3, dtype=torch.float32)
    assert check_tensor(x, "x", dtype=torch.float32) is x
    assert check_tensor(x, "x", dtype=(torch.float64, torch.float32)) is x
    with pytest.raises(TypeError, match="x must have dtype float64, got torch.float32"):
        check_tensor(x, "x", dtype=torch.float64)
    with pytest.raises(TypeError, match=r"x must have dtype one of \(complex64, complex128\)"):
        check_tensor(x, "x", dtype=(torch.complex64, torch.complex128))
    assert check_tensor(x, "x", device="cpu") is x
    assert check_tensor(x, "x", device=torch.device("cpu")) is x
    with pytest.raises(ValueError, match="x must be on device cuda, got cpu"):
        check_tensor(x, "x", device="cuda")
    with pytest.raises(ValueError, match="x must be on device meta, got cpu"):
        check_tensor(x, "x", device="meta")


@pytest.mark.parametrize(
    "values, kw, match",
    [
        ([1.0, -1.0], {"lo": 0.0}, r"w must be >= 0, got min -1"),
        ([1.0, 0.0], {"lo": 0.0, "lo_open": True}, r"w must be > 0, got min 0"),
        ([0.5, 3.0], {"lo": 0.0, "hi": 1.0}, r"w must be in \[0, 1\], got max 3"),
        ([0.5, 1.0], {"hi": 1.0, "hi_open": True}, r"w must be < 1, got max 1"),
        ([0.5, float("nan")], {"lo": 0.0, "finite": False}, "w contains NaN"),
    ],
)
def test_check_tensor_range(values, kw, match):
    t = torch.tensor(values, dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        check_tensor(t, "w", **kw)


def test_check_tensor_range_accepts_and_rejects_kinds():
    assert check_tensor(torch.tensor([0.0, 1.0]), "w", lo=0.0, hi=1.0) is not None
    assert check_tensor(torch.tensor([1.0, float("inf")]), "w", lo=0.0, finite=False) is not None
    check_tensor(torch.tensor([1, 2]), "idx", lo=0)
    with pytest.raises(ValueError, match="idx must be >= 0, got min -1"):
        check_tensor(torch.tensor([1, -1]), "idx", lo=0)
    with pytest.raises(TypeError, match="w must be a real tensor to have a range"):
        check_tensor(torch.ones(2, dtype=torch.complex64), "w", lo=0.0)
    with pytest.raises(TypeError, match="w must be a real tensor to have a range"):
        check_tensor(torch.ones(2, dtype=torch.bool), "w", lo=0.0)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_check_dtype_accepts(dtype):
    assert check_dtype(dtype, complex_=True) is dtype
    assert check_dtype(dtype) is dtype


@pytest.mark.parametrize(
    "bad, kw",
    [
        (torch.float64, {"complex_": True}),
        (torch.complex64, {"complex_": False}),
        (torch.int64, {}),
        ("complex64", {}),
        (np.complex64, {}),
        (torch.float32, {"allowed": (torch.float64,)}),
    ],
)
def test_check_dtype_rejects(bad, kw):
    with pytest.raises(TypeError, match="^dtype must be torch"):
        check_dtype(bad, **kw)


def test_same_device_and_dtype():
    a, b = torch.zeros(2), torch.ones(3)
    assert same_device(a, None, b, names=("a", "c", "b")) == torch.device("cpu")
    assert same_device(None, names=("a",)) is None
    assert same_dtype(a, b, names=("a", "b")) == torch.float32
    m = torch.empty(2, device="meta")  # a second device without a GPU
    with pytest.raises(
        ValueError, match="H, R must be on the same device, got H on cpu, R on meta"
    ):
        same_device(a, m, names=("H", "R"))
    with pytest.raises(ValueError, match="argument 0, argument 1 must be on the same device"):
        same_device(a, m)
    with pytest.raises(TypeError, match="y, A must have the same dtype, got: y is torch.float32"):
        same_dtype(a, b.double(), names=("y", "A"))
    with pytest.raises(TypeError, match="R must be a torch.Tensor, got float"):
        same_device(a, 1.0, names=("H", "R"))
    with pytest.raises(TypeError, match="R must be a torch.Tensor, got list"):
        same_dtype(a, [1], names=("H", "R"))
    with pytest.raises(ValueError, match="names must have one entry per tensor"):
        same_device(a, b, names=("a",))


def test_real_and_complex_dtype_helpers():
    assert _real_dtype(torch.zeros(1, dtype=torch.complex128)) == torch.float64
    assert _real_dtype(torch.complex64) == torch.float32
    assert _real_dtype(torch.float32) == torch.float32
    assert _real_dtype(torch.zeros(1, dtype=torch.int64)) == torch.get_default_dtype()
    assert _complex_dtype(torch.float64) == torch.complex128
    assert _complex_dtype(torch.zeros(1)) == torch.complex64
    assert _complex_dtype(torch.complex128) == torch.complex128
    assert checks._eps(torch.complex64) == torch.finfo(torch.float32).eps


# --------------------------------------------------------------------------- #
# per_sample / per_user
# --------------------------------------------------------------------------- #
def test_per_sample_accepts():
    expected = torch.full((3,), 2.0, dtype=torch.float64)
    assert torch.equal(per_sample(2.0, "power", 3), expected)
    assert torch.equal(per_sample(np.float32(2.0), "power", 3), expected)
    t = per_sample(torch.tensor([1.0, 2.0]), "power", 2)
    assert t.dtype == torch.float64 and t.tolist() == [1.0, 2.0]
    assert per_sample(torch.tensor(3.0), "power", 2).tolist() == [3.0, 3.0]
    assert per_sample(np.array([1.0, 4.0]), "power", 2).tolist() == [1.0, 4.0]
    assert per_sample(0.0, "noise_var", 2, allow_zero=True).tolist() == [0.0, 0.0]
    assert per_sample(-1.0, "offset", 2, positive=False).tolist() == [-1.0, -1.0]
    t32 = per_sample(1.0, "power", 2, dtype=torch.float32, device="meta")
    assert t32.dtype == torch.float32 and t32.device.type == "meta"


@pytest.mark.parametrize(
    "value, kw, exc, match",
    [
        (-1.0, {}, ValueError, r"power must be > 0, got min -1"),
        (0.0, {}, ValueError, r"power must be > 0, got min 0"),
        (-1.0, {"allow_zero": True}, ValueError, r"power must be >= 0, got min -1"),
        (torch.tensor([1.0, -2.0]), {}, ValueError, r"power must be > 0, got min -2"),
        (float("nan"), {}, ValueError, "power must be finite"),
        (float("inf"), {}, ValueError, "power must be finite"),
        (float("nan"), {"positive": False}, ValueError, "power must be finite"),
        (torch.tensor([1.0, float("nan")]), {}, ValueError, "power must be finite"),
        (torch.tensor(float("inf")), {}, ValueError, "power must be finite"),
        (torch.tensor(1e300, dtype=torch.float64), {"dtype": torch.float32}, ValueError, "finite"),
        (torch.ones(3), {}, ValueError, r"power must be a scalar or have shape \(2,\)"),
        (torch.ones(2, 1), {}, ValueError, r"power must be a scalar or have shape \(2,\)"),
        (torch.ones(2, dtype=torch.complex64), {}, TypeError, "power must be real"),
        (torch.ones(2, dtype=torch.bool), {}, TypeError, "power must be real"),
        (True, {}, TypeError, "power must be a number or a real tensor, got bool"),
        ("1", {}, TypeError, "power must be a number or a torch.Tensor, got str"),
        ([1.0, 2.0], {}, TypeError, "power must be a number or a torch.Tensor, got list"),
    ],
)
def test_per_sample_rejects(value, kw, exc, match):
    with pytest.raises(exc, match=match):
        per_sample(value, "power", 2, **kw)


def test_per_user_accepts():
    g = per_user(2.0, "sinr_targets", 3, 2)
    assert g.shape == (3, 2) and bool((g == 2.0).all()) and g.dtype == torch.float64
    g = per_user(np.array([1.0, 2.0]), "sinr_targets", 3, 2)
    assert g.tolist() == [[1.0, 2.0]] * 3
    g = per_user(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "sinr_targets", 2, 2, dtype=torch.float32)
    assert g.dtype == torch.float32 and g.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert per_user(0.0, "e", 1, 2, allow_zero=True).tolist() == [[0.0, 0.0]]
    assert per_user(torch.tensor(3.0), "e", 2, 1).tolist() == [[3.0], [3.0]]


@pytest.mark.parametrize(
    "value, kw, exc, match",
    [
        (float("inf"), {}, ValueError, r"gamma must be finite \(linear scale, not dB\)"),
        (float("nan"), {}, ValueError, r"gamma must be finite \(linear scale, not dB\)"),
        (torch.tensor([1.0, float("inf")]), {}, ValueError, "gamma must be finite"),
        (np.array([1.0, np.nan]), {}, ValueError, "gamma must be finite"),
        (-3.0, {}, ValueError, r"gamma must be > 0 \(linear scale, not dB\), got min -3"),
        (0.0, {}, ValueError, r"gamma must be > 0 \(linear scale, not dB\)"),
        (torch.tensor([1.0, 0.0]), {}, ValueError, r"gamma must be > 0"),
        (-1.0, {"allow_zero": True}, ValueError, r"gamma must be >= 0"),
        (torch.ones(3), {}, ValueError, r"gamma must be a scalar or have shape \(2,\) or \(4, 2\)"),
        (torch.ones(2, dtype=torch.complex64), {}, TypeError, "gamma must be real"),
        (np.array([True, False]), {}, TypeError, "gamma must be real"),
        (False, {}, TypeError, "got bool"),
        (None, {}, TypeError, "gamma must be a number or a torch.Tensor, got NoneType"),
        ([1.0, 2.0], {}, TypeError, "gamma must be a number or a torch.Tensor, got list"),
    ],
)
def test_per_user_rejects(value, kw, exc, match):
    with pytest.raises(exc, match=match):
        per_user(value, "gamma", 4, 2, **kw)


@settings(max_examples=100, deadline=None)
@given(v=st.floats(min_value=1e-300, max_value=1e300), b=st.integers(1, 4), k=st.integers(1, 4))
def test_scalar_parsers_broadcast_any_positive_number(v, b, k):
    """Property: a positive finite number becomes a constant tensor of the requested shape."""
    t = per_sample(v, "p", b)
    g = per_user(v, "g", b, k)
    assert t.shape == (b,) and bool((t == v).all())
    assert g.shape == (b, k) and bool((g == v).all())


def test_shape_message_of_a_vector_has_the_trailing_comma():
    with pytest.raises(ValueError, match=r"^g must have shape \(32,\), got \(31,\)$"):
        check_tensor(torch.zeros(31), "g", shape=(32,))
    with pytest.raises(ValueError, match=r"^g must have shape \(batch, 3\), got \(2,\)$"):
        check_tensor(torch.zeros(2), "g", shape=("batch", 3))
