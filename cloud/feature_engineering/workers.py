"""Worker processes for a fleet's features (issue 5).

A rebuild is mostly work that holds the GIL (sqlite3 building a Python float for every value
it reads, pandas' per-call overhead), so a second thread cannot use a second core. A worker
process can: each opens its own connection to the store, reads and computes whole sites and
hands their rows back, while the job's own process writes them.

Workers are forked, not spawned: a spawned worker first imports pandas and the simulators
again, about 2 s of CPU each, more than it saves on a small machine. The job makes its pool
before it starts any thread of its own, and only for fleets large enough to repay it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from cloud.store.base import CloudStore

#: Below this many sites the workers' start and the rows' trip back cost more than they save.
PROCESS_MIN_SITES = 8
#: One process writes every row; past this many workers it is the limit, not the maths.
MAX_WORKERS = 4

_store: CloudStore | None = None  # this worker's own connection


def worker_count(sites: int) -> int:
    """Worker processes for a job over ``sites`` sites; 0 means computing in the job's own
    process (small jobs, one core, or a platform without ``fork``)."""
    if sites < PROCESS_MIN_SITES or "fork" not in multiprocessing.get_all_start_methods():
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, MAX_WORKERS) if cores > 1 else 0


def pool(opener: Callable[[], CloudStore], workers: int) -> ProcessPoolExecutor:
    """``workers`` forked processes, each with its own store from ``opener``. Fork starts them
    all at once, on the first task."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_open, initargs=(opener,))


def _open(opener: Callable[[], CloudStore]) -> None:
    global _store
    _store = opener()


def store() -> CloudStore:
    """The store of the worker process this runs in."""
    if _store is None:
        raise RuntimeError("not in a feature worker process")
    return _store
