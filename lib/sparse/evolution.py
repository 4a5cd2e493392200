"""State evolution of AMP by deterministic quadrature (Bayati and Montanari 2011), its fixed
point, the optimal threshold multiplier and the LASSO weight calibrated to it. Chapter:
*Sparse recovery*.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lib.core.checks import check_positive_int
from lib.sparse.common import _check_pos_float, _check_prob
from lib.sparse.message_passing import DEFAULT_ALPHA

__all__ = ["state_evolution", "se_fixed_point", "optimal_alpha", "calibrated_lambda"]


# --------------------------------------------------------------------------- #
# State evolution (deterministic quadrature)
# --------------------------------------------------------------------------- #
def _parse_delta(delta) -> float:
    if isinstance(delta, tuple):
        if len(delta) != 2:
            raise ValueError(f"delta must be M/N or a tuple (M, N), got {delta!r}")
        m = check_positive_int(delta[0], "M")
        n = check_positive_int(delta[1], "N")
        return m / n
    return _check_pos_float(delta, "delta")


def _np_denoiser(denoiser, alpha, p, signal_var):
    """Scalar denoiser on NumPy arrays: ``f(r, tau2) -> xhat``."""
    if callable(denoiser):

        def f(r, tau2):
            out = denoiser(torch.as_tensor(r), torch.tensor(tau2, dtype=torch.float64))
            out = out[0] if isinstance(out, tuple) else out
            return out.detach().numpy()

        return f
    if denoiser == "soft":
        alpha = _check_pos_float(alpha, "alpha", allow_zero=True)
        return lambda r, tau2: np.sign(r) * np.maximum(np.abs(r) - alpha * math.sqrt(tau2), 0.0)
    if denoiser in ("bg", "mmse"):
        if p is None:
            raise ValueError("the Bernoulli-Gaussian denoiser needs the sparsity p (p=...)")
        return lambda r, tau2: _np_bg_mean(r, tau2, p, signal_var)
    raise ValueError(f"denoiser must be 'soft', 'bg' or a callable, got {denoiser!r}")


def _np_bg_mean(r, tau2, p, s):
    g = s / (s + tau2)
    prior_logit = math.log(p) - math.log1p(-p) if p < 1 else 1e30
    llr = prior_logit + 0.5 * math.log(tau2 / (s + tau2)) + 0.5 * r**2 * g / tau2
    pi = 0.5 * (1 + np.tanh(0.5 * llr))
    return pi * g * r


def _scalar_mse(eta, tau2: float, p: float, s: float, n_grid: int) -> tuple[float, float]:
    """``E[(eta(X + sqrt(tau2) Z) - X)^2]`` and the mean derivative ``E[eta']``, by quadrature.

    The two prior components are integrated separately. For ``X = 0``: ``R = sqrt(tau2) Z``.
    For ``X ~ N(0, s)``: ``R ~ N(0, s + tau2)`` and ``X | R ~ N(g R, g tau2)``,
    ``g = s/(s+tau2)``, so the error is ``E_R[(eta(R) - g R)^2] + g tau2``. Each is a 1-D
    integral over a grid fine at both scales ``sqrt(tau2)`` and ``sqrt(s + tau2)``.
    ``E[eta']`` uses finite differences of ``eta`` on the grid. Returns ``(mse, mean derivative)``.
    """
    sd0, sd1 = math.sqrt(tau2), math.sqrt(s + tau2)
    grid = np.unique(
        np.concatenate(
            [np.linspace(-12 * sd0, 12 * sd0, n_grid), np.linspace(-12 * sd1, 12 * sd1, n_grid)]
        )
    )
    e = eta(grid, tau2)
    dens0 = np.exp(-0.5 * grid**2 / tau2) / math.sqrt(2 * math.pi * tau2)
    dens1 = np.exp(-0.5 * grid**2 / (s + tau2)) / math.sqrt(2 * math.pi * (s + tau2))
    g = s / (s + tau2)
    trap = np.trapezoid
    mse0 = trap(dens0 * e**2, grid)
    mse1 = trap(dens1 * (e - g * grid) ** 2, grid) + g * tau2
    de = np.gradient(e, grid)
    dmean = (1 - p) * trap(dens0 * de, grid) + p * trap(dens1 * de, grid)
    return (1 - p) * mse0 + p * mse1, float(dmean)


def state_evolution(
    delta,
    p: float,
    noise_var: float,
    iters: int,
    *,
    denoiser="soft",
    alpha: float = DEFAULT_ALPHA,
    signal_var: float = 1.0,
    n_grid: int = 4001,
    full: bool = False,
):
    """AMP's state evolution: the predicted NMSE (linear) of ``x_t`` for ``t = 1..iters``.

    The scalar recursion (Bayati and Montanari 2011) for ``x_0 = 0``:

    ``tau2_0 = sigma^2 + p s / delta``,
    ``mse_{t+1} = E[(eta(X + tau_t Z; tau2_t) - X)^2]``,
    ``tau2_{t+1} = sigma^2 + mse_{t+1} / delta``,

    with ``X`` Bernoulli-Gaussian, ``Z ~ N(0, 1)``, ``delta = M/N`` (pass a float or a
    tuple ``(M, N)``), ``s = signal_var``. The expectation is a deterministic 1-D quadrature
    (see ``_scalar_mse``). Entry ``t - 1`` of the result predicts ``nmse(x_t, x)`` of
    :func:`amp` with the same denoiser. With ``full=True`` returns a dict with ``nmse``,
    ``mse``, ``tau2`` (the effective noise variance feeding iteration t) and ``dmean``
    (the mean derivative ``<eta'>``).
    """
    delta = _parse_delta(delta)
    p = _check_prob(p)
    noise_var = _check_pos_float(noise_var, "noise_var", allow_zero=True)
    iters = check_positive_int(iters, "iters")
    s = _check_pos_float(signal_var, "signal_var")
    eta = _np_denoiser(denoiser, alpha, p, s)
    tau2 = noise_var + p * s / delta
    mses, taus, dms = [], [], []
    for _ in range(iters):
        tau2 = max(tau2, 1e-30)
        taus.append(tau2)
        mse, dm = _scalar_mse(eta, tau2, p, s, n_grid)
        mses.append(mse)
        dms.append(dm)
        tau2 = noise_var + mse / delta
    mse = np.asarray(mses)
    nm = mse / (p * s)
    if full:
        return {"nmse": nm, "mse": mse, "tau2": np.asarray(taus), "dmean": np.asarray(dms)}
    return nm


def se_fixed_point(
    delta,
    p: float,
    noise_var: float,
    *,
    denoiser="soft",
    alpha: float = DEFAULT_ALPHA,
    signal_var: float = 1.0,
    max_iters: int = 2000,
    rtol: float = 1e-7,
    n_grid: int = 4001,
) -> dict:
    """Run :func:`state_evolution` to its fixed point (relative change of ``tau2`` below ``rtol``).

    Returns a dict with ``nmse`` (linear), ``tau2``, ``dmean`` and ``iters`` (iterations used).
    With ``denoiser="bg"`` the fixed point's NMSE is the Bayes-optimal AMP limit.
    """
    delta = _parse_delta(delta)
    p = _check_prob(p)
    noise_var = _check_pos_float(noise_var, "noise_var", allow_zero=True)
    s = _check_pos_float(signal_var, "signal_var")
    eta = _np_denoiser(denoiser, alpha, p, s)
    tau2 = noise_var + p * s / delta
    used = max_iters
    for it in range(1, max_iters + 1):
        tau2 = max(tau2, 1e-30)
        mse, dm = _scalar_mse(eta, tau2, p, s, n_grid)
        new = noise_var + mse / delta
        converged = abs(new - tau2) <= rtol * tau2
        tau2 = new
        if converged:
            used = it
            break
    mse, dm = _scalar_mse(eta, tau2, p, s, n_grid)
    return {"nmse": mse / (p * s), "tau2": tau2, "dmean": dm, "iters": used}


def optimal_alpha(
    delta, p: float, noise_var: float, *, bounds=(0.3, 3.0), signal_var: float = 1.0
) -> tuple[float, float]:
    """The soft-threshold multiplier minimising AMP's state-evolution fixed-point NMSE.

    A bounded scalar search (``scipy.optimize.minimize_scalar``) over ``alpha`` in ``bounds``.
    Returns ``(alpha, nmse)`` with ``nmse`` linear.
    """
    from scipy.optimize import minimize_scalar

    def obj(a):
        fp = se_fixed_point(
            delta, p, noise_var, denoiser="soft", alpha=float(a), signal_var=signal_var, rtol=1e-6
        )
        return math.log(fp["nmse"])

    res = minimize_scalar(obj, bounds=bounds, method="bounded", options={"xatol": 1e-3})
    return float(res.x), float(math.exp(res.fun))


def calibrated_lambda(
    delta, p: float, noise_var: float, alpha: float, *, signal_var: float = 1.0
) -> float:
    """The LASSO ``lam`` whose solution AMP's soft-threshold fixed point is (large-system limit).

    At a fixed point of AMP, ``z (1 - <eta'>/delta) = y - A x`` and ``x = eta(x + A^T z; theta)``,
    which are the LASSO optimality conditions with
    ``lam = theta (1 - <eta'>/delta)``, ``theta = alpha tau`` (Donoho, Maleki and Montanari 2009;
    Bayati and Montanari 2012, eq. (1.8)).
    """
    delta = _parse_delta(delta)
    fp = se_fixed_point(delta, p, noise_var, denoiser="soft", alpha=alpha, signal_var=signal_var)
    return float(alpha * math.sqrt(fp["tau2"]) * (1 - fp["dmean"] / delta))
