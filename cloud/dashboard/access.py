"""How request threads reach the cloud store, and the sites' coverage kept in memory.

FastAPI runs each plain ``def`` route on a worker thread. A store that can open itself again
(``opener()``: the SQLite and Postgres adapters) lends each request a store of its own from a
pool of idle ones, so one slow read never queues the others behind a lock; any other store is
shared by all threads under one lock. The pool is keyed by use, not by thread: the server's
thread pool retires threads that sat idle (anyio after 10 s) and starts new ones, so a store
per thread would leave a connection behind with every retired thread until the database
refused new ones. Pooled, the stores opened never exceed the most requests served at once.

Every site's reading coverage (first and last reading, count) is a GROUP BY over all of
``der_readings``: far too slow to run per request. :class:`Coverage` keeps the result of
:func:`queries.list_sites` in memory and refreshes it in the background. Freshness bound: a
request is answered from a snapshot at most ``max_age_s`` old plus one refresh's duration
while requests keep coming (an older one starts a refresh and is still served meanwhile), and
never from one older than ``stale_limit_s`` (that request waits for the refresh). Readings,
forecasts and plans themselves are always read live; only the coverage figures, and the
default end of a reading window (just after the newest reading), follow the snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cloud.dashboard import queries as q
from cloud.store.base import CloudStore
from der_core.errors import StoreError

log = logging.getLogger(__name__)

#: Coverage snapshots younger than this are served as they are.
COVERAGE_MAX_AGE_S = 5.0
#: No request is served a snapshot older than this; past it the request waits for a refresh.
COVERAGE_STALE_LIMIT_S = 60.0


class StoreAccess:
    """A pooled store per request when the store can open itself again, else the one store
    under a lock. Use as ``with access() as store:``."""

    def __init__(self, store: CloudStore) -> None:
        self.store = store
        opener = getattr(store, "opener", None)
        self._open: Callable[[], CloudStore] | None = opener() if callable(opener) else None
        self._lock = threading.Lock()
        self._opened: list[CloudStore] = []
        self._idle: list[CloudStore] = []  # last in, first out: the warmest connection is reused

    @contextmanager
    def __call__(self) -> Iterator[CloudStore]:
        if self._open is None:
            with self._lock:
                yield self.store
            return
        with self._lock:
            store = self._idle.pop() if self._idle else None
        if store is None:
            store = self._own()
        try:
            yield store
        finally:
            with self._lock:
                if store in self._opened:  # not closed by close() meanwhile
                    self._idle.append(store)

    def private(self) -> Callable[[], Any]:
        """A context manager factory for a caller that serialises its own use (the coverage
        refresher, whose thread changes from refresh to refresh): one store of its own."""
        if self._open is None:
            return self.__call__
        own: list[CloudStore] = []

        @contextmanager
        def use() -> Iterator[CloudStore]:
            if not own:
                own.append(self._own())
            yield own[0]

        return use

    def _own(self) -> CloudStore:
        store = self._open()  # type: ignore[misc]
        with self._lock:
            self._opened.append(store)
        return store

    def close(self) -> None:
        with self._lock:
            opened, self._opened, self._idle = self._opened, [], []
        for store in opened:
            store.close()


@dataclass(frozen=True)
class _Snapshot:
    sites: list[dict[str, Any]]
    taken: float
    by_device: dict[str, dict[str, Any]]


class Coverage:
    """:func:`queries.list_sites`, kept in memory within the bound the module states."""

    def __init__(self, access: StoreAccess, *, max_age_s: float = COVERAGE_MAX_AGE_S,
                 stale_limit_s: float = COVERAGE_STALE_LIMIT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._use = access.private()
        self.max_age_s, self.stale_limit_s = max_age_s, max(stale_limit_s, max_age_s)
        self._clock = clock
        self._snapshot: _Snapshot | None = None
        self._refreshing = threading.Lock()  # one refresh at a time; its holder owns the private store

    def sites(self) -> list[dict[str, Any]]:
        return self._current().sites

    def site(self, device_id: str) -> dict[str, Any]:
        try:
            return self._current().by_device[device_id]
        except KeyError:
            raise q.UnknownSite(device_id) from None

    def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        age = None if snapshot is None else self._clock() - snapshot.taken
        if age is None or age > self.stale_limit_s:
            return self._refresh_and_wait(snapshot)
        if age > self.max_age_s and self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh_in_background, name="dashboard-coverage", daemon=True).start()
        return snapshot  # type: ignore[return-value]

    def _refresh_and_wait(self, seen: _Snapshot | None) -> _Snapshot:
        with self._refreshing:
            if self._snapshot is not seen and self._snapshot is not None:
                return self._snapshot  # another request refreshed it while this one waited
            return self._refresh()

    def _refresh_in_background(self) -> None:
        try:
            self._refresh()
        except StoreError as error:  # the last snapshot stays; the next request tries again
            log.warning("dashboard: refreshing site coverage failed: %s", error)
        finally:
            self._refreshing.release()

    def _refresh(self) -> _Snapshot:
        taken = self._clock()  # before the read: the age counts from what the read can see
        with self._use() as store:
            sites = q.list_sites(store)
        self._snapshot = _Snapshot(sites, taken, {site["device_id"]: site for site in sites})
        return self._snapshot
