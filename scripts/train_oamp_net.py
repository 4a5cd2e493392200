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

import time

import torch

from lib import sparse
from lib.chapters.oamp_net import OAMP_T, oamp_problem
from lib.core import ratio_db_se
from lib.learn import count_parameters
from lib.learn.unrolled_amp import OAMPNet

try:
    from scripts import _cli
    from scripts.train_unrolled_sparse import (
        DEFAULT_GRID,
        VAL_SEED,
        curve,
        sweep_and_train,
        update_results,
    )
except ImportError:  # run as `python scripts/train_oamp_net.py`
    import _cli
    from train_unrolled_sparse import (
        DEFAULT_GRID,
        VAL_SEED,
        curve,
        sweep_and_train,
        update_results,
    )

T, P, SNR_DB = OAMP_T, 0.1, 40.0
TEST_SEED = 999
N_TEST = {"kappa100": 2000, "n64": 10000, "n64_discrete": 10000}


def main(argv=None):
    ap = _cli.parser(__doc__, "results/oamp_net")
    ap.add_argument(
        "--problems", nargs="*", default=["n64", "n64_discrete", "kappa100"]
    )  # cheap first
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
    for name in args.problems:
        A, sampler = oamp_problem(name)
        n_test = N_TEST[name]
        val = sampler(args.val_size, torch.Generator().manual_seed(VAL_SEED))
        (yt, nvt), xt = sampler(n_test, torch.Generator().manual_seed(TEST_SEED))
        t0 = time.process_time()
        with torch.no_grad():
            init_out = OAMPNet(A, T, p=P)(yt, nvt)  # = classical OAMP
        model, hist, lr, sweep = sweep_and_train(
            name, lambda A=A: OAMPNet(A, T, p=P), T, DEFAULT_GRID, sampler, val, args
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
