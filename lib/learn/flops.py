"""Operation counts (real floating-point operations per channel) of WMMSE, the unfolded WMMSE,
ZF and RZF, the complexity axis of the chapter *Unfolded WMMSE* (Pellaco et al. 2020, Sec. VII).

Symbols: ``M`` antennas, ``K`` users, ``T`` layers (``layers``; the paper's ``L``), ``Q`` PGD
steps per layer (``pgd_steps``; the paper's ``K``). Convention: a complex multiply-add costs 8
real flops, a complex multiply 6, a complex add 2, a real operation 1; ``|z|^2`` costs 3; division,
sqrt and exp count 1. Every function returns an ``int``.
"""

from __future__ import annotations

from lib.core.checks import check_positive_int

__all__ = ["flops_wmmse", "flops_unfolded_wmmse", "flops_zf", "flops_rzf"]


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
