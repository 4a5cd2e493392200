"""Packaging hook: a wheel of ``lib`` carries the book's stored results.

Everything else is in ``pyproject.toml``. ``pip install "git+<repository URL>"`` (the Colab
route) and ``pip install .`` build a wheel; this hook copies the repository's ``results/`` into
the wheel as ``lib/_results/``, where :func:`lib.core.results_dir` finds it. An editable install
(``pip install -e .``, what ``make setup`` does) reads ``results/`` of the clone and copies
nothing.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SKIP = shutil.ignore_patterns("*.lock", "__pycache__", ".*")


class BuildPyWithResults(build_py):
    """``build_py`` that also copies ``results/`` to ``<build_lib>/lib/_results``."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False) or not (ROOT / "results").is_dir():
            return
        target = Path(self.build_lib) / "lib" / "_results"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(ROOT / "results", target, ignore=SKIP)


setup(cmdclass={"build_py": BuildPyWithResults})
