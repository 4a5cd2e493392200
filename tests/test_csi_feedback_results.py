"""The stored CSI-feedback decoders and results (results/csi_feedback): format of
summary.json, the stored models re-evaluated on fresh channels, the chapter's printed table
against the file, the 38.901 images and the pipeline's input errors."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import nbformat
import pytest
import torch

from lib.chapters import (
    FEEDBACK_METHODS,
    FEEDBACK_SCENARIOS,
    CSFeedback,
    FeedbackSetup,
    evaluate_feedback,
    feedback_methods,
    feedback_nmse,
    feedback_scenario,
    feedback_training_record,
    stored_feedback_model,
    tr38901_feedback_images,
    unfolded_feedback_decoder,
)
from lib.core import set_threads
from lib.phy import feedback_nmse_db, from_angular_delay

set_threads(1)
ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "results" / "csi_feedback"
SUMMARY = json.loads((RES / "summary.json").read_text())


def test_summary_has_every_scenario_ratio_and_method():
    assert list(SUMMARY["scenarios"]) == list(FEEDBACK_SCENARIOS)  # in distribution first
    assert FEEDBACK_SCENARIOS[0] == "source"
    for sc, rows in SUMMARY["scenarios"].items():
        assert list(rows) == SUMMARY["ratios"]
        for r, res in rows.items():
            for key in ("nmse_db", "sum_rate"):
                assert set(res[key]) == set(FEEDBACK_METHODS) | {"limit"}, (sc, r, key)
            # no decoder of a T-tap image beats the truncation floor (eq. eq-fb-nmse)
            for m in FEEDBACK_METHODS:
                assert res["nmse_db"][m] > res["nmse_db"]["limit"], (sc, r, m)
                assert 0 < res["sum_rate"][m] < res["sum_rate"]["limit"] * 1.05, (sc, r, m)


@pytest.mark.parametrize("name", sorted(feedback_training_record(RES)))
def test_stored_models_load_with_weights_only(name):
    rec = feedback_training_record(RES)[name]
    kind = "CsiNet" if name.startswith("CsiNet") else "Unfolded"
    model = stored_feedback_model(kind, rec["ratio"], energy_weight=rec.get("energy_weight", 0))
    assert not model.training
    torch.load(RES / f"{name}.pt", weights_only=True)


def test_stored_decoders_reproduce_their_nmse_on_fresh_channels():
    """200 fresh in-distribution channels (another seed): every method's NMSE within 1 dB of
    the stored value of the 400 test channels, and the stored ordering CsiNet < unfolded <=
    AMP < Type-II holds."""
    ratio = SUMMARY["ratios"][0]
    stored = SUMMARY["scenarios"]["source"][ratio]["nmse_db"]
    data = feedback_scenario("source", 200, seed=7)
    res = evaluate_feedback(data, feedback_methods(float(Fraction(ratio))))["nmse_db"]
    for m in FEEDBACK_METHODS:
        assert abs(res[m] - stored[m]) < 1.0, (m, res[m], stored[m])
    assert res["CsiNet"] < res["Unfolded"] <= res["CS-AMP"] + 0.05 < res["TypeII"]


def test_chapter_table_agrees_with_the_summary():
    nb = nbformat.read(ROOT / "book" / "csi_feedback.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "COLS = " in c.source)
    text = "".join(o.get("text", "") for o in cell.outputs)
    cols = list(FEEDBACK_METHODS) + ["limit"]
    key, checked = None, 0
    for line in text.splitlines():
        parts = line.split()
        if line.startswith("NMSE"):
            key = "nmse_db"
        elif line.startswith("sum rate"):
            key = "sum_rate"
        elif parts and parts[0] in SUMMARY["scenarios"]:
            row = SUMMARY["scenarios"][parts[0]][parts[1]][key]
            for c, v in zip(cols, parts[2:], strict=True):
                assert abs(float(v) - row[c]) < 0.006, (parts[0], key, c, v, row[c])
                checked += 1
    n_rows = len(FEEDBACK_SCENARIOS) * len(SUMMARY["ratios"]) * 2
    assert checked == n_rows * len(cols)


def test_channel_and_image_nmse_agree():
    """eq. (eq-fb-nmse): the NMSE against H equals the image NMSE with the tail added."""
    s = FeedbackSetup()
    d = feedback_scenario("florence", 50, s, seed=3)
    X_hat = d["X"] + 0.05 * torch.randn(d["X"].shape, dtype=d["X"].dtype)
    H_hat = from_angular_delay(X_hat, s.n_h, s.n_v, s.n_subcarriers)
    assert abs(feedback_nmse(H_hat, d["H"]) - feedback_nmse_db(X_hat, d["X"], d["tail"])) < 1e-3


def test_tr38901_images_are_unit_energy_and_reproducible():
    s = FeedbackSetup()
    a = tr38901_feedback_images("uma", 20, s, seed=4, channels=True, snr_db=10.0)
    b = tr38901_feedback_images("uma", 20, s, seed=4)
    assert a["X"].shape == (20, s.M, s.n_taps) and a["H"].shape == (20, s.n_subcarriers, s.M)
    energy = a["X"].abs().pow(2).sum((1, 2)) + a["tail"]
    assert torch.allclose(energy, torch.ones(20), atol=1e-4)
    assert torch.equal(a["X"], b["X"]) and not torch.equal(a["X_obs"], a["X"])
    assert not torch.equal(a["H_obs"], a["H"])


def test_input_errors():
    with pytest.raises(ValueError, match="no stored CsiNet decoder for ratio 0.1"):
        stored_feedback_model("CsiNet", 0.1)
    with pytest.raises(ValueError, match="kind must be"):
        stored_feedback_model("LISTA", 0.25)
    with pytest.raises(ValueError, match="name must be one of"):
        feedback_scenario("tokyo", 10)
    with pytest.raises(ValueError, match="n must be <="):
        feedback_scenario("source", 10**6)
    with pytest.raises(ValueError, match="model must be one of"):
        tr38901_feedback_images("rma", 10)
    with pytest.raises(TypeError, match="fb must be a CSFeedback"):
        unfolded_feedback_decoder(FeedbackSetup(), 3, 0.1)
    with pytest.raises(ValueError, match="p must be"):
        unfolded_feedback_decoder(CSFeedback(0.25), 3, 1.5)
    with pytest.raises(ValueError, match="methods must be among"):
        feedback_methods(0.25, methods=("TypeII", "LASSO"))
