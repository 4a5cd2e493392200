"""Put the "install the book's library" cell at the top of every chapter notebook.

Usage::

    python scripts/install_cell.py [--check] [book/x.ipynb ...]

On Colab (or in any Python without the book's library) a chapter opened from the repository
cannot ``import lib``. The first code cell of every chapter therefore installs it, with its
stored results (``setup.py`` puts ``results/`` into the wheel), from the repository named in
``_config.yml`` (``repository.url``, the one setting that the Binder, Colab and repository
buttons also use)::

    try:
        import lib.chapters  # noqa: F401
    except ModuleNotFoundError:  # e.g. on Colab
        %pip install -q "git+<repository URL>"

Where ``lib`` is installed the cell does nothing and prints nothing, so inserting it leaves the
stored outputs valid (the script shifts the stored execution counts by one, as a run would). The
cell is tagged ``remove-cell``: the rendered page does not show it. Run this script after
changing ``repository.url``; ``--check`` only reports notebooks whose cell is missing or names
another URL (exit status 1), which ``tests/test_project.py`` also checks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
FIRST_LINE = "# Install the book's library (with its stored results) where it is missing."
TAG = "remove-cell"


def repository_url(config: Path = ROOT / "_config.yml") -> str:
    """``repository.url`` of the book's ``_config.yml``."""
    return yaml.safe_load(config.read_text())["repository"]["url"]


def cell_source(url: str) -> str:
    """The source of the install cell for the repository ``url``."""
    return (
        f"{FIRST_LINE}\n"
        "try:\n"
        "    import lib.chapters  # noqa: F401\n"
        "except ModuleNotFoundError:  # e.g. on Colab\n"
        f'    %pip install -q "git+{url}"'
    )


def find_cell(nb) -> int | None:
    """Index of the notebook's install cell, or ``None``."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.source.startswith(FIRST_LINE):
            return i
    return None


def update(path: Path, url: str, check: bool = False) -> bool:
    """Insert or update the install cell of ``path``; return whether it was (or would be)
    changed."""
    nb = nbformat.read(path, as_version=4)
    i, source = find_cell(nb), cell_source(url)
    if i is not None and nb.cells[i].source == source:
        return False
    if check:
        return True
    if i is None:
        for cell in nb.cells:
            if cell.cell_type == "code" and cell.get("execution_count") is not None:
                cell.execution_count += 1
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": [TAG]})
        cell.execution_count = 1
        cell["id"] = "install-lib"
        nb.cells.insert(1, cell)  # after the title cell, before the first code cell
    else:
        nb.cells[i].source = source
    nbformat.write(nb, path)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--check", action="store_true", help="report, change nothing")
    args = parser.parse_args(argv)
    url = repository_url()
    paths = args.notebooks or sorted((ROOT / "book").glob("*.ipynb"))
    changed = [p for p in paths if update(p, url, check=args.check)]
    for p in changed:
        print(("needs the install cell of " if args.check else "updated ") + f"{url}: {p}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
