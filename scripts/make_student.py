"""Write the student version of every chapter notebook.

Usage::

    python scripts/make_student.py [--out _build/student] [book/x.ipynb ...]

In the student copy

* code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (nbgrader-style
  markers) is replaced by ``raise NotImplementedError(...)`` at the marker's
  indentation;
* written solutions are removed: ``{solution}`` directives, and the markdown
  between ``{solution-start}`` and ``{solution-end}`` (the code cells inside a
  gated solution stay, stubbed, since they hold the exercise's scaffold and checks);
* all outputs are cleared.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = 'raise NotImplementedError("Exercise: replace this line with your solution")'
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|:{3,})\s*\{(?P<name>[\w:-]+)\}")


class ExportError(ValueError):
    """A notebook's solution markers are malformed."""


def stub_code(source: str, where: str = "") -> tuple[str, int]:
    """Replace each marked solution block of a code cell; return the new source and the count."""
    if BEGIN not in source and END not in source:
        return source, 0  # cells without a solution are left byte for byte
    out, inside, count = [], False, 0
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ExportError(f"{where}: nested '{BEGIN}'")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + STUB)
            count += 1
        elif stripped == END:
            if not inside:
                raise ExportError(f"{where}: '{END}' without '{BEGIN}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ExportError(f"{where}: '{BEGIN}' without '{END}'")
    trailing = "\n" if source.endswith("\n") else ""
    return "\n".join(out) + trailing, count


def _block_end(lines: list[str], i: int, fence: str) -> int:
    """Index of the line closing the directive opened at line ``i`` with ``fence``."""
    j = i + 1
    while j < len(lines):
        s = lines[j].strip()
        if s and set(s) == {fence[0]} and len(s) >= len(fence):
            return j
        j += 1
    return len(lines) - 1


def strip_directives(source: str, names: set[str]) -> str:
    """Remove MyST directive blocks (backtick or colon fences) whose name is in ``names``."""
    lines, out, i = source.splitlines(), [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m and m.group("name") in names:
            i = _block_end(lines, i, m.group("fence")) + 1
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out).strip("\n")


def student_markdown(source: str, gated: bool, where: str = "") -> tuple[str, bool]:
    """Remove written solutions from one markdown cell.

    ``gated`` says whether the cell starts inside a gated solution
    (``{solution-start}`` ... ``{solution-end}``, which may span cells); the
    returned flag says whether it ends inside one.
    """
    lines, out, i = source.splitlines(), [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        name = m.group("name") if m else None
        if name in {"solution", "solution-start", "solution-end"}:
            if name == "solution-start":
                if gated:
                    raise ExportError(f"{where}: nested solution-start")
                gated = True
            elif name == "solution-end":
                if not gated:
                    raise ExportError(f"{where}: solution-end without solution-start")
                gated = False
            i = _block_end(lines, i, m.group("fence")) + 1
            continue
        if not gated:
            out.append(lines[i])
        i += 1
    return "\n".join(out).strip("\n"), gated


def student_notebook(
    nb: nbformat.NotebookNode, where: str = ""
) -> tuple[nbformat.NotebookNode, int]:
    """Return the student version of a notebook and the number of stubbed solutions."""
    cells, gated, stubs = [], False, 0
    for index, cell in enumerate(nb.cells):
        cell = nbformat.from_dict(cell)
        if cell.cell_type == "markdown":
            src, gated = student_markdown(cell.source, gated, f"{where} cell {index}")
            if not src.strip():
                continue
            cell.source = src
        elif cell.cell_type == "code":
            cell.source, n = stub_code(cell.source, f"{where} cell {index}")
            stubs += n
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
        cells.append(cell)
    if gated:
        raise ExportError(f"{where}: solution-start without solution-end")
    out = nbformat.from_dict(nb)
    out.cells = cells
    out.metadata.pop("widgets", None)
    return out, stubs


def export(paths: list[Path], out_dir: Path) -> dict[str, int]:
    """Write the student copies of ``paths`` into ``out_dir``; return stubs per notebook."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        student, n = student_notebook(nb, str(path))
        nbformat.write(student, out_dir / path.name)
        counts[path.name] = n
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "student")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "book").glob("*.ipynb"))
    counts = export(paths, args.out)
    for name, n in counts.items():
        print(f"{name}: {n} solution(s) stubbed")
    print(f"student notebooks written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
