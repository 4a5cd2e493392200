"""Tests of lib.precoding.power_min: precision, units, input parsing and the loop discipline of
the duality solver and the SOCP reference (issue 10, sections 4-5)."""

from __future__ import annotations

import ast
import inspect
import math

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lib.chapters.hybrid import draw_instances
from lib.core import set_threads
from lib.phy import rayleigh
from lib.precoding import hybrid, min_power_duality, min_power_socp, power_min, robust, sinr
from lib.precoding.power_min import CHECK_EVERY, sinr_rtol

set_threads(1)

C64, C128 = torch.complex64, torch.complex128
GAMMA = 10.0  # 10 dB, the hybrid chapters' target


def _chapter_H(B=40, seed=0):
    """Instances of the hybrid chapters (lib.chapters.hybrid.draw_instances defaults)."""
    H, _ = draw_instances(B, torch.Generator().manual_seed(seed))
    return H


# --------------------------------------------------------------------------- #
# Precision: complex64 agrees with complex128
# --------------------------------------------------------------------------- #
def test_complex64_agrees_with_complex128_on_chapter_instances():
    H = _chapter_H()
    r64 = min_power_duality(H, GAMMA, 1.0)
    r32 = min_power_duality(H.to(C64), GAMMA, 1.0)
    assert bool(r64.feasible.all())  # well-conditioned: 4 users, 32 antennas
    assert torch.equal(r32.feasible, r64.feasible)
    assert r32.V.dtype == C64 and r32.powers.dtype == torch.float32
    rel = (r32.total_power.double() - r64.total_power).abs() / r64.total_power
    assert float(rel.max()) < 1e-4
    # the single-precision beamformers meet the targets to sqrt(eps) of float32
    s = sinr(H.to(C64), r32.V, 1.0)
    assert float(s.min()) >= GAMMA * (1 - sinr_rtol(torch.float32))


def test_sinr_rtol_is_relative_to_the_dtype():
    assert sinr_rtol(torch.float64) == pytest.approx(math.sqrt(2.0**-52))
    assert sinr_rtol(C64) == pytest.approx(math.sqrt(2.0**-23))


@pytest.mark.parametrize("dtype", [C64, C128])
def test_duality_matches_socp_in_both_precisions(dtype):
    H = rayleigh(4, 3, 4, generator=torch.Generator().manual_seed(3))
    ref = min_power_socp(H, 2.0, 0.5)
    r = min_power_duality(H.to(dtype), 2.0, 0.5)
    assert bool(ref.feasible.all()) and torch.equal(r.feasible, ref.feasible)
    rtol = 1e-4 if dtype == C64 else 1e-6
    torch.testing.assert_close(r.total_power.double(), ref.total_power, rtol=rtol, atol=0)


def test_socp_returns_the_input_dtype():
    H = rayleigh(2, 2, 3, generator=torch.Generator().manual_seed(4)).to(C64)
    r = min_power_socp(H, 1.0, 1.0)
    assert r.V.dtype == C64 and r.powers.dtype == torch.float32 and bool(r.feasible.all())


# --------------------------------------------------------------------------- #
# Units: invariance to a common scaling of H and the noise
# --------------------------------------------------------------------------- #
_H_UNITS = rayleigh(6, 3, 4, generator=torch.Generator().manual_seed(5))
_G_UNITS = torch.tensor([0.5, 2.0, 8.0], dtype=torch.float64)  # one instance is hard
_BASE = min_power_duality(_H_UNITS, _G_UNITS, 1.0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log_c=st.floats(min_value=-7.0, max_value=3.0))
def test_duality_is_invariant_to_units(log_c):
    c = 10.0**log_c
    common = min_power_duality(_H_UNITS * c, _G_UNITS, c * c)
    assert torch.equal(common.feasible, _BASE.feasible)
    ok = _BASE.feasible
    torch.testing.assert_close(common.powers[ok], _BASE.powers[ok], rtol=1e-8, atol=0)
    alone = min_power_duality(_H_UNITS * c, _G_UNITS, 1.0)  # channel alone: power / c^2
    assert torch.equal(alone.feasible, _BASE.feasible)
    torch.testing.assert_close(alone.powers[ok] * c * c, _BASE.powers[ok], rtol=1e-8, atol=0)


@pytest.mark.parametrize("dtype", [C64, C128])
def test_minus_130_db_path_loss_with_matching_noise(dtype):
    H = _chapter_H(16)
    c = 10 ** (-130 / 20)
    ref = min_power_duality(H.to(dtype), GAMMA, 1.0)
    r = min_power_duality((H * c).to(dtype), GAMMA, c * c)
    assert bool(ref.feasible.all()) and torch.equal(r.feasible, ref.feasible)
    rtol = 1e-4 if dtype == C64 else 1e-9
    torch.testing.assert_close(r.powers, ref.powers, rtol=rtol, atol=0)


_H_SOCP = rayleigh(2, 2, 3, generator=torch.Generator().manual_seed(6))
_BASE_SOCP = min_power_socp(_H_SOCP, 1.0, 1.0)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log_c=st.floats(min_value=-7.0, max_value=3.0))
@example(log_c=-6.0)  # once reported "feasible" with SINR 3e-6 against a target of 1
def test_socp_is_invariant_to_units_and_certified(log_c):
    c = 10.0**log_c
    H, base = _H_SOCP, _BASE_SOCP
    r = min_power_socp(H * c, 1.0, 1.0)  # channel alone scaled: power / c^2, SINR still met
    assert bool(base.feasible.all()) and torch.equal(r.feasible, base.feasible)
    torch.testing.assert_close(r.total_power * c * c, base.total_power, rtol=1e-5, atol=0)
    assert float(sinr(H * c, r.V, 1.0).min()) >= 1.0 - 1e-5
    common = min_power_socp(H * c, 1.0, c * c)
    torch.testing.assert_close(common.total_power, base.total_power, rtol=1e-5, atol=0)


# --------------------------------------------------------------------------- #
# Robustness: infeasible reported, never raised, never NaN
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", [C64, C128])
def test_parallel_channels_at_0_db_are_infeasible_not_an_error(dtype):
    h = rayleigh(1, 1, 4, generator=torch.Generator().manual_seed(7))
    good = rayleigh(1, 2, 4, generator=torch.Generator().manual_seed(8))
    H = torch.cat([torch.cat([h, h], 1), torch.cat([h, 0.5j * h], 1), good], 0).to(dtype)
    r = min_power_duality(H, 1.0, 1.0)  # gamma_1 gamma_2 = 1: singular coupling matrix
    assert r.feasible.tolist() == [False, False, True]
    assert not bool(torch.isnan(r.V).any()) and bool(torch.isinf(r.total_power[:2]).all())


def test_zero_channel_user_is_infeasible():
    H = rayleigh(2, 2, 3, generator=torch.Generator().manual_seed(9))
    H[0, 1] = 0
    r = min_power_duality(H, 1.0, 1.0)
    assert r.feasible.tolist() == [False, True] and not bool(torch.isnan(r.V).any())


def test_unconverged_but_certified_sample_is_feasible():
    # 2 iterations cannot converge to 9e-13, but the last directions already meet the targets
    H = rayleigh(5, 2, 4, generator=torch.Generator().manual_seed(10))
    r = min_power_duality(H, 1.0, 1.0, iters=2)
    ref = min_power_duality(H, 1.0, 1.0)
    assert bool(r.feasible.all())
    assert float(sinr(H, r.V, 1.0).min()) >= 1.0 - sinr_rtol(torch.float64)
    assert bool((r.total_power >= ref.total_power * (1 - 1e-12)).all())


# --------------------------------------------------------------------------- #
# SINR targets: one parser (lib.core.checks.per_user)
# --------------------------------------------------------------------------- #
_H_PARSE = rayleigh(2, 3, 4, generator=torch.Generator().manual_seed(11))

BAD_TARGETS = [
    (float("inf"), ValueError, "sinr_targets must be finite"),
    (float("nan"), ValueError, "sinr_targets must be finite"),
    (-1.0, ValueError, "sinr_targets must be > 0"),
    (0.0, ValueError, "sinr_targets must be > 0"),
    (0, ValueError, "sinr_targets must be > 0"),
    (
        torch.ones(2, dtype=torch.float64),
        ValueError,
        r"sinr_targets must be a scalar or have shape",
    ),
    (torch.ones(3, 2, dtype=torch.float64), ValueError, r"shape \(3,\) or \(2, 3\)"),
    (True, TypeError, "sinr_targets must be a number or a real tensor, got bool"),
    (torch.ones(3, dtype=torch.bool), TypeError, "sinr_targets must be real"),
    (torch.ones(3, dtype=torch.complex128), TypeError, "sinr_targets must be real"),
    ("10 dB", TypeError, "sinr_targets must be a number or a torch.Tensor"),
]


def _call_all(sinr_targets):
    """Every public entry point that takes SINR targets, on the same small problem."""
    H = _H_PARSE
    g = torch.Generator().manual_seed(13)
    C = torch.linalg.qr(torch.randn(4, 4, dtype=torch.complex128, generator=g))[0]
    F = C[:, :3].expand(2, 4, 3)
    design = hybrid.digital_min_power(H, F, 1.0, 1.0)
    yield lambda: min_power_duality(H, sinr_targets, 1.0)
    yield lambda: min_power_socp(H, sinr_targets, 1.0)
    yield lambda: hybrid.fully_digital_min_power(H, sinr_targets, 1.0)
    yield lambda: hybrid.digital_min_power(H, F, sinr_targets, 1.0)
    yield lambda: hybrid.greedy_codebook_selection(H, C, 3, sinr_targets, 1.0)
    yield lambda: hybrid.exhaustive_search(H, C, 3, sinr_targets, 1.0)
    yield lambda: robust.empirical_outage(H, design, sinr_targets, 1.0)
    yield lambda: robust.loaded_min_power(H, F, sinr_targets, 1.0, 0.1, max_power=10.0)


@pytest.mark.parametrize("value,exc,msg", BAD_TARGETS, ids=[repr(b[0])[:20] for b in BAD_TARGETS])
def test_bad_sinr_targets_rejected_everywhere(value, exc, msg):
    for call in _call_all(value):
        with pytest.raises(exc, match=msg):
            call()


def test_sinr_targets_follow_the_channel_dtype_and_accept_per_user_values():
    H = _H_PARSE.to(C64)
    g = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)  # float64 targets, complex64 H
    r = min_power_duality(H, g, 1.0)
    assert r.powers.dtype == torch.float32 and bool(r.feasible.all())
    s = sinr(H, r.V, 1.0)
    assert bool((s >= g.float() * (1 - sinr_rtol(torch.float32))).all())


@pytest.mark.parametrize(
    "kw,exc,msg",
    [
        ({"iters": 0}, ValueError, "iters must be >= 1"),
        ({"iters": 2.5}, TypeError, "iters must be an int"),
        ({"tol": 0.0}, ValueError, "tol must be None or a number in"),
        ({"tol": float("nan")}, ValueError, "tol must be None or a number in"),
        ({"max_power_ratio": float("inf")}, ValueError, "max_power_ratio must be a finite"),
        ({"max_power_ratio": 0.5}, ValueError, "max_power_ratio must be a finite"),
    ],
)
def test_bad_solver_settings(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        min_power_duality(_H_PARSE, 1.0, 1.0, **kw)
    with pytest.raises(exc, match=msg):
        hybrid.fully_digital_min_power(_H_PARSE, 1.0, 1.0, **kw)


def test_unknown_solver_setting_is_a_type_error():
    with pytest.raises(TypeError, match="unknown solver settings"):
        hybrid.fully_digital_min_power(_H_PARSE, 1.0, 1.0, max_power=5.0)


# --------------------------------------------------------------------------- #
# Checks at the entry, not in the loop
# --------------------------------------------------------------------------- #
def test_duality_loop_syncs_only_for_the_convergence_test(monkeypatch):
    H = rayleigh(8, 3, 4, generator=torch.Generator().manual_seed(12))
    count = {"n": 0}
    original = torch.Tensor.__bool__

    def counting(self):
        count["n"] += 1
        return original(self)

    monkeypatch.setattr(torch.Tensor, "__bool__", counting)
    iters = 64
    min_power_duality(H, 1.0, 1.0, iters=iters, tol=1e-30)
    monkeypatch.undo()
    # entry checks (a handful) + one convergence test every CHECK_EVERY iterations
    assert count["n"] <= 10 + iters // CHECK_EVERY


def test_tensors_are_created_on_the_inputs_device():
    """Static check: every torch factory call in the power-minimisation family names a device."""
    factories = {"zeros", "ones", "full", "empty", "eye", "tensor", "as_tensor", "arange"}
    missing = []
    for mod in (power_min, hybrid, robust):
        tree = ast.parse(inspect.getsource(mod))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
                and node.func.attr in factories
                and not any(k.arg == "device" for k in node.keywords)
            ):
                missing.append(f"{mod.__name__}:{node.lineno} torch.{node.func.attr}")
    assert not missing, missing
