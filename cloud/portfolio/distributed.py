"""Partitions on ``dask.distributed`` (DESIGN.md, "Scale"): a LocalCluster by default, an
existing scheduler by address. No home-made queue or worker pool."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

from der_core.cli_support import progress
from der_core.errors import DERError

LOCAL_WORKERS = 2
DASK_LOGGERS = ("distributed", "dask")


class ClusterUnavailable(DERError):
    """The Dask scheduler could not be reached."""


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int = LOCAL_WORKERS, processes: bool = True) -> Iterator:
    """A client on ``scheduler`` (``tcp://host:8786``) or on a new LocalCluster of ``workers``
    single-threaded workers (the simulators are numpy and numba: one thread per core).

    Dask logs each start, registration and shutdown step at INFO (and a nanny that stops a
    worker at close says so): routine on every run, so its loggers speak from WARNING unless
    the root logger asks for DEBUG (``--verbose``)."""
    from dask.distributed import Client, LocalCluster

    _quiet_dask()

    if scheduler:
        with _connected(Client, scheduler) as client:
            yield client
        return
    # The scheduler serves HTTP (health, metrics) whatever the dashboard setting, by default on
    # port 8787, and warns when another cluster holds it: a free port on loopback says nothing.
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        yield client


#: How long a scheduler has to answer the client's first messages.
CONNECT_TIMEOUT_S = 10.0


@contextlib.contextmanager
def _connected(client_type, scheduler: str) -> Iterator:
    """A client on ``scheduler``, made on a thread of its own and waited for at most
    :data:`CONNECT_TIMEOUT_S` (and a little more): an address where something accepts the
    connection and never answers (another service's port, a scheduler stuck) held the
    client's own timeout past its limit, in its cleanup, and the run hung with nothing said.
    A client given up on is left to its daemon thread."""
    made: dict = {}
    done = threading.Event()

    def attempt() -> None:
        try:
            made["client"] = client_type(scheduler, timeout=f"{CONNECT_TIMEOUT_S:g}s")
        except BaseException as error:  # handed to the caller below
            made["error"] = error
        finally:
            done.set()

    threading.Thread(target=attempt, name="dask-connect", daemon=True).start()
    if not done.wait(CONNECT_TIMEOUT_S + 5.0):
        raise ClusterUnavailable(f"Dask scheduler {scheduler}: no answer within {CONNECT_TIMEOUT_S:g} s; expected a Dask "
                                 "scheduler's address (tcp://host:8786)")
    error = made.get("error")
    if isinstance(error, (OSError, TimeoutError)):
        raise ClusterUnavailable(f"Dask scheduler {scheduler}: cannot connect ({error})") from None
    if error is not None:
        raise error
    with made["client"] as client:
        yield client


def _quiet_dask() -> None:
    """Importing ``distributed`` sets its loggers to INFO from Dask's config; set them back."""
    level = logging.DEBUG if logging.getLogger().getEffectiveLevel() <= logging.DEBUG else logging.WARNING
    for name in DASK_LOGGERS:
        logging.getLogger(name).setLevel(level)


def dask_mapper(client, desc: str = "partitions") -> Callable[[Callable, list], list]:
    """A ``mapper`` for :func:`engine.run_portfolio`: one task per item, results in order,
    a progress bar while they finish."""
    from dask.distributed import as_completed

    def run(func: Callable, items: list) -> list:
        futures = [client.submit(func, item, pure=False) for item in items]
        for _ in progress(as_completed(futures), total=len(futures), desc=desc, unit="partition"):
            pass
        return client.gather(futures)

    return run


def worker_count(client) -> int:
    return max(1, len(client.scheduler_info().get("workers", {})))
