"""VirtualSubject: a CNN with its weights, preprocessing and layer names.

The subject answers "what does layer L do for these stimuli": one batched forward
pass for all requested layers, stopped after the last of them, with hooks that are
always removed and outputs that are cloned (so an in-place ReLU after a conv cannot
overwrite the stored pre-ReLU values). Results are xarray objects with provenance.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from ._validation import check_device, check_option, check_positive_int
from ._version import version
from .exceptions import (
    InvalidDataError,
    OverwriteError,
    ShapeMismatchError,
    UnknownNameError,
)
from .forward import LayerForward, model_on, thread_policy
from .models import (
    ModelSpec,
    Preprocessing,
    get_spec,
    load_model,
    spec_from_module,
    state_dict_sha256,
)
from .scale import map_tasks
from .stimuli import StimulusSet, load_stimuli

__all__ = ["VirtualSubject", "version"]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Tanh)
_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)
_SPATIAL_DIMS = {2: ("unit",), 3: ("channel", "position"), 4: ("channel", "y", "x")}


class VirtualSubject:
    """A CNN treated as an experimental subject.

    Parameters
    ----------
    model : str or torch.nn.Module
        A registered architecture (``neurocnn.models.list_models()``; default the
        embedded ``"efficientnet_lite0"`` with real ImageNet weights) or any
        ``nn.Module`` of the user's.
    weights : {"pretrained"} or path or None
        For registered architectures: the pretrained weights (found through the data
        manifests), a state-dict file, or None for a seeded random initialization.
        Ignored for a user module (its current weights are used).
    preprocessing : Preprocessing, optional
        Overrides the architecture's preprocessing (required in spirit for user modules;
        default ImageNet resize 256 / crop 224 / mean-std).
    device : str or torch.device
        Where forward passes run (``"cpu"``, ``"cuda"``, ...).
    seed : int
        Seed of the random initialization when ``weights`` is None.
    name : str, optional
        Name of a user module (provenance).
    aliases : mapping, optional
        Extra layer aliases (alias -> dotted module name).
    categories : sequence of str, optional
        Class names of a user module's output.

    Examples
    --------
    >>> subject = VirtualSubject("efficientnet_lite0")  # doctest: +SKIP
    >>> acts = subject.activations("92images", ["stage4", "head"])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | nn.Module = "efficientnet_lite0",
        *,
        weights: str | os.PathLike | None = "pretrained",
        preprocessing: Preprocessing | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        name: str | None = None,
        aliases: dict[str, str] | None = None,
        categories: Sequence[str] = (),
    ) -> None:
        if isinstance(model, nn.Module):
            spec = spec_from_module(
                model, name=name or type(model).__name__, preprocessing=preprocessing,
                aliases=aliases, categories=tuple(categories),
            )
            self.model = model.eval()
            self.weights_id = state_dict_sha256(model)
        else:
            spec = get_spec(model)
            overrides: dict[str, Any] = {}
            if preprocessing is not None:
                overrides["preprocessing"] = preprocessing
            if aliases:
                overrides["aliases"] = {**spec.aliases, **aliases}
            spec = replace(spec, **overrides) if overrides else spec
            self.model, self.weights_id = load_model(spec, weights, seed=seed)
        self.spec: ModelSpec = spec
        self.device = check_device(device)
        self.model.to(self.device)
        self._modules = dict(self.model.named_modules())
        del self._modules[""]
        for alias, target in spec.aliases.items():
            if target not in self._modules:
                raise UnknownNameError(f"Alias {alias!r} points to {target!r}, which is not a module of the model.")
        # hooked passes with early stop; one pass at a time (hooks are per module)
        self._forward = LayerForward(self.model, self._modules, self._probe_side)
        #: Active lesions, outermost first (managed by :mod:`neurocnn.lesions`: entering a
        #: lesion appends it, leaving removes it). Recorded in every result's provenance.
        self.lesions: list[Any] = []

    # ------------------------------------------------------------------ names
    @property
    def name(self) -> str:
        """Architecture name."""
        return self.spec.name

    @property
    def preprocessing(self) -> Preprocessing:
        """The preprocessing applied to every image."""
        return self.spec.preprocessing

    @property
    def layers(self) -> list[str]:
        """All layer (module) names, dotted as in torchvision, in registration order."""
        return list(self._modules)

    @property
    def aliases(self) -> dict[str, str]:
        """Alias -> dotted module name."""
        return dict(self.spec.aliases)

    @property
    def default_layers(self) -> list[str]:
        """The architecture's default analysis layers (aliases), or all leaf modules."""
        if self.spec.default_layers:
            return list(self.spec.default_layers)
        return [n for n, m in self._modules.items() if not list(m.children())]

    def resolve_layer(self, layer: str) -> str:
        """Return the dotted module name of a layer given by alias or dotted name.

        Raises
        ------
        UnknownNameError
            If neither an alias nor a module name; lists valid names and the closest match.
        """
        if layer in self.spec.aliases:
            return self.spec.aliases[layer]
        if layer in self._modules:
            return layer
        return check_option("layer", layer, [*self.spec.aliases, *self._modules])

    def alias_of(self, layer: str) -> str:
        """Return the alias of a dotted layer name (``""`` if it has none)."""
        dotted = self.resolve_layer(layer)
        return next((a for a, d in self.spec.aliases.items() if d == dotted), "")

    def module(self, layer: str) -> nn.Module:
        """Return the ``nn.Module`` behind a layer name or alias."""
        return self._modules[self.resolve_layer(layer)]

    def relu_state(self, layer: str) -> str:
        """Say whether a layer's output is ``"pre-activation"``, ``"post-activation"`` or ``"n/a"``."""
        dotted = self.resolve_layer(layer)
        module = self._modules[dotted]
        if isinstance(module, _ACTIVATIONS) or dotted in self.spec.post_activation:
            return "post-activation"
        if isinstance(module, _LINEAR):
            return "pre-activation"
        return "n/a"

    def provenance(self, layer: str) -> dict[str, str]:
        """Return the provenance attrs of a layer's results.

        ``weights_sha256`` identifies the (intact) weights; ``lesions`` describes every
        active lesion (kind, layer, level, number of units and a hash of their indices,
        seed, amplitude, fraction ...; ``"none"`` if intact) and ``state_sha256`` hashes
        both, so results of a lesioned subject never look intact once saved.
        """
        dotted = self.resolve_layer(layer)
        lesions = "; ".join(_lesion_record(lesion) for lesion in self.lesions) or "none"
        state = hashlib.sha256(f"weights={self.weights_id}\nlesions={lesions}".encode()).hexdigest()
        return {
            "model": self.name,
            "weights_sha256": self.weights_id,
            "lesions": lesions,
            "state_sha256": state,
            "layer": dotted,
            "alias": self.alias_of(dotted),
            "relu": self.relu_state(dotted),
            "module_type": type(self._modules[dotted]).__name__,
            "preprocessing": self.preprocessing.describe(),
            "neurocnn_version": version(),
        }

    def input_size(self, stimuli: Any = None) -> tuple[int, int]:
        """Return the (H, W) of the network input the preprocessing produces.

        Without ``stimuli``: the crop side, the fixed resize, or 224 when the
        preprocessing keeps the size. With ``stimuli``: the size of the first stimulus
        after resize and crop.
        """
        if stimuli is not None:
            stim = load_stimuli(stimuli)
            return tuple(int(s) for s in self.preprocessing.geometric(stim.load(0)).shape[-2:])
        pre = self.preprocessing
        if pre.crop is not None:
            return (pre.crop, pre.crop)
        if isinstance(pre.resize, tuple):
            return (int(pre.resize[0]), int(pre.resize[0]))
        side = pre.resize or 224
        return (side, side)

    def _probe_side(self) -> int:
        return self.input_size()[0]

    def output_shape(self, layer: str | None = None, size: tuple[int, int] | None = None) -> tuple[int, ...]:
        """Return the output shape (without the batch dim) of a layer, or of the model if None.

        Known from any forward pass already run at that input size; otherwise found
        with one forward pass of a blank image. ``size`` (H, W) defaults to
        :meth:`input_size`.

        Raises
        ------
        ShapeMismatchError
            If the network cannot process inputs of that size.
        """
        size = tuple(size) if size is not None else self.input_size()
        key = (None if layer is None else self.resolve_layer(layer), size)
        shapes = self._forward.shapes
        if key not in shapes:
            probe = torch.zeros(1, 3, *size, device=self.device)
            try:
                with torch.inference_mode():
                    out = self.forward_output(probe) if layer is None else self.forward_layers(probe, [layer])[layer]
            except RuntimeError as err:
                raise ShapeMismatchError(
                    f"{self.name} cannot process inputs of size {size} ({err}). Check the image size "
                    "against the subject's preprocessing (resize/crop)."
                ) from err
            shapes[key] = tuple(out.shape[1:])
        return shapes[key]

    # --------------------------------------------------------------- forward
    def preprocess(self, stimuli: Any, *, device: str | torch.device | None = None) -> torch.Tensor:
        """Return preprocessed images (N, 3, H, W) of a stimulus set, array, folder or name."""
        stim = load_stimuli(stimuli)
        batch = torch.stack([self.preprocessing(stim.load(i)) for i in range(len(stim))])
        return batch.to(check_device(device) if device is not None else self.device)

    def forward_output(self, images: torch.Tensor) -> torch.Tensor:
        """Run preprocessed ``images`` through the whole network; return its output."""
        return self._forward.output(images)

    def forward_layers(
        self, images: torch.Tensor, layers: Sequence[str], *, grad: bool = False
    ) -> dict[str, torch.Tensor]:
        """Run preprocessed ``images`` through the network up to the last requested layer.

        Parameters
        ----------
        images : torch.Tensor
            Preprocessed batch (N, 3, H, W) on the subject's device.
        layers : sequence of str
            Layer names or aliases.
        grad : bool
            Keep the autograd graph (for attribution and feature visualization).

        Returns
        -------
        dict of str to torch.Tensor
            Keyed by the names as requested; each a clone of that module's output.
        """
        dotted = [self.resolve_layer(layer) for layer in layers]
        outputs = self._forward.run(images, dotted, grad=grad)
        return {layer: outputs[d] for layer, d in zip(layers, dotted)}

    def activations(
        self,
        stimuli: Any,
        layers: str | Sequence[str] | None = None,
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        store: str | os.PathLike | None = None,
        overwrite: bool = False,
        client: Any = None,
        progress: bool = True,
    ) -> xr.DataArray | dict[str, xr.DataArray]:
        """Extract activations of one or more layers for a stimulus set.

        Parameters
        ----------
        stimuli : StimulusSet, str, path, list of paths or array
            Anything :func:`neurocnn.stimuli.load_stimuli` accepts (e.g. ``"92images"``).
        layers : str or sequence of str, optional
            Layer names or aliases; default :attr:`default_layers`.
        batch_size : int
            Images per forward pass.
        device : str, optional
            Device of this call (default: the subject's).
        store : path, optional
            A zarr directory: each layer streams there batch by batch (one group per
            layer) and comes back lazily (dask-backed), so layers larger than memory work.
            Resumable: called again with the same arguments after an interruption, it
            computes only the batches not yet written (checked against a fingerprint of
            model, weights, preprocessing, layers, stimulus ids and batch size).
        overwrite : bool
            Replace an existing ``store`` that holds a different extraction.
        client : distributed.Client or str, optional
            Spread the batches over dask workers (a Client, a scheduler address, or
            ``"local"``; see :mod:`neurocnn.scale`). Needs ``store``: each worker writes
            its batches straight into the zarr store, so no layer is ever held whole by
            the driver.
        progress : bool
            Show a progress bar.

        Returns
        -------
        xarray.DataArray or dict of str to xarray.DataArray
            One DataArray (a single layer given as str) or a dict keyed by the requested
            names. Dims ``("stimulus", "channel", "y", "x")`` for conv maps,
            ``("stimulus", "unit")`` for vectors; stimulus ids and metadata as coords;
            provenance attrs (model, weights_sha256, layer, alias, relu, preprocessing,
            stimulus_set, neurocnn_version).

        Raises
        ------
        UnknownNameError
            Unknown layer (closest match suggested).
        InvalidDataError
            ``client`` without ``store``.
        OverwriteError
            ``store`` holds a different extraction and ``overwrite`` is False.
        """
        single = isinstance(layers, str)
        names = [layers] if single else list(layers or self.default_layers)
        if not names:
            raise UnknownNameError("Give at least one layer.")
        dotted = [self.resolve_layer(n) for n in names]
        if len(set(dotted)) != len(dotted):
            raise UnknownNameError(f"Layers {names} name the same module twice.")
        check_positive_int("batch_size", batch_size)
        stim = load_stimuli(stimuli)
        run_device = check_device(device) if device is not None else self.device
        disk = _Store(Path(store), self, stim, names, batch_size, overwrite) if store is not None else None
        done = disk.done() if disk is not None else np.zeros(len(stim), dtype=bool)
        starts = [s for s in range(0, len(stim), batch_size) if not done[s : s + batch_size].all()]
        if disk is not None and len(starts) < -(-len(stim) // batch_size):
            logger.info("resuming %s: %d of %d batches left", disk.path, len(starts), -(-len(stim) // batch_size))
        if client is not None and disk is None:
            raise InvalidDataError("client= needs store=: dask workers write their batches to a zarr store.")
        local = starts[:1] if client is not None else starts
        writers = self._extract_local(stim, names, batch_size, local, run_device, disk,
                                      progress=progress and client is None)
        if client is not None and len(starts) > 1:
            job = _ExtractJob(self, stim, names, batch_size, disk.path)
            tasks = map_tasks(_extract_batch, job, starts[1:], client, progress=progress, desc=f"{self.name} activations")
            for _, (start, stop) in tasks:
                disk.mark_done(start, stop)
        if disk is not None:
            result = {name: disk.read(name) for name in names}
        else:
            result = {name: writers[name].result() for name in names}
        return result[names[0]] if single else result

    def _extract_local(self, stim: StimulusSet, names: list[str], batch_size: int, starts: list[int],
                       device: torch.device, disk: _Store | None, *, progress: bool) -> dict[str, _LayerWriter]:
        """Extract the batches beginning at ``starts`` in this process (writers made from the first batch)."""
        writers: dict[str, _LayerWriter] = {}
        with model_on(self.model, device, self.device) as run_device:
            batches = stim.batches(batch_size, self.preprocessing, starts=starts)
            for start, batch in tqdm(batches, desc=f"{self.name} activations", disable=not progress):
                with torch.inference_mode():
                    outputs = self.forward_layers(batch.to(run_device), names)
                for name, out in outputs.items():
                    if name not in writers:
                        writers[name] = _LayerWriter(self, stim, name, out.shape[1:], disk)
                    writers[name].write(start, out.float().cpu().numpy())
                if disk is not None:
                    disk.mark_done(start, start + batch.shape[0])
        return writers

    def classify(self, stimuli: Any, *, top_k: int = 5, batch_size: int = 32) -> xr.Dataset:
        """Return the top-k classes and probabilities for each stimulus.

        Returns
        -------
        xarray.Dataset
            Variables ``class_index``, ``class_name``, ``probability`` with dims
            (stimulus, rank).
        """
        check_positive_int("top_k", top_k)
        stim = load_stimuli(stimuli)
        probs, idx = [], []
        for _, batch in stim.batches(batch_size, self.preprocessing):
            with torch.inference_mode():
                p = self.forward_output(batch.to(self.device)).softmax(-1)
            value, index = p.topk(top_k, dim=-1)
            probs.append(value.cpu().numpy())
            idx.append(index.cpu().numpy())
        index = np.concatenate(idx)
        cats = np.asarray(self.spec.categories or [str(i) for i in range(int(index.max()) + 1)])
        return xr.Dataset(
            {
                "class_index": (("stimulus", "rank"), index),
                "class_name": (("stimulus", "rank"), cats[index]),
                "probability": (("stimulus", "rank"), np.concatenate(probs)),
            },
            coords={**stim.coords(), "rank": np.arange(1, top_k + 1)},
            attrs={k: v for k, v in self.provenance(self.layers[-1]).items() if k not in ("layer", "alias", "relu", "module_type")},
        )

    def __repr__(self) -> str:
        return f"<VirtualSubject {self.name!r} weights={self.weights_id[:12]} device={self.device}>"


class _LayerWriter:
    """Collects one layer's batches in memory, or writes them into its group of a ``_Store``."""

    def __init__(self, subject: VirtualSubject, stim: StimulusSet, name: str, shape: torch.Size, disk: _Store | None):
        if len(shape) + 1 not in _SPATIAL_DIMS:
            raise UnknownNameError(f"Layer {name!r} has output shape {tuple(shape)}; not supported.")
        self.dims = ("stimulus", *_SPATIAL_DIMS[len(shape) + 1])
        self.coords = {**stim.coords(), **{d: np.arange(s) for d, s in zip(self.dims[1:], shape)}}
        self.attrs = {**subject.provenance(name), **thread_policy(), "stimulus_set": stim.name, "requested_as": name}
        self.disk, self.name = disk, name
        if disk is not None:
            disk.create_group(name, self.dims, tuple(shape), self.coords, self.attrs)
            self.buffer = None
        else:
            self.buffer = np.empty((len(stim), *shape), dtype=np.float32)

    def write(self, start: int, values: np.ndarray) -> None:
        if self.disk is not None:
            _write_region(self.disk.path, self.name, start, values)
        else:
            self.buffer[start : start + values.shape[0]] = values

    def result(self) -> xr.DataArray:
        return xr.DataArray(self.buffer, dims=self.dims, coords=self.coords, attrs=self.attrs, name="activation")


class _Store:
    """A resumable zarr extraction store: one group per layer and a per-stimulus ``done`` flag.

    The root attrs hold a fingerprint of the run (model, weights, preprocessing, layers,
    stimulus ids, batch size). Re-running with the same arguments continues where a
    killed run stopped; a store from a different run is never mixed in.
    """

    def __init__(self, path: Path, subject: VirtualSubject, stim: StimulusSet, names: list[str],
                 batch_size: int, overwrite: bool) -> None:
        import zarr

        from . import io

        self.path, self.n, self.batch_size = path, len(stim), batch_size
        self.fingerprint = _store_fingerprint(subject, stim, names, batch_size)
        if path.exists() and not overwrite:
            try:
                found = dict(zarr.open_group(str(path), mode="r").attrs).get("neurocnn_extraction")
            except Exception:  # noqa: BLE001 - anything unreadable is "not our store"
                found = None
            if found != self.fingerprint:
                diff = "not a neurocnn extraction store" if not isinstance(found, dict) else "; ".join(
                    f"{k}: {_short(found.get(k))} there, {_short(v)} now"
                    for k, v in self.fingerprint.items() if found.get(k) != v
                )
                raise OverwriteError(
                    f"{path} exists and holds a different extraction ({diff}), so it was not resumed "
                    "or touched. Choose another path, or pass overwrite=True to replace it (only a "
                    "store neurocnn wrote is ever replaced)."
                )
        else:
            # built under a hidden name and moved into place: a kill leaves no half-made store
            with io.atomic_output(path, overwrite=overwrite, kind="extraction store") as tmp:
                root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
                root.attrs["neurocnn_extraction"] = self.fingerprint
                root.create_array("done", shape=(self.n,), chunks=(batch_size,), dtype="i1", fill_value=0)
        self.root = zarr.open_group(str(path), mode="a", zarr_format=2)

    def done(self) -> np.ndarray:
        return np.asarray(self.root["done"][:]).astype(bool)

    def mark_done(self, start: int, stop: int) -> None:
        self.root["done"][start:stop] = 1

    def create_group(self, name: str, dims: tuple[str, ...], shape: tuple[int, ...], coords: dict, attrs: dict) -> None:
        if name in self.root:
            try:  # complete (a kill while creating it leaves it without its array)
                array = self.root[f"{name}/activation"]
                if tuple(array.shape) == (self.n, *shape):
                    return
            except (KeyError, ValueError, OSError):
                pass
            done = self.done()
            if done.any():
                raise OverwriteError(
                    f"{self.path}: group {name!r} is damaged although {int(done.sum())} stimuli are "
                    "marked done; pass overwrite=True to start the extraction again."
                )
        import dask.array as da

        data = da.zeros((self.n, *shape), chunks=(self.batch_size, *shape), dtype=np.float32)
        template = xr.Dataset({"activation": (dims, data, attrs)}, coords=coords)
        template.to_zarr(self.path, group=name, mode="w", compute=False, consolidated=False, zarr_format=2)

    def read(self, name: str) -> xr.DataArray:
        return xr.open_zarr(self.path, group=name, consolidated=False)["activation"]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _weights_sha256_now(subject: VirtualSubject) -> str:
    """sha256 of the subject's current parameters and buffers (in-place edits included).

    Cached on the tensors' identities and torch version counters, which every in-place
    change (a lesion zeroing weights, an optimizer step) increments.
    """
    state = subject.model.state_dict(keep_vars=True)
    key = tuple((k, id(t), t.data_ptr(), t._version) for k, t in state.items())
    cached = getattr(subject, "_weights_now", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    sha = state_dict_sha256(subject.model)
    subject._weights_now = (key, sha)
    return sha


def _hooks(subject: VirtualSubject) -> str:
    """Modules with forward hooks (lesions and user hooks change what a layer outputs)."""
    out = []
    for name, module in subject._modules.items():
        n_hooks = len(module._forward_hooks) + len(module._forward_pre_hooks)
        if n_hooks:
            out.append(f"{name}:{n_hooks}")
    return ",".join(out)


def _metadata_sha256(stim: StimulusSet) -> str:
    """sha256 of the metadata coords a store keeps (edited labels must not come back stale)."""
    h = hashlib.sha256()
    for key in sorted(stim.metadata):
        values = np.asarray(stim.metadata[key])
        h.update(f"{key}:{values.dtype.str}:".encode())
        h.update("\x1f".join(map(str, values.tolist())).encode())
    return h.hexdigest()


def _store_fingerprint(subject: VirtualSubject, stim: StimulusSet, names: list[str], batch_size: int) -> dict:
    """What an extraction store's content depends on: subject state, layers, input content.

    From :meth:`VirtualSubject.provenance` of every layer (model, weights, preprocessing and
    whatever state it reports, e.g. active lesions), the current weights' sha256 (lesions
    that edit weights in place), the forward hooks, active lesions, and the stimuli's ids
    and content (file sha256s, or the array's bytes), so edited images, a lesion or a
    different network never reuse old activations.
    """
    from . import lesions

    ids_hash = hashlib.sha256("\n".join(stim.ids.tolist()).encode()).hexdigest()
    prov = {n: {k: v for k, v in subject.provenance(n).items() if k != "neurocnn_version"} for n in names}
    prov_hash = hashlib.sha256(json.dumps(prov, sort_keys=True, default=str).encode()).hexdigest()
    active = [lesion.attrs() for lesion in lesions.active_lesions(subject)]
    return {
        "model": subject.name,
        "weights_sha256": subject.weights_id,
        "weights_sha256_now": _weights_sha256_now(subject),
        "preprocessing": subject.preprocessing.describe(),
        "layers": ",".join(f"{n}={subject.resolve_layer(n)}" for n in names),
        "provenance_sha256": prov_hash,
        "lesions": json.dumps(active, sort_keys=True, default=str),
        "hooks": _hooks(subject),
        "stimulus_ids_sha256": ids_hash,
        "stimulus_content_sha256": stim.content_sha256(),
        "stimulus_metadata_sha256": _metadata_sha256(stim),
        "n_stimuli": len(stim),
        "batch_size": batch_size,
    }


def _write_region(path: Path, group: str, start: int, values: np.ndarray) -> None:
    """Write a batch into its (chunk-aligned) rows of a layer's zarr array; safe from many workers."""
    import zarr

    array = zarr.open_array(str(path), path=f"{group}/activation", mode="r+", zarr_format=2)
    array[start : start + values.shape[0]] = values


@dataclass
class _ExtractJob:
    """What a dask worker needs to extract and write batches (sent to each worker once)."""

    subject: VirtualSubject
    stimuli: StimulusSet
    layers: list[str]
    batch_size: int
    path: Path


def _extract_batch(job: _ExtractJob, start: int) -> tuple[int, int]:
    stop = min(start + job.batch_size, len(job.stimuli))
    pre = job.subject.preprocessing
    batch = torch.stack([pre(job.stimuli.load(i)) for i in range(start, stop)]).to(job.subject.device)
    with torch.inference_mode():
        outputs = job.subject.forward_layers(batch, job.layers)
    for name, out in outputs.items():
        _write_region(job.path, name, start, out.float().cpu().numpy())
    return start, stop


def _lesion_record(lesion: Any) -> str:
    """One active lesion as text: its attrs, and a hash of its unit indices."""
    parts = [f"{key}={value}" for key, value in lesion.attrs().items()]
    units = getattr(lesion, "units", None)
    if units is not None:
        digest = hashlib.sha256(np.asarray(units, dtype=np.int64).tobytes()).hexdigest()[:16]
        parts.append(f"units_sha256={digest}")
    return "(" + ", ".join(parts) + ")"
