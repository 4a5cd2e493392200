"""The stored large-sample evaluation of the outage chapter (results/hybrid_outage)."""

import math
import re
import warnings

import pytest
import torch

from lib.chapters import hybrid as pipeline
from lib.core import results_dir
from lib.precoding import empirical_outage

METHODS = ("naive", "ghbf_perf", "ghbf_marg", "diag_loading")


@pytest.fixture(scope="module")
def stored():
    return pipeline.outage_results()


def test_structure(stored):
    assert stored["setup"] == {**pipeline.OUTAGE_CHAPTER, "codewords": 32}
    assert stored["n_val"] >= 2000 and stored["n_test"] >= 2000
    for name in METHODS:
        r = stored["methods"][name]
        assert set(r) >= {"outage", "se", "power_db", "below_perf", "instances"}
        assert 0 <= r["outage"] <= 1 and r["se"] >= 0 and r["instances"] == stored["n_test"]
    assert stored["methods"]["ghbf_perf"]["outage"] == 0.0
    m = stored["margin"]
    assert (
        m["val_outage"] <= stored["setup"]["rho"]
        and [m["margin_db"], m["val_outage"]] in m["trace"]
    )
    k = stored["kappa"]
    assert k["kappa"] in k["grid"] and len(k["val_outage"]) == len(k["grid"])
    margins = [p["x"] for p in stored["margin_curve"]]
    assert margins == sorted(margins) and 0.0 in margins and m["margin_db"] in margins
    assert [p["x"] for p in stored["kappa_curve"]] == k["grid"]
    for beams in ("naive", "ghbf_marg"):
        s = stored["sdp"][beams]
        assert s["analog_beams"] == beams and s["sdp"]["instances"] >= 100
        assert set(s["same_instances"]) == set(METHODS)
        assert s["served"] <= s["sdp"]["instances"] and s["seconds_per_instance"] > 0


@pytest.fixture
def one_thread():
    """One torch thread (the greedy design is many small solves: threads only contend)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_margin_on_fresh_data_agrees_with_stored_test_outage(stored, one_thread):
    """The stored margin on 100 fresh instances (another seed): an independent estimate of
    the same outage, so the two agree within a few standard errors."""
    setup, draw, pilot = pipeline.outage_setup()
    data = pipeline.imperfect_csi_dataset(
        100, torch.Generator().manual_seed(2024), pilot=pilot, **setup, **draw
    )
    margin = stored["margin"]["margin_db"]
    fresh = pipeline.margin_outage(data.H, data.H_hat, margin, **setup)
    se_fresh = pipeline.instance_standard_error(fresh)
    ref = stored["methods"]["ghbf_marg"]
    gap = abs(fresh.rate - ref["outage"])
    assert gap < 4 * math.hypot(se_fresh, ref["se"]) + 1e-3, (fresh.rate, ref)


def test_loading_on_fresh_data_agrees_with_stored_test_outage(stored, one_thread):
    """The stored loading factor (naive analog beams) on 100 fresh instances (another seed)
    agrees with the stored test outage; the fixed point converges on every sample (a sample
    stopped early would be charged as infeasible and warn)."""
    setup, draw, pilot = pipeline.outage_setup()
    data = pipeline.imperfect_csi_dataset(
        100, torch.Generator().manual_seed(2025), pilot=pilot, **setup, **draw
    )
    targets = {k: setup[k] for k in ("sinr_targets", "noise_var", "max_power")}
    naive = pipeline.margin_design(data.H_hat, 0.0, **setup)
    kappa = stored["kappa"]["kappa"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        design = pipeline.loaded_design(data.H_hat, naive, data.error_energy, kappa, **targets)
    fresh = empirical_outage(data.H, design, **targets)
    se_fresh = pipeline.instance_standard_error(fresh)
    ref = stored["methods"]["diag_loading"]
    gap = abs(fresh.rate - ref["outage"])
    assert gap < 4 * math.hypot(se_fresh, ref["se"]) + 1e-3, (fresh.rate, ref)


def test_readme_has_the_recorded_command(stored):
    readme = (results_dir("hybrid_outage", must_exist=True) / "README.md").read_text()
    commands = re.findall(
        r"^ {4}(?:nice )?(python scripts/eval_hybrid_outage\.py.*)$", readme, re.M
    )
    assert commands == [stored["command"].strip()]
