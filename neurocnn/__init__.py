"""neurocnn: a convolutional network as a virtual subject.

Run on a CNN the experiments cognitive neuroscientists run on people: RSA against
fMRI and MEG, receptive-field mapping, virtual lesions, feature visualization.

Importing neurocnn touches no disk, no network and no GPU; submodules load on
first use.

Examples
--------
>>> import neurocnn as nc  # doctest: +SKIP
>>> subject = nc.VirtualSubject()  # EfficientNet-Lite0 with ImageNet weights
>>> acts = subject.activations("92images", ["stage4", "head"])
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

logging.getLogger(__name__).addHandler(logging.NullHandler())

_EXPORTS = {
    "VirtualSubject": "subject",
    "load_stimuli": "stimuli",
    "StimulusSet": "stimuli",
    "Preprocessing": "models",
    "list_models": "models",
    "register_model": "models",
    "fetch": "datasets",
    "save": "io",
    "load": "io",
    "set_num_threads": "forward",
}
_SUBMODULES = (
    "attribution", "cli", "clusters", "concepts", "datasets", "dissection", "encoding", "exceptions", "forward",
    "io", "lesions", "models", "plotting", "receptive_fields", "rsa", "searchlight", "stimuli", "subject",
    "tasks", "visualization",
)
_DEPRECATED = ("rdm",)  # 0.1 name of rsa; importable, not exported

__all__ = [*_EXPORTS, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    if name in _SUBMODULES or name in _DEPRECATED:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'neurocnn' has no attribute {name!r}")
