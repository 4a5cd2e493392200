"""Sparse recovery: problem generators, denoisers, ISTA/FISTA, AMP/VAMP/OAMP, state evolution and
the NMSE metric.

Every name in the ``__all__`` of the modules below is re-exported here, so a notebook import is
one line (``from lib.sparse import ...``); a module adds a public name by listing it in its own
``__all__``.
"""

from lib.sparse import (
    denoisers,
    evolution,
    least_squares,
    message_passing,
    metrics,
    problems,
    proximal,
)
from lib.sparse.denoisers import *  # noqa: F403
from lib.sparse.evolution import *  # noqa: F403
from lib.sparse.least_squares import *  # noqa: F403
from lib.sparse.message_passing import *  # noqa: F403
from lib.sparse.metrics import *  # noqa: F403
from lib.sparse.problems import *  # noqa: F403
from lib.sparse.proximal import *  # noqa: F403

__all__ = (
    problems.__all__
    + denoisers.__all__
    + proximal.__all__
    + message_passing.__all__
    + evolution.__all__
    + metrics.__all__
    + least_squares.__all__
)
