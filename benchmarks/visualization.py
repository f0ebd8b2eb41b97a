"""Benchmark feature visualization and attribution on this CPU.

1. Activation maximization on a deep layer of the pretrained EfficientNet-Lite0: time
   per 256-step run, and the reached activation vs the unit's top example in the
   92-image set; a 256-step class maximization ("Siamese cat") and how the network
   classifies the result.
2. Attribution vs captum on the same batch (seeded random AlexNet, 224 px; and the
   pretrained Lite0 for saliency): time per batch and ratio, with the max abs
   difference between the two results.

Run: ``python benchmarks/visualization.py [--threads 1] [--steps 256] [--batch 16]``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import neurocnn as nc  # noqa: E402
from neurocnn import attribution, visualization  # noqa: E402


def _best_of(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


class _Output(nn.Module):
    """captum wants an nn.Module: the subject's model restricted to a target."""

    def __init__(self, subject: nc.VirtualSubject, target: attribution.Target) -> None:
        super().__init__()
        self.net, self.subject, self.target = subject.model, subject, target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(self.subject, x)


def bench_maximization(steps: int) -> list[str]:
    lite0 = nc.VirtualSubject()
    stim = nc.load_stimuli("92images")
    layer, channel = "stage6", 10
    top = visualization.top_examples(lite0, stim, layer, channel, top_k=1, progress=False)
    start = time.perf_counter()
    res = visualization.maximize_activation(lite0, layer, channel, objective="max", steps=steps, progress=False)
    unit_time = time.perf_counter() - start
    start = time.perf_counter()
    cat = visualization.maximize_activation(lite0, class_name="Siamese cat", steps=steps, progress=False)
    class_time = time.perf_counter() - start
    pred = lite0.classify(cat["image"].values[None], top_k=3)
    top3 = ", ".join(f"{c} {p:.3f}" for c, p in zip(pred["class_name"].values[0], pred["probability"].values[0]))
    return [
        f"{'activation maximization (lite0, CPU)':<46}{'time (s)':>10}{'s/step':>10}",
        f"{f'{layer} ch {channel}, {steps} steps':<46}{unit_time:>10.1f}{unit_time / steps:>10.3f}",
        f"{f'class Siamese cat logit, {steps} steps':<46}{class_time:>10.1f}{class_time / steps:>10.3f}",
        f"  {layer} ch {channel} max: dataset top example ({top['stimulus'].values[0]}) "
        f"{float(top['activation'][0]):.2f} -> maximized image {res.attrs['final_activation']:.2f} "
        f"({res.attrs['final_activation'] / float(top['activation'][0]):.1f}x)",
        f"  class-max image classified as: {top3}",
    ]


def bench_attribution(batch: int, repeats: int) -> list[str]:
    from captum.attr import Deconvolution, GuidedBackprop, Saliency

    rows = [f"{'attribution, batch of ' + str(batch):<46}{'neurocnn':>10}{'captum':>10}{'ratio':>8}{'max|diff|':>11}"]
    stim = nc.load_stimuli("92images").subset(np.arange(batch))
    alex = nc.VirtualSubject("alexnet", weights=None, seed=0)
    lite0 = nc.VirtualSubject()
    captum_methods = {"saliency": Saliency, "guided_backprop": GuidedBackprop, "deconvnet": Deconvolution}
    cases = [
        (alex, "alexnet (random)", {"class_index": 281}, list(captum_methods)),
        (alex, "alexnet (random)", {"layer": "conv5", "channel": 7}, list(captum_methods)),
        (lite0, "lite0", {"class_index": 281}, ["saliency"]),
    ]
    prep_t, _ = _best_of(lambda: lite0.preprocess(stim), repeats)
    rows.append(f"{'  (load + preprocess, inside neurocnn times)':<46}{prep_t:>10.2f}")
    for subject, label, target, methods in cases:
        x = subject.preprocess(stim)
        resolved = attribution.resolve_target(subject, **target)
        forward = _Output(subject, resolved)
        for method in methods:
            ours_t, ours = _best_of(lambda: attribution.attribute(subject, stim, method, batch_size=batch, **target),
                                    repeats)
            extra = {"abs": False} if method == "saliency" else {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theirs_t, theirs = _best_of(
                    lambda: captum_methods[method](forward).attribute(x.clone(), **extra), repeats
                )
            diff = float(np.abs(ours.values - theirs.permute(0, 2, 3, 1).detach().numpy()).max())
            what = "class 281" if "class_index" in target else f"{target['layer']} ch {target['channel']}"
            rows.append(f"{f'{method}, {label}, {what}':<46}{ours_t:>10.2f}{theirs_t:>10.2f}"
                        f"{ours_t / theirs_t:>8.2f}{diff:>11.2e}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} intra-op thread(s)")
    for line in bench_attribution(args.batch, args.repeats):
        print(line)
    print()
    for line in bench_maximization(args.steps):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
