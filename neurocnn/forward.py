"""The forward engine: every forward pass neurocnn runs goes through this module.

- :class:`LayerForward`: one batched pass with forward hooks on the requested layers,
  stopped (by an exception raised in the last hook) once all of them have run. Hooks
  are always removed; outputs are cloned, so an in-place ReLU after a conv cannot
  overwrite stored pre-ReLU values. The first real batch also counts how often every
  module runs (a layer that runs twice has an ambiguous output), and the output shapes
  of the layers it saw are cached, so no probe pass with a blank image is spent.
- :class:`CachedOutputs`: outputs of one layer for fixed images, computed once on the
  intact network; under a lesion only the part of the network from the earliest
  lesioned layer on is recomputed (the network is split with ``torch.fx``; a model
  that cannot be traced, or a split whose cached activations would be larger than the
  images, e.g. a lesion in the first layer, runs full forward passes: same numbers).
- :func:`model_on`: the one "move the model to a device and back" context.
- The thread policy (:func:`set_num_threads`, :func:`thread_policy`).
- CPU layout (:func:`cpu_chunks`): on the CPU, gradient-free passes run in
  cache-sized chunks of channels-last images. A CNN's forward pass on a CPU is bound by
  memory traffic, not arithmetic, once a batch's activations overflow the caches:
  EfficientNet-Lite0 runs 18 images/s at batch 256 and 60-75 images/s in chunks of
  four 224 px channels-last images on the same two cores. A chunk holds
  ``max(4, CPU_CHUNK_POSITIONS // (H * W))`` samples of an (N, C, H, W) input (four
  images, or more of a small map such as the activations at a graph split), whatever
  the batch size the caller asked for; values agree with a single contiguous pass to
  float precision (about 1e-6 relative). GPU passes and passes with gradients are
  unchanged.

Thread policy
-------------
torch (and the BLAS numpy uses) start one thread per core of the machine, ignoring
CPU affinity and container (cgroup) quotas; on a shared or containerized machine that
oversubscribes the CPUs and can slow forward and backward passes 10-60x. neurocnn
therefore sets torch's intra-op threads and the BLAS threads once per process, when a
subject runs its first forward pass (never at import), to the CPUs actually available
to the process: ``len(os.sched_getaffinity(0))``, capped by the cgroup CPU quota
(``cpu.max`` / ``cpu.cfs_quota_us``). Overrides, strongest first:

1. :func:`set_num_threads` (applied at once);
2. the environment variable ``NEUROCNN_NUM_THREADS`` (an integer, or ``"torch"`` to
   leave torch's and BLAS's settings alone);
3. a thread count already chosen by the user, i.e. ``torch.set_num_threads`` called
   after neurocnn's forward engine was imported, or ``OMP_NUM_THREADS`` set: left as is.

The threads in use are recorded in every result's provenance (``num_threads``,
``thread_policy``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch import nn
from tqdm.auto import tqdm

from ._validation import check_device
from .exceptions import InvalidDataError, UnknownNameError

__all__ = [
    "available_cpus",
    "set_num_threads",
    "thread_policy",
    "apply_thread_policy",
    "model_on",
    "model_device",
    "LayerForward",
    "split_graph",
    "split_after",
    "tapped",
    "earliest_layer",
    "pool_features",
    "CachedOutputs",
    "cpu_chunks",
    "CPU_CHUNK_POSITIONS",
]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

ENV_THREADS = "NEUROCNN_NUM_THREADS"


# ------------------------------------------------------------------ thread policy
def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """Number of CPUs this process may use: its CPU affinity, capped by the cgroup quota (>= 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


_TORCH_THREADS_AT_IMPORT = torch.get_num_threads()
_state: dict[str, Any] = {"override": None, "applied": None}
_state_lock = threading.Lock()


def _decide() -> tuple[int | None, str]:
    """(threads to set or None to leave torch alone, why)."""
    if _state["override"] is not None:
        return int(_state["override"]), "set_num_threads"
    env = os.environ.get(ENV_THREADS, "").strip()
    if env:
        if env.lower() == "torch":
            return None, f"{ENV_THREADS}=torch (torch's own setting)"
        try:
            n = int(env)
        except ValueError:
            raise InvalidDataError(
                f"{ENV_THREADS}={env!r} is not a thread count: set it to a positive integer, or to "
                "'torch' to keep torch's own setting."
            ) from None
        if n < 1:
            raise InvalidDataError(f"{ENV_THREADS} must be a positive integer, got {env!r}.")
        return n, ENV_THREADS
    if os.environ.get("OMP_NUM_THREADS"):
        return None, "OMP_NUM_THREADS"
    if torch.get_num_threads() != _TORCH_THREADS_AT_IMPORT:
        return None, "torch.set_num_threads by the user"
    return available_cpus(), "available CPUs (affinity and cgroup quota)"


def _set_blas_threads(n: int) -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return
    threadpool_limits(limits=n, user_api="blas")


def apply_thread_policy(*, force: bool = False) -> dict[str, Any]:
    """Apply the thread policy (once per process, or again with ``force``) and return its attrs.

    Called by the forward engine before a subject's first forward pass; returns
    ``{"num_threads": int, "thread_policy": str}`` (recorded in provenance).
    """
    with _state_lock:
        if _state["applied"] is None or force:
            n, why = _decide()
            if n is not None:
                torch.set_num_threads(n)
                _set_blas_threads(n)
                logger.info("neurocnn thread policy: %d threads (%s)", n, why)
            _state["applied"] = why
        return {"num_threads": int(torch.get_num_threads()), "thread_policy": str(_state["applied"])}


def set_num_threads(n: int | None) -> None:
    """Choose the number of torch and BLAS threads neurocnn uses (applied at once).

    Parameters
    ----------
    n : int or None
        Threads; None goes back to the default policy (``NEUROCNN_NUM_THREADS``, else
        the CPUs available to the process).

    Raises
    ------
    InvalidDataError
        If ``n`` is not a positive integer.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise InvalidDataError(f"n must be a positive integer (threads) or None (default policy), got {n!r}.")
    with _state_lock:
        _state["override"] = None if n is None else int(n)
    apply_thread_policy(force=True)


def thread_policy() -> dict[str, Any]:
    """The threads in use and why: ``{"num_threads", "thread_policy"}`` ("not applied yet" before a forward pass)."""
    return {"num_threads": int(torch.get_num_threads()), "thread_policy": str(_state["applied"] or "not applied yet")}


# ------------------------------------------------------------------ devices
def model_device(model: nn.Module, default: torch.device) -> torch.device:
    """Device of the model's first parameter or buffer (``default`` if it has none)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return default


@contextlib.contextmanager
def model_on(model: nn.Module, device: str | torch.device | None, home: torch.device) -> Iterator[torch.device]:
    """Context: ``model`` on ``device`` (``home`` if None), moved back to ``home`` afterwards (also on error)."""
    run = check_device(device) if device is not None else home
    if run == home:
        yield run
        return
    model.to(run)
    try:
        yield run
    finally:
        model.to(home)


# ------------------------------------------------------------------ CPU layout
#: spatial positions (height x width, summed over the samples) of one CPU chunk of small maps;
#: a chunk never holds fewer than ``_CPU_MIN_CHUNK`` samples. Measured on EfficientNet-Lite0
#: (2 cores): best at 4 images of 224 px, 4 maps of 112 px, 8 of 56 px.
CPU_CHUNK_POSITIONS = 8 * 56 * 56
_CPU_MIN_CHUNK = 4


def cpu_chunks(inputs: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
    """Split same-length batched inputs into cache-sized, channels-last chunks (CPU only).

    Parameters
    ----------
    inputs : sequence of torch.Tensor
        Tensors sharing their first (batch) dimension, e.g. images (N, C, H, W) or the
        activations at a graph split.

    Returns
    -------
    list of tuple of torch.Tensor
        One tuple per chunk; the inputs unchanged (one chunk) unless they live on the
        CPU and one of them is a 4-d map. A chunk holds ``max(4, CPU_CHUNK_POSITIONS //
        (H * W))`` samples (H x W: the largest map's); 4-d tensors are made channels-last.
    """
    maps = [t for t in inputs if t.ndim == 4]
    if not maps or any(t.device.type != "cpu" for t in inputs):
        return [tuple(inputs)]
    n = maps[0].shape[0]
    step = max(_CPU_MIN_CHUNK, CPU_CHUNK_POSITIONS // max(1, max(t.shape[-2] * t.shape[-1] for t in maps)))
    return [
        tuple(t[i : i + step].contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t[i : i + step]
              for t in inputs)
        for i in range(0, n, step)
    ]


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    """Chunk outputs concatenated back into one standard (contiguous) tensor."""
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
    return out.contiguous()


def _chunked(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``fn(*inputs)`` evaluated chunk by chunk on the CPU (:func:`cpu_chunks`), gradient-free.

    Every chunk tensor that still shares memory with ``inputs`` is cloned, so an
    in-place operation of ``fn`` never changes ``inputs`` (e.g. a cached frontier).
    """
    outs = []
    for chunk in cpu_chunks(inputs):
        own = tuple(c.clone() if c.untyped_storage().data_ptr() == t.untyped_storage().data_ptr() else c
                    for c, t in zip(chunk, inputs))
        outs.append(fn(*own))
    return _joined(outs)


def _split_outputs(head: Callable[..., Any], images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The head of a graph split on ``images``, chunk by chunk on the CPU, outputs joined per tensor."""
    parts = [tuple(head(*chunk)) for chunk in cpu_chunks([images])]
    return tuple(_joined(list(column)) for column in zip(*parts))


# ------------------------------------------------------------------ hooked passes
class _StopForward(Exception):
    """Raised inside a hook once every requested layer has been captured."""


class LayerForward:
    """Hooked forward passes of one model, with early stop; one pass at a time (a lock).

    Parameters
    ----------
    model : torch.nn.Module
    modules : mapping of str to torch.nn.Module
        Dotted name -> module (``model.named_modules()`` without the root).
    probe_size : callable returning int
        Side of a blank probe image, used only if a real batch cannot count the calls
        of every module (the network fails after the last requested layer).
    """

    def __init__(self, model: nn.Module, modules: Mapping[str, nn.Module], probe_size: Callable[[], int]) -> None:
        self.model, self.modules, self.probe_size = model, dict(modules), probe_size
        self.call_counts: dict[str, int] | None = None
        self.shapes: dict[tuple[str | None, tuple[int, ...]], tuple[int, ...]] = {}
        self._lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def _hooks(self, names: Sequence[str], captured: dict[str, torch.Tensor], grad: bool, stop: bool,
               counts: dict[str, int] | None) -> list[Any]:
        wanted = set(names)

        def hook_of(name: str):
            def hook(_module, _inputs, output):
                if counts is not None:
                    counts[name] += 1
                if name in wanted and name not in captured:
                    captured[name] = output.clone() if grad else output.detach().clone()
                    if stop and len(captured) == len(wanted):
                        raise _StopForward

            return hook

        names_hooked = list(self.modules) if counts is not None else list(wanted)
        return [self.modules[n].register_forward_hook(hook_of(n)) for n in names_hooked]

    def _pass(self, images: torch.Tensor, names: Sequence[str], *, grad: bool, stop: bool,
              counts: dict[str, int] | None = None) -> tuple[dict[str, torch.Tensor], Any]:
        captured: dict[str, torch.Tensor] = {}
        output = None
        handles = self._hooks(names, captured, grad, stop, counts)
        try:
            with torch.set_grad_enabled(grad):
                output = self.model(images)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        return captured, output

    def _counting_pass(self, images: torch.Tensor, names: Sequence[str], grad: bool) -> dict[str, torch.Tensor]:
        """A full pass of a real batch that also counts every module's calls (no probe pass)."""
        counts = {name: 0 for name in self.modules}
        try:
            captured, output = self._pass(images, names, grad=grad, stop=False, counts=counts)
        except RuntimeError:
            captured, _ = self._pass(images, names, grad=grad, stop=True)  # raises if the layers cannot run
            side = self.probe_size()
            probe = torch.zeros(1, *images.shape[1:-2], side, side, dtype=images.dtype, device=images.device)
            counts = {name: 0 for name in self.modules}
            with torch.inference_mode():
                self._pass(probe, [], grad=False, stop=False, counts=counts)
            output = None
        self.call_counts = counts
        if output is not None:
            self.shapes[(None, tuple(images.shape[-2:]))] = tuple(output.shape[1:])
        return captured

    def check_single_call(self, names: Sequence[str]) -> None:
        """Raise ``UnknownNameError`` if a layer does not run exactly once per forward pass."""
        for name in names:
            count = (self.call_counts or {}).get(name, 0)
            if count != 1:
                parent = name.rsplit(".", 1)[0] if "." in name else "a container"
                raise UnknownNameError(
                    f"Layer {name!r} runs {count} times in one forward pass (a shared or unused "
                    f"module), so its output is ambiguous. Request {parent!r} or another module "
                    "that runs once."
                )

    def run(self, images: torch.Tensor, names: Sequence[str], *, grad: bool = False) -> dict[str, torch.Tensor]:
        """Outputs (clones) of the modules ``names`` (dotted) for ``images``, keyed by name."""
        apply_thread_policy()
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        with self._lock:
            for (chunk,) in self._chunks(images, grad):
                if self.call_counts is None:
                    captured = self._counting_pass(chunk, names, grad)
                    self.check_single_call(names)
                else:
                    self.check_single_call(names)
                    captured, _ = self._pass(chunk, names, grad=grad, stop=True)
                for name in names:
                    parts[name].append(captured[name])
        size = tuple(images.shape[-2:])
        for name in names:
            self.shapes.setdefault((name, size), tuple(parts[name][0].shape[1:]))
        return {name: _joined(parts[name]) for name in names}

    def _chunks(self, images: torch.Tensor, grad: bool) -> list[tuple[torch.Tensor, ...]]:
        """CPU chunks (:func:`cpu_chunks`) of a gradient-free pass in eval mode; else the whole batch."""
        return [(images,)] if grad or self.model.training else cpu_chunks([images])

    def output(self, images: torch.Tensor) -> torch.Tensor:
        """The model output for ``images`` (a plain pass, shapes cached)."""
        apply_thread_policy()
        with self._lock:
            out = _joined([self.model(*chunk) for chunk in self._chunks(images, torch.is_grad_enabled())])
        self.shapes.setdefault((None, tuple(images.shape[-2:])), tuple(out.shape[1:]))
        return out


# ------------------------------------------------------------------ graph splits
class _Leaves(fx.Tracer):
    """Tracer whose leaves are modules without children plus the named ones."""

    def __init__(self, names: set[str]) -> None:
        super().__init__()
        self.names = names

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:  # noqa: D102
        return qualname in self.names or not any(True for _ in m.children())


def _node_of(graph: fx.Graph, layer: str | None) -> fx.Node | None:
    if layer is None:
        out = next(n for n in graph.nodes if n.op == "output")
        return out.args[0] if isinstance(out.args[0], fx.Node) else None
    return next((n for n in graph.nodes if n.op == "call_module" and n.target == layer), None)


def split_graph(model: nn.Module, start: str, end: str | None) -> tuple[fx.GraphModule, fx.GraphModule] | str:
    """Head (input -> values needed from ``start`` on) and tail (those -> ``end``) graph modules.

    ``end`` None is the model output. Returns ``"after"`` if ``start`` runs after
    ``end`` (a lesion there cannot matter) and ``"untraceable"`` if the model cannot be split.
    """
    names = {start} | ({end} if end else set())
    try:
        graph = _Leaves(names).trace(model)
    except Exception as err:  # noqa: BLE001 - any tracing failure means: run full passes
        logger.info("cannot trace %s (%s); lesioned evaluation uses full forward passes", type(model).__name__, err)
        return "untraceable"
    nodes = list(graph.nodes)
    s, e = _node_of(graph, start), _node_of(graph, end)
    if s is None or e is None:
        return "untraceable"
    if nodes.index(s) > nodes.index(e):
        return "after"
    pre, post = nodes[: nodes.index(s)], nodes[nodes.index(s) : nodes.index(e) + 1]
    frontier = _crossing(pre, post)
    head, env = fx.Graph(), {}
    for n in pre:
        env[n] = head.node_copy(n, lambda m: env[m])
    head.output(tuple(env[n] for n in frontier))
    return fx.GraphModule(model, head), _tail(model, frontier, pre, post, e)


def _crossing(pre: list[fx.Node], post: list[fx.Node]) -> list[fx.Node]:
    """The values computed before a cut (``pre``) that the nodes after it (``post``) read."""
    post_set = set(post)
    return [n for n in pre if n.op != "get_attr" and any(u in post_set for u in n.users)]


def _tail(model: nn.Module, frontier: list[fx.Node], pre: list[fx.Node], post: list[fx.Node], out: fx.Node) -> fx.GraphModule:
    """Graph module: the ``frontier`` values (placeholders, in order) -> ``post`` -> ``out``."""
    post_set = set(post)
    tail, env = fx.Graph(), {}
    for n in frontier:
        env[n] = tail.placeholder(n.name)
    for n in pre:
        if n.op == "get_attr" and any(u in post_set for u in n.users):
            env[n] = tail.node_copy(n, lambda m: env[m])
    for n in post:
        env[n] = tail.node_copy(n, lambda m: env[m])
    tail.output(env[out])
    return fx.GraphModule(model, tail)


def split_after(model: nn.Module, layer: str, ends: Sequence[str]) -> fx.GraphModule | None:
    """The rest of the network after ``layer``: a graph module from ``layer``'s output to the last of ``ends``.

    None unless the cut is clean: the model traces, every layer of ``ends`` runs after
    ``layer``, and ``layer``'s output is the only value computed before the cut that the
    rest reads (no skip connection crosses it), so replacing that output is the same as
    running the whole network on an input that produces it. Forward hooks on the
    modules of ``ends`` fire when the graph module runs (it calls the model's modules).
    """
    try:
        graph = _Leaves({layer, *ends}).trace(model)
    except Exception:  # noqa: BLE001 - untraceable: no cut
        return None
    nodes = list(graph.nodes)
    cut, targets = _node_of(graph, layer), [_node_of(graph, end) for end in ends]
    if cut is None or any(t is None or nodes.index(t) <= nodes.index(cut) for t in targets):
        return None
    last = max(targets, key=nodes.index)
    pre, post = nodes[: nodes.index(cut) + 1], nodes[nodes.index(cut) + 1 : nodes.index(last) + 1]
    return _tail(model, [cut], pre, post, last) if _crossing(pre, post) == [cut] else None


def tapped(fn: Callable[..., Any], inputs: Sequence[torch.Tensor], modules: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    """The outputs of ``modules`` while ``fn(*inputs)`` runs gradient-free (in CPU chunks), keyed by name.

    Each module must run once per pass (e.g. a layer of a :func:`split_after` tail).
    """
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in modules}

    def hook_of(name: str):
        def hook(_module, _inputs, output):
            parts[name].append(output.detach().clone())

        return hook

    handles = [module.register_forward_hook(hook_of(name)) for name, module in modules.items()]
    try:
        with torch.inference_mode():
            _chunked(fn, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return {name: _joined(values) for name, values in parts.items()}


def earliest_layer(model: nn.Module, layers: set[str]) -> str:
    """The layer of ``layers`` that runs first (``""`` if the model cannot be traced or a layer is missing)."""
    if len(layers) == 1:
        return next(iter(layers))
    try:
        graph = _Leaves(set(layers)).trace(model)
    except Exception:  # noqa: BLE001 - untraceable: full passes
        return ""
    order = [n.target for n in graph.nodes if n.op == "call_module" and n.target in layers]
    return order[0] if len(set(order)) == len(layers) else ""


def pool_features(out: torch.Tensor) -> np.ndarray:
    """Layer output -> (N, features) float64: spatial mean of maps, vectors as they are."""
    out = out.float()
    if out.ndim > 2:
        out = out.flatten(2).mean(-1)
    return out.cpu().numpy().astype(np.float64)


class CachedOutputs:
    """Pooled outputs of one layer for fixed images, cached intact, recomputed from a lesion on.

    Parameters
    ----------
    subject : VirtualSubject
        Its ``lesions`` (active lesions) decide what is recomputed.
    images : torch.Tensor
        Preprocessed images (N, 3, H, W).
    end : str or None
        The layer (None: the model output).
    batch_size : int
    progress : bool
    max_cache_bytes : int
        Largest frontier (activations at a split) kept in memory between calls.
    """

    def __init__(self, subject: Any, images: torch.Tensor, end: str | None, batch_size: int, progress: bool,
                 max_cache_bytes: int = 2**30) -> None:
        from .models import state_dict_sha256

        self.subject, self.images, self.end = subject, images, end
        self.batch_size, self.progress, self.max_cache_bytes = batch_size, progress, max_cache_bytes
        self._splits: dict[str, Any] = {}
        self._frontiers: dict[str, list[tuple[torch.Tensor, ...]]] = {}
        self._full_from: set[str] = set()
        self.sha = state_dict_sha256(subject.model)
        self.intact = self._full()

    def _batches(self):
        starts = range(0, self.images.shape[0], self.batch_size)
        return tqdm(starts, desc="forward", disable=not self.progress, leave=False)

    def _full(self) -> np.ndarray:
        outs = []
        for i in self._batches():
            x = self.images[i : i + self.batch_size].to(self.subject.device)
            with torch.inference_mode():
                if self.end is None:
                    outs.append(pool_features(self.subject.forward_output(x)))
                else:
                    outs.append(pool_features(self.subject.forward_layers(x, [self.end])[self.end]))
        return np.concatenate(outs)

    def outputs(self, subject: Any) -> np.ndarray:
        """Pooled outputs under the lesions now active on ``subject``."""
        from .models import state_dict_sha256

        if subject is not self.subject:
            return CachedOutputs(subject, self.images, self.end, self.batch_size, self.progress).intact
        active = list(subject.lesions)
        if not active:
            if state_dict_sha256(subject.model) != self.sha:
                raise InvalidDataError(
                    "The subject's weights changed since its intact outputs were cached (a lesion not made "
                    "with neurocnn.lesions?). Fit the readout again on the current weights."
                )
            return self.intact
        start = earliest_layer(subject.model, {lesion.layer for lesion in active})
        split = self._split(start) if start else "untraceable"
        if split == "after":
            return self.intact
        if split == "untraceable":
            return self._full()
        head, tail = split
        if start in self._full_from:
            return self._full()
        if start not in self._frontiers:
            frontier = []
            for i in self._batches():
                with torch.inference_mode():
                    frontier.append(_split_outputs(head, self.images[i : i + self.batch_size].to(self.subject.device)))
            size = sum(t.numel() * t.element_size() for batch in frontier for t in batch)
            if size > self.images.numel() * self.images.element_size():
                # a frontier larger than the images (a lesion in the first layers): the split saves almost no
                # arithmetic and costs memory traffic (measured 0.72x a full pass at Lite0's stem)
                self._full_from.add(start)
                return self._full()
            if size > self.max_cache_bytes:
                logger.info("frontier of %s is %d bytes; not cached", start, size)
                return self._run_tail(tail, frontier)
            self._frontiers[start] = frontier
        return self._run_tail(tail, self._frontiers[start])

    def _run_tail(self, tail: fx.GraphModule, frontier: list[tuple[torch.Tensor, ...]]) -> np.ndarray:
        outs = []
        for batch in tqdm(frontier, desc="forward (from lesion)", disable=not self.progress, leave=False):
            with torch.inference_mode():
                outs.append(pool_features(_chunked(tail, batch)))
        return np.concatenate(outs)

    def _split(self, start: str) -> Any:
        if start not in self._splits:
            end = self.subject.resolve_layer(self.end) if self.end else None
            self._splits[start] = split_graph(self.subject.model, start, end)
        return self._splits[start]
