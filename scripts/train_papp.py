"""Train a PaPP precoder or one of its baselines on the source sites (chapter *Generalizable
precoding*, arXiv:2601.21897).

Set-up (``lib.chapters.PaPPSetup``): K = 4 users, an 8x8 UPA at 3.5 GHz, site-normalised
ray-traced channels of the ten source sites (splits ``train`` and ``meta``; 80 % of each site's
users for training, 20 % for validation), training SNRs 10, 15, 20 and 25 dB (unit noise,
``P = 10^(SNR / 10)``) and CSI-error levels beta in {0, 0.2, 0.4}
(``H_hat = sqrt(1 - beta^2) H + beta E``). Every step draws ``--domains`` domains (a site, an
SNR, a beta; distinct sites) with ``--batch / --domains`` samples each from a fixed pool of
``--pool`` samples per site (fresh CSI error every time); the rate is always scored on the true
channel, normalised by ``R_WMMSE``, the sum rate of WMMSE run ``--ref-iters`` (300) iterations
from the equal-power RZF.

Methods (``--method``) on the same data and the same number of steps:

* ``mldg``: the MLDG objective ``L_tr(theta) + beta_meta L_gen(theta - alpha grad L_tr)``
  with the first ``D - 1`` domains of the step as meta-train and the last as meta-generalisation
  (``lib.learn.mldg_objective``);
* ``deepall``: the plain loss on all ``D`` domains;
* ``maml``: per domain one inner step on half of its samples, the loss of the adapted weights on
  the other half (``lib.learn.maml_objective``).

Models (``--backbone``): ``papp`` (``lib.learn.PaPPNet``: backbone, teacher with one WMMSE
update, student; ``--hybrid`` for the hybrid student with ``--n-rf`` RF chains;
``--no-normalise`` for the ablation fed ``H`` and the SNR instead of ``sqrt(P) / sigma H``) or
``cnn`` (``lib.learn.CNNPrecoderNet``, the paper's CNN baseline, trained on the rate alone).
A PaPP model trains in two stages: ``teacher`` (``--teacher-steps`` at step size
``--teacher-lr``; the teacher's rate ``-R(W_T) / R_WMMSE``) then ``student`` (``--steps``; the
student loss ``MSE(W_T, W) - lambda R(W) / R_WMMSE`` against the targets of a frozen copy of
the network validated best at the end of the teacher stage, with the reliability gate
lambda_0 -> lambda_1 once the validation imitation error stops improving). Validation every
``--val-every`` steps on a fixed set of validation users (all source sites, every training
SNR, beta = 0): the metric is minus the mean of ``R / R_WMMSE`` of the teacher in the teacher
stage and of the deployed network (the student) after it; the best weights are kept,
the step size decays by 10 after ``--lr-patience`` steps without improvement and a stage stops
after ``--patience``.

Writes ``<out>/<name>.pt`` (the state dict; load with ``torch.load(..., weights_only=True)``),
for a PaPP model also ``<out>/<name>-frozen-teacher.pt`` (the network whose teacher gave the
targets), and merges its training record into ``<out>/train.json``. Example::

    python scripts/train_papp.py --method mldg --seed 0
    python scripts/train_papp.py --method deepall --backbone cnn --seed 0 --device cuda
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.chapters import DomainSampler, PaPPSetup, source_pool  # noqa: E402
from lib.learn import (  # noqa: E402
    Callback,
    CNNPrecoderNet,
    PaPPNet,
    ReliabilityGate,
    Stage,
    fit,
    maml_objective,
    mldg_objective,
    papp_rate,
    student_loss,
)
from scripts import _cli  # noqa: E402

RESULTS = "train.json"
VAL_SEED = 11


def build_parser():
    ap = _cli.parser(__doc__, "results/papp")
    ap.add_argument("--method", choices=("mldg", "deepall", "maml"), default="mldg")
    ap.add_argument("--backbone", choices=("papp", "cnn"), default="papp")
    ap.add_argument("--hybrid", action="store_true")
    ap.add_argument("--n-rf", type=int, default=4)
    ap.add_argument("--no-normalise", action="store_true")
    ap.add_argument("--student", choices=("structure", "span"), default="structure",
                    help="the student's output: the optimal beamforming structure or free "
                    "coefficients in the channel span")
    ap.add_argument("--name", default=None)
    ap.add_argument("--pool", type=int, default=768, help="training samples per source site")
    ap.add_argument("--val", type=int, default=64, help="validation samples per site and SNR")
    ap.add_argument("--cache", default="_build/papp_cache", help="where the pools are cached")
    ap.add_argument("--ref-iters", type=int, default=300, help="WMMSE iterations of R_WMMSE")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--domains", type=int, default=4)
    ap.add_argument("--los-domains", action="store_true",
                    help="LOS and NLOS users of a site as separate domains (training pool)")
    ap.add_argument("--teacher-steps", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--teacher-lr", type=float, default=None,
                    help="step size of the teacher stage (default: --lr)")
    ap.add_argument("--clip-quantile", type=float, default=None,
                    help="adaptive gradient clipping at this quantile of the last 100 "
                    "gradient norms (lib.learn.fit's clip_quantile); default: no clipping")
    ap.add_argument("--inner-lr", type=float, default=1e-3)
    ap.add_argument("--beta-meta", type=float, default=1.0)
    ap.add_argument("--lambda0", type=float, default=0.1)
    ap.add_argument("--lambda1", type=float, default=1.0)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--lr-patience", type=int, default=200)
    ap.add_argument("--patience", type=int, default=500)
    return ap


def method_name(args) -> str:
    if args.name:
        return args.name
    if args.backbone == "cnn":
        base = {"mldg": "MLDG-CNN", "deepall": "DeepAll-CNN", "maml": "MAML-CNN"}[args.method]
    else:
        base = {"mldg": "PaPP", "deepall": "DeepAll-PaPP", "maml": "MAML-PaPP"}[args.method]
        base += "-HBF" if args.hybrid else ""
        base += "-nonorm" if args.no_normalise else ""
        base += "-span" if args.student == "span" else ""
    return base + (f"-seed{args.seed}" if args.seed else "")


def pools(setup: PaPPSetup, args):
    """Training and validation pools, cached on disk (they do not depend on --seed)."""
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n, seed in (("train", args.pool, 0), ("val", args.val, VAL_SEED)):
        los = args.los_domains and split == "train"  # validation stays mixed
        f = cache / f"{split}_{n}_{setup.ref_iters}_eqrzf{'_los' if los else ''}.pt"
        if f.exists():
            out[split] = torch.load(f, weights_only=True)
        else:
            t = time.perf_counter()
            out[split] = source_pool(
                setup, n, split, seed=seed, los_domains=los,
                progress=lambda s, sp=split: print(f"  pool {sp}: {s}", flush=True))  # fmt: skip
            torch.save(out[split], f)
            print(f"  pool {split}: {time.perf_counter() - t:.0f} s", flush=True)
    return out["train"], out["val"]


def build_model(args, setup):
    if args.backbone == "cnn":
        return CNNPrecoderNet(setup.users, setup.antennas)
    return PaPPNet(setup.n_h, setup.n_v, args.embed, args.hidden, hybrid=args.hybrid,
                   n_rf=args.n_rf, normalise=not args.no_normalise,
                   structure=args.student == "structure")  # fmt: skip


def _inputs(H_hat, snr, normalise: bool):
    """The network's input: ``sqrt(P) H_hat`` (unit noise), or ``H_hat`` and the SNR."""
    if normalise:
        return H_hat * (10.0 ** (snr / 20.0)).to(H_hat.dtype)[:, None, None], None
    return H_hat, snr


class FrozenTeacher(Callback):
    """At the start of the ``student`` stage, a frozen copy of the network (its teacher: the
    backbone and teacher heads as validated best at the end of the ``teacher`` stage) that
    supplies the distillation targets; checkpointed with the run."""

    def __init__(self, model):
        self.model, self.net = model, None

    def _freeze(self, net):
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net.eval()

    def on_stage_start(self, state):
        if state.stage.name == "student" and self.net is None:
            self._freeze(copy.deepcopy(state.model))

    def state_dict(self):
        return {"weights": {} if self.net is None else self.net.state_dict()}

    def load_state_dict(self, d):
        if d["weights"]:
            net = copy.deepcopy(self.model)
            net.load_state_dict(d["weights"])
            self._freeze(net)


class Objective:
    """Losses of a block ``(H, H_hat, snr, rate)`` (flattened), by stage; a callable of the
    meta-objectives ``loss_fn(forward, batch)``: the teacher's rate in the ``teacher`` stage,
    the student loss against the frozen teacher's targets in the ``student`` stage."""

    def __init__(self, args, gate, frozen):
        self.teacher = args.backbone == "papp"
        self.normalise = not args.no_normalise
        self.gate, self.frozen = gate, frozen
        self.stage = "teacher"

    def __call__(self, forward, block):
        H, H_hat, snr, rate = block
        Hb = H * (10.0 ** (snr / 20.0)).to(H.dtype)[:, None, None]  # true, normalised
        x, s = _inputs(H_hat, snr, self.normalise)
        if not self.teacher:
            W = forward(x, s)
            return -(papp_rate(Hb, W) / rate).mean()
        if self.stage == "teacher":
            W_T = forward(x, s, teacher=True)[1]
            return -(papp_rate(Hb, W_T) / rate).mean()
        with torch.no_grad():
            W_T = self.frozen.net(x, s, teacher=True)[1]
        return student_loss(forward(x, s), W_T, Hb, rate, self.gate.value)


def _flat(block, idx=None):
    H, H_hat, snr, rate = block
    if idx is not None:
        H, H_hat, snr, rate = H[idx], H_hat[idx], snr[idx], rate[idx]
    f = lambda t: t.reshape(-1, *t.shape[2:])  # noqa: E731
    return f(H), f(H_hat), f(snr), f(rate)


def make_step(args, objective):
    def step(model, batch, state):
        objective.stage = state.stage.name
        block = batch[0]
        D = block[0].shape[0]
        fwd = model
        if args.method == "deepall":
            return objective(fwd, _flat(block))
        if args.method == "mldg":
            tr = [_flat(block, slice(0, D - 1))]
            gen = [_flat(block, slice(D - 1, D))]
            obj, l_tr, l_gen = mldg_objective(model, objective, tr, gen, args.inner_lr,
                                              args.beta_meta)  # fmt: skip
            return obj, {"loss": float(l_tr), "meta_gen": float(l_gen)}
        b = block[0].shape[1] // 2
        tasks = []
        for d in range(D):
            one = tuple(t[d : d + 1] for t in block)
            sup = tuple(t[:, :b] for t in one)
            qry = tuple(t[:, b:] for t in one)
            tasks.append((_flat(sup), _flat(qry)))
        obj, l_s = maml_objective(model, objective, tasks, args.inner_lr)
        return obj, {"loss": float(obj.detach()), "support": float(l_s)}

    return step


def validation(val_pool, setup):
    """Fixed validation batch: every site, every training SNR, beta = 0."""
    H = val_pool["H"]  # (S, N, K, M)
    S, N = H.shape[:2]
    snr = torch.tensor(setup.snr_db, dtype=torch.float32)
    Hs = H[:, :, None].expand(S, N, len(snr), *H.shape[2:]).reshape(-1, *H.shape[2:])
    sn = snr[None, None, :].expand(S, N, len(snr)).reshape(-1)
    rate = val_pool["rate_ref"].float().reshape(-1)
    return Hs, sn, rate


def make_val_fn(args, record):
    normalise = not args.no_normalise
    teacher = args.backbone == "papp"

    def val_fn(model, batch, state):
        H, snr, rate = batch[0]
        Hb = H * (10.0 ** (snr / 20.0)).to(H.dtype)[:, None, None]
        x, s = _inputs(H, snr, normalise)
        with torch.no_grad():
            if teacher:
                W, W_T = model(x, s, teacher=True)
                record["teacher"] = float((papp_rate(Hb, W_T) / rate).mean())
                record["mse"] = float((W - W_T).abs().square().sum((-2, -1)).mean())
            else:
                W = model(x, s)
            ratio = float((papp_rate(Hb, W) / rate).mean())
        record.setdefault("curve", []).append(
            [state.step, ratio, record.get("teacher"), record.get("mse")])
        # the metric of the stage: the teacher's rate while the teacher trains
        if teacher and state.stage is not None and state.stage.name == "teacher":
            return -record["teacher"]
        return -ratio

    return val_fn


def main(argv=None):
    t0 = time.perf_counter()
    args = build_parser().parse_args(argv)
    out = _cli.setup(args)
    command = _cli.command_line("train_papp.py", argv)
    setup = PaPPSetup(ref_iters=args.ref_iters)
    name = method_name(args)
    train_pool, val_pool = pools(setup, args)
    torch.manual_seed(args.seed)
    model = build_model(args, setup)
    rec: dict = {}
    gate = ReliabilityGate(lambda state: rec.get("mse", 0.0), args.lambda0, args.lambda1,
                           stage="student")  # fmt: skip
    frozen = FrozenTeacher(model)
    objective = Objective(args, gate, frozen)
    sampler = DomainSampler(train_pool, setup, args.domains, los_domains=args.los_domains)
    if args.backbone == "papp":
        plan = [Stage("teacher", args.teacher_steps, lr=args.teacher_lr),
                Stage("student", args.steps)]  # fmt: skip
    else:
        plan = [Stage("student", args.teacher_steps + args.steps)]
    ckpt = args.checkpoints / f"{name}.ckpt"
    hist = fit(
        model, None, sampler, plan=plan, lr=args.lr, optimiser=torch.optim.Adam,
        batch_size=args.batch, step_fn=make_step(args, objective),
        val_data=(validation(val_pool, setup), None), val_fn=make_val_fn(args, rec),
        val_every=args.val_every, patience=args.patience, lr_decay=0.1,
        lr_patience=args.lr_patience, clip_quantile=args.clip_quantile,
        seed=args.seed, device=args.device,
        checkpoint=ckpt, checkpoint_every=args.checkpoint_every, resume=args.resume,
        progress=args.progress, callbacks=[gate, frozen], desc=name,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    model = model.cpu()
    torch.save(model.state_dict(), out / f"{name}.pt")
    if frozen.net is not None:  # the teacher of the distillation targets
        torch.save(frozen.net.state_dict(), out / f"{name}-frozen-teacher.pt")
    record = {
        "method": args.method, "backbone": args.backbone, "hybrid": args.hybrid,
        "normalise": not args.no_normalise, "seed": args.seed,
        "params": sum(p.numel() for p in model.parameters()),
        "steps": len(hist.loss), "best": hist.best(), "val_curve": rec.get("curve", []),
        "train_loss": [float(sum(hist.loss[i:i + 50]) / len(hist.loss[i:i + 50]))
                       for i in range(0, len(hist.loss), 50)],
        "stage_steps": {st.name: sum(1 for x in hist.stage if x == st.name) for st in plan},
        "stage_max": {st.name: st.steps for st in plan},
        "gate_opened_at": gate.opened_at, "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(1, len(hist.loss)), 4),
        "protocol": {k: v for k, v in vars(args).items() if k not in (
            "device", "checkpoints", "out", "cache", "checkpoint_dir", "progress")},
        "command": command,
    }  # fmt: skip
    _cli.merge_results(out / RESULTS, {name: json.loads(json.dumps(record, default=str))},
                       commands=[command], seconds_per_command=[round(seconds, 1)])  # fmt: skip
    print(f"{name}: {len(hist.loss)} steps, best {hist.best()}, {seconds:.0f} s")
    return model, record


if __name__ == "__main__":
    main()
