"""Benchmark pixel-level network dissection against a one-image-at-a-time NetDissect-style loop.

Same subject (the pretrained EfficientNet-Lite0), same layers, same probe set (the 92
images with the eleven pixel-colour concepts), same IoU frame (112 x 112, as NetDissect's
masks for 224 px Broden), same threshold rule.

- neurocnn: :func:`neurocnn.dissection.dissect`, batched forward passes streamed twice
  (exact top-quantile thresholds, then IoU tallies with one matrix product per image).
- reference: the NetDissect-Lite loop: one image per forward pass, every feature map kept
  in memory, ``numpy.quantile`` per unit, then per image, per unit, per concept present a
  boolean AND and sums (``tally_both``, ``tally_units_cat``, ``tally_labels``).

Prints wall and CPU time (best of ``--repeats``), the ratio reference / neurocnn, and
the max |IoU difference| (should be 0 up to float rounding).

Run: ``python benchmarks/dissection.py [--threads 1] [--repeats 3] [--layers stage2 stage4 stage7 head] [--quick]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import neurocnn as nc  # noqa: E402
from neurocnn import dissection  # noqa: E402
from neurocnn.concepts import concepts_from_stimuli  # noqa: E402


def _best_of(fn, repeats: int) -> tuple[float, float, object]:
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), result


def netdissect_loop(subject: nc.VirtualSubject, probe, layer: str, *, quantile: float, size: tuple[int, int]) -> np.ndarray:
    """IoU (unit, concept) the NetDissect-Lite way: one image at a time, features in memory."""
    prep, stim = subject.preprocessing, probe.stimuli
    features, frames = [], []
    for i in range(len(stim)):  # feature extraction, batch of one
        image = stim.load(i)
        frame = prep.geometric(image)
        with torch.inference_mode():
            out = subject.forward_layers(prep.normalize(frame)[None], [layer])[layer][0].float()
        features.append(out.numpy())
        frames.append((image, frame))
    features = np.stack(features)  # (N, U, h, w): all in memory, as NetDissect's mmap
    n_units, n_concepts = features.shape[1], probe.concepts.size
    thresholds = np.quantile(features.transpose(1, 0, 2, 3).reshape(n_units, -1), 1 - quantile, axis=1)
    top = features.max(axis=(0, 2, 3))
    inclusive = (thresholds >= top) & (top > features.min(axis=(0, 2, 3)))
    tally_both = np.zeros((n_units, n_concepts))
    tally_units_cat = np.zeros((n_units, len(probe.categories)))
    tally_labels = np.zeros(n_concepts)
    for i, (image, frame) in enumerate(frames):
        maps = [(c, m.numpy()) for c, m in probe.label_maps(i, image, frame, prep, size=size)]
        for _, m in maps:
            for label in np.unique(m[m >= 0]):
                tally_labels[label] += (m == label).sum()
        for unit in range(n_units):
            up = F.interpolate(torch.from_numpy(features[i, unit])[None, None], size=size, mode="bilinear",
                               align_corners=False)[0, 0].numpy()
            mask = up >= thresholds[unit] if inclusive[unit] else up > thresholds[unit]
            for c in {c for c, _ in maps}:
                tally_units_cat[unit, c] += mask.sum()
            for _, m in maps:
                for label in np.unique(m[m >= 0]):
                    tally_both[unit, label] += np.logical_and(mask, m == label).sum()
    cat_of = np.array([probe.categories.index(c) for c in probe.concept_category])
    union = tally_units_cat[:, cat_of] + tally_labels[None] - tally_both
    return np.where(union > 0, tally_both / np.maximum(union, 1e-12), 0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", nargs="*", default=["stage2", "stage4", "stage7", "head"])
    parser.add_argument("--images", type=int, default=92)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=4, help="neurocnn's images per forward pass")
    parser.add_argument("--quick", action="store_true", help="8 images, stage2 and head, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.layers, args.repeats, args.size = 8, ["stage2", "head"], 1, 56
    torch.set_num_threads(args.threads)
    subject = nc.VirtualSubject()
    stim = nc.load_stimuli("92images").subset(np.arange(args.images))
    probe = concepts_from_stimuli(stim)
    size = (args.size, args.size)
    print(f"torch {torch.__version__}, {args.threads} intra-op thread(s); {subject.name}, {len(stim)} images, "
          f"11 colour concepts, IoU frame {args.size}x{args.size}, best of {args.repeats}")
    print(f"{'layer':<10}{'units':>6}{'ours wall':>11}{'ref wall':>10}{'ratio':>7}{'ours cpu':>10}{'ref cpu':>9}"
          f"{'ratio':>7}{'max|dIoU|':>11}")
    warm = concepts_from_stimuli(stim.subset(np.arange(2)))
    for layer in args.layers:  # warm-up: first-call costs (call counting, allocator) are not timed
        dissection.dissect(subject, warm, layer, size=size, progress=False)
        netdissect_loop(subject, warm, layer, quantile=0.005, size=size)
    for layer in args.layers:
        ours_w, ours_c, ours = _best_of(
            lambda: dissection.dissect(subject, probe, layer, size=size, batch_size=args.batch_size, progress=False),
            args.repeats)
        ref_w, ref_c, ref = _best_of(lambda: netdissect_loop(subject, probe, layer, quantile=0.005, size=size),
                                     args.repeats)
        diff = float(np.abs(ours["iou"].values - ref).max())
        print(f"{layer:<10}{ours.sizes['channel']:>6}{ours_w:>11.2f}{ref_w:>10.2f}{ref_w / ours_w:>7.1f}"
              f"{ours_c:>10.2f}{ref_c:>9.2f}{ref_c / ours_c:>7.1f}{diff:>11.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
