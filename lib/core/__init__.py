"""Foundations shared by every chapter: seeds and devices, decibels, input checks, evaluation
statistics, plotting styles, and the interfaces of the book's tasks.

Every name in the ``__all__`` of the modules below is re-exported here, so a notebook import is
one line (``from lib.core import ...``); a module adds a public name by listing it in its own
``__all__``.
"""

from lib.core import checks, evaluation, interfaces, plotting, resources, runtime, units
from lib.core.checks import *  # noqa: F403
from lib.core.evaluation import *  # noqa: F403
from lib.core.interfaces import *  # noqa: F403
from lib.core.plotting import *  # noqa: F403
from lib.core.resources import *  # noqa: F403
from lib.core.runtime import *  # noqa: F403
from lib.core.units import *  # noqa: F403

__all__ = (
    runtime.__all__
    + units.__all__
    + checks.__all__
    + evaluation.__all__
    + plotting.__all__
    + interfaces.__all__
    + resources.__all__
)
