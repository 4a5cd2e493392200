"""Paper-scale training of the unrolled sparse-recovery networks (chapters unrolling_*).

Reference problem: M=250, N=500, p=0.1, SNR 40 dB, Gaussian A (seed 0), T=16 layers.

**One protocol for every network** (after Borgerding, Schniter & Rangan's reference code),
executed by :func:`lib.learn.fit` with a fixed validation set (``--val-size`` samples, seed
4321, disjoint from the training stream and from the test set):

1. *learning-rate sweep*: for every base rate of the network's grid (``LR_GRID``) the protocol
   below is run on the first ``--sweep-layers`` layers; the rate with the best validation NMSE
   at that depth is kept (all sweep results are stored);
2. *layer-wise stages*: for ``t = 1..T``, train layer ``t`` alone at the base rate, then layers
   ``1..t`` jointly at ``0.5, 0.1, 0.01`` times the base rate; every stage runs until
   ``--patience`` steps pass without a validation improvement of more than ``--min-delta``
   dB (validation every ``--val-every`` steps, best weights restored at the end of the
   stage);
3. *final joint fine-tuning* of all layers at ``0.1`` and ``0.01`` times the base rate, each
   until ``--final-patience`` steps pass without improvement.

Every step draws a fresh batch (``--batch``). The black-box MLP has no layers to grow: it trains
at the base rate, then at ``0.2`` and ``0.02`` times it, each stage until ``--mlp-patience``
steps without improvement, for each shape in ``MLP_SHAPES`` and rate in ``LR_GRID["mlp"]``; the
smallest network within ``--min-delta`` dB of the best validation NMSE is stored as ``mlp``.

Writes to ``--out`` (default ``results/unrolled_sparse``):

* ``<name>.pt``      state dict of each trained model (float32, ``torch.load(weights_only=True)``)
* ``A.pt``           the sensing matrix ``{"A": ...}`` (float64)
* ``results.json``   per network: test NMSE (dB) per layer at initialisation and trained, the
                     learning-rate sweep, the validation curve, parameters, steps, samples, CPU
                     seconds and the exact command that trained it. Several processes may train
                     different networks into the same directory at once (the file is locked
                     and merged).

Usage (CPU, one thread per process; two processes share the networks)::

    nice python scripts/train_unrolled_sparse.py --models alista lista_cp lean_ista mlp
    nice python scripts/train_unrolled_sparse.py --models tista lamp_bg oamp_net
    ... --resume          # after a stop: finished networks are skipped, the rest restart
    python scripts/train_unrolled_sparse.py --device cuda --patience 1000   # on a GPU
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import torch

from lib import sparse
from lib.chapters.pretrained_sparse import (
    MLP_SHAPE,
    MODELS,
    REFERENCE,
    build,
    generate_reference_matrix,
    test_set,
)
from lib.learn import History, Stage, count_parameters, fit, lr_stages, plateau_plan
from lib.learn.storage import load_file
from lib.learn.unrolled_sparse import MLPRecovery, make_sampler, nmse_loss

try:
    from scripts import _cli
except ImportError:  # run as `python scripts/train_unrolled_sparse.py`
    import _cli

#: Base learning rates swept per network (Adam).
LR_GRID = {
    "lista_cp": (1e-4, 3e-4, 1e-3),
    "mlp": (3e-4, 1e-3, 3e-3),
}
DEFAULT_GRID = (3e-3, 1e-2, 3e-2)
#: (hidden width, hidden layers) of the black-box MLPs tried.
MLP_SHAPES = ((512, 2), (1024, 2), (1024, 3))
VAL_SEED = 4321


def protocol(T, patience, final_patience, *, final=True):
    """The plan (:func:`lib.learn.plateau_plan`)."""
    return plateau_plan(T, patience=patience, final_patience=final_patience, final=final)


def mlp_plan(patience, max_steps=10**6):
    return lr_stages(max_steps, (1.0, 0.2, 0.02), patience=patience, name="mlp")


def val_db(model, batch, state):
    """Validation metric: NMSE (dB) of the last layer of the network the stage trains."""
    (y, nv), x = batch
    model.eval()
    with torch.no_grad():
        out = model(y, nv, **state.stage.forward_kwargs)
        return float(10 * torch.log10(nmse_loss(out, x)))


class _Depth:
    """A stand-in for the trainer state: ``val_db`` at a given depth (``None``: all layers)."""

    def __init__(self, t):
        self.stage = Stage("eval", forward_kwargs={} if t is None else {"n_layers": t})


def train(model, plan, lr, sampler, val, args, ckpt, desc):
    return fit(
        model,
        nmse_loss,
        sampler,
        plan=plan,
        lr=lr,
        batch_size=args.batch,
        val_data=val,
        val_fn=val_db,
        val_every=args.val_every,
        min_delta=args.min_delta,
        seed=args.seed,
        device=args.device,
        progress=args.progress,
        checkpoint=ckpt,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        desc=desc,
    )


def diverged(err: Exception) -> bool:
    """A run that produced NaN or infinite values (a learning rate too large for it)."""
    msg = str(err)
    return isinstance(err, (FloatingPointError, ValueError)) and ("NaN" in msg or "finite" in msg)


def sweep_and_train(name, make_model, T, grid, sampler, val, args):
    """Steps 1-3 of the protocol for one unrolled network.

    Returns ``(model, history, lr, sweep)``. A rate at which the sweep diverges is recorded as
    such; if the full network diverges at the best rate, the next best is used (recorded).
    """
    sweep = []
    for lr in grid:
        torch.manual_seed(args.seed)
        model = make_model()
        plan = protocol(args.sweep_layers, args.patience, args.final_patience, final=False)
        ckpt = args.checkpoints / f"{name}-sweep-lr{lr:g}.ckpt"
        try:
            hist = train(model, plan, lr, sampler, val, args, ckpt, f"{name} sweep lr={lr:g}")
        except (FloatingPointError, ValueError) as err:
            if not diverged(err):
                raise
            sweep.append({"lr": lr, "layers": args.sweep_layers, "diverged": True})
            print(f"  {name} sweep lr={lr:g}: diverged", flush=True)
            continue
        metric = val_db(model, val, _Depth(args.sweep_layers))
        sweep.append({"lr": lr, "layers": args.sweep_layers, "val_nmse_db": round(metric, 3),
                      "steps": len(hist), "seconds": round(hist.time[-1], 1)})  # fmt: skip
        print(f"  {name} sweep lr={lr:g}: val {metric:.3f} dB at {args.sweep_layers} layers "
              f"after {len(hist)} steps", flush=True)  # fmt: skip
    ok = sorted((r for r in sweep if "val_nmse_db" in r), key=lambda r: r["val_nmse_db"])
    for r in ok:
        torch.manual_seed(args.seed)
        model = make_model()
        ckpt = args.checkpoints / f"{name}.ckpt"
        plan = protocol(T, args.patience, args.final_patience)
        try:
            hist = train(model, plan, r["lr"], sampler, val, args, ckpt, f"{name} lr={r['lr']:g}")
        except (FloatingPointError, ValueError) as err:
            if not diverged(err):
                raise
            r["diverged_at_full_depth"] = True
            ckpt.unlink(missing_ok=True)
            print(f"  {name} lr={r['lr']:g}: diverged at full depth", flush=True)
            continue
        return model, hist, r["lr"], sweep
    raise SystemExit(f"{name}: every learning rate of the sweep diverged")


def _mlp(shape, seed):
    torch.manual_seed(seed)
    return MLPRecovery(REFERENCE.M, REFERENCE.N, hidden=shape[0], depth=shape[1],
                       dtype=torch.float32)  # fmt: skip


def train_mlp(args, sampler, val, test_db):
    """The MLP sweep over ``MLP_SHAPES`` x ``LR_GRID["mlp"]``, each to its plateau.

    The chosen candidate is the *smallest* network (fewest parameters) whose validation NMSE is
    within ``--min-delta`` dB of the best (differences below the plateau tolerance do not
    count), the better one among equals. With ``--mlp-sweep-from FILE`` the sweep records of
    an earlier run (its ``results.json``, same settings) are reused and only the chosen
    candidate is trained again (the same seed: the same network).
    Returns ``(model, history, shape, lr, sweep)``.
    """
    if args.mlp_sweep_from:
        sweep = json.loads(Path(args.mlp_sweep_from).read_text())["models"]["mlp"]["lr_sweep"]
    else:
        sweep = []
        for shape in MLP_SHAPES:
            for lr in LR_GRID["mlp"]:
                model = _mlp(shape, args.seed)
                tag = f"mlp-{shape[0]}x{shape[1]}-lr{lr:g}"
                entry = {"hidden": shape[0], "depth": shape[1], "lr": lr,
                         "params": count_parameters(model)}  # fmt: skip
                try:
                    hist = train(model, mlp_plan(args.mlp_patience), lr, sampler, val, args,
                                 args.checkpoints / f"{tag}.ckpt", tag)  # fmt: skip
                except (FloatingPointError, ValueError) as err:
                    if not diverged(err):
                        raise
                    sweep.append({**entry, "diverged": True})
                    print(f"  {tag}: diverged", flush=True)
                    continue
                metric = val_db(model, val, _Depth(None))
                sweep.append({**entry, "val_nmse_db": round(metric, 3), "steps": len(hist),
                              "seconds": round(hist.time[-1], 1),
                              "test_nmse_db": test_db(model)[-1],
                              "curve": curve(hist)})  # fmt: skip
                print(f"  {tag}: val {metric:.3f} dB after {len(hist)} steps", flush=True)
    ok = [r for r in sweep if "val_nmse_db" in r]
    best = min(r["val_nmse_db"] for r in ok)
    near = [r for r in ok if r["val_nmse_db"] <= best + args.min_delta]
    pick = min(near, key=lambda r: (r["params"], r["val_nmse_db"]))
    for r in sweep:
        r["chosen"] = r is pick
    shape, lr = (pick["hidden"], pick["depth"]), pick["lr"]
    model = _mlp(shape, args.seed)
    tag = f"mlp-{shape[0]}x{shape[1]}-lr{lr:g}"
    ckpt = args.checkpoints / f"{tag}-chosen.ckpt"
    hist = train(model, mlp_plan(args.mlp_patience), lr, sampler, val, args, ckpt, tag)
    return model, hist, shape, lr, sweep


def curve(hist):
    """The validation curve and the stage boundaries, compactly."""
    return {
        "val_step": hist.val_step,
        "val_nmse_db": [round(v, 3) for v in hist.val_metric],
        "stage_starts": [[i, s] for i, s in hist.boundaries()],
    }


def update_results(path: Path, name: str, record: dict, problem: dict) -> None:
    """Merge one network's record into ``results.json`` under an exclusive lock."""
    lock = path.with_name(path.name + ".lock")
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        results = _cli.load_results(path, {"models": {}})
        results["problem"] = problem
        results["protocol"] = __doc__.split("**One protocol")[1].split("Writes to")[0].strip()
        results["models"][name] = record
        _cli.write_results(path, results)
        fcntl.flock(fh, fcntl.LOCK_UN)


def export_partial(name, args, A, val, test_db, res_path, problem, settings, command):
    """Store an interrupted network as it stands, with ``"converged": false``.

    Uses the main run's checkpoint if there is one, else the most advanced sweep checkpoint
    (its first ``--sweep-layers`` layers trained, the others at their initialisation).
    """
    main_ckpt = args.checkpoints / f"{name}.ckpt"
    sweeps = sorted(args.checkpoints.glob(f"{name}-sweep-lr*.ckpt"))
    files = [main_ckpt] if main_ckpt.exists() else sweeps
    if not files:
        raise SystemExit(f"{name}: no checkpoint in {args.checkpoints}")
    cks = {f: load_file(f, "a training checkpoint") for f in files}
    f, ck = max(cks.items(), key=lambda kv: kv[1]["run"]["step"])
    model = build(name, A)
    init_db = test_db(build(name, A))
    model.load_state_dict(ck["model"])
    hist = History()
    hist.load_dict(ck["history"])
    sweep = []
    for g in sweeps:
        c = cks.get(g) or load_file(g, "a training checkpoint")
        lr = float(g.stem.split("-lr")[1])
        finished = c["run"]["stage_index"] >= len(c["plan"])
        best = round(min(c["history"]["val_metric"]), 3)
        sweep.append({"lr": lr, "layers": args.sweep_layers, "finished": finished,
                      "steps": c["run"]["step"], "best_val_nmse_db_so_far": best})  # fmt: skip
    stage = ck["plan"][min(ck["run"]["stage_index"], len(ck["plan"]) - 1)][0]
    per_layer = test_db(model)
    sd = {k: v.to(torch.float32) for k, v in model.state_dict().items()}
    torch.save(sd, Path(args.out) / f"{name}.pt")
    record = {
        "converged": False,
        "stopped_in": f"{f.name}, stage {stage}",
        "nmse_db_per_layer": per_layer,
        "nmse_db_per_layer_init": init_db,
        "params": count_parameters(model),
        "lr": hist.lr[0] if hist.lr else None,
        "lr_sweep": sweep,
        "train_steps": len(hist),
        "train_samples": len(hist) * args.batch,
        "train_seconds": round(hist.time[-1], 1) if hist.time else 0.0,
        "settings": settings,
        "command": command,
        **curve(hist),
    }
    update_results(res_path, name, record, problem)
    write_readme_table(Path(args.out))
    print(f"{name}: stored as not converged ({record['stopped_in']}), NMSE(T) "
          f"{per_layer[-1]:.2f} dB after {len(hist)} steps", flush=True)  # fmt: skip


def readme_table(results: dict) -> str:
    """The README's table: per network, the rate, steps, samples, time and test NMSE."""
    rows = [
        "| network | parameters | learning rate (sweep) | steps | samples | wall time (min) "
        "| NMSE at init (dB) | NMSE trained (dB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        init = r.get("nmse_db_per_layer_init")
        tag = "" if r.get("converged", True) else " (not converged)"
        rows.append(
            f"| {name}{tag} | {r['params']:,} | {r['lr']:g} | {r['train_steps']:,} | "
            f"{r['train_samples']:,} | {r.get('train_seconds', float('nan')) / 60:.1f} | "
            f"{'-' if init is None else f'{init[-1]:.1f}'} | {r['nmse_db_per_layer'][-1]:.1f} |"
        )
    return "\n".join(rows)


def write_readme_table(out: Path) -> None:
    """Rewrite the table between the markers of ``out/README.md`` (if the file has them)."""
    table = readme_table(_cli.load_results(out / "results.json", {"models": {}}))
    _cli.write_readme_table(out / "README.md", table)


def main(argv=None):
    ap = _cli.parser(__doc__, "results/unrolled_sparse")
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--patience", type=int, default=100, help="steps, grow/refine stages")
    ap.add_argument("--final-patience", type=int, default=400, help="steps, final fine-tuning")
    ap.add_argument("--mlp-patience", type=int, default=1000)
    ap.add_argument("--val-every", type=int, default=20)
    ap.add_argument(
        "--min-delta",
        type=float,
        default=0.01,
        help="dB: smaller gains are no "
        "improvement for the patience (the best weights are kept anyway)",
    )
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--sweep-layers", type=int, default=4)
    ap.add_argument(
        "--mlp-sweep-from",
        metavar="FILE",
        help="reuse the MLP sweep records of an earlier results.json (same settings) and "
        "train only the chosen candidate",
    )
    ap.add_argument(
        "--export-partial",
        metavar="NAME",
        help="store network NAME as it stands in its interrupted run (its checkpoints), marked "
        "as not converged, instead of training",
    )
    args = ap.parse_args(argv)
    out = _cli.setup(args)
    command = _cli.command_line("train_unrolled_sparse.py", argv)
    dtype = torch.float32
    A64 = generate_reference_matrix()
    torch.save({"A": A64}, out / "A.pt")
    A = A64.to(dtype)
    ref = REFERENCE
    sampler = make_sampler(A, ref.p, ref.snr_db)
    val = sampler(args.val_size, torch.Generator().manual_seed(VAL_SEED))
    y, nv, x = test_set(A)
    res_path = out / "results.json"
    problem = {
        "M": ref.M,
        "N": ref.N,
        "p": ref.p,
        "snr_db": ref.snr_db,
        "T": ref.T,
        "lam": ref.lam,
        "matrix": "gaussian_matrix(250, 500), torch.Generator seed 0",
        "test_set": "make_sampler(A, 0.1, 40)(2000, Generator seed 1234), float32",
        "validation_set": f"make_sampler(A, 0.1, 40)({args.val_size}, seed {VAL_SEED})",
    }
    settings = {
        k: getattr(args, k)
        for k in (
            "batch",
            "patience",
            "final_patience",
            "mlp_patience",
            "val_every",
            "min_delta",
            "val_size",
            "sweep_layers",
            "seed",
        )
    }

    def test_db(model):
        model.eval()
        with torch.no_grad():
            return [round(v, 3) for v in sparse.nmse_db(model.cpu()(y, nv), x).tolist()]

    if args.export_partial:
        export_partial(args.export_partial, args, A, val, test_db, res_path, problem, settings,
                       command)  # fmt: skip
        return
    for name in args.models:
        done = _cli.load_results(res_path, {"models": {}})["models"].get(name, {})
        if args.resume and done.get("settings") == settings and (out / f"{name}.pt").exists():
            print(f"{name:10s} already trained with these settings (--resume): skipped", flush=True)
            continue
        sweep = []
        if name == "mlp":
            model, hist, shape, lr, sweep = train_mlp(args, sampler, val, test_db)
            init_db = None
            if tuple(shape) != tuple(MLP_SHAPE):
                print(
                    f"  NOTE: the chosen shape {shape} differs from MLP_SHAPE {MLP_SHAPE}: "
                    "update lib.chapters.pretrained_sparse.MLP_SHAPE",
                    flush=True,
                )
        else:
            model, hist, lr, sweep = sweep_and_train(
                name, lambda name=name: build(name, A), ref.T, LR_GRID.get(name, DEFAULT_GRID),
                sampler, val, args,
            )  # fmt: skip
            init_db = test_db(build(name, A))
        per_layer = test_db(model)
        # fixed matrices are non-persistent buffers: the state dict is the learned parameters
        sd = {k: v.to(torch.float32) for k, v in model.state_dict().items()}
        torch.save(sd, out / f"{name}.pt")
        record = {
            "nmse_db_per_layer": per_layer,
            "nmse_db_per_layer_init": init_db,
            "params": count_parameters(model),
            "lr": lr,
            "lr_sweep": sweep,
            "train_steps": len(hist),
            "train_samples": len(hist) * args.batch,
            "train_seconds": round(hist.time[-1], 1),
            "settings": settings,
            "command": command,
            **({"mlp_shape": list(shape)} if name == "mlp" else {}),
            **curve(hist),
        }
        update_results(res_path, name, record, problem)
        write_readme_table(out)
        print(
            f"{name:10s} params={record['params']:8d} lr={lr:g} NMSE(T)={per_layer[-1]:7.2f} "
            f"dB steps={len(hist)} time={hist.time[-1]:6.0f}s",
            flush=True,
        )
        for f in [*args.checkpoints.glob(f"{name}-*.ckpt"), args.checkpoints / f"{name}.ckpt"]:
            f.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
