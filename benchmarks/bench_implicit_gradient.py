"""Implicit gradient of the minimum-power problem (``lib.precoding.min_power_implicit``) against
cvxpylayers on the same instances.

Usage::

    python benchmarks/bench_implicit_gradient.py [--instances 100] [--users 4] [--antennas 8]
        [--sinr-db 3] [--threads 1] [--jobs N] [--solver SCS] [--json PATH]

Both compute the total power of the SINR-constrained minimum-power problem (Schynol &
Pesavento, eqs. (12)/(31)) and its gradient w.r.t. the complex channels, forward + backward:
the implicit layer runs the batched duality fixed point and one batched linear solve of the
reduced system of their Theorem 4.2; cvxpylayers solves the DPP SOCP (real and imaginary parts
of the channels as parameters) instance by instance with diffcp and differentiates its
homogeneous self-dual embedding. The solver tolerance is tight (``1e-11``) so that the two
gradients can agree to better than ``1e-4``. The script prints both times per instance, the
speed-up ratio (target >= 10x) and the max relative difference of the gradients (per
instance, in the max norm); it exits non-zero if the gradients disagree. With ``--json PATH``
the two numbers (and the conditions) are merged, as ``implicit_gradient``, into the results file
``PATH`` (e.g. ``results/learned_hybrid/summary.json``, which the learned chapter reads).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from lib.core import set_seed, set_threads
from lib.phy import rayleigh
from lib.precoding import min_power_implicit


def cvxpy_layer(K: int, M: int, gam: float, s2: float):
    """DPP-compliant SOCP of the min-power problem, parametrised by ``Re H`` and ``Im H``."""
    import cvxpy as cp
    from cvxpylayers.torch import CvxpyLayer

    Hr, Hi = cp.Parameter((K, M)), cp.Parameter((K, M))
    Vr, Vi = cp.Variable((M, K)), cp.Variable((M, K))
    Gr, Gi = Hr @ Vr - Hi @ Vi, Hr @ Vi + Hi @ Vr  # h_k^H v_j
    cons = []
    for k in range(K):
        cons.append(Gi[k, k] == 0)  # phase: h_k^H v_k real
        rhs = cp.hstack([Gr[k, :], Gi[k, :], np.array([math.sqrt(s2)])])
        cons.append(cp.SOC(math.sqrt(1.0 + 1.0 / gam) * Gr[k, k], rhs))
    prob = cp.Problem(cp.Minimize(cp.sum_squares(Vr) + cp.sum_squares(Vi)), cons)
    assert prob.is_dpp()
    return CvxpyLayer(prob, parameters=[Hr, Hi], variables=[Vr, Vi])


def implicit_grad(H, gam, s2):
    Hg = H.clone().requires_grad_(True)
    res = min_power_implicit(Hg, gam, s2)
    res.total_power.sum().backward()
    return res.total_power.detach(), Hg.grad, res.feasible


def cvxpylayers_grad(layer, H, solver_args):
    Hr = H.real.clone().requires_grad_(True)
    Hi = H.imag.clone().requires_grad_(True)
    Vr, Vi = layer(Hr, Hi, solver_args=solver_args)
    P = (Vr.square() + Vi.square()).sum((-2, -1))
    P.sum().backward()
    return P.detach(), torch.complex(Hr.grad, Hi.grad)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--antennas", type=int, default=8)
    ap.add_argument("--sinr-db", type=float, default=3.0)
    ap.add_argument("--noise-var", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--solver", choices=["SCS", "Clarabel"], default="SCS")
    ap.add_argument("--repeats", type=int, default=3, help="implicit timing: best of")
    ap.add_argument(
        "--jobs", type=int, default=None, help="diffcp thread-pool size (default: --threads)"
    )
    ap.add_argument("--json", default=None, help="merge the result into this results file")
    args = ap.parse_args(argv)
    try:
        import cvxpylayers  # noqa: F401
    except ImportError:
        print("cvxpylayers is not installed: pip install -r requirements.txt")
        return 1
    set_threads(args.threads)
    gen = set_seed(0)
    B, K, M = args.instances, args.users, args.antennas
    H = rayleigh(B, K, M, generator=gen)
    gam, s2 = 10 ** (args.sinr_db / 10), args.noise_var
    if args.solver == "SCS":
        solver_args = {"eps_abs": 1e-11, "eps_rel": 1e-11, "max_iters": 100_000}
    else:
        tight = 1e-12
        solver_args = {
            "solve_method": "Clarabel",
            **{k: tight for k in ("tol_gap_abs", "tol_gap_rel", "tol_feas")},
        }
    jobs = args.threads if args.jobs is None else args.jobs
    solver_args.update(n_jobs_forward=jobs, n_jobs_backward=jobs)

    t0 = time.perf_counter()
    layer = cvxpy_layer(K, M, gam, s2)
    t_build = time.perf_counter() - t0
    implicit_grad(H[:2], gam, s2)  # warm-up
    cvxpylayers_grad(layer, H[:2], solver_args)

    t_imp = math.inf
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        P_i, g_i, feas = implicit_grad(H, gam, s2)
        t_imp = min(t_imp, time.perf_counter() - t0)
    t0 = time.perf_counter()
    P_c, g_c = cvxpylayers_grad(layer, H, solver_args)
    t_cvx = time.perf_counter() - t0

    n_feas = int(feas.sum())
    f = feas
    rel_g = (g_i[f] - g_c[f]).abs().amax((-2, -1)) / g_i[f].abs().amax((-2, -1))
    rel_p = (P_i[f] - P_c[f]).abs() / P_i[f]
    max_rel_g = float(rel_g.max()) if n_feas else float("nan")
    ok = n_feas > 0 and max_rel_g < 1e-4
    print(
        f"Min-power gradient, {B} instances ({n_feas} feasible), K={K}, M={M}, "
        f"SINR {args.sinr_db:g} dB, noise {s2:g}, {args.threads} torch thread(s), "
        f"{args.solver} with {jobs} diffcp job(s)"
    )
    print(f"  implicit (batched)   : {1e3 * t_imp / B:8.3f} ms/instance  ({t_imp:.3f} s total)")
    print(
        f"  cvxpylayers          : {1e3 * t_cvx / B:8.3f} ms/instance  ({t_cvx:.3f} s total, "
        f"+{t_build:.2f} s to build the layer)"
    )
    print(f"  speed-up             : {t_cvx / t_imp:8.1f}x  (target >= 10x)")
    print(f"  max rel. power diff  : {float(rel_p.max()):.2e}")
    print(f"  max rel. grad diff   : {max_rel_g:.2e}  (target < 1e-4; agree: {ok})")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"  conditions           : {os.cpu_count()} CPU(s), "
        f"1-min load average {load:.2f} at the end"
    )
    if args.json:
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from scripts.train_learned_hybrid import merge_summary

        cmd = "python benchmarks/bench_implicit_gradient.py " + " ".join(argv or sys.argv[1:])
        record = {
            "max_rel_diff_vs_cvxpylayers": max_rel_g,
            "max_rel_power_diff": float(rel_p.max()),
            "speedup_vs_cvxpylayers": round(t_cvx / t_imp, 2),
            "ms_per_instance": {"implicit": 1e3 * t_imp / B, "cvxpylayers": 1e3 * t_cvx / B},
            "instances": B, "feasible": n_feas, "users": K, "antennas": M,
            "sinr_db": args.sinr_db, "solver": args.solver, "threads": args.threads,
            "load_average": load, "command": cmd.strip(),
        }  # fmt: skip
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        merge_summary(Path(args.json), {}, {}, implicit_gradient=record)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
