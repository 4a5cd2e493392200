"""Train U-G-HBF-GCN / U-G-HBF-FCN (Schynol & Pesavento, Sec. 4-5) on the set-up of the chapter
*Hybrid beamforming under imperfect CSI* and evaluate it next to G-HBF-perf and G-HBF-marg.

Data (``lib.chapters.hybrid``): an ``n_h x n_v`` UPA (8x4), ``K`` users (4, or a range ``1-4``
drawn per step), ``N_RF`` RF chains (5), 10-degree Gaussian spread, SINR target 10 dB, nominal
outage 0.1, ``P_max`` 20 dB, the plain DFT codebook and one greedy sweep. Instances infeasible
for the greedy design on the true channels (G-HBF-perf) within ``P_max`` are dropped. The CSI
is the MMSE estimate at a pilot SNR that defines the **constraint groups** (``--groups``,
default ``0,10,20,0-20``: three fixed pilot SNRs in dB and one uniform range), one outage
constraint and one dual variable per group. Fresh training instances every step (group drawn
uniformly per instance), a fixed validation set (``--val``, 5000 as the paper) and a fixed test
set per group (``--test`` per group, 2000); validation and test sets do not depend on
``--seed``.

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
``...-quantile`` with ``--loss quantile``.

Usage::

    nice python scripts/train_learned_hybrid.py                    # U-G-HBF-GCN
    python scripts/train_learned_hybrid.py --model fcn
    python scripts/train_learned_hybrid.py --loss quantile --device cuda
    python scripts/train_learned_hybrid.py --resume                # after an interruption
"""

from __future__ import annotations

import argparse
import fcntl
import math
import time
from pathlib import Path

import torch

from lib.chapters.hybrid import (
    OUTAGE_CHAPTER,
    draw_instances,
    instance_standard_error,
    margin_design,
    margin_outage,
    mean_power_db,
)
from lib.core.units import db_to_lin
from lib.learn import (
    Callback,
    DualAscent,
    PrimalDualOutageLoss,
    UnfoldedGreedyHBF,
    count_parameters,
    fit,
    outage_convergence_metric,
)
from lib.phy import arrays, csi
from lib.precoding import HybridResult, bisect_margin, empirical_outage, greedy_codebook_selection

try:
    from scripts import _cli
except ImportError:  # run as `python scripts/train_learned_hybrid.py`
    import _cli

VAL_SEED, TEST_SEED = 1001, 2002
SUMMARY = "summary.json"


# --------------------------------------------------------------------------- #
# Set-up and data
# --------------------------------------------------------------------------- #
def parse_groups(text: str) -> list[tuple[str, float, float]]:
    """``"0,10,20,0-20"`` -> ``[(name, lo_db, hi_db), ...]`` (a fixed value has lo = hi)."""
    groups = []
    for item in text.split(","):
        item = item.strip()
        lo, _, hi = item.partition("-") if not item.startswith("-") else (item, "", "")
        lo_db = float(lo)
        hi_db = float(hi) if hi else lo_db
        if hi_db < lo_db:
            raise SystemExit(f"--groups: empty pilot range {item!r}")
        name = f"pilot {lo_db:g} dB" if hi_db == lo_db else f"pilot {lo_db:g}-{hi_db:g} dB"
        groups.append((name, lo_db, hi_db))
    if not groups or len({g[0] for g in groups}) != len(groups):
        raise SystemExit(f"--groups must list distinct pilot SNRs, got {text!r}")
    return groups


def parse_users(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    lo, hi = int(lo), int(hi or lo)
    if not 1 <= lo <= hi:
        raise SystemExit(f"--users must be K or a range lo-hi with 1 <= lo <= hi, got {text!r}")
    return lo, hi


class Problem:
    """The chapter's set-up with the script's overrides (all CPU, complex128 for the data)."""

    def __init__(self, args):
        self.n_h, self.n_v, self.n_rf = args.n_h, args.n_v, args.n_rf
        self.gamma = db_to_lin(args.gamma_db)
        self.noise_var = OUTAGE_CHAPTER["noise_var"]
        self.max_power = db_to_lin(args.max_power_db)
        self.rho = args.rho
        self.spread = math.radians(args.spread_deg)
        self.codebook = arrays.dft_codebook(self.n_h, self.n_v)[0]
        if args.codewords is not None:
            self.codebook = self.codebook[:, : args.codewords]
        self.groups = parse_groups(args.groups)
        self.users = parse_users(args.users)
        self.n_steps = args.greedy_steps

    def draw(self, n: int, gen: torch.Generator, users: int, group: int | None = None):
        """``n`` instances served by G-HBF-perf within ``P_max``: ``(H_hat, eps, groups, H)``
        (complex128, per-user error energy, group index, true channels); the groups are drawn
        uniformly unless ``group`` is given, the pilot SNR per the group."""
        Hs, Rs, eps = [], [], []
        have, tries = 0, 0
        setup = dict(max_power=self.max_power, n_steps=self.n_steps)
        while have < n:
            tries += 1
            if tries > 100:
                raise RuntimeError("G-HBF-perf is infeasible for almost every drawn instance")
            m = max(n - have, 8) + (n - have) // 4
            H, R = draw_instances(
                m, gen, users=users, n_h=self.n_h, n_v=self.n_v, spread=self.spread
            )
            perf = greedy_codebook_selection(
                H, self.codebook, self.n_rf, self.gamma, self.noise_var, **setup
            )
            keep = perf.feasible & (perf.weighted_power <= self.max_power)
            Hs.append(H[keep][: n - have])
            R = R[keep][: n - have]
            have += Hs[-1].shape[0]
            Rs.append(R)  # the estimates follow once the groups (pilot SNRs) are drawn
        H = torch.cat(Hs)
        G = len(self.groups)
        g = (
            torch.randint(0, G, (n,), generator=gen)
            if group is None
            else torch.full((n,), group, dtype=torch.long)
        )
        lo = torch.tensor([self.groups[j][1] for j in g.tolist()], dtype=torch.float64)
        hi = torch.tensor([self.groups[j][2] for j in g.tolist()], dtype=torch.float64)
        pilot = db_to_lin(lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64))
        H_hat, start = [], 0
        for R in Rs:  # estimate chunk by chunk (the covariances are the large tensors)
            sl = slice(start, start + R.shape[0])
            H_hat.append(csi.mmse_estimate(H[sl], R, pilot[sl], generator=gen))
            C = csi.mmse_error_covariance(R, pilot[sl])
            eps.append(torch.diagonal(C, dim1=-2, dim2=-1).real.mean(-1))
            start += R.shape[0]
        return torch.cat(H_hat), torch.cat(eps), g, H

    def sampler(self, dtype):
        """Sampler of :func:`lib.learn.fit`: fresh instances, ``K`` drawn per step."""
        lo, hi = self.users

        def sample(batch, gen):
            K = int(torch.randint(lo, hi + 1, (1,), generator=gen)) if hi > lo else lo
            return cast(self.draw(batch, gen, K), dtype), None

        return sample


def cast(data, dtype):
    """``(H_hat, eps, groups, H)`` in the model's dtype."""
    H_hat, eps, g, H = data
    cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
    return H_hat.to(cdt), eps.to(dtype), g, H.to(cdt)


# --------------------------------------------------------------------------- #
# Model calls
# --------------------------------------------------------------------------- #
class Runner:
    """The model call with the problem's constants on the training device."""

    def __init__(self, prob: Problem, args, device):
        self.prob, self.tau = prob, args.tau
        self.device = device
        self.dtype = torch.float32 if args.dtype == "float32" else torch.float64
        cdt = torch.complex64 if self.dtype == torch.float32 else torch.complex128
        self.codebook = prob.codebook.to(device=device, dtype=cdt)

    def __call__(self, model, H_hat, eps):
        p = self.prob
        return model(
            H_hat,
            eps,
            self.codebook,
            p.n_rf,
            p.gamma,
            p.noise_var,
            max_power=p.max_power,
            n_steps=p.n_steps,
            tau=self.tau,
        )

    @torch.no_grad()
    def evaluate(self, model, data, chunk: int = 256):
        """``(HybridResult, sinr)`` on the true channels for a whole data set, in chunks."""
        H_hat, eps, _, H = data
        parts = []
        for s in range(0, H.shape[0], chunk):
            sl = slice(s, s + chunk)
            r = self(model, H_hat[sl].to(self.device), eps[sl].to(self.device))
            parts.append((r.F_RF, r.V_bb, r.powers, r.weighted_power, r.feasible, r.index))
        cat = [torch.cat([p[i] for p in parts]).cpu() for i in range(6)]
        return HybridResult(*cat)


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
def outage_record(result) -> dict:
    return {
        "outage": round(result.rate, 5),
        "outage_se": round(instance_standard_error(result), 5),
        "power_db": round(mean_power_db(result), 4),
    }


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


def classical(prob: Problem, val, tests, args) -> dict:
    """G-HBF-perf and G-HBF-marg per group (margin bisected on the group's validation data)."""
    setup = dict(
        codebook=prob.codebook,
        n_rf=prob.n_rf,
        sinr_targets=prob.gamma,
        noise_var=prob.noise_var,
        max_power=prob.max_power,
    )
    tgt = dict(sinr_targets=prob.gamma, noise_var=prob.noise_var, max_power=prob.max_power)
    out = {}
    for j, (gname, _, _) in enumerate(prob.groups):
        H_hat, _, _, H = tests[j]
        perf = greedy_codebook_selection(H, prob.codebook, prob.n_rf, **tgt)
        rec = {"G-HBF-perf": outage_record(empirical_outage(H, perf, **tgt))}
        sel = val[2] == j
        try:
            m_star, _ = bisect_margin(
                lambda m, sel=sel: margin_outage(val[3][sel], val[0][sel], m, **setup).rate,
                nominal=prob.rho,
                lo=0.0,
                hi=args.margin_hi,
                iters=args.margin_iters,
            )
            design = margin_design(H_hat, m_star, **setup)
            rec["G-HBF-marg"] = {
                **outage_record(empirical_outage(H, design, **tgt)),
                "margin_db": m_star,
            }
        except ValueError:  # even margin_hi misses the nominal outage on validation data
            rec["G-HBF-marg"] = None
        out[gname] = rec
    return out


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #
def build_parser():
    c = OUTAGE_CHAPTER
    ap = _cli.parser(__doc__, "results/learned_hybrid")
    ap.add_argument("--model", choices=["gcn", "fcn"], default="gcn")
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
    ap.add_argument("--groups", default="0,10,20,0-20", help="pilot SNRs (dB) per group")
    ap.add_argument("--val", type=int, default=5000, help="validation instances (all groups)")
    ap.add_argument("--test", type=int, default=2000, help="test instances per group")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20000, help="maximum training steps")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--dual-lr", type=float, default=None, help="0.1 (annealing), 0.02 (quantile)")
    ap.add_argument("--lambda-max", type=float, default=10.0)
    ap.add_argument("--power", choices=["linear", "log"], default="linear")
    ap.add_argument("--beta-init", type=float, default=1.0)
    ap.add_argument("--beta-max", type=float, default=100.0)
    ap.add_argument("--beta-step", type=float, default=0.05)
    ap.add_argument("--clip-quantile", type=float, default=0.9)
    ap.add_argument("--clip-window", type=int, default=1000)
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--lr-decay", type=float, default=0.1)
    ap.add_argument("--lr-patience", type=int, default=1000)
    ap.add_argument("--patience", type=int, default=2000)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--degree", type=int, default=2, help="GCN degree (fcn: 0)")
    ap.add_argument("--tau", type=float, default=0.1, help="softmin annealing (35)")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--margin-hi", type=float, default=8.0)
    ap.add_argument("--margin-iters", type=int, default=5)
    ap.add_argument("--no-classical", action="store_true", help="skip G-HBF-perf/-marg")
    ap.add_argument("--interrupt-at", type=int, default=None, help=argparse.SUPPRESS)
    return ap


def method_name(args) -> str:
    if args.name:
        return args.name
    return f"U-G-HBF-{args.model.upper()}" + ("-quantile" if args.loss == "quantile" else "")


def main(argv=None):
    t_wall = time.perf_counter()
    args = build_parser().parse_args(argv)
    out = _cli.setup(args)
    command = _cli.command_line("train_learned_hybrid.py", argv)
    prob = Problem(args)
    name = method_name(args)
    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    G = len(prob.groups)
    K_test = args.test_users or prob.users[1]

    # fixed validation and test sets (independent of --seed)
    val = prob.draw(args.val, torch.Generator().manual_seed(VAL_SEED), K_test)
    tests = [
        prob.draw(args.test, torch.Generator().manual_seed(TEST_SEED + j), K_test, group=j)
        for j in range(G)
    ]

    torch.manual_seed(args.seed)
    degree = 0 if args.model == "fcn" else args.degree
    model = UnfoldedGreedyHBF(args.hidden, args.layers, degree, dtype=dtype)
    dual_lr = args.dual_lr or (0.1 if args.loss == "annealing" else 0.02)
    crit = PrimalDualOutageLoss(
        G,
        prob.rho,
        constraint=args.loss,
        dual_lr=dual_lr,
        lambda_max=args.lambda_max,
        power=args.power,
        power_scale=prob.max_power,
        beta_init=args.beta_init,
        beta_max=args.beta_max,
        beta_step=args.beta_step,
    ).to(args.device)
    run = Runner(prob, args, args.device)

    def step_fn(model, batch, st):
        (H_hat, eps, g, H), _ = batch
        res = run(model, H_hat, eps)
        sinr = res.sinr(H, prob.noise_var)
        loss = crit(sinr, res.weighted_power, prob.gamma, g)
        with torch.no_grad():
            outage = (sinr < prob.gamma).double().mean()
            power_db = 10 * torch.log10(res.weighted_power.double().mean().clamp_min(1e-30))
        return loss, {"outage": outage, "power_db": power_db}

    val_dev = cast(val, dtype)
    tgt = dict(sinr_targets=prob.gamma, noise_var=prob.noise_var, max_power=prob.max_power)

    def val_fn(model, batch, st):
        res = empirical_outage(val_dev[3], run.evaluate(model, val_dev), **tgt)
        return outage_convergence_metric(
            res.power,  # infeasible designs are charged P_max
            res.sinr,
            prob.gamma,
            val_dev[2],
            G,
            rho=prob.rho,
            lambda_bound=args.lambda_max,
            power_scale=prob.max_power,
        )

    callbacks = [DualAscent(crit, args.lr)]
    if args.interrupt_at is not None:
        callbacks.append(Interrupt(args.interrupt_at))
    ckpt = args.checkpoints / f"{name}.ckpt"
    hist = fit(
        model,
        None,
        prob.sampler(dtype),
        steps=args.steps,
        lr=args.lr,
        optimiser=lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=args.weight_decay),
        batch_size=args.batch,
        step_fn=step_fn,
        val_data=(val_dev, None),
        val_fn=val_fn,
        val_every=args.val_every,
        patience=args.patience,
        lr_decay=args.lr_decay,
        lr_patience=args.lr_patience,
        min_lr=args.lr * args.lr_decay,  # decayed once (the paper)
        clip_quantile=args.clip_quantile,
        clip_window=args.clip_window,
        checkpoint=ckpt,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        seed=args.seed,
        device=args.device,
        progress=args.progress,
        callbacks=callbacks,
        desc=name,
    )
    model.cpu().eval()
    torch.save(model.state_dict(), out / f"{name}.pt")

    # test: the learned model next to the classical designs, per group
    run_cpu = Runner(prob, args, torch.device("cpu"))
    groups = {}
    for j, (gname, _, _) in enumerate(prob.groups):
        data = cast(tests[j], dtype)
        design = run_cpu.evaluate(model, data)
        groups[gname] = {name: outage_record(empirical_outage(data[3], design, **tgt))}
    if not args.no_classical:
        for gname, rec in classical(prob, val, tests, args).items():
            groups[gname].update(rec)

    times = hist.time
    per_step = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else float("nan")
    best = hist.best()
    record = {
        "model": args.model,
        "loss": args.loss,
        "degree": degree,
        "params": count_parameters(model),
        "train_steps": len(hist),
        "best_step": None if best is None else best[0],
        "best_val_metric": None if best is None else best[1],
        "seconds_per_step": per_step,
        "duals": [round(float(x), 5) for x in crit.duals],
        "beta": [round(float(x), 4) for x in crit.beta],
        "val_curve": {"step": hist.val_step, "metric": hist.val_metric},
        "batch": args.batch,
        "users": args.users,
        "seed": args.seed,
        "command": command,
    }
    setup = {
        "n_h": prob.n_h,
        "n_v": prob.n_v,
        "n_rf": prob.n_rf,
        "codewords": int(prob.codebook.shape[1]),
        "gamma_db": args.gamma_db,
        "spread_deg": args.spread_deg,
        "max_power_db": args.max_power_db,
        "groups": [list(g) for g in prob.groups],
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
        {name: record},
        nominal_outage=prob.rho,
        setup=setup,
        commands=[command],
        seconds_per_command=[seconds],
    )
    _cli.write_readme_table(out / "README.md", readme_table(summary))
    ckpt.unlink(missing_ok=True)
    for gname in groups:
        r = groups[gname][name]
        print(f"{name:22s} {gname:16s} outage {r['outage']:.3f} power {r['power_db']:.2f} dB")
    return {"summary": summary, "history": hist, "model": model, "seconds": seconds}


if __name__ == "__main__":
    main()
