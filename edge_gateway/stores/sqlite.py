"""Embedded edge store: one SQLite file in WAL mode, one row per reading, flat columns.

WAL lets the simulator write while the sync job (another process) reads. Timestamps are
stored as integer microseconds since the epoch (UTC): compact, exact, and ordered.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from der_core import der_data as dd
from der_core.errors import StoreError, StorePathError
from edge_gateway.stores.base import merge_ranges, store_source

log = logging.getLogger(__name__)

TABLE = "readings"
IDENTITY = "edge_store"
#: The sync's source name of an embedded edge store; a store's own name follows it.
SOURCE = "edge:sqlite"
_SQL_TYPES = {float: "REAL", int: "INTEGER", str: "TEXT"}


def connect(path: str | Path, timeout_s: float = 30.0, own_table: str | None = None, kind: str = "a store") -> sqlite3.Connection:
    """Open (creating folders as needed) a SQLite file in WAL mode, as every embedded store here does.

    With ``own_table``, a file that already holds tables but not that one is refused before
    anything is written to it: it is another application's database (or a store of the other
    kind), and creating tables in it, or switching it to WAL, would change what is not ours."""
    path = Path(path)
    if "\x00" in str(path):  # no file system names a file so; opening it would raise ValueError
        raise StorePathError(f"SQLite store {str(path)!r}: holds a NUL character; expected a file path")
    if str(path) != ":memory:":
        try:
            folder, other = path.is_dir(), path.exists() and not path.is_file()
        except OSError as error:  # a name too long for the file system, say
            raise StorePathError(f"SQLite store {dd.shown(str(path), 80)}: {error.strerror}; expected a file path") from None
        if folder:
            raise StorePathError(f"SQLite store {path}: is a folder; expected a file path")
        if other:  # /dev/null, a pipe: SQLite opens them, then fails on a write
            raise StorePathError(f"SQLite store {path}: is not a regular file (a device or a pipe); expected a file path")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorePathError(f"SQLite store {path}: cannot create folder {path.parent} ({error.strerror}); "
                                 "expected a writable file path") from None
    try:
        conn = sqlite3.connect(str(path), timeout=timeout_s, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as error:
        raise StorePathError(f"SQLite store {path}: cannot open ({error}); expected a writable file path") from None
    try:
        if own_table is not None:
            tables = [row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                "ORDER BY name")]
            if tables and own_table not in tables:
                conn.close()
                shown = ", ".join(t[:40] for t in tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
                raise StorePathError(f"SQLite store {path}: holds other tables ({shown}) and no {own_table}; expected "
                                     f"{kind} made by this product, or a new file")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
        conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    except sqlite3.Error as error:
        conn.close()
        raise StoreError(f"SQLite store {path}: cannot open ({error}); expected a writable SQLite file") from None
    return conn


def ts_to_micros(ts: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    return pd.DatetimeIndex(ts).tz_convert("UTC").as_unit("us").asi8


def micros_to_ts(values: np.ndarray | pd.Series) -> pd.Series:
    return pd.Series(pd.to_datetime(np.asarray(values, dtype="int64"), unit="us", utc=True))


def frame_from_rows(rows: Sequence[tuple], names: Sequence[str], fixed: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Fetched reading rows (``ts`` as microseconds) -> a frame of reading columns with the
    contract's dtypes, in ``coerce_frame``'s order (keys, numbers, text).

    Built column by column from the transposed tuples, straight into numpy (``None`` becomes
    NaN), rather than through ``DataFrame.from_records`` and ``coerce_frame``: for a million
    rows that double conversion was most of a read. ``fixed`` holds columns the query pinned
    to one value (a ``device_id = ?`` filter), which need not travel back per row.
    """
    fixed = dict(fixed or {})
    order = [c for c in (*dd.KEY_COLUMNS, *dd.NUMERIC_COLUMNS, *dd.TEXT_COLUMNS) if c in fixed or c in names]
    fetched = _columns(rows, names)
    size = len(rows)
    out: dict[str, Any] = {}
    for name in order:
        values = fetched[name] if name in fetched else (fixed[name],) * size
        if name == dd.TS:
            out[name] = pd.DatetimeIndex(pd.to_datetime(np.array(values, dtype="int64"), unit="us", utc=True))
        elif name == dd.DEVICE_ID or dd.FIELD_TYPES.get(name) is str:
            out[name] = pd.Series(np.array(values, dtype=object), dtype=object).astype("str").to_numpy()
        else:
            floats = np.array(values, dtype="float64")  # NULL (None) -> NaN
            # As coerce_frame: integers stay nullable, since imported data may lack them.
            out[name] = pd.array(np.round(floats), dtype="Int64") if dd.FIELD_TYPES[name] is int else floats
    frame = pd.DataFrame(out, index=pd.RangeIndex(size))
    frame[dd.TS] = frame[dd.TS].astype("datetime64[us, UTC]")
    return frame


_NUMERIC = frozenset(dd.NUMERIC_COLUMNS)


def block_order(columns: Sequence[str]) -> list[str]:
    """``columns`` in the order to select them for :func:`frame_from_rows`: the numeric ones
    side by side (converted as one block), then text, then anything else."""
    ordered = [c for c in (dd.TS, *dd.NUMERIC_COLUMNS, *dd.TEXT_COLUMNS, dd.DEVICE_ID) if c in columns]
    return ordered + [c for c in columns if c not in ordered]


def _columns(rows: Sequence[tuple], names: Sequence[str]) -> dict[str, Any]:
    """Rows -> values per column. A run of numeric columns in the select list converts as
    one 2-D float block (numpy reads the tuples in C), which costs a fraction of transposing
    every row in Python; the remaining columns are picked out one by one."""
    if not rows:
        return {name: () for name in names}
    numeric = [n for n in names if n in _NUMERIC]
    first = names.index(numeric[0]) if numeric else 0
    last = first + len(numeric)
    if len(numeric) < 2 or list(names[first:last]) != numeric:
        return dict(zip(names, zip(*rows)))
    block = np.array([row[first:last] for row in rows], dtype="float64")  # NULL (None) -> NaN
    fetched: dict[str, Any] = {name: block[:, j] for j, name in enumerate(numeric)}
    for i, name in enumerate(names):
        if name not in fetched:
            fetched[name] = [row[i] for row in rows]
    return fetched


def _file_id(path: Path) -> str | None:
    """The file's device and inode, which a copy does not share (None: no file, in memory)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return f"{stat.st_dev}:{stat.st_ino}"


def bound_micros(ts: pd.Timestamp | None) -> int | None:
    # ``Timestamp.value`` is nanoseconds whatever the unit, so read the microsecond count itself.
    return None if ts is None else int(dd.parse_ts(ts).as_unit("us").asm8.view("int64"))


#: A late write's stamps, first and last (``None``: up to the device's newest reading).
LateRange = tuple[pd.Timestamp, "pd.Timestamp | None"]


class LateWrites:
    """Notes of readings written behind their device's newest one, for the sync job.

    The sync job resumes each device from its watermark, less a short overlap. A reading
    stored later with an older stamp (a backfilled day, an import of another gateway's file)
    lies behind it and would never reach the cloud. So every write that lands behind its
    device's newest reading leaves a note of its first and last stamp, in the same
    transaction as the readings; the sync job sends those ranges as well as its usual one and,
    once its run has confirmed everything, acknowledges the notes it read. A note made during
    a run outlives it. (Notes from before the last stamp was kept reach up to the newest.)
    """

    def __init__(self, conn: sqlite3.Connection, readings_table: str | None = None) -> None:
        self._conn = conn
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'late_writes'").fetchone():
            if not any(row[1] == "until_us" for row in conn.execute("PRAGMA table_info(late_writes)")):
                with conn:  # notes from before ranges: NULL reaches up to the newest reading
                    conn.execute("ALTER TABLE late_writes ADD COLUMN until_us INTEGER")
            return  # opening a store takes no write lock once it has its notes
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"CREATE TABLE IF NOT EXISTS edge_newest ({dd.DEVICE_ID} TEXT PRIMARY KEY, ts_us INTEGER NOT NULL)")
            if readings_table is not None:  # a store from before the notes: its newest readings
                conn.execute(f"INSERT OR IGNORE INTO edge_newest SELECT {dd.DEVICE_ID}, MAX({dd.TS}) "
                             f"FROM {readings_table} GROUP BY {dd.DEVICE_ID}")
            conn.execute("CREATE TABLE IF NOT EXISTS late_writes (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                         f" {dd.DEVICE_ID} TEXT NOT NULL, since_us INTEGER NOT NULL, until_us INTEGER)")

    def note(self, device_ids: Sequence[str], micros: Sequence[int]) -> None:
        """Within the caller's write transaction: note the devices written behind their newest."""
        slot, devices = pd.factorize(np.asarray(device_ids, dtype=object))
        stamps = np.asarray(micros, dtype=np.int64)
        low = np.full(len(devices), np.iinfo(np.int64).max)
        high = np.full(len(devices), np.iinfo(np.int64).min)
        np.minimum.at(low, slot, stamps)
        np.maximum.at(high, slot, stamps)
        newest = dict(self._conn.execute(f"SELECT {dd.DEVICE_ID}, ts_us FROM edge_newest").fetchall())
        late = [(d, int(lo), int(hi)) for d, lo, hi in zip(devices, low, high) if d in newest and lo < newest[d]]
        if late:
            self._conn.executemany(f"INSERT INTO late_writes ({dd.DEVICE_ID}, since_us, until_us) VALUES (?, ?, ?)", late)
        self._conn.executemany(
            f"INSERT INTO edge_newest VALUES (?, ?) ON CONFLICT({dd.DEVICE_ID}) DO UPDATE SET ts_us = MAX(ts_us, excluded.ts_us)",
            [(d, int(hi)) for d, hi in zip(devices, high)],
        )

    def pending(self) -> tuple[dict[str, list[LateRange]], int]:
        """Per device the ranges written behind its newest (overlapping ones merged, oldest
        first), and the last note's number."""
        rows = self._conn.execute(f"SELECT {dd.DEVICE_ID}, since_us, until_us, seq FROM late_writes").fetchall()
        ranges: dict[str, list[tuple[int, int | None]]] = {}
        for device, since, until, _ in rows:
            ranges.setdefault(device, []).append((since, until))
        stamp = lambda us: None if us is None else micros_to_ts(np.array([us])).iloc[0]  # noqa: E731
        late = {device: [(stamp(since), stamp(until)) for since, until in merge_ranges(spans)]
                for device, spans in ranges.items()}
        return late, max((seq for *_, seq in rows), default=0)

    def acknowledge(self, through: int) -> None:
        """Drop the notes up to number ``through``: what they pointed at is in the cloud."""
        with self._conn:
            self._conn.execute("DELETE FROM late_writes WHERE seq <= ?", (through,))


class SQLiteEdgeStore:
    """The default edge store (DESIGN.md, "Stores")."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = connect(self.path, own_table=TABLE, kind="an edge store")
        existed = self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)).fetchone()
        columns = ", ".join(
            [f"{dd.DEVICE_ID} TEXT NOT NULL", f"{dd.TS} INTEGER NOT NULL"]
            + [f"{name} {_SQL_TYPES[typ]}" for name, typ in dd.FIELD_TYPES.items()]
        )
        site_columns = ", ".join(f"{name} {_SQL_TYPES.get(typ, 'INTEGER')}" for name, typ in dd.SITE_FIELDS.items())
        try:
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} ({columns}, PRIMARY KEY ({dd.DEVICE_ID}, {dd.TS})) WITHOUT ROWID"
            )
            self._conn.execute(f"CREATE TABLE IF NOT EXISTS sites ({site_columns}, PRIMARY KEY (device_id))")
        except sqlite3.Error as error:
            self._conn.close()
            raise StoreError(f"SQLite store {self.path}: cannot create its tables ({error}); expected a writable SQLite "
                             "file") from None
        self._insert = (
            f"INSERT OR REPLACE INTO {TABLE} ({', '.join(dd.COLUMNS)}) VALUES ({', '.join('?' * len(dd.COLUMNS))})"
        )
        self._late = LateWrites(self._conn, TABLE)
        self.store_id = self._identity(existed is not None)

    def _identity(self, existed: bool) -> str:
        """This store's own name, made when its file is: the sync's watermarks are kept per
        store, so a second store of a device (a gateway's lost store replaced, two gateways
        sharing an id) is sent whole rather than read from where another store's sync
        stopped, which would leave its older readings behind for good. The name is tied to
        the file it was made in (device and inode): a copy (a cloned card, a backup restored
        beside the original) or a file moved to another disk takes a new name and is sent
        whole again, which the cloud's upserts make harmless. A store from before stores had
        names keeps the shared name "" (and its watermarks) in its own file."""
        here = _file_id(self.path)
        try:
            row = self._conn.execute(f"SELECT store_id, file_id FROM {IDENTITY}").fetchone()
        except sqlite3.OperationalError:  # no name yet
            row = None
        except sqlite3.Error as error:
            self._conn.close()
            raise StoreError(f"SQLite store {self.path}: read failed ({error})") from None
        if row is not None and (row[1] == here or here is None):
            return row[0]
        made = uuid.uuid4().hex if row is not None or not existed else ""
        try:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute(f"CREATE TABLE IF NOT EXISTS {IDENTITY} (store_id TEXT NOT NULL, file_id TEXT)")
                again = self._conn.execute(f"SELECT store_id, file_id FROM {IDENTITY}").fetchone()  # named meanwhile
                if again is not None and again[1] == here:
                    return again[0]
                self._conn.execute(f"DELETE FROM {IDENTITY}")
                self._conn.execute(f"INSERT INTO {IDENTITY} VALUES (?, ?)", (made, here))
        except sqlite3.Error:  # a store that cannot be written is read under the name it has
            return row[0] if row is not None else ""
        if row is not None:
            log.warning("edge store %s is a copy of another (or moved to another disk): its readings are sent whole "
                        "under a new name", self.path)
        return made

    @property
    def source(self) -> str:
        """The name the sync keeps this store's watermarks under."""
        return store_source(SOURCE, self.store_id)

    def write(self, frame: pd.DataFrame) -> int:
        if frame.empty:
            return 0
        columns = [frame[dd.DEVICE_ID].astype(str).tolist(), ts_to_micros(frame[dd.TS]).tolist()]
        for name, typ in dd.FIELD_TYPES.items():
            values = frame[name]
            if typ is str:
                columns.append(values.astype(str).tolist())
            else:
                floats = values.to_numpy(dtype="float64", na_value=np.nan)
                # a missing integer (a measured device reports no cycle count) becomes None below
                as_list = np.nan_to_num(floats).astype("int64").tolist() if typ is int else floats.tolist()
                columns.append([None if f != f else v for f, v in zip(floats.tolist(), as_list)])
        try:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(self._insert, zip(*columns))
                self._late.note(columns[0], columns[1])
        except sqlite3.Error as error:
            raise StoreError(f"SQLite store {self.path}: write failed ({error})") from None
        return len(frame)

    def late_writes(self) -> tuple[dict[str, list[LateRange]], int]:
        try:
            return self._late.pending()
        except sqlite3.Error as error:
            raise StoreError(f"SQLite store {self.path}: read failed ({error})") from None

    def acknowledge_late_writes(self, through: int) -> None:
        self._late.acknowledge(through)

    def _select(self, where: str, params: list, limit: int | None, order: str = "ASC",
                device_id: str | None = None) -> pd.DataFrame:
        # A pinned device is not read back per row.
        names = block_order([c for c in dd.COLUMNS if device_id is None or c != dd.DEVICE_ID])
        sql = f"SELECT {', '.join(names)} FROM {TABLE} {where} ORDER BY {dd.DEVICE_ID}, {dd.TS} {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        try:
            rows = self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as error:
            raise StoreError(f"SQLite store {self.path}: read failed ({error})") from None
        if not rows:
            return dd.empty_frame()
        return frame_from_rows(rows, names, None if device_id is None else {dd.DEVICE_ID: device_id})

    @staticmethod
    def _where(device_id: str | None, start: pd.Timestamp | None, stop: pd.Timestamp | None) -> tuple[str, list]:
        clauses, params = [], []
        if device_id is not None:
            clauses.append(f"{dd.DEVICE_ID} = ?")
            params.append(device_id)
        if start is not None:
            clauses.append(f"{dd.TS} >= ?")
            params.append(bound_micros(start))
        if stop is not None:
            clauses.append(f"{dd.TS} < ?")
            params.append(bound_micros(stop))
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    def read_range(self, device_id, start=None, stop=None, limit=None) -> pd.DataFrame:
        where, params = self._where(device_id, start, stop)
        return self._select(where, params, limit, device_id=device_id)

    def latest(self, device_id: str) -> pd.DataFrame:
        return self._select(f"WHERE {dd.DEVICE_ID} = ?", [device_id], 1, order="DESC", device_id=device_id)

    def devices(self) -> list[str]:
        try:
            return [r[0] for r in self._conn.execute(f"SELECT DISTINCT {dd.DEVICE_ID} FROM {TABLE} ORDER BY 1")]
        except sqlite3.Error as error:
            raise StoreError(f"SQLite store {self.path}: read failed ({error})") from None

    def count(self, device_id: str | None = None, start: pd.Timestamp | None = None) -> int:
        where, params = self._where(device_id, start, None)
        try:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM {TABLE} {where}", params).fetchone()[0])
        except sqlite3.Error as error:
            raise StoreError(f"SQLite store {self.path}: read failed ({error})") from None

    def put_site(self, site: dict) -> None:
        names = list(dd.SITE_FIELDS)
        values = [site.get(n) for n in names]
        with self._conn:
            self._conn.execute(
                f"INSERT OR REPLACE INTO sites ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", values
            )

    def sites(self) -> list[dict]:
        names = list(dd.SITE_FIELDS)
        try:
            rows = self._conn.execute(f"SELECT {', '.join(names)} FROM sites ORDER BY device_id").fetchall()
        except sqlite3.Error as error:
            raise StoreError(f"SQLite store {self.path}: read failed ({error})") from None
        return [
            {n: (bool(v) if dd.SITE_FIELDS[n] is bool and v is not None else v) for n, v in zip(names, row)}
            for row in rows
        ]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SQLiteEdgeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
