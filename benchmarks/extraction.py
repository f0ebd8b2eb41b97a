"""Benchmark extraction: a plain hooked forward pass vs neurocnn vs thingsvision; batched vs loop; memory.

Run from the repository root::

    NEUROCNN_MIRROR=../shared python benchmarks/extraction.py [--quick] [--legacy]

1. Three-way (issue 19), the default: EfficientNet-Lite0 with its ImageNet weights,
   the 92 images preprocessed once (resize 256, crop 224, in [0, 1]; normalization is
   part of each tool's run), 4 layers (``_blocks.4``, ``_blocks.10``, ``_blocks.14``,
   ``_conv_head``), batch 32, model construction and weight loading included:
   a plain forward pass with hooks on the 4 modules, neurocnn's
   ``VirtualSubject(...).activations(...)``, and thingsvision's ``extract_features``
   when thingsvision is installed (row skipped otherwise). Best of several repeats,
   wall and CPU time, ratio to the plain pass, and a checksum (sum of all values) of
   every tool's output with the max |difference| to the plain pass. GPU rows run
   when CUDA is available.
2. ``--legacy``: neurocnn's batched, early-stopped extraction vs a batch-size-1 loop
   (Net2Brain-style), and the peak RSS of extracting the large ``stem`` layer in
   memory vs streamed to zarr (``store=``), each in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

THREE_WAY_LAYERS = ["_blocks.4", "_blocks.10", "_blocks.14", "_conv_head"]


def _timed(fn, repeats: int, device: str):
    """Best wall and CPU time of ``repeats`` runs, and the last result."""
    best, result = (np.inf, np.inf), None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = (min(best[0], time.perf_counter() - wall), min(best[1], time.process_time() - cpu))
    return best, result


def _plain(images: torch.Tensor, weights: Path, device: str) -> dict[str, np.ndarray]:
    """Build the model, load the weights, hooks on the 4 modules, full forward passes."""
    from neurocnn.models import get_spec

    spec = get_spec("efficientnet_lite0")
    model = spec.builder()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval().to(device)
    mean = torch.tensor(spec.preprocessing.mean, device=device)[:, None, None]
    std = torch.tensor(spec.preprocessing.std, device=device)[:, None, None]
    modules = dict(model.named_modules())
    out: dict[str, list[np.ndarray]] = {name: [] for name in THREE_WAY_LAYERS}
    handles = [modules[n].register_forward_hook(lambda _m, _i, o, n=n: out[n].append(o.detach().float().cpu().numpy()))
               for n in THREE_WAY_LAYERS]
    try:
        with torch.inference_mode():
            for i in range(0, images.shape[0], 32):
                model((images[i : i + 32].to(device) - mean) / std)
    finally:
        for h in handles:
            h.remove()
    return {name: np.concatenate(v) for name, v in out.items()}


def _neurocnn(images: torch.Tensor, device: str) -> dict[str, np.ndarray]:
    from neurocnn import Preprocessing, VirtualSubject

    subject = VirtualSubject("efficientnet_lite0", preprocessing=Preprocessing(resize=None, crop=None), device=device)
    acts = subject.activations(images, THREE_WAY_LAYERS, batch_size=32, progress=False)
    return {name: acts[name].values for name in THREE_WAY_LAYERS}


def _thingsvision(images: torch.Tensor, weights: Path, device: str) -> dict[str, np.ndarray]:
    from thingsvision import get_extractor_from_model

    from neurocnn.models import get_spec

    spec = get_spec("efficientnet_lite0")
    model = spec.builder()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    extractor = get_extractor_from_model(model=model.eval(), device=device, backend="pt")
    mean = torch.tensor(spec.preprocessing.mean)[:, None, None]
    std = torch.tensor(spec.preprocessing.std)[:, None, None]
    batches = [(images[i : i + 32] - mean) / std for i in range(0, images.shape[0], 32)]
    try:  # thingsvision >= 2.6: several modules in one pass
        feats = extractor.extract_features(batches=batches, module_names=THREE_WAY_LAYERS, flatten_acts=False)
        return {name: np.asarray(feats[name]) for name in THREE_WAY_LAYERS}
    except TypeError:  # one module per call
        return {name: np.asarray(extractor.extract_features(batches=batches, module_name=name, flatten_acts=False))
                for name in THREE_WAY_LAYERS}


def three_way(repeats: int) -> None:
    """Print the plain / neurocnn / thingsvision table (CPU, and CUDA when present)."""
    from neurocnn import datasets, load_stimuli
    from neurocnn.forward import thread_policy
    from neurocnn.models import get_spec

    spec = get_spec("efficientnet_lite0")
    stim = load_stimuli("92images")
    images = torch.stack([spec.preprocessing.geometric(stim.load(i)) for i in range(len(stim))])
    weights = datasets.fetch(spec.weights)
    try:
        import thingsvision  # noqa: F401
        have_tv = True
    except ImportError:
        have_tv = False
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"extraction, EfficientNet-Lite0, 92 images, layers {','.join(THREE_WAY_LAYERS)}, batch 32, "
          f"model construction included; best of {repeats}")
    print(f"  {'device':6s} {'tool':14s} {'wall s':>8s} {'cpu s':>8s} {'wall/plain':>10s} {'checksum':>16s} {'max|diff|':>9s}")
    for device in devices:
        runs = {"plain forward": lambda: _plain(images, weights, device), "neurocnn": lambda: _neurocnn(images, device)}
        if have_tv:
            runs["thingsvision"] = lambda: _thingsvision(images, weights, device)
        for fn in runs.values():  # warm-up: imports, weight-file hash, allocator
            fn()
        rows = {tool: _timed(fn, repeats, device) for tool, fn in runs.items()}
        ref_time, ref = rows["plain forward"]
        for tool, ((wall, cpu), out) in rows.items():
            checksum = sum(float(np.asarray(out[n], dtype=np.float64).sum()) for n in THREE_WAY_LAYERS)
            diff = max(float(np.abs(np.asarray(out[n]).reshape(ref[n].shape) - ref[n]).max()) for n in THREE_WAY_LAYERS)
            print(f"  {device:6s} {tool:14s} {wall:8.3f} {cpu:8.3f} {wall / ref_time[0]:9.3f}x {checksum:16.6e} {diff:9.1e}")
        if not have_tv:
            print(f"  {device:6s} {'thingsvision':14s} {'(not installed: skipped)':>36s}")
    if not torch.cuda.is_available():
        print("  (no CUDA device: GPU rows skipped)")
    print(f"  ({torch.get_num_threads()} torch threads; neurocnn policy {thread_policy()['thread_policy']})")


CASES = (  # (model, weights, layers)
    ("efficientnet_lite0", "pretrained", ["stage2", "stage4", "stage6", "head"]),
    ("alexnet", None, ["conv1", "conv3", "conv5", "fc7"]),
)


def loop_extraction(subject, stim, layers):
    """Batch-size-1 baseline: a full forward pass per image, hooks on every layer."""
    modules = {name: subject.module(name) for name in layers}
    out = {name: [] for name in layers}
    for i in range(len(stim)):
        captured = {}
        handles = [m.register_forward_hook(lambda _m, _i, o, n=n: captured.__setitem__(n, o.detach().clone()))
                   for n, m in modules.items()]
        try:
            with torch.no_grad():
                subject.model(subject.preprocessing(stim.load(i))[None])
        finally:
            for h in handles:
                h.remove()
        for name in layers:
            out[name].append(captured[name][0].numpy())
    return {name: np.stack(v) for name, v in out.items()}


def time_comparison() -> None:
    from neurocnn import VirtualSubject, load_stimuli

    stim = load_stimuli("92images")
    print(f"extraction of the 92 images, {torch.get_num_threads()} threads")
    print(f"  {'model':20s} {'layers':28s} {'batch':>5s} {'batched s':>10s} {'loop s':>8s} {'ratio':>7s} {'max|diff|':>9s}")
    for model, weights, layers in CASES:
        subject = VirtualSubject(model, weights=weights)
        subject.activations(stim.subset([0, 1]), layers, progress=False)  # warm-up
        t0 = time.perf_counter()
        looped = loop_extraction(subject, stim, layers)
        t_loop = time.perf_counter() - t0
        for batch_size in (8, 32):
            t0 = time.perf_counter()
            batched = subject.activations(stim, layers, batch_size=batch_size, progress=False)
            t_batched = time.perf_counter() - t0
            diff = max(float(np.abs(batched[n].values - looped[n]).max()) for n in layers)
            print(f"  {model:20s} {','.join(layers):28s} {batch_size:5d} {t_batched:10.2f} {t_loop:8.2f} "
                  f"{t_loop / t_batched:6.2f}x {diff:9.1e}")


def _child(n: int, store: str | None, folder: str) -> None:
    from neurocnn import VirtualSubject, load_stimuli

    subject = VirtualSubject()
    stim = load_stimuli(folder)
    t0 = time.perf_counter()
    acts = subject.activations(stim, "stem", batch_size=50, store=store, progress=False)
    float(acts.isel(stimulus=-1).mean())
    elapsed = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{peak_mib:.0f} {elapsed:.1f}")


def memory_comparison(n: int) -> None:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "stimuli"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"s{i:05d}.png")
        rows = []
        for label, store in (("in memory", None), ("store=zarr", str(Path(tmp) / "acts.zarr"))):
            cmd = [sys.executable, __file__, "--child", str(n), "--folder", str(folder)]
            if store:
                cmd += ["--store", store]
            peak, elapsed = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
            rows.append((label, float(peak), float(elapsed)))
    size_gib = n * 32 * 112 * 112 * 4 / 2**30
    print(f"peak RSS, layer 'stem' (32x112x112 float32 = {size_gib:.2f} GiB for {n} stimuli)")
    for label, peak, elapsed in rows:
        print(f"  {label:12s} {peak:8.0f} MiB   {elapsed:6.1f} s")
    print(f"  ratio        {rows[0][1] / rows[1][1]:8.2f} x less memory with store=")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats; 200 instead of 2000 stimuli for the memory test")
    parser.add_argument("--legacy", action="store_true", help="also the batched-vs-loop and memory comparisons")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.store, args.folder)
        return
    three_way(2 if args.quick else 5)
    if args.legacy:
        time_comparison()
        memory_comparison(200 if args.quick else 2000)


if __name__ == "__main__":
    main()
