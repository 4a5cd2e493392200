"""Chapter pipelines: reference problems, stored-model registries and data-set recipes of
individual chapters. General algorithms live in the other subpackages.

Every name in the ``__all__`` of the modules below is re-exported here, so a notebook import is
one line (``from lib.chapters import ...``); a module adds a public name by listing it in its own
``__all__`` (names must not repeat across modules: the sparse chapters' reference problem is
``REFERENCE``, the unfolded-WMMSE chapter's set-up ``SETUP``).
"""

from lib.chapters import (
    csi_feedback,
    distribution_shift,
    fallback_deploy,
    feedback_shift,
    hybrid,
    learned_hybrid,
    oamp_net,
    papp,
    pretrained_sparse,
    raytraced_sites,
    unfolded_wmmse,
)
from lib.chapters.csi_feedback import *  # noqa: F403
from lib.chapters.distribution_shift import *  # noqa: F403
from lib.chapters.fallback_deploy import *  # noqa: F403
from lib.chapters.feedback_shift import *  # noqa: F403
from lib.chapters.hybrid import *  # noqa: F403
from lib.chapters.learned_hybrid import *  # noqa: F403
from lib.chapters.oamp_net import *  # noqa: F403
from lib.chapters.papp import *  # noqa: F403
from lib.chapters.pretrained_sparse import *  # noqa: F403
from lib.chapters.raytraced_sites import *  # noqa: F403
from lib.chapters.unfolded_wmmse import *  # noqa: F403

__all__ = (
    pretrained_sparse.__all__
    + distribution_shift.__all__
    + unfolded_wmmse.__all__
    + hybrid.__all__
    + learned_hybrid.__all__
    + oamp_net.__all__
    + raytraced_sites.__all__
    + papp.__all__
    + csi_feedback.__all__
    + feedback_shift.__all__
    + fallback_deploy.__all__
)
