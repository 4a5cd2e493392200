"""Foundations shared by every chapter: seeds and devices, decibels, input checks, evaluation
statistics, plotting styles, and the interfaces of the book's tasks.

Every public name of the modules below is re-exported here, so a notebook import is one line
(``from lib.core import ...``).
"""

from lib.core.checks import (
    check_complex,
    check_positive_int,
    check_real,
    check_tensor,
    per_sample,
    per_user,
)
from lib.core.evaluation import (
    first_below,
    mean_se,
)
from lib.core.plotting import (
    ROLES,
    color,
    line_style,
    new_figure,
    plot_curve,
    use_book_style,
)
from lib.core.runtime import (
    get_device,
    set_seed,
    set_threads,
)
from lib.core.units import (
    db_to_lin,
    lin_to_db,
)

__all__ = [
    "set_seed",
    "set_threads",
    "get_device",
    "db_to_lin",
    "lin_to_db",
    "check_tensor",
    "check_complex",
    "check_real",
    "per_sample",
    "per_user",
    "check_positive_int",
    "mean_se",
    "first_below",
    "ROLES",
    "use_book_style",
    "color",
    "line_style",
    "new_figure",
    "plot_curve",
]
