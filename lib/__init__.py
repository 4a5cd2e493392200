"""``lib``: the library behind *Model-based deep learning for the wireless physical layer*.

Every chapter notebook imports from here; algorithms live in this package and
are tested in ``tests/``, the story lives in ``book/``.

Conventions (see the book's *Notation and conventions* page):

* batch-first torch tensors; complex quantities use ``torch.complex64`` or
  ``torch.complex128``;
* a multi-user downlink channel ``H`` has shape ``(batch, users, antennas)``;
  row ``k`` is :math:`\\mathbf h_k^{\\mathsf H}`, so user ``k`` receives
  ``H[:, k, :] @ V[:, :, j]`` from stream ``j``;
* a precoder ``V`` has shape ``(batch, antennas, streams)``;
* powers and noise variances are linear (not dB) unless a name ends in ``_db``.
"""

__version__ = "0.1.0"
