"""Evaluate the learned models of the book behind their classical fallbacks and write
``results/fallback/summary.json`` (chapter *Learned components behind a classical fallback*).

For every case of ``lib.chapters.FALLBACK_CASES`` (CsiNet and the unfolded decoder behind
Type-II, LAMP-BG behind OAMP, the unfolded WMMSE and the PaPP student behind RZF): the wrapper of
``lib.chapters.fallback_case`` (threshold for a 10 % trigger rate on in-distribution
validation data), scored by ``lib.chapters.evaluate_case`` on ``--n`` samples of every
deployment (matched, each shift, and all shifts pooled): trigger rate, fraction of the
learned-only gain retained, fraction of samples worse than the classical method alone, worst
excess loss, the monitor's AUROC for the samples where the learned output is worse, timings.

The CsiNet monitor (Mahalanobis distance of its codewords) is first fitted on two draws of the
training images and stored as ``codeword_monitor.pt`` (mean and precision, float32), which the
chapter loads. Nothing is trained here; the run takes a few minutes on one CPU core::

    python scripts/eval_fallback.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from lib.chapters import (  # noqa: E402
    FALLBACK_CASES,
    FALLBACK_TOL,
    TARGET_TRIGGER_RATE,
    codeword_monitor,
    evaluate_case,
    fallback_case,
)
from scripts import _cli  # noqa: E402


def main(argv=None):
    ap = _cli.parser(__doc__, "results/fallback")
    ap.add_argument("--n", type=int, default=400, help="test samples per deployment")
    ap.add_argument("--n-val", type=int, default=1000, help="validation samples (threshold)")
    ap.add_argument("--cases", nargs="+", default=list(FALLBACK_CASES))
    ap.add_argument("--refit-monitor", action="store_true",
                    help="refit the CsiNet codeword monitor even if it is stored")  # fmt: skip
    args = ap.parse_args(argv)
    out = _cli.setup(args)
    t0 = time.perf_counter()
    mon_file = out / "codeword_monitor.pt"
    if "CsiNet/TypeII" in args.cases and (args.refit_monitor or not mon_file.exists()):
        mon = codeword_monitor(fit_draws=2)
        torch.save({"mean": mon.mean.float(), "precision": mon.precision.float()}, mon_file)
        print(f"codeword monitor fitted and stored ({time.perf_counter() - t0:.0f} s)")
    summary = _cli.load_results(out / "summary.json", {"cases": {}})
    for name in args.cases:
        t1 = time.perf_counter()
        case = fallback_case(name, n_val=args.n_val, directory=out)
        res = evaluate_case(case, n=args.n, seed=args.seed)
        summary["cases"][name] = {
            "unit": case.unit,
            "tol": FALLBACK_TOL[name],
            "threshold": case.wrapper.threshold,
            "deployments": res,
            "seconds": round(time.perf_counter() - t1, 1),
        }
        for dep, m in res.items():
            g = m["gain_retained"]
            kept = "  n/a" if g is None else format(g, "5.2f")
            print(f"{name:14s} {dep:15s} trigger {m['trigger_rate']:.3f} retained {kept} "
                  f"worse {m['worse_than_classical_rate']:.3f} auroc {m['auroc']}",
                  flush=True)  # fmt: skip
        summary.update(command=_cli.command_line("eval_fallback.py", argv), n=args.n,
                       n_val=args.n_val, seed=args.seed,
                       target_trigger_rate=TARGET_TRIGGER_RATE)  # fmt: skip
        summary["cases"] = {k: summary["cases"][k] for k in FALLBACK_CASES if k in summary["cases"]}
        _cli.write_results(out / "summary.json", summary)


if __name__ == "__main__":
    main()
