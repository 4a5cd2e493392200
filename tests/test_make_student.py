"""The student export removes every solution and keeps the scaffolding."""

import nbformat
import pytest

from scripts.make_student import ExportError, strip_directives, stub_code, student_notebook


def _nb(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def test_stub_keeps_indentation_and_surrounding_code():
    src = (
        "def f(t):\n    ### BEGIN SOLUTION\n    return t + 1\n    ### END SOLUTION\n\n"
        "assert f(1) == 2"
    )
    out, n = stub_code(src)
    assert n == 1
    assert "return t + 1" not in out
    assert '    raise NotImplementedError("Exercise' in out
    assert out.endswith("assert f(1) == 2")


@pytest.mark.parametrize(
    "src",
    [
        "### BEGIN SOLUTION\nx = 1",
        "x = 1\n### END SOLUTION",
        "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION",
    ],
)
def test_malformed_markers_are_rejected(src):
    with pytest.raises(ExportError):
        stub_code(src)


def test_solution_directives_removed_exercises_kept():
    md = (
        "```{exercise} Q\n:label: ex-a\n\nWhy?\n```\n\n"
        "```{solution} ex-a\n:class: dropdown\n\nBecause.\n```\n\n"
        "::::{solution} ex-a\nAlso colon fences.\n::::\nAfter."
    )
    out = strip_directives(md, {"solution"})
    assert "Because" not in out and "colon fences" not in out
    assert "{exercise}" in out and "Why?" in out and out.endswith("After.")


def test_gated_solution_markdown_removed_code_stubbed():
    nb = _nb(
        nbformat.v4.new_markdown_cell("```{exercise} Code it\n:label: ex-b\n\nWrite f.\n```"),
        nbformat.v4.new_markdown_cell("```{solution-start} ex-b\n:class: dropdown\n```"),
        nbformat.v4.new_markdown_cell("The trick is to add one."),
        nbformat.v4.new_code_cell(
            "def f(t):\n    ### BEGIN SOLUTION\n    return t + 1\n    ### END SOLUTION"
        ),
        nbformat.v4.new_markdown_cell("```{solution-end}\n```"),
        nbformat.v4.new_markdown_cell("Next section."),
    )
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", text="secret")]
    student, n = student_notebook(nb)
    text = nbformat.writes(student)
    assert n == 1
    for leaked in ("add one", "return t + 1", "solution-start", "solution-end", "secret"):
        assert leaked not in text
    assert "Write f." in text and "Next section." in text and "NotImplementedError" in text


def test_unclosed_gated_solution_is_rejected():
    nb = _nb(nbformat.v4.new_markdown_cell("```{solution-start} ex-c\n```"))
    with pytest.raises(ExportError):
        student_notebook(nb)


def test_end_and_next_start_in_one_cell():
    nb = _nb(
        nbformat.v4.new_markdown_cell("```{solution-start} ex-a\n```"),
        nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION"),
        nbformat.v4.new_markdown_cell(
            "```{solution-end}\n```\n\n```{exercise} B\n:label: ex-b\n\nDo B.\n```\n\n"
            "```{solution-start} ex-b\n```\nHidden hint."
        ),
        nbformat.v4.new_code_cell("### BEGIN SOLUTION\ny = 2\n### END SOLUTION"),
        nbformat.v4.new_markdown_cell("```{solution-end}\n```"),
    )
    student, n = student_notebook(nb)
    text = nbformat.writes(student)
    assert n == 2 and "Do B." in text and "Hidden hint" not in text


def test_cells_without_solutions_are_unchanged():
    for src in ("x = 1\n", "x = 1\n\n\n", "", "y = 2"):
        assert stub_code(src) == (src, 0)
    out, n = stub_code("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n")
    assert n == 1 and out.endswith("\n")
