"""Embedded cloud store: one SQLite file (WAL), the default when no server is configured, so
the whole pipeline runs with no setup (DESIGN.md, "Stores"). Timestamps are integer
microseconds since the epoch (UTC), as in the edge store.

``der_features.features`` holds either JSON text (rows written already packed, and every
row written by an older version) or a compact BLOB: a layout id and the row's float64 values.
The layout (the feature names, in order) is stored once in ``der_feature_layouts``. Writing
a full rebuild as JSON cost more than computing it; the BLOB is exact where 15-digit JSON
was not, and a fifth of the size. Reads decode both, so older files open as they are.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cloud.store import migrations
from cloud.store import schema as s
from cloud.store.common import TableStore, run_error, run_row, watermark_upsert_sql
from der_core import der_data as dd
from der_core.errors import StoreError
from edge_gateway.stores.sqlite import (
    block_order,
    bound_micros,
    connect,
    frame_from_rows,
    micros_to_ts,
)

DEFAULT_CLOUD_DB = "data/cloud.db"
LAYOUTS = migrations.FEATURE_LAYOUTS
#: Rows per INSERT statement: few enough to keep statements small, many enough that the
#: per-statement cost (and the GIL hand-over around it) is paid rarely.
ROWS_PER_STATEMENT = 500


class SQLiteCloudStore(TableStore):
    def __init__(self, path: str | Path = DEFAULT_CLOUD_DB) -> None:
        self.path = Path(path)
        self.label = f"sqlite:{self.path}"
        # A path that cannot be made, or another application's database, is one StorePathError line.
        self._conn = connect(self.path, own_table=s.READINGS, kind="a cloud store")
        self._layout_ids: dict[str, int] = {}
        self.init_schema()

    def opener(self) -> Callable[[], SQLiteCloudStore]:
        """A picklable callable that opens this file again, for a job that reads in worker
        processes: each process needs its own connection, since one must never cross a fork
        (sqlite.org/howtocorrupt.html, section 2.6)."""
        return partial(SQLiteCloudStore, self.path)

    def init_schema(self) -> None:
        with self._guard("create schema"):
            for statement in migrations.sqlite_statements():
                self._conn.execute(statement)

    def _guard(self, action: str):
        return _Guard(f"cloud SQLite store {self.path}: {action} failed")

    # writes ------------------------------------------------------------------------------
    def upsert_frame(self, table: str, frame: pd.DataFrame, update: Sequence[str] | None = None) -> int:
        if frame.empty:
            return 0
        if table == s.FEATURES and _is_float_wide(frame):
            return self._write(table, self._feature_columns(frame))
        data, update = s.to_write(table, frame, update)
        return self._write(table, s.python_columns(table, data, ts_micros=True), update)

    def _write(self, table: str, columns: Mapping[str, Sequence[Any]], update: Sequence[str] | None = None) -> int:
        """Upsert rows given as column lists of SQLite values, in one transaction.

        Rows go many to a statement (``VALUES (…), (…), …``) rather than one per
        ``executemany`` step: Python's sqlite3 gives up the GIL around every step, and with
        the feature job's maths running on the other thread each step then waited to get it
        back, which made a threaded write slower than a serial one."""
        names = list(columns)
        rows = list(zip(*columns.values()))
        variables = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        per_statement = max(1, min(ROWS_PER_STATEMENT, variables // len(names)))
        with self._guard(f"upsert into {table}"), self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            for first in range(0, len(rows), per_statement):
                chunk = rows[first:first + per_statement]
                self._conn.execute(_upsert_sql(table, names, len(chunk), update), [v for row in chunk for v in row])
        return len(rows)

    def _feature_columns(self, wide: pd.DataFrame) -> dict[str, list[Any]]:
        """``der_features`` column lists from a wide frame of float features, the features of
        each row as one BLOB (no JSON text on the way)."""
        devices, micros, versions = _texts(wide[dd.DEVICE_ID]), _micros(wide[dd.TS]), _texts(wide[s.VERSION])
        last = _last_of_each_key(devices, micros, versions)
        if last is not None:
            wide, micros = wide[last], micros[last]
            devices, versions = [devices[i] for i in np.flatnonzero(last)], [versions[i] for i in np.flatnonzero(last)]
        names = s.feature_columns(wide)
        # By position: looking ~60 names up in the column index cost more than copying them.
        wanted = set(names)
        positions = [i for i, name in enumerate(wide.columns.tolist()) if name in wanted]
        values = wide.iloc[:, positions].to_numpy(dtype="float64")
        return {
            dd.DEVICE_ID: devices,
            dd.TS: micros.tolist(),
            s.VERSION: versions,
            s.FEATURES_COLUMN: encode_feature_blobs(self._layout_id(names), values),
            s.CREATED_AT: [None] * len(wide),  # as the packed path writes it
        }

    def _layout_id(self, names: Sequence[str]) -> int:
        """The id of this list of feature names in ``der_feature_layouts``, added if new.
        Remembered per connection (a layout row never changes), since recording it is a
        write transaction of its own."""
        text = json.dumps(list(names))
        if text not in self._layout_ids:
            with self._guard("record a feature layout"):
                self._conn.execute(f"INSERT OR IGNORE INTO {LAYOUTS} (names) VALUES (?)", (text,))
                row = self._conn.execute(f"SELECT layout_id FROM {LAYOUTS} WHERE names = ?", (text,)).fetchone()
            self._layout_ids[text] = int(row[0])
        return self._layout_ids[text]

    def _layouts(self) -> dict[int, list[str]]:
        with self._guard("read feature layouts"):
            rows = self._conn.execute(f"SELECT layout_id, names FROM {LAYOUTS}").fetchall()
        return {int(layout): json.loads(names) for layout, names in rows}

    def set_watermark(self, source: str, device_id: str, ts: pd.Timestamp, rows_synced: int) -> None:
        with self._guard(f"set watermark {source}"), self._conn:
            self._conn.execute(watermark_upsert_sql("?"), (source, device_id, bound_micros(ts), int(rows_synced),
                                                           bound_micros(dd.utc_now())))

    def start_run(self, job: str, details: Mapping[str, Any] | None = None) -> int:
        row = run_row(job, details)
        with self._guard("start run"), self._conn:
            cursor = self._conn.execute(
                f"INSERT INTO {s.RUNS} ({s.JOB}, {s.STARTED_AT}, {s.STATUS}, {s.ROWS}, {s.DETAILS}) VALUES (?, ?, ?, ?, ?)",
                (job, bound_micros(row[s.STARTED_AT]), row[s.STATUS], 0, json.dumps(row[s.DETAILS])),
            )
        return int(cursor.lastrowid)

    def finish_run(self, run_id: int, status: str, rows: int = 0, error: str | None = None) -> None:
        with self._guard("finish run"), self._conn:
            self._conn.execute(
                f"UPDATE {s.RUNS} SET {s.FINISHED_AT} = ?, {s.STATUS} = ?, {s.ROWS} = ?, {s.ERROR} = ? WHERE {s.RUN_ID} = ?",
                (bound_micros(dd.utc_now()), status, int(rows), run_error(error), int(run_id)),
            )

    # reads -------------------------------------------------------------------------------
    @staticmethod
    def _where(table: str, equals, start, stop) -> tuple[str, list]:
        clauses, params = [], []
        for column, value in (equals or {}).items():
            clauses.append(f"{column} = ?")
            params.append(bound_micros(value) if s.table(table).columns.get(column) == s.TS else value)
        for op, bound in ((">=", start), ("<", stop)):
            if bound is not None:
                clauses.append(f"{dd.TS} {op} ?")
                params.append(bound_micros(bound))
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _read(self, table, equals, start, stop, limit, descending, columns=None) -> pd.DataFrame:
        spec = s.table(table)
        names = list(columns or spec.columns)
        fixed: dict[str, Any] = {}
        if table == s.READINGS:
            # A column pinned by the filter is not fetched per row: building a million equal
            # strings costs more than the rest of the column.
            fixed = {c: v for c, v in (equals or {}).items() if c == dd.DEVICE_ID}
            names = block_order([c for c in names if c not in fixed])
        where, params = self._where(table, equals, start, stop)
        order = ", ".join(f"{k} {'DESC' if descending else 'ASC'}" for k in spec.keys)
        sql = f"SELECT {', '.join(names)} FROM {table} {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._guard(f"read {table}"):
            rows = self._conn.execute(sql, params).fetchall()
        if table == s.READINGS:
            return frame_from_rows(rows, names, fixed)
        frame = pd.DataFrame.from_records(rows, columns=names)
        if table == s.FEATURES and s.FEATURES_COLUMN in frame.columns:
            frame[s.FEATURES_COLUMN] = decode_features(frame[s.FEATURES_COLUMN].tolist(), self._layouts)
        return _typed(table, frame)

    def _count(self, table, equals, start, stop) -> int:
        where, params = self._where(table, equals, start, stop)
        with self._guard(f"count {table}"):
            return int(self._conn.execute(f"SELECT COUNT(*) FROM {table} {where}", params).fetchone()[0])

    def _delete(self, table, equals) -> int:
        where, params = self._where(table, equals, None, None)
        with self._guard(f"delete from {table}"), self._conn:
            return self._conn.execute(f"DELETE FROM {table} {where}", params).rowcount

    def _delete_at(self, table, equals, times) -> int:
        where, params = self._where(table, equals, None, None)
        keys = [(*params, bound_micros(ts)) for ts in times]
        with self._guard(f"delete from {table}"), self._conn:
            return self._conn.executemany(f"DELETE FROM {table} {where} AND {dd.TS} = ?", keys).rowcount

    def newest(self, table, column, equals=None, start=None) -> pd.Timestamp | None:
        s.table(table).columns[column]  # a name outside the schema never reaches the SQL
        where, params = self._where(table, equals, start, None)
        with self._guard(f"read {table}"):
            value = self._conn.execute(f"SELECT MAX({column}) FROM {table} {where}", params).fetchone()[0]
        return None if value is None else micros_to_ts([value])[0]

    def reading_stats(self) -> dict[str, dict[str, Any]]:
        with self._guard("read reading stats"):
            rows = self._conn.execute(
                f"SELECT {dd.DEVICE_ID}, {s.FIRST_TS}, {s.LAST_TS}, {s.ROW_COUNT} FROM {s.READING_STATS}"
            ).fetchall()
        return {
            device: {s.FIRST_TS: micros_to_ts([first])[0], s.LAST_TS: micros_to_ts([last])[0], s.ROW_COUNT: int(n)}
            for device, first, last, n in rows
        }

    def close(self) -> None:
        self._conn.close()


def _upsert_sql(table: str, names: Sequence[str], rows: int, update: Sequence[str] | None = None) -> str:
    """``INSERT … VALUES`` of ``rows`` rows that updates the non-key columns (those of
    ``update`` only, when given) on conflict (a later row with the same key wins, as it would
    one statement later)."""
    keys = s.table(table).keys
    updates = s.updated_columns(table, names, update) or [keys[0]]
    row = f"({', '.join('?' * len(names))})"
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES {', '.join([row] * rows)} "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in updates)
    )


def _is_float_wide(frame: pd.DataFrame) -> bool:
    """A wide feature frame whose features are all floats: what the BLOB encoding holds
    exactly (integers or flags would come back as floats, so they stay JSON)."""
    if s.is_packed_features(frame) or s.VERSION not in frame.columns:
        return False
    keys = {dd.DEVICE_ID, dd.TS, s.VERSION}
    kinds = {kind for name, kind in zip(frame.columns.tolist(), frame.dtypes.tolist()) if name not in keys}
    return all(pd.api.types.is_float_dtype(kind) for kind in kinds)  # each distinct dtype once


def _micros(ts: pd.Series) -> np.ndarray:
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = pd.to_datetime(ts, utc=True)
    return pd.DatetimeIndex(ts).tz_convert("UTC").as_unit("us").asi8


def _texts(column: pd.Series) -> list[str]:
    """A key column as ``str`` values. A job's batch holds one site and one version: a column
    of one repeated string is repeated, not converted row by row."""
    distinct = column.unique()
    if len(distinct) == 1 and isinstance(distinct[0], str):
        return [distinct[0]] * len(column)
    return column.astype(str).tolist()


def _last_of_each_key(devices: list[str], micros: np.ndarray, versions: list[str]) -> np.ndarray | None:
    """A mask of the last row of each ``(device_id, ts, version)``, as the packed path keeps,
    or ``None`` when every key is distinct. A job's batch is one site and one version with
    distinct instants, which numpy confirms without hashing every key."""
    if len(set(devices)) == 1 and len(set(versions)) == 1 and np.unique(micros).size == len(micros):
        return None
    keys = pd.DataFrame({"d": devices, "t": micros, "v": versions})
    return ~keys.duplicated(keep="last").to_numpy()


_LAYOUT = np.dtype("<u4")
_VALUE = np.dtype("<f8")


def encode_feature_blobs(layout_id: int, values: np.ndarray) -> list[bytes]:
    """One BLOB per row of ``values``: the layout id (uint32) then the row as float64,
    little-endian, built in one buffer and cut into rows at C speed."""
    rows, width = values.shape
    record = np.dtype([("layout", _LAYOUT), ("values", _VALUE, (width,))])
    packed = np.empty(rows, dtype=record)
    packed["layout"] = layout_id
    packed["values"] = values
    return packed.view(np.dtype((np.void, record.itemsize))).tolist()


def decode_features(cells: list[Any], layouts) -> list[Any]:
    """Stored ``features`` cells (JSON text, BLOB or NULL) -> the JSON text or ``{name:
    value}`` objects ``_typed`` expects, NaN as ``None`` as JSON ``null`` reads. ``layouts``
    is called (once) only when a BLOB is present."""
    out = list(cells)
    blobs = [i for i, cell in enumerate(cells) if isinstance(cell, bytes)]
    if not blobs:
        return out
    names_of = layouts()
    by_layout: dict[int, list[int]] = {}
    for i in blobs:
        by_layout.setdefault(int(np.frombuffer(cells[i], _LAYOUT, count=1)[0]), []).append(i)
    for layout, positions in by_layout.items():
        names = names_of[layout]
        record = np.dtype([("layout", _LAYOUT), ("values", _VALUE, (len(names),))])
        values = np.frombuffer(b"".join(cells[i] for i in positions), dtype=record)["values"]
        cells_of = values.astype(object)
        cells_of[~np.isfinite(values)] = None
        for i, row in zip(positions, cells_of.tolist()):
            out[i] = dict(zip(names, row))
    return out


def _typed(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Rows as stored (micros, JSON text, 0/1) -> the frame ``schema.coerce`` describes."""
    spec = s.table(table)
    for name, kind in spec.columns.items():
        if kind == s.TS:
            values = pd.to_numeric(frame[name], errors="coerce")
            frame[name] = pd.to_datetime(values, unit="us", utc=True).astype("datetime64[us, UTC]")
        elif kind == s.JSON:
            # A NULL among texts comes back as NaN once pandas has seen the column: missing, not JSON.
            frame[name] = [v if isinstance(v, (dict, type(None))) else None if isinstance(v, float) else json.loads(v)
                           for v in frame[name]]
    out = s.coerce(table, frame)
    if spec.serial:
        out.insert(0, spec.serial, pd.array(frame[spec.serial], dtype="Int64"))
    return out


class _Guard:
    """Turn a sqlite3 error into one ``StoreError`` line naming the store and the action."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and issubclass(exc_type, sqlite3.Error):
            raise StoreError(f"{self.message} ({exc})") from None
        return False
