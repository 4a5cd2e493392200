"""DPC sum capacity at extreme SNR (issue 10): the right answer or a clear error, never NaN."""

from __future__ import annotations

import math
import time

import pytest
import torch

from lib import precoding as dl
from lib.core import set_threads
from lib.phy import rayleigh

set_threads(1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("snr", [1e8, 1e30])
def test_dpc_high_snr_matches_asymptote(snr):
    """K = M: C = K log2(P / (K sigma^2)) + log2 det(H H^H) + o(1) (equal powers optimal)."""
    H = rayleigh(4, 3, 3, generator=_gen(0))
    c = dl.dpc_sum_capacity(H, 1.0, 1.0 / snr)
    asym = 3 * math.log2(snr / 3) + torch.logdet(H @ H.mH).real / math.log(2)
    assert torch.isfinite(c).all()
    torch.testing.assert_close(c, asym, rtol=1e-6, atol=1e-4)


def test_dpc_high_snr_fewer_users_than_antennas_is_a_clear_error():
    H = rayleigh(2, 2, 4, generator=_gen(1))
    with pytest.raises(ValueError, match="numerically singular.*power / noise_var"):
        dl.dpc_sum_capacity(H, 1.0, 1e-30)
    H1 = rayleigh(2, 1, 4, generator=_gen(2))  # one user: C = log2(1 + P ||h||^2 / sigma^2)
    c = dl.dpc_sum_capacity(H1, 1.0, 1e-12)
    torch.testing.assert_close(c, torch.log2(1 + 1e12 * (H1.abs() ** 2).sum((-2, -1))))


@pytest.mark.parametrize("snr", [1e-8, 1e-30])
def test_dpc_low_snr_relative_accuracy(snr):
    """C -> (P / sigma^2) max_k ||h_k||^2 / ln 2: all power on the strongest user."""
    H = rayleigh(5, 3, 3, generator=_gen(3))
    c = dl.dpc_sum_capacity(H, 1.0, 1.0 / snr)
    ref = snr * (H.abs() ** 2).sum(-1).max(-1).values / math.log(2)
    torch.testing.assert_close(c / ref, torch.ones_like(c), rtol=1e-5, atol=0)


def test_dpc_complex64_stops_at_its_precision():
    H = rayleigh(20, 4, 4, generator=_gen(4))
    t0 = time.perf_counter()
    c32 = dl.dpc_sum_capacity(H.to(torch.complex64), 1.0, 0.1)
    # stops at the float32 rounding level of the gap (the old fixed 1e-6 bits ran all 3000
    # iterations: 18 s here, against under 1 s now)
    assert time.perf_counter() - t0 < 8.0
    c64 = dl.dpc_sum_capacity(H, 1.0, 0.1)
    assert c32.dtype == torch.float32
    torch.testing.assert_close(c32.double(), c64, rtol=1e-4, atol=1e-4)
