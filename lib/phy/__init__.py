"""The physical layer: channel models, antenna arrays and codebooks, CSI estimation and feedback.

Every name in the ``__all__`` of the modules below is re-exported here, so a notebook import is
one line (``from lib.phy import ...``); a module adds a public name by listing it in its own
``__all__``.
"""

from lib.phy import arrays, channels, csi, feedback, raytraced, statistics
from lib.phy.arrays import *  # noqa: F403
from lib.phy.channels import *  # noqa: F403
from lib.phy.csi import *  # noqa: F403
from lib.phy.feedback import *  # noqa: F403
from lib.phy.raytraced import *  # noqa: F403
from lib.phy.statistics import *  # noqa: F403

__all__ = (
    channels.__all__
    + arrays.__all__
    + csi.__all__
    + feedback.__all__
    + raytraced.__all__
    + statistics.__all__
)
