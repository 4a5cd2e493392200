"""The student version of every chapter: no solution survives, and it runs up to its first stub.

``make student`` writes the copies to ``_build/student``; these tests export a
fresh copy into a temporary folder so that they check the current notebooks.

"Runs up to its first stub" is checked without executing each chapter a second
time (the test run executes every chapter once, with nbval):

* every code cell of the student copy *before* its first stub is identical to
  the corresponding code cell of the original notebook, which nbval executes
  in the same test run, in the same order and in one kernel, so the student
  copy reaches its first stub exactly as the original reaches that cell;
* the stub cell itself is valid Python whose solution body is the
  ``raise NotImplementedError`` line, so executing it stops there.

``BOOK_STUDENT_EXECUTE=1`` (``make student-run``) additionally executes each
student notebook for real up to its first stub and checks that this cell, and
no earlier one, raises ``NotImplementedError``; it doubles the time spent in
notebooks, so CI leaves it off.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import nbformat
import pytest

from scripts.make_student import BEGIN, END, STUB, export

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
LEAKS = (BEGIN, END, "{solution}", "{solution-start}", "{solution-end}")
EXECUTE = os.environ.get("BOOK_STUDENT_EXECUTE") == "1"


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    export(NOTEBOOKS, out)
    return out


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _first_stub(cells) -> int | None:
    return next((i for i, c in enumerate(cells) if STUB in c.source), None)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_solution_survives(student_dir, path):
    text = (student_dir / path.name).read_text()
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} left in the student copy of {path.name}"
    student = nbformat.read(student_dir / path.name, as_version=4)
    assert all(not c.get("outputs") for c in _code_cells(student)), "outputs left"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_copy_reaches_its_first_stub(student_dir, path):
    original = _code_cells(nbformat.read(path, as_version=4))
    student = _code_cells(nbformat.read(student_dir / path.name, as_version=4))
    assert len(student) == len(original), "the export must keep every code cell"
    stop = _first_stub(student)
    assert stop is not None, f"{path.name} has no coding exercise (no solution markers)"
    for i in range(stop):
        assert student[i].source == original[i].source, f"code cell {i} differs before the stub"
        assert original[i].get("outputs") is not None
    assert BEGIN in original[stop].source
    tree = ast.parse(student[stop].source)  # valid Python
    raises = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Raise) and "NotImplementedError" in ast.unparse(n)
    ]
    assert raises, "the stub cell does not raise NotImplementedError"


@pytest.mark.skipif(not EXECUTE, reason="set BOOK_STUDENT_EXECUTE=1 (make student-run)")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_notebook_executes_until_first_stub(student_dir, path):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(student_dir / path.name, as_version=4)
    stop = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and STUB in c.source)
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "book")}}
    )
    with client.setup_kernel():
        for index in range(stop):
            client.execute_cell(nb.cells[index], index)
        with pytest.raises(CellExecutionError) as info:
            client.execute_cell(nb.cells[stop], stop)
    assert "NotImplementedError" in str(info.value)
