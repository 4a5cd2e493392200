"""Sparse recovery: problem generators, denoisers, ISTA/FISTA, AMP/VAMP/OAMP, state evolution and
the NMSE metric.

Every public name of the modules below is re-exported here, so a notebook import is one line
(``from lib.sparse import ...``).
"""

from lib.sparse.denoisers import (
    bg_mmse_denoiser,
    soft_threshold,
)
from lib.sparse.evolution import (
    calibrated_lambda,
    optimal_alpha,
    se_fixed_point,
    state_evolution,
)
from lib.sparse.message_passing import (
    DEFAULT_ALPHA,
    amp,
    oamp,
    vamp,
)
from lib.sparse.metrics import (
    nmse,
    nmse_db,
    support_oracle,
)
from lib.sparse.problems import (
    bernoulli_gaussian,
    few_path_channel,
    gaussian_matrix,
    haar_orthogonal,
    ill_conditioned_matrix,
    measure,
    noise_var_for_snr,
)
from lib.sparse.proximal import (
    fista,
    fista_momentum,
    ista,
    lasso_objective,
    lipschitz_constant,
)

__all__ = [
    "bernoulli_gaussian",
    "gaussian_matrix",
    "haar_orthogonal",
    "ill_conditioned_matrix",
    "noise_var_for_snr",
    "measure",
    "few_path_channel",
    "soft_threshold",
    "bg_mmse_denoiser",
    "lasso_objective",
    "lipschitz_constant",
    "ista",
    "fista_momentum",
    "fista",
    "DEFAULT_ALPHA",
    "amp",
    "vamp",
    "oamp",
    "state_evolution",
    "se_fixed_point",
    "optimal_alpha",
    "calibrated_lambda",
    "support_oracle",
    "nmse",
    "nmse_db",
]
