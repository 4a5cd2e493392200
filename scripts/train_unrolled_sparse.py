"""Paper-scale training of the unrolled sparse-recovery networks (chapters unrolling_*).

Reference problem: M=250, N=500, p=0.1, SNR 40 dB, Gaussian A (seed 0), T=16 layers.
Writes to ``--out`` (default ``results/unrolled_sparse``):

* ``<name>.pt``      state dict of each trained model (float32, ``torch.load(weights_only=True)``)
* ``A.pt``           the sensing matrix ``{"A": ...}`` (float64)
* ``results.json``   per-layer test NMSE (dB) of each model, the parameter counts, training
                     times, and the exact command line that produced the files.

The problem constants, the model registry (``build``), the test set and ``load`` live in
``lib.chapters.pretrained_sparse``, which the chapters and the tests import.

Usage (CPU, about 15-25 minutes on one thread)::

    nice python scripts/train_unrolled_sparse.py
    python scripts/train_unrolled_sparse.py --device cuda --scale 4   # longer runs on a GPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from lib import sparse
from lib.chapters.pretrained_sparse import (
    LAM,
    MODELS,
    SNR_DB,
    M,
    N,
    P,
    T,
    build,
    generate_reference_matrix,
    test_set,
)
from lib.core import set_threads
from lib.learn import count_parameters, train_unrolled
from lib.learn.unrolled_sparse import make_sampler, nmse_loss


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="results/unrolled_sparse")
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--steps-per-layer", type=int, default=30)
    ap.add_argument("--refine-steps", type=int, default=20)
    ap.add_argument("--finetune-steps", type=int, default=300)
    ap.add_argument("--mlp-steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--lista-lr", type=float, default=1e-4)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every step count")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = torch.float32
    A64 = generate_reference_matrix()
    torch.save({"A": A64}, out / "A.pt")
    A = A64.to(dtype)
    sampler = make_sampler(A, P, SNR_DB)
    y, nv, x = test_set(A)
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {"models": {}}
    results["command"] = "python scripts/train_unrolled_sparse.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    results["problem"] = {
        "M": M,
        "N": N,
        "p": P,
        "snr_db": SNR_DB,
        "T": T,
        "lam": LAM,
        "matrix": "gaussian_matrix(250, 500), torch.Generator seed 0",
        "test_set": "make_sampler(A, 0.1, 40)(2000, Generator seed 1234), float32",
    }
    sc = args.scale
    for name in args.models:
        torch.manual_seed(args.seed)
        model = build(name, A)
        t0 = time.time()
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
        hist = train_unrolled(
            model,
            sampler,
            nmse_loss,
            batch_size=args.batch,
            seed=args.seed,
            device=args.device,
            progress=sys.stderr.isatty(),
            **kw,
        )
        secs = time.time() - t0
        model.cpu()
        with torch.no_grad():
            per_layer = sparse.nmse_db(model(y, nv), x).tolist()
        sd = {
            k: v.to(torch.float32)
            for k, v in model.state_dict().items()
            if k not in ("A", "W", "U", "lam")
        }
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
        res_path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
