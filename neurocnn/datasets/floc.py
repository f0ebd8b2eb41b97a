"""fLoc functional-localizer stimuli (Stigliani, Weiner & Grill-Spector 2015, J Neurosci)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._fetch import fetch_dataset

if TYPE_CHECKING:
    from ..stimuli import StimulusSet

__all__ = ["FLOC_DOMAINS", "load_floc_stimuli"]

#: Category -> domain of the six mirrored fLoc categories.
FLOC_DOMAINS = {
    "adult": "face",
    "child": "face",
    "corridor": "place",
    "house": "place",
    "car": "object",
    "instrument": "object",
}


def load_floc_stimuli() -> StimulusSet:
    """fLoc localizer images (Stigliani et al. 2015): faces, places and objects.

    Returns
    -------
    neurocnn.stimuli.StimulusSet
        6 categories x 144 images (``adult``, ``child``, ``corridor``, ``house``, ``car``,
        ``instrument``), ids ``"<category>-<exemplar>"``, metadata ``category``, ``domain``
        (:data:`FLOC_DOMAINS`) and ``exemplar``.

    Raises
    ------
    MissingFileError, IntegrityError
        From :func:`neurocnn.datasets.fetch_dataset`.
    """
    from ..stimuli import StimulusSet, image_files, natural_key

    root = fetch_dataset("floc")
    files = sorted(image_files(root / "stimuli"), key=natural_key)
    category = np.array([p.parent.name for p in files])
    exemplar = np.array([int(p.stem.rsplit("-", 1)[1]) for p in files])
    domain = np.array([FLOC_DOMAINS[c] for c in category])
    return StimulusSet(
        files,
        ids=[f"{c}-{e}" for c, e in zip(category, exemplar)],
        metadata={"category": category, "domain": domain, "exemplar": exemplar},
        name="floc",
    )
