"""lib.chapters.oamp_net: the OAMP-Net problems of the deep-unfolding chapter, and the stored
networks re-evaluated on freshly drawn test signals."""

import math
from pathlib import Path

import pytest
import torch

from lib import sparse
from lib.chapters import oamp_net
from lib.chapters.oamp_net import (
    OAMP_PROBLEMS,
    discrete_sampler,
    load_oamp_net,
    oamp_net_results,
    oamp_problem,
)
from lib.core import ratio_db_se
from lib.learn import OAMPNet

torch.set_num_threads(1)
STORED = Path(oamp_net.OAMP_RESULTS_DIR)


def test_problems_and_the_discrete_prior():
    shapes = {"kappa100": (250, 500), "n64": (32, 64), "n64_discrete": (32, 64)}
    for name in OAMP_PROBLEMS:
        A, samp = oamp_problem(name)
        assert tuple(A.shape) == shapes[name] and A.dtype == torch.float32
        (y, nv), x = samp(5, torch.Generator().manual_seed(0))
        assert y.shape == (5, A.shape[0]) and x.shape == (5, A.shape[1])
    s = torch.linalg.svdvals(oamp_problem("kappa100", torch.float64)[0])
    assert float(s[0] / s[-1]) == pytest.approx(100.0, rel=1e-9)
    # the discrete prior: values in {-1, 0, 1}, activity p, symmetric, same second moment p
    A = oamp_problem("n64", torch.float64)[0]
    (y, nv), x = discrete_sampler(A, 0.1, 40.0)(20000, torch.Generator().manual_seed(1))
    assert set(x.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert float((x != 0).double().mean()) == pytest.approx(0.1, abs=0.005)
    assert abs(float(x.mean())) < 0.005 and float((x**2).mean()) == pytest.approx(0.1, abs=0.005)
    assert float(nv) == pytest.approx(sparse.noise_var_for_snr(A, 0.1, 40.0))
    with pytest.raises(ValueError, match="kappa100"):
        oamp_problem("n128")
    for bad, match in [((A, 0.0, 40.0), "p"), ((A, 1.5, 40.0), "p"), ((A[0], 0.1, 40.0), "A")]:
        with pytest.raises(ValueError, match=match):
            discrete_sampler(*bad)


def test_missing_files_name_the_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_oamp_net"):
        load_oamp_net("n64", path=tmp_path)
    with pytest.raises(FileNotFoundError, match="train_oamp_net"):
        oamp_net_results(tmp_path)


@pytest.mark.skipif(not (STORED / "results.json").exists(), reason="no stored OAMP-Nets")
@pytest.mark.parametrize("name", ["n64", "n64_discrete"])
def test_stored_oamp_nets_on_fresh_signals(name):
    # fresh test signals (not the script's test seed): the stored gap over classical OAMP is
    # reproduced within 3 standard errors of the two measurements
    rec = oamp_net_results()["models"][name]
    A, samp = oamp_problem(name)
    net = load_oamp_net(name, dtype=torch.float32)
    (y, nv), x = samp(10000, torch.Generator().manual_seed(2027))
    with torch.no_grad():
        e_net = ((net(y, nv)[-1] - x) ** 2).sum(-1)
        e_oamp = ((OAMPNet(A, oamp_net.OAMP_T, p=0.1)(y, nv)[-1] - x) ** 2).sum(-1)
    gap, se = ratio_db_se(e_net, e_oamp)
    assert abs(gap - rec["gap_db_vs_oamp"]) < 3 * math.hypot(se, rec["gap_se_db"])
    # the trained values are what the stored file says
    assert [round(float(layer.gamma.detach()), 4) for layer in net.layers] == rec["gamma"]
