"""The physical layer: channel models, antenna arrays and codebooks, CSI estimation and feedback.

Every public name of the modules below is re-exported here, so a notebook import is one line
(``from lib.phy import ...``).
"""

from lib.phy.arrays import (
    beam_gain,
    channels_from_covariance,
    dft_codebook,
    kron_covariance,
    local_scattering_covariance,
    ula_response,
    upa_covariance,
    upa_steering,
)
from lib.phy.channels import (
    awgn,
    complex_normal,
    correlated_rayleigh,
    exponential_correlation,
    psd_sqrt,
    qpsk,
    rayleigh,
    received_signal,
)
from lib.phy.csi import (
    Type2Feedback,
    estimation_nmse_db,
    mmse_error_covariance,
    mmse_estimate,
    type2_feedback_bits,
    type2_quantize,
)

__all__ = [
    "complex_normal",
    "rayleigh",
    "exponential_correlation",
    "psd_sqrt",
    "correlated_rayleigh",
    "qpsk",
    "awgn",
    "received_signal",
    "ula_response",
    "upa_steering",
    "local_scattering_covariance",
    "kron_covariance",
    "upa_covariance",
    "channels_from_covariance",
    "dft_codebook",
    "beam_gain",
    "mmse_estimate",
    "mmse_error_covariance",
    "estimation_nmse_db",
    "type2_quantize",
    "type2_feedback_bits",
    "Type2Feedback",
]
