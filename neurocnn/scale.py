"""Scale-out on dask: one way to get a client and to map work over it.

Any function that takes ``client=`` accepts a ``distributed.Client``, a scheduler
address (``"tcp://host:8786"``, e.g. from a dask-jobqueue ``SLURMCluster``), or
``"local"`` for a new ``LocalCluster`` on this machine (closed afterwards). Work is
split into independent tasks; results stream back as they finish, so the driver
never waits for (or holds) everything at once.

Example, on a SLURM cluster::

    from dask_jobqueue import SLURMCluster
    from distributed import Client

    cluster = SLURMCluster(cores=8, memory="32GB", walltime="02:00:00")
    cluster.scale(jobs=10)
    subject.activations(stimuli, layers, store="acts.zarr", client=Client(cluster))
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tqdm.auto import tqdm

__all__ = ["get_client", "map_tasks"]


@contextlib.contextmanager
def get_client(client: Any) -> Iterator[Any]:
    """Yield a ``distributed.Client`` for ``client``; close it afterwards if created here.

    Parameters
    ----------
    client : distributed.Client, str
        A client (used as is, left open), a scheduler address, or ``"local"`` for a
        ``LocalCluster`` with one single-threaded worker process per core (up to 4).
    """
    from distributed import Client, LocalCluster

    if isinstance(client, str) and client == "local":
        cluster = LocalCluster(
            n_workers=max(1, min(4, os.cpu_count() or 1)), threads_per_worker=1,
            processes=True, dashboard_address=None,
        )
        owned = Client(cluster)
    elif isinstance(client, str):
        cluster, owned = None, Client(client)
    else:
        yield client
        return
    try:
        yield owned
    finally:
        owned.close()
        if cluster is not None:
            cluster.close()


def map_tasks(
    func: Callable[..., Any],
    shared: Any,
    tasks: Sequence[Any],
    client: Any,
    *,
    progress: bool = True,
    desc: str = "tasks",
) -> Iterator[tuple[int, Any]]:
    """Run ``func(shared, task)`` for every task, yielding ``(index, result)`` as they finish.

    ``shared`` (e.g. a model or a searchlight job) is sent to every worker once. With
    ``client=None`` the tasks run here, in order.
    """
    if client is None:
        for i, task in enumerate(tqdm(tasks, desc=desc, disable=not progress, leave=False)):
            yield i, func(shared, task)
        return
    from distributed import as_completed

    with get_client(client) as cl:
        shared_future = cl.scatter(shared, broadcast=True)
        futures = [cl.submit(func, shared_future, task, pure=False) for task in tasks]
        index = {f.key: i for i, f in enumerate(futures)}
        for fut in tqdm(as_completed(futures), total=len(futures), desc=desc, disable=not progress, leave=False):
            yield index[fut.key], fut.result()
            fut.release()
