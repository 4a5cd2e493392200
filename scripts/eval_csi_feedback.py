"""Evaluate the CSI-feedback methods on every scenario of the chapter *CSI feedback under
distribution shift* and write ``results/csi_feedback/summary.json``.

Every method of ``lib.chapters.FEEDBACK_METHODS`` (Type-II, compressed sensing decoded by AMP,
the stored unfolded decoder, the stored CsiNet) at every compression ratio ``--ratios`` on
``--n`` channels of every scenario of ``lib.chapters.FEEDBACK_SCENARIOS`` (the training
distribution first), scored by ``lib.chapters.evaluate_feedback_grid``: NMSE (dB) against the
full channel and the RZF sum rate on the fed-back channels, with the truncation floor and the
perfect-CSI rate as limits. The chapter runs the same call with the same arguments and prints
the same numbers (a test compares them). Example::

    python scripts/eval_csi_feedback.py --ratios 0.25 0.0625
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.chapters import FEEDBACK_SCENARIOS, evaluate_feedback_grid, ratio_label  # noqa: E402
from scripts import _cli  # noqa: E402


def main(argv=None):
    ap = _cli.parser(__doc__, "results/csi_feedback")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.0625])
    ap.add_argument("--n", type=int, default=400, help="channels per scenario")
    ap.add_argument("--users", type=int, default=4, help="users per RZF group")
    ap.add_argument("--snr-db", type=float, default=10.0, help="P / sigma^2 of the rates")
    args = ap.parse_args(argv)
    out = _cli.setup(args)
    t0 = time.perf_counter()
    grid = evaluate_feedback_grid(args.ratios, FEEDBACK_SCENARIOS, n=args.n, seed=args.seed,
                                  directory=out, users=args.users, snr_db=args.snr_db)  # fmt: skip
    summary = {
        "command": _cli.command_line("eval_csi_feedback.py", argv),
        "n": args.n,
        "seed": args.seed,
        "users": args.users,
        "rate_snr_db": args.snr_db,
        "ratios": [ratio_label(r) for r in args.ratios],
        "scenarios": grid,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    _cli.write_results(out / "summary.json", summary)
    for sc, rows in grid.items():
        for r, res in rows.items():
            cells = "  ".join(f"{k} {v:6.2f}" for k, v in res["nmse_db"].items())
            print(f"{sc:13s} {r:5s} {cells}")


if __name__ == "__main__":
    main()
