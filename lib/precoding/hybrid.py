"""Hybrid digital-analog downlink beamforming with codebook-based analog beams.

An ``M``-antenna transmitter with ``N_RF`` RF chains serves ``K`` single-antenna users
(Schynol and Pesavento, Sec. 2). User ``k``'s symbol is sent with power ``p_k`` along the hybrid
beam
``F_RF v_k``: the analog matrix ``F_RF`` ``(M, N_RF)`` has columns taken from a codebook
(linearly independent codewords), the digital weights ``v_k`` have unit norm. The SINR of
user ``k`` (their eqs. (2)-(3)) is

.. math::
    \\mathrm{SINR}_k = \\frac{p_k |h_k^H F v_k|^2}
    {\\sum_{j\\ne k} p_j |h_k^H F v_j|^2 + \\sigma^2},

and the allocated power is the weighted sum ``sum_k w_k p_k`` of their eq. (4): ``w_k = 1``
(baseband power, Hegde et al.) or ``w_k = ||F v_k||^2`` (radiated RF power).

For a fixed ``F_RF`` the digital problem (their eq. (12)) is the standard fully digital
minimum-power problem on the effective channel, solved by the virtual uplink of
:func:`lib.precoding.min_power_duality` (eqs. (16)-(23)), not a second copy:

* baseband weighting: effective channel ``H F``;
* RF weighting: with ``F^H F = L L^H`` (Cholesky) the columns of ``Q = F L^{-H}`` are
  orthonormal, ``||F v|| = ||L^H v||``, so the substitution ``t = L^H v`` turns the weighted
  problem into the standard one on ``H Q``; then ``v = L^{-H} t``.

The greedy correction algorithm (Hegde et al. 2017, Alg. 2; Schynol and Pesavento, eqs. (13)-(15))
replaces one RF chain's codeword at a time by the codeword that minimises the allocated power;
all candidate codewords of all instances are solved in one batched call. The initial
configuration is the heuristic of their eq. (34). Chapter: *Hybrid beamforming: arrays and
codebooks* (``book/hybrid_arrays_codebooks.ipynb``).

Every designer has the form ``designer(H, ..., sinr_targets, noise_var, **settings) ->
HybridResult`` and can be called with ``sinr_targets`` and ``noise_var`` as keywords (e.g.
``functools.partial(greedy_codebook_selection, codebook=C, n_rf=5)(H, sinr_targets=g,
noise_var=s2)``). Inputs are validated once at the entry; the greedy and exhaustive searches
call unchecked private cores. The family runs in complex64 and complex128 with tolerances
relative to the dtype (see :mod:`lib.precoding.power_min`) and is invariant to a common scaling
of ``H`` and the noise.

Shapes: ``H`` ``(B, K, M)`` rows ``h_k^H``; ``codebook`` ``(M, C)``; ``F_RF``
``(B, M, N_RF)``; ``V_bb`` ``(B, N_RF, K)``; ``powers`` ``(B, K)``.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch

from lib.core.checks import _real_dtype, check_complex, check_positive_int, check_real, per_user
from lib.precoding.common import _abs2, _check_H, _scalar
from lib.precoding.power_min import _check_settings, _min_power_core

__all__ = [
    "HybridResult",
    "hybrid_sinr",
    "power_weights",
    "digital_min_power",
    "fully_digital_min_power",
    "init_codewords",
    "independent_candidates",
    "greedy_codebook_selection",
    "exhaustive_search",
    "independence_tol",
]

_WEIGHTINGS = ("rf", "baseband")
#: Numerical-rank guard of the Cholesky factor of ``F^H F``: a pivot ``L_rr^2`` below
#: ``PIVOT_FACTOR * eps`` times the column energy means numerically dependent columns.
PIVOT_FACTOR = 64.0


class HybridResult(NamedTuple):
    """A hybrid beamformer and its power allocation (the output of every hybrid designer).

    Attributes
    ----------
    F_RF : torch.Tensor
        ``(B, M, N_RF)`` analog matrix.
    V_bb : torch.Tensor
        ``(B, N_RF, K)`` unit-norm digital weights (zero where infeasible).
    powers : torch.Tensor
        ``(B, K)`` downlink powers ``p_k`` (``+inf`` if infeasible).
    weighted_power : torch.Tensor
        ``(B,)`` the objective ``sum_k w_k p_k`` of eq. (4) (``+inf`` if infeasible).
    feasible : torch.Tensor
        ``(B,)`` bool: every SINR target is met (and, where given, the power cap).
    index : torch.Tensor or None
        ``(B, N_RF)`` codeword indices (``None`` when ``F_RF`` was given).
    history : torch.Tensor or None
        ``(B, steps + 1)`` weighted power after each greedy step (``None`` outside
        :func:`~lib.precoding.greedy_codebook_selection`).
    """

    F_RF: torch.Tensor
    V_bb: torch.Tensor
    powers: torch.Tensor
    weighted_power: torch.Tensor
    feasible: torch.Tensor
    index: torch.Tensor | None = None
    history: torch.Tensor | None = None

    def sinr(self, H: torch.Tensor, noise_var) -> torch.Tensor:
        """SINR of every user on channels ``H`` ``(B, K, M)`` (:func:`~lib.precoding.hybrid_sinr`),
        ``(B, K)``.

        Infeasible samples transmit nothing: their SINRs are 0.
        """
        p = torch.where(self.feasible[:, None], self.powers, torch.zeros_like(self.powers))
        return hybrid_sinr(H, self.F_RF, self.V_bb, p, noise_var)


# --------------------------------------------------------------------------- #
# Checks and tolerances
# --------------------------------------------------------------------------- #
def independence_tol(dtype: torch.dtype) -> float:
    """Default relative energy threshold of :func:`~lib.precoding.independent_candidates`.

    ``max(1e-6, 64 eps)``: ``1e-6`` in double precision, ``7.6e-6`` in single precision (the
    residual energy of a dependent codeword is computed with an error of a few ``eps``).
    """
    return max(1e-6, PIVOT_FACTOR * torch.finfo(dtype).eps)


def _check_F(F_RF, H):
    check_complex(F_RF, "F_RF", ndim=3)
    if F_RF.shape[0] != H.shape[0] or F_RF.shape[1] != H.shape[2] or F_RF.shape[2] == 0:
        raise ValueError(
            f"F_RF must have shape ({H.shape[0]}, {H.shape[2]}, N_RF >= 1), got {tuple(F_RF.shape)}"
        )
    if F_RF.dtype != H.dtype:
        raise TypeError(f"F_RF must have the dtype of H ({H.dtype}), got {F_RF.dtype}")


def _check_codebook(codebook, H):
    check_complex(codebook, "codebook", shape=(H.shape[2], "codewords"))
    if codebook.shape[1] == 0:
        raise ValueError("codebook must have at least one codeword (shape (M, C >= 1))")
    return codebook.to(dtype=H.dtype, device=H.device)


def _check_weighting(weighting):
    if weighting not in _WEIGHTINGS:
        raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {weighting!r}")


def _check_max_power(max_power):
    if max_power is None:
        return None
    if isinstance(max_power, bool) or not isinstance(max_power, (int, float)):
        raise TypeError(f"max_power must be None or a number, got {type(max_power).__name__}")
    if not (math.isfinite(max_power) and max_power > 0):
        raise ValueError(f"max_power must be finite and > 0, got {max_power}")
    return float(max_power)


def _solver_settings(solver_kw) -> dict:
    """Validate the settings passed on to the duality solver (``iters``, ``tol``,
    ``max_power_ratio``); unknown names are a ``TypeError``."""
    unknown = set(solver_kw) - {"iters", "tol", "max_power_ratio"}
    if unknown:
        raise TypeError(
            f"unknown solver settings {sorted(unknown)}; use iters, tol, max_power_ratio"
        )
    kw = {"iters": 500, "tol": None, "max_power_ratio": 1e12, **solver_kw}
    kw["iters"] = _check_settings(kw["iters"], kw["tol"], kw["max_power_ratio"])
    return kw


def _parse(H, sinr_targets, noise_var):
    B, K, _ = H.shape
    gam = per_user(sinr_targets, "sinr_targets", B, K, dtype=_real_dtype(H), device=H.device)
    return gam, _scalar(noise_var, "noise_var", H)


# --------------------------------------------------------------------------- #
# SINR and weights
# --------------------------------------------------------------------------- #
def _hybrid_sinr(H, F_RF, V_bb, powers, s2):
    G2 = _abs2(H @ F_RF @ V_bb) * powers[:, None, :]  # p_j |h_k^H F v_j|^2
    sig = torch.diagonal(G2, dim1=-2, dim2=-1)
    return sig / (G2.sum(-1) - sig + s2[:, None])


def hybrid_sinr(H, F_RF, V_bb, powers, noise_var) -> torch.Tensor:
    """SINR of every user, Schynol and Pesavento, eqs. (2)-(3).

    Parameters
    ----------
    H : torch.Tensor
        ``(B, K, M)`` complex channels.
    F_RF : torch.Tensor
        ``(B, M, N_RF)`` analog matrix, dtype of ``H``.
    V_bb : torch.Tensor
        ``(B, N_RF, K)`` digital weights.
    powers : torch.Tensor
        ``(B, K)`` real, finite, ``>= 0`` stream powers ``p_k``.
    noise_var : float or torch.Tensor
        ``sigma^2``, scalar or ``(B,)``, ``> 0``.

    Returns
    -------
    torch.Tensor
        ``(B, K)`` SINRs in the real dtype of ``H`` (zero for zero power).
    """
    _check_H(H)
    _check_F(F_RF, H)
    B, K, _ = H.shape
    check_complex(V_bb, "V_bb", shape=(B, F_RF.shape[2], K))
    check_real(powers, "powers", shape=(B, K))
    if bool((powers < 0).any()):
        raise ValueError(f"powers must be >= 0, got min {float(powers.min()):.4g}")
    s2 = _scalar(noise_var, "noise_var", H)
    rdt = _real_dtype(H)
    return _hybrid_sinr(H, F_RF, V_bb.to(H.dtype), powers.to(dtype=rdt, device=H.device), s2)


def power_weights(F_RF, V_bb, weighting: str = "rf") -> torch.Tensor:
    """Power weights ``w_k`` of eq. (4): ``||F v_k||^2`` (``"rf"``) or ``1`` (``"baseband"``).

    Parameters
    ----------
    F_RF : torch.Tensor
        ``(B, M, N_RF)`` analog matrix.
    V_bb : torch.Tensor
        ``(B, N_RF, K)`` digital weights.
    weighting : {"rf", "baseband"}

    Returns
    -------
    torch.Tensor
        ``(B, K)`` real weights.
    """
    _check_weighting(weighting)
    check_complex(V_bb, "V_bb", ndim=3)
    if weighting == "baseband":
        return torch.ones(V_bb.shape[0], V_bb.shape[2], dtype=V_bb.real.dtype, device=V_bb.device)
    check_complex(F_RF, "F_RF", shape=(V_bb.shape[0], "M", V_bb.shape[1]))
    return _abs2(F_RF @ V_bb).sum(-2)


# --------------------------------------------------------------------------- #
# Digital sub-problem
# --------------------------------------------------------------------------- #
def _gram_cholesky(F):
    """Cholesky ``F^H F = L L^H`` of ``(n, M, R)`` with a numerical-rank guard.

    Returns ``(L, ok)``; ``ok`` is False where the factorisation failed or a pivot is below
    ``PIVOT_FACTOR * eps`` times its column energy (numerically dependent columns).
    """
    G = F.mH @ F
    L, info = torch.linalg.cholesky_ex(G)
    eps = torch.finfo(_real_dtype(F)).eps
    piv = _abs2(torch.diagonal(L, dim1=-2, dim2=-1))
    colE = torch.diagonal(G, dim1=-2, dim2=-1).real
    ok = (info == 0) & (piv > PIVOT_FACTOR * eps * colE).all(-1)
    return L, ok


def _solve_flat(Heff, gam, s2, chol, weighting, kw):
    """Digital sub-problem for a flat batch ``Heff = H F`` ``(n, K, R)``, unchecked.

    ``chol`` is ``(L, ok)`` of ``_gram_cholesky`` for RF weighting (``None`` for baseband).
    Returns ``V_bb, p, weighted, feasible``.
    """
    Rr = Heff.shape[-1]
    if weighting == "rf":
        L, ok_f = chol
        eye = torch.eye(Rr, dtype=L.dtype, device=L.device)
        Lsafe = torch.where(ok_f[:, None, None], L, eye)
        # H Q = H F L^{-H}: solve X L^H = H F  <=>  L X^H = (H F)^H
        HQ = torch.linalg.solve_triangular(Lsafe, Heff.mH, upper=False).mH
        T, up, feas = _min_power_core(HQ, gam, s2, **kw)
        T = torch.linalg.solve_triangular(Lsafe.mH, T, upper=True)  # v = L^{-H} t
        feas = feas & ok_f
    else:
        T, up, feas = _min_power_core(Heff, gam, s2, **kw)
    p = _abs2(T).sum(-2)
    tiny = torch.finfo(p.dtype).tiny
    V = T / p.sqrt().clamp_min(tiny).to(T.dtype)[:, None, :]
    wsum = up.sum(-1)  # sum of the standard problem's powers = weighted downlink power
    p = torch.where(feas[:, None], p, torch.full_like(p, torch.inf))
    wsum = torch.where(feas, wsum, torch.full_like(wsum, torch.inf))
    return V, p, wsum, feas


def _digital(H, F_RF, gam, s2, weighting, max_power, kw) -> HybridResult:
    """:func:`~lib.precoding.digital_min_power` without input checks."""
    chol = _gram_cholesky(F_RF) if weighting == "rf" else None
    V, p, w, feas = _solve_flat(H @ F_RF, gam, s2, chol, weighting, kw)
    if max_power is not None:
        feas = feas & (w <= max_power)
        p = torch.where(feas[:, None], p, torch.full_like(p, torch.inf))
        w = torch.where(feas, w, torch.full_like(w, torch.inf))
    return HybridResult(F_RF, V, p, w, feas)


def digital_min_power(
    H,
    F_RF,
    sinr_targets,
    noise_var,
    *,
    weighting: str = "rf",
    max_power: float | None = None,
    **solver_kw,
) -> HybridResult:
    """Digital sub-problem (12) for a fixed analog matrix, by the virtual uplink (16)-(23).

    Minimises ``sum_k w_k p_k`` s.t. ``SINR_k >= gamma_k`` with the weights of eq. (4).
    Linearly dependent columns of ``F_RF`` are reported infeasible under RF weighting.

    Parameters
    ----------
    H : torch.Tensor
        ``(B, K, M)`` complex channels.
    F_RF : torch.Tensor
        ``(B, M, N_RF)`` analog matrix, dtype of ``H``.
    sinr_targets : float or torch.Tensor
        ``gamma_k`` (linear): scalar, ``(K,)`` or ``(B, K)``, finite, ``> 0``.
    noise_var : float or torch.Tensor
        ``sigma^2``: scalar or ``(B,)``, ``> 0``.
    weighting : {"rf", "baseband"}
        Power weights of eq. (4).
    max_power : float, optional
        Samples whose weighted power exceeds it are infeasible.
    **solver_kw
        ``iters``, ``tol``, ``max_power_ratio`` of :func:`lib.precoding.min_power_duality`.

    Returns
    -------
    HybridResult
        ``index`` and ``history`` are ``None``.
    """
    _check_H(H)
    _check_F(F_RF, H)
    _check_weighting(weighting)
    max_power = _check_max_power(max_power)
    kw = _solver_settings(solver_kw)
    gam, s2 = _parse(H, sinr_targets, noise_var)
    return _digital(H, F_RF, gam, s2, weighting, max_power, kw)


def fully_digital_min_power(H, sinr_targets, noise_var, **solver_kw) -> HybridResult:
    """Fully digital minimum power (``F_RF = I``, one RF chain per antenna): the lower bound.

    Any hybrid beam ``F v_k`` with RF weighting is a feasible fully digital beam of the same
    radiated power, so this is a lower bound on the RF-weighted hybrid power (Schynol and Pesavento,
    Sec. 5, "FD" curves).

    Parameters
    ----------
    H : torch.Tensor
        ``(B, K, M)`` complex channels.
    sinr_targets, noise_var
        As in :func:`~lib.precoding.digital_min_power`.
    **solver_kw
        ``iters``, ``tol``, ``max_power_ratio`` of :func:`lib.precoding.min_power_duality`.

    Returns
    -------
    HybridResult
        ``F_RF`` the identity ``(B, M, M)``, ``V_bb`` ``(B, M, K)`` unit-norm beams.
    """
    _check_H(H)
    kw = _solver_settings(solver_kw)
    gam, s2 = _parse(H, sinr_targets, noise_var)
    B, K, N = H.shape
    V, p, feas = _min_power_core(H, gam, s2, **kw)
    F = torch.eye(N, dtype=H.dtype, device=H.device).expand(B, N, N)
    tiny = torch.finfo(p.dtype).tiny
    V = V / p.sqrt().clamp_min(tiny).to(H.dtype)[:, None, :]
    V = torch.where(feas[:, None, None], V, torch.zeros_like(V))
    return HybridResult(F, V, p, p.sum(-1), feas)


# --------------------------------------------------------------------------- #
# Codeword selection
# --------------------------------------------------------------------------- #
def _residual_energy(Fsel: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Energy of each codeword outside span(Fsel): ``(B, C)``; Fsel ``(B, M, r)``."""
    energy = _abs2(codebook).sum(0)
    if Fsel.shape[-1] == 0:
        return energy.expand(Fsel.shape[0], -1)
    Q, _ = torch.linalg.qr(Fsel)
    proj = Q.mH @ codebook  # (B, r, C)
    return energy - _abs2(proj).sum(-2)


def _independent(F_others, cb, tol):
    return _residual_energy(F_others, cb) > tol * _abs2(cb).sum(0)


def independent_candidates(
    F_others: torch.Tensor, codebook: torch.Tensor, *, tol: float | None = None
) -> torch.Tensor:
    """Mask of codewords linearly independent of the columns of ``F_others``.

    Parameters
    ----------
    F_others : torch.Tensor
        ``(B, M, r)`` complex (``r`` may be 0).
    codebook : torch.Tensor
        ``(M, C)`` complex.
    tol : float, optional
        A codeword is independent when its energy outside ``span(F_others)`` exceeds ``tol``
        times its energy; default :func:`~lib.precoding.independence_tol` of the dtype.

    Returns
    -------
    torch.Tensor
        ``(B, C)`` bool.
    """
    check_complex(F_others, "F_others", ndim=3)
    check_complex(codebook, "codebook", shape=(F_others.shape[1], "codewords"))
    if tol is None:
        tol = independence_tol(_real_dtype(F_others))
    elif not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and 0 < tol < 1):
        raise ValueError(f"tol must be None or a number in (0, 1), got {tol!r}")
    return _independent(F_others, codebook.to(dtype=F_others.dtype, device=F_others.device), tol)


def _init_codewords(H, cb, n_rf):
    tiny = torch.finfo(_real_dtype(H)).tiny
    Hn = H / _abs2(H).sum(-1, keepdim=True).sqrt().clamp_min(tiny)
    score = _abs2(Hn @ cb).sum(1)  # (B, C)
    B = H.shape[0]
    tol = independence_tol(_real_dtype(H))
    idx = torch.empty(B, n_rf, dtype=torch.long, device=H.device)
    for r in range(n_rf):
        Fsel = cb[:, idx[:, :r]].permute(1, 0, 2)
        ok = _independent(Fsel, cb, tol)
        idx[:, r] = torch.where(ok, score, -torch.inf).argmax(-1)
    return idx


def init_codewords(H, codebook, n_rf: int) -> torch.Tensor:
    """Initial analog configuration, heuristic (34) of Schynol and Pesavento: indices ``(B, N_RF)``.

    Scores each codeword by ``sum_k |h_k^H f|^2 / ||h_k||^2`` (the beamforming gain towards the
    users' normalised channels) and picks the ``n_rf`` best-scoring codewords, skipping any that
    is linearly dependent on those already picked.

    Parameters
    ----------
    H : torch.Tensor
        ``(B, K, M)`` complex channels.
    codebook : torch.Tensor
        ``(M, C)`` complex codewords.
    n_rf : int
        ``N_RF``, ``1 <= n_rf <= M``.

    Returns
    -------
    torch.Tensor
        ``(B, N_RF)`` long codeword indices on the device of ``H``.
    """
    _check_H(H)
    cb = _check_codebook(codebook, H)
    n_rf = check_positive_int(n_rf, "n_rf")
    if n_rf > H.shape[2]:
        raise ValueError(f"n_rf must be <= M = {H.shape[2]}, got {n_rf}")
    return _init_codewords(H, cb, n_rf)


def _check_n_rf(n_rf, H, cb):
    n_rf = check_positive_int(n_rf, "n_rf")
    if n_rf > min(H.shape[2], cb.shape[1]):
        raise ValueError(f"n_rf must be <= min(M, C) = {min(H.shape[2], cb.shape[1])}, got {n_rf}")
    return n_rf


def greedy_codebook_selection(
    H,
    codebook,
    n_rf: int,
    sinr_targets,
    noise_var,
    *,
    n_steps: int | None = None,
    weighting: str = "rf",
    init: torch.Tensor | None = None,
    max_power: float | None = None,
    chunk: int = 16384,
    **solver_kw,
) -> HybridResult:
    """Greedy codeword correction (Hegde et al., Alg. 2; Schynol and Pesavento, eqs. (13)-(15)),
    batched.

    Starting from ``init`` (default :func:`~lib.precoding.init_codewords`, eq. (34)), step ``t``
    updates RF
    chain ``r = t mod N_RF``: every codeword ``c`` linearly independent of the other chains is
    tried in its place, the digital sub-problem (12) is solved for all ``(instance, c)`` pairs
    in batched calls of the duality solver (eqs. (16)-(23)), and the codeword of least weighted
    power is kept (eq. (15)). The current codeword is a candidate, so the allocated power never
    increases. A candidate whose sub-problem is infeasible or numerically singular (e.g. a
    singular coupling matrix) is skipped, never raised.

    Parameters
    ----------
    H : torch.Tensor
        ``(B, K, M)`` complex channels (estimates, for an imperfect-CSI design).
    codebook : torch.Tensor
        ``(M, C)`` complex codewords (cast to the dtype of ``H``).
    n_rf : int
        ``N_RF``, at most ``min(M, C)``.
    sinr_targets, noise_var
        As in :func:`~lib.precoding.digital_min_power` (usable as keywords).
    n_steps : int, optional
        Number of greedy steps (``>= 0``); default one sweep (``N_RF`` steps).
    weighting : {"rf", "baseband"}
        Power weights of eq. (4).
    init : torch.Tensor, optional
        ``(B, N_RF)`` integer codeword indices of the start.
    max_power : float, optional
        Designs above it are infeasible (and candidates above it are not taken).
    chunk : int
        Largest number of candidate problems solved in one batched call.
    **solver_kw
        ``iters``, ``tol``, ``max_power_ratio`` of :func:`lib.precoding.min_power_duality`.

    Returns
    -------
    HybridResult
        With ``index`` ``(B, N_RF)`` and ``history`` ``(B, n_steps + 1)``.
    """
    _check_H(H)
    cb = _check_codebook(codebook, H)
    _check_weighting(weighting)
    n_rf = _check_n_rf(n_rf, H, cb)
    n_steps = n_rf if n_steps is None else check_positive_int(n_steps, "n_steps", minimum=0)
    chunk = check_positive_int(chunk, "chunk")
    max_power = _check_max_power(max_power)
    kw = _solver_settings(solver_kw)
    gam, s2 = _parse(H, sinr_targets, noise_var)
    B, K, N = H.shape
    C = cb.shape[1]
    rdt = _real_dtype(H)
    if init is None:
        idx = _init_codewords(H, cb, n_rf)
    else:
        if not isinstance(init, torch.Tensor) or init.dtype.is_floating_point or init.is_complex():
            raise TypeError("init must be an integer torch.Tensor of codeword indices")
        if init.shape != (B, n_rf):
            raise ValueError(f"init must have shape ({B}, {n_rf}), got {tuple(init.shape)}")
        if bool(((init < 0) | (init >= C)).any()):
            raise ValueError(f"init must hold codeword indices in [0, {C})")
        idx = init.to(dtype=torch.long, device=H.device).clone()
    tol_ind = independence_tol(rdt)

    def evaluate(idx_):
        F = cb[:, idx_].permute(1, 0, 2)
        return _digital(H, F, gam, s2, weighting, max_power, kw)

    cur = evaluate(idx)
    hist = [cur.weighted_power]
    HC = H @ cb  # (B, K, C): h_k^H c for every codeword
    g_flat = gam[:, None].expand(B, C, K).reshape(B * C, K)
    s_flat = s2[:, None].expand(B, C).reshape(B * C)
    for t in range(n_steps):
        r = t % n_rf
        others = torch.cat([idx[:, :r], idx[:, r + 1 :]], 1)
        ok = _independent(cb[:, others].permute(1, 0, 2), cb, tol_ind)  # (B, C)
        # effective channels of all candidates: (B, C, K, n_rf)
        He = (H @ cb[:, idx].permute(1, 0, 2))[:, None].expand(B, C, K, n_rf).clone()
        He[..., r] = HC.permute(0, 2, 1)
        He = He.reshape(B * C, K, n_rf)
        if weighting == "rf":
            Fc = cb[:, idx].permute(1, 0, 2)[:, None].expand(B, C, N, n_rf).clone()
            Fc[..., r] = cb.T[None]
            Fc = Fc.reshape(B * C, N, n_rf)
        wsum = torch.empty(B * C, dtype=rdt, device=H.device)
        for s in range(0, B * C, chunk):
            sl = slice(s, s + chunk)
            chol = _gram_cholesky(Fc[sl]) if weighting == "rf" else None
            _, _, w, _ = _solve_flat(He[sl], g_flat[sl], s_flat[sl], chol, weighting, kw)
            wsum[sl] = w
        wsum = wsum.reshape(B, C)
        wsum = torch.where(ok, wsum, torch.inf)
        if max_power is not None:
            wsum = torch.where(wsum <= max_power, wsum, torch.inf)
        best_w, best = wsum.min(-1)
        improve = best_w < cur.weighted_power
        idx = idx.clone()
        idx[:, r] = torch.where(improve, best, idx[:, r])
        cur = evaluate(idx)
        hist.append(cur.weighted_power)
    return cur._replace(index=idx, history=torch.stack(hist, -1))


def exhaustive_search(
    H,
    codebook,
    n_rf: int,
    sinr_targets,
    noise_var,
    *,
    weighting: str = "rf",
    chunk: int = 16384,
    **solver_kw,
) -> HybridResult:
    """Optimal codeword selection: the digital sub-problem for every set of ``N_RF`` codewords.

    All ``C choose N_RF`` configurations (column order is irrelevant) of all instances are
    solved in batched calls; linearly dependent sets are skipped (Schynol and Pesavento, Sec. 5, the
    "optimal" reference). For small instances only.

    Parameters
    ----------
    H, codebook, n_rf, sinr_targets, noise_var, weighting, chunk, **solver_kw
        As in :func:`~lib.precoding.greedy_codebook_selection`.

    Returns
    -------
    HybridResult
        With ``index`` ``(B, N_RF)`` (sorted codeword indices of the best set).
    """
    _check_H(H)
    cb = _check_codebook(codebook, H)
    _check_weighting(weighting)
    n_rf = _check_n_rf(n_rf, H, cb)
    chunk = check_positive_int(chunk, "chunk")
    kw = _solver_settings(solver_kw)
    gam, s2 = _parse(H, sinr_targets, noise_var)
    B, K, N = H.shape
    rdt = _real_dtype(H)
    combos = torch.tensor(
        list(itertools.combinations(range(cb.shape[1]), n_rf)), dtype=torch.long, device=H.device
    )
    M = combos.shape[0]
    Fall = cb[:, combos].permute(1, 0, 2)  # (M, N, n_rf)
    sv = torch.linalg.svdvals(Fall)
    indep = sv[:, -1] > independence_tol(rdt) * sv[:, 0]
    best_w = torch.full((B,), torch.inf, dtype=rdt, device=H.device)
    best_m = torch.zeros(B, dtype=torch.long, device=H.device)
    per = max(1, chunk // B)
    for s in range(0, M, per):
        Fm = Fall[s : s + per]
        m = Fm.shape[0]
        He = (H[:, None] @ Fm[None]).reshape(B * m, K, n_rf)
        chol = None
        if weighting == "rf":
            chol = _gram_cholesky(Fm[None].expand(B, m, N, n_rf).reshape(B * m, N, n_rf))
        g = gam[:, None].expand(B, m, K).reshape(B * m, K)
        sf = s2[:, None].expand(B, m).reshape(B * m)
        _, _, w, _ = _solve_flat(He, g, sf, chol, weighting, kw)
        w = torch.where(indep[s : s + m][None], w.reshape(B, m), torch.inf)
        wb, mb = w.min(-1)
        better = wb < best_w
        best_w = torch.where(better, wb, best_w)
        best_m = torch.where(better, mb + s, best_m)
    idx = combos[best_m]
    F = cb[:, idx].permute(1, 0, 2)
    return _digital(H, F, gam, s2, weighting, None, kw)._replace(index=idx)
