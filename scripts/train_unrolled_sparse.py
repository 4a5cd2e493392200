"""Paper-scale training of the unrolled sparse-recovery networks (chapters unrolling_*).

Reference problem: M=250, N=500, p=0.1, SNR 40 dB, Gaussian A (seed 0), T=16 layers.
Writes to ``--out`` (default ``results/unrolled_sparse``):

* ``<name>.pt``      state dict of each trained model (float32, ``torch.load(weights_only=True)``)
* ``A.pt``           the sensing matrix ``{"A": ...}`` (float64)
* ``results.json``   per-layer test NMSE (dB) of each model, the parameter counts, training
                     times, and the exact command line that produced the files.

The reference problem (``REFERENCE``), the model registry (``build``), the test set and
``load`` live in ``lib.chapters.pretrained_sparse``, which the chapters and the tests import.
Training is :func:`lib.learn.train_unrolled` (layer-wise growth, then fine-tuning, on
:func:`lib.learn.fit`); ``--checkpoint-every N --resume`` continues an interrupted run from
``_build/checkpoints/unrolled_sparse`` (finished networks are skipped, the interrupted one
resumes bit for bit).

Usage (CPU, about 15-25 minutes on one thread)::

    nice python scripts/train_unrolled_sparse.py --checkpoint-every 200
    nice python scripts/train_unrolled_sparse.py --checkpoint-every 200 --resume   # after a stop
    python scripts/train_unrolled_sparse.py --device cuda --scale 4   # longer runs on a GPU
"""

from __future__ import annotations

import time

import torch

from lib import sparse
from lib.chapters.pretrained_sparse import (
    MODELS,
    REFERENCE,
    build,
    generate_reference_matrix,
    test_set,
)
from lib.learn import count_parameters, train_unrolled
from lib.learn.unrolled_sparse import make_sampler, nmse_loss

try:
    from scripts import _cli
except ImportError:  # run as `python scripts/train_unrolled_sparse.py`
    import _cli


def main(argv=None):
    ap = _cli.parser(__doc__, "results/unrolled_sparse")
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--steps-per-layer", type=int, default=30)
    ap.add_argument("--refine-steps", type=int, default=20)
    ap.add_argument("--finetune-steps", type=int, default=300)
    ap.add_argument("--mlp-steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--lista-lr", type=float, default=1e-4)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every step count")
    args = ap.parse_args(argv)
    out = _cli.setup(args)
    dtype = torch.float32
    A64 = generate_reference_matrix()
    torch.save({"A": A64}, out / "A.pt")
    A = A64.to(dtype)
    ref = REFERENCE
    sampler = make_sampler(A, ref.p, ref.snr_db)
    y, nv, x = test_set(A)
    res_path = out / "results.json"
    results = _cli.load_results(res_path, {"models": {}})
    results["command"] = _cli.command_line("train_unrolled_sparse.py", argv)
    results["problem"] = {
        "M": ref.M,
        "N": ref.N,
        "p": ref.p,
        "snr_db": ref.snr_db,
        "T": ref.T,
        "lam": ref.lam,
        "matrix": "gaussian_matrix(250, 500), torch.Generator seed 0",
        "test_set": "make_sampler(A, 0.1, 40)(2000, Generator seed 1234), float32",
    }
    sc = args.scale
    for name in args.models:
        if name == "mlp":
            kw = dict(finetune_steps=int(args.mlp_steps * sc), lr=1e-3)
        else:
            lr = args.lista_lr if name == "lista_cp" else args.lr
            kw = dict(
                steps_per_layer=int(args.steps_per_layer * sc),
                refine_steps=int(args.refine_steps * sc),
                finetune_steps=int(args.finetune_steps * sc),
                lr=lr,
                finetune_lr=lr / 3,
            )
        done = results["models"].get(name, {})
        if args.resume and done.get("train_kwargs") == kw and (out / f"{name}.pt").exists():
            print(f"{name:12s} already trained with these settings (--resume): skipped", flush=True)
            continue
        torch.manual_seed(args.seed)
        model = build(name, A)
        ckpt = args.checkpoints / f"{name}.ckpt"
        t0 = time.time()
        hist = train_unrolled(
            model,
            sampler,
            nmse_loss,
            batch_size=args.batch,
            seed=args.seed,
            device=args.device,
            progress=args.progress,
            checkpoint=ckpt,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
            **kw,
        )
        secs = hist.time[-1] if len(hist) else time.time() - t0  # includes resumed parts
        model.cpu()
        with torch.no_grad():
            per_layer = sparse.nmse_db(model(y, nv), x).tolist()
        # fixed matrices are non-persistent buffers: the state dict is the learned parameters
        sd = {k: v.to(torch.float32) for k, v in model.state_dict().items()}
        torch.save(sd, out / f"{name}.pt")
        results["models"][name] = {
            "nmse_db_per_layer": [round(v, 3) for v in per_layer],
            "params": count_parameters(model),
            "train_seconds": round(secs, 1),
            "train_steps": len(hist),
            "loss_curve_every_10": [round(v, 6) for v in hist.loss[::10]],
            "train_kwargs": kw,
        }
        print(
            f"{name:12s} params={count_parameters(model):8d} NMSE(T)={per_layer[-1]:7.2f} dB "
            f"time={secs:6.1f}s",
            flush=True,
        )
        _cli.write_results(res_path, results)
        ckpt.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
