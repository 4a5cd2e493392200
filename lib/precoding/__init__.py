"""Downlink precoding: linear precoders, WMMSE, the DPC limit, QoS power minimisation, hybrid
beamforming and robust (outage-aware) designs.

Every name in the ``__all__`` of the modules below is re-exported here, so a notebook import is
one line (``from lib.precoding import ...``); a module adds a public name by listing it in its own
``__all__``.
"""

from lib.precoding import (
    capacity,
    common,
    hybrid,
    implicit,
    linear,
    power_min,
    robust,
    virtual,
    weighted_mmse,
)
from lib.precoding.capacity import *  # noqa: F403
from lib.precoding.common import *  # noqa: F403
from lib.precoding.hybrid import *  # noqa: F403
from lib.precoding.implicit import *  # noqa: F403
from lib.precoding.linear import *  # noqa: F403
from lib.precoding.power_min import *  # noqa: F403
from lib.precoding.robust import *  # noqa: F403
from lib.precoding.virtual import *  # noqa: F403
from lib.precoding.weighted_mmse import *  # noqa: F403

__all__ = (
    common.__all__
    + linear.__all__
    + weighted_mmse.__all__
    + capacity.__all__
    + power_min.__all__
    + hybrid.__all__
    + robust.__all__
    + implicit.__all__
    + virtual.__all__
)
