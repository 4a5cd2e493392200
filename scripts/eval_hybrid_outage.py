"""The classical outage designs of the chapter *Hybrid beamforming under imperfect CSI*,
evaluated on large validation and test sets.

The chapter's set-up (``lib.chapters.OUTAGE_CHAPTER``: 8x4 UPA, K=4, N_RF=5, gamma 10 dB,
10 degree spread, pilot 10 dB, P_max 20 dB, rho 0.1, the plain 32-codeword DFT codebook, one
greedy sweep) and its pipeline (``lib.chapters.outage_study``): instances drawn by
``lib.chapters.imperfect_csi_dataset`` (validation seed ``--seed + 1``, test seed
``--seed + 2``), the margin of G-HBF-marg bisected and the loading factor swept on the
validation set, and on the test set the outage (with its standard error, the instance as the
sample), the mean power and the margin and loading trade-off curves of every design. The
conic robust SDP (``lib.chapters.conic_sdp_outage``) is solved on the first ``--n-sdp`` test
instances, once with the naive design's analog beams and once with G-HBF-marg's, and compared
with the greedy designs on the same instances. Writes ``results.json`` to ``--out`` (default
``results/hybrid_outage``).

Usage (CPU, one thread, about 15 minutes)::

    nice python scripts/eval_hybrid_outage.py
"""

from __future__ import annotations

import platform
import time

import torch
from tqdm import tqdm

from lib.chapters import hybrid as pipeline

try:
    from scripts import _cli
except ImportError:  # run as `python scripts/eval_hybrid_outage.py`
    import _cli

MARGINS = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0]
KAPPAS = [0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0]


def main(argv=None):
    ap = _cli.parser(__doc__, "results/hybrid_outage")
    ap.add_argument("--n-val", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--n-sdp", type=int, default=150, help="test instances of the conic SDP")
    ap.add_argument("--margin-iters", type=int, default=6, help="halvings of [0, 8] dB")
    args = ap.parse_args(argv)
    out = _cli.setup(args)
    command = _cli.command_line("eval_hybrid_outage.py", argv)
    t_start = time.perf_counter()
    setup, draw, pilot = pipeline.outage_setup()
    rho = pipeline.OUTAGE_CHAPTER["rho"]
    targets = {k: setup[k] for k in ("sinr_targets", "noise_var", "max_power")}
    data = {}
    for name, n, seed in (("val", args.n_val, args.seed + 1), ("test", args.n_test, args.seed + 2)):
        gen = torch.Generator().manual_seed(seed)
        data[name] = pipeline.imperfect_csi_dataset(n, gen, pilot=pilot, **setup, **draw)
        print(f"{name}: {int(data[name].kept.sum())}/{n} instances kept", flush=True)
    study = pipeline.outage_study(
        data["val"],
        data["test"],
        rho=rho,
        margins=MARGINS,
        kappas=KAPPAS,
        margin_iters=args.margin_iters,
        **setup,
    )
    t_greedy = time.perf_counter() - t_start
    print(f"greedy designs done in {t_greedy:.0f} s", flush=True)
    summ = pipeline.outage_summary
    methods = {
        "naive": summ(study.naive, study.perf),
        "ghbf_perf": summ(study.perf, study.perf),
        "ghbf_marg": summ(study.marg, study.perf),
        "diag_loading": summ(study.loaded, study.perf),
    }
    test = data["test"]
    n = min(args.n_sdp, test.H.shape[0])
    curve = lambda c: [{"x": float(x), **summ(c[x], study.perf)} for x in sorted(c)]  # noqa: E731
    results = {
        "setup": {**pipeline.OUTAGE_CHAPTER, "codewords": int(setup["codebook"].shape[1])},
        "seed": args.seed,
        "val_seed": args.seed + 1,
        "test_seed": args.seed + 2,
        "n_val": int(data["val"].H.shape[0]),
        "n_test": int(test.H.shape[0]),
        "n_drawn": {"val": args.n_val, "test": args.n_test},
        "margin": {
            "bracket_db": [0.0, 8.0],
            "iters": args.margin_iters,
            "margin_db": study.margin_db,
            "trace": [[float(m), float(o)] for m, o in study.margin_trace],
            "val_outage": dict(study.margin_trace)[study.margin_db],
        },
        "kappa": {
            "grid": KAPPAS,
            "kappa": study.kappa,
            "val_outage": [study.kappa_val[k] for k in KAPPAS],
        },
        "methods": methods,
        "margin_curve": curve(study.margin_curve),
        "kappa_curve": curve(study.kappa_curve),
        "sdp": {},
        "command": command,
        "seconds_greedy": round(t_greedy, 1),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"torch {torch.__version__}, {args.threads} thread(s), device {args.device}",
    }
    _cli.write_results(out / "results.json", results)  # the greedy part, before the SDPs
    solved = {}  # (instance, analog beams) -> SDPOutage: equal beams are solved once
    for beams, design in (("naive", study.naive_design), ("ghbf_marg", study.marg_design)):
        runs, new = [], 0
        for i in tqdm(range(n), desc=f"SDP on {beams} beams", disable=not args.progress):
            key = (i, design.F_RF[i].numpy().tobytes())
            if key not in solved:
                s = slice(i, i + 1)
                solved[key] = pipeline.conic_sdp_outage(
                    test.H[s],
                    test.H_hat[s],
                    test.R[s],
                    design.F_RF[s],
                    pilot=pilot,
                    rho=rho,
                    **targets,
                )
                new += 1
            runs.append(solved[key])
        in_out = torch.cat([r.outage.in_outage for r in runs])
        o = pipeline.OutageResult(
            rate=float(in_out.double().mean()),
            in_outage=in_out,
            sinr=torch.cat([r.outage.sinr for r in runs]),
            power=torch.cat([r.outage.power for r in runs]),
        )
        served = torch.cat([r.served for r in runs])
        differ = (design.F_RF[:n] != study.naive_design.F_RF[:n]).flatten(1).any(1)
        results["sdp"][beams] = {
            "analog_beams": beams,
            "sdp": summ(o, study.perf, n),
            "served": int(served.sum()),
            "served_outage": float(in_out[served].double().mean()) if served.any() else None,
            "beams_differ_from_naive": float(differ.double().mean()),
            "solved_here": new,
            "max_rank_ratio": max(r.rank_ratio for r in runs),
            "seconds_per_instance": sum(r.times[0] for r in runs) / n,
            "same_instances": {
                "naive": summ(study.naive, study.perf, n),
                "ghbf_perf": summ(study.perf, study.perf, n),
                "ghbf_marg": summ(study.marg, study.perf, n),
                "diag_loading": summ(study.loaded, study.perf, n),
            },
        }
        print(f"SDP on {beams} beams: {results['sdp'][beams]['sdp']}", flush=True)
        _cli.write_results(out / "results.json", results)
    seconds = time.perf_counter() - t_start
    results["seconds"] = round(seconds, 1)
    _cli.write_results(out / "results.json", results)
    for name, r in methods.items():
        print(
            f"{name:13s} outage {r['outage']:.4f} +- {r['se']:.4f}, power {r['power_db']:.2f} dB",
            flush=True,
        )
    print(f"margin {study.margin_db:.3f} dB, kappa {study.kappa}; wall time {seconds:.0f} s")


if __name__ == "__main__":
    main()
