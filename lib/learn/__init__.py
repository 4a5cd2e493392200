"""Learned models and their training: the unrolled base class and trainer, learned sparse recovery
(LISTA, ALISTA, TISTA, LAMP, OAMP-Net), the deep-unfolded WMMSE and operation counts.

Every name in the ``__all__`` of the modules below is re-exported here, so a notebook import is
one line (``from lib.learn import ...``); a module adds a public name by listing it in its own
``__all__``.
"""

from lib.learn import (
    contraction,
    csinet,
    flops,
    gcn,
    learned_hybrid,
    outage_loss,
    papp,
    plan,
    storage,
    straight_through,
    trainer,
    unfolded_gd,
    unfolded_wmmse,
    unrolled_amp,
    unrolled_sparse,
    unrolling,
)
from lib.learn.contraction import *  # noqa: F403
from lib.learn.csinet import *  # noqa: F403
from lib.learn.flops import *  # noqa: F403
from lib.learn.gcn import *  # noqa: F403
from lib.learn.learned_hybrid import *  # noqa: F403
from lib.learn.outage_loss import *  # noqa: F403
from lib.learn.papp import *  # noqa: F403
from lib.learn.plan import *  # noqa: F403
from lib.learn.storage import *  # noqa: F403
from lib.learn.straight_through import *  # noqa: F403
from lib.learn.trainer import *  # noqa: F403
from lib.learn.unfolded_gd import *  # noqa: F403
from lib.learn.unfolded_wmmse import *  # noqa: F403
from lib.learn.unrolled_amp import *  # noqa: F403
from lib.learn.unrolled_sparse import *  # noqa: F403
from lib.learn.unrolling import *  # noqa: F403

# ``make_sampler`` exists in two modules (sparse problems and downlink channels): import it
# from lib.learn.unrolled_sparse or lib.learn.unfolded_wmmse.

__all__ = [
    n
    for n in plan.__all__
    + trainer.__all__
    + storage.__all__
    + unrolling.__all__
    + unrolled_sparse.__all__
    + unrolled_amp.__all__
    + contraction.__all__
    + unfolded_wmmse.__all__
    + flops.__all__
    + csinet.__all__
    + unfolded_gd.__all__
    + straight_through.__all__
    + gcn.__all__
    + learned_hybrid.__all__
    + outage_loss.__all__
    + papp.__all__
    if n != "make_sampler"
]
del make_sampler  # noqa: F821
