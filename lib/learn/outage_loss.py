"""Outage-constrained training losses of Schynol & Pesavento (Sec. 4.4, eqs. (49)-(54)): the
primal-dual Lagrangian with one dual variable per constraint group, the adaptive annealing
approximation of the outage and the quantile-based comparison (chapter *Learned hybrid
beamforming*).

Eqs. (49)-(54) are read from the paper's description; what follows is derived from the
surrounding prose and checked by the tests.

* **Margins.** User ``k`` of instance ``n`` is in outage when ``SINR_nk < gamma_nk``. We work on
  the log margin ``m_nk = log(SINR_nk / gamma_nk)`` (outage iff ``m_nk < 0``), floored at
  ``log SINR_FLOOR`` so that an infeasible design (SINR 0) gives a finite margin with zero
  gradient. Multiplying all SINRs and targets by ``c`` leaves ``m`` unchanged, so everything
  below is scale-free.
* **Annealing outage** (eq. (51)). ``1[m < 0] ~ sigmoid(-beta m)``
  (:func:`~lib.learn.soft_outage`); the
  constraint of group ``g`` is ``c_g = mean_{(n, k): n in g} sigmoid(-beta_g m_nk) - rho``
  (the non-outage probability ``E[u(m)]`` replaced by the empirical mean of the logistic
  function), ``<= 0`` when the (smoothed) outage is at most ``rho``.
* **Adaptive annealing** (eq. (52), :func:`~lib.learn.adaptive_annealing`). The text: ``beta`` is
  adapted
  by exponential averaging with step ``eta`` towards a value set by the empirical
  ``rho``-quantile ``q`` of the margins; as the outage decreases to ``rho``, ``q -> 0`` and
  ``beta`` grows to its upper bound ``beta_max``, and it also goes to ``beta_max`` when the
  constraint is over-satisfied. The rule consistent with both statements is
  ``beta* = min(beta_max, s / max(-q, 0))`` (``beta_max`` for ``q >= 0``) and
  ``beta_t = (1 - eta) beta_{t-1} + eta beta*``: while the constraint is violated, the samples
  at the ``rho``-quantile sit ``s`` transition widths ``1 / beta`` below the threshold (their
  logistic derivative ``beta sigmoid'(s)`` is not negligible), so every violation gives
  informative gradients, and the step sharpens as the violation vanishes. ``s = 1`` by default.
* **Quantile penalty** (eq. (53), :func:`~lib.learn.quantile_penalty`).
  ``c_g = -Q_rho({m_nk : n in g})``,
  the empirical (linearly interpolated) ``rho``-quantile of the group's margins, negated:
  positive iff the empirical outage exceeds ``rho``. Its gradient reaches only the (at most
  two) samples interpolated at the quantile -- the reason the paper prefers eq. (51).
* **Lagrangian** (eqs. (49)-(50), :class:`PrimalDualOutageLoss`).
  ``L = mean_n P_n / P_ref + sum_g lambda_g c_g`` with the *linear* mean allocated (weighted)
  power, as in the paper's energy objective (11), normalised by ``P_ref`` (``power_scale``,
  e.g. ``P_max``) so that the duals are dimensionless (``power="log"`` uses
  ``mean log(P_n / P_ref)`` instead). Primal descent on the network weights, then dual ascent
  ``lambda_g <- clip(lambda_g + eta_lambda c_g, 0, lambda_max)`` without gradient
  (:meth:`~lib.learn.PrimalDualOutageLoss.dual_step`; groups absent from the batch keep their dual).
* **Convergence metric** (eq. (54), :func:`~lib.learn.outage_convergence_metric`):
  ``V = mean P / P_ref +
  lambda_hat sum_g max(ohat_g - rho, 0)`` with the exact empirical outage ``ohat_g`` of group
  ``g`` (averaged over its users) and ``lambda_hat`` an upper bound of the duals (``lambda_max``):
  an upper bound of the Lagrangian, tight when every constraint is met exactly; over-satisfaction
  is not rewarded.

:class:`DualAscent` is the :class:`lib.learn.Callback` that takes the dual step after every
optimiser step of :func:`lib.learn.fit`, scales the dual step size with the primal learning rate
(the paper decays both on a validation plateau) and checkpoints the duals and ``beta``.
"""

from __future__ import annotations

import torch
from torch import nn

from lib.core.checks import check_number, check_positive_int
from lib.learn.trainer import Callback

__all__ = [
    "SINR_FLOOR",
    "log_margins",
    "soft_outage",
    "adaptive_annealing",
    "quantile_penalty",
    "group_outage",
    "outage_convergence_metric",
    "PrimalDualOutageLoss",
    "DualAscent",
]

#: Floor of ``SINR / gamma`` inside the log margin (an infeasible design has SINR 0).
SINR_FLOOR = 1e-10


def _check_sinr(sinr):
    if not isinstance(sinr, torch.Tensor) or sinr.is_complex() or not sinr.is_floating_point():
        raise TypeError("sinr must be a real floating torch.Tensor of shape (B, K)")
    if sinr.dim() != 2 or sinr.shape[0] == 0 or sinr.shape[1] == 0:
        raise ValueError(f"sinr must have shape (B, K) with B, K >= 1, got {tuple(sinr.shape)}")
    return sinr


def _check_targets(targets, sinr):
    t = torch.as_tensor(targets, dtype=sinr.dtype, device=sinr.device)
    B, K = sinr.shape
    if t.dim() == 0:
        t = t.expand(B, K)
    elif t.dim() == 1 and t.shape[0] == K:
        t = t.expand(B, K)
    elif tuple(t.shape) != (B, K):
        raise ValueError(
            f"targets must be a scalar, (K,) = ({K},) or (B, K) = ({B}, {K}), got {tuple(t.shape)}"
        )
    if not bool(torch.isfinite(t).all()) or bool((t <= 0).any()):
        raise ValueError("targets must be finite and > 0 (linear SINR targets)")
    return t


def _check_rho(rho, name="rho"):
    return check_number(rho, name, lo=0, hi=1, lo_open=True, hi_open=True)


def _check_beta(beta, like):
    b = torch.as_tensor(beta, dtype=like.dtype, device=like.device)
    if not bool(torch.isfinite(b).all()) or bool((b <= 0).any()):
        raise ValueError("beta must be finite and > 0")
    return b


def _check_groups(groups, B, n_groups):
    if not isinstance(groups, torch.Tensor) or groups.is_floating_point() or groups.is_complex():
        raise TypeError("groups must be an integer torch.Tensor of shape (B,)")
    if groups.dtype == torch.bool or tuple(groups.shape) != (B,):
        raise ValueError(f"groups must be an integer tensor of shape (B,) = ({B},)")
    if B and (int(groups.min()) < 0 or int(groups.max()) >= n_groups):
        raise ValueError(
            f"groups must lie in [0, {n_groups - 1}] ({n_groups} constraint groups), got values "
            f"in [{int(groups.min())}, {int(groups.max())}]"
        )
    return groups.long()


def log_margins(sinr: torch.Tensor, targets) -> torch.Tensor:
    """Log margins ``m = log(max(SINR / gamma, SINR_FLOOR))`` ``(B, K)``; outage iff ``m < 0``.

    Parameters
    ----------
    sinr : torch.Tensor
        ``(B, K)`` real SINRs on the true channels (``>= 0``; 0 for a design that sends nothing).
    targets : float or torch.Tensor
        ``gamma`` (linear, ``> 0``): scalar, ``(K,)`` or ``(B, K)``.

    Returns
    -------
    torch.Tensor
    """
    sinr = _check_sinr(sinr)
    t = _check_targets(targets, sinr)
    return (sinr / t).clamp_min(SINR_FLOOR).log()


def soft_outage(sinr: torch.Tensor, targets, beta) -> torch.Tensor:
    """Annealing approximation ``sigmoid(-beta log(SINR / gamma))`` of ``1[SINR < gamma]``
    (eq. (51)); tends to the indicator as ``beta -> inf`` (and is 1/2 at the target).

    Parameters
    ----------
    sinr : torch.Tensor
        ``(B, K)`` SINRs.
    targets : float or torch.Tensor
        ``gamma``: scalar, ``(K,)`` or ``(B, K)``, ``> 0``.
    beta : float or torch.Tensor
        Annealing coefficient ``> 0``: scalar or broadcastable to ``(B, K)`` (e.g. ``(B, 1)``
        for a per-instance group's coefficient).

    Returns
    -------
    torch.Tensor
        ``(B, K)`` soft outage indicators in ``(0, 1)``.
    """
    m = log_margins(sinr, targets)
    return torch.sigmoid(-_check_beta(beta, m) * m)


def adaptive_annealing(
    margins: torch.Tensor,
    quantile: float,
    *,
    beta_max: float,
    scale: float = 1.0,
    previous=None,
    step: float = 1.0,
) -> torch.Tensor:
    """Annealing coefficient of eq. (52) from the empirical ``quantile`` of the ``margins``.

    ``beta* = min(beta_max, scale / max(-q, 0))`` with ``q`` the (linearly interpolated)
    ``quantile``-quantile of ``margins`` (``beta* = beta_max`` when ``q >= 0``: constraint met),
    then exponential averaging ``(1 - step) previous + step beta*`` when ``previous`` is given.

    Parameters
    ----------
    margins : torch.Tensor
        Log margins (any shape, at least one element), e.g. :func:`log_margins`.
    quantile : float
        In ``(0, 1)``, the nominal outage ``rho``.
    beta_max : float
        Upper bound ``> 0``.
    scale : float
        ``s > 0``: the samples at the quantile sit ``s`` transition widths ``1 / beta`` below
        the threshold.
    previous : float or torch.Tensor, optional
        The coefficient of the previous step (``> 0``).
    step : float
        Averaging step ``eta`` in ``(0, 1]``.

    Returns
    -------
    torch.Tensor
        0-dim tensor, without gradient, of the margins' dtype.
    """
    if not isinstance(margins, torch.Tensor) or not margins.is_floating_point():
        raise TypeError("margins must be a real floating torch.Tensor")
    if margins.numel() == 0:
        raise ValueError("margins must not be empty")
    quantile = _check_rho(quantile, "quantile")
    beta_max = check_number(beta_max, "beta_max", lo=0, lo_open=True)
    scale = check_number(scale, "scale", lo=0, lo_open=True)
    step = check_number(step, "step", lo=0, hi=1, lo_open=True)
    with torch.no_grad():
        q = torch.quantile(margins.detach().flatten(), quantile)
        viol = (-q).clamp_min(0)
        target = torch.where(
            viol * beta_max > scale, scale / viol.clamp_min(1e-300), torch.full_like(q, beta_max)
        )
        if previous is not None:
            prev = _check_beta(previous, target)
            target = (1 - step) * prev + step * target
    return target.detach()


def quantile_penalty(sinr: torch.Tensor, targets, rho: float) -> torch.Tensor:
    """Quantile-based constraint of eq. (53): ``-Q_rho(log(SINR / gamma))`` over all entries.

    Positive iff the empirical outage exceeds ``rho`` (up to the interpolation); the gradient
    reaches only the samples interpolated at the quantile.

    Parameters
    ----------
    sinr : torch.Tensor
        ``(B, K)`` SINRs.
    targets : float or torch.Tensor
        ``gamma``: scalar, ``(K,)`` or ``(B, K)``.
    rho : float
        Nominal outage in ``(0, 1)``.

    Returns
    -------
    torch.Tensor
        0-dim.
    """
    rho = _check_rho(rho)
    return -torch.quantile(log_margins(sinr, targets).flatten(), rho)


def group_outage(sinr: torch.Tensor, targets, groups: torch.Tensor, n_groups: int, *, rtol=0.0):
    """Exact empirical outage per group (mean of ``SINR < gamma (1 - rtol)`` over the group's
    users) and the group sizes (instances).

    Returns
    -------
    tuple of torch.Tensor
        ``(outage, counts)``, both ``(n_groups,)``; ``outage`` is NaN for an empty group.
    """
    sinr = _check_sinr(sinr)
    t = _check_targets(targets, sinr)
    n_groups = check_positive_int(n_groups, "n_groups")
    g = _check_groups(groups, sinr.shape[0], n_groups)
    frac = (sinr < t * (1 - rtol)).to(sinr.dtype).mean(-1)
    counts = torch.bincount(g, minlength=n_groups).to(sinr.dtype)
    sums = torch.zeros(n_groups, dtype=sinr.dtype, device=sinr.device).index_add_(0, g, frac)
    return sums / counts, counts


def outage_convergence_metric(
    power: torch.Tensor,
    sinr: torch.Tensor,
    targets,
    groups: torch.Tensor,
    n_groups: int,
    *,
    rho: float,
    lambda_bound: float,
    power_scale: float = 1.0,
    rtol: float = 0.0,
) -> float:
    """Eq. (54): ``mean P / P_ref + lambda_bound * sum_g max(ohat_g - rho, 0)`` (empty groups
    contribute nothing); lower is better."""
    rho = _check_rho(rho)
    lambda_bound = check_number(lambda_bound, "lambda_bound", lo=0)
    power_scale = check_number(power_scale, "power_scale", lo=0, lo_open=True)
    out, counts = group_outage(sinr, targets, groups, n_groups, rtol=rtol)
    excess = torch.where(counts > 0, (out - rho).clamp_min(0), torch.zeros_like(out)).sum()
    return float(power.detach().to(sinr.dtype).mean() / power_scale + lambda_bound * excess)


class PrimalDualOutageLoss(nn.Module):
    """Lagrangian (49) of the outage-constrained power minimisation, one dual per group.

    ``loss(sinr, power, targets, groups) = mean(power) / power_scale
    + sum_g lambda_g c_g`` with ``c_g`` the annealing constraint (51) (``constraint =
    "annealing"``, the paper's default) or the quantile constraint (53) (``"quantile"``) over
    the users of the batch's instances in group ``g``; the duals ``lambda_g`` (and, for the
    annealing constraint, the coefficients ``beta_g`` of eq. (52)) are buffers, updated without
    gradient by :meth:`dual_step` from the constraints of the last call, and are part of
    ``state_dict()``.

    Parameters
    ----------
    n_groups : int
        Number of constraint groups ``G``.
    rho : float
        Nominal outage in ``(0, 1)``.
    constraint : {"annealing", "quantile"}
    dual_lr : float
        Dual step size ``eta_lambda > 0``.
    lambda_max : float
        Upper bound of the duals (``> 0``).
    lambda_init : float
        Initial duals in ``[0, lambda_max]``.
    power : {"linear", "log"}
        Objective ``mean P / P_ref`` (the paper's) or ``mean log(P / P_ref)`` (floored at
        ``1e-12``).
    power_scale : float
        ``P_ref > 0`` (e.g. ``P_max``).
    beta_init, beta_max, beta_step, beta_scale : float
        Initial value, bound, averaging step ``eta`` in ``(0, 1]`` and scale ``s`` of the
        adaptive coefficient (:func:`adaptive_annealing`).
    """

    def __init__(
        self,
        n_groups: int,
        rho: float = 0.1,
        *,
        constraint: str = "annealing",
        dual_lr: float = 0.1,
        lambda_max: float = 10.0,
        lambda_init: float = 0.0,
        power: str = "linear",
        power_scale: float = 1.0,
        beta_init: float = 1.0,
        beta_max: float = 100.0,
        beta_step: float = 0.1,
        beta_scale: float = 1.0,
    ):
        super().__init__()
        self.n_groups = check_positive_int(n_groups, "n_groups")
        self.rho = _check_rho(rho)
        if constraint not in ("annealing", "quantile"):
            raise ValueError(f"constraint must be 'annealing' or 'quantile', got {constraint!r}")
        if power not in ("linear", "log"):
            raise ValueError(f"power must be 'linear' or 'log', got {power!r}")
        self.constraint, self.power = constraint, power
        self.dual_lr = check_number(dual_lr, "dual_lr", lo=0, lo_open=True)
        self.lambda_max = check_number(lambda_max, "lambda_max", lo=0, lo_open=True)
        lambda_init = check_number(lambda_init, "lambda_init", lo=0, hi=self.lambda_max)
        self.power_scale = check_number(power_scale, "power_scale", lo=0, lo_open=True)
        self.beta_max = check_number(beta_max, "beta_max", lo=0, lo_open=True)
        beta_init = check_number(beta_init, "beta_init", lo=0, hi=self.beta_max, lo_open=True)
        self.beta_step = check_number(beta_step, "beta_step", lo=0, hi=1, lo_open=True)
        self.beta_scale = check_number(beta_scale, "beta_scale", lo=0, lo_open=True)
        f64 = torch.float64
        self.register_buffer("duals", torch.full((self.n_groups,), lambda_init, dtype=f64))
        self.register_buffer("beta", torch.full((self.n_groups,), beta_init, dtype=f64))
        self._last = None

    def constraints(self, sinr: torch.Tensor, targets, groups: torch.Tensor):
        """``(c, present, margins)``: the differentiable group constraints ``c`` ``(G,)`` (0 for
        groups absent from the batch), the ``(G,)`` bool mask of present groups and the
        ``(B, K)`` log margins."""
        m = log_margins(sinr, targets)
        g = _check_groups(groups, m.shape[0], self.n_groups)
        G = self.n_groups
        present = torch.bincount(g, minlength=G) > 0
        cs = []
        for j in range(G):
            if not bool(present[j]):
                cs.append(m.new_zeros(()))
                continue
            mj = m[g == j]
            if self.constraint == "annealing":
                beta = self.beta[j].to(device=m.device, dtype=m.dtype)
                cs.append(torch.sigmoid(-beta * mj).mean() - self.rho)
            else:
                cs.append(-torch.quantile(mj.flatten(), self.rho))
        return torch.stack(cs), present, m

    def objective(self, power: torch.Tensor) -> torch.Tensor:
        """The primal objective: ``mean P / P_ref`` or ``mean log(P / P_ref)``."""
        p = power / self.power_scale
        return p.mean() if self.power == "linear" else p.clamp_min(1e-12).log().mean()

    def forward(self, sinr: torch.Tensor, power: torch.Tensor, targets, groups: torch.Tensor):
        """The Lagrangian (49) on a batch; remembers the constraints for :meth:`dual_step`.

        Parameters
        ----------
        sinr : torch.Tensor
            ``(B, K)`` SINRs on the true channels (e.g. ``result.sinr(H, noise_var)``).
        power : torch.Tensor
            ``(B,)`` allocated (weighted) power (e.g. ``result.weighted_power``).
        targets : float or torch.Tensor
            ``gamma``: scalar, ``(K,)`` or ``(B, K)``.
        groups : torch.Tensor
            ``(B,)`` integer group of every instance, in ``[0, G)``.

        Returns
        -------
        torch.Tensor
            0-dim loss.
        """
        sinr = _check_sinr(sinr)
        if not isinstance(power, torch.Tensor) or tuple(power.shape) != (sinr.shape[0],):
            raise ValueError(f"power must be a tensor of shape (B,) = ({sinr.shape[0]},)")
        c, present, m = self.constraints(sinr, targets, groups)
        lam = self.duals.to(device=c.device, dtype=c.dtype)
        loss = self.objective(power.to(c.dtype)) + (lam * c).sum()
        g = groups.long()
        self._last = (c.detach(), present, m.detach(), g)
        return loss

    @torch.no_grad()
    def dual_step(self, constraints=None, present=None, *, lr_scale: float = 1.0):
        """Dual ascent ``lambda_g <- clip(lambda_g + lr_scale dual_lr c_g, 0, lambda_max)`` on
        the present groups, and (annealing) the update (52) of their ``beta_g``.

        Without arguments the constraints of the last call are used; ``constraints`` ``(G,)``
        (and optionally the bool mask ``present``, default all) give them explicitly (``beta``
        is then left alone). Returns the duals.
        """
        lr_scale = check_number(lr_scale, "lr_scale", lo=0)
        margins = groups = None
        if constraints is None:
            if self._last is None:
                raise RuntimeError("dual_step() without constraints needs a loss call first")
            constraints, present, margins, groups = self._last
        c = torch.as_tensor(constraints, dtype=torch.float64).to(self.duals.device).flatten()
        if c.shape[0] != self.n_groups:
            raise ValueError(f"constraints must have shape (G,) = ({self.n_groups},)")
        if not bool(torch.isfinite(c).all()):
            raise FloatingPointError("the constraint values are not finite")
        mask = (
            torch.ones_like(c, dtype=torch.bool)
            if present is None
            else torch.as_tensor(present, dtype=torch.bool).to(c.device)
        )
        new = (self.duals + lr_scale * self.dual_lr * c).clamp(0.0, self.lambda_max)
        self.duals.copy_(torch.where(mask, new, self.duals))
        if self.constraint == "annealing" and margins is not None:
            for j in range(self.n_groups):
                if bool(mask[j]):
                    b = adaptive_annealing(
                        margins[groups == j],
                        self.rho,
                        beta_max=self.beta_max,
                        scale=self.beta_scale,
                        previous=self.beta[j],
                        step=self.beta_step,
                    )
                    self.beta[j] = b.to(self.beta.dtype)
        self._last = None
        return self.duals.clone()

    def extra_repr(self) -> str:
        return (
            f"n_groups={self.n_groups}, rho={self.rho}, constraint={self.constraint!r}, "
            f"dual_lr={self.dual_lr}, lambda_max={self.lambda_max}, power={self.power!r}"
        )


class DualAscent(Callback):
    """Callback of :func:`lib.learn.fit`: :meth:`PrimalDualOutageLoss.dual_step` after every
    optimiser step, with the dual step size scaled by ``state.lr / base_lr`` (so that a decay of
    the primal step on a validation plateau decays the dual step by the same factor); its state
    (duals, ``beta``) goes into the run's checkpoints."""

    def __init__(self, loss: PrimalDualOutageLoss, base_lr: float):
        if not isinstance(loss, PrimalDualOutageLoss):
            raise TypeError("loss must be a PrimalDualOutageLoss")
        self.loss = loss
        self.base_lr = check_number(base_lr, "base_lr", lo=0, lo_open=True)

    def on_step_end(self, state, loss: float) -> None:
        if self.loss._last is not None:
            self.loss.dual_step(lr_scale=state.lr / self.base_lr)

    def state_dict(self) -> dict:
        return {k: v.detach().clone() for k, v in self.loss.state_dict().items()}

    def load_state_dict(self, d) -> None:
        self.loss.load_state_dict(d)
