"""What every cloud adapter shares: the Protocol's table-specific methods written once in
terms of a few primitives each adapter provides (``upsert_frame``, ``_read``, ``_count``,
``newest``, ``reading_stats``, ``start_run``, ``finish_run``)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from cloud.store import schema as s
from der_core import der_data as dd


class TableStore:
    label = "cloud"

    # primitives each adapter implements ------------------------------------------------
    def upsert_frame(self, table: str, frame: pd.DataFrame, update: Sequence[str] | None = None) -> int:
        raise NotImplementedError

    def _read(self, table: str, equals: Mapping[str, Any] | None, start, stop, limit, descending: bool,
              columns: Sequence[str] | None = None) -> pd.DataFrame:
        """``columns`` (readings only) as ``schema.reading_columns`` resolves it."""
        raise NotImplementedError

    def _count(self, table: str, equals: Mapping[str, Any] | None, start, stop) -> int:
        raise NotImplementedError

    def newest(self, table: str, column: str, equals: Mapping[str, Any] | None = None,
               start: pd.Timestamp | None = None) -> pd.Timestamp | None:
        raise NotImplementedError

    def _delete(self, table: str, equals: Mapping[str, Any]) -> int:
        raise NotImplementedError

    def _delete_at(self, table: str, equals: Mapping[str, Any], times: pd.DatetimeIndex) -> int:
        """Remove the rows with every ``column == value`` of ``equals`` whose ``ts`` is one of ``times``."""
        raise NotImplementedError

    # the Protocol, in terms of them ----------------------------------------------------
    def count_rows(self, table: str, equals: Mapping[str, Any] | None = None) -> int:
        return self._count(table, equals, None, None)

    def delete_rows(self, table: str, equals: Mapping[str, Any]) -> int:
        spec = s.table(table)
        if not equals or any(column not in spec.columns for column in equals):
            raise ValueError(f"delete from {table}: expected a filter on its columns, got {dict(equals or {})}")
        return self._delete(table, equals)

    def read_frame(self, table, equals=None, start=None, stop=None, limit=None) -> pd.DataFrame:
        return self._read(table, equals, start, stop, limit, False)

    def upsert_readings(self, frame: pd.DataFrame, fields: Sequence[str] | None = None) -> int:
        return self.upsert_frame(s.READINGS, frame, update=fields)

    def read_readings(self, device_id=None, start=None, stop=None, limit=None, columns=None) -> pd.DataFrame:
        equals = None if device_id is None else {dd.DEVICE_ID: device_id}
        return self._read(s.READINGS, equals, start, stop, limit, False, s.reading_columns(columns))

    def count_readings(self, device_id=None, start=None, stop=None) -> int:
        equals = None if device_id is None else {dd.DEVICE_ID: device_id}
        return self._count(s.READINGS, equals, start, stop)

    def upsert_sites(self, sites: list[Mapping[str, Any]]) -> int:
        if not sites:
            return 0
        frame = pd.DataFrame([{k: site.get(k) for k in dd.SITE_FIELDS} for site in sites])
        frame[s.UPDATED_AT] = dd.utc_now()
        return self.upsert_frame(s.SITES, frame)

    def sites(self) -> list[dict[str, Any]]:
        frame = self._read(s.SITES, None, None, None, None, False)
        return [{k: _plain(row[k]) for k in dd.SITE_FIELDS} for row in frame.to_dict("records")]

    def watermarks(self, source: str) -> dict[str, pd.Timestamp]:
        frame = self._read(s.WATERMARKS, {s.SOURCE: source}, None, None, None, False)
        return dict(zip(frame[dd.DEVICE_ID], frame[s.WATERMARK_TS]))

    def _rows_synced(self, source: str, device_id: str) -> int:
        frame = self._read(s.WATERMARKS, {s.SOURCE: source, dd.DEVICE_ID: device_id}, None, None, None, False)
        return 0 if frame.empty or pd.isna(frame[s.ROWS_SYNCED].iloc[0]) else int(frame[s.ROWS_SYNCED].iloc[0])

    def set_watermark(self, source: str, device_id: str, ts: pd.Timestamp, rows_synced: int) -> None:
        total = self._rows_synced(source, device_id) + int(rows_synced)
        row = {s.SOURCE: source, dd.DEVICE_ID: device_id, s.WATERMARK_TS: dd.parse_ts(ts),
               s.ROWS_SYNCED: total, s.UPDATED_AT: dd.utc_now()}
        self.upsert_frame(s.WATERMARKS, pd.DataFrame([row]))

    def quarantine(self, frame: pd.DataFrame, reasons: pd.Series, source: str) -> int:
        if frame.empty:
            return 0
        payload = [_no_nul(json.loads(line)) for line in
                   frame.drop(columns=[dd.TS]).to_json(orient="records", lines=True).splitlines()]
        rows = pd.DataFrame({
            s.SOURCE: source,
            dd.DEVICE_ID: frame[dd.DEVICE_ID].astype(str).str.replace("\x00", NUL_SHOWN, regex=False).to_numpy(),
            dd.TS: pd.to_datetime(frame[dd.TS], utc=True).to_numpy(),
            s.REASON: pd.Series(reasons).astype(str).str.replace("\x00", NUL_SHOWN, regex=False).to_numpy(),
            s.PAYLOAD: payload,
            s.QUARANTINED_AT: dd.utc_now(),
        })
        return self.upsert_frame(s.QUARANTINE, rows)

    def read_quarantine(self, device_id=None) -> pd.DataFrame:
        equals = None if device_id is None else {dd.DEVICE_ID: device_id}
        return self._read(s.QUARANTINE, equals, None, None, None, False)

    def release_quarantine(self, source, device_id, times) -> int:
        times = pd.DatetimeIndex(pd.to_datetime(pd.Series(times), utc=True)).unique()
        if not len(times):
            return 0
        return self._delete_at(s.QUARANTINE, {s.SOURCE: source, dd.DEVICE_ID: device_id}, times)

    def runs(self, job=None, limit=20) -> list[dict[str, Any]]:
        """Newest first; a run whose process died without recording an outcome reads as
        :data:`INTERRUPTED` (:func:`interrupted`)."""
        equals = None if job is None else {s.JOB: job}
        frame = self._read(s.RUNS, equals, None, None, limit, True)
        runs = [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
        return [run | {s.STATUS: INTERRUPTED} if interrupted(run) else run for run in runs]

    def last_run(self, job: str) -> dict[str, Any] | None:
        runs = self.runs(job, limit=1)
        return runs[0] if runs else None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]


def _plain(value: Any) -> Any:
    """A pandas/numpy cell as a plain Python value (``None`` for missing)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "item") and not isinstance(value, pd.Timestamp):
        return value.item()
    return value


def watermark_upsert_sql(placeholder: str) -> str:
    """One statement that records a watermark and adds to the running total in the database:
    no read first (a round trip and a frame per call), and no lost update between two writers."""
    cols = (s.SOURCE, dd.DEVICE_ID, s.WATERMARK_TS, s.ROWS_SYNCED, s.UPDATED_AT)
    return (
        f"INSERT INTO {s.WATERMARKS} ({', '.join(cols)}) VALUES ({', '.join([placeholder] * len(cols))}) "
        f"ON CONFLICT ({s.SOURCE}, {dd.DEVICE_ID}) DO UPDATE SET {s.WATERMARK_TS} = excluded.{s.WATERMARK_TS}, "
        f"{s.ROWS_SYNCED} = COALESCE({s.WATERMARKS}.{s.ROWS_SYNCED}, 0) + excluded.{s.ROWS_SYNCED}, "
        f"{s.UPDATED_AT} = excluded.{s.UPDATED_AT}"
    )


#: Status of a run left ``running`` by a process that is gone (SIGKILL, power loss, OOM killer).
INTERRUPTED = "interrupted"


def run_row(job: str, details: Mapping[str, Any] | None) -> dict[str, Any]:
    """A new ``running`` row; its details name the host and process, so a run whose process
    was killed before it could record an outcome can be told from one still under way."""
    host, pid = this_process()
    # As any JSON cell is stored (schema.json_text): a NaN among the details is null.
    text = s.json_text(s.RUNS, s.DETAILS, dict(details or {}) | {"host": host, "pid": pid})
    return {s.JOB: job, s.STARTED_AT: dd.utc_now(), s.STATUS: "running", s.ROWS: 0, s.DETAILS: json.loads(text)}


def run_error(error: str | None) -> str | None:
    """A run's error as stored: NUL written as ``\\x00``. The text often quotes a damaged
    file's bytes, and PostgreSQL's text refuses NUL; refusing the error would leave the run
    ``running`` with its failure unrecorded, so this one column escapes instead."""
    return None if error is None else str(error).replace("\x00", "\\x00")


def this_process() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def interrupted(run: Mapping[str, Any]) -> bool:
    """A run still marked ``running`` whose process, on this host, no longer exists. Runs
    started on another host cannot be checked from here and keep their ``running``; a pid
    reused by a new process reads as still running, never the other way round."""
    details = run.get(s.DETAILS)
    host, _ = this_process()
    if run.get(s.STATUS) != "running" or not isinstance(details, Mapping) or details.get("host") != host:
        return False
    pid = details.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


#: How a NUL character in a quarantined row is kept: PostgreSQL's text and jsonb refuse
#: U+0000, and the row is quarantined for being bad, so it must be storable however bad.
NUL_SHOWN = "\u2400"


def _no_nul(value: Any) -> Any:
    """``value`` (parsed JSON) with every NUL in its texts shown as :data:`NUL_SHOWN`."""
    if isinstance(value, str):
        return value.replace("\x00", NUL_SHOWN)
    if isinstance(value, dict):
        return {_no_nul(k): _no_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nul(v) for v in value]
    return value
