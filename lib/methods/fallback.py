"""A learned method behind a classical fallback, triggered by a monitor.

:class:`~lib.methods.Fallback` wraps two methods of one task (the same protocol of
:mod:`lib.core.interfaces`, or a one-input map such as a CSI decoder) and a **monitor**: every
call runs the learned method, scores each sample with the monitor, and recomputes the samples
whose score exceeds the threshold with the classical method only (so the classical cost is paid
on the triggered fraction). The threshold is set on in-distribution validation data for a
target trigger rate (:meth:`~lib.methods.Fallback.calibrate`).

Monitors map ``(args, output)`` -- the task's positional arguments and the learned output -- to
a score ``(B,)``, higher meaning "less trustworthy":

* :class:`~lib.methods.ResidualMonitor` -- the residual ``||y - A x_hat||^2`` of a sparse
  estimate (or of any linear measurement model) relative to ``||y||^2`` or to the noise
  power ``M sigma^2``;
* :class:`~lib.methods.RateSelfCheck` -- one minus the sum rate of the precoder on the given
  channel over the single-user bound ``sum_k log2(1 + P ||h_k||^2 / sigma^2)``;
* :class:`~lib.methods.MahalanobisMonitor` -- the Mahalanobis distance of input features to
  their in-distribution mean and (shrunk) covariance;
* :class:`~lib.methods.EnsembleMonitor` -- the normalised disagreement of an ensemble of
  learned methods (independently trained, or the passes of MC dropout).

:func:`~lib.methods.fallback_metrics` scores a deployment (trigger rate, fraction of the
learned-only gain retained, fraction of samples where the wrapped system is worse than the
classical method alone, worst-case excess loss, the monitor's AUROC for detecting the samples
where the learned method is worse than the classical one) and :func:`~lib.methods.auroc` is the
area under the ROC curve.
Chapter: *Learned components behind a classical fallback*.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from lib.core.checks import check_number, check_real, check_tensor
from lib.core.interfaces import Precoder, SparseEstimator

__all__ = [
    "TASKS",
    "Fallback",
    "FallbackResult",
    "ResidualMonitor",
    "RateSelfCheck",
    "MahalanobisMonitor",
    "EnsembleMonitor",
    "fallback_metrics",
    "auroc",
    "roc_curve",
]

#: Per task: the protocol both methods must satisfy (``None``: any callable) and, per
#: positional argument, the number of dimensions from which the argument is per-sample
#: (batched along dimension 0; below it the argument is shared by the batch).
TASKS = {
    "precoder": (Precoder, (3, 1, 1)),  # H (B, K, M), power (B,), noise_var (B,)
    "sparse": (SparseEstimator, (2, 3, 1)),  # y (B, M), A (B, M, N), noise_var (B,)
    "map": (None, (1,)),  # one batched input, e.g. a CSI decoder s (B, m) -> X_hat
}


def _n_positional(f) -> int | None:
    """Positional parameters ``f`` accepts (``None`` when it takes ``*args`` or is opaque)."""
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        return None
    n = 0
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            n += 1
    return n


@dataclass
class FallbackResult:
    """The output of one wrapped call.

    ``output`` the merged output (classical where ``triggered``), ``learned`` the learned
    output for every sample, ``score`` ``(B,)`` the monitor's scores, ``triggered`` ``(B,)``
    bool, ``seconds`` the wall time of each part (``learned``, ``monitor``, ``classical``).
    """

    output: torch.Tensor
    learned: torch.Tensor
    score: torch.Tensor
    triggered: torch.Tensor
    seconds: dict = field(default_factory=dict)

    @property
    def trigger_rate(self) -> float:
        return float(self.triggered.double().mean())


class Fallback:
    """``learned`` behind ``classical``: the classical method runs where ``monitor`` fires.

    Parameters
    ----------
    learned, classical : callable
        Two methods of ``task`` with the same calling convention: both satisfy the task's
        protocol (``TASKS``) and accept its positional arguments.
    monitor : callable
        ``monitor(args, output) -> (B,)`` real scores, higher = less trustworthy.
    task : {"precoder", "sparse", "map"}
        Fixes the protocol and which arguments are per sample.
    threshold : float, optional
        Trigger where ``score > threshold``; set it with :meth:`calibrate` if omitted.

    ``wrapper(*args)`` returns the merged output (the task's return type);
    :meth:`run` returns a :class:`FallbackResult` with scores, triggers and timings.
    """

    def __init__(self, learned: Callable, classical: Callable, monitor: Callable, *,
                 task: str, threshold: float | None = None):  # fmt: skip
        if task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
        protocol, batched = TASKS[task]
        for name, f in (("learned", learned), ("classical", classical), ("monitor", monitor)):
            if not callable(f):
                raise TypeError(f"{name} must be callable, got {type(f).__name__}")
        for name, f in (("learned", learned), ("classical", classical)):
            if protocol is not None and not isinstance(f, protocol):
                raise TypeError(f"learned and classical methods must share the {task!r} "
                                f"interface ({protocol.__name__}); {name} does not")  # fmt: skip
            n = _n_positional(f)
            if n is not None and n < len(batched):
                raise TypeError(f"learned and classical methods must share the {task!r} "
                                f"interface, {len(batched)} positional arguments; {name} "
                                f"takes {n}")  # fmt: skip
        self.learned, self.classical, self.monitor = learned, classical, monitor
        self.task, self._batched = task, batched
        self.threshold = None if threshold is None else check_number(threshold, "threshold")

    # ------------------------------------------------------------------ #
    def _check_args(self, args) -> int:
        if len(args) != len(self._batched):
            raise TypeError(f"the {self.task!r} task takes {len(self._batched)} positional "
                            f"arguments, got {len(args)}")  # fmt: skip
        first = args[0]
        if not isinstance(first, torch.Tensor) or first.ndim < self._batched[0]:
            raise ValueError(f"argument 0 must be a batched tensor with at least "
                             f"{self._batched[0]} dimensions")  # fmt: skip
        for i, a in enumerate(args):
            if isinstance(a, torch.Tensor) and not bool(torch.isfinite(a).all()):
                raise ValueError(f"argument {i} has non-finite entries")
            if isinstance(a, (int, float)) and not math.isfinite(a):
                raise ValueError(f"argument {i} must be finite, got {a}")
        return first.shape[0]

    def _select(self, args, idx):
        out = []
        for a, nd in zip(args, self._batched):
            per_sample = isinstance(a, torch.Tensor) and a.ndim >= nd
            out.append(a[idx] if per_sample else a)
        return out

    def scores(self, *args) -> torch.Tensor:
        """The monitor's scores ``(B,)`` of the learned outputs."""
        self._check_args(args)
        with torch.no_grad():
            return self._score(args, self.learned(*args))

    def _score(self, args, out):
        s = self.monitor(args, out)
        if not isinstance(s, torch.Tensor) or s.ndim != 1 or s.shape[0] != args[0].shape[0]:
            raise ValueError("monitor must return a (B,) tensor of scores")
        return s.detach()

    def calibrate(self, *args, trigger_rate: float) -> float:
        """Set the threshold to the ``1 - trigger_rate`` quantile of the scores on the
        (in-distribution validation) batch ``args``; returns it."""
        rate = check_number(trigger_rate, "trigger_rate", lo=0, hi=1)
        s = self.scores(*args).double()
        self.threshold = float(torch.quantile(s, 1 - rate)) if rate < 1 else -math.inf
        if rate == 0:
            self.threshold = float(s.max())
        return self.threshold

    def run(self, *args) -> FallbackResult:
        """Learned output, scores, triggers and the merged output of one batch."""
        if self.threshold is None:
            raise ValueError("threshold is not set: pass threshold= or call calibrate()")
        B = self._check_args(args)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.learned(*args)
        t1 = time.perf_counter()
        s = self._score(args, out)
        trig = s > self.threshold
        t2 = time.perf_counter()
        merged = out
        if bool(trig.any()):
            idx = trig.nonzero().squeeze(1).to(args[0].device)
            with torch.no_grad():
                fb = self.classical(*self._select(args, idx))
            merged = out.clone()
            merged[idx] = fb.to(out.dtype)
        t3 = time.perf_counter()
        if merged.shape[0] != B:
            raise ValueError("the learned method must return one output per sample")
        secs = {"learned": t1 - t0, "monitor": t2 - t1, "classical": t3 - t2}
        return FallbackResult(merged, out, s, trig.cpu(), secs)

    def __call__(self, *args):
        return self.run(*args).output


# --------------------------------------------------------------------------- #
# Monitors
# --------------------------------------------------------------------------- #
class ResidualMonitor:
    """The residual of a sparse estimate (or of any linear measurement model) for
    ``args = (y, A, noise_var)`` (``A`` ``(M, N)`` or ``(B, M, N)``): an estimate that does
    not explain its own measurements is suspect.

    ``relative_to="measurement"``: ``||y - A x_hat||^2 / ||y||^2``; ``relative_to="noise"``:
    ``||y - A x_hat||^2 / (M sigma^2)``, about 1 (or below) for an estimate that explains
    ``y`` up to the noise, at every SNR -- the first score rises when the SNR falls even where
    the estimate is good.
    """

    def __init__(self, relative_to: str = "measurement"):
        if relative_to not in ("measurement", "noise"):
            raise ValueError(f"relative_to must be 'measurement' or 'noise', got {relative_to!r}")
        self.relative_to = relative_to

    def __call__(self, args, x_hat):
        y, A = args[0], args[1]
        Ax = x_hat @ A.mT if A.ndim == 2 else (A @ x_hat.unsqueeze(-1)).squeeze(-1)
        r = (y - Ax).abs().pow(2).sum(-1)
        tiny = torch.finfo(r.dtype).tiny
        if self.relative_to == "noise":
            s2 = torch.as_tensor(args[2], dtype=r.dtype, device=r.device).expand(r.shape)
            return r / (y.shape[-1] * s2).clamp_min(tiny)
        return r / y.abs().pow(2).sum(-1).clamp_min(tiny)


class RateSelfCheck:
    """``1 - R(H, V) / sum_k log2(1 + P ||h_k||^2 / sigma^2)`` for ``args = (H, power,
    noise_var)``: the precoder's sum rate on the channel it was given, relative to the
    single-user bound (each user's SINR is at most ``P ||h_k||^2 / sigma^2``), so in
    ``[0, 1]``."""

    def __call__(self, args, V):
        from lib.precoding import sum_rate

        H, power, noise_var = args
        B = H.shape[0]
        P = torch.as_tensor(power, dtype=H.real.dtype, device=H.device).expand(B)
        s2 = torch.as_tensor(noise_var, dtype=H.real.dtype, device=H.device).expand(B)
        bound = torch.log2(1 + P[:, None] * H.abs().pow(2).sum(-1) / s2[:, None]).sum(-1)
        return 1 - sum_rate(H, V, s2) / bound


class MahalanobisMonitor:
    """Mahalanobis distance of ``features(args)`` ``(B, d)`` to in-distribution data.

    ``fit`` estimates the mean and the covariance (shrunk towards a scaled identity by
    ``shrinkage`` in ``[0, 1]``, so that it is invertible with few samples) from in-distribution
    arguments; the score is ``(f - mu)^T Sigma^{-1} (f - mu)``.
    """

    def __init__(self, features: Callable, *, shrinkage: float = 0.1):
        if not callable(features):
            raise TypeError("features must be callable")
        self.features = features
        self.shrinkage = check_number(shrinkage, "shrinkage", lo=0, hi=1)
        self.mean = self.precision = None

    def _f(self, args):
        f = self.features(args)
        check_real(f, "features(args)", ndim=2)
        return f.double()

    def fit(self, *args) -> MahalanobisMonitor:
        f = self._f(args)
        n, d = f.shape
        if n < 2:
            raise ValueError("fit needs at least 2 samples")
        mu = f.mean(0)
        C = torch.cov(f.T).reshape(d, d)
        a = self.shrinkage
        C = (1 - a) * C + a * (torch.trace(C) / d) * torch.eye(d, dtype=C.dtype, device=C.device)
        self.mean, self.precision = mu, torch.linalg.pinv(C, hermitian=True)
        return self

    def __call__(self, args, output=None):
        if self.mean is None:
            raise ValueError("MahalanobisMonitor is not fitted: call fit() on in-distribution data")
        e = self._f(args) - self.mean
        return ((e @ self.precision) * e).sum(-1)


class EnsembleMonitor:
    """Disagreement ``mean_i ||out_i - mean||^2 / ||mean||^2`` of ``members`` (methods of the
    task, called with the same arguments; the wrapped learned output counts as one of them
    when ``include_output``)."""

    def __init__(self, members: Sequence[Callable], *, include_output: bool = True):
        members = list(members)
        if len(members) + bool(include_output) < 2:
            raise ValueError("an ensemble needs at least 2 members")
        if not all(callable(m) for m in members):
            raise TypeError("members must be callable")
        self.members, self.include_output = members, bool(include_output)

    def __call__(self, args, output):
        with torch.no_grad():
            outs = [m(*args) for m in self.members]
        if self.include_output:
            outs.append(output.detach())
        S = torch.stack(outs).flatten(2)
        mean = S.mean(0)
        spread = (S - mean).abs().pow(2).sum(-1).mean(0)
        return spread / mean.abs().pow(2).sum(-1).clamp_min(torch.finfo(spread.dtype).tiny)


# --------------------------------------------------------------------------- #
# Scoring a deployment
# --------------------------------------------------------------------------- #
def _classes(score, positive):
    """Checked ``score`` (float64) and ``positive`` (bool) on the CPU, and the class sizes."""
    check_real(score, "score", ndim=1)
    check_tensor(positive, "positive", shape=(score.shape[0],))
    pos = positive.bool().cpu()
    s = score.detach().double().cpu()
    n1, n0 = int(pos.sum()), int((~pos).sum())
    return s, pos, n1, n0


def auroc(score: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of ``score`` for detecting ``positive`` (bool ``(B,)``): the
    probability that a positive sample scores higher than a negative one, ties counting half
    (Mann-Whitney). ``nan`` when one class is empty (no ROC curve exists)."""
    s, pos, n1, n0 = _classes(score, positive)
    if n1 == 0 or n0 == 0:
        return math.nan
    order = torch.argsort(s)
    sorted_s = s[order]
    ranks = torch.empty_like(s)
    # ranks 1..B of the sorted scores, averaged over ties
    _, inv, counts = torch.unique_consecutive(sorted_s, return_inverse=True,
                                                 return_counts=True)  # fmt: skip
    ends = counts.cumsum(0).double()
    avg = ends - (counts.double() - 1) / 2
    ranks[order] = avg[inv]
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def roc_curve(score: torch.Tensor, positive: torch.Tensor):
    """The ROC curve of ``score`` for detecting ``positive`` (bool ``(B,)``): false- and
    true-positive rates ``(fpr, tpr)`` (float64, from ``(0, 0)`` to ``(1, 1)``) of the rule
    "positive when ``score > t``" as ``t`` falls through the distinct scores. Its area (by
    the trapezoidal rule) is :func:`auroc`. ``ValueError`` when one class is empty."""
    s, pos, n1, n0 = _classes(score, positive)
    if n1 == 0 or n0 == 0:
        raise ValueError("positive must contain both classes to define a ROC curve")
    values, inv = torch.unique(s, sorted=True, return_inverse=True)
    tp = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inv, pos.double())
    fp = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inv, (~pos).double())
    # thresholds from the largest score down: cumulative counts from the top
    tpr = torch.cat([torch.zeros(1, dtype=torch.float64), tp.flip(0).cumsum(0) / n1])
    fpr = torch.cat([torch.zeros(1, dtype=torch.float64), fp.flip(0).cumsum(0) / n0])
    return fpr, tpr


def fallback_metrics(loss_learned, loss_classical, triggered, score=None, *,
                     tol: float = 0.0) -> dict:  # fmt: skip
    """Score a deployment from per-sample losses (lower is better, e.g. NMSE in dB or minus a
    rate) of the learned and the classical method and the triggers of the wrapper.

    Returns a dict:

    * ``trigger_rate`` -- fraction of samples sent to the classical method;
    * ``gain_learned`` / ``gain_wrapped`` -- mean loss of the classical method minus that of
      the learned method alone / of the wrapped system;
    * ``gain_retained`` -- ``gain_wrapped / gain_learned``, the fraction of the learned-only
      gain kept (``None`` when the learned method has no gain, ``gain_learned <= 0``: there
      is nothing to retain);
    * ``worse_than_classical_rate`` -- fraction of samples where the wrapped loss exceeds the
      classical loss by more than ``tol``;
    * ``worst_excess`` -- the largest per-sample excess of the wrapped over the classical loss
      (the worst case the fallback lets through; ``<= 0`` means never worse);
    * ``learned_worse_rate`` -- fraction where the learned method alone is worse than the
      classical one by more than ``tol`` (the "harmful" samples);
    * ``auroc`` -- of ``score`` for detecting the harmful samples (when ``score`` is given;
      ``None`` if one class is empty).
    """
    ll = torch.as_tensor(loss_learned).detach().double().flatten()
    lc = torch.as_tensor(loss_classical).detach().double().flatten()
    trig = torch.as_tensor(triggered).bool().flatten()
    if not (ll.shape == lc.shape == trig.shape) or ll.numel() == 0:
        raise ValueError("loss_learned, loss_classical and triggered must be (B,) with B > 0")
    if not (torch.isfinite(ll).all() and torch.isfinite(lc).all()):
        raise ValueError("the losses must be finite")
    tol = check_number(tol, "tol", lo=0)
    lw = torch.where(trig, lc, ll)
    g_l = float(lc.mean() - ll.mean())
    g_w = float(lc.mean() - lw.mean())
    harmful = ll > lc + tol
    out = {
        "trigger_rate": float(trig.double().mean()),
        "gain_learned": g_l,
        "gain_wrapped": g_w,
        "gain_retained": g_w / g_l if g_l > 0 else None,
        "worse_than_classical_rate": float((lw > lc + tol).double().mean()),
        "worst_excess": float((lw - lc).max()),
        "learned_worse_rate": float(harmful.double().mean()),
    }
    if score is not None:
        a = auroc(torch.as_tensor(score).flatten(), harmful)
        out["auroc"] = None if math.isnan(a) else a
    return out
