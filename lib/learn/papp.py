"""PaPP: a power-aware, plug-and-play learned precoder that generalises across sites
(arXiv:2601.21897; Part IV, chapter *Generalizable precoding*).

**Power-aware normalisation.** The network sees :math:`\\bar{\\mathbf H} = \\sqrt{P}/\\sigma\\,
\\mathbf H` (:func:`~lib.learn.power_aware_input`) and returns a unit-power precoder
:math:`\\bar{\\mathbf W}`, :math:`\\|\\bar{\\mathbf W}\\|_F = 1`; the transmitted one is
:math:`\\mathbf W = \\sqrt{P}\\,\\bar{\\mathbf W}` (:func:`~lib.learn.power_aware_output`). Then

.. math::
    \\mathrm{SINR}_k(\\mathbf H, \\mathbf W, \\sigma^2)
    = \\frac{P|\\mathbf h_k^{\\mathsf H}\\bar{\\mathbf w}_k|^2}
      {P\\sum_{j\\ne k}|\\mathbf h_k^{\\mathsf H}\\bar{\\mathbf w}_j|^2 + \\sigma^2}
    = \\mathrm{SINR}_k(\\bar{\\mathbf H}, \\bar{\\mathbf W}, 1),

so one network serves every ``(P, sigma^2)``: the SNR is carried by the scale of its input.

**Backbone** (:class:`~lib.learn.PaPPBackbone`): every user's normalised channel
:math:`\\bar{\\mathbf h}_k` goes through a CNN branch (the ``n_v x n_h`` array image, real and
imaginary parts as two channels; convolutions with 8, 8 and 2 channels) and a per-user MLP
encoder; a permutation-invariant pooling over the users (mean and the 0.25, 0.5 and 0.75
quantiles) gives a context that a gated merge mixes into every user's feature. All weights are
shared by the users, so relabelling the users relabels the features (equivariance) and any
``K`` is accepted.

**Heads.** The teacher (:class:`~lib.learn.PaPPTeacher`) predicts the WMMSE auxiliary
variables of every user, the receiver gain :math:`u_k > 0` and the MSE weight :math:`w_k > 0`
(a phase of ``u_k`` only rotates column ``k`` and does not change any rate), and takes **one
WMMSE beamformer update** (:func:`lib.precoding.wmmse_precoder`, eqs. (5c)-(8) of the chapter
*Multi-user downlink beamforming*) at unit power; its multiplier mu is the exact root of the
power constraint (bisection) rather than a prediction, so the target is always feasible. At a
WMMSE fixed point ``(u*, w*)`` that one update *is* the converged WMMSE precoder, so a perfect
teacher loses nothing. The student (:class:`~lib.learn.PaPPStudent`) outputs the precoder in
one pass, with the optimal beamforming structure
:math:`\\bar{\\mathbf w}_k \\propto \\sqrt{p_k}\\,(\\mathbf I + \\sum_j \\lambda_j
\\bar{\\mathbf h}_j\\bar{\\mathbf h}_j^{\\mathsf H})^{-1}\\bar{\\mathbf h}_k` (``2K`` numbers
from a per-user head, one ``K x K`` solve; no eigendecomposition, no bisection, no iteration),
or, as an ablation, in the span of the users' channels with free coefficients. The hybrid student
(:class:`~lib.learn.PaPPHybridStudent`) outputs a phase-only analog precoder
:math:`\\mathbf A` (``M x N_RF``, :math:`|A_{mr}| = 1/\\sqrt M`) and a digital
:math:`\\mathbf W_{dp}` (``N_RF x K``), :math:`\\bar{\\mathbf W} = \\mathbf A\\mathbf W_{dp}`.

**Losses.** :func:`~lib.learn.papp_rate` is the sum rate on normalised quantities;
:func:`~lib.learn.student_loss` is
:math:`L_S = \\mathrm{MSE}(\\bar{\\mathbf W}_T, \\bar{\\mathbf W}) - \\lambda R(\\bar{\\mathbf W})
/ R_{\\mathrm{WMMSE}}`, and :class:`~lib.learn.ReliabilityGate` switches ``lambda`` from
``lambda_0`` to ``lambda_1`` once the imitation error stops improving.

**Meta-learning** (:func:`~lib.learn.mldg_objective`, :func:`~lib.learn.maml_objective`), with
:func:`torch.func.functional_call`: MLDG (Li et al. 2018) takes one inner step on the meta-train
domains, :math:`\\theta' = \\theta - \\alpha\\nabla L_{\\mathrm{tr}}(\\theta)`, and returns
:math:`L_{\\mathrm{tr}}(\\theta) + \\beta L_{\\mathrm{gen}}(\\theta')`, whose gradient is
:math:`\\delta_{\\mathrm{train}} + \\beta\\delta_{\\mathrm{gen}}` (through the inner step);
MAML (Finn et al. 2017) adapts to each domain on a support batch and scores the adapted weights on
a query batch of the same domain.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from lib.core.checks import check_number, check_positive_int, check_tensor
from lib.learn.trainer import Callback
from lib.precoding.common import _abs2, _check_H, _scalar, _scale_to_power
from lib.precoding.linear import _sinr
from lib.precoding.weighted_mmse import _precoder_twice_differentiable

__all__ = [
    "power_aware_input",
    "power_aware_output",
    "unit_power",
    "papp_rate",
    "PaPPBackbone",
    "PaPPTeacher",
    "PaPPStudent",
    "PaPPHybridStudent",
    "PaPPNet",
    "CNNPrecoderNet",
    "student_loss",
    "ReliabilityGate",
    "mldg_objective",
    "maml_objective",
    "LearnedPrecoder",
    "finetune_rate",
    "beamforming_structure",
]

_QUANTILES = (0.25, 0.5, 0.75)


# --------------------------------------------------------------------------- #
# Normalisation and rate
# --------------------------------------------------------------------------- #
def power_aware_input(H: torch.Tensor, power, noise_var) -> torch.Tensor:
    """``H_bar = sqrt(P) / sigma * H`` (the network's input; module docstring).

    ``H`` complex ``(B, K, M)``; ``power`` and ``noise_var`` positive scalars or ``(B,)``.
    """
    _check_H(H)
    P = _scalar(power, "power", H)
    s2 = _scalar(noise_var, "noise_var", H)
    return H * torch.sqrt(P / s2).to(H.dtype)[:, None, None]


def power_aware_output(W_bar: torch.Tensor, power) -> torch.Tensor:
    """``W = sqrt(P) W_bar``: the transmitted precoder of a unit-power ``W_bar`` ``(B, M, K)``."""
    check_tensor(W_bar, "W_bar", complex_=True, ndim=3)
    P = _scalar(power, "power", W_bar.mT)
    return W_bar * torch.sqrt(P).to(W_bar.dtype)[:, None, None]


def unit_power(W: torch.Tensor) -> torch.Tensor:
    """``W / ||W||_F`` per sample of a ``(B, M, K)`` precoder (a zero precoder stays zero);
    :func:`lib.precoding` 's power scaling at ``P = 1``."""
    return _scale_to_power(W, torch.ones(W.shape[0], dtype=W.real.dtype, device=W.device))


def papp_rate(H_bar: torch.Tensor, W_bar: torch.Tensor) -> torch.Tensor:
    """Sum rate (bits/s/Hz, ``(B,)``) on normalised quantities, i.e. with unit noise:
    :func:`lib.precoding.sum_rate` ``(H_bar, W_bar, 1)`` without its checks, for training
    losses (shapes ``(B, K, M)`` and ``(B, M, K)``)."""
    return torch.log2(1.0 + _sinr(H_bar, W_bar, 1.0)).sum(-1)


def _features(H_bar: torch.Tensor, snr_db=None) -> torch.Tensor:
    """Per-user real input: ``[Re h, Im h] / sqrt(M)``, ``log(1 + ||h||^2)`` and, for the
    ablation without normalisation, ``snr_db / 10``: ``(B, K, 2M + 1 (+ 1))``."""
    M = H_bar.shape[-1]
    x = torch.cat([H_bar.real, H_bar.imag], -1) / math.sqrt(M)
    g = torch.log1p(_abs2(H_bar).sum(-1, keepdim=True))
    parts = [x, g]
    if snr_db is not None:
        parts.append((snr_db / 10.0).to(x.dtype)[:, None, None].expand_as(g))
    return torch.cat(parts, -1)


def _pool(x: torch.Tensor) -> torch.Tensor:
    """Permutation-invariant pooling over users (dim -2): mean and quantiles, ``(B, 4F)``."""
    q = torch.quantile(x, torch.tensor(_QUANTILES, dtype=x.dtype, device=x.device), dim=-2)
    return torch.cat([x.mean(-2), *q.unbind(0)], -1)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- #
# Backbone and heads
# --------------------------------------------------------------------------- #
class PaPPBackbone(nn.Module):
    """Shared feature extractor Pi: CNN branch + per-user MLP encoder + pooled, gated context.

    Parameters
    ----------
    n_h, n_v : int
        The UPA (``M = n_h n_v``; antenna ``m = i_v n_h + i_h``, as :func:`lib.phy.upa_positions`).
    embed : int
        Feature width ``E`` per user.
    encoder_layers : int
        Linear layers of the per-user encoder (5 in the paper).
    cnn : bool
        Use the CNN branch.
    snr_input : bool
        The ablation without power-aware normalisation: ``forward`` also takes the SNR in dB,
        appended to every user's input features (explicit power conditioning).

    ``forward(H_bar, snr_db=None)`` with ``H_bar`` complex ``(B, K, M)`` returns real
    ``(B, K, E)``.
    """

    def __init__(self, n_h: int = 8, n_v: int = 8, embed: int = 64, encoder_layers: int = 5,
                 cnn: bool = True, snr_input: bool = False):  # fmt: skip
        super().__init__()
        self.n_h, self.n_v = check_positive_int(n_h, "n_h"), check_positive_int(n_v, "n_v")
        self.M = self.n_h * self.n_v
        E = check_positive_int(embed, "embed")
        L = check_positive_int(encoder_layers, "encoder_layers", minimum=2)
        self.embed = E
        self.snr_input = bool(snr_input)
        self.encoder = _mlp([2 * self.M + 1 + self.snr_input] + [E] * L)
        self.cnn = None
        if cnn:
            self.cnn = nn.Sequential(
                nn.Conv2d(2, 8, 3, padding=1), nn.GELU(),
                nn.Conv2d(8, 8, 3, padding=1), nn.GELU(),
                nn.Conv2d(8, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * self.M, E),
            )  # fmt: skip
        self.context = _mlp([4 * E, E, E])
        self.gate = nn.Linear(2 * E, E)
        self.mix = _mlp([2 * E, E, E])

    def forward(self, H_bar: torch.Tensor, snr_db=None) -> torch.Tensor:
        B, K, M = H_bar.shape
        x = _features(H_bar, snr_db if self.snr_input else None)
        f = self.encoder(x)
        if self.cnn is not None:
            img = torch.stack([H_bar.real, H_bar.imag], -2) / math.sqrt(M)  # (B, K, 2, M)
            img = img.reshape(B * K, 2, self.n_v, self.n_h)
            f = f + self.cnn(img).reshape(B, K, -1)
        ctx = self.context(_pool(f))[:, None, :].expand(B, K, -1)
        z = torch.cat([f, ctx], -1)
        g = torch.sigmoid(self.gate(z))
        return g * f + (1.0 - g) * self.mix(z)


class _PairCoefficients(nn.Module):
    """``X`` (``(B, K, K)`` complex) from user features and the normalised Gram matrix.

    ``X_jk = MLP([f_j, f_k, Re/Im/|G_jk|, log(1 + G_jj), log(1 + G_kk)])`` over the Gram matrix
    ``G = H_bar H_bar^H`` scaled by ``1 / (1 + tr(G) / K)``: equivariant under a joint
    relabelling of ``j`` and ``k``.
    """

    def __init__(self, embed: int, hidden: int = 64):
        super().__init__()
        self.net = _mlp([2 * embed + 5, hidden, hidden, 2])

    def forward(self, f: torch.Tensor, Hc: torch.Tensor) -> torch.Tensor:
        B, K, E = f.shape
        G = Hc @ Hc.mH
        d = G.diagonal(dim1=-2, dim2=-1).real
        Gs = G / (1.0 + d.mean(-1))[:, None, None]
        fj = f[:, :, None, :].expand(B, K, K, E)
        fk = f[:, None, :, :].expand(B, K, K, E)
        dj = torch.log1p(d)[:, :, None].expand(B, K, K)
        dk = torch.log1p(d)[:, None, :].expand(B, K, K)
        e = torch.stack([Gs.real, Gs.imag, Gs.abs(), dj, dk], -1)
        out = self.net(torch.cat([fj, fk, e], -1))
        return torch.complex(out[..., 0], out[..., 1]).to(Hc.dtype)


class PaPPTeacher(nn.Module):
    """Teacher heads: ``u_k, w_k > 0`` per user, then one WMMSE beamformer update at unit power.

    ``forward(f, H_bar, power=None)`` returns ``(W_bar_T, u, w)``; ``W_bar_T`` ``(B, M, K)``
    with ``||W_bar_T||_F = 1`` (the update on ``H_bar`` with unit noise and ``power``, 1 by
    default: the normalised problem), differentiable twice through the implicit derivative of
    the multiplier (the inner step of MLDG and MAML differentiates the gradient: with first
    derivatives only, the teacher's curvature would be missing from the meta-gradient). The
    update is computed in double precision whatever the input's dtype and returned in
    ``H_bar``'s.
    """

    def __init__(self, embed: int, hidden: int = 64, bisection_iters: int = 40):
        super().__init__()
        self.head = _mlp([embed, hidden, 2])
        self.bisection_iters = check_positive_int(bisection_iters, "bisection_iters")

    def forward(self, f: torch.Tensor, H_bar: torch.Tensor, power=None):
        B, K, _ = H_bar.shape
        out = self.head(f).clamp(-20.0, 20.0)
        rdt = H_bar.real.dtype
        u = torch.exp(out[..., 0]).to(rdt)
        w = torch.exp(out[..., 1]).to(rdt)
        # the update in double precision, like the student's solve: at high SNR, A spans
        # many orders of magnitude and, in single precision, the implicit derivative of mu
        # became non-finite on some samples (training diverged to NaN in the teacher stage)
        f64, c128 = torch.float64, torch.complex128
        P = torch.ones(B, dtype=f64, device=H_bar.device) if power is None else power.to(f64)
        a = torch.ones(B, K, dtype=f64, device=H_bar.device)
        W = _precoder_twice_differentiable(H_bar.to(c128), u.to(c128), w.to(f64), P, a,
                                           self.bisection_iters)  # fmt: skip
        return unit_power(W).to(H_bar.dtype), u, w


def beamforming_structure(H: torch.Tensor, lam: torch.Tensor, p: torch.Tensor,
                          A=None) -> torch.Tensor:  # fmt: skip
    """The optimal beamforming structure for a batch (Bjornson, Bengtsson & Ottersten 2014):
    columns ``v_k ~ (I + H^H diag(lam) H)^{-1} h_k`` with ``||A v_k||^2 = p_k`` (``A = I`` if
    ``None``), computed as ``H^H (I + diag(lam) H H^H)^{-1}`` (push-through): a ``K x K`` solve,
    in double precision.

    ``H`` complex ``(B, K, M)``; ``lam`` and ``p`` real, finite, non-negative ``(B, K)``; ``A``
    complex ``(B, M, N)`` with ``H`` then the effective channel ``(B, K, N)``. Returns complex
    ``(B, N or M, K)`` in ``H``'s dtype.
    """
    _check_H(H)
    B, K, N = H.shape
    for name, t in (("lam", lam), ("p", p)):
        check_tensor(t, name, complex_=False, shape=(B, K))
        if bool((t < 0).any()):
            raise ValueError(f"{name} must be non-negative")
    if A is not None:
        check_tensor(A, "A", complex_=True, ndim=3)
        if A.shape[0] != B or A.shape[-1] != N:
            raise ValueError(f"A must have shape ({B}, M, {N}) for H of shape {tuple(H.shape)},"
                             f" got {tuple(A.shape)}")  # fmt: skip
    return _structure(H, lam, p, A)


def _structure(H: torch.Tensor, lam: torch.Tensor, p: torch.Tensor, A=None) -> torch.Tensor:
    """:func:`beamforming_structure` without checks (the heads' forward pass)."""
    K, dt = H.shape[-2], H.dtype
    # in double precision: at high SNR, I + diag(lam) G has a condition number far beyond what
    # single precision resolves (the solve is K x K, so this costs little)
    Hd = H.to(torch.complex128)
    G = Hd @ Hd.mH
    eye = torch.eye(K, dtype=Hd.dtype, device=H.device)
    S = eye + lam.to(Hd.dtype)[..., :, None] * G
    # the right-hand side expanded to (B, K, K): a plain (K, K) identity would be read as a
    # batch of vectors when B == K
    T = torch.linalg.solve(S, eye.expand_as(S))  # (B, K, K)
    V = Hd.mH @ T
    n = torch.linalg.vector_norm(V if A is None else A.to(Hd.dtype) @ V, dim=-2)
    n = n.clamp_min(1e-300)
    scale = p.to(torch.float64).clamp_min(1e-30).sqrt() / n
    return (V * scale.to(Hd.dtype)[..., None, :]).to(dt)


class PaPPStudent(nn.Module):
    """Fully digital student head Phi (``forward(f, H_bar) -> (B, M, K)``, unit power).

    ``structure=True`` (default): the optimal beamforming structure (Bjornson, Bengtsson &
    Ottersten 2014), ``w_k = sqrt(p_k) (I + sum_j lam_j h_j h_j^H)^{-1} h_k / ||.||`` with
    ``lam`` and ``p`` (each summing to 1, softmax over the users; with ``free_scale`` ``lam``
    is ``exp`` of the head, for an input not normalised by the power) from a per-user head: every
    sum-rate-optimal precoder has this form for some ``lam, p`` (the uplink and downlink powers
    of the dual problem); one ``K x K`` solve, no iteration. ``structure=False``: the channel
    span ``W_bar = H_bar^H X`` with ``X`` from a pairwise head (``_PairCoefficients``).
    """

    def __init__(self, embed: int, hidden: int = 64, structure: bool = True,
                 free_scale: bool = False):  # fmt: skip
        super().__init__()
        self.structure = bool(structure)
        self.free_scale = bool(free_scale)
        if self.structure:
            self.head = _mlp([embed, hidden, hidden, 2])
        else:
            self.pairs = _PairCoefficients(embed, hidden)

    def forward(self, f: torch.Tensor, H_bar: torch.Tensor) -> torch.Tensor:
        if not self.structure:
            return unit_power(H_bar.mH @ self.pairs(f, H_bar))
        out = self.head(f)
        if self.free_scale:  # lam in units where sum lam = P / sigma^2 must be learned
            lam = torch.exp(out[..., 0].clamp(-30.0, 30.0)).to(H_bar.real.dtype)
        else:
            lam = torch.softmax(out[..., 0], -1).to(H_bar.real.dtype)
        p = torch.softmax(out[..., 1], -1).to(H_bar.real.dtype)
        return _structure(H_bar, lam, p)


class PaPPHybridStudent(nn.Module):
    """Hybrid student head: analog ``A`` (phase only, ``M x N_RF``) and digital ``W_dp``.

    ``A = exp(j angle(H_bar^H Y)) / sqrt(M)`` with ``Y`` ``(K, N_RF)`` from the user features
    (invariant under a relabelling of the users); ``W_dp`` has the structure of
    :class:`PaPPStudent` on the effective channel ``H_eff = H_bar A``, with the power of every
    stream measured after ``A``, so ``||A W_dp||_F = 1``.
    ``forward(f, H_bar)`` returns ``(W_bar, A, W_dp)``.
    """

    def __init__(self, embed: int, n_rf: int = 4, hidden: int = 64):
        super().__init__()
        self.n_rf = check_positive_int(n_rf, "n_rf")
        self.analog = _mlp([embed, hidden, 2 * self.n_rf])
        self.digital = _mlp([embed, hidden, hidden, 2])

    def forward(self, f: torch.Tensor, H_bar: torch.Tensor):
        M = H_bar.shape[-1]
        y = self.analog(f)
        Y = torch.complex(y[..., : self.n_rf], y[..., self.n_rf :]).to(H_bar.dtype)
        S = H_bar.mH @ Y  # (B, M, N_RF)
        A = torch.polar(torch.full_like(S.real, 1.0 / math.sqrt(M)), torch.angle(S))
        H_eff = H_bar @ A  # (B, K, N_RF)
        out = self.digital(f)
        rdt = H_bar.real.dtype
        lam = torch.softmax(out[..., 0], -1).to(rdt)
        p = torch.softmax(out[..., 1], -1).to(rdt)
        W_dp = _structure(H_eff, lam, p, A)  # ||A w_dp,k||^2 = p_k
        return A @ W_dp, A, W_dp


class PaPPNet(nn.Module):
    """Backbone + teacher + student (``hybrid``: the hybrid student, ``n_rf`` RF chains).

    ``forward(H_bar)`` returns the student's ``W_bar`` (what is kept at inference);
    ``forward(H_bar, teacher=True)`` returns ``(W_bar_student, W_bar_teacher)``. The input is
    power-aware normalised (:func:`power_aware_input`), except for the ablation
    ``PaPPNet(..., normalise=False)``: it is fed ``H / sigma`` (the channel at unit transmit
    power) and the SNR ``snr_db`` as an explicit input feature, ``forward(H, snr_db)``; its
    teacher step uses the power ``10^(snr_db / 10)``.
    """

    def __init__(self, n_h: int = 8, n_v: int = 8, embed: int = 64, hidden: int = 64,
                 hybrid: bool = False, n_rf: int = 4, cnn: bool = True,
                 normalise: bool = True, structure: bool = True):  # fmt: skip
        super().__init__()
        self.normalise = bool(normalise)
        self.backbone = PaPPBackbone(n_h, n_v, embed, cnn=cnn, snr_input=not self.normalise)
        self.teacher = PaPPTeacher(embed, hidden)
        self.hybrid = bool(hybrid)
        self.student = PaPPHybridStudent(embed, n_rf, hidden) if hybrid else PaPPStudent(
            embed, hidden, structure, free_scale=not self.normalise)  # fmt: skip
        self.max_users = None

    def forward(self, H_bar: torch.Tensor, snr_db=None, teacher: bool = False):
        if not self.normalise and snr_db is None:
            raise ValueError("a PaPPNet built with normalise=False needs snr_db")
        f = self.backbone(H_bar, snr_db)
        W = self.student(f, H_bar)
        W = W[0] if self.hybrid else W
        if not teacher:
            return W
        power = None if self.normalise else 10.0 ** (snr_db / 10.0)
        return W, self.teacher(f, H_bar, power)[0]


class CNNPrecoderNet(nn.Module):
    """The CNN baseline of the PaPP paper's DeepAll-CNN and MAML-CNN: the ``K x M``
    normalised channel as an image (real and imaginary parts of every user's direction
    ``h_k / ||h_k||`` and the plane ``log(1 + ||h_k||^2) / 10``: three input channels), three
    convolutions and two linear layers that output a correction ``D`` (``M x K`` complex) to
    the matched filter, ``W_bar = unit_power(H_dir^H + D)``; not equivariant, a fixed ``K``."""

    def __init__(self, users: int = 4, antennas: int = 64, channels: int = 16, hidden: int = 256):
        super().__init__()
        self.K = check_positive_int(users, "users")
        self.M = check_positive_int(antennas, "antennas")
        c = check_positive_int(channels, "channels")
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.GELU(),
            nn.Conv2d(c, c, 3, padding=1), nn.GELU(),
            nn.Conv2d(c, 2, 3, padding=1), nn.Flatten(),
            nn.Linear(2 * self.K * self.M, hidden), nn.GELU(),
            nn.Linear(hidden, 2 * self.K * self.M),
        )  # fmt: skip
        self.max_users = self.K

    normalise = True

    def forward(self, H_bar: torch.Tensor, snr_db=None, teacher: bool = False):
        B, K, M = H_bar.shape
        norm = torch.linalg.vector_norm(H_bar, dim=-1, keepdim=True)
        d = H_bar / norm.clamp_min(torch.finfo(norm.dtype).tiny).to(H_bar.dtype)
        gain = (torch.log1p(norm.square()) / 10.0).expand(B, K, M).to(d.real.dtype)
        x = torch.stack([d.real, d.imag, gain], 1)
        y = self.net(x).reshape(B, 2, M, K)
        W = unit_power(d.mH + torch.complex(y[:, 0], y[:, 1]).to(H_bar.dtype))
        return (W, None) if teacher else W


# --------------------------------------------------------------------------- #
# Losses
# --------------------------------------------------------------------------- #
def student_loss(W_bar, W_bar_T, H_bar, rate_ref, lam: float) -> torch.Tensor:
    """``L_S = MSE(W_bar_T, W_bar) - lam R(W_bar) / R_WMMSE`` averaged over the batch.

    ``MSE`` is ``||W_bar - W_bar_T||_F^2`` (both unit-power, so in ``[0, 4]``); ``W_bar_T`` is
    treated as a constant; ``rate_ref`` ``(B,)`` is a positive reference sum rate of the sample
    (the chapter: WMMSE run 300 iterations from the equal-power RZF).
    """
    mse = _abs2(W_bar - W_bar_T.detach()).sum((-2, -1))
    return (mse - lam * papp_rate(H_bar, W_bar) / rate_ref).mean()


class ReliabilityGate(Callback):
    """``lambda = lambda_0`` until the imitation error stops improving, then ``lambda_1``.

    ``metric(state) -> float`` measures the imitation error (e.g. the validation MSE between
    student and teacher); the gate opens after ``patience`` validations whose metric is not
    below ``(1 - rel_tol)`` times the best one, counting only validations of the training
    stage named ``stage`` (all stages if ``None``). ``value`` is read by the step function.
    """

    def __init__(self, metric: Callable, lambda_0: float = 0.1, lambda_1: float = 1.0,
                 patience: int = 3, rel_tol: float = 0.01, stage: str | None = None):  # fmt: skip
        self.metric = metric
        self.stage = stage
        self.lambda_0 = check_number(lambda_0, "lambda_0", lo=0.0)
        self.lambda_1 = check_number(lambda_1, "lambda_1", lo=0.0)
        self.patience = check_positive_int(patience, "patience")
        self.rel_tol = check_number(rel_tol, "rel_tol", lo=0.0, hi=1.0)
        self.best, self.wait, self.open, self.opened_at = math.inf, 0, False, None

    @property
    def value(self) -> float:
        return self.lambda_1 if self.open else self.lambda_0

    def on_validation(self, state, metric) -> None:
        st = getattr(state, "stage", None)
        if self.open or (self.stage is not None and getattr(st, "name", None) != self.stage):
            return
        m = float(self.metric(state))
        if m < (1.0 - self.rel_tol) * self.best:
            self.best, self.wait = m, 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.open, self.opened_at = True, state.step

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait, "open": self.open,
                "opened_at": -1 if self.opened_at is None else self.opened_at}  # fmt: skip

    def load_state_dict(self, d) -> None:
        self.best, self.wait, self.open = float(d["best"]), int(d["wait"]), bool(d["open"])
        self.opened_at = None if int(d["opened_at"]) < 0 else int(d["opened_at"])


# --------------------------------------------------------------------------- #
# Meta-learning objectives (torch.func.functional_call)
# --------------------------------------------------------------------------- #
def _inner_step(model, params, loss_fn, batch, inner_lr):
    """``theta' = theta - alpha grad L(theta; batch)`` keeping the graph (second order)."""
    loss = loss_fn(lambda *x, **kw: functional_call(model, params, x, kw), batch)
    names = [n for n, p in params.items() if p.requires_grad]
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True,
                                allow_unused=True)  # fmt: skip
    new = dict(params)
    for n, g in zip(names, grads, strict=True):
        if g is not None:
            new[n] = params[n] - inner_lr * g
    return loss, new


def mldg_objective(model: nn.Module, loss_fn: Callable, train_batches: Sequence,
                   gen_batches: Sequence, inner_lr: float = 1e-3, beta: float = 1.0):  # fmt: skip
    """MLDG objective (Li et al. 2018): ``L_tr(theta) + beta L_gen(theta - alpha grad L_tr)``.

    ``loss_fn(forward, batch) -> scalar`` scores a batch with ``forward(*inputs)`` (the model
    called with the given weights); ``train_batches`` are the meta-train domains' batches (their
    mean loss is ``L_tr``), ``gen_batches`` the meta-generalisation domains'. The gradient of the
    returned scalar w.r.t. the model's parameters is ``delta_train + beta delta_gen``, the
    meta-gradient going through the inner step. Returns ``(objective, L_tr, L_gen)``.
    """
    if not train_batches or not gen_batches:
        raise ValueError("mldg_objective needs at least one meta-train and one meta-gen batch")
    check_number(inner_lr, "inner_lr", lo=0.0)
    check_number(beta, "beta", lo=0.0)
    params = dict(model.named_parameters())

    def mean_loss(fwd, batches):
        return torch.stack([loss_fn(fwd, b) for b in batches]).mean()

    l_tr, new = _inner_step(model, params, mean_loss, train_batches, inner_lr)
    l_gen = mean_loss(lambda *x, **kw: functional_call(model, new, x, kw), gen_batches)
    return l_tr + beta * l_gen, l_tr.detach(), l_gen.detach()


def maml_objective(model: nn.Module, loss_fn: Callable, tasks: Sequence, inner_lr: float = 1e-3,
                   inner_steps: int = 1):  # fmt: skip
    """MAML objective (Finn et al. 2017): mean over ``tasks = [(support, query), ...]`` (one
    per domain) of the query loss after ``inner_steps`` gradient steps on the support batch.
    Returns ``(objective, mean support loss)``."""
    if not tasks:
        raise ValueError("maml_objective needs at least one (support, query) task")
    check_positive_int(inner_steps, "inner_steps")
    check_number(inner_lr, "inner_lr", lo=0.0)
    outer, inner = [], []
    for support, query in tasks:
        params = dict(model.named_parameters())
        for _ in range(inner_steps):
            l_s, params = _inner_step(model, params, loss_fn, support, inner_lr)
        inner.append(l_s.detach())
        outer.append(loss_fn(lambda *x, p=params, **kw: functional_call(model, p, x, kw), query))
    return torch.stack(outer).mean(), torch.stack(inner).mean()


# --------------------------------------------------------------------------- #
# The precoder interface
# --------------------------------------------------------------------------- #
class LearnedPrecoder:
    """A trained PaPP / CNN network as a precoder ``(H, power, noise_var) -> V``.

    Feeds the model ``sqrt(P) / sigma * H`` (:func:`power_aware_input`), or ``H / sigma`` and
    the SNR in dB for the ablation built with ``normalise=False``; runs the student in
    ``eval()`` mode without gradients and returns ``sqrt(P) W_bar``, so ``tr(V V^H) = P``.
    Checks: complex finite ``H`` with the model's ``M`` antennas and at most its number of users.
    """

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model.eval()
        self.normalise = bool(getattr(model, "normalise", True))
        bb = getattr(model, "backbone", None)
        self.M = getattr(model, "M", None) or getattr(bb, "M", None)
        self.max_users = getattr(model, "max_users", None)

    def __call__(self, H: torch.Tensor, power, noise_var) -> torch.Tensor:
        _check_H(H)
        check_tensor(H, "H", finite=True)
        B, K, M = H.shape
        if self.M is not None and M != self.M:
            raise ValueError(f"H has {M} antennas; this precoder was built for M = {self.M}")
        if self.max_users is not None and K > self.max_users:
            raise ValueError(
                f"H has K = {K} users; this precoder supports at most {self.max_users}"
            )
        P = _scalar(power, "power", H)
        s2 = _scalar(noise_var, "noise_var", H)
        p = next(self.model.parameters())
        cdt = torch.complex128 if p.dtype == torch.float64 else torch.complex64
        scale = P / s2 if self.normalise else 1.0 / s2
        Hb = (H * torch.sqrt(scale).to(H.dtype)[:, None, None]).to(device=p.device, dtype=cdt)
        snr_db = None if self.normalise else (10.0 * torch.log10(P / s2)).to(p.device, p.dtype)
        with torch.no_grad():
            W = self.model(Hb, snr_db)
        W = W.to(device=H.device, dtype=H.dtype)
        return W * torch.sqrt(P).to(H.dtype)[:, None, None]


def finetune_rate(model: nn.Module, H: torch.Tensor, snr_db: Sequence[float], *, steps: int = 200,
                  lr: float = 1e-4, batch: int = 32, beta: float = 0.0,
                  generator: torch.Generator | None = None,
                  history: list | None = None) -> nn.Module:  # fmt: skip
    """Few-shot adaptation: a copy of ``model`` fine-tuned on the unlabeled local channels ``H``
    ``(N, K, M)`` by the self-supervised rate loss ``-mean R(H_obs, W)``, where ``H_obs`` is the
    CSI the base station observes, ``sqrt(1 - beta^2) H + beta E`` (fixed once: a few stored
    estimates, not fresh noise each step), so with ``beta > 0`` the loss itself is measured on
    erroneous CSI. Each step draws ``min(batch, N)`` samples and an SNR from ``snr_db``; Adam at
    ``lr``, ``steps`` steps, in ``train()`` mode. Only the deployed parts (backbone and student)
    change. Returns the fine-tuned copy (``eval()`` mode); the training rate of every step is
    appended to ``history`` when given.
    """
    import copy

    check_tensor(H, "H", complex_=True, ndim=3)
    if H.shape[0] < 1:
        raise ValueError("finetune_rate needs at least one local sample")
    steps = check_positive_int(steps, "steps", minimum=0)
    check_number(lr, "lr", lo=0.0, lo_open=True)
    check_number(beta, "beta", lo=0.0, hi=1.0)
    batch = check_positive_int(batch, "batch")
    if not snr_db:
        raise ValueError("snr_db must list at least one SNR")
    for v in snr_db:
        check_number(v, "snr_db[i]")
    g = torch.Generator().manual_seed(0) if generator is None else generator
    net = copy.deepcopy(model).train()
    p0 = next(net.parameters())
    cdt = torch.complex128 if p0.dtype == torch.float64 else torch.complex64
    Hn = H.to(cdt)
    if beta > 0:
        E = torch.randn(Hn.shape, generator=g, dtype=cdt)
        Hn = math.sqrt(1.0 - beta * beta) * Hn + beta * E
    params = [q for n, q in net.named_parameters() if not n.startswith("teacher.")]
    opt = torch.optim.Adam(params, lr=lr)
    snr = torch.tensor(list(snr_db), dtype=p0.dtype)
    norm = getattr(net, "normalise", True)
    b = min(batch, Hn.shape[0])
    for _ in range(steps):
        idx = torch.randperm(Hn.shape[0], generator=g)[:b]
        s = snr[torch.randint(len(snr), (b,), generator=g)]
        Hb = Hn[idx] * (10.0 ** (s / 20.0)).to(cdt)[:, None, None]
        W = net(Hb) if norm else net(Hn[idx], s)
        loss = -papp_rate(Hb, W).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if history is not None:
            history.append(-float(loss.detach()))
    return net.eval()
