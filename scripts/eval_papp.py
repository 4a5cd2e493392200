"""Evaluate the stored PaPP models and the classical precoders on the test sites and write
``results/papp/summary.json`` (chapter *Generalizable precoding*).

Test sites: the held-out sites and the unseen city (``lib.chapters.PaPPSetup.test_sites``),
``--samples`` channels each (users of the whole site, ``site_test_channels`` seed 2026 + site
index), at every SNR of ``--snr`` (unit noise). Methods: every model in
``<models>/train.json`` (student; ``<name>-teacher`` for the teacher of a PaPP model), ZF, RZF,
RZF with equal power per user, MRT, the phase-extraction hybrid with N_RF = K (``HBF-PE``),
WMMSE converged (``converged_wmmse``: from the equal-power RZF until an iteration gains less
than ``--tol`` b/s/Hz) and truncated (``--truncated`` iterations from RZF), and the DPC sum
capacity. CSI error: at ``--csi-snr`` dB the precoders get
``H_hat = sqrt(1 - beta^2) H + beta E`` and are scored on ``H``. FLOPs per precoder
(``lib.learn.count_flops``) and CPU seconds per 1,000 channels (batched, one thread).

Example::

    python scripts/eval_papp.py --samples 100
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.chapters import (  # noqa: E402
    PaPPSetup,
    build_papp_model,
    converged_wmmse,
    csi_error,
    phase_extraction_hybrid,
    site_test_channels,
)
from lib.core import set_threads  # noqa: E402
from lib.learn import LearnedPrecoder, count_flops  # noqa: E402
from lib.precoding import dpc_sum_capacity, mrt, rzf, sum_rate, wmmse, zf  # noqa: E402


def classical(args) -> dict:
    rzf_eq = lambda H, P, s2: rzf(H, P, s2, equal_power=True)  # noqa: E731
    trunc = lambda H, P, s2: wmmse(H, P, s2, iters=args.truncated, V0=rzf(H, P, s2))  # noqa: E731
    conv = lambda H, P, s2: converged_wmmse(H, P, s2, tol=args.tol)  # noqa: E731
    return {"ZF": zf, "RZF": rzf, "RZF-eq": rzf_eq, "MRT": mrt, "HBF-PE": phase_extraction_hybrid,
            f"WMMSE-{args.truncated}": trunc, "WMMSE": conv}  # fmt: skip


def learned(models: Path) -> dict:
    rec = json.loads((models / "train.json").read_text())["models"]
    out = {}
    for name, r in rec.items():
        net = build_papp_model(r)
        net.load_state_dict(torch.load(models / f"{name}.pt", weights_only=True))
        net = net.double().eval()
        out[name] = LearnedPrecoder(net)
        if r["backbone"] == "papp":
            # the teacher that gave the distillation targets (frozen at the end of its stage),
            # when stored; else the teacher head on the final backbone
            frozen = models / f"{name}-frozen-teacher.pt"
            tnet = net
            if frozen.exists():
                tnet = build_papp_model(r)
                tnet.load_state_dict(torch.load(frozen, weights_only=True))
                tnet = tnet.double().eval()
            out[f"{name}-teacher"] = _teacher(tnet)
    return out


def _teacher(net):
    def f(H, P, s2):
        P = torch.as_tensor(P, dtype=torch.float64).expand(H.shape[0])
        Hb = H * torch.sqrt(P / s2).to(H.dtype)[:, None, None]
        snr = None if net.normalise else 10 * torch.log10(P / s2)
        x = Hb if net.normalise else H / s2**0.5
        with torch.no_grad():
            W_T = net(x, snr, teacher=True)[1]
        return W_T * torch.sqrt(P).to(H.dtype)[:, None, None]

    return f


#: the results table's names (issue / chapter) -> the stored model whose seeds are averaged
TABLE_NAMES = {
    "PaPP-student": "PaPP", "PaPP-teacher": "PaPP-teacher", "PaPP-HBF": "PaPP-HBF",
    "DeepAll": "DeepAll-CNN", "MAML": "MAML-CNN", "DeepAll-PaPP": "DeepAll-PaPP",
    "MAML-PaPP": "MAML-PaPP", "PaPP-nonorm": "PaPP-nonorm", "PaPP-span": "PaPP-span",
}  # fmt: skip


def seed_names(base: str, names) -> list:
    """``base`` and its ``-seedN`` runs among ``names`` (a teacher: ``X-seedN-teacher``)."""
    if base.endswith("-teacher"):
        stem = base[: -len("-teacher")]
        return [n for n in names if n == base or (n.startswith(stem + "-seed")
                                                  and n.endswith("-teacher"))]  # fmt: skip
    return [n for n in names if n == base or (n.startswith(base + "-seed")
                                              and not n.endswith("-teacher"))]  # fmt: skip


def aggregate(row: dict) -> dict:
    """Seed-averaged entries of one (site, SNR) row: mean over seeds of the sample means,
    ``se`` the mean over seeds of the sample standard errors, ``se_seeds`` the standard error
    over seeds; classical methods are copied."""
    out = {}
    for name, base in TABLE_NAMES.items():
        runs = seed_names(base, row)
        if not runs:
            continue
        m = torch.tensor([row[n]["mean"] for n in runs], dtype=torch.float64)
        out[name] = {"mean": float(m.mean()),
                     "se": float(sum(row[n]["se"] for n in runs) / len(runs)),
                     "se_seeds": float(m.std() / len(runs) ** 0.5) if len(runs) > 1 else None,
                     "seeds": len(runs)}  # fmt: skip
    for name in ("WMMSE", "ZF", "RZF", "RZF-eq", "MRT", "HBF-PE", "DPC"):
        if name in row:
            out[name] = row[name]
    for name in row:
        if name.startswith("WMMSE-"):
            out[name] = row[name]
    return out


def stats(r: torch.Tensor) -> dict:
    return {"mean": float(r.mean()), "se": float(r.std() / r.numel() ** 0.5)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="results/papp")
    ap.add_argument("--out", default=None, help="default: <models>/summary.json")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--snr", default="10,12.5,15,17.5,20,22.5,25")
    ap.add_argument("--csi-snr", type=float, default=20.0)
    ap.add_argument("--betas", default="0,0.1,0.2,0.3,0.4,0.5,0.6")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--truncated", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    models = Path(args.models)
    out = Path(args.out) if args.out else models / "summary.json"
    setup = PaPPSetup()
    snrs = [float(s) for s in args.snr.split(",")]
    betas = [float(b) for b in args.betas.split(",")]
    methods = {**classical(args), **learned(models)}
    t0 = time.perf_counter()
    rates: dict = {}
    csi: dict = {m: [] for m in methods}
    channels = {n: site_test_channels(setup, n, args.samples, 2026 + i)
                for i, n in enumerate(setup.test_sites)}  # fmt: skip
    for name, H in channels.items():
        rates[name] = {}
        for snr in snrs:
            P = 10.0 ** (snr / 10.0)
            row = {m: stats(sum_rate(H, f(H, P, 1.0), 1.0)) for m, f in methods.items()}
            row["DPC"] = stats(dpc_sum_capacity(H, P, 1.0))
            rates[name][f"{snr:g}"] = row
            print(f"{name:18s} {snr:5.1f} dB  " + "  ".join(
                f"{m} {v['mean']:.2f}" for m, v in row.items()), flush=True)  # fmt: skip
    # CSI error at one SNR, all test sites together
    H_all = torch.cat(list(channels.values()))
    P = 10.0 ** (args.csi_snr / 10.0)
    g = torch.Generator().manual_seed(7)
    csi = {}
    for beta in betas:
        H_hat = csi_error(H_all, beta, g)
        csi[f"{beta:g}"] = {m: stats(sum_rate(H_all, f(H_hat, P, 1.0), 1.0))
                            for m, f in methods.items()}  # fmt: skip
    # FLOPs per precoder and CPU time per 1,000 channels (batched)
    Hf = H_all[:64]
    flops = {m: count_flops(f, Hf, P, 1.0, per=Hf.shape[0]).total for m, f in methods.items()}
    Ht = H_all[:1000] if H_all.shape[0] >= 1000 else H_all
    cpu = {}
    for m, f in methods.items():
        t = time.perf_counter()
        f(Ht, P, 1.0)
        cpu[m] = (time.perf_counter() - t) * 1000.0 / Ht.shape[0]
    table = {site: {snr: aggregate(row) for snr, row in by_snr.items()}
             for site, by_snr in rates.items()}  # fmt: skip
    summary = {
        "table": table,
        "csi_error_table": {b: aggregate(row) for b, row in csi.items()},
        "flops_table": aggregate({m: {"mean": v, "se": 0.0} for m, v in flops.items()}),
        "seeds": sorted({int(n.split("-seed")[1].split("-")[0]) if "-seed" in n else 0
                         for n in methods if n.startswith("PaPP")}),  # fmt: skip
        "setup": {"users": setup.users, "n_h": setup.n_h, "n_v": setup.n_v,
                  "test_sites": list(setup.test_sites), "samples": args.samples,
                  "snr_db": snrs, "csi_snr_db": args.csi_snr, "wmmse_tol": args.tol,
                  "wmmse_truncated": args.truncated},  # fmt: skip
        "rates": rates,
        "csi_error": csi,
        "flops_per_precoder": flops,
        "cpu_seconds_per_1000": cpu,
        "command": "python scripts/eval_papp.py " + " ".join(sys.argv[1:] if argv is None
                                                              else argv),  # fmt: skip
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if out.exists():  # keep what other scripts merged in (few_shot)
        old = json.loads(out.read_text())
        summary = {**{k: v for k, v in old.items() if k == "few_shot"}, **summary}
    out.write_text(json.dumps(summary, indent=1))
    print(f"wrote {out} in {summary['seconds']} s")
    return summary


if __name__ == "__main__":
    main()
