"""Benchmark: crop- and frontier-based occlusion vs batched full-image occlusion vs a loop vs captum.

Same unit, same image, same occluders (mean fill, i.e. 0 after normalization), on the
embedded EfficientNet-Lite0 (real weights), for a middle layer (``stage3``), an early
one (``stem``) and a deep one (``stage6``, whose 787 px theoretical RF covers the image):

* ``neurocnn``: :func:`neurocnn.receptive_fields.empirical_rf` with ``occlusion="auto"``:
  occluders that miss the unit's theoretical RF skipped, every other occluded image
  evaluated only on the unit's stride-aligned RF crop (exact: maps checked below), or,
  where the crop is the whole image, from a frontier layer on (``stage2``: only the
  frontier positions each occluder reaches recomputed, on exact crops);
* ``full``: the same with ``occlusion="full"``: batched occluded copies of the whole
  image (misses skipped too), forward stopped at the layer;
* ``loop``: one full-image forward pass per occluder position, every position;
* ``captum``: ``captum.attr.Occlusion`` (every position, batched) on a forward function
  returning the unit's activation (forward also stopped at the layer).

Each method is timed ``--repeats`` times; the best wall and CPU (process) times are
printed with the ratio to ``neurocnn``. Run from the repo root on a quiet machine::

    python benchmarks/receptive_fields.py             # stride 8, 729 occluders, 5 repeats
    python benchmarks/receptive_fields.py --quick     # 24 px occluders at stride 24, 2 repeats (a smoke test)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from captum.attr import Occlusion

import neurocnn as nc
from neurocnn.receptive_fields import empirical_rf, occlude


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """Best wall and CPU seconds over ``repeats`` calls, and the last result."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), result


def _case(subject: nc.VirtualSubject, stim, layer: str, args: argparse.Namespace) -> None:
    channel, window, stride = args.channel, args.window, args.stride
    kwargs = dict(top_k=1, window=window, stride=stride, fill="mean", batch_size=args.batch_size, progress=False)

    def rf(mode: str):
        return empirical_rf(subject, layer, [channel], stim, occlusion=mode, **kwargs)

    t_ours = _best(lambda: rf("auto"), args.repeats)
    t_full = _best(lambda: rf("full"), args.repeats)
    ours, full = t_ours[2], t_full[2]
    uy, ux = int(ours["unit_y"][0, 0]), int(ours["unit_x"][0, 0])
    image = subject.preprocess(stim)[0]
    ys = torch.arange(0, image.shape[1] - window + 1, stride)
    xs = torch.arange(0, image.shape[2] - window + 1, stride)
    patch = torch.zeros(1, 3, window, window)

    def loop() -> np.ndarray:
        with torch.inference_mode():
            original = subject.forward_layers(image[None], [layer])[layer][0, channel, uy, ux].item()
            out = np.empty((len(ys), len(xs)), dtype=np.float32)
            for i, y in enumerate(ys):
                for j, x in enumerate(xs):
                    occluded = occlude(image, patch, y[None], x[None])
                    out[i, j] = original - subject.forward_layers(occluded, [layer])[layer][0, channel, uy, ux].item()
        return out

    def unit(images: torch.Tensor) -> torch.Tensor:
        return subject.forward_layers(images, [layer])[layer][:, channel, uy, ux]

    def captum() -> torch.Tensor:
        with torch.no_grad():
            return Occlusion(unit).attribute(
                image[None], sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                baselines=0.0, perturbations_per_eval=args.batch_size,
            )

    t_loop = _best(loop, args.repeats)
    t_captum = _best(captum, args.repeats)
    n = len(ys) * len(xs)
    brute = t_loop[2]
    print(f"\nEfficientNet-Lite0 {layer} channel {channel} unit ({uy},{ux}); {n} occluders ({window} px, "
          f"stride {stride}); theoretical RF {ours.attrs['theoretical_size_y']} px; crop area "
          f"{ours.attrs['crop_area_fraction']:.3f} of the image; occlusion_mode {ours.attrs['occlusion_mode']}; "
          f"frontier {ours.attrs['occlusion_frontier'] or 'none'}; "
          f"torch threads {torch.get_num_threads()}; best of {args.repeats}")
    print(f"max |neurocnn - loop| {np.abs(ours['discrepancy'].values[0, 0] - brute).max():.2e}, "
          f"max |full - loop| {np.abs(full['discrepancy'].values[0, 0] - brute).max():.2e}, "
          f"max |neurocnn - full| {np.abs(ours['discrepancy'].values - full['discrepancy'].values).max():.2e}")
    print(f"{'method':<30}{'wall (s)':>10}{'CPU (s)':>10}{'wall ratio':>13}{'CPU ratio':>12}")
    for name, (wall, cpu, _) in (("neurocnn (crop / frontier)", t_ours), ("full image, batched (neurocnn)", t_full),
                                 ("loop (1 forward/occluder)", t_loop), ("captum Occlusion", t_captum)):
        print(f"{name:<30}{wall:>10.3f}{cpu:>10.3f}{wall / t_ours[0]:>12.1f}x{cpu / t_ours[1]:>11.1f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=["stage3", "stem", "stage6"])
    parser.add_argument("--channel", type=int, default=0)
    parser.add_argument("--window", type=int, default=11)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="24 px occluders at stride 24, 2 repeats (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.window, args.stride, args.repeats = 24, 24, 2
    torch.set_num_threads(args.threads)
    subject = nc.VirtualSubject()  # embedded EfficientNet-Lite0, real weights
    stim = nc.load_stimuli("92images").subset([0])
    for layer in args.layers:
        _case(subject, stim, layer, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
