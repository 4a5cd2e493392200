"""Cross-checks of lib's channel covariances against Sionna's (``sionna.phy``, PyTorch).

* the exponential correlation model must agree exactly with
  ``sionna.phy.channel.utils.exp_corr_mat``;
* Sionna's ``one_ring_corr_mat`` is the small-angular-spread approximation of
  the Gaussian local-scattering model (Bjornson et al. 2017, eq. (2.24)), which
  ``lib.phy.local_scattering_covariance`` integrates numerically: the two must
  agree closely for narrow spreads, and the gap must shrink with the spread.
"""

import math

import pytest
import sionna.phy.channel.utils as sionna_utils  # installed by `make setup` (--no-deps)
import torch

from lib.phy import arrays, channels


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.9, 0.99])
def test_exponential_correlation_matches_sionna(rho):
    a = torch.tensor(rho, dtype=torch.float64)
    theirs = sionna_utils.exp_corr_mat(a, 6, precision="double")
    ours = channels.exponential_correlation(6, rho)
    assert torch.allclose(theirs, ours, atol=1e-14)


@pytest.mark.parametrize("phi_deg", [0.0, 30.0, -50.0])
def test_local_scattering_approaches_one_ring_for_narrow_spread(phi_deg):
    gaps = []
    for spread_deg in (1.0, 2.0, 5.0, 10.0):
        theirs = sionna_utils.one_ring_corr_mat(
            torch.tensor(phi_deg, dtype=torch.float64),
            8,
            sigma_phi_deg=spread_deg,
            precision="double",
        )
        ours = arrays.local_scattering_covariance(
            8, math.radians(phi_deg), math.radians(spread_deg)
        )
        gaps.append(float((theirs - ours).abs().max()))
    assert gaps[0] < 3e-3 and gaps[1] < 1e-2
    assert all(a < b for a, b in zip(gaps, gaps[1:])), gaps


@pytest.mark.parametrize("precision", ["single", "double"])
def test_psd_sqrt_of_sionnas_covariances(precision):
    """Sionna's one-ring covariances (rank-deficient for narrow spreads, computed independently
    of lib) pass lib's dtype-relative Hermitian/PSD checks in both precisions."""
    R = sionna_utils.one_ring_corr_mat(
        torch.tensor([0.0, 30.0, -50.0]), 16, sigma_phi_deg=2.0, precision=precision
    )
    S = channels.psd_sqrt(R)
    tol = 1e-4 if precision == "single" else 1e-10
    assert S.dtype == R.dtype
    assert float((S @ S - R).abs().max()) < tol * float(R.abs().max())
