"""The command-line preamble shared by the paper-scale training scripts.

``scripts/train_unrolled_sparse.py`` and ``scripts/train_unfolded_wmmse.py`` both take
``--device`` (``cpu``, ``cuda`` or ``auto``), ``--out``, ``--seed``, ``--threads``,
``--checkpoint-every`` and ``--resume`` (checkpoints of :func:`lib.learn.fit`, by default in
``_build/checkpoints/<name of --out>``, ignored by git, so that an interrupted run continues
where it stopped, bit for bit),
``--no-progress``, record the exact command line in their results file and rewrite that file
after every trained network.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
from pathlib import Path

from lib.core import get_device, set_threads

__all__ = [
    "parser",
    "setup",
    "command_line",
    "load_results",
    "write_results",
    "merge_results",
    "TABLE_BEGIN",
    "TABLE_END",
    "write_readme_table",
]


def parser(doc: str, default_out: str) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the shared options (the script adds its own)."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--out", default=default_out, help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help="also save a checkpoint of the running network every N steps (checkpoints are "
        "always written at the end of every training stage)",
    )
    ap.add_argument(
        "--checkpoint-dir",
        default=None,
        help="where checkpoints go (default: _build/checkpoints/<name of --out>)",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its checkpoints (finished networks are loaded, "
        "the interrupted one continues where it stopped)",
    )
    ap.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return ap


def setup(args: argparse.Namespace) -> Path:
    """Apply the shared options: threads, device check, output and checkpoint directories.

    Returns the output directory (created). ``args.device`` becomes a ``torch.device``,
    ``args.checkpoints`` the checkpoint directory and ``args.progress`` a bool (a bar only on
    a terminal).
    """
    set_threads(args.threads)
    args.device = get_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.checkpoints = (
        Path("_build") / "checkpoints" / out.name
        if args.checkpoint_dir is None
        else Path(args.checkpoint_dir)
    )
    args.checkpoints.mkdir(parents=True, exist_ok=True)
    args.progress = not args.no_progress and sys.stderr.isatty()
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise SystemExit("--checkpoint-every must be >= 1")
    return out


def command_line(script: str, argv) -> str:
    """``python scripts/<script> <arguments>`` as the results file records it."""
    return f"python scripts/{script} " + " ".join(sys.argv[1:] if argv is None else argv)


def load_results(path: Path, empty: dict) -> dict:
    """The existing results file (a run adds to it), or ``empty``."""
    return json.loads(path.read_text()) if path.exists() else empty


def write_results(path: Path, results: dict) -> None:
    """Rewrite the results file (after every network, so an interrupted run keeps its work)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)


def merge_results(path: Path, models: dict | None = None, **top) -> dict:
    """Merge into the results file under an exclusive lock, so that several processes can
    train different networks into one file at once: ``models`` entries are added or replaced,
    every other keyword replaces a top-level entry, except ``commands`` and
    ``seconds_per_command`` whose items are appended. Returns the merged contents."""
    lock = path.with_name(path.name + ".lock")
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            results = load_results(path, {"models": {}})
            results.setdefault("models", {}).update(models or {})
            for k, v in top.items():
                if k in ("commands", "seconds_per_command"):
                    results.setdefault(k, []).extend(v)
                else:
                    results[k] = v
            write_results(path, results)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return results


TABLE_BEGIN, TABLE_END = "<!-- table: written by the script -->", "<!-- end of table -->"


def write_readme_table(readme: Path, table: str) -> None:
    """Replace the text between the table markers of ``readme`` (if it exists and has them)."""
    if not readme.exists():
        return
    text = readme.read_text()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        return
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    readme.write_text(f"{head}{TABLE_BEGIN}\n{table}\n{TABLE_END}{tail}")
