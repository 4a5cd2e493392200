"""Timings of the hybrid-beamforming code: batched greedy vs a per-instance loop, duality vs SOCP.

Run: ``python benchmarks/bench_hybrid.py`` (1 torch thread). Prints seconds per instance and ratios,
and the greedy search in complex64 against complex128 (time ratio and agreement).
The per-instance reference calls the same solver on one (instance, candidate) problem at a time,
which is how a straightforward implementation of Hegde et al.'s Alg. 2 would proceed.
"""

import math
import time

import torch

from lib.core import set_threads
from lib.phy import channels_from_covariance, dft_codebook, upa_covariance
from lib.precoding import (
    greedy_codebook_selection,
    independent_candidates,
    init_codewords,
    min_power_duality,
    min_power_socp,
)

set_threads()
g = torch.Generator().manual_seed(0)
B, K, NH, NV, NRF, GAM = 32, 4, 8, 4, 5, 10.0
ah = (torch.rand(B, K, generator=g, dtype=torch.float64) * 2 - 1) * math.pi / 3
av = (torch.rand(B, K, generator=g, dtype=torch.float64) * 2 - 1) * math.pi / 6
H = channels_from_covariance(upa_covariance(NH, NV, ah, av, math.radians(10)), generator=g)
C, _, _ = dft_codebook(NH, NV, (2, 2))


def greedy_loop(Hb, steps):
    """Per-instance, per-candidate greedy correction (baseband weighting, no batching)."""
    idx = init_codewords(Hb, C, NRF)[0].clone()
    for t in range(steps):
        r = t % NRF
        others = torch.cat([idx[:r], idx[r + 1 :]])
        ok = independent_candidates(C[:, others][None], C)[0]
        best, best_w = int(idx[r]), math.inf
        for c in range(C.shape[1]):
            if not ok[c]:
                continue
            trial = idx.clone()
            trial[r] = c
            w = float(min_power_duality(Hb @ C[:, trial][None], GAM, 1.0).total_power[0])
            if w < best_w:
                best, best_w = c, w
        idx[r] = best
    return idx


steps = 1
t0 = time.perf_counter()
greedy_codebook_selection(H, C, NRF, GAM, 1.0, n_steps=steps, weighting="baseband")
t_batched = (time.perf_counter() - t0) / B
n_loop = 2
t0 = time.perf_counter()
for b in range(n_loop):
    greedy_loop(H[b : b + 1], steps)
t_loop = (time.perf_counter() - t0) / n_loop
print(
    f"greedy, {steps} step(s), {C.shape[1]} codewords: batched {t_batched * 1e3:.1f} ms/instance, "
    f"per-instance loop {t_loop * 1e3:.1f} ms/instance, speed-up x{t_loop / t_batched:.0f}"
)

Heff = H @ C[:, init_codewords(H, C, NRF)].permute(1, 0, 2)
t0 = time.perf_counter()
d = min_power_duality(Heff, GAM, 1.0)
t_dual = (time.perf_counter() - t0) / B
n_socp = 8
t0 = time.perf_counter()
s = min_power_socp(Heff[:n_socp], GAM, 1.0)
t_socp = (time.perf_counter() - t0) / n_socp
rel = ((d.total_power[:n_socp] - s.total_power) / s.total_power).abs().max()
print(
    f"digital sub-problem ({K} users, {NRF} RF chains): "
    f"duality {t_dual * 1e3:.2f} ms/instance (batched), "
    f"cvxpy SOCP {t_socp * 1e3:.1f} ms/instance, ratio x{t_socp / t_dual:.0f}; "
    f"max rel. power difference {float(rel):.1e}"
)

# single vs double precision: the learned hybrid model calls the greedy search in float32
H32 = H.to(torch.complex64)
res = {}
for name, Hx in (("complex128", H), ("complex64", H32)):
    t0 = time.perf_counter()
    res[name] = greedy_codebook_selection(Hx, C, NRF, GAM, 1.0, n_steps=steps)
    res[name + "_t"] = (time.perf_counter() - t0) / B
a, b = res["complex128"], res["complex64"]
t64, t32 = res["complex128_t"] * 1e3, res["complex64_t"] * 1e3
rel = ((b.weighted_power.double() - a.weighted_power) / a.weighted_power).abs().max()
same = float((a.index == b.index).all(-1).double().mean())
print(
    f"greedy (RF weighting), {steps} step(s): complex128 {t64:.1f} ms/instance, "
    f"complex64 {t32:.1f} ms/instance, ratio x{t64 / t32:.2f}; feasible "
    f"{int(a.feasible.sum())}/{B} vs {int(b.feasible.sum())}/{B}, same codewords {same:.2f}, "
    f"max rel. power difference {float(rel):.1e}"
)
