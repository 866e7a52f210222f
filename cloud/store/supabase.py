"""Supabase cloud store through the ``supabase`` client (``SUPABASE_URL``, ``SUPABASE_KEY``).

Writes are batched upserts on each table's primary key (``Prefer: resolution=
merge-duplicates``). Reads page under an explicit order, each page the rows after the last
one read, and continue until an empty page, because the server caps every response at its
``max-rows`` (1000 by default) without saying so: stopping at the first short page would
silently truncate. The client's
JSON encoder refuses NaN and numpy scalars, so rows leave as plain Python with ``None``.
Tables come from ``supabase db push`` of ``supabase/migrations``; this adapter runs no DDL.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
import pandas as pd
from postgrest.exceptions import APIError

from cloud.store import schema as s
from cloud.store.common import TableStore, run_error, run_row
from der_core import der_data as dd
from der_core.errors import StoreError, StoreUnavailable
from der_core.redact import url_address
from supabase import Client, ClientOptions, create_client

T = TypeVar("T")
WRITE_BATCH = 1000
PAGE_SIZE = 1000
#: Instants per ``in`` filter: each is ~30 characters of the request's URL, which servers and
#: proxies cap at a few kilobytes.
TIMES_PER_FILTER = 100
_RETRYABLE_CODES = {"502", "503", "504", "429", "PGRST000", "PGRST001", "PGRST002"}


class SupabaseCloudStore(TableStore):
    def __init__(self, url: str, key: str, *, client: Client | None = None, page_size: int = PAGE_SIZE,
                 write_batch: int = WRITE_BATCH) -> None:
        self.label = f"supabase {url_address(url)}"
        self.page_size, self.write_batch = page_size, write_batch
        try:
            # One retry policy (the sync's, with jitter) rather than two stacked ones.
            self._client = client or create_client(url, key, ClientOptions(postgrest_client_retry=False))
        except Exception as error:  # the client raises its own exception types for a bad URL/key
            raise StoreError(f"{self.label}: cannot create client ({error})") from None

    def _call(self, action: str, request: Callable[[], T]) -> T:
        """Run one request; vendor errors become ours (unreachable -> StoreUnavailable)."""
        try:
            return request()
        except httpx.TransportError as error:
            raise StoreUnavailable(f"{self.label}: {action} failed ({type(error).__name__}: {error})") from None
        except APIError as error:
            kind = StoreUnavailable if str(error.code) in _RETRYABLE_CODES else StoreError
            raise kind(f"{self.label}: {action} failed ({error.code}: {error.message})") from None

    def init_schema(self) -> None:
        """Check every table answers; creating them is ``supabase db push``'s job."""
        for name in s.TABLES:
            try:
                self._call(f"check table {name}", lambda n=name: self._client.table(n).select("*").limit(1).execute())
            except StoreError as error:
                raise StoreError(f"{error}; apply supabase/migrations with `supabase db push`") from None

    # writes ------------------------------------------------------------------------------
    def upsert_frame(self, table: str, frame: pd.DataFrame, update: Sequence[str] | None = None) -> int:
        """PostgREST's ``merge-duplicates`` replaces the columns a row carries, so with
        ``update`` the rows carry the key and those columns only."""
        if frame.empty:
            return 0
        spec = s.table(table)
        data, update = s.to_write(table, frame, update)
        rows = _json_rows(table, data)
        if update is not None:
            carried = {*spec.keys, *s.updated_columns(table, list(spec.writable), update)}
            rows = [{k: v for k, v in row.items() if k in carried} for row in rows]
        on_conflict = ",".join(spec.keys)
        for start in range(0, len(rows), self.write_batch):
            batch = rows[start:start + self.write_batch]
            self._call(f"upsert into {table}", lambda b=batch: self._client.table(table).upsert(
                b, on_conflict=on_conflict, returning="minimal").execute())
        return len(rows)

    def start_run(self, job: str, details: Mapping[str, Any] | None = None) -> int:
        row = run_row(job, details)
        row[s.STARTED_AT] = dd.format_ts(row[s.STARTED_AT])
        response = self._call("start run", lambda: self._client.table(s.RUNS).insert(row).execute())
        return int(response.data[0][s.RUN_ID])

    def finish_run(self, run_id: int, status: str, rows: int = 0, error: str | None = None) -> None:
        values = {s.FINISHED_AT: dd.format_ts(dd.utc_now()), s.STATUS: status, s.ROWS: int(rows), s.ERROR: run_error(error)}
        self._call("finish run", lambda: self._client.table(s.RUNS).update(values).eq(s.RUN_ID, int(run_id)).execute())

    # reads -------------------------------------------------------------------------------
    def _query(self, table: str, equals, start, stop, head: bool = False, columns: str = "*"):
        query = self._client.table(table).select(columns, count="exact" if head else None, head=head or None)
        for column, value in (equals or {}).items():
            query = query.eq(column, dd.format_ts(value) if isinstance(value, pd.Timestamp) else value)
        if start is not None:
            query = query.gte(dd.TS, dd.format_ts(dd.parse_ts(start)))
        if stop is not None:
            query = query.lt(dd.TS, dd.format_ts(dd.parse_ts(stop)))
        return query

    def _pages(self, table: str, order: tuple[str, ...], equals, start, stop, limit, descending,
               columns: str = "*") -> list[dict]:
        """Every row, page after page, each page the rows after the last one read in key order
        (keyset paging). Paging by offset counted rows again: a sync storing a reading of one
        device while another's were being paged shifted every later row by one, and the reader
        got a reading twice (or, after a removal, missed one)."""
        rows: list[dict] = []
        keys = [k for k in order if k not in (equals or {})]  # a key the filter pins is the same in every row
        while limit is None or len(rows) < limit:
            want = self.page_size if limit is None else min(self.page_size, limit - len(rows))
            query = self._query(table, equals, start, stop, columns=columns)
            if rows and not keys:
                break  # the filter pins the whole key: one row at most
            if rows:
                query = query.or_(_after(keys, rows[-1], descending))
            for column in order:
                query = query.order(column, desc=descending)
            page = self._call(f"read {table}", lambda q=query: q.limit(want).execute()).data
            if not page:
                break
            rows.extend(page)
        return rows

    def _read(self, table, equals, start, stop, limit, descending, columns=None) -> pd.DataFrame:
        spec = s.table(table)
        names = list(columns or spec.columns)
        selected = "*" if columns is None else ",".join(names)
        rows = self._pages(table, spec.keys, equals, start, stop, limit, descending, selected)
        return s.frame_from_records(table, rows, names)

    def _count(self, table, equals, start, stop) -> int:
        response = self._call(f"count {table}", lambda: self._query(table, equals, start, stop, head=True).execute())
        return int(response.count or 0)

    def _delete(self, table, equals) -> int:
        query = self._client.table(table).delete(count="exact", returning="minimal")
        for column, value in equals.items():
            query = query.eq(column, dd.format_ts(value) if isinstance(value, pd.Timestamp) else value)
        return int(self._call(f"delete from {table}", lambda: query.execute()).count or 0)

    def _delete_at(self, table, equals, times) -> int:
        gone = 0
        for at in range(0, len(times), TIMES_PER_FILTER):
            query = self._client.table(table).delete(count="exact", returning="minimal")
            for column, value in equals.items():
                query = query.eq(column, value)
            query = query.in_(dd.TS, [dd.format_ts(ts) for ts in times[at:at + TIMES_PER_FILTER]])
            gone += int(self._call(f"delete from {table}", lambda q=query: q.execute()).count or 0)
        return gone

    def newest(self, table, column, equals=None, start=None) -> pd.Timestamp | None:
        s.table(table).columns[column]
        query = self._query(table, equals, start, None, columns=column).order(column, desc=True, nullsfirst=False).limit(1)
        rows = self._call(f"read {table}", lambda: query.execute()).data
        value = rows[0][column] if rows else None
        return None if value is None else dd.parse_ts(value)

    def reading_stats(self) -> dict[str, dict[str, Any]]:
        rows = self._pages(s.READING_STATS, (dd.DEVICE_ID,), None, None, None, None, False)
        return {
            r[dd.DEVICE_ID]: {s.FIRST_TS: dd.parse_ts(r[s.FIRST_TS]), s.LAST_TS: dd.parse_ts(r[s.LAST_TS]),
                              s.ROW_COUNT: int(r[s.ROW_COUNT])}
            for r in rows
        }

    def close(self) -> None:
        """The client holds no connection that needs closing between jobs."""


def _after(keys: Sequence[str], row: Mapping[str, Any], descending: bool) -> str:
    """A PostgREST logic tree for the rows after ``row`` in the order of ``keys``:
    ``k1 > v1 or (k1 = v1 and k2 > v2) or …``. Every value is double-quoted, backslash before
    ``"`` and ``\\``, as PostgREST's URL grammar ("Reserved characters") asks of values holding
    ``,.:()``: a device id or an instant holds them."""
    beyond = "lt" if descending else "gt"
    value = {k: '"' + str(row[k]).replace("\\", "\\\\").replace('"', '\\"') + '"' for k in keys}
    terms = []
    for i, key in enumerate(keys):
        same = [f"{k}.eq.{value[k]}" for k in keys[:i]]
        terms.append(f"and({','.join([*same, f'{key}.{beyond}.{value[key]}'])})" if same else f"{key}.{beyond}.{value[key]}")
    return ",".join(terms)


#: JSON has no infinity; PostgreSQL's float8 reads and writes these texts, and PostgREST
#: returns a float8 infinity as one (``to_json`` quotes a number that is not JSON's).
_INFINITY = {float("inf"): "Infinity", float("-inf"): "-Infinity"}


def _json_rows(table: str, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows the client's JSON encoder accepts: ``None`` for NaN, infinities as text, Python
    scalars, ISO times."""
    columns = s.python_columns(table, frame)
    spec = s.table(table)
    for name, kind in spec.columns.items():
        if kind == s.FLOAT and name in columns:
            columns[name] = [_INFINITY.get(v, v) if v is not None and math.isinf(v) else v for v in columns[name]]
        elif kind == s.TS and name in columns:
            columns[name] = [None if t is None else dd.format_ts(t) for t in columns[name]]
        elif kind == s.JSON and name in columns:
            columns[name] = [None if v is None else json.loads(v) for v in columns[name]]
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*columns.values())]
