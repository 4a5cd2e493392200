"""Operation counts (real floating-point operations per channel) of WMMSE, the unfolded WMMSE,
ZF and RZF, the complexity axis of the chapter *Unfolded WMMSE* (Pellaco et al. 2020, Sec. VII),
and :func:`~lib.learn.count_flops`, a counter of the operations a torch function actually
executes (one counter for classical and learned precoders, chapter *Generalizable precoding*).

Symbols: ``M`` antennas, ``K`` users, ``T`` layers (``layers``; the paper's ``L``), ``Q`` PGD
steps per layer (``pgd_steps``; the paper's ``K``). Convention: a complex multiply-add costs 8
real flops, a complex multiply 6, a complex add 2, a real operation 1; ``|z|^2`` costs 3; division,
sqrt and exp count 1. Every function returns an ``int``.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

import torch
import torch.utils.flop_counter as _fc
from torch.utils._python_dispatch import TorchDispatchMode

from lib.core.checks import check_positive_int

__all__ = ["flops_wmmse", "flops_unfolded_wmmse", "flops_zf", "flops_rzf", "FlopCount",
           "count_flops"]  # fmt: skip


# --------------------------------------------------------------------------- #
# Operation counts (real floating-point operations per channel)
# --------------------------------------------------------------------------- #
# Convention: a complex multiply-add costs 8 real flops, a complex multiply 6, a complex
# add 2, a real operation 1; |z|^2 costs 3; division, sqrt and exp count 1. Matrix products
# are counted as dense products (no structure exploited beyond Hermitian symmetry where
# stated). These counts are what the algorithms do, not what a BLAS call does on a CPU
# (where small matrices are dominated by call overhead: see benchmarks/).
_EIGH_COEF = 9  # Hermitian eigendecomposition with vectors ~ 9 n^3 complex MACs (Golub & Van Loan)


def _uw_flops(M: int, K: int) -> int:
    """u (5b) and w (5a) updates: H V (K^2 M complex MACs), |.|^2, sums and divisions."""
    hv = 8 * K * K * M
    gains = 3 * K * K + K * K  # |h_k^H v_j|^2 and row sums
    u = K * (1 + 2)  # sigma^2 add, complex / real
    w = K * (2 + 1)  # interference sum minus own, reciprocal of 1 + ...
    return hv + gains + u + w


def flops_wmmse(M: int, K: int, iters: int, *, bisection_iters: int = 50) -> int:
    """Real flops per channel of ``iters`` classical WMMSE iterations (Shi et al.; lib.precoding).

    Per iteration: u and w updates; ``A`` (eq. (6), ``K M^2`` complex MACs, Hermitian half:
    counted full); the eigendecomposition ``A = U Lambda U^H`` (``9 M^3`` complex MACs);
    ``U^H R`` and ``U (.)`` (``2 M^2 K`` MACs); ``bisection_iters`` evaluations of eq. (8)
    (``3 M`` each) -- ``O(M^3)`` per iteration.

    Parameters
    ----------
    M, K : int
        Antennas and users.
    iters : int
        Iterations (``>= 0``).
    bisection_iters : int
        Bisection steps for the multiplier of eq. (8).

    Returns
    -------
    int
    """
    for n, v in (("M", M), ("K", K), ("iters", iters)):
        check_positive_int(v, n, minimum=0 if n == "iters" else 1)
    per = (
        _uw_flops(M, K)
        + 8 * K * M * M
        + 8 * _EIGH_COEF * M**3
        + 2 * 8 * M * M * K
        + bisection_iters * 4 * M
        + 4 * M * K
    )
    return int(iters * per)


def flops_unfolded_wmmse(
    M: int,
    K: int,
    layers: int,
    pgd_steps: int,
    *,
    normalised_steps: bool = False,
    momentum: bool = False,
) -> int:
    """Real flops per channel of the unfolded WMMSE, ``T`` layers of ``Q`` PGD steps each.

    Per layer: u and w updates; ``A`` (``K M^2`` complex MACs) and ``R`` (``M K`` complex
    multiplies) once; per PGD step ``A V`` (``M^2 K`` MACs), the gradient step
    (``M K`` complex MACs + subtraction), the norm (``3 M K``) and the projection scale
    (``M K`` real-complex products and a few scalars) -- ``O(T Q K M^2)`` overall.
    ``normalised_steps``: ``tr(A)`` (``M`` real adds), its reciprocal and ``Q`` scalar
    products per layer; ``momentum``: per step ``q >= 2`` the difference, its scaling by
    ``beta`` and the sum (``6 M K``) (:class:`~lib.learn.UnfoldedWMMSE`).

    Parameters
    ----------
    M, K : int
        Antennas and users.
    layers : int
        ``T`` (``>= 0``).
    pgd_steps : int
        ``Q``, PGD steps per layer (Pellaco et al. call it ``K``).

    Returns
    -------
    int
    """
    for n, v in (("M", M), ("K", K), ("layers", layers), ("pgd_steps", pgd_steps)):
        check_positive_int(v, n, minimum=0 if n == "layers" else 1)
    step = 8 * M * M * K + (2 + 8) * M * K + 3 * M * K + 2 * M * K + 5
    per = _uw_flops(M, K) + 8 * K * M * M + 6 * M * K + pgd_steps * step
    if normalised_steps:
        per += M + 1 + pgd_steps
    if momentum:
        per += (pgd_steps - 1) * 6 * M * K
    return int(layers * per)


def flops_zf(M: int, K: int) -> int:
    """Real flops per channel of ZF: Gram ``H H^H`` (``K^2 M``), an LU solve for ``M`` right-hand
    sides (``K^3 / 3 + K^2 M`` complex MACs, counted as 8 flops each) and the power scaling."""
    check_positive_int(M, "M")
    check_positive_int(K, "K")
    macs = K * K * M + K**3 / 3 + K * K * M
    return int(8 * macs + 5 * M * K)


def flops_rzf(M: int, K: int) -> int:
    """Real flops per channel of RZF: as :func:`~lib.learn.flops_zf` plus the diagonal loading
    (``K`` adds)."""
    return flops_zf(M, K) + 2 * K


# --------------------------------------------------------------------------- #
# Measured counts: the operations a torch function executes
# --------------------------------------------------------------------------- #
class FlopCount(NamedTuple):
    """Result of :func:`~lib.learn.count_flops`: real flops in total and by category
    (``"matmul"``, ``"conv"``, ``"eigh"``, ``"elementwise"``) and the number of calls per aten
    operator that was counted."""

    total: int
    by_kind: dict
    ops: dict


_LINEAR = {"mm", "addmm", "bmm", "baddbmm"}
_CONV = {"convolution", "_convolution"}
_EIGH = {"_linalg_eigh", "linalg_eigh"}
# multiply-adds of the dense factorisations (Golub & Van Loan), ``m >= n``; solves apart
_FACTOR = {
    "linalg_qr": lambda m, n: 2 * m * n * n - 2 * n**3 / 3,  # Householder QR, Q and R
    "_linalg_svd": lambda m, n: 3 * m * n * n + 10 * n**3,  # thin SVD with vectors
    "linalg_cholesky_ex": lambda m, n: n**3 / 6,
    "linalg_lu_factor_ex": lambda m, n: n**3 / 3,
    "linalg_inv_ex": lambda m, n: n**3,
    "linalg_solve_triangular": None,
    "_linalg_solve_ex": None,
    "linalg_solve": None,
}
_REDUCE = {"sum", "mean", "linalg_vector_norm", "amax", "amin", "prod"}
_ELEMENTWISE = {
    "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "pow", "pow_", "sqrt",
    "rsqrt", "exp", "log", "log1p", "log2", "reciprocal", "addcmul", "addcmul_", "abs", "neg",
    "gelu", "relu", "sigmoid", "tanh", "clamp", "clamp_min", "clamp_max", "where", "gt", "lt",
    "ge", "le", "square", "lerp_", "angle", "polar", "complex", "sort", "atan2", "cos", "sin",
}  # fmt: skip


def _is_complex(t) -> bool:
    return isinstance(t, torch.Tensor) and t.is_complex()


class _Counter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.kind: Counter = Counter()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        cplx = any(_is_complex(a) for a in tensors) or _is_complex(out)
        if name in _LINEAR or name in _CONV:
            f = _fc.flop_registry[func.overloadpacket]
            n = f(*args, out_val=out, **kwargs)  # 2 flops per real MAC (shape-wrapped formula)
            self.kind["matmul" if name in _LINEAR else "conv"] += int(n) * (4 if cplx else 1)
        elif name in _EIGH:
            A = args[0]
            n = A.shape[-1]
            batch = A.numel() // (n * n)
            self.kind["eigh"] += int(batch * _EIGH_COEF * n**3 * (8 if cplx else 2))
        elif name in _FACTOR:
            A = args[0]
            m, n = A.shape[-2], A.shape[-1]
            batch = A.numel() // max(1, m * n)
            if name in ("linalg_solve_triangular", "_linalg_solve_ex", "linalg_solve"):
                rhs = args[1].shape[-1] if name == "linalg_solve_triangular" else (
                    args[1].shape[-1] if args[1].dim() == A.dim() else 1)  # fmt: skip
                macs = n * n * rhs / 2 + (n**3 / 3 + n * n * rhs / 2 if "triangular" not in
                                          name else 0)  # fmt: skip
            else:
                lo, hi = min(m, n), max(m, n)
                macs = _FACTOR[name](hi, lo)
            self.kind["factor"] += int(batch * macs * (8 if cplx else 2))
        elif name in _ELEMENTWISE or name in _REDUCE:
            size = tensors[0].numel() if name in _REDUCE and tensors else (
                out.numel() if isinstance(out, torch.Tensor) else 0)  # fmt: skip
            self.kind["elementwise"] += int(size) * (2 if cplx else 1)
        else:
            return out
        self.ops[name] += 1
        return out


def count_flops(fn, *args, per: int | None = None, **kwargs) -> FlopCount:
    """Real flops executed by ``fn(*args, **kwargs)`` (under ``torch.no_grad``), from the aten
    operators it dispatches.

    Convention (that of this module): a real multiply-add is 2 flops and a complex one 8
    (matrix products and convolutions with the formulas of :mod:`torch.utils.flop_counter`,
    times 4 for complex operands); a Hermitian eigendecomposition of an ``n x n`` matrix
    ``9 n^3`` multiply-adds; QR, SVD, Cholesky, LU, inverse and (triangular) solves the
    multiply-adds of their dense algorithms (Golub & Van Loan); an elementwise operation or a
    reduction 1 flop per element (2 for complex), whatever the function (division, square root,
    exponential and comparison included). Indexing, copies and reshapes count nothing.
    ``per``: divide every count by this number (e.g. the batch size, for flops per channel).
    """
    c = _Counter()
    with torch.no_grad(), c:
        fn(*args, **kwargs)
    d = 1 if per is None else check_positive_int(per, "per")
    by_kind = {k: v / d for k, v in c.kind.items()}
    return FlopCount(int(round(sum(by_kind.values()))), by_kind, dict(c.ops))
