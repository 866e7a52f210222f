"""Continuous modes on APScheduler 3.x: one job, no overlap, coalesced misfires, and a clean
stop on SIGINT/SIGTERM (DESIGN.md, "Jobs"). Every ``--continuous`` in the project runs here.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from der_core.errors import UsageError

log = logging.getLogger(__name__)

#: The longest interval a job may repeat at: a year. Longer is no schedule a job keeps, and
#: beyond what a timer holds it would fail as the scheduler starts.
MOST_INTERVAL_S = 366 * 24 * 3600.0


@dataclass(frozen=True)
class Every:
    """A job for :func:`run_schedule`: call ``func`` every ``interval_s`` seconds."""

    name: str
    func: Callable[[], object]
    interval_s: float
    aligned: bool = False  # start on a clock boundary (e.g. :00, :05, ... for 300 s)
    run_now: bool = True  # first run immediately rather than after one interval

    def __post_init__(self) -> None:
        if not 0 < self.interval_s <= MOST_INTERVAL_S:
            raise UsageError(f"{self.name} every {self.interval_s:g} s: expected a positive interval of at most "
                             f"{MOST_INTERVAL_S:,.0f} s (a year)")


def next_boundary(now: datetime, interval_s: float) -> datetime:
    """The first instant after ``now`` that is a whole multiple of ``interval_s`` since the epoch."""
    epoch = now.timestamp()
    step = float(interval_s)
    return datetime.fromtimestamp((epoch // step + 1) * step, tz=timezone.utc)


def _safe(job: Every) -> Callable[[], None]:
    def call() -> None:
        try:
            job.func()
        except Exception as error:  # a failed run is logged and recorded; the schedule goes on
            log.error("%s run failed: %s", job.name, error, exc_info=log.isEnabledFor(logging.DEBUG))

    return call


def run_schedule(jobs: list[Every], stop: threading.Event | None = None, on_stop: Callable[[], None] | None = None) -> None:
    """Run jobs until SIGINT/SIGTERM (or ``stop`` is set), then call ``on_stop`` once.

    The scheduler runs in the background while this thread waits on an event that the
    signal handlers set, so a signal at any moment (even before the scheduler has started)
    stops cleanly, after the run in progress finishes.
    """
    stop = stop or threading.Event()
    scheduler = BackgroundScheduler(timezone=timezone.utc)
    now = datetime.now(timezone.utc)
    for job in jobs:
        if job.aligned:
            start = next_boundary(now, job.interval_s)
        elif job.run_now:
            start = now
        else:
            start = now + timedelta(seconds=job.interval_s)
        scheduler.add_job(
            _safe(job),
            IntervalTrigger(seconds=job.interval_s, start_date=start, timezone=timezone.utc),
            id=job.name,
            name=job.name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(job.interval_s)),
            next_run_time=start,
        )

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s, stopping after the current run", signal.Signals(signum).name)
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, request_stop)
    try:
        log.info("scheduled: %s", ", ".join(f"{j.name} every {j.interval_s:g}s" for j in jobs))
        if not stop.is_set():
            scheduler.start()
            while not stop.wait(0.5):  # a timed wait keeps the main thread responsive to signals
                pass
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if on_stop is not None:
            on_stop()
