"""Smoke test of scripts/train_learned_hybrid.py on a tiny configuration: outputs, their format,
loading of the state dict, and bit-exact ``--resume`` after an interruption."""

from __future__ import annotations

import json

import pytest
import torch

from lib.core import set_threads
from lib.learn import UnfoldedGreedyHBF
from scripts import train_learned_hybrid as script

set_threads(1)

TINY = [
    "--n-h", "4", "--n-v", "2", "--users", "2", "--n-rf", "2", "--gamma-db", "5",
    "--val", "16", "--test", "16", "--steps", "20", "--batch", "8", "--val-every", "5",
    "--lr-patience", "10", "--patience", "100", "--hidden", "8", "--layers", "2",
    "--degree", "1", "--checkpoint-every", "5", "--no-progress",
]  # fmt: skip


def _run(tmp_path, tag, *extra):
    out, ck = tmp_path / tag, tmp_path / f"{tag}-ck"
    return script.main([*TINY, "--out", str(out), "--checkpoint-dir", str(ck), *extra]), out, ck


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("lh"), "full")


def test_outputs_and_format(full):
    res, out, ck = full
    assert (out / "U-G-HBF-GCN.pt").exists()
    assert not (ck / "U-G-HBF-GCN.ckpt").exists()  # removed once finished
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nominal_outage"] == 0.1
    assert list(summary["groups"]) == ["pilot 5 dB", "pilot 10 dB", "pilot 20 dB", "pilot 5-20 dB"]
    for methods in summary["groups"].values():
        assert {"U-G-HBF-GCN", "G-HBF-perf", "G-HBF-marg"} <= set(methods)
        for m in ("U-G-HBF-GCN", "G-HBF-perf"):
            r = methods[m]
            assert set(r) == {"outage", "outage_se", "power_db"}
            assert 0 <= r["outage"] <= 1 and r["outage_se"] >= 0 and r["power_db"] < 20
        assert methods["G-HBF-perf"]["outage"] == 0.0  # instances are served under perfect CSI
    rec = summary["models"]["U-G-HBF-GCN"]
    assert rec["train_steps"] == 20 and rec["seconds_per_step"] > 0
    assert len(rec["duals"]) == 4 and all(0 <= d <= 10 for d in rec["duals"])
    assert summary["commands"][0].startswith("python scripts/train_learned_hybrid.py --n-h 4")
    assert len(summary["seconds_per_command"]) == 1
    # the state dict loads into a fresh model
    sd = torch.load(out / "U-G-HBF-GCN.pt", weights_only=True)
    fresh = UnfoldedGreedyHBF(8, 2, 1, dtype=torch.float64)
    fresh.load_state_dict(sd)
    torch.testing.assert_close(fresh.state_dict(), res["model"].state_dict())


def test_resume_reproduces_the_uninterrupted_run(full, tmp_path):
    _, out_full, _ = full
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "part", "--interrupt-at", "12", "--no-classical")
    assert (tmp_path / "part-ck" / "U-G-HBF-GCN.ckpt").exists()  # written at step 10
    res, out, _ = _run(tmp_path, "part", "--resume", "--no-classical")
    assert len(res["history"]) == 20
    a = torch.load(out_full / "U-G-HBF-GCN.pt", weights_only=True)
    b = torch.load(out / "U-G-HBF-GCN.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    s_full = json.loads((out_full / "summary.json").read_text())
    s_part = json.loads((out / "summary.json").read_text())
    assert s_part["models"]["U-G-HBF-GCN"]["duals"] == s_full["models"]["U-G-HBF-GCN"]["duals"]
    g = "pilot 10 dB"
    assert s_part["groups"][g]["U-G-HBF-GCN"] == s_full["groups"][g]["U-G-HBF-GCN"]


def test_merge_and_quantile_variant(full, tmp_path):
    """A second method merges into the same summary without touching the first."""
    _, out_full, _ = full
    summary = json.loads((out_full / "summary.json").read_text())
    target = tmp_path / "merged"
    target.mkdir()
    (target / "summary.json").write_text(json.dumps(summary))
    (target / "README.md").write_text(
        f"# results\n{script._cli.TABLE_BEGIN}\n{script._cli.TABLE_END}\n"
    )
    extra = ["--loss", "quantile", "--model", "fcn", "--steps", "6", "--no-classical"]
    args = [*TINY, "--out", str(target), "--checkpoint-dir", str(tmp_path / "q-ck"), *extra]
    script.main(args)
    merged = json.loads((target / "summary.json").read_text())
    for gname, methods in merged["groups"].items():
        assert "U-G-HBF-FCN-quantile" in methods
        assert methods["U-G-HBF-GCN"] == summary["groups"][gname]["U-G-HBF-GCN"]
    assert set(merged["models"]) == {"U-G-HBF-GCN", "U-G-HBF-FCN-quantile"}
    assert len(merged["commands"]) == 2
    readme = (target / "README.md").read_text()
    assert "| pilot 5 dB | U-G-HBF-FCN-quantile |" in readme


def test_argument_checks():
    with pytest.raises(SystemExit, match="empty pilot range"):
        script.main(["--groups", "10-0", "--no-progress"])
    with pytest.raises(SystemExit):
        script.parse_users("0-2")
    assert script.parse_users("1-4") == (1, 4)


def test_pilot_groups_parse_and_reject():
    from lib.chapters import parse_pilot_groups

    assert parse_pilot_groups("0,5-15") == [
        ("pilot 0 dB", 0.0, 0.0),
        ("pilot 5-15 dB", 5.0, 15.0),
    ]
    assert parse_pilot_groups("-5--1")[0] == ("pilot -5--1 dB", -5.0, -1.0)
    for bad in ("10-0", "5,5", "x", ""):
        with pytest.raises(ValueError):
            parse_pilot_groups(bad)
    with pytest.raises(TypeError):
        parse_pilot_groups(5)


def test_margin_search_handles_a_non_monotone_outage():
    from lib.chapters import search_margin

    # outage falls with the margin, then rises once designs exceed P_max (U shape)
    def outage(m):
        return abs(m - 5.0) / 10.0

    m, trace = search_margin(outage, 0.1, 12.0, 2.0, 6)
    assert 4.0 <= m <= 4.1 and outage(m) <= 0.1  # plain bisection on [0, 12] would fail
    assert trace[0] == (0.0, 0.5) and (4.0, 0.1) in trace
    m, trace = search_margin(lambda m: 0.3, 0.1, 4.0, 2.0, 3)
    assert m is None and [t[0] for t in trace] == [0.0, 2.0, 4.0]
    assert search_margin(lambda m: 0.05, 0.1, 4.0, 2.0, 3)[0] == 0.0
    for bad in (dict(step=0.0), dict(hi=-1.0), dict(rho=1.0)):
        kw = {"rho": 0.1, "hi": 4.0, "step": 2.0, **bad}
        with pytest.raises(ValueError):
            search_margin(lambda m: 0.05, kw["rho"], kw["hi"], kw["step"], 3)
    with pytest.raises(TypeError, match="callable"):
        search_margin(0.05, 0.1)


def test_classical_only_writes_the_baselines(tmp_path):
    res, out, _ = _run(tmp_path, "cl", "--classical-only")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"] == {} and not (out / "U-G-HBF-GCN.pt").exists()
    for gname, methods in summary["groups"].items():
        assert set(methods) == {"G-HBF-perf", "G-HBF-marg"}
        m = summary["margin_search"][gname]
        rec = methods["G-HBF-marg"]
        assert (rec is None) == (m["margin_db"] is None)
        if rec is not None:
            assert rec["margin_db"] == m["margin_db"]
