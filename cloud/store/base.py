"""The cloud-store interface. Cloud jobs (sync, features, forecasting, optimizer, dashboard)
depend on this Protocol only; :mod:`cloud.store.factory` picks the adapter once.

Frames follow the table definitions of :mod:`cloud.store.schema`: readings are flat
``der_data`` frames (``ts`` tz-aware UTC), other tables use the columns listed there.
Every write is an idempotent upsert on the table's primary key, so repeating a write never
duplicates a row; the one removal (:meth:`CloudStore.delete_rows`) is asked for by its owner
by name (``run_cloud_sync.py --forget``), never by a job. Adapters raise
:class:`~der_core.errors.StoreUnavailable` when the server cannot be reached (worth
retrying) and :class:`~der_core.errors.StoreError` otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import pandas as pd


@runtime_checkable
class CloudStore(Protocol):
    #: A short description for logs and ``--status`` (no credentials).
    label: str

    def init_schema(self) -> None:
        """Create the tables if they are missing (adapters that cannot, check they exist)."""
        ...

    # readings ---------------------------------------------------------------------------
    def upsert_readings(self, frame: pd.DataFrame, fields: Sequence[str] | None = None) -> int:
        """Insert or update readings on ``(device_id, ts)``; return the rows sent. With
        ``fields``, a reading already stored has only those fields replaced and keeps the
        others: a meter file of PV does not erase the load another file brought."""
        ...

    def read_readings(
        self,
        device_id: str | None = None,
        start: pd.Timestamp | None = None,
        stop: pd.Timestamp | None = None,
        limit: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Readings with ``start <= ts < stop`` ordered by ``(device_id, ts)``;
        ``device_id=None`` means every device. Never truncated unless ``limit`` says so.
        ``columns`` limits the measurement columns returned (``device_id`` and ``ts`` always
        come, see ``schema.reading_columns``); ``None`` means all of them."""
        ...

    def count_readings(
        self, device_id: str | None = None, start: pd.Timestamp | None = None, stop: pd.Timestamp | None = None
    ) -> int:
        ...

    def reading_stats(self) -> dict[str, dict[str, Any]]:
        """Per device: ``{"first_ts", "last_ts", "row_count"}`` of its stored readings."""
        ...

    # sites ------------------------------------------------------------------------------
    def upsert_sites(self, sites: list[Mapping[str, Any]]) -> int:
        """Insert or update site descriptions (keys of ``der_data.SITE_FIELDS``)."""
        ...

    def sites(self) -> list[dict[str, Any]]:
        ...

    # sync bookkeeping -------------------------------------------------------------------
    def watermarks(self, source: str) -> dict[str, pd.Timestamp]:
        """Per device, the newest ``ts`` the cloud confirmed for ``source``."""
        ...

    def set_watermark(self, source: str, device_id: str, ts: pd.Timestamp, rows_synced: int) -> None:
        """Record ``ts`` as confirmed and add ``rows_synced`` to the device's running total."""
        ...

    def quarantine(self, frame: pd.DataFrame, reasons: pd.Series, source: str) -> int:
        """Keep rows that failed validation, each with its reason, without blocking the others."""
        ...

    def read_quarantine(self, device_id: str | None = None) -> pd.DataFrame:
        ...

    def release_quarantine(self, source: str, device_id: str, times: Sequence[pd.Timestamp]) -> int:
        """Remove ``source``'s quarantined rows of ``device_id`` at ``times``: the instants the
        same source has since delivered as good readings (a file imported again with its units
        corrected). Return how many went."""
        ...

    # pipeline runs (every job's --status) -----------------------------------------------
    def start_run(self, job: str, details: Mapping[str, Any] | None = None) -> int:
        """Open a ``pipeline_runs`` row with status ``running``; return its id."""
        ...

    def finish_run(self, run_id: int, status: str, rows: int = 0, error: str | None = None) -> None:
        ...

    def runs(self, job: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Newest first; ``job=None`` for every job."""
        ...

    def last_run(self, job: str) -> dict[str, Any] | None:
        ...

    # any table of cloud.store.schema ----------------------------------------------------
    def upsert_frame(self, table: str, frame: pd.DataFrame, update: Sequence[str] | None = None) -> int:
        """Insert or update rows of ``table`` on its primary key; return the rows sent. With
        ``update``, a row already stored has only those columns replaced."""
        ...

    def read_frame(
        self,
        table: str,
        equals: Mapping[str, Any] | None = None,
        start: pd.Timestamp | None = None,
        stop: pd.Timestamp | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Rows with every ``column == value`` of ``equals`` and ``start <= ts < stop`` (when
        the table has ``ts``), ordered by the primary key, typed as in ``schema.coerce``."""
        ...

    def newest(self, table: str, column: str, equals: Mapping[str, Any] | None = None,
               start: pd.Timestamp | None = None) -> pd.Timestamp | None:
        """The latest value of the time ``column`` among the rows :meth:`read_frame` would
        return for ``equals`` and ``start``; None without one. A reader of the newest issue
        of plans or forecasts asks for it first, rather than read every issue kept."""
        ...

    def count_rows(self, table: str, equals: Mapping[str, Any] | None = None) -> int:
        """How many rows :meth:`read_frame` would return for ``equals``, without reading them."""
        ...

    def delete_rows(self, table: str, equals: Mapping[str, Any]) -> int:
        """Remove the rows with every ``column == value`` of ``equals`` (at least one: a
        table is never emptied by an empty filter); return how many went."""
        ...

    def close(self) -> None:
        ...
