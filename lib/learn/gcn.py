"""Graph convolutional network over the users of a multi-user system (Schynol & Pesavento,
Sec. 4.1, eqs. (28)-(29); chapter *Learned hybrid beamforming*).

The users are the nodes of a graph whose edge weights are the estimated correlation
coefficients of their channels (eq. (29)),

.. math::
    [\\mathbf S]_{kj} = \\frac{|\\hat{\\mathbf h}_k^{\\mathsf H}\\hat{\\mathbf h}_j|}
    {\\|\\hat{\\mathbf h}_k\\|\\,\\|\\hat{\\mathbf h}_j\\|}\\ (k \\ne j),
    \\qquad [\\mathbf S]_{kk} = 0,

(:func:`~lib.learn.correlation_shift`), and each layer of the GCN is a polynomial graph filter of
degree
``D`` followed by a pointwise nonlinearity (eq. (28)),

.. math::
    \\mathbf X_{l+1}
    = \\sigma\\Big(\\sum_{d=0}^{D} \\mathbf S^d \\mathbf X_l \\mathbf W_{l,d}\\Big),
    \\qquad \\mathbf X_l \\in \\mathbb R^{K \\times F_l}.

Relabelling the users permutes the rows of ``X`` and the rows and columns of ``S`` alike, and
the output is permuted the same way (permutation equivariance); the weights do not depend on
``K``, so one network serves any number of users. Degree ``D = 0`` removes the graph: every user
is processed by the same per-user MLP (the paper's U-G-HBF-FCN ablation).

The per-user input features are log-mapped by the caller and normalised here by a batch
normalisation over all users of a batch (a statistic that is symmetric in the users, so
equivariance is kept). The outputs are positive coefficients through an exponential with soft
bounds (:func:`~lib.learn.soft_bounded_exp`). Coefficients of a *pair* of users (the interference
terms of
the virtual channels, eq. (27)) come from :class:`PairHead`, which combines the two users'
output features and their edge weight symmetrically in the graph sense (equivariant under a
joint permutation of both indices).

Graphs have a handful of nodes and are batched, so they are dense tensors ``(B, K, F)`` and
``(B, K, K)``; no graph library is needed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lib.core.checks import check_positive_int

__all__ = ["correlation_shift", "soft_bounded_exp", "GCN", "PairHead"]


def correlation_shift(H_hat: torch.Tensor) -> torch.Tensor:
    """Shift operator of eq. (29): estimated correlation coefficients, zero diagonal.

    Parameters
    ----------
    H_hat : torch.Tensor
        Complex ``(B, K, M)``, row ``k`` the estimate ``h_k^H`` (the book's convention).

    Returns
    -------
    torch.Tensor
        Real ``(B, K, K)``, symmetric, entries in ``[0, 1]``; a user with a zero estimate has
        no edges.
    """
    if not isinstance(H_hat, torch.Tensor) or H_hat.dim() != 3 or not H_hat.is_complex():
        raise ValueError(f"H_hat must be a complex (B, K, M) tensor, got {_describe(H_hat)}")
    norm = torch.linalg.vector_norm(H_hat, dim=-1)
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    U = H_hat / safe[..., None]
    S = (U @ U.mH).abs()
    eye = torch.eye(H_hat.shape[1], dtype=torch.bool, device=H_hat.device)
    return S.masked_fill(eye, 0.0).clamp_(max=1.0)


def soft_bounded_exp(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``exp`` of ``x`` squashed smoothly into ``[log low, log high]``: a positive output in
    ``(low, high)``, equal to ``sqrt(low * high)`` at ``x = 0``, with derivative 1 in log scale
    there (``log y`` grows like ``x`` near 0)."""
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got low={low}, high={high}")
    a, b = math.log(low), math.log(high)
    return torch.exp(a + (b - a) * torch.sigmoid(4.0 * x / (b - a)))


class _GraphFilter(nn.Module):
    """``sum_{d=0}^{D} S^d X W_d`` (eq. (28) before the nonlinearity)."""

    def __init__(self, f_in: int, f_out: int, degree: int):
        super().__init__()
        self.taps = nn.ModuleList(
            [nn.Linear(f_in, f_out, bias=(d == 0)) for d in range(degree + 1)]
        )

    def forward(self, X: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        out, Z = self.taps[0](X), X
        for tap in self.taps[1:]:
            Z = S @ Z
            out = out + tap(Z)
        return out


class GCN(nn.Module):
    """Graph convolutional network of eq. (28) with batch-normalised inputs and positive,
    softly bounded outputs.

    Parameters
    ----------
    features : sequence of int
        ``[F_0, F_1, ..., F_L]``: input features per user, hidden widths, outputs per user.
    degree : int
        Filter degree ``D >= 0`` (0: no graph, a per-user MLP).
    bounds : pair of float
        ``(low, high)`` of the output coefficients (:func:`~lib.learn.soft_bounded_exp`); ``None``
        returns
        the raw last layer.
    activation : callable
        Pointwise nonlinearity between layers (default ``ELU``).
    dtype : torch.dtype
        ``float32`` or ``float64``.

    Call ``gcn(X, S)`` with ``X`` real ``(B, K, F_0)`` and ``S`` real ``(B, K, K)``; returns
    ``(B, K, F_L)``.
    """

    def __init__(
        self,
        features,
        degree: int = 2,
        *,
        bounds=(1e-3, 1e3),
        activation=None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        features = [check_positive_int(f, "features") for f in features]
        if len(features) < 2:
            raise ValueError(f"features must list at least input and output sizes, got {features}")
        self.degree = check_positive_int(degree, "degree", minimum=0)
        if bounds is not None:
            soft_bounded_exp(torch.zeros(1), *bounds)  # checks the bounds once
        self.bounds = None if bounds is None else tuple(float(b) for b in bounds)
        self.activation = activation if activation is not None else nn.ELU()
        self.norm = nn.BatchNorm1d(features[0], dtype=dtype)
        self.layers = nn.ModuleList(
            [_GraphFilter(a, b, self.degree) for a, b in zip(features[:-1], features[1:])]
        ).to(dtype)
        self.features = features

    def embed(self, X: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """The last layer's raw output ``(B, K, F_L)`` (before the output bounds)."""
        _check_graph(X, S, self.features[0])
        B, K, F = X.shape
        Z = self.norm(X.reshape(B * K, F)).reshape(B, K, F)
        for i, layer in enumerate(self.layers):
            Z = layer(Z, S)
            if i < len(self.layers) - 1:
                Z = self.activation(Z)
        return Z

    def forward(self, X: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        Z = self.embed(X, S)
        return Z if self.bounds is None else soft_bounded_exp(Z, *self.bounds)


class PairHead(nn.Module):
    """Positive coefficients for ordered pairs of users from per-user embeddings.

    ``c_kj = soft_bounded_exp(a^T tanh(W_1 z_k + W_2 z_j + w_s S_kj + b))`` for ``k != j``
    (the diagonal is set to zero): a joint permutation of the users permutes the rows and the
    columns of the output alike.

    Parameters
    ----------
    f_in : int
        Size of the per-user embedding ``z_k``.
    hidden : int
        Width of the pair layer.
    bounds : pair of float
        Output range (:func:`~lib.learn.soft_bounded_exp`).
    dtype : torch.dtype
        ``float32`` or ``float64``.
    """

    def __init__(self, f_in: int, hidden: int = 16, *, bounds=(1e-3, 1e3), dtype=torch.float32):
        super().__init__()
        f_in, hidden = check_positive_int(f_in, "f_in"), check_positive_int(hidden, "hidden")
        soft_bounded_exp(torch.zeros(1), *bounds)
        self.bounds = tuple(float(b) for b in bounds)
        self.first = nn.Linear(f_in, hidden, dtype=dtype)
        self.second = nn.Linear(f_in, hidden, bias=False, dtype=dtype)
        self.edge = nn.Parameter(torch.zeros(hidden, dtype=dtype))
        self.out = nn.Linear(hidden, 1, dtype=dtype)

    def forward(self, Z: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """``Z`` ``(B, K, f_in)``, ``S`` ``(B, K, K)`` -> ``(B, K, K)``, zero diagonal."""
        if Z.dim() != 3 or S.shape != (*Z.shape[:2], Z.shape[1]):
            raise ValueError(
                f"Z must be (B, K, F) and S (B, K, K), got {tuple(Z.shape)} and {tuple(S.shape)}"
            )
        pre = self.first(Z)[:, :, None, :] + self.second(Z)[:, None, :, :]
        pre = pre + S[..., None] * self.edge
        c = soft_bounded_exp(self.out(torch.tanh(pre)).squeeze(-1), *self.bounds)
        eye = torch.eye(Z.shape[1], dtype=torch.bool, device=Z.device)
        return c.masked_fill(eye, 0.0)


def _describe(t) -> str:
    if isinstance(t, torch.Tensor):
        return f"{t.dtype} tensor of shape {tuple(t.shape)}"
    return type(t).__name__


def _check_graph(X, S, f0: int) -> None:
    if not isinstance(X, torch.Tensor) or X.dim() != 3 or not X.is_floating_point():
        raise ValueError(f"X must be a real (B, K, F) tensor, got {_describe(X)}")
    if X.shape[-1] != f0:
        raise ValueError(f"X must have {f0} features per user (last dim), got {X.shape[-1]}")
    B, K, _ = X.shape
    if not isinstance(S, torch.Tensor) or S.shape != (B, K, K) or S.is_complex():
        raise ValueError(f"S must be a real ({B}, {K}, {K}) tensor, got {_describe(S)}")
    if S.dtype != X.dtype or S.device != X.device:
        raise TypeError(f"S must match X's dtype and device, got {S.dtype} and {X.dtype}")
