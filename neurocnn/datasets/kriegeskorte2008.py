"""The 92-object image set of Kriegeskorte et al. (2008): stimuli, human IT and reference RDMs.

Kriegeskorte N, Mur M, Ruff DA, Kiani R, Bodurka J, Esteky H, Tanaka K, Bandettini PA
(2008). Matching categorical object representations in inferior temporal cortex of man
and monkey. Neuron 60(6):1126-1141. Files as shipped with rsatoolbox's demos, read
through :func:`neurocnn.datasets.fetch` (sha256 verified).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from ..io import read_mat
from ..rsa._stack import _STACK, _rdm_array, _square
from ._fetch import fetch

if TYPE_CHECKING:
    from ..stimuli import StimulusSet

__all__ = [
    "STIMULUS_IDS",
    "load_92images_stimuli",
    "load_92images_brain_rdms",
    "load_92images_reference_rdms",
]

#: Stimulus ids of the 92 images, in the order of the .mat files: ``"92img_000"`` ...
STIMULUS_IDS = np.array([f"92img_{i:03d}" for i in range(92)])


def load_92images_stimuli() -> StimulusSet:
    """The 92 object images of Kriegeskorte et al. (2008) with their metadata.

    Returns
    -------
    neurocnn.stimuli.StimulusSet
        92 images (175 x 175 RGB), ids :data:`STIMULUS_IDS`, metadata ``category``,
        ``human``, ``face``, ``animal``, ``natural`` and the 12 ``label_*`` category
        vectors of the supplement.

    Raises
    ------
    MissingFileError, IntegrityError
        From :func:`neurocnn.datasets.fetch`.
    """
    from ..stimuli import StimulusSet

    mat = read_mat(fetch("data/92images/Kriegeskorte_Neuron2008_supplementalData.mat"))
    structs = mat["stimuli_92objs"]
    images = np.stack([s.image for s in structs]).astype(np.uint8)
    metadata: dict[str, Sequence] = {
        "category": [str(s.category) for s in structs],
        **{flag: [int(getattr(s, flag)) for s in structs] for flag in ("human", "face", "animal", "natural")},
    }
    for label, column in zip(mat["categoryLabels"], np.asarray(mat["categoryVectors"]).T):
        metadata[f"label_{label}"] = column.astype(int)
    return StimulusSet(images, ids=STIMULUS_IDS, metadata=metadata, name="92images")


def load_92images_brain_rdms() -> xr.DataArray:
    """Human IT fMRI RDMs of the 92-object set (4 subjects x 2 sessions).

    Kriegeskorte et al. (2008), as shipped with rsatoolbox (``92_brainRDMs.mat``), read
    through :func:`neurocnn.datasets.fetch` (sha256 verified).

    Returns
    -------
    xr.DataArray
        Dims ``("rdm", "stimulus", "stimulus2")`` with 8 RDMs in the .mat's order
        (subject-major: subject 1 session 1, subject 1 session 2, ...); coords
        ``subject`` (str), ``session`` (int) and ``name`` on ``rdm``; stimulus ids
        ``"92img_000"`` ... ``"92img_091"``. A flat ``rdm`` dim keeps the result a
        plain stack for :func:`neurocnn.rsa.compare_rdms`; per-subject averages are
        ``rdms.groupby("subject").mean()``.

    Raises
    ------
    MissingFileError, IntegrityError
        From :func:`neurocnn.datasets.fetch`.
    """
    structs = read_mat(fetch("data/92images/92_brainRDMs.mat"))["RDMs"]  # (subject, session)
    mats, names, subjects, sessions = [], [], [], []
    for i_subj in range(structs.shape[0]):
        for i_sess in range(structs.shape[1]):
            s = structs[i_subj, i_sess]
            mats.append(_square(s.RDM))
            names.append(str(s.name))
            parts = [p.strip() for p in str(s.name).split("|")]
            subjects.append(parts[1] if len(parts) > 1 else str(i_subj + 1))
            sessions.append(i_sess + 1)
    return _rdm_array(
        np.stack(mats), STIMULUS_IDS,
        {"subject": (_STACK, np.array(subjects)), "session": (_STACK, np.array(sessions)),
         "name": (_STACK, np.array(names))},
        {"source": "data/92images/92_brainRDMs.mat", "region": "human IT",
         "reference": "Kriegeskorte et al. 2008, Neuron"},
    )


def load_92images_reference_rdms() -> xr.DataArray:
    """Group RDMs of the 92-object set: monkey IT, human IT and the 8 model RDMs.

    Returns
    -------
    xr.DataArray
        Dims ``("rdm", "stimulus", "stimulus2")``: first the two ``RDMs_mIT_hIT_fig1``
        of ``Kriegeskorte_Neuron2008_supplementalData.mat`` (monkey IT, 674 neurons;
        human IT group), then the 8 RDMs of ``92_modelRDMs.mat`` (animacy,
        FaceBodyManmadeNatobj, monkeyIT, EVA, HMAX, V1, Silhouette, RADON). Coords
        ``rdm`` (names) and ``source`` (``"brain"``/``"model"``).
    """
    sup = read_mat(fetch("data/92images/Kriegeskorte_Neuron2008_supplementalData.mat"))
    models = read_mat(fetch("data/92images/92_modelRDMs.mat"))["Models"]
    entries = [(str(s.name), _square(s.RDM), "brain") for s in np.atleast_1d(sup["RDMs_mIT_hIT_fig1"])]
    entries += [(str(s.name), _square(s.RDM), "model") for s in np.atleast_1d(models)]
    return _rdm_array(
        np.stack([e[1] for e in entries]), STIMULUS_IDS,
        {_STACK: np.array([e[0] for e in entries]), "source": (_STACK, np.array([e[2] for e in entries]))},
        {"reference": "Kriegeskorte et al. 2008, Neuron"},
    )
