"""Every chapter opens with the cell that installs the book's library where it is missing
(Colab), naming the repository of ``_config.yml`` (``scripts/install_cell.py`` writes it)."""

from pathlib import Path

import nbformat
import pytest

from scripts import install_cell

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_installs_lib_from_the_configured_repository(path):
    nb = nbformat.read(path, as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    i = install_cell.find_cell(nb)
    assert i is not None and i == code[0], (
        f"{path.name}: run `python scripts/install_cell.py` to add the install cell"
    )
    cell = nb.cells[i]
    url = install_cell.repository_url()
    assert cell.source == install_cell.cell_source(url), (
        f"{path.name}: the install cell does not name {url}; run `python scripts/install_cell.py`"
    )
    assert install_cell.TAG in cell.metadata.get("tags", [])
    assert not cell.get("outputs"), "with lib installed the cell prints nothing"


def test_check_mode_changes_nothing(tmp_path):
    src = NOTEBOOKS[0]
    nb = nbformat.read(src, as_version=4)
    del nb.cells[install_cell.find_cell(nb)]
    copy = tmp_path / src.name
    nbformat.write(nb, copy)
    before = copy.read_bytes()
    assert install_cell.update(copy, "https://example.org/x", check=True)
    assert copy.read_bytes() == before
    assert install_cell.update(copy, "https://example.org/x")
    again = nbformat.read(copy, as_version=4)
    assert install_cell.find_cell(again) == 1
    assert 'git+https://example.org/x"' in again.cells[1].source
    assert not install_cell.update(copy, "https://example.org/x")
