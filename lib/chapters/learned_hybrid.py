"""Pipeline of the chapter *Learned hybrid beamforming under outage constraints* (Part III) and of
``scripts/train_learned_hybrid.py``: one set-up, one data recipe and one training protocol, so that
the model trained live in the chapter and the stored models follow the same rules.

* :class:`~lib.chapters.LearnedHybridProblem` -- the set-up of the chapter *Hybrid beamforming
  under imperfect CSI* (array, users, RF chains, SINR target, spread, ``P_max``, nominal outage)
  with **constraint groups** by pilot SNR, and its data
  (:meth:`~lib.chapters.LearnedHybridProblem.draw`: instances served by G-HBF-perf within
  ``P_max``, MMSE estimates, per-user error energies, group labels).
* :func:`~lib.chapters.parse_pilot_groups` -- ``"5,10,20,5-20"`` to the groups.
* :func:`~lib.chapters.learned_hybrid_design` -- the model on a whole data set, in chunks, as a
  :class:`lib.precoding.HybridResult`.
* :func:`~lib.chapters.train_learned_hybrid` -- the training protocol (Schynol & Pesavento,
  Sec. 4.4-4.5) through :func:`lib.learn.fit`: primal-dual Lagrangian with the annealing or the
  quantile constraint, AdamW, quantile gradient clipping, validation on the convergence metric
  (54), one step-size decay on a plateau, early stop after ``patience`` steps.
* :func:`~lib.chapters.search_margin` -- G-HBF-marg's margin on validation data (a grid, then
  bisection of one grid cell: the outage is not monotone in the margin over a wide range).
* :func:`~lib.chapters.group_outage_table` -- outage, its standard error and the mean power per
  group, the format of ``results/learned_hybrid/summary.json``;
  :func:`~lib.chapters.learned_hybrid_results` -- that stored file;
  :func:`~lib.chapters.stored_learned_hybrid` -- a stored model, loaded with
  ``weights_only=True``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import torch

from lib.chapters.hybrid import (
    OUTAGE_CHAPTER,
    draw_instances,
    instance_standard_error,
    mean_power_db,
)
from lib.core.checks import check_positive_int
from lib.core.resources import results_dir
from lib.core.units import db_to_lin
from lib.learn.learned_hybrid import UnfoldedGreedyHBF
from lib.learn.outage_loss import DualAscent, PrimalDualOutageLoss, outage_convergence_metric
from lib.learn.trainer import fit
from lib.phy import arrays, csi
from lib.precoding.hybrid import HybridResult, greedy_codebook_selection
from lib.precoding.robust import bisect_margin, empirical_outage

__all__ = [
    "parse_pilot_groups",
    "LearnedHybridProblem",
    "learned_hybrid_design",
    "TrainingProtocol",
    "train_learned_hybrid",
    "search_margin",
    "outage_record",
    "group_outage_table",
    "learned_hybrid_results",
    "stored_learned_hybrid",
]


def parse_pilot_groups(text: str) -> list[tuple[str, float, float]]:
    """Constraint groups by pilot SNR: ``"5,10,20,5-20"`` -> ``[(name, lo_db, hi_db), ...]``.

    A single value is a fixed pilot SNR (``lo = hi``), ``lo-hi`` a uniform range in dB.

    Raises
    ------
    ValueError
        An empty range, a repeated group, no group or a non-number.
    """
    if not isinstance(text, str):
        raise TypeError(f"groups must be a string like '5,10,20,5-20', got {type(text).__name__}")
    groups = []
    for item in text.split(","):
        item = item.strip()
        lo, sep, hi = item[1:].partition("-") if item.startswith("-") else item.partition("-")
        lo = ("-" + lo) if item.startswith("-") else lo
        try:
            lo_db = float(lo)
            hi_db = float(hi) if sep else lo_db
        except ValueError:
            raise ValueError(f"groups: {item!r} is not a pilot SNR or a range lo-hi") from None
        if hi_db < lo_db:
            raise ValueError(f"groups: empty pilot range {item!r}")
        name = f"pilot {lo_db:g} dB" if hi_db == lo_db else f"pilot {lo_db:g}-{hi_db:g} dB"
        groups.append((name, lo_db, hi_db))
    if not groups or len({g[0] for g in groups}) != len(groups):
        raise ValueError(f"groups must list distinct pilot SNRs, got {text!r}")
    return groups


@dataclass
class LearnedHybridProblem:
    """The learned chapter's set-up (defaults: :data:`~lib.chapters.hybrid.OUTAGE_CHAPTER`).

    Attributes
    ----------
    n_h : int
        Horizontal antennas of the UPA.
    n_v : int
        Vertical antennas.
    n_rf : int
        RF chains ``N_RF``.
    gamma_db : float
        SINR target of every user (dB).
    spread_deg : float
        Gaussian angular spread (degrees).
    max_power_db : float
        ``P_max`` (dB, unit noise).
    rho : float
        Nominal outage.
    groups : str
        Constraint groups by pilot SNR (:func:`~lib.chapters.parse_pilot_groups`).
    users : tuple of int
        ``(lo, hi)``: the number of users is drawn uniformly in ``lo..hi`` per training step.
    codewords : int or None
        Use the first ``codewords`` DFT codewords only (``None``: all ``n_h n_v``).
    greedy_steps : int or None
        Greedy steps (``None``: one sweep, ``N_RF``).
    noise_var : float
        ``sigma^2``.
    digital : bool
        Fully digital transmitter (U-FDBF): the model is called with the identity codebook,
        ``N_RF = M`` and no greedy step, on the same instances (still filtered by the hybrid
        G-HBF-perf).
    """

    n_h: int = OUTAGE_CHAPTER["n_h"]
    n_v: int = OUTAGE_CHAPTER["n_v"]
    n_rf: int = OUTAGE_CHAPTER["n_rf"]
    gamma_db: float = OUTAGE_CHAPTER["gamma_db"]
    spread_deg: float = OUTAGE_CHAPTER["spread_deg"]
    max_power_db: float = OUTAGE_CHAPTER["max_power_db"]
    rho: float = OUTAGE_CHAPTER["rho"]
    groups: str = "5,10,20,5-20"
    users: tuple = (OUTAGE_CHAPTER["users"], OUTAGE_CHAPTER["users"])
    codewords: int | None = None
    greedy_steps: int | None = None
    noise_var: float = OUTAGE_CHAPTER["noise_var"]
    digital: bool = False
    group_list: list = field(init=False, repr=False)
    codebook: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        for name in ("n_h", "n_v", "n_rf"):
            setattr(self, name, check_positive_int(getattr(self, name), name))
        if not isinstance(self.users, (tuple, list)) or len(self.users) != 2:
            raise ValueError(f"users must be a pair (lo, hi), got {self.users!r}")
        lo, hi = (int(u) for u in self.users)
        if not 1 <= lo <= hi:
            raise ValueError(f"users must be (lo, hi) with 1 <= lo <= hi, got {self.users}")
        self.users = (lo, hi)
        if not 0 < self.rho < 1:
            raise ValueError(f"rho must be in (0, 1), got {self.rho}")
        self.group_list = parse_pilot_groups(self.groups)
        self.codebook = arrays.dft_codebook(self.n_h, self.n_v)[0]
        if self.codewords is not None:
            self.codebook = self.codebook[:, : check_positive_int(self.codewords, "codewords")]
        if self.n_rf > min(self.n_h * self.n_v, self.codebook.shape[1]):
            raise ValueError(f"n_rf = {self.n_rf} exceeds the antennas or the codewords")

    @property
    def gamma(self) -> float:
        return db_to_lin(self.gamma_db)

    @property
    def max_power(self) -> float:
        return db_to_lin(self.max_power_db)

    @property
    def targets(self) -> dict:
        """Keywords of :func:`lib.precoding.empirical_outage`."""
        return dict(sinr_targets=self.gamma, noise_var=self.noise_var, max_power=self.max_power)

    def draw(self, n: int, gen: torch.Generator, users: int, group: int | None = None):
        """``n`` instances served by G-HBF-perf within ``P_max``.

        Returns ``(H_hat, eps, groups, H)``: complex128 estimates ``(n, K, M)``, per-antenna
        error variances ``eps_k = tr(C_k) / M`` ``(n, K)``, group indices ``(n,)`` (uniform
        unless ``group`` is given) and the true channels. The pilot SNR of an instance is its
        group's value, or uniform in dB over its range.
        """
        n = check_positive_int(n, "n")
        users = check_positive_int(users, "users")
        G = len(self.group_list)
        if group is not None and not 0 <= group < G:
            raise ValueError(f"group must be in 0..{G - 1}, got {group}")
        Hs, Rs, have, tries = [], [], 0, 0
        while have < n:
            tries += 1
            if tries > 100:
                raise RuntimeError("G-HBF-perf is infeasible for almost every drawn instance")
            m = max(n - have, 8) + (n - have) // 4
            H, R = draw_instances(
                m, gen, users=users, n_h=self.n_h, n_v=self.n_v,
                spread=math.radians(self.spread_deg),
            )  # fmt: skip
            perf = greedy_codebook_selection(
                H, self.codebook, self.n_rf, self.gamma, self.noise_var,
                max_power=self.max_power, n_steps=self.greedy_steps,
            )  # fmt: skip
            keep = perf.feasible & (perf.weighted_power <= self.max_power)
            Hs.append(H[keep][: n - have])
            Rs.append(R[keep][: n - have])
            have += Hs[-1].shape[0]
        H = torch.cat(Hs)
        g = (
            torch.randint(0, G, (n,), generator=gen)
            if group is None
            else torch.full((n,), group, dtype=torch.long)
        )
        lo = torch.tensor([self.group_list[j][1] for j in g.tolist()], dtype=torch.float64)
        hi = torch.tensor([self.group_list[j][2] for j in g.tolist()], dtype=torch.float64)
        pilot = db_to_lin(lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64))
        H_hat, eps, start = [], [], 0
        for R in Rs:  # chunk by chunk: the covariances are the large tensors
            sl = slice(start, start + R.shape[0])
            H_hat.append(csi.mmse_estimate(H[sl], R, pilot[sl], generator=gen))
            C = csi.mmse_error_covariance(R, pilot[sl])
            eps.append(torch.diagonal(C, dim1=-2, dim2=-1).real.mean(-1))
            start += R.shape[0]
        return torch.cat(H_hat), torch.cat(eps), g, H

    def sampler(self, dtype: torch.dtype):
        """Sampler for :func:`lib.learn.fit`: fresh instances every step, ``K`` drawn per step."""
        lo, hi = self.users

        def sample(batch, gen):
            K = int(torch.randint(lo, hi + 1, (1,), generator=gen)) if hi > lo else lo
            return cast(self.draw(batch, gen, K), dtype), None

        return sample

    def call(self, model, H_hat, eps, tau: float):
        """The model on the problem's codebook, targets and ``P_max`` (projection (33)); fully
        digital: identity codebook, ``N_RF = M``, no greedy step."""
        if self.digital:
            M = H_hat.shape[-1]
            cb = torch.eye(M, dtype=H_hat.dtype, device=H_hat.device)
            n_rf, steps = M, 0
        else:
            cb = self.codebook.to(device=H_hat.device, dtype=H_hat.dtype)
            n_rf, steps = self.n_rf, self.greedy_steps
        return model(
            H_hat, eps, cb, n_rf, self.gamma, self.noise_var,
            max_power=self.max_power, n_steps=steps, tau=tau,
        )  # fmt: skip


def cast(data, dtype: torch.dtype):
    """``(H_hat, eps, groups, H)`` in the real ``dtype`` (complex64 for float32)."""
    H_hat, eps, g, H = data
    cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
    return H_hat.to(cdt), eps.to(dtype), g, H.to(cdt)


@torch.no_grad()
def learned_hybrid_design(
    model, problem: LearnedHybridProblem, data, *, tau: float = 0.1, chunk: int = 256
) -> HybridResult:
    """The model's designs for a whole data set ``(H_hat, eps, groups, H)`` (chunks of
    ``chunk`` instances, on the model's device), as a CPU :class:`lib.precoding.HybridResult`."""
    H_hat, eps, _, _ = cast(data, model.dtype)
    dev = next(model.parameters()).device
    parts = []
    for s in range(0, H_hat.shape[0], check_positive_int(chunk, "chunk")):
        sl = slice(s, s + chunk)
        r = problem.call(model, H_hat[sl].to(dev), eps[sl].to(dev), tau)
        parts.append((r.F_RF, r.V_bb, r.powers, r.weighted_power, r.feasible, r.index))
    return HybridResult(*[torch.cat([p[i] for p in parts]).cpu() for i in range(6)])


@dataclass
class TrainingProtocol:
    """The training protocol of the learned models (one for all of them: equal effort).

    Attributes
    ----------
    loss : str
        ``"annealing"`` (eqs. (51)-(52)) or ``"quantile"`` (eq. (53)).
    steps : int
        Maximum number of optimiser steps.
    batch : int
        Instances per step.
    lr : float
        AdamW step size.
    weight_decay : float
        AdamW decoupled weight decay.
    dual_lr : float or None
        Dual step size (``None``: 0.1 for the annealing, 0.02 for the quantile constraint).
    lambda_max : float
        Upper bound of the duals (and ``lambda_bound`` of the metric (54)).
    power : str
        ``"linear"`` or ``"log"`` power objective.
    beta_init : float
        Initial annealing coefficient.
    beta_max : float
        Its bound.
    beta_step : float
        Its averaging step.
    clip_quantile : float
        Gradient clipping at this quantile of the recent gradient norms.
    clip_window : int
        Length of that history.
    val_every : int
        Steps between validations.
    lr_decay : float
        Factor of the single step-size decay on a plateau.
    lr_patience : int
        Steps without a new validation minimum before it.
    patience : int
        Steps without a new validation minimum before stopping.
    tau : float
        Softmin annealing (35).
    """

    loss: str = "annealing"
    steps: int = 1000
    batch: int = 32
    lr: float = 1e-2
    weight_decay: float = 1e-4
    dual_lr: float | None = None
    lambda_max: float = 10.0
    power: str = "linear"
    beta_init: float = 1.0
    beta_max: float = 100.0
    beta_step: float = 0.05
    clip_quantile: float = 0.9
    clip_window: int = 1000
    val_every: int = 100
    lr_decay: float = 0.1
    lr_patience: int = 300
    patience: int = 500
    tau: float = 0.1


def train_learned_hybrid(
    model,
    problem: LearnedHybridProblem,
    val,
    protocol: TrainingProtocol | None = None,
    *,
    seed: int = 0,
    device="cpu",
    checkpoint=None,
    checkpoint_every=None,
    resume: bool = False,
    progress: bool = False,
    callbacks=(),
    desc: str = "U-G-HBF",
):
    """Train ``model`` (:class:`lib.learn.UnfoldedGreedyHBF`) in place with the protocol.

    Every step draws fresh instances (:meth:`~lib.chapters.LearnedHybridProblem.sampler`),
    runs the model on the estimates, evaluates the SINRs on the true channels and takes a
    primal step on the
    Lagrangian of :class:`lib.learn.PrimalDualOutageLoss` and a dual step
    (:class:`lib.learn.DualAscent`). ``val`` ``(H_hat, eps, groups, H)`` is scored with the
    convergence metric (54) (infeasible designs charged ``P_max``); the best validated weights
    are kept.

    Returns
    -------
    tuple
        ``(history, criterion)``: the :class:`lib.learn.History` and the loss module (duals and
        annealing coefficients).
    """
    p = TrainingProtocol() if protocol is None else protocol
    if p.loss not in ("annealing", "quantile"):
        raise ValueError(f"protocol.loss must be 'annealing' or 'quantile', got {p.loss!r}")
    G = len(problem.group_list)
    dual_lr = p.dual_lr or (0.1 if p.loss == "annealing" else 0.02)
    crit = PrimalDualOutageLoss(
        G, problem.rho, constraint=p.loss, dual_lr=dual_lr, lambda_max=p.lambda_max,
        power=p.power, power_scale=problem.max_power, beta_init=p.beta_init,
        beta_max=p.beta_max, beta_step=p.beta_step,
    ).to(device)  # fmt: skip
    gam, s2 = problem.gamma, problem.noise_var

    def step_fn(model, batch, st):
        (H_hat, eps, g, H), _ = batch
        res = problem.call(model, H_hat, eps, p.tau)
        sinr = res.sinr(H, s2)
        loss = crit(sinr, res.weighted_power, gam, g)
        with torch.no_grad():
            outage = (sinr < gam).double().mean()
            power_db = 10 * torch.log10(res.weighted_power.double().mean().clamp_min(1e-30))
        return loss, {"outage": outage, "power_db": power_db}

    val_c = cast(val, model.dtype)

    def val_fn(model, batch, st):
        design = learned_hybrid_design(model, problem, val_c, tau=p.tau)
        res = empirical_outage(val_c[3], design, **problem.targets)
        return outage_convergence_metric(
            res.power, res.sinr, gam, val_c[2], G, rho=problem.rho,
            lambda_bound=p.lambda_max, power_scale=problem.max_power,
        )  # fmt: skip

    hist = fit(
        model, None, problem.sampler(model.dtype), steps=p.steps, lr=p.lr,
        optimiser=lambda ps, lr: torch.optim.AdamW(ps, lr=lr, weight_decay=p.weight_decay),
        batch_size=p.batch, step_fn=step_fn, val_data=(val_c, None), val_fn=val_fn,
        val_every=p.val_every, patience=p.patience, lr_decay=p.lr_decay,
        lr_patience=p.lr_patience, min_lr=p.lr * p.lr_decay, clip_quantile=p.clip_quantile,
        clip_window=p.clip_window, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
        resume=resume, seed=seed, device=device, progress=progress,
        callbacks=[DualAscent(crit, p.lr), *callbacks], desc=desc,
    )  # fmt: skip
    return hist, crit


def search_margin(outage_of, rho: float, hi: float = 12.0, step: float = 2.0, iters: int = 4):
    """G-HBF-marg's margin: the first point of the grid ``0, step, ..., hi`` (dB) whose
    validation outage is ``<= rho``, refined by ``iters`` halvings of the grid cell below it.

    The outage is not monotone in the margin over a wide range: a large margin pushes designs
    above ``P_max`` (all their users in outage), so plain bisection on ``[0, hi]`` can fail
    although a smaller margin meets ``rho``. Returns ``(margin or None, trace)``; ``None``
    when no grid point meets ``rho`` (the trace then shows the least outage reached)."""
    if not callable(outage_of):
        raise TypeError("outage_of must be callable: margin (dB) -> validation outage")
    if not 0 < rho < 1:
        raise ValueError(f"rho must be in (0, 1), got {rho}")
    if not (step > 0 and hi >= 0):
        raise ValueError(f"need step > 0 and hi >= 0 (dB), got step={step}, hi={hi}")
    iters = check_positive_int(iters, "iters", minimum=0)
    trace, prev = [], 0.0
    grid = [round(step * i, 6) for i in range(int(hi / step) + 1)]
    for m in grid:
        o = outage_of(m)
        trace.append((m, o))
        if o <= rho:
            if m == 0.0:
                return 0.0, trace
            m_star, sub = bisect_margin(outage_of, nominal=rho, lo=prev, hi=m, iters=iters)
            return m_star, trace + [t for t in sub if t[0] not in (prev, m)]
        prev = m
    return None, trace


def outage_record(problem: LearnedHybridProblem, data, design) -> dict:
    """``{"outage", "outage_se", "power_db"}`` of a design on a data set ``(H_hat, eps,
    groups, H)``: the outage on the true channels, its standard error with the instance as the
    sample (:func:`~lib.chapters.instance_standard_error`) and the mean power in dB (infeasible
    designs charged ``P_max``)."""
    res = empirical_outage(data[3].to(design.V_bb.dtype), design, **problem.targets)
    return {
        "outage": round(res.rate, 5),
        "outage_se": round(instance_standard_error(res), 5),
        "power_db": round(mean_power_db(res), 4),
    }


def group_outage_table(problem: LearnedHybridProblem, tests, designs) -> dict:
    """``{group name: outage_record}`` of one method: ``tests`` holds one data set
    ``(H_hat, eps, groups, H)`` per group, ``designs`` the method's
    :class:`lib.precoding.HybridResult` on each (same order)."""
    if len(tests) != len(problem.group_list) or len(designs) != len(tests):
        raise ValueError(
            f"need one test set and one design per group ({len(problem.group_list)}), got "
            f"{len(tests)} and {len(designs)}"
        )
    return {
        gname: outage_record(problem, data, design)
        for (gname, _, _), data, design in zip(problem.group_list, tests, designs)
    }


def learned_hybrid_results() -> dict:
    """``results/learned_hybrid/summary.json`` (written by ``scripts/train_learned_hybrid.py``).

    Raises
    ------
    FileNotFoundError
        Where the stored results are missing (see :func:`lib.core.results_dir`).
    """
    path = results_dir("learned_hybrid") / "summary.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run scripts/train_learned_hybrid.py")
    return json.loads(path.read_text())


def stored_learned_hybrid(name: str) -> UnfoldedGreedyHBF:
    """The stored model ``name`` (e.g. ``"U-G-HBF-GCN"``) of ``results/learned_hybrid``, in
    evaluation mode, float64; its weights are loaded with ``torch.load(...,
    weights_only=True)`` and its architecture is read from the training record.

    Raises
    ------
    ValueError
        ``name`` is not a stored model (the message lists those that are).
    """
    models = learned_hybrid_results().get("models", {})
    if name not in models:
        raise ValueError(f"no stored model {name!r}; stored: {sorted(models)}")
    rec = models[name]
    model = UnfoldedGreedyHBF(
        rec.get("hidden", 32), rec.get("layers", 3), rec["degree"], dtype=torch.float64
    )
    path = results_dir("learned_hybrid", must_exist=True) / f"{name}.pt"
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()
