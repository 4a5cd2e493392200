"""State evolution of AMP by deterministic quadrature (Bayati and Montanari 2011), its fixed
point, the optimal threshold multiplier and the LASSO weight calibrated to it. Sparse recovery
chapter (``book/sparse_recovery.ipynb``, eq. ``eq-sparse-se``).

The scalar denoisers are those of :func:`lib.sparse.amp` (the cores of
:mod:`lib.sparse.denoisers`, evaluated on float64 tensors), so the prediction and the algorithm
share one formula.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lib.core.checks import check_number, check_positive_int
from lib.sparse.common import _check_pos_float, _check_prob
from lib.sparse.denoisers import _bg_mmse_numpy, _soft_numpy
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
    """Scalar denoiser on NumPy arrays: ``f(r, tau2) -> xhat`` (``tau2`` a float)."""
    if callable(denoiser):

        def f(r, tau2):
            out = denoiser(torch.as_tensor(r), torch.tensor(tau2, dtype=torch.float64))
            out = out[0] if isinstance(out, tuple) else out
            return out.detach().numpy()

        return f
    if denoiser == "soft":
        alpha = _check_pos_float(alpha, "alpha", allow_zero=True)
        return lambda r, tau2: _soft_numpy(r, alpha * math.sqrt(tau2))
    if denoiser in ("bg", "mmse"):
        if p is None:
            raise ValueError("the Bernoulli-Gaussian denoiser needs the sparsity p (p=...)")
        p = _check_prob(p)
        return lambda r, tau2: _bg_mmse_numpy(r, tau2, p, signal_var)
    raise ValueError(f"denoiser must be 'soft', 'bg' or a callable, got {denoiser!r}")


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

    The scalar recursion (Bayati and Montanari 2011; Sparse recovery chapter, eq.
    ``eq-sparse-se``) for ``x_0 = 0``:

    ``tau2_0 = sigma^2 + p s / delta``,
    ``mse_{t+1} = E[(eta(X + tau_t Z; tau2_t) - X)^2]``,
    ``tau2_{t+1} = sigma^2 + mse_{t+1} / delta``,

    with ``X`` Bernoulli-Gaussian, ``Z ~ N(0, 1)`` and ``s = signal_var``. The expectation is a
    deterministic 1-D quadrature (see ``_scalar_mse``). Entry ``t - 1`` of the result predicts
    ``nmse(x_t, x)`` of :func:`~lib.sparse.amp` with the same denoiser.

    Parameters
    ----------
    delta : float or (int, int)
        ``delta = M/N > 0``, or the pair ``(M, N)``.
    p : float
        Sparsity in ``(0, 1]``.
    noise_var : float
        ``sigma^2 >= 0``.
    iters : int
        ``T``, number of iterations.
    denoiser : {"soft", "bg"} or callable
        As in :func:`~lib.sparse.amp` (a callable gets a float64 tensor ``r`` and a 0-d ``tau2``).
    alpha : float
        Threshold multiplier of the soft denoiser, ``>= 0``.
    signal_var : float
        ``s > 0``.
    n_grid : int
        Quadrature points per scale, ``>= 3``.
    full : bool
        Return the full recursion instead of the NMSE only.

    Returns
    -------
    numpy.ndarray or dict
        ``(T,)`` predicted NMSE (linear); with ``full=True`` a dict with ``nmse``, ``mse``,
        ``tau2`` (the effective noise variance feeding iteration t) and ``dmean`` (the mean
        derivative ``<eta'>``), each ``(T,)``.
    """
    delta = _parse_delta(delta)
    p = _check_prob(p)
    noise_var = _check_pos_float(noise_var, "noise_var", allow_zero=True)
    iters = check_positive_int(iters, "iters")
    s = _check_pos_float(signal_var, "signal_var")
    n_grid = check_positive_int(n_grid, "n_grid", minimum=3)
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
    """Run :func:`~lib.sparse.state_evolution` to its fixed point (relative change of ``tau2``
    below ``rtol``).

    With ``denoiser="bg"`` the fixed point's NMSE is the Bayes-optimal AMP limit.

    Parameters
    ----------
    delta, p, noise_var, denoiser, alpha, signal_var, n_grid
        As in :func:`~lib.sparse.state_evolution`.
    max_iters : int
        Iteration budget, ``>= 1``.
    rtol : float
        Relative tolerance on ``tau2``, ``> 0``.

    Returns
    -------
    dict
        ``nmse`` (linear), ``tau2``, ``dmean``, ``iters`` (iterations used) and ``converged``
        (``False`` when ``max_iters`` ran out before the tolerance was met).
    """
    delta = _parse_delta(delta)
    p = _check_prob(p)
    noise_var = _check_pos_float(noise_var, "noise_var", allow_zero=True)
    s = _check_pos_float(signal_var, "signal_var")
    max_iters = check_positive_int(max_iters, "max_iters")
    rtol = check_number(rtol, "rtol", lo=0.0, lo_open=True)
    n_grid = check_positive_int(n_grid, "n_grid", minimum=3)
    eta = _np_denoiser(denoiser, alpha, p, s)
    tau2 = noise_var + p * s / delta
    used, converged = max_iters, False
    for it in range(1, max_iters + 1):
        tau2 = max(tau2, 1e-30)
        mse, dm = _scalar_mse(eta, tau2, p, s, n_grid)
        new = noise_var + mse / delta
        converged = bool(abs(new - tau2) <= rtol * tau2)
        tau2 = new
        if converged:
            used = it
            break
    mse, dm = _scalar_mse(eta, tau2, p, s, n_grid)
    return {
        "nmse": mse / (p * s),
        "tau2": tau2,
        "dmean": dm,
        "iters": used,
        "converged": converged,
    }


def optimal_alpha(
    delta, p: float, noise_var: float, *, bounds=(0.3, 3.0), signal_var: float = 1.0
) -> tuple[float, float]:
    """The soft-threshold multiplier minimising AMP's state-evolution fixed-point NMSE.

    A bounded scalar search (``scipy.optimize.minimize_scalar``) over ``alpha`` in ``bounds``.

    Parameters
    ----------
    delta, p, noise_var, signal_var
        As in :func:`~lib.sparse.state_evolution`.
    bounds : (float, float)
        Search interval ``0 <= lo < hi``.

    Returns
    -------
    (float, float)
        ``(alpha, nmse)`` with ``nmse`` linear.
    """
    from scipy.optimize import minimize_scalar

    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise TypeError(f"bounds must be a pair (lo, hi), got {bounds!r}")
    lo = check_number(bounds[0], "bounds[0]", lo=0.0)
    check_number(bounds[1], "bounds[1]", lo=lo, lo_open=True)
    _parse_delta(delta)
    _check_prob(p)
    _check_pos_float(noise_var, "noise_var", allow_zero=True)
    _check_pos_float(signal_var, "signal_var")

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

    Parameters
    ----------
    delta, p, noise_var, signal_var
        As in :func:`~lib.sparse.state_evolution`.
    alpha : float
        AMP's threshold multiplier, ``>= 0``.

    Returns
    -------
    float
        The LASSO weight ``lam`` for :func:`lib.sparse.ista` / :func:`lib.sparse.fista`.
    """
    delta = _parse_delta(delta)
    alpha = _check_pos_float(alpha, "alpha", allow_zero=True)
    fp = se_fixed_point(delta, p, noise_var, denoiser="soft", alpha=alpha, signal_var=signal_var)
    return float(alpha * math.sqrt(fp["tau2"]) * (1 - fp["dmean"] / delta))
