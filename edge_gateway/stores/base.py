"""The edge-store interface. Jobs depend on this Protocol, never on a vendor client.

A batch of readings is a flat :class:`pandas.DataFrame` (see ``der_core.der_data``).
Writes are idempotent on ``(device_id, ts)``: writing the same reading twice stores it once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import pandas as pd


def merge_ranges(ranges: Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Ranges ``(start, end)`` (``end`` None: open) sorted by start and merged where one starts
    at or before the end of the one before: the late-write notes of an edge store, and the
    spans a sync reads."""
    merged: list[list] = []
    for start, end in sorted(ranges, key=lambda span: span[0]):
        if merged and (merged[-1][1] is None or start <= merged[-1][1]):
            merged[-1][1] = None if merged[-1][1] is None or end is None else max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def store_source(kind: str, identity: str) -> str:
    """A store's sync name: its kind followed by its own identity (a file's made id, a
    bucket's id); the empty identity of a store from before stores had one keeps the bare
    kind, under which its watermarks were kept."""
    return f"{kind}:{identity}" if identity else kind


@runtime_checkable
class EdgeStore(Protocol):
    #: The name the cloud keeps this store's sync watermarks under: one per store, so each
    #: store's readings are sent whole whatever another store of the same device has sent.
    source: str

    def write(self, frame: pd.DataFrame) -> int:
        """Store every row of a flat reading frame; return the number of rows written."""
        ...

    def read_range(
        self,
        device_id: str | None,
        start: pd.Timestamp | None = None,
        stop: pd.Timestamp | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Readings with ``start <= ts < stop`` (either bound open when ``None``), ordered by
        ``(device_id, ts)``, at most ``limit`` rows; ``device_id=None`` means every device."""
        ...

    def latest(self, device_id: str) -> pd.DataFrame:
        """The newest reading of a device as a one-row frame (empty when none)."""
        ...

    def devices(self) -> list[str]:
        ...

    def count(self, device_id: str | None = None, start: pd.Timestamp | None = None) -> int:
        """Number of stored readings (of one device, from ``start`` on, when given)."""
        ...

    def late_writes(self) -> tuple[dict[str, list[tuple[pd.Timestamp, pd.Timestamp | None]]], int]:
        """Per device, the ranges of stamps (first, last; ``None``: up to the newest) stored
        behind its newest reading since the last acknowledgement, merged and oldest first
        (the sync job must send them too), and the newest note's number."""
        ...

    def acknowledge_late_writes(self, through: int) -> None:
        """Forget the late-write notes up to number ``through`` (the cloud holds those rows)."""
        ...

    def put_site(self, site: dict) -> None:
        """Insert or replace a site description (keys of ``der_data.SITE_FIELDS``)."""
        ...

    def sites(self) -> list[dict]:
        """Every stored site description."""
        ...

    def close(self) -> None:
        ...
