"""Batched torch WMMSE (``lib.precoding.wmmse``) against a per-channel NumPy loop of it.

Usage::

    python benchmarks/bench_wmmse.py [--channels 10000] [--iters 10] [--snr-db 10] [--threads 1]

Both run the same iterations from the same matched-filter start: MMSE receivers u, MSE
weights w, and the closed-form beamformer with mu found by bisection on the eigenvalues
(Pellaco et al., eqs. (5)-(8)); the NumPy version loops over channels in Python, the way
the algorithm is usually written. The script checks that the two agree (equal WSR) and prints
both times, both mean WSRs and the speed-up ratio (target >= 100x).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from lib import precoding as dl
from lib.core import set_seed, set_threads
from lib.phy import rayleigh


def wmmse_numpy_one(H: np.ndarray, P: float, s2: float, iters: int, bisect_iters: int = 50):
    """WMMSE for one channel ``H`` (K, M), row k = h_k^H; returns V (M, K)."""
    K, M = H.shape
    V = H.conj().T * np.sqrt(P / np.sum(np.abs(H) ** 2))
    for _ in range(iters):
        G = H @ V
        G2 = np.abs(G) ** 2
        g = np.diag(G)
        total = G2.sum(axis=1) + s2
        u = g / total
        interf = total - np.diag(G2)
        w = 1.0 / (np.abs(1 - np.conj(u) * g) ** 2 + np.abs(u) ** 2 * interf)
        A = np.zeros((M, M), dtype=complex)
        R = np.zeros((M, K), dtype=complex)
        for k in range(K):
            h = H[k].conj()
            A += w[k] * abs(u[k]) ** 2 * np.outer(h, h.conj())
            R[:, k] = w[k] * u[k] * h
        lam, U = np.linalg.eigh(A)
        lam = np.maximum(lam, 0.0)
        Rt = U.conj().T @ R
        phi = np.sum(np.abs(Rt) ** 2, axis=1)
        # numerical null space of A: dropped only where mu = 0 (pseudo-inverse)
        keep = lam > lam[-1] * M * np.finfo(float).eps * 10
        p0 = np.sum(phi[keep] / lam[keep] ** 2)
        mu = 0.0
        if p0 > P:
            lo, hi = 0.0, np.sqrt(phi.sum() / P)
            for _ in range(bisect_iters):
                mid = 0.5 * (lo + hi)
                if np.sum(phi / (lam + mid) ** 2) > P:
                    lo = mid
                else:
                    hi = mid
            mu = hi
            inv = 1.0 / (lam + mu)
        else:
            inv = np.where(keep, 1.0 / np.where(keep, lam, 1.0), 0.0)
        V = U @ (inv[:, None] * Rt)
        pw = np.sum(np.abs(V) ** 2)
        if mu > 0 or pw > P:
            V = V * np.sqrt(P / pw)
    return V


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--antennas", type=int, default=4)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--snr-db", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    gen = set_seed(0)
    H = rayleigh(args.channels, args.users, args.antennas, generator=gen)
    P, s2 = 1.0, 10 ** (-args.snr_db / 10)

    dl.wmmse(H[:10], P, s2, 2)  # warm-up
    t0 = time.perf_counter()
    V_t = dl.wmmse(H, P, s2, args.iters)
    t_torch = time.perf_counter() - t0

    Hn = H.numpy()
    t0 = time.perf_counter()
    V_n = np.stack([wmmse_numpy_one(Hn[b], P, s2, args.iters) for b in range(args.channels)])
    t_numpy = time.perf_counter() - t0

    r_t = dl.sum_rate(H, V_t, s2)
    r_n = dl.sum_rate(H, torch.from_numpy(V_n), s2)
    max_rate_diff = float((r_t - r_n).abs().max())
    max_v_diff = float(np.abs(V_t.numpy() - V_n).max())
    ok = max_rate_diff < 1e-8 and max_v_diff < 1e-6
    print(
        f"WMMSE, {args.channels} channels, K={args.users}, M={args.antennas}, "
        f"{args.iters} iterations, SNR {args.snr_db:g} dB, {args.threads} thread(s)"
    )
    print(f"  torch batched : {t_torch:8.3f} s  (mean WSR {float(r_t.mean()):.4f} b/s/Hz)")
    print(f"  numpy loop    : {t_numpy:8.3f} s  (mean WSR {float(r_n.mean()):.4f} b/s/Hz)")
    print(f"  agree         : {ok}  (max |WSR diff| {max_rate_diff:.2e}, ", end="")
    print(f"max |V diff| {max_v_diff:.2e})")
    print(f"  speed-up      : {t_numpy / t_torch:8.1f}x  (target >= 100x)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"  conditions    : {os.cpu_count()} CPU(s), 1-min load average {load:.2f} at the end")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
