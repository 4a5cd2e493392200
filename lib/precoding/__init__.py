"""Downlink precoding: linear precoders, WMMSE, the DPC limit, QoS power minimisation, hybrid
beamforming and robust (outage-aware) designs.

Every public name of the modules below is re-exported here, so a notebook import is one line
(``from lib.precoding import ...``).
"""

from lib.precoding.capacity import (
    dpc_sum_capacity,
    dpc_sum_capacity_cvxpy,
)
from lib.precoding.common import (
    user_weights,
)
from lib.precoding.hybrid import (
    HybridResult,
    digital_min_power,
    exhaustive_search,
    fully_digital_min_power,
    greedy_codebook_selection,
    hybrid_sinr,
    independent_candidates,
    init_codewords,
    power_weights,
)
from lib.precoding.linear import (
    matched_filter_init,
    mrt,
    rzf,
    sinr,
    sum_rate,
    zf,
)
from lib.precoding.power_min import (
    MinPowerResult,
    min_power_duality,
    min_power_socp,
)
from lib.precoding.robust import (
    OutageResult,
    bisect_margin,
    empirical_outage,
    loaded_min_power,
    robust_sdp_design,
    single_user_outage,
)
from lib.precoding.weighted_mmse import (
    bisect_mu,
    wmmse,
    wmmse_precoder,
    wmmse_receivers,
    wmmse_weights,
)

__all__ = [
    "user_weights",
    "sinr",
    "sum_rate",
    "matched_filter_init",
    "mrt",
    "zf",
    "rzf",
    "wmmse_receivers",
    "wmmse_weights",
    "bisect_mu",
    "wmmse_precoder",
    "wmmse",
    "dpc_sum_capacity",
    "dpc_sum_capacity_cvxpy",
    "MinPowerResult",
    "min_power_socp",
    "min_power_duality",
    "HybridResult",
    "hybrid_sinr",
    "power_weights",
    "digital_min_power",
    "fully_digital_min_power",
    "init_codewords",
    "independent_candidates",
    "greedy_codebook_selection",
    "exhaustive_search",
    "OutageResult",
    "empirical_outage",
    "bisect_margin",
    "loaded_min_power",
    "robust_sdp_design",
    "single_user_outage",
]
