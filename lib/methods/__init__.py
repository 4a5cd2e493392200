"""Every method of the book behind its task's interface, and one registry per task.

The interfaces are the protocols of :mod:`lib.core.interfaces`. This module adapts every
classical and learned method of the book to its protocol, using only the public functions of
the other subpackages, and collects them in three registries (``name -> factory``):

* :data:`~lib.methods.precoders.PRECODERS` -- ``PRECODERS[name](**settings)`` returns a
  :class:`~lib.core.Precoder`;
* :data:`~lib.methods.estimators.SPARSE_ESTIMATORS` --
  ``SPARSE_ESTIMATORS[name](A, p=0.1, T=16, **settings)``
  returns a :class:`~lib.core.SparseEstimator`; the problem (the sensing matrix
  ``A`` ``(M, N)``, the sparsity ``p``, the number ``T`` of iterations or layers) is what a
  learned model is built from (untrained, at its classical initialisation);
* :data:`~lib.methods.designers.HYBRID_DESIGNERS` --
  ``HYBRID_DESIGNERS[name](codebook, n_rf, **settings)``
  returns
  a :class:`~lib.core.HybridDesigner`.

A figure or a fallback swaps one method for another by name::

    from lib.methods import PRECODERS
    for name in ("zf", "rzf", "wmmse"):
        V = PRECODERS[name]()(H, P, sigma2)

and a wrapper written against a protocol works for every method of it. A trained network is
wrapped with :class:`~lib.methods.UnrolledPrecoder` / :class:`~lib.methods.UnrolledEstimator`, and
a stored network of
the book's chapters with :func:`~lib.methods.pretrained_precoder` /
:func:`~lib.methods.pretrained_estimator`.

To add a method: write (or reuse) a callable with the protocol's signature, add a factory to
the registry, and add its name to the list in ``tests/test_protocols.py``; the protocol test
then runs it against the contract. See ``CONTRIBUTING.md``.

:mod:`lib.methods.fallback` wraps a learned method and a classical one of the same task behind
a monitor (:class:`~lib.methods.Fallback`).
"""

from lib.methods import designers, estimators, fallback, precoders
from lib.methods.designers import *  # noqa: F403
from lib.methods.estimators import *  # noqa: F403
from lib.methods.fallback import *  # noqa: F403
from lib.methods.precoders import *  # noqa: F403

__all__ = precoders.__all__ + estimators.__all__ + designers.__all__ + fallback.__all__
