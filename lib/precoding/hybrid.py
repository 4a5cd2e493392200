"""Hybrid digital-analog downlink beamforming with codebook-based analog beams.

An ``N``-antenna transmitter with ``N_RF`` RF chains serves ``K`` single-antenna users
(Schynol et al., Sec. 2). User ``k``'s symbol is sent with power ``p_k`` along the hybrid beam
``F_RF v_k``: the analog matrix ``F_RF`` ``(N, N_RF)`` has columns taken from a codebook
(linearly independent codewords), the digital weights ``v_k`` have unit norm. The SINR of
user ``k`` (their eqs. (2)-(3)) is

.. math::
    \\mathrm{SINR}_k = \\frac{p_k |h_k^H F v_k|^2}
    {\\sum_{j\\ne k} p_j |h_k^H F v_j|^2 + \\sigma^2},

and the allocated power is the weighted sum ``sum_k w_k p_k`` of their eq. (4): ``w_k = 1``
(baseband power, Hegde et al.) or ``w_k = ||F v_k||^2`` (radiated RF power).

For a fixed ``F_RF`` the digital problem (their eq. (12)) is the standard fully digital
minimum-power problem on the effective channel, solved by
:func:`lib.precoding.min_power_duality` (virtual uplink, eqs. (16)-(23)), not a second copy:

* baseband weighting: effective channel ``H F``;
* RF weighting: with ``F^H F = L L^H`` (Cholesky) the columns of ``Q = F L^{-H}`` are
  orthonormal, ``||F v|| = ||L^H v||``, so the substitution ``t = L^H v`` turns the weighted
  problem into the standard one on ``H Q``; then ``v = L^{-H} t``.

The greedy correction algorithm (Hegde et al. 2017, Alg. 2; Schynol et al., eqs. (13)-(15))
replaces one RF chain's codeword at a time by the codeword that minimises the allocated power;
all candidate codewords of all instances are solved in one batched call. The initial
configuration is the heuristic of their eq. (34).

Shapes: ``H`` ``(batch, users, N)`` rows ``h_k^H``; ``codebook`` ``(N, C)``; ``F_RF``
``(batch, N, N_RF)``; ``V_bb`` ``(batch, N_RF, users)``; ``powers`` ``(batch, users)``.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch

from lib.core.checks import check_complex, check_positive_int, per_sample
from lib.precoding.power_min import min_power_duality

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
]

_WEIGHTINGS = ("rf", "baseband")


class HybridResult(NamedTuple):
    """A hybrid beamformer and its power allocation.

    ``F_RF`` ``(batch, N, N_RF)``; ``V_bb`` ``(batch, N_RF, users)`` unit-norm digital weights;
    ``powers`` ``(batch, users)`` downlink powers ``p_k`` (``+inf`` if infeasible);
    ``weighted_power`` ``(batch,)`` the objective ``sum_k w_k p_k`` of eq. (4) (``+inf`` if
    infeasible); ``feasible`` ``(batch,)`` bool; ``index`` ``(batch, N_RF)`` codeword indices
    (``None`` when ``F_RF`` was given); ``history`` ``(batch, steps + 1)`` weighted power after
    each greedy step (``None`` outside :func:`greedy_codebook_selection`).
    """

    F_RF: torch.Tensor
    V_bb: torch.Tensor
    powers: torch.Tensor
    weighted_power: torch.Tensor
    feasible: torch.Tensor
    index: torch.Tensor | None = None
    history: torch.Tensor | None = None


def _check_F(F_RF, H):
    check_complex(F_RF, "F_RF", ndim=3)
    if F_RF.shape[0] != H.shape[0] or F_RF.shape[1] != H.shape[2]:
        raise ValueError(
            f"F_RF must have shape ({H.shape[0]}, {H.shape[2]}, n_rf), got {tuple(F_RF.shape)}"
        )
    if F_RF.dtype != H.dtype:
        raise TypeError(f"F_RF must have the dtype of H ({H.dtype}), got {F_RF.dtype}")


def _check_weighting(weighting):
    if weighting not in _WEIGHTINGS:
        raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {weighting!r}")


def hybrid_sinr(H, F_RF, V_bb, powers, noise_var) -> torch.Tensor:
    """SINR of every user, eqs. (2)-(3): ``(batch, users)`` (zero for zero power)."""
    check_complex(H, "H", ndim=3)
    _check_F(F_RF, H)
    B, K, _ = H.shape
    check_complex(V_bb, "V_bb", shape=(B, F_RF.shape[2], K))
    if not isinstance(powers, torch.Tensor) or powers.shape != (B, K):
        raise ValueError(f"powers must be a tensor of shape ({B}, {K})")
    s2 = per_sample(noise_var, "noise_var", B, dtype=powers.dtype, device=H.device)
    G2 = (H @ F_RF @ V_bb).abs().pow(2) * powers[:, None, :]  # p_j |h_k^H F v_j|^2
    sig = torch.diagonal(G2, dim1=-2, dim2=-1)
    return sig / (G2.sum(-1) - sig + s2[:, None])


def power_weights(F_RF, V_bb, weighting: str = "rf") -> torch.Tensor:
    """Power weights ``w_k`` of eq. (4): ``||F v_k||^2`` (``"rf"``) or ``1`` (``"baseband"``)."""
    _check_weighting(weighting)
    check_complex(V_bb, "V_bb", ndim=3)
    if weighting == "baseband":
        return torch.ones(V_bb.shape[0], V_bb.shape[2], dtype=V_bb.real.dtype, device=V_bb.device)
    return (F_RF @ V_bb).abs().pow(2).sum(-2)


def _solve_flat(Heff, gam, s2, chol, weighting, solver_kw):
    """Digital sub-problem for a flat batch ``Heff = H F`` ``(n, K, R)``.

    Returns ``V_bb, p, weighted, feasible``.
    """
    n, K, Rr = Heff.shape
    if weighting == "rf":
        L, info = chol
        ok_f = info == 0
        Lsafe = torch.where(ok_f[:, None, None], L, torch.eye(Rr, dtype=L.dtype, device=L.device))
        # H Q = H F L^{-H}: solve X L^H = H F  <=>  L X^H = (H F)^H
        HQ = torch.linalg.solve_triangular(Lsafe, Heff.mH, upper=False).mH.resolve_conj()
        res = min_power_duality(HQ, gam, s2, **solver_kw)
        T = torch.linalg.solve_triangular(Lsafe.mH, res.V, upper=True)  # v = L^{-H} t
        feas = res.feasible & ok_f
    else:
        res = min_power_duality(Heff, gam, s2, **solver_kw)
        T = res.V
        feas = res.feasible
    p = T.abs().pow(2).sum(-2)
    V = T / p.sqrt().clamp_min(torch.finfo(p.dtype).tiny).to(T.dtype)[:, None, :]
    wsum = res.powers.sum(-1)  # sum of uplink = weighted downlink power
    p = torch.where(feas[:, None], p, torch.inf)
    wsum = torch.where(feas, wsum, torch.inf)
    return V, p, wsum, feas


def _expand(value, B, name, dtype, device):
    return per_sample(value, name, B, dtype=dtype, device=device)


def _targets_bk(sinr_targets, B, K, dtype, device):
    g = torch.as_tensor(sinr_targets, dtype=dtype, device=device)
    if g.dim() == 0:
        g = g.expand(B, K)
    elif g.shape == (K,):
        g = g.expand(B, K)
    elif g.shape != (B, K):
        raise ValueError(
            f"sinr_targets must be a scalar or have shape ({K},) or ({B}, {K}), "
            f"got {tuple(g.shape)}"
        )
    if bool((g <= 0).any()):
        raise ValueError("sinr_targets must be > 0 (linear scale, not dB)")
    return g


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

    Minimises ``sum_k w_k p_k`` s.t. ``SINR_k >= gamma_k`` with the weights of eq. (4);
    ``max_power`` (optional) declares samples needing more than that infeasible.
    ``solver_kw`` (``iters``, ``tol``) go to :func:`lib.precoding.min_power_duality`.
    Linearly dependent columns of ``F_RF`` are reported infeasible under RF weighting.
    """
    check_complex(H, "H", ndim=3)
    _check_F(F_RF, H)
    _check_weighting(weighting)
    B, K, _ = H.shape
    rdt = H.real.dtype
    gam = _targets_bk(sinr_targets, B, K, rdt, H.device)
    s2 = _expand(noise_var, B, "noise_var", rdt, H.device)
    chol = torch.linalg.cholesky_ex(F_RF.mH @ F_RF) if weighting == "rf" else None
    V, p, w, feas = _solve_flat(H @ F_RF, gam, s2, chol, weighting, solver_kw)
    if max_power is not None:
        feas = feas & (w <= max_power)
        p = torch.where(feas[:, None], p, torch.inf)
        w = torch.where(feas, w, torch.inf)
    return HybridResult(F_RF, V, p, w, feas)


def fully_digital_min_power(H, sinr_targets, noise_var, **solver_kw) -> HybridResult:
    """Fully digital minimum power (``F_RF = I``, one RF chain per antenna): the lower bound.

    Any hybrid beam ``F v_k`` with RF weighting is a feasible fully digital beam of the same
    radiated power, so this is a lower bound on the RF-weighted hybrid power.
    """
    check_complex(H, "H", ndim=3)
    B, K, N = H.shape
    res = min_power_duality(H, sinr_targets, noise_var, **solver_kw)
    F = torch.eye(N, dtype=H.dtype, device=H.device).expand(B, N, N)
    p = res.powers
    V = res.V / p.sqrt().clamp_min(torch.finfo(p.dtype).tiny).to(H.dtype)[:, None, :]
    V = torch.where(res.feasible[:, None, None], V, torch.zeros_like(V))
    return HybridResult(F, V, p, res.total_power, res.feasible)


def _residual_energy(Fsel: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Energy of each codeword outside span(Fsel): ``(batch, C)``; Fsel ``(batch, N, r)``."""
    if Fsel.shape[-1] == 0:
        return codebook.abs().pow(2).sum(0).expand(Fsel.shape[0], -1)
    Q, Rq = torch.linalg.qr(Fsel)
    proj = Q.mH @ codebook  # (batch, r, C)
    return codebook.abs().pow(2).sum(0) - proj.abs().pow(2).sum(-2)


def independent_candidates(
    F_others: torch.Tensor, codebook: torch.Tensor, *, tol: float = 1e-6
) -> torch.Tensor:
    """``(batch, C)`` mask of codewords linearly independent of the columns of ``F_others``."""
    return _residual_energy(F_others, codebook) > tol * codebook.abs().pow(2).sum(0)


def init_codewords(H, codebook, n_rf: int) -> torch.Tensor:
    """Initial analog configuration, heuristic (34): indices ``(batch, n_rf)``.

    Scores each codeword by ``sum_k |h_k^H f|^2 / ||h_k||^2`` (the beamforming gain towards the
    users' normalised channels) and picks the ``n_rf`` best-scoring codewords, skipping any that
    is linearly dependent on those already picked.
    """
    check_complex(H, "H", ndim=3)
    check_complex(codebook, "codebook", shape=(H.shape[2], None))
    n_rf = check_positive_int(n_rf, "n_rf")
    if n_rf > H.shape[2]:
        raise ValueError(f"n_rf must be <= N = {H.shape[2]}, got {n_rf}")
    cb = codebook.to(H.dtype)
    Hn = H / H.abs().pow(2).sum(-1, keepdim=True).sqrt().clamp_min(1e-300)
    score = (Hn @ cb).abs().pow(2).sum(1)  # (batch, C)
    B = H.shape[0]
    idx = torch.empty(B, n_rf, dtype=torch.long, device=H.device)
    for r in range(n_rf):
        Fsel = cb[:, idx[:, :r]].permute(1, 0, 2)
        ok = independent_candidates(Fsel, cb)
        idx[:, r] = torch.where(ok, score, -torch.inf).argmax(-1)
    return idx


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
    """Greedy codeword correction (Hegde et al., Alg. 2; Schynol et al., eqs. (13)-(15)), batched.

    Starting from ``init`` (default :func:`init_codewords`), step ``t`` updates RF chain
    ``r = t mod n_rf``: every codeword ``c`` linearly independent of the other chains is tried
    in its place, the digital sub-problem (12) is solved for all ``(instance, c)`` pairs in one
    batched call of :func:`lib.precoding.min_power_duality`, and the codeword of least weighted
    power is kept (eq. (15)). The current codeword is a candidate, so the allocated power never
    increases. ``n_steps`` defaults to one sweep (``n_rf`` steps).
    """
    check_complex(H, "H", ndim=3)
    check_complex(codebook, "codebook", shape=(H.shape[2], None))
    _check_weighting(weighting)
    n_rf = check_positive_int(n_rf, "n_rf")
    n_steps = n_rf if n_steps is None else check_positive_int(n_steps, "n_steps", minimum=0)
    B, K, N = H.shape
    C = codebook.shape[1]
    rdt = H.real.dtype
    cb = codebook.to(H.dtype)
    gam = _targets_bk(sinr_targets, B, K, rdt, H.device)
    s2 = _expand(noise_var, B, "noise_var", rdt, H.device)
    idx = init_codewords(H, cb, n_rf) if init is None else init.clone()
    if idx.shape != (B, n_rf):
        raise ValueError(f"init must have shape ({B}, {n_rf}), got {tuple(idx.shape)}")

    def evaluate(idx_):
        F = cb[:, idx_].permute(1, 0, 2)
        return digital_min_power(
            H, F, gam, s2, weighting=weighting, max_power=max_power, **solver_kw
        )

    cur = evaluate(idx)
    hist = [cur.weighted_power]
    HC = H @ cb  # (B, K, C): h_k^H c for every codeword
    for t in range(n_steps):
        r = t % n_rf
        others = torch.cat([idx[:, :r], idx[:, r + 1 :]], 1)
        ok = independent_candidates(cb[:, others].permute(1, 0, 2), cb)  # (B, C)
        # effective channels of all candidates: (B, C, K, n_rf)
        He = (H @ cb[:, idx].permute(1, 0, 2))[:, None].expand(B, C, K, n_rf).clone()
        He[..., r] = HC.permute(0, 2, 1)
        He = He.reshape(B * C, K, n_rf)
        g_flat = gam[:, None].expand(B, C, K).reshape(B * C, K)
        s_flat = s2[:, None].expand(B, C).reshape(B * C)
        if weighting == "rf":
            Fc = cb[:, idx].permute(1, 0, 2)[:, None].expand(B, C, N, n_rf).clone()
            Fc[..., r] = cb.T[None]
            G = (Fc.mH @ Fc).reshape(B * C, n_rf, n_rf)
        wsum = torch.empty(B * C, dtype=rdt, device=H.device)
        for s in range(0, B * C, chunk):
            sl = slice(s, s + chunk)
            chol = torch.linalg.cholesky_ex(G[sl]) if weighting == "rf" else None
            _, _, w, _ = _solve_flat(He[sl], g_flat[sl], s_flat[sl], chol, weighting, solver_kw)
            wsum[sl] = w
        wsum = wsum.reshape(B, C)
        wsum = torch.where(ok, wsum, torch.inf)
        if max_power is not None:
            wsum = torch.where(wsum <= max_power, wsum, torch.inf)
        best = wsum.argmin(-1)
        improve = wsum.gather(1, best[:, None]).squeeze(1) < cur.weighted_power
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
    """Optimal algorithm: the digital sub-problem for every set of ``n_rf`` codewords.

    For small instances only.

    All ``C choose n_rf`` configurations (column order is irrelevant) of all instances are
    solved in batched calls; linearly dependent sets are skipped.
    """
    check_complex(H, "H", ndim=3)
    check_complex(codebook, "codebook", shape=(H.shape[2], None))
    _check_weighting(weighting)
    n_rf = check_positive_int(n_rf, "n_rf")
    B, K, N = H.shape
    rdt = H.real.dtype
    cb = codebook.to(H.dtype)
    gam = _targets_bk(sinr_targets, B, K, rdt, H.device)
    s2 = _expand(noise_var, B, "noise_var", rdt, H.device)
    combos = torch.tensor(list(itertools.combinations(range(cb.shape[1]), n_rf)), dtype=torch.long)
    M = combos.shape[0]
    Fall = cb[:, combos].permute(1, 0, 2)  # (M, N, n_rf)
    sv = torch.linalg.svdvals(Fall)
    indep = sv[:, -1] > 1e-6 * sv[:, 0]
    best_w = torch.full((B,), torch.inf, dtype=rdt, device=H.device)
    best_m = torch.zeros(B, dtype=torch.long, device=H.device)
    per = max(1, chunk // B)
    for s in range(0, M, per):
        Fm = Fall[s : s + per]
        m = Fm.shape[0]
        He = (H[:, None] @ Fm[None]).reshape(B * m, K, n_rf)
        chol = None
        if weighting == "rf":
            chol = torch.linalg.cholesky_ex(
                (Fm.mH @ Fm)[None].expand(B, m, n_rf, n_rf).reshape(B * m, n_rf, n_rf)
            )
        g = gam[:, None].expand(B, m, K).reshape(B * m, K)
        sf = s2[:, None].expand(B, m).reshape(B * m)
        _, _, w, _ = _solve_flat(He, g, sf, chol, weighting, solver_kw)
        w = torch.where(indep[s : s + m][None], w.reshape(B, m), torch.inf)
        wb, mb = w.min(-1)
        better = wb < best_w
        best_w = torch.where(better, wb, best_w)
        best_m = torch.where(better, mb + s, best_m)
    idx = combos[best_m]
    F = cb[:, idx].permute(1, 0, 2)
    res = digital_min_power(H, F, gam, s2, weighting=weighting, **solver_kw)
    return res._replace(index=idx)
