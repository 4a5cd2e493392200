"""lib.core: seeding, devices, dB conversions and input validation."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lib import core as utils


def test_set_seed_reproducible():
    g1 = utils.set_seed(3)
    a = (torch.randn(4), np.random.rand(2), torch.randn(2, generator=g1))  # noqa: NPY002
    g2 = utils.set_seed(3)
    b = (torch.randn(4), np.random.rand(2), torch.randn(2, generator=g2))  # noqa: NPY002
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and torch.equal(a[2], b[2])


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_set_seed_rejects(bad, exc):
    with pytest.raises(exc, match="seed"):
        utils.set_seed(bad)


def test_set_threads_env(monkeypatch):
    old = torch.get_num_threads()
    monkeypatch.setenv("BOOK_TORCH_THREADS", "1")
    assert utils.set_threads() == 1 and torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="n must be >= 1"):
        utils.set_threads(0)
    torch.set_num_threads(old)


def test_get_device():
    assert utils.get_device("cpu").type == "cpu"
    assert utils.get_device().type in {"cpu", "cuda"}
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            utils.get_device("cuda")


@given(st.floats(min_value=-100, max_value=100, allow_nan=False))
def test_db_roundtrip(x_db):
    assert math.isclose(utils.lin_to_db(utils.db_to_lin(x_db)), x_db, abs_tol=1e-9)


def test_db_types():
    t = utils.db_to_lin(torch.tensor([0.0, 10.0, 20.0], dtype=torch.float64))
    assert torch.allclose(t, torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64))
    assert np.allclose(utils.lin_to_db(np.array([1.0, 1000.0])), [0.0, 30.0])
    with pytest.raises(ValueError, match="> 0"):
        utils.lin_to_db(0.0)


def test_check_tensor_messages():
    x = torch.zeros(2, 3, dtype=torch.complex64)
    assert utils.check_complex(x, "H", shape=("batch", 3)) is x
    with pytest.raises(TypeError, match="H must be a torch.Tensor"):
        utils.check_tensor([1, 2], "H")
    with pytest.raises(ValueError, match=r"H must have shape \(batch, 4\), got \(2, 3\)"):
        utils.check_tensor(x, "H", shape=("batch", 4))
    with pytest.raises(ValueError, match="H must have 3 dimensions"):
        utils.check_tensor(x, "H", ndim=3)
    with pytest.raises(TypeError, match="must be a real floating tensor"):
        utils.check_real(x, "A")
    with pytest.raises(TypeError, match="must be a complex tensor"):
        utils.check_complex(torch.zeros(2), "H")
    with pytest.raises(ValueError, match="NaN or infinite"):
        utils.check_tensor(torch.tensor([float("nan")]), "y")


def test_per_sample():
    expected = torch.full((3,), 2.0, dtype=torch.float64)
    assert torch.equal(utils.per_sample(2.0, "power", 3), expected)
    t = utils.per_sample(torch.tensor([1.0, 2.0]), "power", 2)
    assert t.dtype == torch.float64 and t.tolist() == [1.0, 2.0]
    assert utils.per_sample(torch.tensor(3.0), "power", 2).tolist() == [3.0, 3.0]
    with pytest.raises(ValueError, match=r"power must be > 0"):
        utils.per_sample(-1.0, "power", 2)
    with pytest.raises(ValueError, match=r"noise_var must be a scalar or have shape \(2,\)"):
        utils.per_sample(torch.ones(3), "noise_var", 2)
    with pytest.raises(TypeError, match="noise_var must be real"):
        utils.per_sample(torch.ones(2, dtype=torch.complex64), "noise_var", 2)
    assert utils.per_sample(0.0, "noise_var", 2, allow_zero=True).tolist() == [0.0, 0.0]


def test_check_positive_int():
    assert utils.check_positive_int(3, "iters") == 3
    with pytest.raises(TypeError, match="iters must be an int"):
        utils.check_positive_int(2.0, "iters")
    with pytest.raises(ValueError, match="iters must be >= 1"):
        utils.check_positive_int(0, "iters")
