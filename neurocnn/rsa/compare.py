"""Compare stacks of RDMs many-vs-many, as ``rsatoolbox.rdm.compare`` does."""

from __future__ import annotations

from typing import Any

import xarray as xr

from .._validation import check_option
from ._kernels import COMPARE_METHODS, CompareMethod, _compare_batched
from ._stack import _align, _as_stack, _Stack


# --------------------------------------------------------------------- compare_rdms
def _result_dims(a: _Stack, b: _Stack) -> tuple[str, str]:
    da = a.dim or "_single_a"  # dims of single RDMs are dropped from the result
    db = b.dim or "_single_b"
    if db == da:
        db = f"{db}2"
    return da, db


def compare_rdms(
    a: Any,
    b: Any,
    *,
    method: CompareMethod = "spearman",
) -> xr.DataArray:
    """Compare RDMs many-vs-many, numerically as ``rsatoolbox.rdm.compare``.

    Parameters
    ----------
    a, b : xr.DataArray, ndarray, rsatoolbox.rdm.RDMs or dict of layer RDMs
        One RDM or a stack. DataArrays: square with dims ``stimulus, stimulus2`` and
        any leading stack dims (several are flattened to one ``rdm`` dim with one coord
        per original dim), or condensed vectors along the last dim. Arrays: ``(n, n)``,
        ``(k, n, n)``, condensed ``(P,)`` or ``(k, P)`` in ``squareform`` order (a 2-D
        square array is always read as one RDM).
    method : {"spearman", "tau_a", "rho_a", "pearson", "corr", "cosine", "corr_cov", \
"cosine_cov"}
        ``pearson`` and ``corr`` are the same; ``*_cov`` are the whitened variants
        (rsatoolbox ``corr_cov``/``cosine_cov`` with ``sigma_k=None``); ``tau_a`` is
        Kendall's tau-a (rsatoolbox ``tau-a``), ``rho_a`` rsatoolbox ``rho-a``.

    Returns
    -------
    xr.DataArray
        Dims (a's stack dim, b's stack dim); a dim is left out where its input was a
        single RDM (so single vs single is 0-d). Equal names get ``2`` appended to b's.

    Raises
    ------
    ShapeMismatchError
        Different numbers of stimuli or different stimulus ids (the message lists them);
        the same ids in another order are reordered to a's order.
    InvalidDataError
        NaN/inf or non-symmetric matrices.
    UnknownNameError
        Unknown method.

    Examples
    --------
    >>> x = np.random.default_rng(0).random(10)
    >>> round(float(compare_rdms(x, x, method="spearman")), 6)
    1.0
    """
    check_option("method", method, COMPARE_METHODS)
    sa, sb = _as_stack(a, "a"), _as_stack(b, "b")
    vb = _align(sa, sb)
    sim = _compare_batched(sa.vectors[None], vb[None], method)[0]
    da, db = _result_dims(sa, sb)
    coords: dict[str, Any] = {}
    for st, d in ((sa, da), (sb, db)):
        for name, values in st.coords.items():
            coords[name if d == st.dim else f"{name}2"] = (d, values)
    out = xr.DataArray(sim, dims=(da, db), coords=coords, attrs={"method": method})
    squeeze = [d for st, d in ((sa, da), (sb, db)) if st.dim is None]
    return out.isel({d: 0 for d in squeeze}, drop=True) if squeeze else out


