"""The book build fails on a notebook whose stored output is an error.

The book renders stored outputs without executing, so a failing cell must be
caught by the local Sphinx extension ``book/_ext/book_checks.py``; this test
builds a two-page book around a failing and a passing notebook.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
JB = Path(sys.executable).parent / "jupyter-book"


def _book(tmp_path: Path, error: bool) -> Path:
    (tmp_path / "_ext").mkdir()
    shutil.copy(ROOT / "book" / "_ext" / "book_checks.py", tmp_path / "_ext")
    (tmp_path / "_config.yml").write_text(
        "title: t\nonly_build_toc_files: true\nexecute:\n  execute_notebooks: 'off'\n"
        "sphinx:\n  extra_extensions: [book_checks]\n  local_extensions:\n    book_checks: _ext\n"
    )
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: index\nchapters:\n  - file: nb\n")
    (tmp_path / "index.md").write_text("# Index\n")
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1 / 0" if error else "1 + 1", execution_count=1)
    if error:
        cell.outputs = [
            nbformat.v4.new_output(
                "error", ename="ZeroDivisionError", evalue="division by zero", traceback=[]
            )
        ]
    else:
        cell.outputs = [
            nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=1)
        ]
    nb.cells = [nbformat.v4.new_markdown_cell("# A chapter"), cell]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, tmp_path / "nb.ipynb")
    return tmp_path


@pytest.mark.parametrize("error", [False, True])
def test_stored_error_output_fails_the_build(tmp_path, error):
    book = _book(tmp_path, error)
    run = subprocess.run(
        [str(JB), "build", str(book), "-W", "-n", "--keep-going"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = run.stdout + run.stderr
    if error:
        assert run.returncode != 0
        assert "stored output of code cell 1 is an error (ZeroDivisionError" in log
    else:
        assert run.returncode == 0, log[-2000:]
