"""Hybrid designers behind the :class:`~lib.core.HybridDesigner` interface
``(H_hat, sinr_targets, noise_var) -> HybridResult``, with the codebook and N_RF as settings.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lib.chapters import hybrid as hybrid_pipeline
from lib.core.checks import check_positive_int
from lib.precoding.hybrid import (
    HybridResult,
    digital_min_power,
    exhaustive_search,
    fully_digital_min_power,
    greedy_codebook_selection,
    init_codewords,
)
from lib.precoding.power_min import min_power_socp
from lib.precoding.robust import robust_sdp_design

__all__ = [
    "CodebookDesigner",
    "GreedyDesigner",
    "ExhaustiveDesigner",
    "FixedAnalogDesigner",
    "FullyDigitalDesigner",
    "SOCPDesigner",
    "MarginDesigner",
    "LoadedDesigner",
    "RobustSDPDesigner",
    "HYBRID_DESIGNERS",
]


# --------------------------------------------------------------------------- #
# Hybrid designers
# --------------------------------------------------------------------------- #
class CodebookDesigner:
    """Base of the hybrid designers: holds the codebook and the number of RF chains.

    Parameters
    ----------
    codebook : torch.Tensor
        ``(M, C)`` complex codebook of analog beams (e.g. :func:`lib.phy.dft_codebook`).
    n_rf : int
        Number of RF chains ``N_RF``.
    """

    #: Whether the whole batch is solved in batched torch calls (``False``: per-instance cvxpy).
    batched = True

    def __init__(self, codebook: torch.Tensor, n_rf: int):
        if not isinstance(codebook, torch.Tensor) or codebook.dim() != 2:
            raise ValueError("codebook must be a (M, C) complex tensor")
        self.codebook = codebook
        self.n_rf = check_positive_int(n_rf, "n_rf")

    def __repr__(self) -> str:
        M, C = self.codebook.shape
        return f"{type(self).__name__}(M={M}, C={C}, n_rf={self.n_rf})"


class GreedyDesigner(CodebookDesigner):
    """Greedy codeword correction (:func:`lib.precoding.greedy_codebook_selection`).

    Hegde et al., Alg. 2; Schynol and Pesavento, eqs. (13)-(15). Chapter:
    :doc:`hybrid_arrays_codebooks`.

    Parameters
    ----------
    codebook : torch.Tensor
        ``(M, C)`` complex codebook.
    n_rf : int
        Number of RF chains ``N_RF``.
    n_steps : int, optional
        Greedy correction steps (default one sweep, ``N_RF`` steps).
    weighting : {"rf", "baseband"}
        Power weighting of eq. (4).
    max_power : float, optional
        Designs needing more power are infeasible.
    **kw
        Solver settings of :func:`lib.precoding.min_power_duality`.
    """

    def __init__(self, codebook, n_rf, *, n_steps=None, weighting="rf", max_power=None, **kw):
        super().__init__(codebook, n_rf)
        self.kw = dict(kw, n_steps=n_steps, weighting=weighting, max_power=max_power)

    def __call__(self, H_hat, sinr_targets, noise_var) -> HybridResult:
        """The greedy design on ``H_hat`` ``(B, K, M)``."""
        return greedy_codebook_selection(
            H_hat, self.codebook, self.n_rf, sinr_targets, noise_var, **self.kw
        )


class ExhaustiveDesigner(CodebookDesigner):
    """The optimal codeword set by exhaustive search (:func:`lib.precoding.exhaustive_search`).

    Every set of ``n_rf`` codewords is solved (small codebooks only). Chapter:
    :doc:`hybrid_arrays_codebooks`.

    Parameters
    ----------
    codebook : torch.Tensor
        ``(M, C)`` complex codebook.
    n_rf : int
        Number of RF chains ``N_RF``.
    weighting : {"rf", "baseband"}
        Power weighting of eq. (4).
    **kw
        Solver settings of :func:`lib.precoding.min_power_duality`.
    """

    def __init__(self, codebook, n_rf, *, weighting="rf", **kw):
        super().__init__(codebook, n_rf)
        self.kw = dict(kw, weighting=weighting)

    def __call__(self, H_hat, sinr_targets, noise_var) -> HybridResult:
        """The exhaustive-search design on ``H_hat`` ``(B, K, M)``."""
        return exhaustive_search(
            H_hat, self.codebook, self.n_rf, sinr_targets, noise_var, **self.kw
        )


class FixedAnalogDesigner(CodebookDesigner):
    """Digital power minimisation for a fixed analog matrix.

    :func:`lib.precoding.digital_min_power` (Schynol and Pesavento, eq. (12)) on the codebook
    columns
    ``index`` (``n_rf`` indices) or, by default, on each instance's initial configuration of
    heuristic (34) (:func:`lib.precoding.init_codewords`), i.e. the greedy design before its
    first correction step. Chapter: :doc:`hybrid_arrays_codebooks`.

    Parameters
    ----------
    codebook : torch.Tensor
        ``(M, C)`` complex codebook.
    n_rf : int
        Number of RF chains ``N_RF``.
    index : sequence of int, optional
        ``(N_RF,)`` codeword indices of the analog matrix, the same for every instance.
    weighting : {"rf", "baseband"}
        Power weighting of eq. (4).
    **kw
        Solver settings of :func:`lib.precoding.min_power_duality`.
    """

    def __init__(self, codebook, n_rf, *, index=None, weighting="rf", **kw):
        super().__init__(codebook, n_rf)
        if index is not None:
            index = torch.as_tensor(index, dtype=torch.long)
            if index.shape != (self.n_rf,):
                raise ValueError(f"index must have shape ({self.n_rf},), got {tuple(index.shape)}")
        self.index = index
        self.kw = dict(kw, weighting=weighting)

    def __call__(self, H_hat, sinr_targets, noise_var) -> HybridResult:
        """The digital design on the fixed analog matrix for ``H_hat`` ``(B, K, M)``."""
        cb = self.codebook.to(H_hat.dtype)
        B = H_hat.shape[0]
        if self.index is None:
            idx = init_codewords(H_hat, cb, self.n_rf)
        else:
            idx = self.index.to(H_hat.device).expand(B, self.n_rf)
        F = cb[:, idx].permute(1, 0, 2)  # (B, M, n_rf)
        res = digital_min_power(H_hat, F, sinr_targets, noise_var, **self.kw)
        return res._replace(index=idx)


class FullyDigitalDesigner(CodebookDesigner):
    """The fully digital minimum power (:func:`lib.precoding.fully_digital_min_power`).

    One RF chain per antenna (``F_RF = I``): the lower bound of every RF-weighted hybrid
    design. The codebook and ``n_rf`` are accepted for a uniform registry and not used.
    Chapter: :doc:`hybrid_arrays_codebooks`.
    """

    def __init__(self, codebook=None, n_rf=None, **kw):
        self.codebook, self.n_rf, self.kw = codebook, n_rf, kw

    def __call__(self, H_hat, sinr_targets, noise_var) -> HybridResult:
        """The fully digital design on ``H_hat`` ``(B, K, M)``; ``N_RF = M``."""
        return fully_digital_min_power(H_hat, sinr_targets, noise_var, **self.kw)

    def __repr__(self) -> str:
        return "FullyDigitalDesigner()"


class SOCPDesigner(FullyDigitalDesigner):
    """The fully digital minimum power as an SOCP (:func:`lib.precoding.min_power_socp`).

    The cvxpy reference of :class:`~lib.methods.FullyDigitalDesigner`, one instance at a time
    (``batched = False``); computed in ``complex128`` and returned in the dtype of ``H_hat``.
    Chapter: :doc:`downlink_beamforming`.
    """

    batched = False

    def __call__(self, H_hat, sinr_targets, noise_var) -> HybridResult:
        """The SOCP design on ``H_hat`` ``(B, K, M)``; ``N_RF = M``."""
        H64 = H_hat.to(torch.complex128)
        res = min_power_socp(H64, sinr_targets, noise_var)
        B, K, M = H_hat.shape
        p = res.powers
        V = res.V / p.sqrt().clamp_min(torch.finfo(p.dtype).tiny).to(H64.dtype)[:, None, :]
        V = torch.where(res.feasible[:, None, None], V, torch.zeros_like(V))
        F = torch.eye(M, dtype=H_hat.dtype, device=H_hat.device).expand(B, M, M)
        rdt = H_hat.real.dtype
        return HybridResult(F, V.to(H_hat.dtype), p.to(rdt), res.total_power.to(rdt), res.feasible)

    def __repr__(self) -> str:
        return "SOCPDesigner()"


class MarginDesigner(CodebookDesigner):
    """G-HBF-marg: the greedy design with every SINR target raised by ``margin_db``.

    :func:`~lib.chapters.margin_design` (``margin_db = 0``: the naive design that trusts
    the estimates); designs above ``max_power`` are infeasible. Chapter:
    :doc:`hybrid_imperfect_csi_outage`.

    Parameters
    ----------
    codebook : torch.Tensor
        ``(M, C)`` complex codebook.
    n_rf : int
        Number of RF chains ``N_RF``.
    margin_db : float
        SINR margin in dB.
    max_power : float
        Power budget (linear).
    """

    def __init__(self, codebook, n_rf, *, margin_db: float = 0.0, max_power: float = 1e3):
        super().__init__(codebook, n_rf)
        self.margin_db, self.max_power = float(margin_db), float(max_power)

    def __call__(self, H_hat, sinr_targets, noise_var) -> HybridResult:
        """The margin design on the estimates ``H_hat`` ``(B, K, M)``."""
        return hybrid_pipeline.margin_design(
            H_hat,
            self.margin_db,
            codebook=self.codebook,
            n_rf=self.n_rf,
            sinr_targets=sinr_targets,
            noise_var=noise_var,
            max_power=self.max_power,
        )


class LoadedDesigner(CodebookDesigner):
    """Diagonal loading on the naive greedy design's analog matrix.

    The analog matrix of the naive design (:class:`~lib.methods.MarginDesigner` at 0 dB), then
    :func:`~lib.chapters.loaded_design` (:func:`lib.precoding.loaded_min_power`) with
    loading ``kappa * loading``; ``loading`` is the per-user CSI error energy ``eps_k``, a
    scalar, ``(B,)`` or ``(B, K)`` (a per-batch value can also be passed at call time).
    Instances the naive design cannot serve are infeasible. Chapter:
    :doc:`hybrid_imperfect_csi_outage`.

    Parameters
    ----------
    codebook : torch.Tensor
        ``(M, C)`` complex codebook.
    n_rf : int
        Number of RF chains ``N_RF``.
    loading : float or torch.Tensor
        Per-user CSI error energy ``eps_k``.
    kappa : float
        Scale of the loading, ``>= 0``.
    max_power : float
        Power budget (linear).
    """

    def __init__(self, codebook, n_rf, *, loading=0.01, kappa: float = 1.0, max_power: float = 1e3):
        super().__init__(codebook, n_rf)
        self.loading, self.kappa, self.max_power = loading, float(kappa), float(max_power)

    def __call__(self, H_hat, sinr_targets, noise_var, *, loading=None) -> HybridResult:
        """The loaded design on ``H_hat`` ``(B, K, M)``; ``loading`` overrides the setting."""
        eps = self.loading if loading is None else loading
        base = hybrid_pipeline.margin_design(
            H_hat,
            0.0,
            codebook=self.codebook,
            n_rf=self.n_rf,
            sinr_targets=sinr_targets,
            noise_var=noise_var,
            max_power=self.max_power,
        )
        eps = torch.as_tensor(eps, dtype=H_hat.real.dtype, device=H_hat.device)
        res = hybrid_pipeline.loaded_design(
            H_hat,
            base,
            eps,
            self.kappa,
            sinr_targets=sinr_targets,
            noise_var=noise_var,
            max_power=self.max_power,
        )
        # an instance the naive design cannot serve has no analog matrix to load
        feas = res.feasible & base.feasible
        return res._replace(
            powers=torch.where(feas[:, None], res.powers, torch.inf),
            weighted_power=torch.where(feas, res.weighted_power, torch.inf),
            feasible=feas,
        )


class RobustSDPDesigner(CodebookDesigner):
    """The conic worst-case robust design (:func:`lib.precoding.robust_sdp_design`).

    On the naive greedy design's analog matrix, each user's SINR is met for every CSI error in
    the ellipsoid that holds the Gaussian error with probability ``1 - outage`` (S-lemma,
    semidefinite relaxation). The error covariance is ``error_var I`` per user unless
    ``error_cov`` ``(B, K, M, M)`` is passed at call time. cvxpy, one instance at a time
    (``batched = False``), computed in ``complex128``. Chapter:
    :doc:`hybrid_imperfect_csi_outage`.

    Parameters
    ----------
    codebook : torch.Tensor
        ``(M, C)`` complex codebook.
    n_rf : int
        Number of RF chains ``N_RF``.
    error_var : float
        Per-antenna CSI error variance of the default error covariance ``error_var I``.
    outage : float
        Per-user outage level ``rho`` the ellipsoid is sized for.
    max_power : float
        Power budget (linear) of the naive design and of the result.
    """

    batched = False

    def __init__(
        self,
        codebook,
        n_rf,
        *,
        error_var: float = 0.01,
        outage: float = 0.1,
        max_power: float = 1e3,
    ):
        super().__init__(codebook, n_rf)
        self.error_var, self.outage, self.max_power = float(error_var), outage, float(max_power)

    def __call__(self, H_hat, sinr_targets, noise_var, *, error_cov=None) -> HybridResult:
        """The SDP design on ``H_hat`` ``(B, K, M)``."""
        B, K, M = H_hat.shape
        H64 = H_hat.to(device="cpu", dtype=torch.complex128)  # cvxpy works on CPU arrays
        base = hybrid_pipeline.margin_design(
            H64,
            0.0,
            codebook=self.codebook.to(device="cpu", dtype=torch.complex128),
            n_rf=self.n_rf,
            sinr_targets=sinr_targets,
            noise_var=noise_var,
            max_power=self.max_power,
        )
        if error_cov is None:
            eye = torch.eye(M, dtype=torch.complex128)
            error_cov = (self.error_var * eye).expand(B, K, M, M)
        error_cov = error_cov.to(device="cpu", dtype=torch.complex128)
        res, _, _ = robust_sdp_design(
            H64, base.F_RF, error_cov, sinr_targets, noise_var, self.outage
        )
        feas = res.feasible & base.feasible & (res.weighted_power <= self.max_power)
        cdt, rdt, dev = H_hat.dtype, H_hat.real.dtype, H_hat.device
        return HybridResult(
            res.F_RF.to(device=dev, dtype=cdt),
            res.V_bb.to(device=dev, dtype=cdt),
            torch.where(feas[:, None], res.powers, torch.inf).to(device=dev, dtype=rdt),
            torch.where(feas, res.weighted_power, torch.inf).to(device=dev, dtype=rdt),
            feas.to(dev),
        )


#: Registry of hybrid designers, ``name -> factory(codebook, n_rf, **settings)``.
#: Batched: ``"greedy"``, ``"exhaustive"``, ``"fixed_analog"``, ``"fully_digital"``,
#: ``"margin"``, ``"loaded"``; per instance (cvxpy, ``batched = False``):
#: ``"fully_digital_socp"``, ``"robust_sdp"``.
HYBRID_DESIGNERS: dict[str, Callable[..., CodebookDesigner]] = {
    "greedy": GreedyDesigner,
    "exhaustive": ExhaustiveDesigner,
    "fixed_analog": FixedAnalogDesigner,
    "fully_digital": FullyDigitalDesigner,
    "fully_digital_socp": SOCPDesigner,
    "margin": MarginDesigner,
    "loaded": LoadedDesigner,
    "robust_sdp": RobustSDPDesigner,
}
