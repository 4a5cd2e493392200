"""Learned models and their training: the unrolled base class and trainer, learned sparse recovery
(LISTA, ALISTA, TISTA, LAMP, OAMP-Net), the deep-unfolded WMMSE and operation counts.

Every public name of the modules below is re-exported here, so a notebook import is one line
(``from lib.learn import ...``).
"""

from lib.learn.flops import (
    flops_rzf,
    flops_unfolded_wmmse,
    flops_wmmse,
    flops_zf,
)
from lib.learn.unfolded_wmmse import (
    PGDStepSizes,
    UnfoldedWMMSE,
    per_layer_wsr,
    pgd_gradient,
    pgd_precoder,
    project_power_ball,
    train_progressive,
    truncated_wmmse_wsr,
    wsr_loss,
)
from lib.learn.unrolled_sparse import (
    LAMP,
    LISTA,
    LeanISTA,
    MLPRecovery,
    OAMPNet,
    analytic_weight,
    bg_mmse,
    contraction_factors,
    contraction_penalty,
    error_contraction,
    layer_operators,
    nmse_loss,
    soft,
    with_matrix,
)
from lib.learn.unrolling import (
    TrainHistory,
    UnrolledModel,
    count_parameters,
    freeze_layers,
    to_device,
    train_unrolled,
)

__all__ = [
    "UnrolledModel",
    "TrainHistory",
    "train_unrolled",
    "count_parameters",
    "freeze_layers",
    "to_device",
    "soft",
    "bg_mmse",
    "analytic_weight",
    "LISTA",
    "LeanISTA",
    "LAMP",
    "OAMPNet",
    "MLPRecovery",
    "layer_operators",
    "contraction_factors",
    "contraction_penalty",
    "error_contraction",
    "nmse_loss",
    "with_matrix",
    "pgd_gradient",
    "project_power_ball",
    "pgd_precoder",
    "PGDStepSizes",
    "UnfoldedWMMSE",
    "wsr_loss",
    "train_progressive",
    "per_layer_wsr",
    "truncated_wmmse_wsr",
    "flops_wmmse",
    "flops_unfolded_wmmse",
    "flops_zf",
    "flops_rzf",
]
