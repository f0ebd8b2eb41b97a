"""Benchmark: extraction time and peak memory vs number of stimuli and dask workers.

Run from the repository root::

    python benchmarks/scale.py [--quick]

Each cell is a fresh subprocess extracting layer ``stage4`` of the embedded
EfficientNet-Lite0 for N seeded synthetic images (generated on demand) into a zarr
store, either in-process (``workers=0``: no dask) or on a dask ``LocalCluster`` with
1 or 2 single-threaded worker processes that write their batches to the store. The
input is resized to 112 px (``Preprocessing(resize=(112, 112))``) to keep the run
short; that changes only the amount of compute, not the data flow being measured.
Peak RSS is that of the driver process (workers report theirs separately, max over
workers). Memory must stay flat as N grows: no process ever holds a whole layer.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(n: int, workers: int, store: str) -> None:
    import torch

    from neurocnn import Preprocessing, VirtualSubject
    from neurocnn.stimuli import synthetic_stimuli

    torch.set_num_threads(1 if workers else 2)
    subject = VirtualSubject(preprocessing=Preprocessing(resize=(112, 112), crop=None))
    stim = synthetic_stimuli(n, size=64, seed=0)
    client = None
    worker_peak = 0.0
    if workers:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        client.run(lambda: __import__("torch").set_num_threads(1))
    t0 = time.perf_counter()
    acts = subject.activations(stim, "stage4", batch_size=64, store=store, client=client, progress=False)
    elapsed = time.perf_counter() - t0
    checksum = float(acts.isel(stimulus=slice(-64, None)).mean())
    if client is not None:
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        worker_peak = max(peaks.values())
        client.close()
        cluster.close()
    driver_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"elapsed": elapsed, "driver_mib": driver_peak, "worker_mib": worker_peak, "checksum": checksum}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 200, 1000, 2000 instead of 1k, 5k, 20k")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(int(args.child[0]), int(args.child[1]), args.child[2])
        return
    sizes = (200, 1000, 2000) if args.quick else (1000, 5000, 20000)
    layer_bytes = 80 * 7 * 7 * 4
    print(f"{'stimuli':>8} {'workers':>8} {'time s':>8} {'img/s':>8} {'driver MiB':>11} {'worker MiB':>11} {'layer MiB':>10}")
    for n in sizes:
        for workers in (0, 1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, __file__, "--child", str(n), str(workers), str(Path(tmp) / "a.zarr")]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
            print(f"{n:8d} {workers:8d} {r['elapsed']:8.1f} {n / r['elapsed']:8.1f} {r['driver_mib']:11.0f} "
                  f"{r['worker_mib']:11.0f} {n * layer_bytes / 2**20:10.1f}", flush=True)


if __name__ == "__main__":
    main()
