"""Benchmark: batched occlusion (neurocnn) vs one forward pass per occluder vs captum.

Same unit, same image, same occluders (mean fill, i.e. 0 after normalization):

* ``neurocnn``: :func:`neurocnn.receptive_fields.empirical_rf` (occluded copies built
  with one indexing op per batch, forward stopped at the layer);
* ``loop``: one forward pass per occluder position (what the batching replaces);
* ``captum``: ``captum.attr.Occlusion`` with ``sliding_window_shapes``/``strides`` on a
  forward function returning the unit's activation (forward also stopped at the layer).

Run from the repo root: ``python benchmarks/receptive_fields.py [--stride 8] [--layer stage3]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from captum.attr import Occlusion

import neurocnn as nc
from neurocnn.receptive_fields import empirical_rf, occlude


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="stage3")
    parser.add_argument("--channel", type=int, default=0)
    parser.add_argument("--window", type=int, default=11)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)

    subject = nc.VirtualSubject()  # embedded EfficientNet-Lite0, real weights
    stim = nc.load_stimuli("92images").subset([0])
    layer, channel, window, stride = args.layer, args.channel, args.window, args.stride

    start = time.perf_counter()
    result = empirical_rf(subject, layer, [channel], stim, top_k=1, window=window, stride=stride,
                          fill="mean", batch_size=args.batch_size, progress=False)
    t_batched = time.perf_counter() - start
    uy, ux = int(result["unit_y"][0, 0]), int(result["unit_x"][0, 0])
    batched = result["discrepancy"].values[0, 0]

    image = subject.preprocess(stim)[0]
    ys = torch.arange(0, image.shape[1] - window + 1, stride)
    xs = torch.arange(0, image.shape[2] - window + 1, stride)
    patch = torch.zeros(1, 3, window, window)
    start = time.perf_counter()
    with torch.inference_mode():
        original = subject.forward_layers(image[None], [layer])[layer][0, channel, uy, ux].item()
        loop = np.empty((len(ys), len(xs)), dtype=np.float32)
        for i, y in enumerate(ys):
            for j, x in enumerate(xs):
                occluded = occlude(image, patch, y[None], x[None])
                loop[i, j] = original - subject.forward_layers(occluded, [layer])[layer][0, channel, uy, ux].item()
    t_loop = time.perf_counter() - start

    def unit(images: torch.Tensor) -> torch.Tensor:
        return subject.forward_layers(images, [layer])[layer][:, channel, uy, ux]

    start = time.perf_counter()
    with torch.no_grad():
        Occlusion(unit).attribute(
            image[None], sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
            baselines=0.0, perturbations_per_eval=args.batch_size,
        )
    t_captum = time.perf_counter() - start

    n = len(ys) * len(xs)
    agree = np.abs(loop - batched).max()
    print(f"EfficientNet-Lite0 {layer} channel {channel} unit ({uy},{ux}); {n} occluders "
          f"({window} px, stride {stride}); torch threads {torch.get_num_threads()}")
    print(f"max |batched - loop| discrepancy: {agree:.2e}")
    print(f"{'method':<28}{'time (s)':>10}{'occl./s':>10}{'neurocnn speed-up':>20}")
    for name, t in (("neurocnn batched", t_batched), ("loop (1 forward/occluder)", t_loop),
                    ("captum Occlusion", t_captum)):
        print(f"{name:<28}{t:>10.2f}{n / t:>10.1f}{t / t_batched:>19.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
