"""Benchmark: lesioned evaluation from cached intact features vs plain full forward passes.

Same network (embedded EfficientNet-Lite0, real weights), same rendered test views,
same knockout, same readout features (spatial mean of the readout layer):

* ``neurocnn``: :func:`neurocnn.tasks.evaluate` path, i.e. the readout's cached engine:
  intact features cached, the input of the lesioned layer cached once per layer
  (torch.fx split), only the part of the network after the lesion recomputed;
* ``plain``: what a user of plain PyTorch (the peer) writes: a forward hook zeroing the
  channels and a full forward pass over all views per lesion.

Per lesion layer: best of ``--repeats`` wall and CPU times for one lesioned
evaluation, the ratio, and a check that both give the same features. Then the time of
the whole dissociation map (``analyses/dissociation_map.py``) is projected from the
measured per-evaluation times and the map's evaluation counts (quick and full), with
shams in every cell and two-stage (shams only in cells passing the permutation test).

Run from the repo root: ``python benchmarks/lesions.py [--quick]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import neurocnn as nc
from neurocnn import lesions, tasks
from neurocnn.forward import pool_features


def _best(fn, repeats: int) -> tuple[float, float, object]:
    wall, cpu, out = np.inf, np.inf, None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
    return wall, cpu, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few views, two layers, one repeat (CI)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    subject = nc.VirtualSubject("efficientnet_lite0")
    floc = nc.load_stimuli("floc")
    n_test = 24 if args.quick else 160
    task = tasks.make_pair_task(floc, ("face", "house"), n_train=40, n_test=n_test, seed=0)
    readout = tasks.fit_readout(subject, task, seed=0)
    engine = readout._engine
    layers = ["stage6", "stage7"] if args.quick else ["stem", "stage2", "stage4", "stage6", "stage7"]
    images = engine.images
    print(f"{images.shape[0]} views, readout {readout.layer}, {args.threads} threads, best of {repeats}")
    print(f"{'layer':8s} {'neurocnn wall':>13s} {'cpu':>7s} {'plain wall':>11s} {'cpu':>7s} {'ratio':>6s}  max |diff|")
    per_eval = {}
    for layer in layers:
        units = np.arange(0, lesions.layer_size(subject, layer), 10)
        les = lesions.knockout(subject, layer, units)
        with les:
            engine.outputs(subject)  # the frontier of this layer is cached once per map, not per lesion

        def ours():
            with les:
                return engine.outputs(subject)

        def plain():
            idx = torch.as_tensor(units)

            def hook(_m, _i, out):
                out = out.clone()
                out[:, idx] = 0
                return out

            handle = subject.module(layer).register_forward_hook(hook)
            try:
                feats = []
                with torch.inference_mode():
                    for i in range(0, images.shape[0], 32):
                        feats.append(pool_features(subject.forward_layers(images[i : i + 32], [readout.layer])[readout.layer]))
                return np.concatenate(feats)
            finally:
                handle.remove()

        w1, c1, a = _best(ours, repeats)
        w2, c2, b = _best(plain, repeats)
        per_eval[layer] = w1
        print(f"{layer:8s} {w1:13.3f} {c1:7.3f} {w2:11.3f} {c2:7.3f} {w2 / w1:6.2f}  {np.abs(a - b).max():.2e}")
    mean_eval = float(np.mean(list(per_eval.values())))
    for mode, (n_layers, n_sizes, n_amp) in {"quick": (2, 2, 1), "full": (8, 5, 4)}.items():
        cells = [n_layers * n_sizes, n_layers * n_amp]  # the channel KO and the TMS map
        n_sham = [2, 2] if mode == "quick" else [tasks.n_sham_for(m) for m in cells]
        every = sum(m * (2 + 2 * n) for m, n in zip(cells, n_sham))  # shams in every cell
        lesions_only = 2 * sum(cells)  # two-stage, no cell passes the permutation criteria
        print(f"dissociation map ({mode}, channel KO + TMS, {images.shape[0]} views, {mean_eval:.3f} s per evaluation: the mean "
              f"of the layers above): shams in every cell {every} evaluations = {every * mean_eval:.0f} s; two-stage "
              f"{lesions_only} evaluations = {lesions_only * mean_eval:.0f} s plus {mean_eval * 2 * max(n_sham):.0f} s "
              f"per candidate cell")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
