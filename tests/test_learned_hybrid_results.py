"""The stored results of the learned hybrid chapter (results/learned_hybrid): their format, the
table that the chapter prints (it must agree with summary.json), and the stored U-G-HBF-GCN
re-evaluated on fresh instances."""

from __future__ import annotations

import math
import re
from pathlib import Path

import nbformat
import pytest
import torch

from lib import chapters
from lib.core import set_threads
from lib.learn import count_parameters

set_threads(1)

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "book" / "learned_hybrid_outage.ipynb"
METHODS = ["G-HBF-perf", "G-HBF-marg", "U-G-HBF-FCN", "U-G-HBF-GCN", "U-G-HBF-GCN-quantile",
           "U-FDBF-GCN"]  # fmt: skip
LEARNED = [m for m in METHODS if m.startswith("U-")]
ROW = re.compile(
    r"^(?P<group>pilot [\d.-]+ dB)\s+(?P<method>\S+)\s+(?:(?P<outage>[\d.]+)\s+(?P<se>[\d.]+)\s+"
    r"(?P<power>-?[\d.]+)|(?P<none>no margin meets the nominal outage))$"
)


@pytest.fixture(scope="module")
def summary():
    return chapters.learned_hybrid_results()


def test_format(summary):
    assert summary["nominal_outage"] == 0.1
    groups = summary["groups"]
    assert list(groups) == ["pilot 5 dB", "pilot 10 dB", "pilot 20 dB", "pilot 5-20 dB"]
    for gname, methods in groups.items():
        assert set(METHODS) <= set(methods), gname
        for m in METHODS:
            r = methods[m]
            if r is None:  # only G-HBF-marg may find no margin that meets rho
                assert m == "G-HBF-marg" and summary["margin_search"][gname]["margin_db"] is None
                continue
            assert 0 <= r["outage"] <= 1 and 0 <= r["outage_se"] < 0.05
            assert -10 < r["power_db"] <= 20.0 + 1e-9
        assert methods["G-HBF-perf"]["outage"] == 0.0
    ig = summary["implicit_gradient"]
    assert ig["max_rel_diff_vs_cvxpylayers"] < 1e-4 and ig["speedup_vs_cvxpylayers"] > 1
    assert summary["setup"]["n_test_per_group"] >= 2000
    for m in LEARNED:
        rec = summary["models"][m]
        assert math.ceil(rec["train_steps"] / 25) == len(rec["train_curve"]["outage"])
        assert rec["best_step"] in rec["val_curve"]["step"]
        assert rec["command"].startswith("python scripts/train_learned_hybrid.py")


def test_stored_models_load_with_weights_only(summary):
    for m in LEARNED:
        model = chapters.stored_learned_hybrid(m)
        assert count_parameters(model) == summary["models"][m]["params"]
    with pytest.raises(ValueError, match="no stored model"):
        chapters.stored_learned_hybrid("U-G-HBF-MLP")


def _printed_table():
    nb = nbformat.read(CHAPTER, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "no margin meets the nominal outage" in cell.source:
            return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    raise AssertionError("the chapter has no printed result table")


def test_the_chapter_prints_the_stored_table(summary):
    rows = [m for m in map(ROW.match, _printed_table().splitlines()) if m]
    assert len(rows) == 4 * len(METHODS)
    for row in rows:
        stored = summary["groups"][row["group"]][row["method"]]
        if row["none"]:
            assert stored is None
            continue
        assert float(row["outage"]) == pytest.approx(stored["outage"], abs=5.01e-4)
        assert float(row["se"]) == pytest.approx(stored["outage_se"], abs=5.01e-4)
        assert float(row["power"]) == pytest.approx(stored["power_db"], abs=5.01e-3)


def test_stored_gcn_on_fresh_instances(summary):
    """The stored U-G-HBF-GCN on 48 new instances per group (a seed no stored set uses):
    its outage agrees with the stored test outage within three joint standard errors."""
    prob = chapters.LearnedHybridProblem()
    model = chapters.stored_learned_hybrid("U-G-HBF-GCN")
    gen = torch.Generator().manual_seed(777)
    fresh = [prob.draw(48, gen, 4, group=j) for j in range(len(prob.group_list))]
    designs = [chapters.learned_hybrid_design(model, prob, d) for d in fresh]
    table = chapters.group_outage_table(prob, fresh, designs)
    for gname, r in table.items():
        s = summary["groups"][gname]["U-G-HBF-GCN"]
        tol = 3 * math.hypot(r["outage_se"], s["outage_se"]) + 0.01
        assert abs(r["outage"] - s["outage"]) < tol, (gname, r, s)
        assert abs(r["power_db"] - s["power_db"]) < 1.5, (gname, r, s)
