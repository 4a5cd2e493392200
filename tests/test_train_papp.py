"""Smoke test of scripts/train_papp.py and scripts/eval_papp.py on a tiny configuration:
outputs, their format, loading of the stored state dict, bit-exact ``--resume``."""

from __future__ import annotations

import json

import pytest
import torch

from lib.chapters import build_papp_model
from lib.core import set_threads
from scripts import eval_papp
from scripts import train_papp as script

set_threads(1)

TINY = [
    "--pool", "4", "--val", "2", "--ref-iters", "3", "--batch", "8", "--domains", "2",
    "--teacher-steps", "6", "--steps", "6", "--val-every", "3", "--embed", "8", "--hidden", "8",
    "--checkpoint-every", "2", "--no-progress",
]  # fmt: skip


def _run(tmp_path, tag, *extra):
    out, ck = tmp_path / tag, tmp_path / f"{tag}-ck"
    cache = tmp_path / "cache"
    args = [*TINY, "--out", str(out), "--checkpoint-dir", str(ck), "--cache", str(cache), *extra]
    return script.main(args), out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("papp")
    return {m: _run(tmp, "out", "--method", m) for m in ("mldg", "deepall", "maml")}, tmp


def test_outputs_record_and_stored_weights(runs):
    res, tmp = runs
    out = tmp / "out"
    rec = json.loads((out / "train.json").read_text())["models"]
    assert set(rec) == {"PaPP", "DeepAll-PaPP", "MAML-PaPP"}
    for name, r in rec.items():
        assert r["steps"] == 12 and r["seconds_per_step"] > 0
        assert r["val_curve"] and all(len(v) == 4 for v in r["val_curve"])
        assert r["command"].startswith("python scripts/train_papp.py --pool 4")
        net = build_papp_model(r)
        net.load_state_dict(torch.load(out / f"{name}.pt", weights_only=True))
        assert (out / f"{name}-frozen-teacher.pt").exists()
        if name == "PaPP":
            model, _ = res["mldg"][0]
            for k, v in model.state_dict().items():
                torch.testing.assert_close(net.state_dict()[k], v, rtol=0, atol=0)


def test_resume_continues_bit_for_bit(tmp_path, monkeypatch):
    (full, _), _ = _run(tmp_path, "a", "--method", "mldg")
    calls = {"n": 0}
    orig = script.mldg_objective

    def interrupt(*a, **k):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return orig(*a, **k)

    monkeypatch.setattr(script, "mldg_objective", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "b", "--method", "mldg")
    monkeypatch.setattr(script, "mldg_objective", orig)
    (resumed, _), _ = _run(tmp_path, "b", "--method", "mldg", "--resume")
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)


def test_eval_writes_the_summary(runs, tmp_path):
    _, tmp = runs
    s = eval_papp.main(["--models", str(tmp / "out"), "--out", str(tmp_path / "s.json"),
                        "--samples", "3", "--snr", "10,20", "--betas", "0,0.5",
                        "--tol", "0.1", "--truncated", "2"])  # fmt: skip
    assert set(s["rates"]) == set(s["setup"]["test_sites"])
    row = s["rates"]["munich-s2"]["20"]
    for m in ("PaPP", "PaPP-teacher", "DeepAll-PaPP", "MAML-PaPP", "WMMSE", "ZF", "RZF",
              "RZF-eq", "MRT", "DPC", "WMMSE-2"):  # fmt: skip
        assert set(row[m]) == {"mean", "se"} and row[m]["mean"] > 0
        assert row[m]["mean"] <= row["DPC"]["mean"] + 1e-6
    assert set(s["csi_error"]) == {"0", "0.5"}
    assert s["flops_per_precoder"]["PaPP"] > 0 and s["cpu_seconds_per_1000"]["ZF"] > 0
