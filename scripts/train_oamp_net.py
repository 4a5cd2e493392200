"""OAMP-Net where OAMP's formulas are only approximate (chapter unrolling_lista, section 5).

OAMP's step and error-variance formulas are exact in the large-system limit for a
right-orthogonally invariant ``A`` and the prior its denoiser assumes. OAMP-Net (He, Wen & Jin
2018) learns a step ``gamma_t`` and a variance scale ``theta_t`` per layer; this script trains it,
with the protocol of ``scripts/train_unrolled_sparse.py`` (learning-rate sweep, layer-wise
stages to a validation plateau, final joint fine-tuning), on three problems with ``T = 8``:

* ``kappa100``:  M=250, N=500, condition number 100 (``ill_conditioned_matrix``, seed 3),
                 Bernoulli-Gaussian p=0.1, 40 dB -- the chapter's ill-conditioned problem;
* ``n64``:       M=32, N=64, Gaussian A (seed 10), Bernoulli-Gaussian p=0.1, 40 dB -- small
                 dimensions, where the error-variance estimates fluctuate;
* ``n64_discrete``: the same A, a *discrete* prior x_i in {-1, 0, +1} (P(x_i != 0) = 0.1), and
                 the Bernoulli-Gaussian denoiser of the other two problems (mismatched).

For each: the learning-rate sweep, the validation curve, and the test NMSE per layer of
classical OAMP (= the network at initialisation) and of the trained network on fresh test
signals (10,000 for N=64, 2,000 for N=500), with the paired gap and its standard error
(``lib.core.ratio_db_se``). Writes ``<problem>.pt`` (state dicts) and ``results.json`` to
``--out`` (default ``results/oamp_net``).

Usage (CPU, one thread)::

    nice python scripts/train_oamp_net.py
    python scripts/train_oamp_net.py --device cuda
"""

from __future__ import annotations

import math
import time

import torch

from lib import sparse
from lib.core import ratio_db_se
from lib.learn import count_parameters
from lib.learn.unrolled_amp import OAMPNet
from lib.learn.unrolled_sparse import make_sampler

try:
    from scripts import _cli
    from scripts.train_unrolled_sparse import (
        DEFAULT_GRID,
        VAL_SEED,
        _Depth,
        curve,
        protocol,
        train,
        update_results,
        val_db,
    )
except ImportError:  # run as `python scripts/train_oamp_net.py`
    import _cli
    from train_unrolled_sparse import (
        DEFAULT_GRID,
        VAL_SEED,
        _Depth,
        curve,
        protocol,
        train,
        update_results,
        val_db,
    )

T, P, SNR_DB = 8, 0.1, 40.0
TEST_SEED = 999


def discrete_sampler(A, p, snr_db):
    """``x_i = b_i s_i`` with ``b_i ~ Bernoulli(p)``, ``s_i = +-1``; ``y = A x + w``."""
    M, N = A.shape
    nv = sparse.noise_var_for_snr(A, p, snr_db)
    nv_t = torch.tensor(nv, dtype=A.dtype)

    def sampler(batch, generator):
        b = torch.rand(batch, N, generator=generator, dtype=A.dtype) < p
        s = torch.randint(0, 2, (batch, N), generator=generator).to(A.dtype) * 2 - 1
        x = b * s
        w = torch.randn(batch, M, generator=generator, dtype=A.dtype) * math.sqrt(nv)
        return (x @ A.T + w, nv_t), x

    return sampler


def problems(dtype=torch.float32):
    """``{name: (A, sampler, n_test)}`` of the three problems (matrices in ``dtype``)."""
    g3 = torch.Generator().manual_seed(3)
    A_ill = sparse.ill_conditioned_matrix(250, 500, 100.0, generator=g3)
    A64 = sparse.gaussian_matrix(32, 64, generator=torch.Generator().manual_seed(10))
    A_ill, A64 = A_ill.to(dtype), A64.to(dtype)
    return {
        "kappa100": (A_ill, make_sampler(A_ill, P, SNR_DB), 2000),
        "n64": (A64, make_sampler(A64, P, SNR_DB), 10000),
        "n64_discrete": (A64, discrete_sampler(A64, P, SNR_DB), 10000),
    }


def main(argv=None):
    ap = _cli.parser(__doc__, "results/oamp_net")
    ap.add_argument("--problems", nargs="*", default=["n64", "n64_discrete", "kappa100"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--patience", type=int, default=100)
    ap.add_argument("--final-patience", type=int, default=400)
    ap.add_argument("--val-every", type=int, default=20)
    ap.add_argument("--min-delta", type=float, default=0.01)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--sweep-layers", type=int, default=4)
    args = ap.parse_args(argv)
    out = _cli.setup(args)
    command = _cli.command_line("train_oamp_net.py", argv)
    res_path = out / "results.json"
    probs = problems()
    for name in args.problems:
        A, sampler, n_test = probs[name]
        val = sampler(args.val_size, torch.Generator().manual_seed(VAL_SEED))
        (yt, nvt), xt = sampler(n_test, torch.Generator().manual_seed(TEST_SEED))
        t0 = time.process_time()
        sweep = []
        for lr in DEFAULT_GRID:
            torch.manual_seed(args.seed)
            model = OAMPNet(A, T, p=P)
            plan = protocol(args.sweep_layers, args.patience, args.final_patience, final=False)
            train(
                model,
                plan,
                lr,
                sampler,
                val,
                args,
                args.checkpoints / f"{name}-sweep-lr{lr:g}.ckpt",
                f"{name} sweep lr={lr:g}",
            )
            metric = val_db(model, val, _Depth(args.sweep_layers))
            sweep.append({"lr": lr, "layers": args.sweep_layers, "val_nmse_db": round(metric, 3)})
            print(f"  {name} sweep lr={lr:g}: val {metric:.3f} dB", flush=True)
        lr = min(sweep, key=lambda r: r["val_nmse_db"])["lr"]
        torch.manual_seed(args.seed)
        model = OAMPNet(A, T, p=P)
        with torch.no_grad():
            init_out = model(yt, nvt)
        hist = train(
            model,
            protocol(T, args.patience, args.final_patience),
            lr,
            sampler,
            val,
            args,
            args.checkpoints / f"{name}.ckpt",
            f"{name} lr={lr:g}",
        )
        model.cpu().eval()
        with torch.no_grad():
            out_t = model(yt, nvt)
        e_net = ((out_t[-1] - xt) ** 2).sum(-1)
        e_oamp = ((init_out[-1] - xt) ** 2).sum(-1)
        gap, se = ratio_db_se(e_net, e_oamp)
        torch.save(
            {k: v.to(torch.float32) for k, v in model.state_dict().items()}, out / f"{name}.pt"
        )
        record = {
            "M": A.shape[0],
            "N": A.shape[1],
            "T": T,
            "nmse_db_per_layer": [round(v, 3) for v in sparse.nmse_db(out_t, xt).tolist()],
            "nmse_db_per_layer_oamp": [round(v, 3) for v in sparse.nmse_db(init_out, xt).tolist()],
            "gap_db_vs_oamp": round(gap, 4),
            "gap_se_db": round(se, 4),
            "gamma": [round(float(layer.gamma.detach()), 4) for layer in model.layers],
            "theta": [round(float(layer.theta.detach()), 4) for layer in model.layers],
            "params": count_parameters(model),
            "lr": lr,
            "lr_sweep": sweep,
            "train_steps": len(hist),
            "train_samples": len(hist) * args.batch,
            "cpu_seconds_incl_sweep": round(time.process_time() - t0, 1),
            "n_test": n_test,
            "test_seed": TEST_SEED,
            "command": command,
            **curve(hist),
        }
        update_results(res_path, name, record, {"T": T, "p": P, "snr_db": SNR_DB})
        print(
            f"{name:12s} OAMP {record['nmse_db_per_layer_oamp'][-1]:.2f} dB, OAMP-Net "
            f"{record['nmse_db_per_layer'][-1]:.2f} dB (gap {gap:+.2f} +- {se:.2f} dB), "
            f"steps {len(hist)}",
            flush=True,
        )
        for f in [*args.checkpoints.glob(f"{name}-*.ckpt"), args.checkpoints / f"{name}.ckpt"]:
            f.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
