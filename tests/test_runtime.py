"""lib.core.runtime and lib.core.units: seeds, threads, devices, random draws on a device, dB."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lib.core import db_to_lin, draw_rand, draw_randn, get_device, lin_to_db, set_seed, set_threads


def test_set_seed_reproducible():
    g1 = set_seed(3)
    a = (torch.randn(4), np.random.rand(2), torch.randn(2, generator=g1))  # noqa: NPY002
    g2 = set_seed(3)
    b = (torch.randn(4), np.random.rand(2), torch.randn(2, generator=g2))  # noqa: NPY002
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and torch.equal(a[2], b[2])
    assert g1.device.type == "cpu"


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (-1, ValueError, "seed must be in"),
        (2**64, ValueError, "seed must be in"),
        (1.5, TypeError, "seed must be an int, got float"),
        (True, TypeError, "seed must be an int, got bool"),
        ("0", TypeError, "seed must be an int, got str"),
    ],
)
def test_set_seed_rejects(bad, exc, match):
    with pytest.raises(exc, match=match):
        set_seed(bad)


def test_set_threads_env(monkeypatch):
    old = torch.get_num_threads()
    monkeypatch.setenv("BOOK_TORCH_THREADS", "1")
    assert set_threads() == 1 and torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="n must be >= 1"):
        set_threads(0)
    with pytest.raises(TypeError, match="n must be an int"):
        set_threads(1.0)
    for raw in ("two", "0", "-3", ""):
        monkeypatch.setenv("BOOK_TORCH_THREADS", raw)
        with pytest.raises(ValueError, match="BOOK_TORCH_THREADS must be a positive integer"):
            set_threads()
    torch.set_num_threads(old)


def test_get_device():
    assert get_device("cpu").type == "cpu"
    assert get_device(torch.device("cpu")).type == "cpu"
    assert get_device().type in {"cpu", "cuda"}
    assert get_device("auto").type in {"cpu", "cuda"}
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            get_device("cuda")
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda'"):
        get_device("gpu0")
    with pytest.raises(TypeError, match="device must be a str or torch.device, got int"):
        get_device(0)


def test_draws_follow_the_generator_then_move():
    """A generator's numbers do not depend on the target device: drawn there, then moved."""
    ref = torch.randn(5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    got = draw_randn(5, generator=torch.Generator().manual_seed(7), device="cpu")
    assert torch.equal(ref, got)
    u = draw_rand(2, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float32)
    assert u.dtype == torch.float32 and u.shape == (2, 3)
    assert torch.equal(u, torch.rand(2, 3, generator=torch.Generator().manual_seed(7)))
    # the result lives on the requested device (meta stands in for an accelerator)
    on_meta = draw_randn(4, generator=torch.Generator().manual_seed(7), device="meta")
    assert on_meta.device.type == "meta" and on_meta.dtype == torch.float64
    assert draw_rand(3, device="meta").device.type == "meta"  # no generator: drawn there
    with pytest.raises(TypeError, match="generator must be a torch.Generator, got int"):
        draw_randn(3, generator=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_gives_same_numbers_on_cuda():
    a = draw_randn(6, generator=torch.Generator().manual_seed(1), device="cuda")
    b = draw_randn(6, generator=torch.Generator().manual_seed(1))
    assert a.device.type == "cuda" and torch.equal(a.cpu(), b)
    c = draw_randn(6, generator=torch.Generator("cuda").manual_seed(1), device="cuda")
    assert c.device.type == "cuda"


# --------------------------------------------------------------------------- #
# Units
# --------------------------------------------------------------------------- #
@given(st.floats(min_value=-100, max_value=100, allow_nan=False))
def test_db_roundtrip(x_db):
    assert math.isclose(lin_to_db(db_to_lin(x_db)), x_db, abs_tol=1e-9)


def test_db_types():
    t = db_to_lin(torch.tensor([0.0, 10.0, 20.0], dtype=torch.float64))
    assert torch.allclose(t, torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64))
    assert db_to_lin(torch.tensor([10.0], dtype=torch.float32)).dtype == torch.float32
    assert np.allclose(lin_to_db(np.array([1.0, 1000.0])), [0.0, 30.0])
    assert isinstance(db_to_lin(np.float32(10.0)), float)
    assert db_to_lin(-math.inf) == 0.0 and lin_to_db(math.inf) == math.inf


@pytest.mark.parametrize(
    "fn, bad, exc, match",
    [
        (lin_to_db, 0.0, ValueError, "x must be > 0 to convert to dB, got 0.0"),
        (lin_to_db, -1, ValueError, "x must be > 0"),
        (lin_to_db, math.nan, ValueError, r"x must be a number \(not NaN\)"),
        (lin_to_db, True, TypeError, "x must be a real number, got bool"),
        (db_to_lin, math.nan, ValueError, r"x_db must be a number \(not NaN\)"),
        (db_to_lin, np.float64("nan"), ValueError, "x_db must be a number"),
        (db_to_lin, False, TypeError, "x_db must be a real number, got bool"),
    ],
)
def test_db_rejects(fn, bad, exc, match):
    with pytest.raises(exc, match=match):
        fn(bad)
