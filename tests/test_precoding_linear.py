"""Linear precoders (issue 10): one interface, ZF on rank-deficient and ill-conditioned H."""

from __future__ import annotations

import pytest
import torch

from lib import precoding as dl
from lib.core import set_threads
from lib.phy import rayleigh

set_threads(1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", ["mrt", "zf", "rzf", "wmmse"])
def test_every_precoder_takes_h_power_noise_var(name):
    H = rayleigh(3, 2, 4, generator=_gen(0))
    s2 = torch.tensor([0.1, 1.0, 2.0], dtype=torch.float64)
    V = getattr(dl, name)(H, 1.5, s2)
    assert V.shape == (3, 4, 2) and V.dtype == H.dtype
    with pytest.raises(ValueError, match="noise_var must be > 0"):
        getattr(dl, name)(H, 1.5, -1.0)


@pytest.mark.parametrize("name", ["mrt", "zf"])
def test_noise_var_is_unused_where_documented(name):
    H = rayleigh(3, 2, 4, generator=_gen(1))
    f = getattr(dl, name)
    torch.testing.assert_close(f(H, 1.5), f(H, 1.5, 0.3))
    torch.testing.assert_close(f(H, 1.5, 10.0), f(H, 1.5, 0.3))


def test_zf_rejects_identical_user_rows_in_one_sample():
    H = rayleigh(4, 3, 4, generator=_gen(2))
    H[2, 1] = H[2, 0]  # sample 2: two users with the same channel
    with pytest.raises(ValueError, match=r"zf needs H of full row rank.*sample\(s\) \[2\]"):
        dl.zf(H, 1.0)
    dl.zf(H[[0, 1, 3]], 1.0)  # the other samples are fine


def test_zf_rejects_rank_deficient_complex64_and_zero_user():
    H = rayleigh(2, 2, 3, generator=_gen(3), dtype=torch.complex64)
    H1 = H.clone()
    H1[0, 1] = (1 + 2j) * H1[0, 0]
    with pytest.raises(ValueError, match="full row rank"):
        dl.zf(H1, 1.0)
    H2 = H.clone()
    H2[1, 0] = 0
    with pytest.raises(ValueError, match="full row rank"):
        dl.zf(H2, 1.0)


def test_zf_more_users_than_antennas():
    with pytest.raises(ValueError, match="full row rank.*users <= antennas"):
        dl.zf(rayleigh(2, 5, 4, generator=_gen(4)), 1.0)


def test_zf_accurate_on_ill_conditioned_channel():
    """Condition number 1e6: ZF through H H^H (condition 1e12) would leak ~1e-4."""
    H = rayleigh(5, 3, 4, generator=_gen(5))
    U, _, Wh = torch.linalg.svd(H, full_matrices=False)
    s = torch.tensor([1.0, 1e-3, 1e-6], dtype=torch.float64)
    H = U @ (s.to(H.dtype)[:, None] * Wh)
    V = dl.zf(H, 1.0)
    G = H @ V
    d = torch.diagonal(G, dim1=-2, dim2=-1)
    off = G - torch.diag_embed(d)
    assert off.abs().max() < 1e-9 * d.abs().min()
    torch.testing.assert_close(_power := (V.abs() ** 2).sum((-2, -1)), torch.ones_like(_power))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_outputs_take_the_dtype_of_h(dtype):
    H = rayleigh(3, 2, 3, generator=_gen(6), dtype=dtype)
    rdt = torch.float32 if dtype == torch.complex64 else torch.float64
    for V in (dl.mrt(H, 1.0), dl.zf(H, 1.0), dl.rzf(H, 1.0, 0.1), dl.wmmse(H, 1.0, 0.1, 3)):
        assert V.dtype == dtype
    assert dl.sum_rate(H, dl.zf(H, 1.0), 0.1).dtype == rdt
    assert dl.dpc_sum_capacity(H, 1.0, 0.1).dtype == rdt


def test_rzf_equal_power_gives_every_user_p_over_k_in_the_rzf_directions():
    from lib.phy import rayleigh
    from lib.precoding import rzf

    H = rayleigh(6, 3, 8, generator=torch.Generator().manual_seed(0), dtype=torch.complex128)
    H[:, 0] *= 0.05  # a weak user
    V = rzf(H, 12.0, 1.0)
    Ve = rzf(H, 12.0, 1.0, equal_power=True)
    torch.testing.assert_close(
        Ve.abs().square().sum(-2), torch.full((6, 3), 4.0, dtype=torch.float64)
    )
    cos = (V.conj() * Ve).sum(-2).abs() / (
        torch.linalg.vector_norm(V, dim=-2) * torch.linalg.vector_norm(Ve, dim=-2)
    )
    torch.testing.assert_close(cos, torch.ones_like(cos))
    with pytest.raises(TypeError, match="equal_power"):
        rzf(H, 1.0, 1.0, equal_power=1)
