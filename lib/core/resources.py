"""Where the book's stored results live, found the same way from a clone, an installed package,
the student folder, Binder or Colab.

The trained networks and measured sweeps that the chapters load (``results/<name>/`` of the
repository: weights, ``results.json``, the README with the command that produced them) are
looked up by :func:`~lib.core.results_dir` in this order:

1. the folder named by the environment variable ``BOOK_RESULTS_DIR`` (its subfolder
   ``<name>``), read when :func:`~lib.core.results_dir` is called;
2. ``results/`` of the repository that ``lib`` was imported from (a clone, an editable install,
   a notebook run from ``book/`` or from the student folder ``_build/student/``);
3. ``lib/_results/`` inside an installed package: ``pip install "git+<repository URL>"`` (the
   Colab route) builds a wheel that carries a copy of ``results/`` there (``setup.py``).

So a notebook never builds a path like ``Path("..") / "results"`` itself: it calls a ``lib``
loader (``lib.chapters.stored_results()``, ...), which calls :func:`~lib.core.results_dir`.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["RESULTS_ENV", "results_dir", "results_search_path"]

#: Environment variable naming a folder that holds the stored results (``<folder>/<name>/``).
RESULTS_ENV = "BOOK_RESULTS_DIR"

_PACKAGE = Path(__file__).resolve().parents[1]  # .../lib


def results_search_path() -> list[Path]:
    """The folders searched for ``<name>/``, in order (see the module docstring)."""
    places = []
    env = os.environ.get(RESULTS_ENV)
    if env:
        places.append(Path(env).expanduser())
    places.append(_PACKAGE.parent / "results")
    places.append(_PACKAGE / "_results")
    return places


def results_dir(name: str, *, must_exist: bool = False) -> Path:
    """The folder of the stored results ``name`` (e.g. ``"unrolled_sparse"``).

    Parameters
    ----------
    name
        A subfolder of the repository's ``results/``: one name, no path separators.
    must_exist
        If ``True``, raise ``FileNotFoundError`` (listing the places searched and how to get the
        files) when no place holds ``name``; if ``False``, return the repository's
        ``results/<name>`` then, the folder a training script writes to.

    Returns
    -------
    pathlib.Path
        The first ``<place>/<name>`` of :func:`~lib.core.results_search_path` that is a folder.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not name or name in {".", ".."} or "/" in name or "\\" in name:
        raise ValueError(f"name must be one folder name such as 'unrolled_sparse', got {name!r}")
    places = results_search_path()
    for place in places:
        if (place / name).is_dir():
            return place / name
    if must_exist:
        tried = ", ".join(str(p / name) for p in places)
        raise FileNotFoundError(
            f"the stored results {name!r} were not found (searched: {tried}). Install the "
            'book\'s library with its data (`pip install "git+<repository URL>"`), run from a '
            f"clone of the repository, or set {RESULTS_ENV} to a folder that holds {name}/"
        )
    return _PACKAGE.parent / "results" / name
