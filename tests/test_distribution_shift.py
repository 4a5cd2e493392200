"""Tests of lib.chapters.distribution_shift on a small problem (M=40, N=80, untrained networks)."""

import math

import pytest
import torch

from lib import sparse
from lib.chapters.distribution_shift import (
    REFERENCES,
    ShiftProblem,
    degradation_db,
    evaluate_shift,
    gap_to_oracle_db,
    reference_shifts,
    shifted_test_set,
    sweep_shifts,
    with_condition_number,
)
from lib.chapters.pretrained_sparse import REFERENCE
from lib.learn.unrolled_sparse import LISTA, LeanISTA, with_matrix

torch.set_num_threads(1)
M, N, P = 40, 80, 0.1


@pytest.fixture(scope="module")
def setup():
    A = sparse.gaussian_matrix(M, N, generator=torch.Generator().manual_seed(0))
    models = {"lean": LeanISTA(A, 4, lam=0.05), "lista": LISTA(A, 4, 0.05, coupled=True)}
    return A, models


@pytest.mark.parametrize("kappa", [1.0, 30.0])
def test_condition_shift_keeps_singular_vectors(setup, kappa):
    A, _ = setup
    Ak = with_condition_number(A, kappa)
    U, s, Vh = torch.linalg.svd(A, full_matrices=False)
    sk = torch.linalg.svdvals(Ak)
    assert abs(float(sk[0] / sk[-1]) - kappa) < 1e-8 * kappa
    assert abs(float((Ak**2).sum()) - N) < 1e-9
    # same singular vectors: U^T A_k V^T is diagonal
    D = U.T @ Ak @ Vh.T
    assert (D - torch.diag(torch.diagonal(D))).abs().max() < 1e-10
    with pytest.raises(ValueError, match="kappa"):
        with_condition_number(A, 0.5)


def test_evaluate_shift_tells_model_based_networks_the_new_matrix(setup):
    A, models = setup
    Ak = with_condition_number(A, 30.0)
    res = evaluate_shift(models, Ak, P, 30.0, n=50, seed=3)
    assert list(res) == ["lean", "lista", *REFERENCES]
    y, nv, x = shifted_test_set(Ak, P, 30.0, n=50, seed=3)
    with torch.no_grad():
        told = sparse.nmse_db(with_matrix(models["lean"], Ak)(y, nv)[-1], x).item()
        kept = sparse.nmse_db(models["lista"](y, nv)[-1], x).item()
    assert res["lean"] == told and res["lista"] == kept
    assert torch.equal(models["lean"].A, A)  # the caller's model is not modified
    assert res["oracle"] < min(v for k, v in res.items() if k != "oracle")


def test_degradation_and_gap(setup):
    A, models = setup
    ind = evaluate_shift(models, A, P, 30.0, n=50)
    assert all(v == 0 for v in degradation_db(ind, ind).values())
    low = evaluate_shift(models, A, P, 10.0, n=50, references=False)
    assert list(low) == ["lean", "lista"]
    assert set(degradation_db(low, ind)) == {"lean", "lista"}
    gap = gap_to_oracle_db(ind)
    assert "oracle" not in gap and all(math.isfinite(v) and v > 0 for v in gap.values())
    with pytest.raises(ValueError, match="oracle"):
        gap_to_oracle_db(low)


def test_reference_sweeps(setup):
    A, models = setup
    shifts = reference_shifts(A, P, 30.0)
    assert list(shifts) == ["SNR (dB)", "sparsity p", "amplitude a", "condition number"]
    assert shifts["SNR (dB)"].train_value == 30.0 and shifts["amplitude a"].log_scale
    s = torch.linalg.svdvals(A)
    assert shifts["condition number"].train_value == pytest.approx(float(s[0] / s[-1]))
    one = {"amplitude a": shifts["amplitude a"]}
    res = sweep_shifts({"lean": models["lean"]}, one, n=20)
    assert len(res["amplitude a"]) == 5
    direct = evaluate_shift({"lean": models["lean"]}, A, P, 30.0, amplitude=4.0, n=20)
    assert res["amplitude a"][-1] == direct


@pytest.mark.parametrize("kappa", [1.0, 100.0])
def test_condition_shift_has_the_spectrum_of_ill_conditioned_matrix(setup, kappa):
    """Same singular values as lib.sparse.ill_conditioned_matrix (only the vectors differ)."""
    A, _ = setup
    s_shift = torch.linalg.svdvals(with_condition_number(A, kappa))
    s_ill = torch.linalg.svdvals(
        sparse.ill_conditioned_matrix(M, N, kappa, generator=torch.Generator().manual_seed(1))
    )
    assert torch.allclose(s_shift, s_ill, rtol=1e-10, atol=0)


def test_shift_problem_defaults_are_the_training_point(setup):
    A, models = setup
    base = ShiftProblem(A)
    assert (base.p, base.snr_db, base.amplitude) == (REFERENCE.p, REFERENCE.snr_db, 1.0)
    moved = base.moved(snr_db=20.0)
    assert moved.snr_db == 20.0 and base.snr_db == REFERENCE.snr_db and moved.A is A
    assert set(moved.kwargs()) == {"A", "p", "snr_db", "amplitude"}
    shifts = reference_shifts(A, P, 30.0)
    assert shifts["sparsity p"].problem(0.2) == ShiftProblem(A, 0.2, 30.0).kwargs()
    assert evaluate_shift(models, **moved.kwargs(), n=20) == evaluate_shift(
        models, A, REFERENCE.p, 20.0, n=20
    )
