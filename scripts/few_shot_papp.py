"""Few-shot adaptation of a stored PaPP student on the held-out sites (chapter *Generalizable
precoding*), merged into ``results/papp/summary.json`` under ``few_shot``.

Each held-out site's users are split in halves (``split_site_users(site, 0.5, seed=5)``): the
base station collects ``N`` unlabeled samples of ``K`` users from the first half and fine-tunes
the deployed network on them (``lib.learn.finetune_rate``: the self-supervised rate loss,
``--steps`` Adam steps at ``--lr``, SNR drawn from the training SNRs); the test samples
(``--test`` per site) come from the other half. ``N`` in ``--shots`` (``all`` = ``--full``
samples); with ``--betas`` the ``N = all`` fine-tuning also runs on stored noisy CSI
``sqrt(1 - beta_ft^2) H + beta_ft E``. Reported: the mean sum rate over the training SNRs of the
zero-shot and of every fine-tuned network, and the fraction ``R_N / R_all``.

Example::

    python scripts/few_shot_papp.py --model PaPP
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.chapters import PaPPSetup, build_papp_model, split_site_users  # noqa: E402
from lib.core import set_threads  # noqa: E402
from lib.learn import finetune_rate, papp_rate, power_aware_input  # noqa: E402
from lib.phy import load_site, site_names  # noqa: E402


def mean_rate(net, H, snrs) -> float:
    out = []
    with torch.no_grad():
        for s in snrs:
            Hb = power_aware_input(H, 10.0 ** (s / 10.0), 1.0)
            out.append(float(papp_rate(Hb, net(Hb)).mean()))
    return sum(out) / len(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="results/papp")
    ap.add_argument("--model", default="PaPP")
    ap.add_argument("--shots", default="10,20,40,100,400,all")
    ap.add_argument("--full", type=int, default=2000)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--betas", default="0.2,0.4,0.6")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    t0 = time.perf_counter()
    models = Path(args.models)
    rec = json.loads((models / "train.json").read_text())["models"][args.model]
    net = build_papp_model(rec).double()
    net.load_state_dict(torch.load(models / f"{args.model}.pt", weights_only=True))
    net.eval()
    setup = PaPPSetup()
    snrs = list(setup.snr_db)
    shots = [s if s == "all" else int(s) for s in args.shots.split(",")]
    betas = [float(b) for b in args.betas.split(",")] if args.betas else []
    res: dict = {"model": args.model, "sites": {}, "steps": args.steps, "lr": args.lr}
    for i, name in enumerate(site_names("heldout")):
        site = load_site(name)
        adapt, test = split_site_users(site, 0.5, seed=5)
        g = torch.Generator().manual_seed(100 + i)
        H_test, _ = site.sample(args.test, setup.users, g, pool=test, dtype=torch.complex128)
        H_all, _ = site.sample(args.full, setup.users, g, pool=adapt, dtype=torch.complex128)
        row = {"zero_shot": mean_rate(net, H_test, snrs)}
        for n in shots:
            H = H_all if n == "all" else H_all[:n]
            ft = finetune_rate(net, H, snrs, steps=args.steps, lr=args.lr,
                               generator=torch.Generator().manual_seed(7))  # fmt: skip
            row[str(n)] = mean_rate(ft, H_test, snrs)
        for b in betas:
            ft = finetune_rate(net, H_all, snrs, steps=args.steps, lr=args.lr, beta=b,
                               generator=torch.Generator().manual_seed(7))  # fmt: skip
            row[f"all_beta{b:g}"] = mean_rate(ft, H_test, snrs)
        res["sites"][name] = row
        print(name, {k: round(v, 3) for k, v in row.items()}, flush=True)
    frac = {}
    for n in shots:
        f = [r[str(n)] / r["all"] for r in res["sites"].values()]
        frac[str(n)] = sum(f) / len(f)
    res["fraction_of_full"] = frac
    res["command"] = "python scripts/few_shot_papp.py " + " ".join(
        sys.argv[1:] if argv is None else argv)  # fmt: skip
    res["seconds"] = round(time.perf_counter() - t0, 1)
    out = models / "summary.json"
    with open(models / "summary.json.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        summary = json.loads(out.read_text()) if out.exists() else {}
        summary["few_shot"] = res
        out.write_text(json.dumps(summary, indent=1))
        fcntl.flock(fh, fcntl.LOCK_UN)
    print("fraction of full fine-tuning:", {k: round(v, 4) for k, v in frac.items()})
    return res


if __name__ == "__main__":
    main()
