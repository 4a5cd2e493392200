"""The stored results of the fallback chapter (results/fallback): the layout and internal
consistency of summary.json, the chapter's printed table against the file, the stored
codeword monitor, two wrapped models re-evaluated on fresh data, and the input errors."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
import torch

from lib.chapters import (
    FALLBACK_CASES,
    FALLBACK_TOL,
    TARGET_TRIGGER_RATE,
    CodewordResidual,
    CSFeedback,
    FeedbackSetup,
    angular_profile,
    evaluate_case,
    fallback_case,
    feedback_scenario,
    stored_papp_precoder,
)
from lib.core import set_threads
from lib.methods import ResidualMonitor
from lib.phy import angular_delay, from_angular_delay

set_threads(1)
ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "results" / "fallback"
SUMMARY = json.loads((RES / "summary.json").read_text())
RATES = ("trigger_rate", "worse_than_classical_rate", "learned_worse_rate")


def test_summary_has_every_case_and_consistent_metrics():
    assert list(SUMMARY["cases"]) == list(FALLBACK_CASES)
    assert SUMMARY["target_trigger_rate"] == TARGET_TRIGGER_RATE
    assert "scripts/eval_fallback.py" in SUMMARY["command"]
    for name, case in SUMMARY["cases"].items():
        deps = case["deployments"]
        assert list(deps)[0] == "matched" and list(deps)[-1] == "shifted", name
        assert case["tol"] == FALLBACK_TOL[name]
        for dep, m in deps.items():
            assert all(0 <= m[k] <= 1 for k in RATES), (name, dep)
            assert (m["gain_retained"] is None) == (m["gain_learned"] <= 0), (name, dep)
            assert m["auroc"] is None or 0 <= m["auroc"] <= 1
            # eq. (eq-fbk-worse): only harmful, untriggered samples can be worse
            bound = min(m["learned_worse_rate"], 1 - m["trigger_rate"])
            assert m["worse_than_classical_rate"] <= bound + 1e-12, (name, dep)
            if "loss_limit" in m:  # the truncation floor of the CSI decoders
                assert m["loss_limit"] < min(m["loss_learned"], m["loss_classical"]), (name, dep)
            if m["gain_retained"] is not None:
                gw = m["gain_retained"] * m["gain_learned"]
                assert gw == pytest.approx(m["gain_wrapped"]), (name, dep)


def test_chapter_table_agrees_with_summary():
    nb = nbformat.read(ROOT / "book" / "learned_fallback.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "COLS = " in c.source)
    text = "".join(o.get("text", "") for o in cell.outputs)
    cols = ("trigger_rate", "gain_retained", "learned_worse_rate",
            "worse_than_classical_rate", "worst_excess", "auroc")  # fmt: skip
    name, checked = None, 0
    for line in text.splitlines():
        if line.split(" ")[0] in SUMMARY["cases"]:
            name = line.split(" ")[0]
        elif line.startswith("  ") and line.split()[0] in SUMMARY["cases"][name]["deployments"]:
            dep, *vals = line.split()
            ref = SUMMARY["cases"][name]["deployments"][dep]
            for c, v in zip(cols, vals, strict=True):
                if v == "n/a":
                    assert ref[c] is None, (name, dep, c)
                else:
                    assert abs(float(v) - ref[c]) < 6e-4, (name, dep, c, v, ref[c])
                checked += 1
    n_rows = sum(len(c["deployments"]) for c in SUMMARY["cases"].values())
    assert checked == n_rows * len(cols)


def test_stored_codeword_monitor_loads_with_weights_only():
    state = torch.load(RES / "codeword_monitor.pt", weights_only=True)
    mu, P = state["mean"], state["precision"]
    assert mu.shape == (512,) and P.shape == (512, 512)
    assert torch.allclose(P, P.T, atol=1e-6 * P.abs().max())
    assert float(torch.linalg.eigvalsh(P.double()).min()) > 0


@pytest.fixture(scope="module")
def uwmmse():
    return fallback_case("UWMMSE/RZF")


def test_unfolded_wmmse_behind_rzf_on_fresh_channels(uwmmse):
    r = evaluate_case(uwmmse, n=400, seed=7, deployments=["matched", "snr-30dB", "M-8"])
    assert 0.04 <= r["matched"]["trigger_rate"] <= 0.16
    assert r["matched"]["gain_learned"] > 0.5  # the stored model beats RZF at 20 dB
    assert r["snr-30dB"]["trigger_rate"] > 0.7  # a shift the rate self-check sees
    assert r["M-8"]["trigger_rate"] < 0.25  # and one it misses
    assert r["M-8"]["worse_than_classical_rate"] > 0.5


def test_lamp_behind_oamp_on_fresh_problems():
    case = fallback_case("LAMP/OAMP", n_val=500)
    r = evaluate_case(case, n=300, seed=9, deployments=["matched", "snr-20dB", "kappa-100"])
    assert 0.03 <= r["matched"]["trigger_rate"] <= 0.17
    assert r["snr-20dB"]["trigger_rate"] < 0.1  # the residual is relative to the noise
    assert r["kappa-100"]["trigger_rate"] > 0.9
    assert r["kappa-100"]["worse_than_classical_rate"] == 0
    naive = case.with_monitor(ResidualMonitor("measurement"))
    assert naive.wrapper.threshold != case.wrapper.threshold
    r = evaluate_case(naive, n=300, seed=9, deployments=["snr-20dB"])
    assert r["snr-20dB"]["trigger_rate"] > 0.9


def test_with_monitor_calibrates_on_the_validation_data(uwmmse):
    from lib.methods import RateSelfCheck

    other = uwmmse.with_monitor(RateSelfCheck(), trigger_rate=0.3)
    s = other.wrapper.scores(*uwmmse.validation)
    assert float((s > other.wrapper.threshold).double().mean()) == pytest.approx(0.3, abs=0.01)
    assert other.wrapper.threshold < uwmmse.wrapper.threshold  # more triggers, lower
    assert other.deployments.keys() == uwmmse.deployments.keys()


def test_bad_inputs_raise(uwmmse):
    with pytest.raises(ValueError, match="name must be one of"):
        fallback_case("CsiNet/ZF")
    with pytest.raises(ValueError, match="deployments must be among"):
        evaluate_case(uwmmse, deployments=["uma"])
    with pytest.raises(ValueError, match="n must"):
        evaluate_case(uwmmse, n=0)
    with pytest.raises(ValueError, match="n_h"):
        angular_profile(torch.zeros(2, 3, 10, dtype=torch.complex128), 8, 8)
    with pytest.raises(TypeError):
        angular_profile(torch.zeros(2, 3, 64), 8, 8)
    with pytest.raises(TypeError, match="case must be a FallbackCase"):
        evaluate_case(uwmmse.wrapper)
    with pytest.raises(TypeError, match="fb must be a CSFeedback"):
        CodewordResidual(FeedbackSetup())
    with pytest.raises(ValueError, match="stored models"):
        stored_papp_precoder("PaPP-seed9")
    with pytest.raises(ValueError, match="antennas"):  # the precoder checks its input
        stored_papp_precoder()(torch.zeros(2, 4, 16, dtype=torch.complex128), 1.0, 1.0)


def test_angular_profile_is_a_normalised_log_power():
    g = torch.Generator().manual_seed(0)
    H = torch.randn(5, 4, 64, generator=g, dtype=torch.complex128)
    f = angular_profile(H, 8, 8)
    assert f.shape == (5, 64)
    assert torch.allclose((f.exp() - 1e-6).sum(-1), torch.ones(5, dtype=torch.float64))
    # a single plane wave on the DFT grid puts all its power in one angular bin
    n = torch.arange(8, dtype=torch.float64)
    a = torch.exp(2j * torch.pi * (2 * n[:, None] + 3 * n[None, :]) / 8).reshape(1, 1, 64)
    p = angular_profile(a.to(torch.complex128), 8, 8).exp() - 1e-6
    assert float(p.max()) == pytest.approx(1.0) and int((p > 1e-9).sum()) == 1


def test_codeword_residual_is_zero_for_an_exact_decoder():
    s = FeedbackSetup()
    H = feedback_scenario("florence", 8, s, seed=3)["H"]
    exact = from_angular_delay(angular_delay(H, s.n_h, s.n_v, s.n_taps), s.n_h, s.n_v,
                               s.n_subcarriers)  # fmt: skip
    mon = CodewordResidual(CSFeedback(0.25, s))
    assert float(mon((H,), exact).max()) < 1e-8  # the codeword sees only the kept taps
    assert torch.allclose(mon((H,), torch.zeros_like(H)), torch.ones(8, dtype=torch.float64))
    assert float(mon((H,), 0.5 * exact).min()) == pytest.approx(0.25, rel=1e-4)
