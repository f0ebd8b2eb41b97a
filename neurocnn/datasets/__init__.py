"""Data: manifests -> verified local files, and the named data sets read from them.

Every data and weight file neurocnn uses is described in ``data_manifests/`` and
fetched with a verified sha256 (:func:`fetch`, :func:`fetch_dataset`; mirror in
``NEUROCNN_MIRROR`` first). The named data sets live here and only here:

* the 92-object set of Kriegeskorte et al. (2008): :func:`load_92images_stimuli`,
  :func:`load_92images_brain_rdms` (human IT, 4 subjects x 2 sessions),
  :func:`load_92images_reference_rdms` (monkey IT, human IT group, 8 model RDMs) and
  their ids :data:`STIMULUS_IDS`;
* fLoc localizer images: :func:`load_floc_stimuli`, :data:`FLOC_DOMAINS`;
* Haxby et al. (2001): :func:`haxby_category_patterns`, :data:`HAXBY_LABELS`;
* the MNI152 brain mask shipped with nilearn: :func:`mni_brain_mask`.

``neurocnn.load_stimuli("92images")`` and ``load_stimuli("floc")`` call the loaders here.
"""

from __future__ import annotations

from ._fetch import (
    FileEntry,
    cache_dir,
    fetch,
    fetch_dataset,
    get_entry,
    list_datasets,
    list_files,
    sha256sum,
)
from .floc import FLOC_DOMAINS, load_floc_stimuli
from .haxby2001 import HAXBY_LABELS, haxby_category_patterns
from .kriegeskorte2008 import (
    STIMULUS_IDS,
    load_92images_brain_rdms,
    load_92images_reference_rdms,
    load_92images_stimuli,
)
from .templates import mni_brain_mask

__all__ = [
    "FileEntry", "list_datasets", "list_files", "get_entry", "fetch", "fetch_dataset", "cache_dir",
    "sha256sum", "STIMULUS_IDS", "load_92images_stimuli", "load_92images_brain_rdms",
    "load_92images_reference_rdms", "FLOC_DOMAINS", "load_floc_stimuli", "HAXBY_LABELS",
    "haxby_category_patterns", "mni_brain_mask",
]
