"""The model-aided network U-G-HBF-GCN of Schynol & Pesavento (Sec. 4.1-4.3): greedy hybrid
beamforming unrolled over the RF chains, with instance-adaptive virtual channels predicted by a
GCN (chapter *Learned hybrid beamforming*).

Architecture (their Fig. 1 and eqs. (19), (25)-(35)):

1. **Features and graph** (eqs. (29)-(30)), :func:`~lib.learn.hybrid_features`. Eq. (30) is
   read from the paper's description: the per-user feature vector "enables adaptation
   to the realization of the channel state, the CSI quality and the QoS requirements" and that
   "the logarithmic mapping compresses the value range". We use three log-mapped features per
   user ``k``: ``log gamma_k`` (QoS), ``log(||hh_k||^2 / sigma^2)`` (estimated SNR, channel
   state) and ``log(M eps_k / ||hh_k||^2)`` (relative error energy ``E||h_k - hh_k||^2 /
   ||hh_k||^2``, CSI quality; ``eps_k`` is the per-antenna error variance ``tr(C_k) / M`` of
   :func:`lib.chapters.imperfect_csi_dataset`). In log scale the three span the same space as
   any other choice of ``(gamma, gain, error energy)`` monomials, and the GCN's batch
   normalisation removes offsets. The shift operator is the correlation matrix (29),
   :func:`lib.learn.correlation_shift`.
2. **Coefficients** (eqs. (27)-(28)). A :class:`lib.learn.GCN` (degree ``D``; ``D = 0`` is the
   U-G-HBF-FCN ablation) maps the features to per-user embeddings ``z_k``; a linear node head
   gives the wanted-signal coefficients ``a_kk, b_kk`` and two :class:`lib.learn.PairHead` the
   interference coefficients ``a_kj, b_kj`` (``j != k``), all positive through
   :func:`lib.learn.soft_bounded_exp` (their "exponential with soft bounds"). With ``D = 0``
   the pair heads get a zero edge weight, so the ablation uses no graph at all. The virtual
   channels are ``R_kj = a_kj hh_k hh_k^H + b_kj ||hh_k||^2 / M I`` (eq. (27), convention of
   :func:`lib.precoding.virtual_channels`).
3. **Initialisation** (eq. (34)): :func:`lib.precoding.init_codewords` on the estimates, the
   ``N_RF`` codewords of largest ``sum_k |hh_k^H f|^2 / ||hh_k||^2`` (the SNR towards the users'
   normalised channels, summed; the coherent reading ``|(sum_k hh_k / ||hh_k||)^H f|^2`` would
   depend on the arbitrary phases of the estimates, so we take the phase-invariant one), skipping
   linearly dependent codewords. It is the classical greedy's initialisation, as the paper
   (which builds on [35, Alg. 2]) implies.
4. **Greedy steps** (eqs. (19), (31)): step ``t`` updates chain ``r = t mod N_RF``; every
   codeword linearly independent of the other chains is tried in its place and the digital
   problem (31) (minimum weighted power with the virtual channels, power cap omitted) is solved
   for all ``(instance, candidate)`` pairs in one batched call of the implicit PSD solver of
   :mod:`lib.precoding.virtual`. For an analog matrix ``F`` the effective virtual channels are
   ``F^H R_kj F``; with RF weighting (eq. (4)) they are whitened by the Cholesky factor of
   ``F^H F = L L^H``, and ``L^{-1} F^H R_kj F L^{-H} = a_kj g_k g_k^H + b_kj ||hh_k||^2 / M I``
   with ``g_k = L^{-1} F^H hh_k``: again PSD, and never an ``M x M`` matrix. The codeword is
   chosen by :func:`lib.learn.softmin_select` on the candidates' powers (eq. (35),
   straight-through: hard argmin forward, softmin on log powers backward); the chain keeps its
   codeword where no candidate is feasible.
5. **Power recovery and projection** (eqs. (32)-(33)). The downlink powers of the final
   configuration solve ``(I - D Psi) p = sigma^2 D 1`` with ``Psi`` (eq. (23)) built on the
   virtual channels, which is what the PSD solver returns. Eq. (33) is an elementwise
   projection onto an interval that must "guarantee feasibility w.r.t. the power constraint"
   ``sum_k w_k p_k <= P_max``; the only elementwise box that guarantees it for every input
   is ``w_k p_k <= P_max / K``, so ``p_k <- min(p_k, P_max / (K w_k))`` (clipping each
   ``p_k`` to ``[0, P_max / w_k]`` would not bound the sum). Users clipped are likely in
   outage: the outage penalty of the training loss accounts for it.

Gradients flow from the powers and beams (e.g. an outage loss on true channels via
:meth:`~lib.learn.LearnedHybridResult.sinr`) to the network weights through the implicit solver
(their
Theorem 4.2) and the softmin; infeasible problems contribute zero (their Sec. 4.3.2).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from lib.core.checks import _real_dtype, check_number, check_positive_int, check_real, per_user
from lib.learn.gcn import GCN, PairHead, correlation_shift, soft_bounded_exp
from lib.learn.straight_through import _select
from lib.precoding.common import _abs2, _check_H, _scalar
from lib.precoding.hybrid import (
    _check_codebook,
    _check_max_power,
    _check_n_rf,
    _check_weighting,
    _independent,
    _init_codewords,
    _solver_settings,
    hybrid_sinr,
    independence_tol,
)
from lib.precoding.virtual import _solve as _psd_solve

__all__ = ["hybrid_features", "LearnedHybridResult", "UnfoldedGreedyHBF"]

N_FEATURES = 3
#: Default iteration cap of the digital solver: admissible candidates of the chapters' size
#: converge in well under 50 fixed-point iterations, while a stalled (neither converging nor
#: diverging, hence infeasible) candidate would hold a whole batched call for the full cap.
ITERS = 100
#: Floor of the ratios inside the logarithms of the features (a zero error energy maps to
#: ``log 1e-12 = -27.6``, not ``-inf``).
FEATURE_FLOOR = 1e-12


def _check_err_var(err_var, H_hat):
    B, K, _ = H_hat.shape
    check_real(err_var, "err_var", ndim=2)
    if tuple(err_var.shape) != (B, K):
        raise ValueError(
            f"err_var must have shape (B, K) = ({B}, {K}) matching H_hat, got "
            f"{tuple(err_var.shape)}"
        )
    if bool((err_var < 0).any()):
        raise ValueError("err_var must be >= 0 (per-user CSI error variances)")
    return err_var.to(dtype=_real_dtype(H_hat), device=H_hat.device)


def _features(H_hat, eps, gam, s2):
    M = H_hat.shape[-1]
    gain = _abs2(H_hat).sum(-1)  # ||hh_k||^2
    g = gain.clamp_min(FEATURE_FLOOR * s2[:, None])
    X = torch.stack(
        [
            gam.log(),
            (g / s2[:, None]).log(),
            (M * eps / g).clamp_min(FEATURE_FLOOR).log(),
        ],
        dim=-1,
    )
    return X, correlation_shift(H_hat)


def hybrid_features(H_hat, err_var, sinr_targets, noise_var):
    """Log-mapped per-user input features (eq. (30)) and shift operator (eq. (29)).

    Parameters
    ----------
    H_hat : torch.Tensor
        ``(B, K, M)`` complex channel estimates (rows ``hh_k^H``).
    err_var : torch.Tensor
        ``(B, K)`` real, ``>= 0``: per-antenna CSI error variance ``eps_k = tr(C_k) / M``.
    sinr_targets : float or torch.Tensor
        ``gamma_k`` (linear): scalar, ``(K,)`` or ``(B, K)``, ``> 0``.
    noise_var : float or torch.Tensor
        ``sigma^2``: scalar or ``(B,)``, ``> 0``.

    Returns
    -------
    tuple of torch.Tensor
        ``X`` ``(B, K, 3)`` = ``[log gamma_k, log(||hh_k||^2 / sigma^2),
        log(M eps_k / ||hh_k||^2)]`` (ratios floored at ``FEATURE_FLOOR``) and ``S``
        ``(B, K, K)``, both of the real dtype of ``H_hat``.
    """
    _check_H(H_hat, "H_hat")
    eps = _check_err_var(err_var, H_hat)
    B, K, _ = H_hat.shape
    gam = per_user(
        sinr_targets, "sinr_targets", B, K, dtype=_real_dtype(H_hat), device=H_hat.device
    )
    return _features(H_hat, eps, gam, _scalar(noise_var, "noise_var", H_hat))


class LearnedHybridResult(NamedTuple):
    """Output of :class:`UnfoldedGreedyHBF` (fields as in :class:`lib.precoding.HybridResult`).

    Attributes
    ----------
    F_RF : torch.Tensor
        ``(B, M, N_RF)`` analog matrix (forward: exact codewords; backward: softmin gradient).
    V_bb : torch.Tensor
        ``(B, N_RF, K)`` unit-norm digital weights (zero where infeasible).
    powers : torch.Tensor
        ``(B, K)`` projected downlink powers of eq. (33) (zero where infeasible: no
        transmission, all users in outage); equal to ``virtual_powers`` without ``max_power``.
    weighted_power : torch.Tensor
        ``(B,)`` ``sum_k w_k p_k`` of the projected powers (eq. (4)).
    feasible : torch.Tensor
        ``(B,)`` bool: the virtual digital problem (31) of the final configuration is feasible.
    index : torch.Tensor
        ``(B, N_RF)`` codeword indices.
    virtual_powers : torch.Tensor
        ``(B, K)`` powers of eq. (32) before the projection (``+inf`` where infeasible).
    a : torch.Tensor
        ``(B, K, K)`` virtual-channel coefficients of the quadratic forms, eq. (27).
    b : torch.Tensor
        ``(B, K, K)`` virtual-channel coefficients of the gains, eq. (27).
    history : torch.Tensor
        ``(B, n_steps)`` weighted virtual power after each greedy step (``+inf`` if none).
    """

    F_RF: torch.Tensor
    V_bb: torch.Tensor
    powers: torch.Tensor
    weighted_power: torch.Tensor
    feasible: torch.Tensor
    index: torch.Tensor
    virtual_powers: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    history: torch.Tensor

    def sinr(self, H: torch.Tensor, noise_var) -> torch.Tensor:
        """SINRs ``(B, K)`` on (true) channels ``H`` (:func:`lib.precoding.hybrid_sinr`),
        differentiable; infeasible samples transmit nothing (SINR 0)."""
        return hybrid_sinr(H, self.F_RF, self.V_bb, self.powers, noise_var)


# --------------------------------------------------------------------------- #
# Digital problem (31) with effective virtual channels
# --------------------------------------------------------------------------- #
def _whitening(F, weighting):
    """``(L, ok)`` with ``F^H F = L L^H`` (``L = I`` for baseband weighting), NaN-free backward:
    the differentiable factorisation only sees Gram matrices known to be positive definite."""
    G = F.mH @ F
    R = G.shape[-1]
    eye = torch.eye(R, dtype=G.dtype, device=G.device)
    if weighting == "baseband":
        return None, torch.ones(G.shape[0], dtype=torch.bool, device=G.device)
    with torch.no_grad():
        L0, info = torch.linalg.cholesky_ex(G)
        piv = _abs2(torch.diagonal(L0, dim1=-2, dim2=-1))
        colE = torch.diagonal(G, dim1=-2, dim2=-1).real
        tol = 64.0 * torch.finfo(piv.dtype).eps
        ok = (info == 0) & (piv > tol * colE).all(-1) & torch.isfinite(piv).all(-1)
    L = torch.linalg.cholesky(torch.where(ok[:, None, None], G, eye))
    return L, ok


def _virtual_digital(H, F, a, b, gain, gam, s2, weighting, kw):
    """Problem (31) for a flat batch: ``H`` ``(n, K, M)``, ``F`` ``(n, M, R)``, coefficients
    ``(n, K, K)``, ``gain`` ``(n, K)`` = ``||hh_k||^2 / M``. Returns ``(T, wsum, feasible)``:
    ``T`` ``(n, R, K)`` digital beams with power (``V_bb`` before normalisation), ``wsum`` the
    weighted power (``+inf`` where infeasible)."""
    L, ok = _whitening(F, weighting)
    He = H @ F  # rows hh_k^H F
    Rr = F.shape[-1]
    if weighting == "rf":
        He = torch.linalg.solve_triangular(L, He.mH, upper=False).mH  # rows g_k^H
        base = torch.eye(Rr, dtype=H.dtype, device=H.device).expand(H.shape[0], Rr, Rr)
    else:
        base = F.mH @ F
    g = He.conj()
    outer = g[:, :, :, None] * He[:, :, None, :]  # g_k g_k^H, (n, K, R, R)
    ac = a.to(H.dtype)[..., None, None]
    bc = (b * gain[:, :, None]).to(H.dtype)[..., None, None]
    R = ac * outer[:, :, None] + bc * base[:, None, None]
    res = _psd_solve(R, gam, s2, g, kw)
    T = res.V
    if weighting == "rf":
        T = torch.linalg.solve_triangular(L.mH, T, upper=True)  # v = L^{-H} t
    feas = res.feasible & ok
    wsum = torch.where(feas, res.powers.sum(-1), torch.full_like(res.powers[:, 0], torch.inf))
    return T, wsum, feas


# --------------------------------------------------------------------------- #
# The model
# --------------------------------------------------------------------------- #
class UnfoldedGreedyHBF(nn.Module):
    """U-G-HBF-GCN (``degree >= 1``) or U-G-HBF-FCN (``degree = 0``), Schynol & Pesavento,
    Sec. 4.1-4.3, eqs. (19), (25)-(35). See the module docstring for the steps.

    Parameters
    ----------
    hidden : int
        Width of the GCN layers and of the embeddings ``z_k``.
    layers : int
        Number of GCN layers (``>= 1``).
    degree : int
        Graph filter degree ``D`` of eq. (28); 0 removes the graph (FCN ablation).
    pair_hidden : int
        Width of the pair heads.
    a_bounds, b_bounds : pair of float
        Soft output ranges of the coefficients ``a`` and ``b`` (:func:`lib.learn.soft_bounded_exp`;
        the centres ``sqrt(low high)``, 1 and about 0.03 by default, are the outputs at zero
        pre-activation).
    weighting : {"rf", "baseband"}
        Power weights of eq. (4).
    dtype : torch.dtype
        ``float32`` (for complex64 inputs) or ``float64`` (complex128).
    **solver_kw
        ``iters`` (default ``ITERS`` = 100), ``tol``, ``max_power_ratio`` of the digital solver.
    """

    def __init__(
        self,
        hidden: int = 32,
        layers: int = 3,
        degree: int = 2,
        *,
        pair_hidden: int = 16,
        a_bounds=(0.1, 10.0),
        b_bounds=(1e-4, 10.0),
        weighting: str = "rf",
        dtype: torch.dtype = torch.float32,
        **solver_kw,
    ):
        super().__init__()
        hidden = check_positive_int(hidden, "hidden")
        layers = check_positive_int(layers, "layers")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        _check_weighting(weighting)
        for bounds in (a_bounds, b_bounds):
            soft_bounded_exp(torch.zeros(1), *bounds)
        self.a_bounds = tuple(float(x) for x in a_bounds)
        self.b_bounds = tuple(float(x) for x in b_bounds)
        self.weighting, self.dtype = weighting, dtype
        self.solver_kw = _solver_settings({"iters": ITERS, **solver_kw})
        self.gcn = GCN([N_FEATURES] + [hidden] * layers, degree, bounds=None, dtype=dtype)
        self.degree = self.gcn.degree
        self.node = nn.Linear(hidden, 2, dtype=dtype)
        self.pair_a = PairHead(hidden, pair_hidden, bounds=self.a_bounds, dtype=dtype)
        self.pair_b = PairHead(hidden, pair_hidden, bounds=self.b_bounds, dtype=dtype)

    def coefficients(self, X: torch.Tensor, S: torch.Tensor):
        """Virtual-channel coefficients ``(a, b)``, each ``(B, K, K)``, from features ``X``
        ``(B, K, 3)`` and shift ``S`` ``(B, K, K)`` (eqs. (27)-(29))."""
        Z = self.gcn.activation(self.gcn.embed(X, S))
        node = self.node(Z)
        Se = S if self.degree > 0 else torch.zeros_like(S)
        eye = torch.eye(X.shape[1], dtype=X.dtype, device=X.device)
        a = self.pair_a(Z, Se) + eye * soft_bounded_exp(node[..., 0], *self.a_bounds)[..., None]
        b = self.pair_b(Z, Se) + eye * soft_bounded_exp(node[..., 1], *self.b_bounds)[..., None]
        return a, b

    def forward(
        self,
        H_hat,
        err_var,
        codebook,
        n_rf: int,
        sinr_targets,
        noise_var,
        max_power: float | None = None,
        n_steps: int | None = None,
        tau: float = 0.1,
        *,
        coefficients=None,
        chunk: int = 8192,
    ) -> LearnedHybridResult:
        """Run the unrolled greedy hybrid beamformer.

        Parameters
        ----------
        H_hat : torch.Tensor
            ``(B, K, M)`` complex estimates, complex64 (``dtype=float32``) or complex128.
        err_var : torch.Tensor
            ``(B, K)`` per-antenna CSI error variances ``eps_k >= 0``.
        codebook : torch.Tensor
            ``(M, C)`` complex codewords (``C >= 1``).
        n_rf : int
            ``N_RF <= min(M, C)``.
        sinr_targets, noise_var
            ``gamma_k`` (scalar, ``(K,)``, ``(B, K)``) and ``sigma^2`` (scalar, ``(B,)``).
        max_power : float, optional
            ``P_max`` of the projection (33); ``None``: no projection.
        n_steps : int, optional
            Greedy steps (``>= 0``), default one sweep (``N_RF``).
        tau : float
            Annealing parameter of the softmin (35), on the log-power scale.
        coefficients : pair of torch.Tensor, optional
            ``(a, b)`` ``(B, K, K)`` real ``>= 0`` used instead of the GCN (``a = 1, b = 0``
            is the classical greedy on the estimates).
        chunk : int
            Largest number of candidate problems per solver call.

        Returns
        -------
        LearnedHybridResult
        """
        _check_H(H_hat, "H_hat")
        rdt = _real_dtype(H_hat)
        if rdt != self.dtype:
            raise TypeError(
                f"H_hat must be complex with real dtype {self.dtype}, got {H_hat.dtype}"
            )
        eps = _check_err_var(err_var, H_hat)
        cb = _check_codebook(codebook, H_hat)
        n_rf = _check_n_rf(n_rf, H_hat, cb)
        n_steps = n_rf if n_steps is None else check_positive_int(n_steps, "n_steps", minimum=0)
        tau = check_number(tau, "tau")
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        max_power = _check_max_power(max_power)
        chunk = check_positive_int(chunk, "chunk")
        B, K, M = H_hat.shape
        gam = per_user(sinr_targets, "sinr_targets", B, K, dtype=rdt, device=H_hat.device)
        s2 = _scalar(noise_var, "noise_var", H_hat)
        if coefficients is None:
            a, b = self.coefficients(*_features(H_hat, eps, gam, s2))
        else:
            if not isinstance(coefficients, (tuple, list)) or len(coefficients) != 2:
                raise TypeError("coefficients must be a pair (a, b) of (B, K, K) tensors")
            a, b = coefficients
            for name, x in (("a", a), ("b", b)):
                check_real(x, f"coefficients {name}", shape=(B, K, K), dtype=rdt)
                if bool((x < 0).any()):
                    raise ValueError(f"coefficients {name} must be >= 0 (PSD virtual channels)")
            a, b = a.to(H_hat.device), b.to(H_hat.device)
        return self._run(H_hat, a, b, cb, n_rf, gam, s2, max_power, n_steps, tau, chunk)

    def _run(self, H, a, b, cb, n_rf, gam, s2, max_power, n_steps, tau, chunk):
        B, K, M = H.shape
        C = cb.shape[1]
        kw, wt = self.solver_kw, self.weighting
        gain = _abs2(H).sum(-1) / M
        idx = _init_codewords(H, cb, n_rf)  # eq. (34)
        F = cb[:, idx].permute(1, 0, 2)  # (B, M, N_RF)
        tol = independence_tol(_real_dtype(H))
        hist = []
        for t in range(n_steps):
            r = t % n_rf
            others = torch.cat([idx[:, :r], idx[:, r + 1 :]], 1)
            ok = _independent(cb[:, others].permute(1, 0, 2), cb, tol)  # (B, C)
            # only admissible candidates are solved (dependent ones would stall the solver)
            rows = ok.reshape(-1).nonzero()[:, 0]
            costs = torch.full((B * C,), torch.inf, dtype=gam.dtype, device=H.device)
            for s in range(0, rows.numel(), chunk):
                rs = rows[s : s + chunk]
                n, c = rs // C, rs % C
                Fc = F[n].clone()
                Fc[:, :, r] = cb.T[c]  # candidate c in chain r of instance n
                args = (H[n], Fc, a[n], b[n], gain[n], gam[n], s2[n])
                costs = costs.index_put((rs,), _virtual_digital(*args, wt, kw)[1])
            costs = costs.reshape(B, C)
            sel = _select(costs, tau, ok & torch.isfinite(costs))  # eq. (35), straight-through
            col = sel.weights.to(cb.dtype) @ cb.T  # (B, M): the selected codeword
            F = F.clone()
            F[:, :, r] = torch.where(sel.feasible[:, None], col, F[:, :, r])
            idx = idx.clone()
            idx[:, r] = torch.where(sel.feasible, sel.index, idx[:, r])
            inf = torch.full_like(costs[:, 0], torch.inf)
            hist.append(
                torch.where(
                    sel.feasible,
                    costs.detach().gather(1, sel.index.clamp_min(0)[:, None])[:, 0],
                    inf,
                )
            )
        T, _, feas = _virtual_digital(H, F, a, b, gain, gam, s2, wt, kw)  # eqs. (31)-(32)
        p_raw = _abs2(T).sum(-2)  # downlink powers p_k (unit-norm v_k)
        p_safe = torch.where(feas[:, None], p_raw, torch.ones_like(p_raw))
        V = torch.where(feas[:, None, None], T / p_safe.sqrt().to(T.dtype)[:, None, :], 0.0)
        w = _abs2(F @ V).sum(-2) if wt == "rf" else torch.ones_like(p_raw)
        p_virt = torch.where(feas[:, None], p_raw, torch.full_like(p_raw, torch.inf))
        p = torch.where(feas[:, None], p_raw, torch.zeros_like(p_raw))
        if max_power is not None:  # eq. (33): w_k p_k <= P_max / K
            w_safe = torch.where(feas[:, None], w, torch.ones_like(w))
            p = torch.minimum(p, max_power / (K * w_safe))
        history = (
            torch.stack(hist, -1) if hist else torch.zeros(B, 0, dtype=p.dtype, device=p.device)
        )
        return LearnedHybridResult(F, V, p, (w * p).sum(-1), feas, idx, p_virt, a, b, history)
