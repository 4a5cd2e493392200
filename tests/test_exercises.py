"""Coding exercises that a student can do from the student copy of a chapter.

``scripts/make_student.py`` replaces the code between ``### BEGIN SOLUTION`` and
``### END SOLUTION`` by ``raise NotImplementedError``; what is left must still tell the
student what to do and whether they did it:

* every code cell with a solution block keeps a ``# Hint`` comment outside the markers
  (where to start: the building blocks, the equation, the shapes);
* the cell, or the next code cell of the same solution, keeps a check (an ``assert``)
  outside the markers, so the student's code is checked once it replaces the stub;
* every exercise marked *(Coding.)* has solution code between markers in its gated
  solution (``{solution-start}`` ... ``{solution-end}``).

The checks themselves should compare with stored values or properties, not only with
the library function that the exercise asks the student to write: that is for review,
not for a test to see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

from scripts.make_student import BEGIN, stub_code

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
_EVENT = re.compile(
    r"^(?P<fence>[`:]{3,})\s*\{(?P<kind>exercise|solution-start|solution-end)\}"
    r"(?P<rest>[^\n]*)\n?",
    re.M,
)
_LABEL = re.compile(r"^:label:\s*(\S+)", re.M)
_CODING = re.compile(r"\(coding\.?\)", re.I)
_HINT = re.compile(r"^\s*#\s*Hint\b", re.M | re.I)
_ASSERT = re.compile(r"^\s*assert\b", re.M)


@dataclass
class Exercise:
    label: str
    text: str
    gated_cells: list = field(default_factory=list)  # code cells of its gated solution


@dataclass
class SolutionCell:
    index: int
    source: str
    exercise: str  # label of the gated solution, else of the last exercise above
    group: tuple  # code cells of the same solution share a group


def _directive_body(source: str, start: int, fence: str) -> str:
    """Text of the directive opened just before ``start``, up to its closing fence."""
    lines = source[start:].splitlines()
    for j, line in enumerate(lines):
        s = line.strip()
        if s and set(s) == {fence[0]} and len(s) >= len(fence):
            return "\n".join(lines[:j])
    return "\n".join(lines)


def _parse(path: Path) -> tuple[dict[str, Exercise], list[SolutionCell], list]:
    """The chapter's exercises, its code cells with solution markers, and all code cells."""
    nb = nbformat.read(path, as_version=4)
    exercises: dict[str, Exercise] = {}
    solution_cells: list[SolutionCell] = []
    code_cells = []  # (index, source, group)
    gated, gated_at, last, run = None, None, "(before any exercise)", 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            run += 1  # a markdown cell ends a run of consecutive code cells
            for m in _EVENT.finditer(cell.source):
                kind, rest = m.group("kind"), m.group("rest").strip()
                if kind == "exercise":
                    body = _directive_body(cell.source, m.end(), m.group("fence"))
                    found = _LABEL.search(body)
                    label = found.group(1) if found else f"(unlabelled, cell {i})"
                    exercises[label] = Exercise(label, rest + "\n" + body)
                    last = label
                elif kind == "solution-start":
                    gated = rest.split()[0] if rest else "(unlabelled)"
                    gated_at, last = i, gated
                else:
                    gated = None
            continue
        if cell.cell_type != "code":
            continue
        group = ("gated", gated_at) if gated else ("run", run)
        code_cells.append((i, cell.source, group))
        if gated and gated in exercises:
            exercises[gated].gated_cells.append(cell.source)
        if BEGIN in cell.source:
            solution_cells.append(SolutionCell(i, cell.source, gated or last, group))
    return exercises, solution_cells, code_cells


def _outside_markers(source: str) -> str:
    """The cell as the student copy has it: the solution blocks replaced by the stub."""
    return stub_code(source)[0]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_solution_cells_keep_a_hint(path):
    _, cells, _ = _parse(path)
    bad = [
        f"exercise {c.exercise} (code cell {c.index})"
        for c in cells
        if not _HINT.search(_outside_markers(c.source))
    ]
    assert not bad, (
        f"{path.name}: no '# Hint: ...' comment outside the solution markers (the "
        f"student copy keeps only what is outside them) in: {', '.join(bad)}"
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_solution_cells_keep_a_check(path):
    _, cells, code = _parse(path)
    position = {i: k for k, (i, _, _) in enumerate(code)}
    bad = []
    for c in cells:
        candidates = [c.source]
        k = position[c.index] + 1
        if k < len(code) and code[k][2] == c.group:  # the next code cell, same solution
            candidates.append(code[k][1])
        if not any(_ASSERT.search(_outside_markers(s)) for s in candidates):
            bad.append(f"exercise {c.exercise} (code cell {c.index})")
    assert not bad, (
        f"{path.name}: no check ('assert') outside the solution markers, in the cell or "
        f"in the next code cell of its solution, for: {', '.join(bad)}"
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_coding_exercises_have_solution_code(path):
    exercises, _, _ = _parse(path)
    bad = [
        label
        for label, ex in exercises.items()
        if _CODING.search(ex.text) and not any(BEGIN in s for s in ex.gated_cells)
    ]
    assert not bad, (
        f"{path.name}: exercises marked (Coding.) without solution code between "
        f"'{BEGIN}' markers in a gated solution ({{solution-start}} ... "
        f"{{solution-end}}): {', '.join(bad)}"
    )


def test_the_parser_sees_the_exercises():
    """Guard against a parser that silently finds nothing."""
    found = {p.name: _parse(p) for p in CHAPTERS}
    assert sum(len(ex) for ex, _, _ in found.values()) >= 5 * len(CHAPTERS)
    assert all(cells for _, cells, _ in found.values()), "a chapter without solution code"


# --------------------------------------------------------------------------- #
# Each exercise runs on its own
# --------------------------------------------------------------------------- #
def _names(source: str) -> tuple[set[str], set[str]]:
    """(names a code cell defines, names it reads), IPython magics read as ``pass``."""
    import ast

    code = "\n".join(
        line[: len(line) - len(line.lstrip())] + "pass"
        if line.lstrip().startswith(("%", "!"))
        else line
        for line in source.splitlines()
    )
    tree = ast.parse(code)
    defined, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (defined if isinstance(node.ctx, (ast.Store, ast.Del)) else read).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            defined.add(node.name)
    return defined, read


def _exercise_groups(path: Path) -> tuple[set[str], dict[str, list[str]]]:
    """Names defined by the chapter's cells before its first exercise, and the code of the
    cells that follow each exercise statement (its solution, checks and answer cells)."""
    nb = nbformat.read(path, as_version=4)
    main, groups, current = set(), {}, None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            labels = [
                _LABEL.search(cell.source[m.end() :])
                for m in _EVENT.finditer(cell.source)
                if m["kind"] == "exercise"
            ]
            labels = [m.group(1) for m in labels if m]
            if labels:
                current = labels[-1]
                groups.setdefault(current, [])
        elif cell.cell_type == "code":
            if current is None:
                main |= _names(cell.source)[0]
            else:
                groups[current].append(cell.source)
    return main, groups


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_each_exercise_runs_on_its_own(path):
    """No exercise reads a name that only another exercise's cells define: in the student
    copy an unsolved exercise stops at its stub, so its names may never exist."""
    import builtins

    main, groups = _exercise_groups(path)
    defined = {label: set() for label in groups}
    for label, sources in groups.items():
        for s in sources:
            defined[label] |= _names(s)[0]
    problems = []
    for label, sources in groups.items():
        read = set().union(*(_names(s)[1] for s in sources)) if sources else set()
        free = read - defined[label] - main - set(dir(builtins))
        for other, names in defined.items():
            if other != label and free & names:
                problems.append(f"{label} reads {sorted(free & names)} defined by {other}")
    assert not problems, f"{path.name}: " + "; ".join(problems)
