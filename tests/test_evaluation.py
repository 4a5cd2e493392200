"""lib.core.evaluation: mean with standard error, first crossing of a level."""

import math

import numpy as np
import pytest
import torch

from lib.core import first_below, mean_se, ratio_db_se


def test_mean_se_one_dimensional():
    m, se = mean_se(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert m == 2.5 and math.isclose(se, np.std([1, 2, 3, 4], ddof=1) / 2)
    assert isinstance(m, float) and isinstance(se, float)


def test_mean_se_along_last_dim_matches_numpy():
    x = torch.randn(3, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m, se = mean_se(x)
    assert m.shape == (3,) and np.allclose(m, x.numpy().mean(-1))
    assert np.allclose(se, x.numpy().std(-1, ddof=1) / math.sqrt(50))
    m0, _ = mean_se(x, dim=0)
    assert m0.shape == (50,)


def test_mean_se_rejects():
    with pytest.raises(ValueError, match="at least 2 samples"):
        mean_se([1.0])
    with pytest.raises(TypeError, match="x must be real"):
        mean_se(torch.ones(3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="at least one dimension"):
        mean_se(torch.tensor(1.0))


def test_first_below():
    assert first_below([0.0, -10.0, -36.0, -40.0], -35.0) == 3
    assert first_below(np.array([-1.0, -2.0]), -35.0) is None
    assert first_below([-50.0], -35.0) == 1
    with pytest.raises(ValueError, match="one-dimensional"):
        first_below(np.zeros((2, 2)), 0.0)


@pytest.mark.parametrize(
    "x, kw, exc, match",
    [
        (torch.tensor([1.0, float("nan"), 2.0]), {}, ValueError, "x contains NaN or infinite"),
        (np.array([[1.0, 2.0], [np.nan, 1.0]]), {}, ValueError, "x contains NaN or infinite"),
        ([1.0, float("inf")], {}, ValueError, "x contains NaN or infinite"),
        (torch.ones(3, 4), {"dim": 2}, ValueError, r"dim must be in \[-2, 1\], got 2"),
        (torch.ones(3, 4), {"dim": 1.0}, TypeError, "dim must be an int"),
        (torch.ones(3, dtype=torch.bool), {}, TypeError, "x must be real"),
    ],
)
def test_mean_se_rejects_bad_samples(x, kw, exc, match):
    with pytest.raises(exc, match=match):
        mean_se(x, **kw)


def test_mean_se_detaches_a_tensor_that_requires_grad():
    x = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    m, se = mean_se(x)
    assert m == pytest.approx(7 / 3) and se == pytest.approx(float(x.detach().std()) / 3**0.5)


def test_first_below_tensor_and_level_checks():
    assert first_below(torch.tensor([0.0, -40.0]), -35.0) == 2
    assert first_below([float("nan"), -40.0], -35.0) == 2  # NaN entries never count
    assert first_below([-40.0], float("inf")) == 1
    with pytest.raises(ValueError, match=r"level must be a number \(not NaN\)"):
        first_below([-40.0], float("nan"))
    with pytest.raises(TypeError, match="level must be a real number"):
        first_below([-40.0], "low")


def test_ratio_db_se_matches_the_spread_of_repeated_experiments():
    # paired squared errors with a shared per-signal difficulty: the pairing matters
    rng = np.random.default_rng(0)

    def draw(n):
        hard = rng.lognormal(0.0, 1.0, n)
        return hard * rng.uniform(0.2, 0.8, n), hard * rng.uniform(0.5, 1.5, n)

    a, b = draw(2000)
    r, se = ratio_db_se(a, b)
    assert r == pytest.approx(10 * math.log10(a.mean() / b.mean()))
    reps = np.array([ratio_db_se(*draw(2000))[0] for _ in range(300)])
    assert se == pytest.approx(reps.std(ddof=1), rel=0.15)  # delta method vs the real spread
    # an unpaired SE would be larger: the shared difficulty cancels in the ratio
    unpaired = (
        10
        / math.log(10)
        * math.sqrt(a.var(ddof=1) / a.mean() ** 2 / a.size + b.var(ddof=1) / b.mean() ** 2 / b.size)
    )
    assert se < 0.5 * unpaired
    # batched along dim, identical samples give a zero ratio and a zero error
    rr, ss = ratio_db_se(np.stack([a, a]), np.stack([b, a]))
    assert rr.shape == (2,) and rr[1] == 0 and ss[1] == 0
    for bad, match in [((a, b[:5]), "one shape"), ((a[:1], b[:1]), "at least 2"),
                       ((-a, b), "non-negative"), ((0 * a, b), "positive means")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            ratio_db_se(*bad)
