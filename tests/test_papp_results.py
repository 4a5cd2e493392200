"""The stored PaPP results (results/papp): format of summary.json, the stored models
re-evaluated on fresh samples, and the chapter's printed table against the file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
import torch

from lib.chapters import PaPPSetup, build_papp_model
from lib.core import set_threads
from lib.learn import LearnedPrecoder
from lib.phy import load_site
from lib.precoding import sum_rate

set_threads(1)
ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "results" / "papp"
SUMMARY = json.loads((RES / "summary.json").read_text())
TRAIN = json.loads((RES / "train.json").read_text())["models"]
ISSUE_METHODS = ("PaPP-student", "PaPP-teacher", "PaPP-HBF", "DeepAll", "MAML", "WMMSE", "ZF",
                 "RZF", "MRT", "DPC")  # fmt: skip


def test_summary_has_every_method_site_and_snr():
    setup = PaPPSetup()
    assert set(SUMMARY["table"]) == set(setup.test_sites)
    for site, rows in SUMMARY["table"].items():
        assert {float(s) for s in rows} == set(SUMMARY["setup"]["snr_db"])
        for row in rows.values():
            for m in ISSUE_METHODS:
                assert row[m]["mean"] > 0 and row[m]["se"] >= 0, (site, m)
                assert row[m]["mean"] <= row["DPC"]["mean"] + 1e-6, (site, m)
            for m in ("PaPP-student", "DeepAll", "MAML"):
                assert row[m]["seeds"] == 3
    assert SUMMARY["seeds"] == [0, 1, 2]
    assert {float(b) for b in SUMMARY["csi_error"]} >= {0.0, 0.3, 0.6}
    for m in ISSUE_METHODS:
        if m != "DPC":
            assert SUMMARY["flops_table"][m]["mean"] > 0
    few = SUMMARY["few_shot"]
    assert set(few["fraction_of_full"]) == {"10", "20", "40", "100", "400", "all"}


@pytest.mark.parametrize("name", sorted(TRAIN))
def test_stored_models_load_with_weights_only(name):
    net = build_papp_model(TRAIN[name])
    net.load_state_dict(torch.load(RES / f"{name}.pt", weights_only=True))
    frozen = RES / f"{name}-frozen-teacher.pt"
    if name in ("PaPP", "PaPP-seed1", "PaPP-seed2"):
        net.load_state_dict(torch.load(frozen, weights_only=True))


def test_stored_student_reproduces_its_rate_on_fresh_samples():
    """The seed-0 PaPP student on 200 fresh samples of a held-out site at 20 dB agrees with the
    stored mean to within four combined standard errors."""
    name = "munich-s2"
    net = build_papp_model(TRAIN["PaPP"]).double()
    net.load_state_dict(torch.load(RES / "PaPP.pt", weights_only=True))
    H, _ = load_site(name, dtype=torch.complex128).sample(
        200, 4, torch.Generator().manual_seed(999)
    )
    r = sum_rate(H, LearnedPrecoder(net)(H, 100.0, 1.0), 1.0)
    stored = SUMMARY["rates"][name]["20"]["PaPP"]
    se = (stored["se"] ** 2 + float(r.std() / 200**0.5) ** 2) ** 0.5
    assert abs(float(r.mean()) - stored["mean"]) < 4 * se


def test_chapter_table_agrees_with_the_summary():
    nb = nbformat.read(ROOT / "book" / "generalizable_precoding.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "T_METHODS = [" in c.source)
    text = "".join(o.get("text", "") for o in cell.outputs)
    sites = PaPPSetup().test_sites
    checked = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts or "±" not in line or parts[0] not in SUMMARY["table"][sites[0]]["20"]:
            continue
        means = [float(x) for x in re.findall(r"(-?\d+\.\d+) ±", line)]
        assert len(means) == len(sites), line
        for site, v in zip(sites, means, strict=True):
            assert abs(v - SUMMARY["table"][site]["20"][parts[0]]["mean"]) < 0.006, (site, line)
        checked += 1
    assert checked >= 10
