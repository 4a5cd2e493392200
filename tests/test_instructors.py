"""The instructors' page lists every exercise of the book once, with the right kind."""

import functools
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "instructors.md"
ROW = re.compile(
    r"^\| \{doc\}`(?P<chapter>[\w-]+)` \| \{ref\}`(?P<label>[\w-]+)` \| (?P<kind>\w+) \| "
    r"(?P<minutes>\d+) min \| (?P<use>\w+) \|$"
)
EXERCISE = re.compile(r"```\{exercise(?:-start)?\}[^\n]*\n:label: (?P<label>[\w-]+)")
KINDS, USES = {"conceptual", "derivation", "coding"}, {"class", "homework", "lab"}


@functools.cache
def _exercises() -> dict[str, tuple[str, bool]]:
    """label -> (chapter, whether its gated solution holds solution code)."""
    found = {}
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
        for m in EXERCISE.finditer(text):
            label = m["label"]
            start = re.search(r"\{solution-start\}\s*" + re.escape(label) + r"\b", text)
            coding = False
            if start:
                end = text.find("{solution-end}", start.end())
                coding = "### BEGIN SOLUTION" in text[start.end() : end]
            found[label] = (path.stem, coding)
    return found


def _rows() -> list[dict]:
    rows = [m.groupdict() for m in map(ROW.match, PAGE.read_text().splitlines()) if m]
    assert rows, "no exercise table found on the instructors' page"
    return rows


def test_every_exercise_is_listed_once():
    listed = [r["label"] for r in _rows()]
    book = _exercises()
    assert len(listed) == len(set(listed)), "an exercise is listed twice"
    assert not set(book) - set(listed), f"add to book/instructors.md: {set(book) - set(listed)}"
    assert not set(listed) - set(book), f"not an exercise of the book: {set(listed) - set(book)}"


@pytest.mark.parametrize("row", _rows(), ids=lambda r: r["label"])
def test_row_agrees_with_the_chapter(row):
    chapter, coding = _exercises()[row["label"]]
    assert row["chapter"] == chapter
    assert row["kind"] in KINDS and row["use"] in USES
    assert (row["kind"] == "coding") == coding, "kind 'coding' iff the solution has code markers"
    assert 5 <= int(row["minutes"]) <= 90
