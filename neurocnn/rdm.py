"""Deprecated: the 0.1 name of :mod:`neurocnn.rsa`; removed in 0.3.

``neurocnn.rdm.X`` is ``neurocnn.rsa.X``; the 92-image loaders moved to
:mod:`neurocnn.datasets`. Importing this module warns once (``DeprecationWarning``).
"""

from __future__ import annotations

import warnings

from .datasets import load_92images_brain_rdms, load_92images_reference_rdms
from .rsa import *  # noqa: F403
from .rsa import __all__ as _RSA_ALL

__all__ = [*_RSA_ALL, "load_92images_brain_rdms", "load_92images_reference_rdms"]

warnings.warn(
    "neurocnn.rdm is deprecated and will be removed in neurocnn 0.3: import neurocnn.rsa "
    "(RDMs, comparisons, inference) and neurocnn.datasets (the 92-image brain RDMs) instead.",
    DeprecationWarning,
    stacklevel=2,
)
