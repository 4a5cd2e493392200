"""The ray-traced dataset against Sionna RT itself: the generator re-traces a handful of stored
users of one small city site, and the channels that ``lib.phy`` rebuilds from stored paths must
equal Sionna RT's own array and frequency-response computation for the same positions.

One module-scoped trace (Etoile, the smallest city mesh; 6 users; the manifest's ray budget) is
shared by the tests: about 15 s on 2 cores including Dr.Jit's compilation.
"""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.phy import (
    configure_ray_tracer,
    load_site,
    site_manifest,
    site_names,
    subcarrier_frequencies,
    upa_positions,
)
from lib.phy.raytraced import channels_from_paths

ROOT = Path(__file__).resolve().parents[1]
N_USERS = 6


def _generator():
    spec = importlib.util.spec_from_file_location("generate_sites", ROOT / "scripts" /
                                                  "generate_sites.py")  # fmt: skip
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("generate_sites", mod)
    spec.loader.exec_module(mod)
    return mod


def _nmse_db(x, ref):
    return float(10 * torch.log10((x - ref).abs().pow(2).sum() / ref.abs().pow(2).sum()))


@pytest.fixture(scope="module")
def traced():
    """Re-trace users of the first Etoile site with the generator's own functions, and keep
    the Sionna RT scene for its array computations."""
    if configure_ray_tracer() is None:
        pytest.fail("LLVM 19 not found: `make setup` installs Debian's libllvm19, which "
                    "Sionna RT's CPU back end needs")
    import sionna.rt as rt
    gen = _generator()
    man = site_manifest()
    gen.set_hash_size(man["hash_size"])
    name = next(n for n in site_names() if n.startswith("etoile"))
    site = load_site(name, dtype=torch.complex128)
    # users spread over the site: strongest, weakest and in between
    order = torch.argsort(site.path_gain)
    users = order[torch.linspace(0, site.n_users - 1, N_USERS).round().long()]
    scene = rt.load_scene(rt.scene.etoile, merge_shapes=True)
    scene.frequency = man["carrier_hz"]
    one = dict(num_rows=1, num_cols=1, pattern="iso", polarization="V")
    scene.tx_array = rt.PlanarArray(**one)
    scene.rx_array = rt.PlanarArray(**one)
    args = type("Args", (), dict(max_depth=man["max_depth"], samples=man["rays"],
                                 seed=man["seed"], chunk=N_USERS))()  # fmt: skip
    pos = site.positions[users].numpy().astype(np.float64)
    raw = gen.trace(scene, site.record["bs_position"], pos, args)
    data, dropped = gen.keep_strongest(raw, pos, man["paths_per_user"])
    full, _ = gen.keep_strongest(raw, pos, raw["a"].shape[1])  # every traced path
    return dict(rt=rt, scene=scene, site=site, users=users, pos=pos, data=data, full=full,
                dropped=dropped, args=args, man=man)  # fmt: skip


def test_retrace_reproduces_stored_paths(traced):
    """The generator, run again on stored users, finds the same strongest paths (the tracer is
    not bit-deterministic across runs, so a weak path may come or go)."""
    site, users, d = traced["site"], traced["users"], traced["full"]
    assert traced["dropped"] == 0  # every stored user has a path
    assert np.allclose(d["position"], site.positions[users].numpy(), atol=1e-4)
    assert np.array_equal(d["los"], site.los[users].numpy())
    for i, u in enumerate(users.tolist()):
        a_s, t_s = site.a[u].numpy(), site.tau[u].numpy()
        for ell in range(min(3, int((np.abs(a_s) > 0).sum()))):  # the three strongest
            close = (np.abs(d["tau"][i] - t_s[ell]) < 1e-11) & (
                np.abs(d["a"][i] - a_s[ell]) < 1e-3 * abs(a_s[ell]))
            assert close.any(), (u, ell)
        g_s, g_r = (np.abs(a_s) ** 2).sum(), (np.abs(d["a"][i]) ** 2).sum()
        assert abs(10 * np.log10(g_r / g_s)) < 1.0  # within 1 dB, all paths


def _sionna_channels(traced, n_h, n_v, frequencies=None):
    """Sionna RT's own channel of an n_h x n_v array (synthetic array, the device's
    orientation) to the traced positions, with its antennas matched to lib's by position."""
    rt, scene, site, args = traced["rt"], traced["scene"], traced["site"], traced["args"]
    scene.tx_array = rt.PlanarArray(num_rows=n_v, num_cols=n_h, pattern="iso",
                                    polarization="V")  # fmt: skip
    scene.add(rt.Transmitter(name="bs8", position=[float(v) for v in site.record["bs_position"]],
                             orientation=[site.boresight, 0.0, 0.0]))  # fmt: skip
    names = []
    for i, p in enumerate(traced["pos"]):
        names.append(f"x{i}")
        scene.add(rt.Receiver(name=names[-1], position=[float(v) for v in p]))
    try:
        paths = rt.PathSolver()(
            scene, max_depth=args.max_depth, samples_per_src=args.samples, los=True,
            specular_reflection=True, diffraction=True, refraction=False,
            synthetic_array=True, seed=args.seed,
        )  # fmt: skip
        U, M = len(names), n_h * n_v
        if frequencies is None:  # the baseband impulse response, summed over paths
            a, _ = paths.cir(normalize_delays=False, out_type="numpy")  # (U, 1, 1, M, L, T)
            H = np.asarray(a).reshape(U, M, -1).sum(-1)  # (U, M)
        else:
            h = paths.cfr(frequencies=frequencies.numpy(), normalize_delays=False,
                          out_type="numpy")  # (U, 1, 1, M, T, N)  # fmt: skip
            H = np.asarray(h).reshape(U, M, -1).transpose(0, 2, 1)
        # the same trace's paths: per-antenna gains (U, M, L), angles and delays (U, L)
        a_ant = (np.array(paths.a[0]) + 1j * np.array(paths.a[1])).reshape(U, M, -1)
        valid = np.array(paths.valid).reshape(U, -1)  # (U, L) with a synthetic array
        same = {k: np.array(getattr(paths, k)).reshape(U, -1)
                for k in ("tau", "theta_t", "phi_t")}
        local = np.array(scene.tx_array.positions(scene.wavelength)).reshape(3, -1).T
    finally:
        for nm in names:
            scene.remove(nm)
        scene.remove("bs8")
        one = dict(num_rows=1, num_cols=1, pattern="iso", polarization="V")
        scene.tx_array = rt.PlanarArray(**one)
    # Sionna's local array lies in the y-z plane; rotated by the yaw it is lib's array
    psi = site.boresight
    world = np.stack([-local[:, 1] * math.sin(psi), local[:, 1] * math.cos(psi), local[:, 2]], 1)
    ours = upa_positions(n_h, n_v, psi).numpy() * scene.wavelength
    match = np.argmin(np.linalg.norm(world[:, None] - ours[None], axis=-1), 1)
    assert sorted(match) == list(range(n_h * n_v))  # the same set of element positions
    out = np.zeros_like(H)
    out[..., match] = H
    # the gain at the array centre: Sionna's antenna 0 with its phase shift removed
    th, ph = same["theta_t"].astype(float), same["phi_t"].astype(float)
    k = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1)
    shift = np.exp(-2j * np.pi * (k @ world[0]) / scene.wavelength)
    same["a"] = np.where(valid, a_ant[:, 0] * shift, 0)
    return torch.from_numpy(out).to(torch.complex128), same


def _ours(traced, d, n_h, n_v, frequencies=None):
    """lib's rebuild for an n_h x n_v array from the paths ``d`` (a, tau and angles)."""
    t = lambda k: torch.from_numpy(np.ascontiguousarray(d[k])).double()  # noqa: E731
    a = torch.from_numpy(d["a"]).to(torch.complex128)
    pos = upa_positions(n_h, n_v, traced["site"].boresight)
    fc = traced["man"]["carrier_hz"]
    f = torch.tensor([0.0], dtype=torch.float64) if frequencies is None else frequencies
    H = channels_from_paths(a, t("theta_t"), t("phi_t"), pos, tau=t("tau"),
                            frequencies=fc + f)  # fmt: skip
    return H[:, 0] if frequencies is None else H


def test_rebuilt_channel_equals_sionna_array(traced):
    """lib's eq. (eq-rt-channel) on the paths of Sionna's own 8x8 trace (one call of the
    tracer, so the same paths) against Sionna's array channel: the element positions, their
    order, the rotation by the boresight and the angle convention all enter."""
    theirs, same = _sionna_channels(traced, 8, 8)
    ours = _ours(traced, same, 8, 8)
    worst = max(_nmse_db(ours[u], theirs[u]) for u in range(N_USERS))
    # Sionna forms the carrier phase 2 pi f_c tau (~1e4 rad) in float32: ~1e-3 rad error
    assert worst < -45


def test_rebuilt_ofdm_channel_equals_sionna_cfr(traced):
    f = subcarrier_frequencies(16, 30e3 * 4)
    theirs, same = _sionna_channels(traced, 4, 2, frequencies=f)  # (U, N, M)
    ours = _ours(traced, same, 4, 2, frequencies=f)
    assert ours.shape == theirs.shape == (N_USERS, 16, 8)
    worst = max(_nmse_db(ours[u], theirs[u]) for u in range(N_USERS))
    assert worst < -45
