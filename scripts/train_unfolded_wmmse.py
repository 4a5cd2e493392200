"""Paper-scale sweep of the deep-unfolded WMMSE (chapter unfolded_wmmse; Pellaco et al. 2020).

M = N = 4, i.i.d. CN(0, I) channels, noise variance 1, power P = SNR, unit user weights,
matched-filter start, step sizes initialised to 1, Adam, batch 100, loss eq. (14)
(:func:`lib.learn.wsr_loss`). Each network with ``L`` layers is warm-started from the
trained ``L - 1``-layer network of the same series (its step sizes, the last layer copied),
then trained for ``--steps`` Adam steps at ``--lr`` and ``--steps // 4`` more at ``lr / 10``
(one :func:`lib.learn.fit` plan of two seeded stages). ``L`` and ``K`` are the paper's names
(layers ``T`` and PGD steps ``Q`` in ``lib``); the set-up, the test channels and the stored-model
helpers are in :mod:`lib.chapters.unfolded_wmmse`.

Series (``--series``, default all):

* ``snr10_free``, ``snr10_same``, ``snr20_free``, ``snr20_same``: K = 4, L = 1..6 (Figs. 2, 4);
  ``same`` ties the step sizes within a layer (the paper's "same gamma" ablation);
* ``snr20_log``: log-domain step sizes; ``snr20_lr``: learning rate x ``--lr-factor``
  (the 20 dB remedies);
* ``snr20_prog``: progressive extension K = 4 -> 8 of the ``snr20_free`` and ``snr20_log``
  networks (``--prog-from``), one step at a time, ``--prog-steps`` Adam steps per added step
  (Fig. 5);
* ``snrsweep``: L = 1, K = 4, free, same and log-domain step sizes (``--sweep-variants``),
  SNR 5, 7.5, ..., 20 dB (Fig. 6);
* ``--full-grid``: every (L = 1..6, K = 4..8, SNR) combination of the paper, free step sizes,
  K > 4 by progressive extension (long: meant for ``--device cuda``).

Writes ``--out/step_sizes.json``: for every model its step sizes ``(L, K)``, the training
settings and time, the loss every 10 steps, and the test WSR per layer (mean and standard
error) on 10,000 fresh channels per SNR (generator seed ``1000 + 10 * SNR``), next to the
truncated WMMSE on the same channels. The file is rewritten after every model, and every
network's training is checkpointed (``_build/checkpoints/unfolded_wmmse``): ``--resume``
reloads the finished networks from their final checkpoints and continues the interrupted one
where it stopped, so an interrupted run ends with the same numbers as an uninterrupted one.
``tests/test_unfolded_wmmse.py`` re-evaluates the file.

Usage::

    nice -n 5 python scripts/train_unfolded_wmmse.py             # CPU, ~20-25 minutes
    nice -n 5 python scripts/train_unfolded_wmmse.py --resume    # after an interruption
    python scripts/train_unfolded_wmmse.py --device cuda --steps 4000 --full-grid
"""

from __future__ import annotations

import argparse
import time

import torch

from lib.chapters.unfolded_wmmse import SETUP, model_key, power_for_snr, test_channels
from lib.core import mean_se
from lib.learn import Stage, fit
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
    "snr10_free",
    "snr10_same",
    "snr20_free",
    "snr20_same",
    "snr20_log",
    "snr20_lr",
    "snr20_prog",
    "snrsweep",
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


def train_one(model, snr_db, args, lr, seed, name):
    """``--steps`` Adam steps at ``lr`` (seed ``seed``), then ``--steps // 4`` at ``lr / 10``
    (seed ``seed + 7919``): one plan of two seeded stages, checkpointed under ``name``."""
    sampler = make_sampler(N, M, snr_db, noise_var=NOISE_VAR)
    plan = [
        Stage("main", args.steps, lr=lr, seed=seed),
        Stage("final", max(args.steps // 4, 1), lr=lr / 10, seed=seed + 7919),
    ]
    t0 = time.time()
    hist = fit(
        model,
        wsr_loss,
        sampler,
        plan=plan,
        lr=lr,
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
    results["models"][k] = {
        "snr_db": snr_db,
        "L": model.num_layers,
        "K": model.pgd_steps,
        "same_step": model.same_step,
        "log_steps": model.log_steps,
        "step_sizes": [[round(float(x), 6) for x in row] for row in model.step_sizes()],
        **settings,
        "train_seconds": round(secs, 1),
        "loss_every_10": [round(v, 4) for v in hist.loss[::10]] if hist is not None else [],
        "test": ev,
    }
    _cli.write_results(out / "step_sizes.json", results)
    print(
        f"{k:28s} WSR={ev['wsr_per_layer'][-1]:7.3f} trunc={ev['trunc_wmmse_wsr']:7.3f} "
        f"diff={ev['diff_vs_trunc']:+.3f}±{ev['diff_se_paired']:.3f}  {secs:6.1f}s",
        flush=True,
    )


def run_series(results, snr_db, K, variant, args, cache, out, Ls=range(1, 7), tag=None):
    same = variant == "same"
    logd = variant == "log"
    lr = args.lr * (args.lr_factor if variant == "lr" else 1.0)
    prev = None
    for L in Ls:
        if prev is None:
            model = UnfoldedWMMSE(L, K, same_step=same, log_steps=logd)
        else:
            G = prev.step_sizes()
            G = torch.cat([G, G[-1:]], 0)
            model = UnfoldedWMMSE.from_step_sizes(G, same_step=same, log_steps=logd)
        name = key(snr_db, L, K, tag or variant)
        hist, secs = train_one(model, snr_db, args, lr, seed=args.seed + L, name=name)
        settings = {
            "lr": lr,
            "steps": args.steps,
            "final_steps": max(args.steps // 4, 1),
            "final_lr": lr / 10,
            "batch": args.batch,
            "warm_start": prev is not None,
        }
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

        def cb(m, L=L, t0=t0):
            settings = {
                "lr": args.prog_lr,
                "steps": args.prog_steps,
                "batch": args.batch,
                "progressive_from": key(snr_db, L, m.pgd_steps - 1, variant),
            }
            record(
                results,
                key(snr_db, L, m.pgd_steps, variant),
                m,
                snr_db,
                None,
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
        )


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
    ap.add_argument("--full-grid", action="store_true")
    args = ap.parse_args(argv)
    out = _cli.setup(args)
    torch.manual_seed(args.seed)
    res_path = out / "step_sizes.json"
    results = _cli.load_results(res_path, {"models": {}})
    cmd = _cli.command_line("train_unfolded_wmmse.py", argv)
    results.setdefault("commands", [])
    if "command" in results:  # files written before the list existed
        results["commands"].insert(0, results.pop("command"))
    results["commands"].append(cmd)
    results["setup"] = {
        "M": M,
        "N": N,
        "noise_var": NOISE_VAR,
        "power": "10**(snr_db/10) * noise_var",
        "init": "matched filter at full power; step sizes 1",
        "channels": "i.i.d. CN(0, 1)",
        "test_set": f"{N_TEST} channels per SNR, rayleigh, Generator seed 1000 + 10*snr_db",
        "dtype": "complex128",
    }
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
    results.setdefault("seconds_per_command", []).append(round(time.time() - t_all, 1))
    _cli.write_results(res_path, results)
    print(f"done in {time.time() - t_all:.0f} s", flush=True)


if __name__ == "__main__":
    main()
