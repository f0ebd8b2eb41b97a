"""Benchmark neurocnn.rsa against rsatoolbox on the same inputs.

Cases: correlation RDMs (1000 x 50k and 92 x 50k units), Spearman comparison of many
RDMs at 1000 stimuli, and a 1000-sample stimulus bootstrap with noise ceilings on the
92-image human IT data (8 model RDMs vs 8 brain RDMs, rsatoolbox
``eval_bootstrap_pattern``), and tau-a bootstraps of 10 RDMs vs the 4 subjects' RDMs.
Prints one table with times and speed-ups; the Spearman row compares 8 x 8 RDMs at
1000 stimuli (each RDM ranked once, one matrix product for all pairs). With a CUDA
device, a GPU row for the correlation RDM (``device="cuda"``) is added (skipped
otherwise).

rsatoolbox's bootstrap costs the same per sample, so with ``--reference-samples`` below
``n_bootstrap`` its time is measured on fewer samples and scaled linearly (marked ``*``).

Usage::

    python benchmarks/rsa.py            # full sizes
    python benchmarks/rsa.py --quick    # small sizes, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("NEUROCNN_MIRROR", str(Path(__file__).resolve().parents[2] / "shared"))

from neurocnn import datasets, rsa  # noqa: E402
from neurocnn.forward import apply_thread_policy  # noqa: E402


Timing = tuple[float, float]  # (wall s, CPU s of this process, all threads)


def best_of(fn: Callable[[], object], repeats: int) -> Timing:
    """Best wall and CPU time of ``repeats`` runs (CPU time is robust to a busy machine)."""
    times = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        with contextlib.redirect_stderr(io.StringIO()):  # rsatoolbox's progress bars
            fn()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return min(t[0] for t in times), min(t[1] for t in times)


Row = tuple[str, Timing, Timing | None, str]


def case_rdm(n: int, units: int, repeats: int) -> Row:
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm

    x = np.random.default_rng(0).normal(size=(n, units)).astype(np.float32)
    ours = best_of(lambda: rsa.compute_rdm(x, metric="correlation"), repeats)
    ds = Dataset(x.astype(np.float64))
    ref = best_of(lambda: calc_rdm(ds, method="correlation"), 1)
    got = rsa.compute_rdm(x, metric="correlation").values[np.triu_indices(n, 1)]
    err = np.abs(got - calc_rdm(ds, method="correlation").get_vectors()[0]).max()
    return f"correlation RDM {n} x {units} units", ours, ref, f"max |diff| {err:.1e}"


def case_rdm_gpu(n: int, units: int, repeats: int) -> Row | None:
    """Correlation RDM on the GPU vs rsatoolbox on the CPU (None without CUDA)."""
    if not torch.cuda.is_available():
        return None
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm

    x = np.random.default_rng(0).normal(size=(n, units)).astype(np.float32)

    def ours_fn() -> None:
        rsa.compute_rdm(x, metric="correlation", device="cuda")
        torch.cuda.synchronize()

    ours_fn()
    ours = best_of(ours_fn, repeats)
    ds = Dataset(x.astype(np.float64))
    ref = best_of(lambda: calc_rdm(ds, method="correlation"), 1)
    got = rsa.compute_rdm(x, metric="correlation", device="cuda").values[np.triu_indices(n, 1)]
    err = np.abs(got - calc_rdm(ds, method="correlation").get_vectors()[0]).max()
    return f"correlation RDM {n} x {units} units, GPU", ours, ref, f"max |diff| {err:.1e}"


def case_compare(n: int, k: int, repeats: int) -> Row:
    from rsatoolbox.rdm import RDMs, compare

    rng = np.random.default_rng(1)
    p = n * (n - 1) // 2
    base = rng.random(p)
    a, b = base + rng.random((k, p)), base + rng.random((k, p))
    ours = best_of(lambda: rsa.compare_rdms(a, b, method="spearman"), repeats)
    ref = best_of(lambda: compare(RDMs(a), RDMs(b), "spearman"), 1)
    err = np.abs(rsa.compare_rdms(a, b, method="spearman").values - compare(RDMs(a), RDMs(b), "spearman")).max()
    return f"spearman compare {k} x {k} RDMs, {n} stimuli", ours, ref, f"max |diff| {err:.1e}"


def case_bootstrap(n_boot: int, n_ref: int) -> Row:
    from rsatoolbox.inference import eval_bootstrap_pattern
    from rsatoolbox.model import ModelFixed
    from rsatoolbox.rdm import RDMs

    brain = datasets.load_92images_brain_rdms()
    models = datasets.load_92images_reference_rdms().isel(rdm=slice(2, 10))
    box: dict[str, object] = {}

    def ours_fn() -> None:
        box["ours"] = rsa.bootstrap_rdm_comparison(models, brain, method="spearman", n_bootstrap=n_boot,
                                                   seed=0, progress=False)

    ours = best_of(ours_fn, 1)
    fixed = [ModelFixed(str(name), RDMs(models.values[i][None]))
             for i, name in enumerate(models.rdm.values)]

    def ref_fn() -> None:
        np.random.seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            box["ref"] = eval_bootstrap_pattern(fixed, RDMs(brain.values), method="spearman", N=n_ref)

    wall, cpu = best_of(ref_fn, 1)
    ref = (wall * n_boot / n_ref, cpu * n_boot / n_ref)
    evaluations = box["ref"].evaluations
    ok = np.isfinite(evaluations[:, 0])
    diff = np.abs(box["ours"]["mean"].values - evaluations[ok].mean(0)).max()
    star = f" (*rsatoolbox {n_ref} samples, scaled)" if n_ref < n_boot else ""
    return (f"bootstrap {n_boot} + noise ceiling, 92 stim, 8 x 8 RDMs{star}",
            ours, ref, f"max |mean diff| {diff:.3f}")


def case_tau_bootstrap(n_boot: int, n_ref: int) -> list[Row]:
    """tau-a bootstrap of 10 RDMs (the 92-image reference set, with categorical ties)
    vs the 4 subjects' human IT RDMs: over stimuli against rsatoolbox, and over
    stimuli and subjects (no rsatoolbox counterpart: its dual bootstrap cross-validates)."""
    from rsatoolbox.inference import eval_bootstrap_pattern
    from rsatoolbox.model import ModelFixed
    from rsatoolbox.rdm import RDMs

    brain = datasets.load_92images_brain_rdms().groupby("subject").mean()
    models = datasets.load_92images_reference_rdms()
    box: dict[str, object] = {}

    def ours_fn(over: str) -> Callable[[], None]:
        def run() -> None:
            box[over] = rsa.bootstrap_rdm_comparison(models, brain, method="tau_a", n_bootstrap=n_boot,
                                                     over=over, seed=0, progress=False)
        return run

    ours = best_of(ours_fn("stimuli"), 1)
    both = best_of(ours_fn("both"), 1)
    fixed = [ModelFixed(str(name), RDMs(models.values[i][None]))
             for i, name in enumerate(models.rdm.values)]

    def ref_fn() -> None:
        np.random.seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            box["ref"] = eval_bootstrap_pattern(fixed, RDMs(brain.values), method="tau-a", N=n_ref)

    wall, cpu = best_of(ref_fn, 1)
    ref = (wall * n_boot / n_ref, cpu * n_boot / n_ref)
    evaluations = box["ref"].evaluations
    ok = np.isfinite(evaluations[:, 0])
    diff = np.abs(box["stimuli"]["mean"].values - evaluations[ok].mean(0)).max()
    star = f" (*rsatoolbox {n_ref} samples, scaled)" if n_ref < n_boot else ""
    return [(f"tau-a bootstrap {n_boot} + noise ceiling, 92 stim, 10 x 4 RDMs{star}", ours, ref,
             f"max |mean diff| {diff:.3f}"),
            (f"tau-a bootstrap {n_boot} over stimuli+subjects + noise ceiling, 10 x 4 RDMs", both, None,
             "no rsatoolbox counterpart")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--reference-samples", type=int, default=None,
                        help="bootstrap samples run by rsatoolbox (default: all)")
    parser.add_argument("--tau-reference-samples", type=int, default=50,
                        help="tau-a bootstrap samples run by rsatoolbox (scaled; default 50)")
    args = parser.parse_args(argv)
    policy = apply_thread_policy()  # neurocnn's thread policy: the CPUs available to the process
    if args.quick:
        big, units, cmp_n, cmp_k, n_boot = 300, 5_000, 300, 4, 100
    else:
        big, units, cmp_n, cmp_k, n_boot = 1000, 50_000, 1000, 8, 1000
    n_ref = min(n_boot, args.reference_samples or n_boot)
    rows = [
        case_rdm(big, units, 3),
        case_rdm(92, units, 5),
        case_compare(cmp_n, cmp_k, 3),
        case_bootstrap(n_boot, n_ref),
        *case_tau_bootstrap(n_boot, min(n_ref, args.tau_reference_samples)),
    ]
    gpu = case_rdm_gpu(big, units, 3)
    rows += [gpu] if gpu is not None else []
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'neurocnn wall/cpu s':>19}  {'rsatoolbox wall/cpu s':>21}"
          f"  {'speed-up wall/cpu':>17}  check")
    for name, ours, ref, check in rows:
        ref_s = f"{ref[0]:>10.3f}/{ref[1]:<10.3f}" if ref else f"{'-':>10} {'':<10}"
        ratio = f"{ref[0] / ours[0]:.1f}x/{ref[1] / ours[1]:.1f}x" if ref else "-"
        print(f"{name:<{width}}  {ours[0]:>9.3f}/{ours[1]:<9.3f}  {ref_s}  {ratio:>17}  {check}")
    if gpu is None:
        print("(no CUDA device: GPU rows skipped)")
    print(f"({os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads: {policy['thread_policy']})")


if __name__ == "__main__":
    main()
