"""FLOPs and wall time per batch: WMMSE vs unfolded WMMSE vs ZF/RZF (M = N = 4, 10 dB).

Prints a table with, per method, the real flops per channel (lib.learn.flops.flops_*), the
median wall time for one batch of channels (torch, one thread, complex128) and both as ratios
to the unfolded WMMSE with the same number of layers/iterations. The step sizes are those of the
stored sweep when present (they do not change the cost).

    python benchmarks/bench_unfolded_wmmse.py [--batch 10000] [--layers 4] [--pgd-steps 4]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lib.core import set_threads
from lib.learn.flops import flops_rzf, flops_unfolded_wmmse, flops_wmmse, flops_zf
from lib.learn.unfolded_wmmse import UnfoldedWMMSE
from lib.phy import rayleigh
from lib.precoding import rzf, sum_rate, wmmse, zf

ROOT = Path(__file__).resolve().parents[1]


def timeit(fn, repeats=5):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--pgd-steps", type=int, default=4)
    ap.add_argument("--snr-db", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    M = K = 4
    L, Kp = args.layers, args.pgd_steps
    P, s2 = 10 ** (args.snr_db / 10), 1.0
    H = rayleigh(args.batch, K, M, generator=torch.Generator().manual_seed(0))

    stored = ROOT / "results" / "unfolded_wmmse" / "step_sizes.json"
    key = f"snr{args.snr_db:g}_L{L}_K{Kp}_free"
    model = UnfoldedWMMSE(L, Kp)
    if stored.exists():
        models = json.loads(stored.read_text())["models"]
        if key in models:
            model = UnfoldedWMMSE.from_step_sizes(models[key]["step_sizes"])

    rows = []
    with torch.no_grad():
        methods = {
            f"unfolded WMMSE (L={L}, K={Kp})": (
                lambda: model.precode(H, P, s2),
                flops_unfolded_wmmse(M, K, L, Kp),
            ),
            f"WMMSE truncated ({L} it.)": (lambda: wmmse(H, P, s2, L), flops_wmmse(M, K, L)),
            "WMMSE 1 iteration": (lambda: wmmse(H, P, s2, 1), flops_wmmse(M, K, 1)),
            "ZF": (lambda: zf(H, P), flops_zf(M, K)),
            "RZF": (lambda: rzf(H, P, s2), flops_rzf(M, K)),
        }
        for name, (fn, fl) in methods.items():
            t = timeit(fn)
            wsr = float(sum_rate(H, fn(), s2).mean())
            rows.append((name, fl, t, wsr))
    ref_fl, ref_t = rows[0][1], rows[0][2]
    print(
        f"M = N = {M}, SNR {args.snr_db:g} dB, batch {args.batch}, "
        f"{args.threads} thread(s), complex128"
    )
    print(
        f"{'method':34s} {'flops/ch':>10s} {'x unf.':>7s} "
        f"{'ms/batch':>9s} {'x unf.':>7s} {'WSR':>7s}"
    )
    for name, fl, t, wsr in rows:
        print(f"{name:34s} {fl:10d} {fl / ref_fl:7.2f} {1e3 * t:9.1f} {t / ref_t:7.2f} {wsr:7.3f}")


if __name__ == "__main__":
    main()
