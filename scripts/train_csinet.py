"""Train CsiNet decoders for the chapter *CSI feedback under distribution shift*.

Set-up (``lib.chapters.FeedbackSetup()``): an 8x8 UPA (M = 64) at 3.5 GHz, 256 subcarriers
spaced 30 kHz, the angular-delay image truncated to the first T = 16 taps (first arrival 2 taps
after zero), unit energy per sample. Training data: the ``train`` users (80 %) of the Munich
training sites ``lib.chapters.FEEDBACK_SOURCE_SITES``, ``--draws`` images per user (fresh path
phases per draw), a fixed data set in shuffled epochs; validation: ``--val-draws`` images per
``val`` user (20 %), fixed. ``lib.learn.CsiNet`` at each compression ratio ``--ratios`` is
trained with Adam (``--lr``, batch ``--batch``) on the squared error of the real image (the
numerator of the NMSE; unit-energy samples make it proportional to the NMSE), validated every
``--val-every`` steps by the NMSE (dB) of the image against the full channel
(``lib.phy.feedback_nmse_db`` with the truncated energy); the step size is multiplied by
``--lr-decay`` after ``--lr-patience`` steps without an improvement of ``--min-delta`` dB and
training stops after ``--patience`` such steps (a validation plateau) or at ``--steps``.

``--energy-weight w`` adds the physics-informed term ``w * mean((||Z_hat||^2 - ||Z||^2)^2)``
(the decoder should conserve the energy of the image; the ablation of the chapter).

Writes ``<out>/<name>.pt`` (float32 state dict; load with ``torch.load(..., weights_only=True)``
into ``lib.learn.CsiNet(ratio, 64, 16)``) and merges the training record (protocol, validation
curve, steps, seconds, the exact command) into ``<out>/train.json``. Example::

    python scripts/train_csinet.py --ratios 0.25 0.0625 --threads 1
    python scripts/train_csinet.py --ratios 0.25 --energy-weight 1 --device cuda
"""

from __future__ import annotations

import sys
import time
from fractions import Fraction
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.chapters import FeedbackSetup, feedback_source_images  # noqa: E402
from lib.learn import CsiNet, fit  # noqa: E402
from lib.phy import complexify_image, feedback_nmse_db, realify_image  # noqa: E402
from scripts import _cli  # noqa: E402

DATA_SEED, VAL_SEED = 0, 1


def model_name(ratio: float, energy_weight: float, seed: int) -> str:
    frac = Fraction(ratio).limit_denominator(1024)
    name = f"CsiNet-cr{frac.denominator}" if frac.numerator == 1 else f"CsiNet-r{ratio:g}"
    if energy_weight:
        name += f"-energy{energy_weight:g}"
    return name + (f"-seed{seed}" if seed else "")


class EnergyLoss:
    """Squared error of the image plus ``w`` times the squared energy mismatch."""

    def __init__(self, w: float):
        self.w = w

    def __call__(self, Z_hat, Z):
        err = (Z_hat - Z).pow(2).sum((1, 2, 3)).mean()
        if not self.w:
            return err
        e = Z_hat.pow(2).sum((1, 2, 3)) - Z.pow(2).sum((1, 2, 3))
        return err + self.w * e.pow(2).mean()


def main(argv=None):
    ap = _cli.parser(__doc__, "results/csi_feedback")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.0625])
    ap.add_argument("--draws", type=int, default=12)
    ap.add_argument("--val-draws", type=int, default=2)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=60000)
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--patience", type=int, default=4000)
    ap.add_argument("--lr-patience", type=int, default=2000)
    ap.add_argument("--lr-decay", type=float, default=0.3)
    ap.add_argument("--min-delta", type=float, default=0.02)
    ap.add_argument("--energy-weight", type=float, default=0.0)
    ap.add_argument("--n-refine", type=int, default=2)
    args = ap.parse_args(argv)
    out = _cli.setup(args)
    command = _cli.command_line("train_csinet.py", argv)
    setup = FeedbackSetup()
    t0 = time.perf_counter()
    tr = feedback_source_images("train", setup, draws=args.draws, seed=DATA_SEED)
    va = feedback_source_images("val", setup, draws=args.val_draws, seed=VAL_SEED)
    Z_tr = realify_image(tr["X"]).float().contiguous()
    Z_va = realify_image(va["X"]).float()
    data_s = time.perf_counter() - t0
    print(f"data: {len(Z_tr)} training, {len(Z_va)} validation images ({data_s:.0f} s)",
          flush=True)  # fmt: skip
    tail_va = va["tail"].float()

    def val_fn(model, batch, state):
        (Z,), _ = batch
        with torch.no_grad():
            Z_hat = torch.cat([model(z) for z in Z.split(1000)])
        X_hat = complexify_image(Z_hat.cpu())
        return feedback_nmse_db(X_hat, complexify_image(Z.cpu()), tail_va)

    for ratio in args.ratios:
        name = model_name(ratio, args.energy_weight, args.seed)
        torch.manual_seed(args.seed)
        model = CsiNet(ratio, setup.M, setup.n_taps, n_refine=args.n_refine)
        model = model.to(memory_format=torch.channels_last)
        ckpt = args.checkpoints / f"{name}.ckpt"
        t1 = time.perf_counter()
        hist = fit(
            model,
            EnergyLoss(args.energy_weight),
            ((Z_tr,), Z_tr),
            steps=args.steps,
            lr=args.lr,
            batch_size=args.batch,
            val_data=((Z_va,), Z_va),
            val_fn=val_fn,
            val_every=args.val_every,
            patience=args.patience,
            min_delta=args.min_delta,
            lr_decay=args.lr_decay,
            lr_patience=args.lr_patience,
            min_lr=1e-5,
            checkpoint=ckpt,
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
        state = {k: v.float().contiguous() for k, v in model.state_dict().items()}
        torch.save(state, out / f"{name}.pt")
        steps = len(hist.loss)
        record = {
            "ratio": ratio,
            "codeword": model.m,
            "energy_weight": args.energy_weight,
            "n_refine": args.n_refine,
            "seed": args.seed,
            "train_images": len(Z_tr),
            "val_images": len(Z_va),
            "batch": args.batch,
            "lr": args.lr,
            "steps": steps,
            "max_steps": args.steps,
            "plateau": steps < args.steps,
            "val_every": args.val_every,
            "val_steps": list(hist.val_step),
            "val_nmse_db": [round(float(v), 3) for v in hist.val_metric],
            "best_val_nmse_db": round(float(min(hist.val_metric)), 3),
            "train_loss_every_100": [
                round(float(sum(hist.loss[i : i + 100]) / len(hist.loss[i : i + 100])), 5)
                for i in range(0, steps, 100)
            ],
            "patience": args.patience,
            "lr_patience": args.lr_patience,
            "lr_decay": args.lr_decay,
            "min_delta_db": args.min_delta,
            "seconds": round(seconds, 1),
            "device": str(args.device),
            "threads": args.threads,
            "command": command,
        }
        _cli.merge_results(out / "train.json", {name: record})
        best, plateau = record["best_val_nmse_db"], record["plateau"]
        print(f"{name}: best validation NMSE {best:.2f} dB after {steps} steps "
              f"({seconds:.0f} s, plateau {plateau})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
