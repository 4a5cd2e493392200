"""How many torch threads should a chapter use on a 2-core machine?

Runs the book's typical workloads in fresh subprocesses with 1 and with 2
intra-op threads, side by side in one run, and prints the times and the ratio
(time with 2 threads / time with 1 thread; below 1 means 2 threads are faster).

    python benchmarks/bench_threads.py [--repeat 3]

The workloads: AMP on the sparse-recovery reference problem (M=250, N=500,
batch 100, 30 iterations), batched WMMSE on 10,000 4x4 channels (20 iterations),
and 50 Adam steps of a 16-layer lean unrolled ISTA
(batch 256, ``lib.learn.train_unrolled`` on ``lib.learn.fit``). The test run
executes two notebooks at a time (pytest-xdist, 2 workers), so one thread per
notebook is the relevant choice there; this benchmark measures a notebook
alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

WORKLOADS = {
    "AMP, reference problem": """
from lib import sparse
g = torch.Generator().manual_seed(0)
A = sparse.gaussian_matrix(250, 500, generator=g)
x = sparse.bernoulli_gaussian(100, 500, 0.1, generator=g)
y, s2 = sparse.measure(A, x, 40.0, 0.1, generator=g)
def run():
    sparse.amp(y, A, 30)
""",
    "WMMSE, 10k channels": """
from lib.phy import channels
from lib import precoding
H = channels.rayleigh(10000, 4, 4, generator=torch.Generator().manual_seed(0))
def run():
    precoding.wmmse(H, 10.0, 1.0, 20)
""",
    "unrolled ISTA, 50 Adam steps": """
from lib import sparse
from lib.learn.unrolled_sparse import LeanISTA, make_sampler, nmse_loss
from lib.learn import train_unrolled
g = torch.Generator().manual_seed(0)
A = sparse.gaussian_matrix(250, 500, generator=g)
model = LeanISTA(A, 16)
sampler = make_sampler(A, 0.1, 40.0)
def run():
    train_unrolled(model, sampler, nmse_loss, finetune_steps=50, batch_size=256, progress=False)
""",
}

TEMPLATE = """
import json, sys, time, torch
torch.set_num_threads({threads})
{setup}
run()  # warm-up
best = float("inf")
for _ in range({repeat}):
    t0 = time.perf_counter(); run(); best = min(best, time.perf_counter() - t0)
print(json.dumps(best))
"""


def measure(setup: str, threads: int, repeat: int) -> float:
    code = TEMPLATE.format(threads=threads, setup=setup, repeat=repeat)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'workload':32s} {'1 thread':>10s} {'2 threads':>10s} {'2/1 ratio':>10s}")
    for name, setup in WORKLOADS.items():
        t1 = measure(setup, 1, args.repeat)
        t2 = measure(setup, 2, args.repeat)
        print(f"{name:32s} {t1:9.3f}s {t2:9.3f}s {t2 / t1:10.2f}")


if __name__ == "__main__":
    main()
