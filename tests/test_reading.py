"""What a reader sees: checks folded away, prose addressed to readers, cells that fit the page.

The chapters keep every check (``assert`` lines, ``# NBVAL_CHECK_OUTPUT`` cells) but a reader
should see results, not test code: check cells are tagged ``hide-input`` (the reader can open
them) or ``remove-input``. The prose speaks to readers: none of the words of the book's
production. Each chapter opens with a prerequisites line, code lines fit the page (88
characters) and cells stay short.
"""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
HIDDEN = {"hide-input", "remove-input", "hide-cell", "remove-cell"}
MAX_LINE = 88
MAX_CELL_LINES = 30
#: Words of the book's production that must not reach a reader (case-insensitive).
INTERNAL = [
    r"\bnbval\b",
    r"NBVAL",
    r"\bthe seed\b",
    r"\bissue'?s?\b",
    r"\bour copy\b",
    r"\breviewer",
    r"\bthe lead\b",
    r"\bhelper\b",
]


def _cells(path):
    """``(index, cell, in_solution)`` for every cell; ``in_solution`` inside a gated solution."""
    nb = nbformat.read(path, as_version=4)
    inside = False
    for i, cell in enumerate(nb.cells):
        src = cell.source
        if cell.cell_type == "markdown" and "{solution-start}" in src:
            inside = True
        yield i, cell, inside or "### BEGIN SOLUTION" in src
        if cell.cell_type == "markdown" and "{solution-end}" in src:
            inside = False


def _is_check(src: str) -> bool:
    first = src.lstrip().splitlines()[0] if src.strip() else ""
    return first.startswith("# NBVAL_CHECK_OUTPUT") or bool(re.search(r"^\s*assert\b", src, re.M))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_check_cells_are_folded_away(path):
    bad = [
        i
        for i, cell, in_solution in _cells(path)
        if cell.cell_type == "code"
        and not in_solution
        and _is_check(cell.source)
        and not HIDDEN & set(cell.metadata.get("tags", []))
    ]
    assert not bad, f"{path.name}: check cells {bad} are not tagged hide-input/remove-input"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_prose_speaks_to_readers(path):
    found = []
    for i, cell, _ in _cells(path):
        if cell.cell_type != "markdown":
            continue
        for pattern in INTERNAL:
            for m in re.finditer(pattern, cell.source, re.I):
                found.append((i, m.group(0)))
        for line in cell.source.splitlines():
            if re.match(r"#+\s.*\bFig(ure)?s?\.?\s*\d", line):
                found.append((i, line.strip()))
    assert not found, f"{path.name}: internal words or figure-number titles: {found}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_opens_with_prerequisites(path):
    head = "\n".join(c.source for _, c, _ in list(_cells(path))[:3] if c.cell_type == "markdown")
    assert re.search(r"\*\*Prerequisites[:.]?\*\*|^Prerequisites:", head, re.M), (
        f"{path.name}: no 'Prerequisites' line in the opening cells"
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_code_fits_the_page(path):
    long_lines, long_cells = [], []
    for i, cell, in_solution in _cells(path):
        if cell.cell_type != "code":
            continue
        lines = cell.source.splitlines()
        long_lines += [(i, len(line)) for line in lines if len(line) > MAX_LINE]
        if len(lines) > MAX_CELL_LINES and not in_solution:
            long_cells.append((i, len(lines)))
    assert not long_lines, f"{path.name}: code lines over {MAX_LINE} characters: {long_lines}"
    assert not long_cells, f"{path.name}: cells over {MAX_CELL_LINES} lines: {long_cells}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_learning_goals_box_looks_the_same_everywhere(path):
    opening = next(c for _, c, _ in _cells(path) if c.cell_type == "markdown").source
    box = "```{admonition} Learning goals\n:class: note\nAfter this chapter you can\n"
    assert box in opening, f"{path.name}: the learning goals are not the book's note box"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_figure_is_numbered_captioned_and_described(path):
    """Figure cells carry ``mystnb.figure`` (caption, ``fig-`` name) and ``mystnb.image.alt``.

    myst-nb then renders the output as a numbered figure with its caption; the text refers to
    it with ``{numref}`` and a screen reader reads the alternative text instead of a file path.
    """
    nb_text = "\n".join(c.source for _, c, _ in _cells(path) if c.cell_type == "markdown")
    bad = []
    for i, cell, _ in _cells(path):
        if cell.cell_type != "code":
            continue
        kinds = {"image/png", "image/svg+xml"}
        images = [o for o in cell.outputs if kinds & set(o.get("data", {}))]
        if not images:
            continue
        meta = cell.metadata.get("mystnb", {})
        fig, img = meta.get("figure", {}), meta.get("image", {})
        name = str(fig.get("name", ""))
        if len(images) != 1:
            bad.append((i, f"{len(images)} images in one cell"))
        if len(str(fig.get("caption", "")).split()) < 6:
            bad.append((i, "no caption of at least six words"))
        if not name.startswith("fig-"):
            bad.append((i, "no figure name fig-..."))
        elif f"{{numref}}`{name}`" not in nb_text and f"<{name}>`" not in nb_text:
            bad.append((i, f"{name} is not referenced from the text"))
        if len(str(img.get("alt", "")).split()) < 4:
            bad.append((i, "no alternative text"))
    assert not bad, f"{path.name}: {bad}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_legends_are_off_the_data(path):
    """Legends go outside the axes: ``lib.core.legend_outside`` or an explicit
    ``bbox_to_anchor``; a figure-level ``fig.legend`` (placed in reserved space) is allowed."""
    inside = []
    for i, cell, _ in _cells(path):
        if cell.cell_type != "code":
            continue
        for m in re.finditer(r"(\w+)\.legend\(([^)]*)\)", cell.source):
            if m.group(1) != "fig" and "bbox_to_anchor" not in m.group(2):
                inside.append((i, m.group(0)))
    assert not inside, f"{path.name}: legends inside the axes: {inside}"
