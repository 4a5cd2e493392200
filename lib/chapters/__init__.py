"""Chapter pipelines: reference problems, stored-model registries and data-set recipes of
individual chapters. General algorithms live in the other subpackages.

Every public name of the modules below is re-exported here, so a notebook import is one line
(``from lib.chapters import ...``).
"""

__all__ = []
