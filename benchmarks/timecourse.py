"""Benchmark neurocnn.rsa.compute_rdm_movie against rsatoolbox's calc_rdm_movie.

Same inputs in the same run: 92 stimuli x 30 trials x 306 sensors x 1,100 time points
(float32 epochs, 3.7 GB; 5 runs of 6 trials per stimulus for crossnobis), metrics
``euclidean`` (rsatoolbox; ours ``sqeuclidean`` / n_sensors), ``correlation`` and
``crossnobis`` (leave-one-run-out). Every (library, metric) runs in its own process, so
the peak resident memory (``ru_maxrss``) of each is reported; wall and CPU time are the
best of ``--repeats`` runs (rsatoolbox: ``--reference-repeats``). Three RDMs (first,
middle, last time) of both libraries are compared (max |diff|).

rsatoolbox costs the same per time point, so with ``--reference-times N`` it is timed on
the first N time points and scaled linearly (marked ``*``; its memory then is for N).

Usage::

    python benchmarks/timecourse.py            # full size (needs ~12 GB of RAM)
    python benchmarks/timecourse.py --quick    # 92 x 10 x 306 x 40, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METRICS = {"euclidean": ("sqeuclidean", "euclidean"), "correlation": ("correlation", "correlation"),
           "crossnobis": ("crossnobis", "crossnobis")}


def make_data(n_cond: int, n_trials: int, n_sensors: int, n_times: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_cond * n_trials, n_sensors, n_times), dtype=np.float32)
    ids = np.tile(np.array([f"stim{i:02d}" for i in range(n_cond)]), n_trials)
    runs = np.repeat(np.arange(n_trials) * 5 // n_trials, n_cond)
    return x, ids, runs


def run_ours(x, ids, runs, metric: str):
    import torch

    from neurocnn import rsa

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    mv = rsa.compute_rdm_movie(x, METRICS[metric][0], stimulus_ids=ids, runs=runs, progress=False)
    order = np.unique(ids)
    out = mv.sel(stimulus=order, stimulus2=order).values
    return out / x.shape[1] if metric == "euclidean" else out


def run_rsatoolbox(x, ids, runs, metric: str):
    import warnings

    from rsatoolbox.data import TemporalDataset
    from rsatoolbox.rdm import calc_rdm_movie

    ds = TemporalDataset(x.astype(np.float64), obs_descriptors={"stim": ids, "run": runs},
                         time_descriptors={"time": np.arange(x.shape[2])})
    kw = {"cv_descriptor": "run"} if metric == "crossnobis" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return calc_rdm_movie(ds, method=METRICS[metric][1], descriptor="stim", **kw).get_matrices()


def worker(args: argparse.Namespace) -> None:
    x, ids, runs = make_data(*args.size)
    if args.times_limit:
        x = np.ascontiguousarray(x[:, :, : args.times_limit])
    fn = run_ours if args.worker == "neurocnn" else run_rsatoolbox
    if args.worker == "neurocnn":  # imports outside the timed region
        import neurocnn.rsa  # noqa: F401
    else:
        import rsatoolbox.rdm  # noqa: F401
    fn(np.ascontiguousarray(x[:, :, :2]), ids, runs, args.metric)  # warm-up (thread pools, lazy imports)
    best = None
    for _ in range(args.repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn(x, ids, runs, args.metric)
        t = (time.perf_counter() - w, time.process_time() - c)
        best = t if best is None else (min(best[0], t[0]), min(best[1], t[1]))
    T = out.shape[0]
    np.save(args.save, out[[0, T // 2, T - 1]])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (Linux: KiB)
    print(json.dumps({"wall": best[0], "cpu": best[1], "rss_gib": rss, "n_times": int(T)}))


def spawn(lib: str, metric: str, size, repeats: int, times_limit: int, save: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", lib, "--metric", metric, "--size", *map(str, size),
           "--repeats", str(repeats), "--times-limit", str(times_limit), "--save", str(save)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="92 x 10 x 306 x 40 (seconds)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reference-repeats", type=int, default=1)
    p.add_argument("--reference-times", type=int, default=0, help="time rsatoolbox on this many time points, scaled")
    p.add_argument("--metrics", nargs="+", default=list(METRICS), choices=list(METRICS))
    p.add_argument("--worker", choices=["neurocnn", "rsatoolbox"], help=argparse.SUPPRESS)
    p.add_argument("--metric", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, nargs=4, default=None, help=argparse.SUPPRESS)
    p.add_argument("--times-limit", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    size = (92, 10, 306, 40) if args.quick else (92, 30, 306, 1100)
    repeats = 1 if args.quick else args.repeats
    print(f"RDM movies: {size[0]} stimuli x {size[1]} trials x {size[2]} sensors x {size[3]} time points "
          f"(float32 epochs {np.prod(size) * 4 / 2**30:.2f} GiB); neurocnn best of {repeats}, rsatoolbox best of "
          f"{args.reference_repeats}")
    print(f"{'metric':<12}{'neurocnn wall/CPU s':>22}{'rsatoolbox wall/CPU s':>24}{'speed-up wall/CPU':>20}"
          f"{'peak RSS GiB (ours/ref)':>26}{'max |diff|':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for metric in args.metrics:
            a, b = Path(tmp) / f"ours_{metric}.npy", Path(tmp) / f"ref_{metric}.npy"
            ours = spawn("neurocnn", metric, size, repeats, 0, a)
            n_ref = args.reference_times if args.reference_times and args.reference_times < size[3] else 0
            ref = spawn("rsatoolbox", metric, size, args.reference_repeats, n_ref, b)
            scale = size[3] / ref["n_times"]
            star = "*" if scale != 1 else ""
            rw, rc = ref["wall"] * scale, ref["cpu"] * scale
            ra, rb = np.load(a), np.load(b)
            err = np.abs(ra[0] - rb[0]).max() if scale != 1 else np.abs(ra - rb).max()
            print(f"{metric:<12}{ours['wall']:>11.2f} /{ours['cpu']:>8.2f}{rw:>12.2f}{star} /{rc:>8.2f}{star}"
                  f"{rw / ours['wall']:>11.1f}x /{rc / ours['cpu']:>5.1f}x"
                  f"{ours['rss_gib']:>15.2f} / {ref['rss_gib']:.2f}{star}{err:>12.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
