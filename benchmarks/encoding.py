"""Benchmark neurocnn.encoding against scikit-learn and against calling himalaya directly.

Encoding: n stimuli x p features (float32) -> T targets, 5 outer folds (the same
folds for every method), 10 penalties chosen per target:

- neurocnn ``fit_encoding`` (himalaya kernel ridge on the layer's kernel, built once;
  5 inner folds; predictions, r, R^2 per target);
- himalaya directly: ``KernelRidgeCV(kernel="linear", fit_intercept=True)`` fitted per
  outer fold on the raw features with the same inner folds (what a himalaya user writes),
  then r and R^2 from the pooled predictions -- neurocnn's overhead over it;
- scikit-learn ``RidgeCV(alphas, alpha_per_target=True)`` per outer fold (its efficient
  leave-one-out inner CV), then r and R^2 the same way.

CKA: 10 layers x n stimuli, layer x layer matrix (linear, biased and debiased):
``cka_matrix`` vs a plain numpy implementation that builds both grams for every pair
(Kornblith et al.'s reference code style).

Reports best wall and CPU time of several repeats, the speed-up, peak traced memory
(numpy allocations, tracemalloc; one extra run per method) and the agreement of the
results. Usage::

    python benchmarks/encoding.py           # 1000 x 20,000 -> 5,000 targets; CKA 10 x 1000
    python benchmarks/encoding.py --quick   # small sizes, seconds
    python benchmarks/encoding.py --backend torch_cuda --no-sklearn   # the GPU path
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from neurocnn import encoding

Timing = tuple[float, float]
SIZES = {
    "full": {"n": 1000, "p": 20000, "t": 5000, "layers": 10, "layer_p": 2000, "repeats": 3, "ref_repeats": 2},
    "quick": {"n": 200, "p": 2000, "t": 500, "layers": 5, "layer_p": 500, "repeats": 2, "ref_repeats": 1},
}
ALPHAS = np.logspace(-1, 6, 10)


def best_of(fn: Callable[[], object], repeats: int) -> Timing:
    """Best wall and CPU (process, all threads) time of ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return min(t[0] for t in times), min(t[1] for t in times)


def peak_mib(fn: Callable[[], object]) -> float:
    """Peak traced allocation (MiB) of one run of ``fn`` (numpy reports to tracemalloc)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def make_data(n: int, p: int, t: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p), dtype=np.float32)
    low = (X @ rng.standard_normal((p, 20), dtype=np.float32)) / np.sqrt(p)
    Y = low.astype(np.float64) @ rng.standard_normal((20, t)) + 2.0 * rng.standard_normal((n, t))
    return X, Y


def _scores(Y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return encoding.pooled_scores(Y, pred)


BACKEND = {"name": "numpy"}


def run_neurocnn(X, Y, splits_seed: int):
    return encoding.fit_encoding(X, Y, alphas=ALPHAS, n_folds=5, n_inner_folds=5, seed=splits_seed,
                                 backend=BACKEND["name"], progress=False)


def run_himalaya(X, Y, splits):
    from himalaya.backend import get_backend, set_backend
    from himalaya.kernel_ridge import KernelRidgeCV

    previous = get_backend().name
    B = set_backend(BACKEND["name"])
    try:
        pred = np.zeros_like(Y)
        for train, test, inner in splits:
            model = KernelRidgeCV(alphas=ALPHAS, kernel="linear", fit_intercept=True, cv=inner)
            model.fit(B.asarray(X[train].astype(np.float64)), B.asarray(Y[train]))
            pred[test] = B.to_numpy(model.predict(B.asarray(X[test].astype(np.float64))))
    finally:
        set_backend(previous)
    return _scores(Y, pred)


def run_sklearn(X, Y, splits):
    from sklearn.linear_model import RidgeCV

    pred = np.zeros_like(Y)
    for train, test, _ in splits:
        model = RidgeCV(alphas=ALPHAS, alpha_per_target=True, fit_intercept=True)
        model.fit(X[train].astype(np.float64), Y[train])
        pred[test] = model.predict(X[test].astype(np.float64))
    return _scores(Y, pred)


def numpy_cka(x: np.ndarray, y: np.ndarray, debiased: bool) -> float:
    """Plain numpy linear CKA from two feature matrices (Kornblith et al. 2019 reference style)."""
    def gram(a):
        return a @ a.T

    def center(g):
        if not debiased:
            means = g.mean(0)
            return g - means[None, :] - means[:, None] + means.mean()
        n = g.shape[0]
        g = g.copy()
        np.fill_diagonal(g, 0)
        means = g.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        g -= means[None, :] + means[:, None]
        np.fill_diagonal(g, 0)
        return g

    gx, gy = center(gram(x.astype(np.float64))), center(gram(y.astype(np.float64)))
    return float((gx * gy).sum() / (np.linalg.norm(gx) * np.linalg.norm(gy)))


def run_numpy_cka(layers: dict, debiased: bool) -> np.ndarray:
    names = list(layers)
    return np.array([[numpy_cka(layers[a], layers[b], debiased) for b in names] for a in names])


def _row(name: str, ours: Timing, ref: Timing, ours_mem: float, ref_mem: float, note: str) -> str:
    return (f"{name:44s} {ours[0]:8.2f} {ours[1]:8.2f} {ref[0]:9.2f} {ref[1]:8.2f} {ref[0] / ours[0]:7.2f}x "
            f"{ref[1] / ours[1]:6.2f}x {ours_mem:8.0f} {ref_mem:8.0f}  {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--no-sklearn", action="store_true", help="skip the (slow) scikit-learn reference")
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads for every method (default: all)")
    parser.add_argument("--backend", default="numpy", help="himalaya backend of neurocnn and himalaya: numpy, torch, torch_cuda")
    args = parser.parse_args(argv)
    BACKEND["name"] = args.backend
    if args.threads is not None:
        import himalaya.kernel_ridge  # noqa: F401  (load every BLAS first: limits apply to loaded ones)
        import scipy.linalg  # noqa: F401
        import sklearn.linear_model  # noqa: F401
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    size = SIZES["quick" if args.quick else "full"]
    n, p, t = size["n"], size["p"], size["t"]
    X, Y = make_data(n, p, t)
    splits = encoding.encoding_splits(n, n_folds=5, n_inner_folds=5, seed=0)
    print(f"encoding: {n} stimuli x {p} features -> {t} targets, 5 outer x 5 inner folds, {len(ALPHAS)} alphas, "
          f"backend {args.backend}, threads {args.threads or 'all'}")
    print(f"{'case':44s} {'ours s':>8s} {'CPU s':>8s} {'ref s':>9s} {'CPU s':>8s} {'speedup':>8s} {'CPU':>7s}"
          f" {'MiB':>8s} {'ref MiB':>8s}")

    result = run_neurocnn(X, Y, 0)
    ours = best_of(lambda: run_neurocnn(X, Y, 0), size["repeats"])
    ours_mem = peak_mib(lambda: run_neurocnn(X, Y, 0))
    _, r2_h = run_himalaya(X, Y, splits)
    ref = best_of(lambda: run_himalaya(X, Y, splits), size["repeats"])
    ref_mem = peak_mib(lambda: run_himalaya(X, Y, splits))
    diff = np.abs(result.r2.values[0] - r2_h).max()
    overhead = 100 * (ours[0] / ref[0] - 1)
    print(_row("vs himalaya KernelRidgeCV per fold", ours, ref, ours_mem, ref_mem,
               f"overhead {overhead:+.0f}% (goal <= +20%), max |R2 diff| {diff:.1e}"))
    if not args.no_sklearn:
        _, r2_s = run_sklearn(X, Y, splits)
        ref = best_of(lambda: run_sklearn(X, Y, splits), size["ref_repeats"])
        ref_mem = peak_mib(lambda: run_sklearn(X, Y, splits))
        diff = np.abs(result.r2.values[0] - r2_s)
        print(_row("vs sklearn RidgeCV(alpha_per_target) per fold", ours, ref, ours_mem, ref_mem,
                   f"goal >= 3x; R2 diff (5-fold vs LOO inner CV) median {np.median(diff):.1e}, max {diff.max():.1e}"))

    rng = np.random.default_rng(1)
    base = rng.standard_normal((n, size["layer_p"]), dtype=np.float32)
    layers = {f"layer{i}": base * (i + 1) ** -0.5 + rng.standard_normal((n, size["layer_p"]), dtype=np.float32)
              for i in range(size["layers"])}
    print(f"CKA: {size['layers']} layers x {n} stimuli x {size['layer_p']} features, layer x layer")
    for debiased in (False, True):
        ours_cka = encoding.cka_matrix(layers, debiased=debiased, progress=False).values
        def ours_fn(d=debiased):
            return encoding.cka_matrix(layers, debiased=d, progress=False)

        def ref_fn(d=debiased):
            return run_numpy_cka(layers, d)

        ours, ours_mem = best_of(ours_fn, size["repeats"]), peak_mib(ours_fn)
        ref, ref_mem = best_of(ref_fn, size["ref_repeats"]), peak_mib(ref_fn)
        diff = np.abs(ours_cka - run_numpy_cka(layers, debiased)).max()
        print(_row(f"cka_matrix linear {'debiased' if debiased else 'biased'} vs numpy", ours, ref, ours_mem, ref_mem,
                   f"max |diff| {diff:.1e}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
