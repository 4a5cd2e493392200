"""Train U-G-HBF-GCN / U-G-HBF-FCN (Schynol & Pesavento, Sec. 4-5) on the set-up of the chapter
*Hybrid beamforming under imperfect CSI* and evaluate it next to G-HBF-perf and G-HBF-marg.

Data (``lib.chapters.hybrid``): an ``n_h x n_v`` UPA (8x4), ``K`` users (4, or a range ``1-4``
drawn per step), ``N_RF`` RF chains (5), 10-degree Gaussian spread, SINR target 10 dB, nominal
outage 0.1, ``P_max`` 20 dB, the plain DFT codebook and one greedy sweep. Instances infeasible
for the greedy design on the true channels (G-HBF-perf) within ``P_max`` are dropped. The CSI
is the MMSE estimate at a pilot SNR that defines the **constraint groups** (``--groups``,
default ``5,10,20,5-20``: three fixed pilot SNRs in dB and one uniform range; at 0 dB no
margin brings G-HBF-marg's outage below 0.25 within ``P_max``, see the chapter), one outage
constraint and one dual variable per group. Fresh training instances every step (group
drawn uniformly per instance), a fixed validation set (``--val``, 800; the paper has 5000)
and a fixed test set per group (``--test`` per group, 2000); validation and test sets do not
depend on ``--seed``.

Training (``lib.learn.fit``): the primal-dual Lagrangian of :class:`lib.learn.PrimalDualOutageLoss`
(eq. (49)) with the adaptive annealing outage (eqs. (51)-(52), default) or the quantile penalty
(eq. (53), ``--loss quantile``); AdamW (Adam with decoupled weight decay); adaptive gradient
clipping at the ``--clip-quantile`` quantile of the last ``--clip-window`` gradient norms (the
trainer's ``clip_quantile``); validation every ``--val-every`` steps on the convergence metric
(54); primal and dual step sizes decayed once by ``--lr-decay`` after ``--lr-patience`` steps
without a new validation minimum; the run ends after ``--patience`` steps without one (the
paper's convergence rule), or at ``--steps``; the best validated weights are kept.

Outputs in ``--out`` (default ``results/learned_hybrid``): ``<method>.pt`` (state dict, load it
with ``torch.load(..., weights_only=True)``) and ``summary.json``::

    {"nominal_outage": 0.1,
     "groups": {GROUP: {METHOD: {"outage": .., "outage_se": .., "power_db": ..}}},
     "models": {METHOD: {training record}}, "setup": {...},
     "commands": [...], "seconds_per_command": [...]}

merged into an existing summary under a lock (several runs can write into one folder), with
G-HBF-perf and G-HBF-marg (margin bisected per group on the group's validation instances) on
the same test sets. Methods: ``U-G-HBF-GCN``, ``U-G-HBF-FCN`` (``--model fcn``, degree 0),
``U-FDBF-GCN`` (``--model fdbf``: fully digital, the same GCN and digital problem with the
identity as analog matrix), ``...-quantile`` with ``--loss quantile``.

Usage::

    nice python scripts/train_learned_hybrid.py                    # U-G-HBF-GCN
    python scripts/train_learned_hybrid.py --model fcn
    python scripts/train_learned_hybrid.py --loss quantile --device cuda
    python scripts/train_learned_hybrid.py --resume                # after an interruption
"""

from __future__ import annotations

import argparse
import fcntl
import time
from pathlib import Path

import torch

from lib.chapters.hybrid import OUTAGE_CHAPTER, margin_design, margin_outage
from lib.chapters.learned_hybrid import (
    LearnedHybridProblem,
    TrainingProtocol,
    group_outage_table,
    learned_hybrid_design,
    outage_record,
    search_margin,
    train_learned_hybrid,
)
from lib.learn import Callback, UnfoldedGreedyHBF, count_parameters
from lib.precoding import greedy_codebook_selection

try:
    from scripts import _cli
except ImportError:  # run as `python scripts/train_learned_hybrid.py`
    import _cli

VAL_SEED, TEST_SEED = 1001, 2002
SUMMARY = "summary.json"


def parse_users(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    lo, hi = int(lo), int(hi or lo)
    if not 1 <= lo <= hi:
        raise SystemExit(f"--users must be K or a range lo-hi with 1 <= lo <= hi, got {text!r}")
    return lo, hi


def make_problem(args) -> LearnedHybridProblem:
    try:
        return LearnedHybridProblem(
            n_h=args.n_h, n_v=args.n_v, n_rf=args.n_rf, gamma_db=args.gamma_db,
            spread_deg=args.spread_deg, max_power_db=args.max_power_db, rho=args.rho,
            groups=args.groups, users=parse_users(args.users), codewords=args.codewords,
            greedy_steps=args.greedy_steps, digital=args.model == "fdbf",
        )  # fmt: skip
    except ValueError as err:
        raise SystemExit(str(err)) from None


def make_protocol(args) -> TrainingProtocol:
    return TrainingProtocol(
        loss=args.loss, steps=args.steps, batch=args.batch, lr=args.lr,
        weight_decay=args.weight_decay, dual_lr=args.dual_lr, lambda_max=args.lambda_max,
        power=args.power, beta_init=args.beta_init, beta_max=args.beta_max,
        beta_step=args.beta_step, clip_quantile=args.clip_quantile,
        clip_window=args.clip_window, val_every=args.val_every, lr_decay=args.lr_decay,
        lr_patience=args.lr_patience, patience=args.patience, tau=args.tau,
    )  # fmt: skip


class Interrupt(Callback):
    """Raises ``KeyboardInterrupt`` after ``step`` optimiser steps (tests of ``--resume``)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, state, loss):
        if state.step >= self.step:
            raise KeyboardInterrupt(f"interrupted after step {state.step} (--interrupt-at)")


# --------------------------------------------------------------------------- #
# Results
# --------------------------------------------------------------------------- #
def merge_summary(path: Path, groups: dict, models: dict, **top) -> dict:
    """Merge into ``summary.json`` under the lock of :func:`scripts._cli.merge_results`:
    ``groups[GROUP][METHOD]`` and ``models[METHOD]`` are added or replaced, ``commands`` and
    ``seconds_per_command`` appended, other keywords replaced."""
    lock = path.with_name(path.name + ".lock")
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            res = _cli.load_results(path, {"groups": {}, "models": {}})
            for gname, methods in groups.items():
                res.setdefault("groups", {}).setdefault(gname, {}).update(methods)
            res.setdefault("models", {}).update(models)
            for k, v in top.items():
                if k in ("commands", "seconds_per_command"):
                    res.setdefault(k, []).extend(v)
                else:
                    res[k] = v
            _cli.write_results(path, res)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return res


def readme_table(summary: dict) -> str:
    """Markdown table: one row per (group, method), outage +- se and power."""
    rows = [
        "| group | method | outage | power (dB) |",
        "|---|---|---|---|",
    ]
    for gname, methods in summary.get("groups", {}).items():
        for m, r in methods.items():
            if r is None:
                continue
            rows.append(
                f"| {gname} | {m} | {r['outage']:.3f} +- {r['outage_se']:.3f} | "
                f"{r['power_db']:.2f} |"
            )
    return "\n".join(rows)


def classical(prob: LearnedHybridProblem, val, tests, args) -> dict:
    """G-HBF-perf and G-HBF-marg per group (margin searched on the group's validation data)."""
    setup = dict(codebook=prob.codebook, n_rf=prob.n_rf, **prob.targets)
    perf, marg, margins = [], [], {}
    for j, (gname, _, _) in enumerate(prob.group_list):
        H_hat, _, _, H = tests[j]
        perf.append(greedy_codebook_selection(H, prob.codebook, prob.n_rf, **prob.targets))
        sel = val[2] == j
        m_star, trace = search_margin(
            lambda m, sel=sel: margin_outage(val[3][sel], val[0][sel], m, **setup).rate,
            prob.rho, args.margin_hi, args.margin_step, args.margin_iters,
        )  # fmt: skip
        margins[gname] = {"margin_db": m_star, "val_trace": [list(t) for t in trace]}
        marg.append(None if m_star is None else margin_design(H_hat, m_star, **setup))
    out = {g: {"G-HBF-perf": r} for g, r in group_outage_table(prob, tests, perf).items()}
    for j, (gname, _, _) in enumerate(prob.group_list):
        rec = None if marg[j] is None else outage_record(prob, tests[j], marg[j])
        out[gname]["G-HBF-marg"] = rec and {**rec, "margin_db": margins[gname]["margin_db"]}
    return out, margins


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #
def build_parser():
    c, d = OUTAGE_CHAPTER, TrainingProtocol()
    ap = _cli.parser(__doc__, "results/learned_hybrid")
    ap.add_argument("--model", choices=["gcn", "fcn", "fdbf"], default="gcn")
    ap.add_argument("--loss", choices=["annealing", "quantile"], default="annealing")
    ap.add_argument("--name", default=None, help="method name (default from --model/--loss)")
    ap.add_argument("--users", default=str(c["users"]), help="K or a range lo-hi per step")
    ap.add_argument("--test-users", type=int, default=None, help="K of the test sets (max)")
    ap.add_argument("--n-h", type=int, default=c["n_h"])
    ap.add_argument("--n-v", type=int, default=c["n_v"])
    ap.add_argument("--n-rf", type=int, default=c["n_rf"])
    ap.add_argument("--codewords", type=int, default=None, help="first C codewords only")
    ap.add_argument("--greedy-steps", type=int, default=None, help="default one sweep")
    ap.add_argument("--gamma-db", type=float, default=c["gamma_db"])
    ap.add_argument("--spread-deg", type=float, default=c["spread_deg"])
    ap.add_argument("--max-power-db", type=float, default=c["max_power_db"])
    ap.add_argument("--rho", type=float, default=c["rho"])
    ap.add_argument("--groups", default="5,10,20,5-20", help="pilot SNRs (dB) per group")
    ap.add_argument("--val", type=int, default=800, help="validation instances (all groups)")
    ap.add_argument("--test", type=int, default=2000, help="test instances per group")
    ap.add_argument("--batch", type=int, default=d.batch)
    ap.add_argument("--steps", type=int, default=d.steps, help="maximum training steps")
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay)
    ap.add_argument("--dual-lr", type=float, default=None, help="0.1 (annealing), 0.02 (quantile)")
    ap.add_argument("--lambda-max", type=float, default=d.lambda_max)
    ap.add_argument("--power", choices=["linear", "log"], default="linear")
    ap.add_argument("--beta-init", type=float, default=d.beta_init)
    ap.add_argument("--beta-max", type=float, default=d.beta_max)
    ap.add_argument("--beta-step", type=float, default=d.beta_step)
    ap.add_argument("--clip-quantile", type=float, default=d.clip_quantile)
    ap.add_argument("--clip-window", type=int, default=d.clip_window)
    ap.add_argument("--val-every", type=int, default=d.val_every)
    ap.add_argument("--lr-decay", type=float, default=d.lr_decay)
    ap.add_argument("--lr-patience", type=int, default=d.lr_patience)
    ap.add_argument("--patience", type=int, default=d.patience)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--degree", type=int, default=2, help="GCN degree (fcn: 0)")
    ap.add_argument("--tau", type=float, default=d.tau, help="softmin annealing (35)")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--margin-hi", type=float, default=12.0)
    ap.add_argument("--margin-step", type=float, default=2.0, help="margin grid (dB)")
    ap.add_argument("--margin-iters", type=int, default=4, help="halvings of a grid cell")
    ap.add_argument("--no-classical", action="store_true", help="skip G-HBF-perf/-marg")
    ap.add_argument(
        "--classical-only", action="store_true", help="only G-HBF-perf/-marg, no training"
    )
    ap.add_argument("--interrupt-at", type=int, default=None, help=argparse.SUPPRESS)
    return ap


def train_curve(hist, window: int = 25) -> dict:
    """Means of the training loss, outage and power (dB) over windows of ``window`` steps."""
    out = {"step": [], "loss": [], "outage": [], "power_db": []}
    for s in range(0, len(hist), window):
        out["step"].append(min(s + window, len(hist)))
        for key, xs in (("loss", hist.loss), *((k, hist.logs[k]) for k in ("outage", "power_db"))):
            chunk = xs[s : s + window]
            out[key].append(round(sum(chunk) / len(chunk), 5))
    return out


def method_name(args) -> str:
    if args.name:
        return args.name
    base = "U-FDBF-GCN" if args.model == "fdbf" else f"U-G-HBF-{args.model.upper()}"
    return base + ("-quantile" if args.loss == "quantile" else "")


def train_and_test(args, prob, protocol, name, dtype, val, tests, out, command):
    """Train one model, save its weights, evaluate it per group: ``(groups, {name: record})``."""
    torch.manual_seed(args.seed)
    degree = 0 if args.model == "fcn" else args.degree
    model = UnfoldedGreedyHBF(args.hidden, args.layers, degree, dtype=dtype)
    callbacks = [] if args.interrupt_at is None else [Interrupt(args.interrupt_at)]
    ckpt = args.checkpoints / f"{name}.ckpt"
    hist, crit = train_learned_hybrid(
        model, prob, val, protocol, seed=args.seed, device=args.device, checkpoint=ckpt,
        checkpoint_every=args.checkpoint_every, resume=args.resume, progress=args.progress,
        callbacks=callbacks, desc=name,
    )  # fmt: skip
    model.cpu().eval()
    torch.save(model.state_dict(), out / f"{name}.pt")

    # test: the learned model next to the classical designs, per group
    designs = [learned_hybrid_design(model, prob, t, tau=protocol.tau) for t in tests]
    groups = {g: {name: r} for g, r in group_outage_table(prob, tests, designs).items()}

    times = hist.time
    per_step = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else float("nan")
    best = hist.best()
    record = {
        "model": args.model,
        "loss": args.loss,
        "degree": degree,
        "hidden": args.hidden,
        "layers": args.layers,
        "params": count_parameters(model),
        "train_steps": len(hist),
        "best_step": None if best is None else best[0],
        "best_val_metric": None if best is None else best[1],
        "seconds_per_step": per_step,
        "duals": [round(float(x), 5) for x in crit.duals],
        "beta": [round(float(x), 4) for x in crit.beta],
        "val_curve": {"step": hist.val_step, "metric": hist.val_metric},
        "train_curve": train_curve(hist),
        "protocol": vars(protocol),
        "batch": args.batch,
        "users": args.users,
        "seed": args.seed,
        "command": command,
    }
    ckpt.unlink(missing_ok=True)
    return groups, {name: record}, {"history": hist, "model": model}


def main(argv=None):
    t_wall = time.perf_counter()
    args = build_parser().parse_args(argv)
    out = _cli.setup(args)
    command = _cli.command_line("train_learned_hybrid.py", argv)
    prob = make_problem(args)
    protocol = make_protocol(args)
    name = method_name(args)
    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    G = len(prob.group_list)
    K_test = args.test_users or prob.users[1]

    # fixed validation and test sets (independent of --seed)
    val = prob.draw(args.val, torch.Generator().manual_seed(VAL_SEED), K_test)
    tests = [
        prob.draw(args.test, torch.Generator().manual_seed(TEST_SEED + j), K_test, group=j)
        for j in range(G)
    ]

    groups, models, trained, top = {}, {}, {}, {}
    if not args.classical_only:
        groups, models, trained = train_and_test(
            args, prob, protocol, name, dtype, val, tests, out, command
        )
    if args.classical_only or not args.no_classical:
        rec, margins = classical(prob, val, tests, args)
        for gname, r in rec.items():
            groups.setdefault(gname, {}).update(r)
        top["margin_search"] = margins
    setup = {
        "n_h": prob.n_h,
        "n_v": prob.n_v,
        "n_rf": prob.n_rf,
        "codewords": int(prob.codebook.shape[1]),
        "gamma_db": args.gamma_db,
        "spread_deg": args.spread_deg,
        "max_power_db": args.max_power_db,
        "groups": [list(g) for g in prob.group_list],
        "test_users": K_test,
        "n_val": args.val,
        "n_test_per_group": args.test,
        "val_seed": VAL_SEED,
        "test_seed": TEST_SEED,
    }
    seconds = round(time.perf_counter() - t_wall, 1)
    summary = merge_summary(
        out / SUMMARY,
        groups,
        models,
        **top,
        nominal_outage=prob.rho,
        setup=setup,
        commands=[command],
        seconds_per_command=[seconds],
    )
    _cli.write_readme_table(out / "README.md", readme_table(summary))
    for gname, methods in groups.items():
        for m, r in methods.items():
            if r is not None:
                print(f"{m:22s} {gname:16s} outage {r['outage']:.3f} power {r['power_db']:.2f} dB")
    return {"summary": summary, "seconds": seconds, **trained}


if __name__ == "__main__":
    main()
