"""Every chapter notebook has the parts the book promises its readers and instructors.

Learning goals, theory boxes with labelled equations, citations, a common
mistake, a key takeaway, at least five exercises each with a folded solution,
at least one coding exercise with solution markers, fixed seeds, and stored
outputs free of errors.
"""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
EXERCISE = re.compile(r"^[`:]{3,}\s*\{exercise\}[^\n]*\n:label:\s*(\S+)", re.M)
SOLUTION = re.compile(r"^[`:]{3,}\s*\{solution(?:-start)?\}\s*(\S+)", re.M)


def _text(nb, kind):
    return "\n".join(c.source for c in nb.cells if c.cell_type == kind)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_has_its_parts(path):
    nb = nbformat.read(path, as_version=4)
    md, code = _text(nb, "markdown"), _text(nb, "code")
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    for part in ("Learning goals", "Common mistake", "Key takeaway"):
        assert part in md, f"{path.name}: no '{part}'"
    assert re.search(r"\{prf:(definition|theorem|algorithm)\}", md), "no prf box"
    assert re.search(r"\$\$\s*\(eq-[\w-]+\)", md), "no labelled equation"
    assert "{cite}" in md, "no citation"
    exercises = EXERCISE.findall(md)
    solutions = set(SOLUTION.findall(md))
    assert len(exercises) >= 5, f"{path.name}: {len(exercises)} exercises, need 5"
    missing = [e for e in exercises if e not in solutions]
    assert not missing, f"{path.name}: exercises without a solution: {missing}"
    assert "### BEGIN SOLUTION" in code, "no coding exercise with solution markers"
    assert "set_seed(" in code, "seeds are not fixed"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_stored_outputs_are_complete(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        assert cell.execution_count is not None, f"code cell {i} not executed (make refresh)"
        assert all(o.output_type != "error" for o in cell.outputs), f"code cell {i} failed"
