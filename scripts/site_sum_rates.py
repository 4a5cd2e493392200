"""Sum rates of ZF, RZF and WMMSE on every stored ray-traced site and on the reference models
(i.i.d. Rayleigh, 3GPP TR 38.901 UMi and UMa), for the chapter *Channels from ray tracing*.

Every source gives ``--batch`` samples of ``--users`` users for an 8x8 half-wavelength UPA
(``lib.phy.RayTracedSite.sample`` with ``torch.Generator().manual_seed(--seed)`` and the site
normalisation; ``lib.chapters.reference_channels(..., seed=--seed)``), complex128, unit noise,
SNR ``P / sigma^2`` in ``--snr``. WMMSE runs ``--iters`` iterations from RZF. The chapter
recomputes ZF and RZF on the same samples and one WMMSE entry, and checks them against this
file.

    python scripts/site_sum_rates.py        # about 10 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.chapters import REFERENCE_MODELS, precoder_sum_rates, reference_channels  # noqa: E402
from lib.phy import load_site, site_names  # noqa: E402


def samples(source: str, batch: int, users: int, seed: int) -> torch.Tensor:
    """The channels of one source: a stored site or a reference model (the chapter's draw)."""
    if source in REFERENCE_MODELS:
        return reference_channels(source, batch, users, seed=seed)["H"]
    site = load_site(source, dtype=torch.complex128)
    return site.sample(batch, users, torch.Generator().manual_seed(seed))[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "results" / "sites" / "sum_rates.json"))
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--snr", default="10,15,20,25")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    snr = [float(s) for s in args.snr.split(",")]
    out = {"setup": dict(batch=args.batch, users=args.users, n_h=8, n_v=8, iters=args.iters,
                         seed=args.seed, normalization="site"),
           "snr_db": snr, "rates": {}, "seconds": {}}  # fmt: skip
    for source in [*site_names(), *REFERENCE_MODELS]:
        t0 = time.time()
        H = samples(source, args.batch, args.users, args.seed)
        out["rates"][source] = precoder_sum_rates(H, snr, wmmse_iters=args.iters)
        out["seconds"][source] = round(time.time() - t0, 1)
        r = out["rates"][source]
        print(f"{source}: WMMSE {r['wmmse']}, RZF {r['rzf']} ({out['seconds'][source]} s)",
              flush=True)  # fmt: skip
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
