"""Train the unfolded CS-feedback decoder (LAMP with a Bernoulli-Gaussian denoiser) for the
chapter *CSI feedback under distribution shift*.

The user sends ``y = A x`` with a Gaussian ``A`` (``lib.chapters.CSFeedback``: ``m = ratio *
2 M T`` reals, the codeword size of CsiNet at the same ratio); the base station decodes with
``lib.learn.LAMP(A, T, denoiser="bg")``: AMP whose Bernoulli-Gaussian denoiser has its own
activity, signal variance and noise scale in every layer (3 scalars per layer; ``A`` and the
Onsager term fixed). The network starts at classical AMP-BG with the activity ``p`` tuned on
the validation images (the grid ``--p-grid``; signal variance ``1 / p``), i.e. its untrained
output is the classical CS decoder's. Data as ``scripts/train_csinet.py``: ``--draws`` images
per training user of the Munich training sites, ``--val-draws`` per validation user.

Protocol (``lib.learn.fit`` with ``lib.learn.growth_plan``): layer-wise growth (each new layer
alone, ``--steps-per-layer`` steps at most), then joint fine-tuning at the step sizes ``--lr``
x (1, 0.2, 0.02); every stage validated every ``--val-every`` steps on the NMSE (dB) against
the full channel and stopped after ``--patience`` steps without an improvement of
``--min-delta`` dB (the best weights kept).

Writes ``<out>/<name>.pt`` (float32 state dict; load with ``torch.load(..., weights_only=True)``
into ``LAMP(CSFeedback(ratio).A, T, denoiser="bg")``) and merges the training record into
``<out>/train.json``. Example::

    python scripts/train_unfolded_feedback.py --ratios 0.25 0.0625 --threads 1
"""

from __future__ import annotations

import sys
import time
from fractions import Fraction
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.chapters import (  # noqa: E402
    CSFeedback,
    FeedbackSetup,
    feedback_source_images,
    unfolded_feedback_decoder,
)
from lib.learn import fit, growth_plan  # noqa: E402
from lib.phy import feedback_nmse_db  # noqa: E402
from lib.sparse import amp  # noqa: E402
from scripts import _cli  # noqa: E402

DATA_SEED, VAL_SEED = 0, 1


def model_name(ratio: float, seed: int) -> str:
    frac = Fraction(ratio).limit_denominator(1024)
    name = f"LAMP-cr{frac.denominator}" if frac.numerator == 1 else f"LAMP-r{ratio:g}"
    return name + (f"-seed{seed}" if seed else "")


def tuned_amp_p(fb: CSFeedback, y, X, tail, grid, iters: int):
    """The activity of classical AMP-BG with the best validation NMSE, and the NMSE per p."""
    scores = {}
    for p in grid:
        x_hat = amp(y.double(), fb.A.double(), iters, denoiser="bg", p=p, signal_var=1 / p)
        scores[p] = feedback_nmse_db(fb.image(x_hat.to(fb.A.dtype)), X, tail)
    return min(scores, key=scores.get), scores


def last_layer_mse(out, x):
    return (out[-1] - x).pow(2).mean()


def main(argv=None):
    ap = _cli.parser(__doc__, "results/csi_feedback")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.0625])
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--draws", type=int, default=12)
    ap.add_argument("--val-draws", type=int, default=2)
    ap.add_argument("--p-grid", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1, 0.2])
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--steps-per-layer", type=int, default=1000)
    ap.add_argument("--finetune-steps", type=int, default=10000)
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--patience", type=int, default=500)
    ap.add_argument("--min-delta", type=float, default=0.01)
    args = ap.parse_args(argv)
    out = _cli.setup(args)
    command = _cli.command_line("train_unfolded_feedback.py", argv)
    setup = FeedbackSetup()
    t0 = time.perf_counter()
    tr = feedback_source_images("train", setup, draws=args.draws, seed=DATA_SEED)
    va = feedback_source_images("val", setup, draws=args.val_draws, seed=VAL_SEED)
    print(f"data: {len(tr['X'])} training, {len(va['X'])} validation images "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    X_va, tail_va = va["X"], va["tail"]
    for ratio in args.ratios:
        name = model_name(ratio, args.seed)
        fb = CSFeedback(ratio, setup)
        x_tr, x_va = fb.vector(tr["X"]), fb.vector(X_va)
        y_tr, y_va = x_tr @ fb.A.T, x_va @ fb.A.T
        p0, amp_scores = tuned_amp_p(fb, y_va, X_va, tail_va, args.p_grid, args.layers)
        torch.manual_seed(args.seed)
        model = unfolded_feedback_decoder(fb, args.layers, p0)

        def val_fn(model, batch, state, fb=fb):
            (y,), _ = batch
            with torch.no_grad():
                x_hat = model(y)[-1]
            return feedback_nmse_db(fb.image(x_hat.cpu()), X_va, tail_va)

        with torch.no_grad():
            init_db = feedback_nmse_db(fb.image(model(y_va)[-1]), X_va, tail_va)
        plan = growth_plan(args.layers, steps_per_layer=args.steps_per_layer,
                           finetune_steps=args.finetune_steps,
                           finetune_factors=(1.0, 0.2, 0.02), patience=args.patience)  # fmt: skip
        t1 = time.perf_counter()
        hist = fit(
            model,
            last_layer_mse,
            ((y_tr,), x_tr),
            plan=plan,
            lr=args.lr,
            batch_size=args.batch,
            val_data=((y_va,), x_va),
            val_fn=val_fn,
            val_every=args.val_every,
            min_delta=args.min_delta,
            checkpoint=args.checkpoints / f"{name}.ckpt",
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
            seed=args.seed,
            device=args.device,
            progress=args.progress,
            desc=name,
        )
        # wall time of the whole run, resumed segments included
        seconds = hist.time[-1] if hist.time else time.perf_counter() - t1
        model.cpu().eval()
        torch.save({k: v.float() for k, v in model.state_dict().items()}, out / f"{name}.pt")
        stages = {}
        for st in hist.stage:
            stages[st] = stages.get(st, 0) + 1
        record = {
            "ratio": ratio,
            "codeword": fb.m,
            "layers": args.layers,
            "p_init": p0,
            "amp_val_nmse_db": {f"{p:g}": round(v, 3) for p, v in amp_scores.items()},
            "init_val_nmse_db": round(init_db, 3),
            "seed": args.seed,
            "train_images": len(x_tr),
            "val_images": len(x_va),
            "batch": args.batch,
            "lr": args.lr,
            "steps": len(hist.loss),
            "steps_per_stage": stages,
            "max_steps_per_layer": args.steps_per_layer,
            "max_finetune_steps": args.finetune_steps,
            "val_steps": list(hist.val_step),
            "val_stage": list(hist.val_stage),
            "val_nmse_db": [round(float(v), 3) for v in hist.val_metric],
            "final_val_nmse_db": round(val_fn(model, ((y_va,), None), None), 3),
            "patience": args.patience,
            "min_delta_db": args.min_delta,
            "seconds": round(seconds, 1),
            "device": str(args.device),
            "threads": args.threads,
            "command": command,
        }
        _cli.merge_results(out / "train.json", {name: record})
        print(f"{name}: AMP-BG (p = {p0:g}) {amp_scores[p0]:.2f} dB, LAMP "
              f"{record['final_val_nmse_db']:.2f} dB after {len(hist.loss)} steps "
              f"({seconds:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
