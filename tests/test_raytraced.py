"""lib.phy.raytraced: the stored multi-site dataset (manifest, README, geometry) and the channel
rebuild from paths (array geometry, normalisation, sampling, bad input)."""

import math
import re

import numpy as np
import pytest
import torch

from lib.core.resources import results_dir
from lib.phy import (
    SPEED_OF_LIGHT,
    channels_from_paths,
    load_site,
    site_manifest,
    site_names,
    subcarrier_frequencies,
    upa_positions,
    upa_steering,
)

FOLDER = results_dir("sites", must_exist=True)
MAN = site_manifest()
NAMES = site_names()


@pytest.fixture(scope="module")
def sites():
    return {n: load_site(n) for n in NAMES}


# --------------------------------------------------------------------------- #
# the stored data
# --------------------------------------------------------------------------- #
def test_dataset_size_and_splits():
    assert len(NAMES) >= 16
    scenes = {s["scene"] for s in MAN["sites"]}
    assert len(scenes) >= 4
    unseen = {s["scene"] for s in MAN["sites"] if s["split"] == "unseen_city"}
    assert len(unseen) == 1  # one whole city is reserved
    assert not unseen & {s["scene"] for s in MAN["sites"] if s["split"] != "unseen_city"}
    for split in ("train", "meta", "heldout"):
        assert site_names(split), split
    total = sum(p.stat().st_size for p in FOLDER.iterdir() if p.is_file())
    assert total <= 40e6
    assert MAN["carrier_hz"] == 3.5e9


def test_manifest_matches_stored_data(sites):
    keys = {"name", "scene", "split", "bs_position", "n_users", "los_fraction",
            "median_path_gain_db"}  # fmt: skip
    assert {"sites", "carrier_hz", "rays", "cpu_seconds"} <= set(MAN)
    assert MAN["cpu_seconds"] == pytest.approx(sum(s["cpu_seconds"] for s in MAN["sites"]),
                                               abs=0.5)  # fmt: skip
    for rec in MAN["sites"]:
        assert keys <= set(rec)
        s = sites[rec["name"]]
        assert s.n_users == rec["n_users"] >= 1000
        assert float(s.los.float().mean()) == pytest.approx(rec["los_fraction"], abs=1e-4)
        gain = 10 * np.log10(s.path_gain.double().numpy())
        assert float(np.median(gain)) == pytest.approx(rec["median_path_gain_db"], abs=0.01)
        assert s.bs_position.tolist() == pytest.approx(rec["bs_position"], abs=1e-3)
        assert rec["n_users"] + rec["no_path"] == rec["candidates"]


def test_readme_table_matches_manifest():
    text = (FOLDER / "README.md").read_text()
    rows = re.findall(r"^\| `([\w-]+)` \| (\w+) \| (\w+) \| (\w+) \| (\d+) \| ([\d.]+) \|",
                      text, flags=re.M)  # fmt: skip
    assert [r[0] for r in rows] == NAMES
    for (_name, scene, split, kind, users, los), rec in zip(rows, MAN["sites"]):
        assert (scene, split, kind) == (rec["scene"], rec["split"], rec["kind"])
        assert int(users) == rec["n_users"]
        assert float(los) == pytest.approx(rec["los_fraction"], abs=0.005)
    assert f"{MAN['rays']:,}" in text or str(MAN["rays"]) in text


def test_users_belong_to_their_site(sites):
    """Every user is in its site's sector; a line-of-sight path leaves the BS towards the user
    with the free-space delay, and the strongest path of a LOS user is at most that strong."""
    for s in sites.values():
        d = s.positions - s.bs_position
        az = torch.atan2(d[:, 1], d[:, 0]) - s.boresight
        off = torch.atan2(torch.sin(az), torch.cos(az))
        assert float(off.abs().max()) <= math.radians(60) + 1e-4
        assert float(torch.linalg.vector_norm(d[:, :2], dim=1).max()) <= s.record["radius_m"]
        assert float(s.distances.min()) >= 10.0 - 1e-3
        los = s.n_interactions == 0
        los &= s.a.abs() > 0
        u, ell = torch.nonzero(los, as_tuple=True)
        k = torch.stack([torch.sin(s.theta_t) * torch.cos(s.phi_t),
                         torch.sin(s.theta_t) * torch.sin(s.phi_t), torch.cos(s.theta_t)], -1)
        unit = d[u] / s.distances[u, None]
        assert float((k[u, ell] * unit).sum(-1).min()) > 1 - 1e-4
        delay = s.distances[u] / SPEED_OF_LIGHT
        assert torch.allclose(s.tau[u, ell].double(), delay.double(), rtol=1e-4)
        # Friis: |a|^2 = (lambda / (4 pi d))^2 for the direct path (isotropic antennas)
        friis = (s.wavelength / (4 * math.pi * s.distances[u])) ** 2
        assert torch.allclose((s.a[u, ell].abs() ** 2).double(), friis.double(), rtol=1e-2)


def test_paths_sorted_and_captured(sites):
    for s in sites.values():
        p = s.a.abs()
        assert bool((p[:, :-1] >= p[:, 1:] * (1 - 1e-6)).all())  # strongest first
        assert bool((s.captured > 0).all()) and bool((s.captured <= 1 + 1e-6).all())


# --------------------------------------------------------------------------- #
# the channel rebuild
# --------------------------------------------------------------------------- #
def test_upa_positions_geometry():
    pos = upa_positions(4, 2, boresight=math.radians(30))
    assert pos.shape == (8, 3)
    assert torch.allclose(pos.mean(0), torch.zeros(3, dtype=pos.dtype), atol=1e-12)
    # facing the boresight: every element in the plane normal to it
    normal = torch.tensor([math.cos(math.radians(30)), math.sin(math.radians(30)), 0.0],
                          dtype=pos.dtype)  # fmt: skip
    assert torch.allclose(pos @ normal, torch.zeros(8, dtype=pos.dtype), atol=1e-12)
    assert torch.allclose(torch.linalg.vector_norm(pos[1] - pos[0]), torch.tensor(0.5,
                          dtype=pos.dtype))  # fmt: skip  # vertical neighbours


def test_single_path_is_upa_steering_vector():
    """One path: the channel is the UPA steering vector of lib.phy.arrays (up to the phase of
    the array's centre), with u_h = k . e_h and u_v = cos(theta)."""
    g = torch.Generator().manual_seed(0)
    theta = math.pi / 2 + 0.6 * (torch.rand(5, 1, generator=g, dtype=torch.float64) - 0.5)
    phi = 2 * math.pi * torch.rand(5, 1, generator=g, dtype=torch.float64)
    psi = 0.3
    a = torch.ones(5, 1, dtype=torch.complex128)
    H = channels_from_paths(a, theta, phi, upa_positions(4, 3, psi))
    u_h = torch.sin(theta) * torch.sin(phi - psi)
    u_v = torch.cos(theta)
    ref = upa_steering(4, 3, u_h[:, 0], u_v[:, 0], normalize=False)
    ratio = H / ref
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-12)
    assert torch.allclose(ratio.abs(), torch.ones_like(ratio.abs()), atol=1e-12)


def test_batched_rebuild_equals_per_path_loop(sites):
    s = sites[NAMES[0]]
    users = torch.arange(7)
    f = subcarrier_frequencies(6, 60e3, dtype=torch.float64)
    H = s.channels(users, 4, 4, normalization="none", frequencies=f, dtype=torch.complex128)
    pos = upa_positions(4, 4, s.boresight)
    ref = torch.zeros(7, 6, 16, dtype=torch.complex128)
    for u in range(7):
        for ell in range(s.a.shape[1]):
            th, ph = float(s.theta_t[u, ell]), float(s.phi_t[u, ell])
            k = torch.tensor([math.sin(th) * math.cos(ph), math.sin(th) * math.sin(ph),
                              math.cos(th)], dtype=torch.float64)  # fmt: skip
            for n in range(6):
                cyc = (s.carrier_hz + float(f[n])) * float(s.tau[u, ell])
                ph_m = 2 * math.pi * (pos @ k) - 2 * math.pi * (cyc % 1.0)
                ref[u, n] += complex(s.a[u, ell]) * torch.exp(1j * ph_m)
    assert torch.allclose(H, ref, rtol=1e-6, atol=1e-12 * float(ref.abs().max()))


def test_normalisations(sites):
    s = sites[NAMES[0]]
    H = s.channels(None, 8, 8, normalization="site")
    assert 0.7 < float((H.abs() ** 2).sum(-1).mean() / 64) < 1.4
    Hu = s.channels(torch.arange(20), 8, 8, normalization="user")
    assert torch.allclose((Hu.abs() ** 2).sum(-1), torch.full((20,), 64.0), rtol=1e-4)
    raw = s.channels(torch.arange(20), 8, 8, normalization="none")
    assert torch.allclose(H[:20], raw / math.sqrt(s.mean_path_gain), rtol=1e-5)
    f = subcarrier_frequencies(4, 30e3)
    Hf = s.channels(torch.arange(3), 2, 2, normalization="user", frequencies=f)
    assert torch.allclose((Hf.abs() ** 2).sum((-2, -1)), torch.full((3,), 16.0), rtol=1e-4)


def test_sample_draws_distinct_users_reproducibly(sites):
    s = sites[NAMES[0]]
    H, idx = s.sample(50, 4, torch.Generator().manual_seed(3))
    assert H.shape == (50, 4, 64) and H.dtype == torch.complex64 and idx.shape == (50, 4)
    assert all(len(set(r.tolist())) == 4 for r in idx)
    H2, idx2 = s.sample(50, 4, torch.Generator().manual_seed(3))
    assert torch.equal(idx, idx2) and torch.equal(H, H2)
    assert torch.allclose(H, s.channels(idx))
    pool = s.users_in(los=True)
    _, idx = s.sample(20, 3, torch.Generator().manual_seed(0), 4, 4, pool=pool)
    assert bool(s.los[idx].all())
    f = subcarrier_frequencies(5, 30e3)
    Hf, _ = s.sample(3, 2, torch.Generator().manual_seed(0), 2, 2, frequencies=f)
    assert Hf.shape == (3, 5, 2, 4)


def test_region_selects_users(sites):
    s = sites[NAMES[0]]
    x0, y0 = float(s.positions[:, 0].median()), float(s.positions[:, 1].median())
    idx = s.users_in((x0, math.inf, -math.inf, y0))
    p = s.positions[idx]
    assert len(idx) > 0 and bool((p[:, 0] >= x0).all()) and bool((p[:, 1] <= y0).all())


def test_dtype_and_device():
    s = load_site(NAMES[0], dtype=torch.complex128)
    assert s.a.dtype == torch.complex128 and s.tau.dtype == torch.float64
    H = s.channels(torch.arange(2), 2, 2)
    assert H.dtype == torch.complex128
    if torch.cuda.is_available():
        sc = load_site(NAMES[0], device="cuda")
        assert sc.channels(torch.arange(2), 2, 2).device.type == "cuda"


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #
def test_unknown_site_and_split():
    with pytest.raises(ValueError, match="unknown site 'atlantis'.*stored sites"):
        load_site("atlantis")
    with pytest.raises(TypeError, match="name must be a str"):
        load_site(3)
    with pytest.raises(ValueError, match="split must be one of"):
        site_names("test")


def test_array_larger_than_data_supports(sites):
    s = sites[NAMES[0]]
    n = math.ceil(s.max_aperture() / (0.5 * s.wavelength) / math.sqrt(2)) + 2
    with pytest.raises(ValueError, match=r"larger than site .* far field"):
        s.channels(torch.arange(2), n, n)


def test_bad_sampling_and_channel_arguments(sites):
    s = sites[NAMES[0]]
    with pytest.raises(ValueError, match=r"users = \d+ exceeds the \d+ users available"):
        s.sample(2, s.n_users + 1)
    with pytest.raises(ValueError, match="exceeds the 2 users"):
        s.sample(2, 3, pool=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="normalization must be one of"):
        s.channels(torch.arange(2), normalization="pathloss")
    with pytest.raises(ValueError, match="integer indices in 0.."):
        s.channels(torch.tensor([s.n_users]))
    with pytest.raises(ValueError, match="integer indices"):
        s.channels(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="region must be"):
        s.users_in((0, 1))
    with pytest.raises(ValueError, match="tau and frequencies must be given together"):
        channels_from_paths(s.a[:2], s.theta_t[:2], s.phi_t[:2], upa_positions(2, 2),
                            tau=s.tau[:2])  # fmt: skip
    with pytest.raises(ValueError, match="theta_t must have shape"):
        channels_from_paths(s.a[:2], s.theta_t[:1], s.phi_t[:2], upa_positions(2, 2))
    with pytest.raises(ValueError, match="n_h"):
        upa_positions(0, 2)


def test_heightmaps_cover_every_scene():
    with np.load(FOLDER / "heightmaps.npz") as z:
        for scene in {s["scene"] for s in MAN["sites"]}:
            h, g, o = z[f"{scene}/height"], z[f"{scene}/ground"], z[f"{scene}/origin"]
            assert h.shape == g.shape and g.dtype == bool and o.shape == (3,)
            assert 0.3 < g.mean() < 0.95  # streets and buildings
