"""Channel rebuild from stored ray-traced paths: batched torch (``lib.phy.RayTracedSite.channels``)
at 1 and 2 threads against a per-user, per-path Python loop of the same sum, one run.

Usage::

    python benchmarks/bench_raytraced_channels.py [--site munich-r1] [--users 2000] [--loop 50]

Both build the narrowband channel of an 8x8 UPA (64 antennas) from the stored gains, departure
angles and delays (eq. (eq-rt-channel) of the chapter *Channels from ray tracing*); the loop is
timed on ``--loop`` users and scaled. The script checks that they agree and prints channels per
second and the ratios.
"""

from __future__ import annotations

import argparse
import cmath
import math
import time

import numpy as np
import torch

from lib.phy import load_site, site_names


def loop_channels(site, users, n_h=8, n_v=8):
    """The sum of eq. (eq-rt-channel) with Python loops over users, paths and antennas."""
    pos = site.array(n_h, n_v).double().numpy()
    fc = site.carrier_hz
    out = np.zeros((len(users), n_h * n_v), dtype=complex)
    for i, u in enumerate(users):
        for ell in range(site.a.shape[1]):
            a = complex(site.a[u, ell])
            if a == 0:
                continue
            th, ph, tau = (float(site.theta_t[u, ell]), float(site.phi_t[u, ell]),
                           float(site.tau[u, ell]))  # fmt: skip
            k = (math.sin(th) * math.cos(ph), math.sin(th) * math.sin(ph), math.cos(th))
            g = a * cmath.exp(-2j * math.pi * ((fc * tau) % 1.0))
            for m in range(n_h * n_v):
                r = pos[m]
                out[i, m] += g * cmath.exp(2j * math.pi * (r[0] * k[0] + r[1] * k[1] + r[2] * k[2]))
    return out


def timed(fn, reps=5):
    fn()
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--site", default=None)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--loop", type=int, default=50)
    args = ap.parse_args()
    site = load_site(args.site or site_names()[0])
    users = torch.arange(args.users) % site.n_users
    ref = loop_channels(site, users[: args.loop].tolist())
    ours = site.channels(users[: args.loop], normalization="none").numpy()
    err = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    t_loop = timed(lambda: loop_channels(site, users[: args.loop].tolist()), reps=1)
    rate = {"loop": args.loop / t_loop}
    for th in (1, 2):
        torch.set_num_threads(th)
        t = timed(lambda: site.channels(users, normalization="none"))
        rate[f"torch, {th} thread{'s' * (th > 1)}"] = args.users / t
    print(f"site {site.name}, 8x8 UPA, {site.a.shape[1]} paths per user; "
          f"relative difference {err:.1e} (complex64 against float64)")  # fmt: skip
    for name, r in rate.items():
        print(f"  {name:18s} {r:12,.0f} channels/s   {r / rate['loop']:8.0f}x the loop")
    print(f"  2 threads / 1 thread: {rate['torch, 2 threads'] / rate['torch, 1 thread']:.2f}")


if __name__ == "__main__":
    main()
