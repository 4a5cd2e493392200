"""The student version of every chapter: no solution survives, and it runs up to its first stub.

``make student`` writes the copies to ``_build/student``; this test exports a
fresh copy into a temporary folder so that it checks the current notebooks.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from scripts.make_student import BEGIN, END, export

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
LEAKS = (BEGIN, END, "{solution}", "{solution-start}", "{solution-end}")


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    export(NOTEBOOKS, out)
    return out


def _stub_index(nb) -> int | None:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "raise NotImplementedError(\"Exercise" in cell.source:
            return i
    return None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_solution_survives(student_dir, path):
    text = (student_dir / path.name).read_text()
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} left in the student copy of {path.name}"
    original = nbformat.read(path, as_version=4)
    if any(BEGIN in c.source for c in original.cells if c.cell_type == "code"):
        assert _stub_index(nbformat.read(student_dir / path.name, as_version=4)) is not None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_runs_until_first_stub(student_dir, path):
    nb = nbformat.read(student_dir / path.name, as_version=4)
    stop = _stub_index(nb)
    assert stop is not None, f"{path.name} has no coding exercise (no solution markers)"
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "book")}}
    )
    with client.setup_kernel():
        for index in range(stop):
            client.execute_cell(nb.cells[index], index)
        with pytest.raises(CellExecutionError) as info:
            client.execute_cell(nb.cells[stop], stop)
    assert "NotImplementedError" in str(info.value)
