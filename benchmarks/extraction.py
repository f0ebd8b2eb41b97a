"""Benchmark: batched extraction vs a batch-size-1 loop; peak memory with and without store=.

Run from the repository root::

    NEUROCNN_MIRROR=../shared python benchmarks/extraction.py [--quick]

1. Time: 4 layers of the embedded EfficientNet-Lite0 and of AlexNet (seeded random
   weights; speed does not depend on the weights), the 92 images. neurocnn's batched,
   early-stopped extraction vs the per-image loop many toolboxes use (Net2Brain-style:
   one full forward pass per image with hooks on the layers). Outputs are compared
   (max abs difference).
2. Memory: peak RSS of extracting the large ``stem`` layer (32 x 112 x 112 floats per
   stimulus) for N synthetic stimuli in memory vs streamed to zarr (``store=``),
   each in a fresh subprocess.
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
    parser.add_argument("--quick", action="store_true", help="200 instead of 2000 stimuli for the memory test")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.store, args.folder)
        return
    time_comparison()
    memory_comparison(200 if args.quick else 2000)


if __name__ == "__main__":
    main()
