"""Paper-scale sweep of the deep-unfolded WMMSE (chapter unfolded_wmmse; Pellaco et al. 2020).

M = N = 4, i.i.d. CN(0, I) channels, noise variance 1, power P = SNR, unit user weights,
matched-filter start, Adam, batch 100, loss eq. (14) (:func:`lib.learn.wsr_loss`; the last
layer only for the ``accel`` and ``norm`` series). Each network with ``L`` layers is
warm-started from the trained ``L - 1``-layer network of the same series (its step sizes, the
last layer copied). ``L`` and ``K`` are the paper's names (layers ``T`` and PGD steps ``Q`` in
``lib``); the set-up, the test and validation channels and the stored-model helpers are in
:mod:`lib.chapters.unfolded_wmmse`.

**Protocol** (``--protocol plateau``, the default; one protocol for every series): learning
rate ``--lr`` x (1, 0.1, 0.01), each stage until ``--patience`` (400) steps pass without the
validation WSR of the last layer (2,000 fixed channels, every ``--val-every`` = 50 steps)
improving by more than ``--min-delta`` (1e-3 b/s/Hz), at most ``--max-steps`` (10,000) steps
per stage; the best validated weights are kept and a network whose stages all ended by
patience is recorded ``converged: true``. ``--protocol fixed`` is the earlier reduced budget
(``--steps`` at ``--lr``, a quarter of that at ``lr / 10``).

Series (``--series``, default all):

* ``snr10_accel``, ``snr20_accel``: the scale-free accelerated network (chapter, Sec. 9):
  log-domain step sizes divided by ``tr(A)``, heavy-ball momentum, last-layer loss,
  K = ``--accel-pgd-steps`` (7, the most PGD steps within the flops of one WMMSE iteration);
  ablations ``snr10_norm``, ``snr20_norm`` (no momentum, K = ``--norm-pgd-steps`` = 8) and
  ``snr20_accelsum`` (the sum-over-layers loss);
* ``snr10_free``, ``snr10_same``, ``snr20_free``, ``snr20_same``: K = 4, L = 1..6 (Figs. 2, 4);
  ``same`` ties the step sizes within a layer (the paper's "same gamma" ablation);
* ``snr20_log``: log-domain step sizes; ``snr20_lr`` (not in the default list): learning
  rate x ``--lr-factor``;
* ``snr20_prog``: progressive extension K = 4 -> 8 of the ``snr20_free`` and ``snr20_log``
  networks (``--prog-from``), one step at a time, each added step trained by the protocol
  from the base rate ``--prog-lr`` (1e-2) (Fig. 5);
* ``snrsweep``: L = 1, K = 4, free, same and log-domain step sizes (``--sweep-variants``),
  SNR 5, 7.5, ..., 20 dB (Fig. 6);
* ``--full-grid``: every (L = 1..6, K = 4..8, SNR) combination of the paper, free step sizes,
  K > 4 by progressive extension (long: meant for ``--device cuda``).

Writes ``--out/step_sizes.json``: for every model its step sizes ``(L, K)``, the training
settings and time, the loss every 10 steps, and the test WSR per layer (mean and standard
error) on 10,000 fresh channels per SNR (generator seed ``1000 + 10 * SNR``), next to the
truncated WMMSE on the same channels, and the validation curve. Every network is merged into
the file when it is done (under a lock: several processes may fill one file), and the training
of every series network is checkpointed (``_build/checkpoints/unfolded_wmmse``): ``--resume``
reloads the finished networks from their final checkpoints and continues the interrupted one
where it stopped, so an interrupted run ends with the same numbers as an uninterrupted one
(progressive extensions are not checkpointed; they are retrained, with the same seeds).
``tests/test_unfolded_wmmse.py`` re-evaluates the file.

Usage::

    nice -n 5 python scripts/train_unfolded_wmmse.py             # CPU, ~70 min on one core
    nice -n 5 python scripts/train_unfolded_wmmse.py --resume    # after an interruption
    python scripts/train_unfolded_wmmse.py --series snr20_accel snr10_accel &  # in parallel:
    python scripts/train_unfolded_wmmse.py --series snr20_free snr20_log      # one file, locked
    python scripts/train_unfolded_wmmse.py --device cuda --full-grid
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from lib.chapters.unfolded_wmmse import (
    SETUP,
    model_key,
    power_for_snr,
    test_channels,
    validation_channels,
)
from lib.core import mean_se
from lib.learn import Stage, fit, lr_stages
from lib.learn.unfolded_wmmse import (
    UnfoldedWMMSE,
    make_sampler,
    per_layer_wsr,
    train_progressive,
    truncated_wmmse_wsr,
    wsr_loss,
)

try:
    from scripts import _cli
except ImportError:  # run as `python scripts/train_unfolded_wmmse.py`
    import _cli

M, N = SETUP.antennas, SETUP.users
NOISE_VAR = SETUP.noise_var
SNRS = list(SETUP.snrs_db)
SERIES = [
    "snr10_accel",
    "snr20_accel",
    "snr10_free",
    "snr10_same",
    "snr20_free",
    "snr20_same",
    "snr20_log",
    "snr20_prog",
    "snrsweep",
    "snr10_norm",
    "snr20_norm",
    "snr20_accelsum",
]
N_TEST = SETUP.n_test
key = model_key


def evaluate(model, snr_db, cache):
    if snr_db not in cache:
        H = test_channels(snr_db)
        P = power_for_snr(snr_db)
        cache[snr_db] = (H, P, truncated_wmmse_wsr(H, P, NOISE_VAR, 6))
    H, P, tr = cache[snr_db]
    r = per_layer_wsr(model, H, P, NOISE_VAR)
    L = r.shape[0]
    d_mean, d_se = mean_se(r[-1] - tr[L - 1])
    return {
        "wsr_per_layer": [round(float(x), 4) for x in r.mean(1)],
        "wsr_se": round(mean_se(r[-1])[1], 4),
        "trunc_wmmse_wsr": round(float(tr[L - 1].mean()), 4),
        "diff_vs_trunc": round(d_mean, 4),
        "diff_se_paired": round(d_se, 4),
    }


def _val_fn(model, batch, state):
    (H, P, s2), _ = batch
    return -float(per_layer_wsr(model, H, P, s2)[-1].mean())


def _plateau(args, snr_db):
    """The plateau protocol's plan and validation arguments of :func:`lib.learn.fit`."""
    plan = lr_stages(args.max_steps, (1.0, 0.1, 0.01), patience=args.patience)
    Hv = validation_channels(snr_db)
    P = torch.full((Hv.shape[0],), power_for_snr(snr_db), dtype=torch.float64)
    s2 = torch.full_like(P, NOISE_VAR)
    extra = dict(
        val_data=((Hv, P, s2), (Hv, s2)),
        val_fn=_val_fn,
        val_every=args.val_every,
        min_delta=args.min_delta,
    )
    return plan, extra


def _plateau_settings(args, hist):
    return dict(
        protocol="plateau",
        lr_factors=[1.0, 0.1, 0.01],
        patience=args.patience,
        min_delta=args.min_delta,
        val_every=args.val_every,
        max_steps=args.max_steps,
        steps=len(hist),
    )


def train_one(model, snr_db, args, lr, seed, name, loss=wsr_loss):
    """Train one network, checkpointed under ``name``.

    ``--protocol plateau`` (default): learning rates ``lr x (1, 0.1, 0.01)``, each stage until
    ``--patience`` steps pass without the validation WSR of the last layer (on
    :func:`~lib.chapters.unfolded_wmmse.validation_channels`, checked every ``--val-every``
    steps) improving by more than ``--min-delta`` b/s/Hz, at most ``--max-steps`` steps; the
    best validated weights are kept. ``--protocol fixed`` (the earlier reduced budget):
    ``--steps`` Adam steps at ``lr`` (seed ``seed``), then ``--steps // 4`` at ``lr / 10``
    (seed ``seed + 7919``).
    """
    sampler = make_sampler(N, M, snr_db, noise_var=NOISE_VAR)
    extra = {}
    if args.protocol == "plateau":
        plan, extra = _plateau(args, snr_db)
    else:
        plan = [
            Stage("main", args.steps, lr=lr, seed=seed),
            Stage("final", max(args.steps // 4, 1), lr=lr / 10, seed=seed + 7919),
        ]
    t0 = time.time()
    hist = fit(
        model,
        loss,
        sampler,
        plan=plan,
        lr=lr,
        **extra,
        batch_size=args.batch,
        seed=seed,
        device=args.device,
        progress=args.progress,
        desc=name,
        checkpoint=args.checkpoints / f"{name}.ckpt",
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
    )
    model.cpu()
    return hist, (hist.time[-1] if len(hist) else time.time() - t0)


def record(results, k, model, snr_db, hist, secs, settings, cache, out):
    ev = evaluate(model, snr_db, cache)
    entry = {
        "snr_db": snr_db,
        "L": model.num_layers,
        "K": model.pgd_steps,
        "same_step": model.same_step,
        "log_steps": model.log_steps,
        "step_sizes": [[round(float(x), 6) for x in row] for row in model.step_sizes()],
    }
    if model.momentum:
        entry["momentum"] = [[round(float(x), 6) for x in r] for r in model.momentum_coeffs()]
    if model.normalised_steps:
        entry["normalised_steps"] = True
    if hist is not None and hist.val_metric:
        entry["val_step"] = list(hist.val_step)
        entry["val_wsr"] = [round(-v, 4) for v in hist.val_metric]
        entry["stage_steps"] = {n: hist.stage.count(n) for _, n in hist.boundaries()}
        entry["converged"] = all(c < settings["max_steps"] for c in entry["stage_steps"].values())
    results["models"][k] = {
        **entry,
        **settings,
        "train_seconds": round(secs, 1),
        "loss_every_10": [round(v, 4) for v in hist.loss[::10]] if hist is not None else [],
        "test": ev,
    }
    results["models"] = _cli.merge_results(out / "step_sizes.json", {k: results["models"][k]})[
        "models"
    ]
    print(
        f"{k:28s} WSR={ev['wsr_per_layer'][-1]:7.3f} trunc={ev['trunc_wmmse_wsr']:7.3f} "
        f"diff={ev['diff_vs_trunc']:+.3f}±{ev['diff_se_paired']:.3f}  {secs:6.1f}s",
        flush=True,
    )


def _new_model(L, K, variant):
    """A fresh ``L``-layer network of a variant (``accel``, ``accelsum``: log-domain steps
    divided by ``tr(A)``, initialised at 0.5, heavy-ball momentum initialised at 0; ``norm``:
    the same without momentum)."""
    if variant in ("accel", "accelsum", "norm"):
        return UnfoldedWMMSE(
            L,
            K,
            init_step=0.5,
            log_steps=True,
            normalised_steps=True,
            momentum=variant != "norm",
        )
    return UnfoldedWMMSE(L, K, same_step=variant == "same", log_steps=variant == "log")


def _grown(prev, variant):
    """``prev`` with one more layer, a copy of its last (the warm start of a series)."""
    G = prev.step_sizes()
    b = prev.momentum_coeffs()
    return UnfoldedWMMSE.from_step_sizes(
        torch.cat([G, G[-1:]], 0),
        betas=None if b is None else torch.cat([b, b[-1:]], 0),
        same_step=prev.same_step,
        log_steps=prev.log_steps,
        normalised_steps=prev.normalised_steps,
    )


def run_series(results, snr_db, K, variant, args, cache, out, Ls=range(1, 7), tag=None):
    lr = args.lr * (args.lr_factor if variant == "lr" else 1.0)
    if variant in ("accel", "accelsum"):
        K = args.accel_pgd_steps
    elif variant == "norm":
        K = args.norm_pgd_steps
    # the accel and norm networks are judged (and trained) on their last layer only
    last_only = variant in ("accel", "norm")
    loss = functools.partial(wsr_loss, last_only=True) if last_only else wsr_loss
    prev = None
    for L in Ls:
        model = _new_model(L, K, variant) if prev is None else _grown(prev, variant)
        name = key(snr_db, L, K, tag or variant)
        hist, secs = train_one(model, snr_db, args, lr, seed=args.seed + L, name=name, loss=loss)
        settings = {"protocol": args.protocol, "lr": lr, "batch": args.batch}
        if args.protocol == "plateau":
            settings.update(_plateau_settings(args, hist))
        else:
            settings.update(steps=args.steps, final_steps=max(args.steps // 4, 1), final_lr=lr / 10)
        settings.update(
            loss="last layer" if last_only else "sum over layers (eq. 14)",
            warm_start=prev is not None,
        )
        record(
            results,
            name,
            model,
            snr_db,
            hist,
            secs,
            settings,
            cache,
            out,
        )
        prev = model
    return prev


def run_progressive(results, snr_db, K_to, args, cache, out, Ls=range(1, 7), variant="free"):
    for L in Ls:
        base = results["models"].get(key(snr_db, L, 4, variant))
        if base is None:
            print(f"skip progressive L={L}: no {key(snr_db, L, 4, variant)}", flush=True)
            continue
        model = UnfoldedWMMSE.from_step_sizes(base["step_sizes"], log_steps=variant == "log")
        sampler = make_sampler(N, M, snr_db, noise_var=NOISE_VAR)
        t0 = time.time()
        plan, extra = _plateau(args, snr_db) if args.protocol == "plateau" else (None, {})

        def cb(m, h, L=L, t0=t0):
            settings = {"lr": args.prog_lr, "batch": args.batch}
            if args.protocol == "plateau":
                settings.update(_plateau_settings(args, h))
            else:
                settings.update(protocol="fixed", steps=args.prog_steps)
            settings["progressive_from"] = key(snr_db, L, m.pgd_steps - 1, variant)
            record(
                results,
                key(snr_db, L, m.pgd_steps, variant),
                m,
                snr_db,
                h if args.protocol == "plateau" else None,
                time.time() - t0,
                settings,
                cache,
                out,
            )

        train_progressive(
            model,
            K_to,
            sampler,
            steps_per_stage=args.prog_steps,
            lr=args.prog_lr,
            batch_size=args.batch,
            seed=args.seed + 100 * L,
            device=args.device,
            progress=args.progress,
            callback=cb,
            plan=plan,
            fit_kwargs=extra,
        )


def readme_table(results: dict) -> str:
    """The README's table: per series (SNR, variant, Q) and T, the paired gain over WMMSE
    truncated at T (b/s/Hz, test set), Adam steps and milliseconds per step."""
    rows = [
        "| network | T | test WSR | minus truncated WMMSE (± s.e.) | steps | ms / step "
        "| converged |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, e in sorted(results["models"].items(), key=lambda kv: (kv[0].split("_L")[0], kv[0])):
        t = e["test"]
        ms = 1e3 * e["train_seconds"] / max(e["steps"], 1)
        rows.append(
            f"| {k} | {e['L']} | {t['wsr_per_layer'][-1]:.3f} | "
            f"{t['diff_vs_trunc']:+.3f} ± {t['diff_se_paired']:.3f} | {e['steps']:,} | "
            f"{ms:.1f} | {'yes' if e.get('converged') else 'no'} |"
        )
    return "\n".join(rows)


def main(argv=None):
    ap = _cli.parser(__doc__, "results/unfolded_wmmse")
    ap.add_argument("--series", nargs="*", default=SERIES)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=3e-2)
    ap.add_argument("--lr-factor", type=float, default=3.0)
    ap.add_argument("--prog-steps", type=int, default=150)
    ap.add_argument("--prog-lr", type=float, default=1e-2)
    ap.add_argument(
        "--prog-from",
        nargs="*",
        default=["free", "log"],
        help="K = 4 series (20 dB) that snr20_prog extends",
    )
    ap.add_argument("--sweep-steps", type=int, default=800)
    ap.add_argument("--sweep-variants", nargs="*", default=["free", "same", "log"])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--protocol", choices=["plateau", "fixed"], default="plateau")
    ap.add_argument("--patience", type=int, default=400)
    ap.add_argument("--min-delta", type=float, default=1e-3, help="b/s/Hz")
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--max-steps", type=int, default=10_000, help="per learning-rate stage")
    ap.add_argument(
        "--accel-pgd-steps",
        type=int,
        default=7,
        help="Q of the accel series (7: the largest within the flops of a WMMSE iteration)",
    )
    ap.add_argument(
        "--norm-pgd-steps",
        type=int,
        default=8,
        help="Q of the norm series (8: the largest within the flops of a WMMSE iteration)",
    )
    ap.add_argument("--full-grid", action="store_true")
    args = ap.parse_args(argv)
    out = _cli.setup(args)
    torch.manual_seed(args.seed)
    res_path = out / "step_sizes.json"
    cmd = _cli.command_line("train_unfolded_wmmse.py", argv)
    setup = {
        "M": M,
        "N": N,
        "noise_var": NOISE_VAR,
        "power": "10**(snr_db/10) * noise_var",
        "init": "matched filter at full power; step sizes 1",
        "channels": "i.i.d. CN(0, 1)",
        "test_set": f"{N_TEST} channels per SNR, rayleigh, Generator seed 1000 + 10*snr_db",
        "dtype": "complex128",
        "validation_set": "2000 channels per SNR, rayleigh, Generator seed 5000 + 10*snr_db",
    }
    # several processes may train different series into one file at once (locked merges)
    results = _cli.merge_results(res_path, commands=[cmd], setup=setup)
    cache = {}
    t_all = time.time()
    for s in args.series:
        if s == "snrsweep":
            for variant in args.sweep_variants:
                for snr in SNRS:
                    sweep_args = argparse.Namespace(**{**vars(args), "steps": args.sweep_steps})
                    run_series(
                        results,
                        snr,
                        4,
                        variant,
                        sweep_args,
                        cache,
                        out,
                        Ls=[1],
                        tag=f"{variant}-sweep",
                    )
        elif s == "snr20_prog":
            for variant in args.prog_from:
                run_progressive(results, 20.0, 8, args, cache, out, variant=variant)
        else:
            snr, variant = s.split("_")
            run_series(results, float(snr[3:]), 4, variant, args, cache, out)
    if args.full_grid:
        for snr in SNRS:
            if key(snr, 6, 4, "free") not in results["models"]:
                run_series(results, snr, 4, "free", args, cache, out)
            run_progressive(results, snr, 8, args, cache, out)
    done = _cli.merge_results(res_path, seconds_per_command=[round(time.time() - t_all, 1)])
    _cli.write_readme_table(out / "README.md", readme_table(done))
    print(f"done in {time.time() - t_all:.0f} s", flush=True)


if __name__ == "__main__":
    main()
