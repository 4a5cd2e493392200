"""Ray-trace the book's multi-site channel dataset with Sionna RT (chapter *Channels from ray
tracing*).

Scenes: the city scenes shipped with ``sionna-rt`` (built from OpenStreetMap data, ODbL): Munich,
Etoile (Paris) and San Francisco hold the training, meta-generalisation and held-out sites;
Florence is the unseen city. Every site is one base station (BS) with a 120-degree sector, on a
roof edge (3 m above the roof, facing the street below) or in a street (10 m high). Sites are
chosen from a height map of the scene with a seeded generator (``--seed``).

Users: a regular grid over the outdoor ground of the sector (a downward ray at the grid point
hits the ground, not a roof), 1.5 m high, between ``--min-distance`` and the sector radius. The
spacing is set from the outdoor area so that about ``--candidates`` points are traced; a second
grid offset by half a spacing is added when fewer than ``--min-users`` users receive a path.
Users with no path (out of coverage at this ray budget) are dropped and counted.

Tracing: ``sionna.rt.PathSolver`` at ``--frequency`` (3.5 GHz), line of sight, specular
reflection and diffraction (wedges), ``--max-depth`` interactions, ``--samples`` rays per source,
one isotropic vertically polarised antenna at both ends, ``--chunk`` receivers per trace and
Sionna RT's hash table of path candidates enlarged to ``--hash-size`` entries
(:func:`set_hash_size`) (the BS array is applied later from the
departure angles: ``lib.phy.raytraced``). Per user the ``--paths`` strongest paths are kept
(complex gain, delay, zenith/azimuth of departure and arrival, interaction types, number of
interactions) with the fraction of the traced power they carry.

Outputs in ``--out`` (default ``results/sites``): ``<site>.npz`` per site, ``heightmaps.npz``
(one height map per scene, for the chapter's pictures) and ``manifest.json`` (sites, splits,
positions, LOS fraction, median path gain, CPU seconds). Sites whose file exists are skipped
(``--force`` re-traces them), so an interrupted run resumes. The ray tracer runs on the CPU
through Dr.Jit's LLVM back end: set ``DRJIT_LIBLLVM_PATH`` to an LLVM 19 library (the README).

    python scripts/generate_sites.py            # every site (54 CPU-min, ~30 min on 2 cores)
    python scripts/generate_sites.py --only munich-r1 --candidates 60 --out /tmp/sites
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lib.phy.raytraced import configure_ray_tracer  # noqa: E402

# scene -> ((kind, split), ...): "r" roof edge, "s" street
LAYOUT = {
    "munich": (("r", "train"), ("r", "train"), ("r", "meta"), ("s", "train"), ("s", "heldout")),
    "etoile": (("r", "train"), ("r", "meta"), ("s", "heldout")),
    "san_francisco": (
        ("r", "train"), ("r", "train"), ("r", "meta"), ("s", "train"), ("s", "heldout"),
    ),
    "florence": (("r", "unseen_city"), ("r", "unseen_city"), ("s", "unseen_city")),
}
RES = 4.0  # height-map resolution (m)
SECTOR = math.radians(120.0)
USER_HEIGHT = 1.5


GROUND_OBJECT = {"munich": "ground", "etoile": "Plane", "florence": "ground",
                 "san_francisco": "Terrain"}


def surface(scene, name, x, y):
    """Height of the first surface hit by a downward ray at ``(x, y)`` and whether it is the
    scene's ground (or terrain) mesh; points off the mesh get height 0 and ``False``."""
    import mitsuba as mi

    z0 = float(scene.mi_scene.bbox().max[2]) + 10.0
    x = np.ascontiguousarray(x, np.float32).ravel()
    y = np.ascontiguousarray(y, np.float32).ravel()
    o = mi.Point3f(x, y, np.full(x.shape, z0, np.float32))
    si = scene.mi_scene.ray_intersect(mi.Ray3f(o, mi.Vector3f(0, 0, -1)))
    t = np.array(si.t, dtype=np.float64)
    ground = mi.ShapePtr(scene.objects[GROUND_OBJECT[name]].mi_mesh)
    is_ground = np.array(si.shape == ground) & np.isfinite(t)
    return np.where(np.isfinite(t), z0 - t, 0.0), is_ground


def visible(scene, src, pts):
    """Line of sight from ``src`` (3,) to every point of ``pts`` (n, 3)."""
    import mitsuba as mi

    d = pts - np.asarray(src)[None]
    dist = np.linalg.norm(d, axis=1)
    d = (d / dist[:, None]).astype(np.float32)
    o = np.broadcast_to(np.asarray(src, np.float32), d.shape)
    ray = mi.Ray3f(mi.Point3f(*[np.ascontiguousarray(o[:, i]) for i in range(3)]),
                   mi.Vector3f(*[np.ascontiguousarray(d[:, i]) for i in range(3)]))  # fmt: skip
    ray.maxt = mi.Float((dist * (1 - 1e-3)).astype(np.float32))
    return ~np.array(scene.mi_scene.ray_test(ray))


def height_map(scene, name):
    """Surface height, ground mask and height above the local ground on a ``RES`` grid."""
    from scipy.ndimage import distance_transform_edt

    bb = scene.mi_scene.bbox()
    lo, hi = np.array(bb.min, np.float64), np.array(bb.max, np.float64)
    xs = np.arange(lo[0] + RES / 2, hi[0], RES)
    ys = np.arange(lo[1] + RES / 2, hi[1], RES)
    X, Y = np.meshgrid(xs, ys, indexing="xy")
    z, g = surface(scene, name, X, Y)
    z, g = z.reshape(X.shape), g.reshape(X.shape)
    iy, ix = distance_transform_edt(~g, return_distances=False, return_indices=True)
    zg = z[iy, ix]  # ground level under a building: that of the nearest ground cell
    return xs, ys, z, g, z - zg, zg


def sector_mask(X, Y, bs, boresight, radius, min_distance, Z=None):
    dx, dy = X - bs[0], Y - bs[1]
    dz = bs[2] - (USER_HEIGHT if Z is None else Z + USER_HEIGHT)
    d = np.sqrt(dx**2 + dy**2 + dz**2)
    off = np.angle(np.exp(1j * (np.arctan2(dy, dx) - boresight)))
    return (np.abs(off) <= SECTOR / 2) & (d >= min_distance) & (np.hypot(dx, dy) <= radius)


def choose_sites(name, scene, hm, layout, rng, args):
    """BS positions and boresights, ``args.separation`` apart: a random candidate (roof edge
    or open street) that sees at least ``args.min_visible`` of the outdoor ground of its best
    sector, with that sector's boresight (the best candidate seen if none does)."""
    xs, ys, z, g, hb, zg = hm
    X, Y = np.meshgrid(xs, ys, indexing="xy")
    margin = 0.25 * min(xs[-1] - xs[0], ys[-1] - ys[0])
    inner = (
        (X > xs[0] + margin) & (X < xs[-1] - margin)
        & (Y > ys[0] + margin) & (Y < ys[-1] - margin)
    )  # fmt: skip
    azimuths = np.radians(np.arange(0, 360, 30))
    step = int(round(8.0 / RES))
    pad = np.pad(g, step, constant_values=False)
    open_street = np.ones_like(g)
    for dy_ in range(-step, step + 1):
        for dx_ in range(-step, step + 1):
            open_street &= pad[step + dy_ : step + dy_ + g.shape[0],
                               step + dx_ : step + dx_ + g.shape[1]]  # fmt: skip
    sub = np.zeros_like(g)
    sub[::2, ::2] = True  # visibility is scored on every other cell
    sites, placed = [], []
    for i, (kind, split) in enumerate(layout):
        radius = args.radius_roof if kind == "r" else args.radius_street
        if kind == "r":
            cand = inner & ~g & (hb > 12.0) & (hb < 60.0)
        else:
            cand = inner & open_street
        idx = np.argwhere(cand)
        rng.shuffle(idx)
        chosen, fallback = None, None
        for iy, ix in idx[:1500]:
            x, y = float(xs[ix]), float(ys[iy])
            if any(math.hypot(x - p[0], y - p[1]) < args.separation for p in placed):
                continue
            bz = float(z[iy, ix] + 3.0) if kind == "r" else float(zg[iy, ix] + 10.0)
            bs = (x, y, bz)
            near = g & sub & (np.hypot(X - x, Y - y) <= radius)
            pts = np.stack([X[near], Y[near], z[near] + USER_HEIGHT], 1)
            if len(pts) == 0:
                continue
            vis = visible(scene, bs, pts)
            best = None
            for az in azimuths:
                if kind == "r":  # the roof must end within 8 m towards the boresight
                    ok = False
                    for s_ in (1, step):
                        jx = int(round(ix + s_ * math.cos(az)))
                        jy = int(round(iy + s_ * math.sin(az)))
                        if 0 <= jx < len(xs) and 0 <= jy < len(ys):
                            ok |= bool(z[jy, jx] < z[iy, ix] - 8.0)
                    if not ok:
                        continue
                m = sector_mask(pts[:, 0], pts[:, 1], bs, az, radius, args.min_distance,
                                pts[:, 2] - USER_HEIGHT)  # fmt: skip
                if m.sum() < 50:
                    continue
                frac = float(vis[m].mean())
                if best is None or frac > best[0]:
                    best = (frac, float(az))
            if best is not None and (fallback is None or best[0] > fallback[2]):
                fallback = (bs, best[1], best[0])
            if best is not None and best[0] >= args.min_visible:
                chosen = fallback
                break
        chosen = chosen or fallback  # the best seen when none reaches min_visible
        if chosen is None:
            raise RuntimeError(f"no position for site {i} ({kind}) in {name}")
        placed.append(chosen[0])
        n = sum(1 for k, _ in layout[: i + 1] if k == kind)
        sites.append(dict(
            name=f"{name}-{kind}{n}", scene=name, split=split,
            kind="roof" if kind == "r" else "street",
            bs_position=[round(v, 2) for v in chosen[0]],
            boresight_deg=round(math.degrees(chosen[1]), 1), radius_m=radius,
            visible_fraction=round(chosen[2], 3),
        ))  # fmt: skip
    return sites


def user_grid(scene, name, site, hm, args, offset=0.0):
    """Outdoor grid points of the sector (1.5 m above the ground), about ``args.candidates``."""
    xs, ys, z, g, _, _ = hm
    X, Y = np.meshgrid(xs, ys, indexing="xy")
    bs, az, r = site["bs_position"], math.radians(site["boresight_deg"]), site["radius_m"]
    area = (sector_mask(X, Y, bs, az, r, args.min_distance, z) & g).sum()
    s = math.sqrt(area * RES**2 / args.candidates)
    grid = np.arange(-r, r + s, s) + offset * s
    GX, GY = np.meshgrid(bs[0] + grid, bs[1] + grid, indexing="xy")
    zz, gg = surface(scene, name, GX, GY)
    zz, gg = zz.reshape(GX.shape), gg.reshape(GX.shape)
    m = gg & sector_mask(GX, GY, bs, az, r, args.min_distance, zz)
    return np.stack([GX[m], GY[m], zz[m] + USER_HEIGHT], 1), s


def set_hash_size(n: float):
    """Enlarge Sionna RT's table of specular-chain hashes (1e6 entries per source by default).

    Candidates whose hash collides with one already seen are dropped, and the table fills with
    chains times receivers: measured on 60 Etoile users, the default table found 8 % fewer
    paths tracing them together than one at a time; with 1e8 entries the difference is 0.04 %,
    so the paths no longer depend on how many receivers share a trace.
    """
    from sionna.rt.path_solvers.sb_candidate_generator import SBCandidateGenerator

    SBCandidateGenerator.MIN_SPEC_COUNT_SIZE = int(n)


def trace(scene, bs, users, args):
    """Paths from the BS to every user position, in chunks of ``args.chunk``."""
    import drjit as dr
    from sionna.rt import PathSolver, Receiver, Transmitter

    solver = PathSolver()
    scene.add(Transmitter(name="bs", position=[float(v) for v in bs]))
    fields = {k: [] for k in ("a", "tau", "theta_t", "phi_t", "theta_r", "phi_r", "mask", "n")}
    for c0 in range(0, len(users), args.chunk):
        chunk = users[c0 : c0 + args.chunk]
        names = [f"u{c0 + i}" for i in range(len(chunk))]
        for nm, p in zip(names, chunk):
            scene.add(Receiver(name=nm, position=[float(v) for v in p]))
        paths = solver(
            scene, max_depth=args.max_depth, samples_per_src=args.samples, los=True,
            specular_reflection=True, diffraction=True, refraction=False,
            synthetic_array=True, seed=args.seed,
        )  # fmt: skip
        n = len(chunk)
        a = (np.array(paths.a[0]) + 1j * np.array(paths.a[1])).reshape(n, -1)
        valid = np.array(paths.valid).reshape(n, -1)
        inter = np.array(paths.interactions).reshape(args.max_depth, n, -1)
        fields["a"].append(np.where(valid, a, 0))
        for k in ("tau", "theta_t", "phi_t", "theta_r", "phi_r"):
            fields[k].append(np.array(getattr(paths, k)).reshape(n, -1))
        # interaction types OR-ed over the depth (0: line of sight), and their number
        fields["mask"].append(np.bitwise_or.reduce(inter, axis=0).astype(np.uint8))
        fields["n"].append((inter != 0).sum(0).astype(np.uint8))
        dr.sync_thread()
        for nm in names:
            scene.remove(nm)
        print(f"  traced {c0 + n}/{len(users)}", flush=True)
    scene.remove("bs")
    P = max(f.shape[1] for f in fields["a"])
    pad = lambda f: np.concatenate([np.pad(x, ((0, 0), (0, P - x.shape[1]))) for x in f])  # noqa: E731
    return {k: pad(v) for k, v in fields.items()}


def keep_strongest(raw, users, P):
    """The ``P`` strongest paths per user, users with at least one path."""
    pw = np.abs(raw["a"]) ** 2
    total = pw.sum(1)
    has = total > 0
    order = np.argsort(-pw, axis=1)[:, :P]
    take = lambda x: np.take_along_axis(x, order, 1)[has]  # noqa: E731
    a = take(raw["a"])
    keep = np.abs(a) > 0
    out = {
        "position": users[has].astype(np.float32),
        "a": a.astype(np.complex64),
        "tau": np.where(keep, take(raw["tau"]), 0).astype(np.float32),
        "interactions": np.where(keep, take(raw["mask"]), 0).astype(np.uint8),
        "n_interactions": np.where(keep, take(raw["n"]), 0).astype(np.uint8),
        "captured": ((np.abs(a) ** 2).sum(1) / total[has]).astype(np.float32),
    }
    for k in ("theta_t", "phi_t", "theta_r", "phi_r"):
        out[k] = np.where(keep, take(raw[k]), 0).astype(np.float32)
    out["los"] = ((out["n_interactions"] == 0) & keep).any(1)
    return out, int((~has).sum())


README = """# Ray-traced multi-site channels

The data set of the chapter *Channels from ray tracing* (`book/raytraced_channels.ipynb`),
loaded with `lib.phy.load_site(name)` (`lib.phy.site_names(split)` lists the sites). Written by
`scripts/generate_sites.py`, which also writes this README from `manifest.json`.

## Command

    python scripts/generate_sites.py

(set-up: `pip install sionna-rt=={sionna_rt}` and Debian's `libllvm19`, both done by `make setup`;
`lib.phy.configure_ray_tracer()` points Dr.Jit at `libLLVM-19.so`). It ran on a shared 2-core
x86_64 CPU: {cpu_min:.0f} CPU-min in all, {cpu_user:.2f} CPU-s per traced user position (see
`cpu_seconds` and `wall_seconds` per site in `manifest.json`). Sites whose file exists are
skipped, so an interrupted run resumes; `--force` re-traces.

## Scenes and licence

The scenes are those shipped with Sionna RT {sionna_rt} (`sionna.rt.scene.munich`, `etoile`,
`san_francisco`, `florence`), built from OpenStreetMap data, (c) OpenStreetMap contributors,
available under the Open Database License (ODbL 1.0, https://opendatacommons.org/licenses/odbl/).
The path data here are derived from them and are shared under the same licence.

## Tracing

Carrier {carrier_ghz:.1f} GHz; Sionna RT `PathSolver` with line of sight, specular reflection and
diffraction (refraction and diffuse reflection off), at most {max_depth} interactions,
{rays:,} rays per source, seed {seed}; one isotropic, vertically polarised antenna at the base
station (BS) and at the user (the BS array is applied afterwards from the departure angles,
eq. (eq-rt-channel) of the chapter); {chunk} receivers per trace; Sionna RT's hash table of
path candidates enlarged to {hash_size:.0e} entries (with its default of 1e6, collisions drop
paths in proportion to the number of receivers traced together).

Every site is one BS with a 120-degree sector: on a roof edge (3 m above the roof, facing the
street) or in an open street (10 m high), chosen from a 4 m height map of the scene with the
seeded generator so that the BS sees at least 20 % of the sector's outdoor ground in line of
sight (or, where no candidate does, the best one seen: `visible_fraction`). Users: a
regular grid over the outdoor ground of the sector (1.5 m above it), at least 10 m from the BS
and within 300 m (roof) or 200 m (street); users with no path are dropped (`no_path`).

## Format

`<site>.npz` (NumPy, compressed), `U` users and `L = {paths}` paths per user (the strongest,
zero-padded):

| array | shape, type | meaning |
|---|---|---|
| `position` | (U, 3) float32 | user position (m, scene frame) |
| `a` | (U, L) complex64 | path gain (Sionna RT's `Paths.a`, without the propagation phase) |
| `tau` | (U, L) float32 | delay (s) |
| `theta_t`, `phi_t` | (U, L) float32 | zenith and azimuth of departure at the BS (rad) |
| `theta_r`, `phi_r` | (U, L) float32 | zenith and azimuth of arrival at the user (rad) |
| `interactions` | (U, L) uint8 | OR of the interaction types (0 LOS, 1 reflection, 8 diffr.) |
| `n_interactions` | (U, L) uint8 | number of interactions |
| `los` | (U,) bool | a line-of-sight path exists |
| `captured` | (U,) float32 | fraction of the traced power in the stored paths |

`heightmaps.npz`: per scene `<scene>/height` (uint16, 0.25 m steps), `<scene>/ground` (bool)
and `<scene>/origin` (x, y of the first cell, resolution in m). `manifest.json`: the set-up and
one record per site. `sum_rates.json`: the sum rates of the chapter
(`python scripts/site_sum_rates.py`).

## Sites

| site | scene | split | kind | users | LOS fraction | median path gain (dB) |
|---|---|---|---|---|---|---|
{rows}
"""


def write_readme(out, manifest):
    rows = "\n".join(
        f"| `{s['name']}` | {s['scene']} | {s['split']} | {s['kind']} | {s['n_users']} | "
        f"{s['los_fraction']:.3f} | {s['median_path_gain_db']:.1f} |"
        for s in manifest["sites"]
    )
    cand = sum(s["candidates"] for s in manifest["sites"])
    text = README.format(
        sionna_rt=manifest["sionna_rt"], cpu_min=manifest["cpu_seconds"] / 60,
        cpu_user=manifest["cpu_seconds"] / cand, carrier_ghz=manifest["carrier_hz"] / 1e9,
        max_depth=manifest["max_depth"], rays=manifest["rays"], seed=manifest["seed"],
        chunk=manifest["chunk"], hash_size=manifest["hash_size"],
        paths=manifest["paths_per_user"], rows=rows,
    )  # fmt: skip
    (out / "README.md").write_text(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "results" / "sites"))
    ap.add_argument("--scenes", default=",".join(LAYOUT))
    ap.add_argument("--only", default=None, help="comma-separated site names")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frequency", type=float, default=3.5e9)
    ap.add_argument("--samples", type=int, default=10**6)
    ap.add_argument("--max-depth", type=int, default=3)
    ap.add_argument("--paths", type=int, default=24)
    ap.add_argument("--candidates", type=int, default=1250)
    ap.add_argument("--min-users", type=int, default=1000)
    ap.add_argument("--min-distance", type=float, default=10.0)
    ap.add_argument("--radius-roof", type=float, default=300.0)
    ap.add_argument("--radius-street", type=float, default=200.0)
    ap.add_argument("--separation", type=float, default=150.0)
    ap.add_argument("--min-visible", type=float, default=0.2,
                    help="least fraction of the sector's outdoor ground in line of sight")
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--hash-size", type=float, default=1e8,
                    help="entries of Sionna RT's specular-chain hash table per source")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--readme-only", action="store_true", help="rewrite README.md and exit")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.readme_only:
        write_readme(out, json.loads((out / "manifest.json").read_text()))
        return
    configure_ray_tracer()
    import sionna.rt as rt

    set_hash_size(args.hash_size)

    out.mkdir(parents=True, exist_ok=True)
    man_path = out / "manifest.json"
    manifest = json.loads(man_path.read_text()) if man_path.exists() else {"sites": []}
    known = {s["name"]: s for s in manifest["sites"]}
    hmaps = dict(np.load(out / "heightmaps.npz")) if (out / "heightmaps.npz").exists() else {}
    only = set(args.only.split(",")) if args.only else None
    children = np.random.SeedSequence(args.seed).spawn(len(LAYOUT))
    for name in args.scenes.split(","):
        if name not in LAYOUT:
            sys.exit(f"unknown scene {name!r}; choose from {sorted(LAYOUT)}")
        scene = rt.load_scene(getattr(rt.scene, name), merge_shapes=True)
        scene.frequency = args.frequency
        arr = dict(num_rows=1, num_cols=1, vertical_spacing=0.5, horizontal_spacing=0.5)
        scene.tx_array = rt.PlanarArray(**arr, pattern="iso", polarization="V")
        scene.rx_array = rt.PlanarArray(**arr, pattern="iso", polarization="V")
        hm = height_map(scene, name)
        xs, ys = hm[0], hm[1]
        hmaps[f"{name}/height"] = np.round(hm[2] * 4).astype(np.uint16)  # 0.25 m steps
        hmaps[f"{name}/ground"] = hm[3]
        hmaps[f"{name}/origin"] = np.array([xs[0], ys[0], RES])
        rng = np.random.default_rng(children[list(LAYOUT).index(name)])
        for site in choose_sites(name, scene, hm, LAYOUT[name], rng, args):
            if only is not None and site["name"] not in only:
                continue
            f = out / f"{site['name']}.npz"
            if f.exists() and not args.force and site["name"] in known:
                print(f"{site['name']}: exists, skipped")
                continue
            t0, c0 = time.time(), time.process_time()
            users, spacing = user_grid(scene, name, site, hm, args)
            raw = trace(scene, site["bs_position"], users, args)
            data, dropped = keep_strongest(raw, users, args.paths)
            n_cand = len(users)
            if len(data["a"]) < args.min_users:  # top up with a half-offset grid
                more, _ = user_grid(scene, name, site, hm, args, offset=0.5)
                raw2 = trace(scene, site["bs_position"], more, args)
                d2, drop2 = keep_strongest(raw2, more, args.paths)
                data = {k: np.concatenate([data[k], d2[k]]) for k in data}
                dropped, n_cand = dropped + drop2, n_cand + len(more)
            cpu, wall = time.process_time() - c0, time.time() - t0
            np.savez_compressed(f, **data)
            gain = 10 * np.log10((np.abs(data["a"]) ** 2).sum(1))
            site.update(
                n_users=int(len(data["a"])), candidates=int(n_cand), no_path=int(dropped),
                grid_spacing_m=round(float(spacing), 2),
                los_fraction=round(float(data["los"].mean()), 4),
                median_path_gain_db=round(float(np.median(gain)), 2),
                cpu_seconds=round(cpu, 1), wall_seconds=round(wall, 1),
                cpu_seconds_per_user=round(cpu / n_cand, 4),
            )  # fmt: skip
            known[site["name"]] = site
            print(f"{site['name']}: {site['n_users']} users of {n_cand} "
                  f"(LOS {site['los_fraction']:.2f}), {cpu:.0f} CPU-s, {wall:.0f} s", flush=True)
            manifest.update(
                carrier_hz=args.frequency, rays=args.samples, max_depth=args.max_depth,
                paths_per_user=args.paths, seed=args.seed, sionna_rt=rt.__version__,
                hash_size=int(args.hash_size), chunk=args.chunk,
                interactions="line of sight, specular reflection, diffraction",
                sites=sorted(known.values(), key=lambda s: s["name"]),
            )  # fmt: skip
            manifest["cpu_seconds"] = round(sum(s["cpu_seconds"] for s in manifest["sites"]), 1)
            man_path.write_text(json.dumps(manifest, indent=1) + "\n")
            np.savez_compressed(out / "heightmaps.npz", **hmaps)
    np.savez_compressed(out / "heightmaps.npz", **hmaps)
    if manifest["sites"]:
        write_readme(out, manifest)


if __name__ == "__main__":
    main()
