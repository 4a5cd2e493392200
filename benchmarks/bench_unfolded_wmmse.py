"""Unfolded WMMSE: the training step against the pre-change code, and FLOPs / wall time per batch.

1. **Training step** (forward + backward + Adam step) of ``UnfoldedWMMSE(layers, pgd_steps)``
   on one batch of channels, today's ``lib.learn.unfolded_wmmse`` against the module of commit
   ``--old-commit`` (before the checks moved out of the layers), loaded from ``git show`` into a
   temporary file and imported next to today's ``lib``. Both are timed interleaved in one run
   (``--repeats`` rounds of ``--inner`` steps each, medians), and the ratio new / old is
   printed; the target is at least 15 % less time.
2. **Per-batch table**: real flops per channel (``lib.learn.flops``), the median wall time of
   one batch and both as ratios to the unfolded WMMSE with the same number of layers /
   iterations, next to WMMSE, ZF and RZF. The step sizes are those of the stored sweep when
   present (they do not change the cost).

Everything in complex128 on one torch thread (``--threads``)::

    python benchmarks/bench_unfolded_wmmse.py [--batch 100] [--layers 4] [--pgd-steps 4]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lib.chapters import unfolded_wmmse as chapter
from lib.core import set_threads
from lib.learn import unfolded_wmmse as new_uw
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


def load_old_module(commit: str):
    """``lib/learn/unfolded_wmmse.py`` of ``commit`` as a module (imports today's ``lib``)."""
    src = subprocess.run(
        ["git", "show", f"{commit}:lib/learn/unfolded_wmmse.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    tmp = Path(tempfile.mkdtemp()) / "old_unfolded_wmmse.py"
    tmp.write_text(src)
    spec = importlib.util.spec_from_file_location("old_unfolded_wmmse", tmp)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_unfolded_wmmse"] = mod
    spec.loader.exec_module(mod)
    return mod


def training_step(mod, batch, layers, pgd_steps):
    """One Adam step of ``mod.UnfoldedWMMSE(layers, pgd_steps)`` on ``batch``, as a closure."""
    model = mod.UnfoldedWMMSE(layers, pgd_steps)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    (H, P, s2), target = batch

    def step():
        loss = mod.wsr_loss(model(H, P, s2), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_training_step(args):
    old = load_old_module(args.old_commit)
    batch = new_uw.make_sampler(4, 4, args.snr_db)(args.batch, torch.Generator().manual_seed(0))
    steps = {
        "old": training_step(old, batch, args.layers, args.pgd_steps),
        "new": training_step(new_uw, batch, args.layers, args.pgd_steps),
    }
    for fn in steps.values():  # warm-up
        for _ in range(args.inner):
            fn()
    times = {k: [] for k in steps}
    load0 = os.getloadavg()[0]
    for _ in range(args.repeats):  # interleaved rounds
        for name, fn in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.inner):
                fn()
            times[name].append((time.perf_counter() - t0) / args.inner)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["new"] / med["old"]
    print(
        f"training step of UnfoldedWMMSE({args.layers}, {args.pgd_steps}), batch {args.batch}, "
        f"{args.snr_db:g} dB, complex128, {args.threads} thread(s); old = commit "
        f"{args.old_commit}; medians of {args.repeats} interleaved rounds x {args.inner} steps; "
        f"load average {load0:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    for k in ("old", "new"):
        lo, hi = min(times[k]), max(times[k])
        print(f"  {k}: {1e3 * med[k]:7.3f} ms/step  (min {1e3 * lo:.3f}, max {1e3 * hi:.3f})")
    print(
        f"  new / old = {ratio:.3f}: {100 * (1 - ratio):.1f} % less time per step "
        f"({med['old'] / med['new']:.2f}x), target >= 15 %: {'met' if ratio <= 0.85 else 'NOT met'}"
    )
    return ratio


def bench_table(args):
    M = K = 4
    L, Q = args.layers, args.pgd_steps
    P, s2 = 10 ** (args.snr_db / 10), 1.0
    H = rayleigh(args.table_batch, K, M, generator=torch.Generator().manual_seed(0))
    model = UnfoldedWMMSE(L, Q)
    try:
        model = chapter.stored_model(args.snr_db, L, Q, "free")
    except (FileNotFoundError, KeyError):
        pass  # untrained step sizes: the same cost

    rows = []
    with torch.no_grad():
        methods = {
            f"unfolded WMMSE (L={L}, K={Q})": (
                lambda: model.precode(H, P, s2),
                flops_unfolded_wmmse(M, K, L, Q),
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
        f"\nM = N = {M}, SNR {args.snr_db:g} dB, batch {args.table_batch}, "
        f"{args.threads} thread(s), complex128 (K = PGD steps, as in the paper)"
    )
    print(
        f"{'method':34s} {'flops/ch':>10s} {'x unf.':>7s} "
        f"{'ms/batch':>9s} {'x unf.':>7s} {'WSR':>7s}"
    )
    for name, fl, t, wsr in rows:
        print(f"{name:34s} {fl:10d} {fl / ref_fl:7.2f} {1e3 * t:9.1f} {t / ref_t:7.2f} {wsr:7.3f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=100, help="training batch")
    ap.add_argument("--table-batch", type=int, default=10_000, help="batch of the table")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--pgd-steps", type=int, default=4)
    ap.add_argument("--snr-db", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--inner", type=int, default=20)
    ap.add_argument("--old-commit", default="c5aa9da")
    ap.add_argument("--skip-table", action="store_true")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    bench_training_step(args)
    if not args.skip_table:
        bench_table(args)


if __name__ == "__main__":
    main()
