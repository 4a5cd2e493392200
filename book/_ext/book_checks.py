"""Local Sphinx extension: checks that keep the rendered book honest.

The book renders the outputs stored in each notebook (they were produced and
verified by nbval in the test run). A stored error output means a cell failed
when the notebook was last refreshed; this extension reports it as a Sphinx
warning, so ``jupyter-book build -W`` fails on a failing cell even though the
build itself does not execute the notebooks.
"""

from __future__ import annotations

import json

from sphinx.util import logging

logger = logging.getLogger(__name__)


def _check_notebook_errors(app, docname, source):
    path = app.env.doc2path(docname)
    if not str(path).endswith(".ipynb"):
        return
    try:
        nb = json.loads(source[0])
    except (ValueError, IndexError):
        return
    for index, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                logger.warning(
                    "stored output of code cell %d is an error (%s: %s); "
                    "re-run `make refresh` after fixing it",
                    index,
                    out.get("ename"),
                    out.get("evalue"),
                    location=docname,
                )
        if cell.get("source") and cell.get("execution_count") is None and not cell.get("outputs"):
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            if src.strip() and "remove-cell" not in cell.get("metadata", {}).get("tags", []):
                logger.warning(
                    "code cell %d was never executed; run `make refresh`", index, location=docname
                )


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    """Drop repeated ``<script>`` entries (sphinx-thebe 0.3 registers its inline
    configuration twice, which redeclares a ``const`` and logs a console error)."""
    files = context.get("script_files")
    if not files:
        return
    seen, unique = set(), []
    for js in files:
        key = (
            getattr(js, "filename", None) or "",
            repr(sorted(getattr(js, "attributes", {}).items())),
        )
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"][:] = unique


def setup(app):
    app.connect("source-read", _check_notebook_errors)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
