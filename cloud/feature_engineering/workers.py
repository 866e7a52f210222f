"""Worker processes for a fleet's features.

A rebuild is mostly work that holds the GIL (sqlite3 building a Python float for every value
it reads, pandas' per-call overhead), so a second thread cannot use a second core. A worker
process can: each opens its own connection to the store, reads and computes whole sites and
hands their rows back, while the job's own process writes them.

Workers are forked, not spawned: a spawned worker first imports pandas and the simulators
again, about 2 s of CPU each, more than it saves on a small machine. The job makes its pool
before it starts any thread of its own, and only for fleets large enough to repay it.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from cloud.store.base import CloudStore

#: Below this many sites starting workers and sending rows back cost more than they save
#: (measured on 2 cores: 2 sites x 30 days ran faster in one process, 4 sites already not).
PROCESS_MIN_SITES = 4
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
                               initializer=_open, initargs=(opener, os.getpid()))


def _open(opener: Callable[[], CloudStore], job_pid: int) -> None:
    global _store
    # SIGTERM ends a worker where it stands, as it ends any process by default: the handler
    # forked from the job would raise inside the pool's task loop, which catches the error as
    # a task's result and waits on for more, for ever once the job is gone.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _end_with(job_pid)
    _store = opener()


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _end_with(job_pid: int) -> None:
    """Have the kernel end this worker when the job's process ends, however it ends. A job
    stopped by SIGTERM runs no clean-up, and its workers, waiting on a task queue whose other
    end they hold themselves, would otherwise wait forever. Linux only; elsewhere the pool's
    own shutdown is all there is."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != job_pid:  # the job ended before the line above
        os._exit(1)


def store() -> CloudStore:
    """The store of the worker process this runs in."""
    if _store is None:
        raise RuntimeError("not in a feature worker process")
    return _store
