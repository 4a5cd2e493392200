"""Re-execute chapter notebooks in place and store their outputs.

Usage::

    python scripts/refresh_notebooks.py [book/x.ipynb ...]

With no argument every notebook under ``book/`` is refreshed. Outputs are what
nbval later compares (cells marked ``# NBVAL_CHECK_OUTPUT``) and what the book
renders, so run this after changing a chapter or the ``lib`` code it uses.
Execution metadata (timestamps) is stripped so that diffs show only content.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def refresh(path: Path, timeout: int = 1200) -> float:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,
    )
    t0 = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - t0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "book").glob("*.ipynb"))
    for p in paths:
        print(f"executing {p} ...", flush=True)
        print(f"  {refresh(p):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
