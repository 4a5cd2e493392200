"""Every registered method of the book against the contract of its task's protocol.

One parametrised test per protocol (:mod:`lib.core.interfaces`) runs every method of the
registries of :mod:`lib.methods` on the same small problem: shapes, dtype, finiteness, the power
constraint, the feasibility flag and the SINR it promises. A method added to a registry is
covered automatically; a method the book uses and that disappears from a registry fails
:func:`test_registries_cover_every_method_of_the_book`.
"""

from __future__ import annotations

import pytest
import torch

from lib import methods
from lib.chapters import pretrained_sparse
from lib.chapters import unfolded_wmmse as unfolded_pipeline
from lib.core.interfaces import HybridDesigner, Precoder, SparseEstimator
from lib.phy import dft_codebook, rayleigh
from lib.precoding import HybridResult, hybrid_sinr, power_weights, sum_rate
from lib.sparse import bernoulli_gaussian, gaussian_matrix

# The methods the chapters use (by registry name). Removing one from a registry fails the
# coverage test; adding a method to the book means adding it here and to the registry.
BOOK_PRECODERS = ["mrt", "zf", "rzf", "wmmse", "unfolded_wmmse"]
BOOK_SPARSE = [
    "ista",
    "fista",
    "amp",
    "amp_bg",
    "vamp",
    "oamp",
    "lista",
    "lista_cp",
    "lean_ista",
    "alista",
    "tista",
    "tista_soft",
    "lamp_soft",
    "lamp_bg",
    "oamp_net",
    "mlp",
]
BOOK_HYBRID = [
    "greedy",
    "exhaustive",
    "fixed_analog",
    "fully_digital",
    "fully_digital_socp",
    "margin",
    "loaded",
    "robust_sdp",
]
# networks whose learned matrices replace A (cannot take another A)
TIED_TO_A = {"lista", "lista_cp", "mlp"}
LEARNED = {
    "lista",
    "lista_cp",
    "lean_ista",
    "alista",
    "tista",
    "tista_soft",
    "lamp_soft",
    "lamp_bg",
    "oamp_net",
    "mlp",
}


def _rtol(dtype: torch.dtype) -> float:
    """A tolerance relative to the precision of ``dtype`` (real or complex)."""
    real = torch.empty(0, dtype=dtype).real.dtype
    return 100 * torch.finfo(real).eps


# --------------------------------------------------------------------------- #
# Precoder
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("name", sorted(methods.PRECODERS))
def test_precoder_contract(name, dtype):
    B, K, M = 5, 3, 6
    H = rayleigh(B, K, M, generator=torch.Generator().manual_seed(0), dtype=dtype)
    rdt = H.real.dtype
    power = torch.tensor([0.5, 1.0, 2.0, 4.0, 10.0], dtype=rdt)
    noise_var = 0.1
    precoder = methods.PRECODERS[name]()
    assert isinstance(precoder, Precoder)
    V = precoder(H, power, noise_var)
    assert V.shape == (B, M, K)
    assert V.dtype == dtype
    assert bool(torch.isfinite(V).all())
    used = (V.abs() ** 2).sum(dim=(-2, -1))
    assert bool((used <= power * (1 + _rtol(dtype))).all()), (used, power)
    # a precoder that serves nobody meets the contract vacuously: every user gets a rate
    assert bool((sum_rate(H, V, noise_var) > 0).all())
    # a scalar power is the same as a constant (B,) power
    V1 = precoder(H, 2.0, noise_var)
    V2 = precoder(H, torch.full((B,), 2.0, dtype=rdt), noise_var)
    torch.testing.assert_close(V1, V2)


def test_unrolled_precoder_returns_the_last_layer_and_trains():
    H = rayleigh(4, 2, 4, generator=torch.Generator().manual_seed(1))
    p = methods.PRECODERS["unfolded_wmmse"](layers=3, pgd_steps=2)
    stack = p.stack(H, 1.0, 0.1)
    assert stack.shape == (3, 4, 4, 2)
    torch.testing.assert_close(p(H, 1.0, 0.1), stack[-1])
    (-sum_rate(H, p(H, 1.0, 0.1), 0.1).mean()).backward()
    grads = [q.grad for q in p.model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert any(bool((g != 0).any()) for g in grads)


@pytest.mark.skipif(not unfolded_pipeline.SWEEP_FILE.exists(), reason="stored step sizes missing")
def test_pretrained_precoder_wraps_the_stored_network():
    p = methods.pretrained_precoder(10.0, 2)
    assert isinstance(p, Precoder)
    H = rayleigh(3, 4, 4, generator=torch.Generator().manual_seed(2))
    ref = unfolded_pipeline.stored_model(10.0, 2)
    torch.testing.assert_close(p(H, 10.0, 1.0), ref.precode(H, 10.0, 1.0))
    torch.testing.assert_close(p.model.step_sizes(), ref.step_sizes())


# --------------------------------------------------------------------------- #
# Sparse estimator
# --------------------------------------------------------------------------- #
M_S, N_S, P_S, T_S, B_S = 20, 40, 0.1, 5, 8


def _sparse_problem(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    A = gaussian_matrix(M_S, N_S, generator=g, dtype=torch.float64)
    x = bernoulli_gaussian(B_S, N_S, P_S, generator=g, dtype=torch.float64)
    noise_var = 1e-3
    y = x @ A.T + noise_var**0.5 * torch.randn(B_S, M_S, generator=g, dtype=torch.float64)
    return A.to(dtype), x.to(dtype), y.to(dtype), noise_var


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(methods.SPARSE_ESTIMATORS))
def test_sparse_estimator_contract(name, dtype):
    A, x, y, noise_var = _sparse_problem(dtype=dtype)
    est = methods.SPARSE_ESTIMATORS[name](A, p=P_S, T=T_S)
    assert isinstance(est, SparseEstimator)
    x_hat = est(y, A, noise_var)
    assert x_hat.shape == (B_S, N_S)
    assert x_hat.dtype == dtype
    assert bool(torch.isfinite(x_hat).all())
    stack = est.stack(y, A, noise_var)
    assert stack.shape == ((1 if name == "mlp" else T_S), B_S, N_S)
    assert stack.dtype == dtype
    torch.testing.assert_close(stack[-1], x_hat)
    # a noise variance per sample is accepted
    per_sample = est(y, A, torch.full((B_S,), noise_var, dtype=dtype))
    assert per_sample.shape == (B_S, N_S)
    if name != "mlp":  # every model-based method starts at its algorithm: better than x = 0
        nmse = float(((x_hat.detach() - x) ** 2).sum() / (x**2).sum())
        assert nmse < 1.0, nmse


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("name", sorted(methods.SPARSE_ESTIMATORS))
def test_sparse_estimator_rejects_a_bad_noise_variance(name, bad):
    A, _, y, _ = _sparse_problem()
    est = methods.SPARSE_ESTIMATORS[name](A, p=P_S, T=T_S)
    with pytest.raises(ValueError, match="noise_var"):
        est(y, A, bad)


@pytest.mark.parametrize("name", sorted(methods.SPARSE_ESTIMATORS))
def test_sparse_estimator_takes_A_or_says_it_cannot(name):
    A, x, y, noise_var = _sparse_problem(seed=0)
    A2, x2, y2, _ = _sparse_problem(seed=1)
    est = methods.SPARSE_ESTIMATORS[name](A, p=P_S, T=T_S)
    if name in TIED_TO_A:
        with pytest.raises(ValueError, match="tied to the sensing matrix"):
            est(y2, A2, noise_var)
        return
    out = est(y2, A2, noise_var)
    assert out.shape == (B_S, N_S) and bool(torch.isfinite(out).all())
    # the new matrix is really used
    assert not torch.allclose(out, est(y2, A, noise_var))
    A_b = torch.stack([A] * B_S)
    if name in LEARNED:
        with pytest.raises(ValueError, match=r"one \(M, N\) sensing matrix"):
            est(y, A_b, noise_var)
    else:  # classical algorithms take a batch of matrices
        torch.testing.assert_close(est(y, A_b, noise_var), est(y, A, noise_var))


@pytest.mark.parametrize("name", pretrained_sparse.MODELS)
def test_registry_builds_the_chapter_networks(name):
    """At the chapter's depth and sparsity the registry's untrained network is the chapter's."""
    A, _, _, _ = _sparse_problem()
    chapter = pretrained_sparse.REFERENCE
    est = methods.SPARSE_ESTIMATORS[name](A, p=chapter.p, T=chapter.T)
    ref = pretrained_sparse.build(name, A, chapter)
    mine, theirs = est.model.state_dict(), ref.state_dict()
    assert type(est.model) is type(ref)
    assert mine.keys() == theirs.keys()
    for k in mine:
        assert mine[k].shape == theirs[k].shape, k
        if name != "mlp":  # the MLP is initialised at random: compare its structure only
            torch.testing.assert_close(mine[k], theirs[k], msg=k)


@pytest.mark.skipif(
    not (pretrained_sparse.RESULTS_DIR / "lista_cp.pt").exists(), reason="stored networks missing"
)
def test_pretrained_estimator_wraps_the_stored_network():
    est = methods.pretrained_estimator("lean_ista")
    assert isinstance(est, SparseEstimator)
    A = pretrained_sparse.reference_matrix()
    y, nv, _ = pretrained_sparse.test_set(A, n=20)
    torch.testing.assert_close(est(y, A, nv), pretrained_sparse.load("lean_ista")(y, nv)[-1])
    tied = methods.pretrained_estimator("lista_cp")
    with pytest.raises(ValueError, match="tied"):
        tied(y, A + 0.01, nv)


# --------------------------------------------------------------------------- #
# Hybrid designer
# --------------------------------------------------------------------------- #
B_H, K_H, M_H, NRF_H, GAMMA_H, NOISE_H = 3, 2, 4, 2, 2.0, 0.1


def _hybrid_problem(dtype):
    H = rayleigh(B_H, K_H, M_H, generator=torch.Generator().manual_seed(3))
    codebook = dft_codebook(M_H, 1, (2, 1))[0]  # (4, 8): 28 sets of 2 codewords
    return H.to(dtype), codebook.to(dtype)


@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64])
@pytest.mark.parametrize("name", sorted(methods.HYBRID_DESIGNERS))
def test_hybrid_designer_contract(name, dtype):
    H, codebook = _hybrid_problem(dtype)
    designer = methods.HYBRID_DESIGNERS[name](codebook, NRF_H)
    assert isinstance(designer, HybridDesigner)
    assert isinstance(designer.batched, bool)
    res = designer(H, GAMMA_H, NOISE_H)
    assert isinstance(res, HybridResult)
    n = res.F_RF.shape[-1]  # N_RF, or M for the fully digital designs
    assert n in (NRF_H, M_H)
    assert res.F_RF.shape == (B_H, M_H, n) and res.F_RF.dtype == dtype
    assert res.V_bb.shape == (B_H, n, K_H) and res.V_bb.dtype == dtype
    rdt = H.real.dtype
    assert res.powers.shape == (B_H, K_H) and res.powers.dtype == rdt
    assert res.weighted_power.shape == (B_H,) and res.weighted_power.dtype == rdt
    f = res.feasible
    assert isinstance(f, torch.Tensor) and f.dtype == torch.bool and f.shape == (B_H,)
    assert bool(f.any()), "the test problem is feasible: a designer must serve some instance"
    # infeasible: +inf, never NaN; feasible: finite, positive
    assert bool(torch.isinf(res.weighted_power[~f]).all())
    assert bool(torch.isinf(res.powers[~f]).all())
    assert not bool(torch.isnan(res.powers).any() | torch.isnan(res.weighted_power).any())
    p, w = res.powers[f], res.weighted_power[f]
    assert bool(torch.isfinite(p).all() & (p > 0).all() & torch.isfinite(w).all())
    assert bool(torch.isfinite(res.F_RF).all() & torch.isfinite(res.V_bb).all())
    # per-instance solvers meet the targets to their solver accuracy, batched ones to the dtype
    tol = 1e-5 if not designer.batched else max(_rtol(dtype), 1e-9) * 10
    Ff, Vf = res.F_RF[f], res.V_bb[f]
    torch.testing.assert_close(
        (Vf.abs() ** 2).sum(-2), torch.ones_like(p), rtol=tol, atol=tol
    )  # unit-norm digital weights
    s = hybrid_sinr(H[f], Ff, Vf, p, NOISE_H)
    assert bool((s >= GAMMA_H * (1 - tol)).all()), (name, s)
    # the allocated power is the radiated (RF-weighted) power of eq. (4)
    torch.testing.assert_close(
        (power_weights(Ff, Vf, "rf") * p).sum(-1), w, rtol=max(tol, 1e-6), atol=0.0
    )
    if dtype == torch.complex64:  # single precision must not change the verdict
        ref = methods.HYBRID_DESIGNERS[name](codebook.to(torch.complex128), NRF_H)(
            H.to(torch.complex128), GAMMA_H, NOISE_H
        )
        assert torch.equal(ref.feasible, f)


def test_hybrid_designs_are_ordered():
    """Fully digital <= exhaustive <= greedy <= its initial analog matrix (RF weighting)."""
    H, cb = _hybrid_problem(torch.complex128)
    power = {
        k: methods.HYBRID_DESIGNERS[k](cb, NRF_H)(H, GAMMA_H, NOISE_H).weighted_power
        for k in ("fully_digital", "exhaustive", "greedy", "fixed_analog")
    }
    assert bool(torch.isfinite(power["fixed_analog"]).all())
    r = 1 + 1e-9
    assert bool((power["fully_digital"] <= power["exhaustive"] * r).all())
    assert bool((power["exhaustive"] <= power["greedy"] * r).all())
    assert bool((power["greedy"] <= power["fixed_analog"] * r).all())


# --------------------------------------------------------------------------- #
# Registries
# --------------------------------------------------------------------------- #
def test_registries_cover_every_method_of_the_book():
    assert set(BOOK_PRECODERS) <= set(methods.PRECODERS), set(BOOK_PRECODERS) - set(
        methods.PRECODERS
    )
    assert set(BOOK_SPARSE) <= set(methods.SPARSE_ESTIMATORS), set(BOOK_SPARSE) - set(
        methods.SPARSE_ESTIMATORS
    )
    assert set(BOOK_HYBRID) <= set(methods.HYBRID_DESIGNERS), set(BOOK_HYBRID) - set(
        methods.HYBRID_DESIGNERS
    )
    # every stored network of the deep-unfolding chapters can be built by name
    assert set(pretrained_sparse.MODELS) <= set(methods.SPARSE_ESTIMATORS)
    assert TIED_TO_A <= LEARNED <= set(BOOK_SPARSE)
