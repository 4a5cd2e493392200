"""Local Sphinx extension: author-year labels in the bibliography.

The chapters cite author-year (``bibtex_reference_style: author_year``), e.g.
"(Schynol and Pesavento, 2026)", "(Pellaco et al., 2020)". pybtex's ``plain`` style numbers
the entries of the bibliography page instead ([1], [2], ...), so a reader cannot find a
citation's entry by its text. This registers the formatting style ``author_year_plain``:
``plain`` (entries, sorting by author, year and title) with a label made of the same words as
the parenthetical citation: one author "Costa, 1983", two "Schubert and Boche, 2004",
three or more "Pellaco et al., 2020".
"""

from __future__ import annotations

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def _surname(person) -> str:
    parts = person.rich_prelast_names + person.rich_last_names
    return Text(*[p for part in parts for p in (part, " ")][:-1]).render_as("text")


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            persons = entry.persons.get("author") or entry.persons.get("editor") or []
            names = [_surname(p) for p in persons]
            if not names:
                who = Text.from_latex(entry.fields.get("title", entry.key)).render_as("text")
            elif len(names) == 1:
                who = names[0]
            elif len(names) == 2:
                who = f"{names[0]} and {names[1]}"
            else:
                who = f"{names[0]} et al."
            yield f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearPlainStyle(PlainStyle):
    default_label_style = AuthorYearLabelStyle


def setup(app):
    register_plugin("pybtex.style.labels", "author_year", AuthorYearLabelStyle)
    register_plugin("pybtex.style.formatting", "author_year_plain", AuthorYearPlainStyle)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
