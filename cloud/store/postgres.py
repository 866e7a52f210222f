"""Postgres cloud store through psycopg 3 (``DATABASE_URL``).

Bulk writes go through binary COPY into a temporary staging table, then one
``INSERT … SELECT … ON CONFLICT DO UPDATE``: COPY is the fast path into Postgres,
the staging table is what lets COPY upsert. Readings newer than everything stored for their
device cannot conflict, so they are copied straight into ``der_readings`` (one pass instead
of two, ~1.4x faster); should another writer have stored the same keys meanwhile, the COPY
fails inside a savepoint and those rows take the upsert path. Migrations are applied on
first use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import pandas as pd
import psycopg
from psycopg.adapt import Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import Format
from psycopg.types.json import Jsonb

from cloud.store import migrations, pg_copy
from cloud.store import schema as s
from cloud.store.common import TableStore, run_error, run_row, watermark_upsert_sql
from der_core import der_data as dd
from der_core.errors import StoreError, StoreUnavailable

_PG_TYPES = {s.TEXT: "text", s.FLOAT: "float8", s.INT: "int8", s.BOOL: "bool", s.TS: "timestamptz", s.JSON: "jsonb"}


def describe_url(url: str) -> str:
    """``host:port/dbname`` of a connection string, never its password."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise StoreError("DATABASE_URL: expected postgresql://user@host:port/dbname") from None
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', info.get('user', ''))}"


#: PostgreSQL's epoch (2000-01-01T00:00Z) in microseconds since 1970-01-01T00:00Z.
_PG_EPOCH_US = 946_684_800_000_000


class MicrosLoader(Loader):
    """A binary ``timestamptz`` as integer microseconds since 1970 (what the server sends, moved
    to the Unix epoch), not a ``datetime``: a week of one site's readings is two thousand of
    them, and building the objects and reading them back into an array cost more than the
    query (:func:`schema.frame_from_records` with ``ts_micros``)."""

    format = Format.BINARY

    def load(self, data: Any) -> int:
        return int.from_bytes(data, "big", signed=True) + _PG_EPOCH_US


class PostgresCloudStore(TableStore):
    def __init__(self, url: str, *, connect_timeout_s: int = 5, init: bool = True) -> None:
        self.url = url
        self.label = f"postgres {describe_url(url)}"
        self.connect_timeout_s = connect_timeout_s
        self._connection: psycopg.Connection | None = None
        self._staged: set[str] = set()
        # Applied on the first connection rather than here, so a job started while the
        # server is down keeps running and catches up when it returns; and again on each
        # connection after one is lost, since the database may have been recreated meanwhile
        # (a restore, a dropped test database) and a job running for months must not fail
        # on every run until restarted. Applying finds nothing to do on an intact schema.
        self._init = init
        self._schema_pending = init

    def opener(self) -> Callable[[], PostgresCloudStore]:
        """A picklable callable that opens another store on the same database, for a reader
        that needs a connection of its own per thread or process (a psycopg connection runs
        one statement at a time). Each applies pending migrations on its first connection, as
        this one does, so a reader that runs before any writer still finds the tables."""
        return partial(PostgresCloudStore, self.url, connect_timeout_s=self.connect_timeout_s)

    # connection and error mapping -------------------------------------------------------
    def _conn(self) -> psycopg.Connection:
        if self._connection is None or self._connection.closed:
            try:
                self._connection = psycopg.connect(self.url, autocommit=True, connect_timeout=self.connect_timeout_s)
            except psycopg.OperationalError as error:
                raise StoreUnavailable(f"{self.label}: cannot connect ({_first_line(error)})") from None
            self._staged.clear()
            if self._schema_pending:
                self._apply_migrations(self._connection)
        return self._connection

    def _apply_migrations(self, conn: psycopg.Connection) -> None:
        try:
            migrations.apply_postgres(conn)
        except psycopg.OperationalError as error:
            self._drop_connection()
            raise StoreUnavailable(f"{self.label}: apply migrations failed ({_first_line(error)})") from None
        except psycopg.Error as error:
            raise StoreError(f"{self.label}: apply migrations failed ({_first_line(error)})") from None
        self._schema_pending = False

    @contextmanager
    def _guard(self, action: str) -> Iterator[psycopg.Connection]:
        conn = self._conn()
        try:
            yield conn
        except psycopg.OperationalError as error:
            self._drop_connection()
            raise StoreUnavailable(f"{self.label}: {action} failed ({_first_line(error)})") from None
        except psycopg.Error as error:
            if conn.closed:
                self._drop_connection()
                raise StoreUnavailable(f"{self.label}: {action} failed ({_first_line(error)})") from None
            raise StoreError(f"{self.label}: {action} failed ({_first_line(error)})") from None

    def _drop_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except psycopg.Error:
                pass
        self._connection = None
        self._schema_pending = self._schema_pending or self._init

    def init_schema(self) -> None:
        self._schema_pending = True
        if self._connection is None or self._connection.closed:
            self._conn()  # a new connection applies what is pending
        else:
            self._apply_migrations(self._connection)

    # writes ------------------------------------------------------------------------------
    def upsert_frame(self, table: str, frame: pd.DataFrame, update: Sequence[str] | None = None) -> int:
        if frame.empty:
            return 0
        spec = s.table(table)
        data, update = s.to_write(table, frame, update)
        names = list(spec.writable)
        total = len(data)
        stage = f"_stage_{table}"
        updates = s.updated_columns(table, names, update)
        on_conflict = (
            "DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in updates) if updates else "DO NOTHING"
        )
        with self._guard(f"upsert into {table}") as conn, conn.transaction():
            if table == s.READINGS:
                data = self._append_new_readings(conn, data, names)
                if data.empty:
                    return total
            payload = pg_copy.encode(data, names, [spec.columns[c] for c in names])
            if stage not in self._staged:
                conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table}) ON COMMIT DELETE ROWS")
                self._staged.add(stage)
            with conn.cursor() as cur:
                self._copy(cur, stage, table, names, data, payload)
                cur.execute(
                    f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(names)} FROM {stage} "
                    f"ON CONFLICT ({', '.join(spec.keys)}) {on_conflict}"
                )
        return total

    @staticmethod
    def _copy(cur: psycopg.Cursor, target: str, table: str, names: list[str], data: pd.DataFrame,
              payload: bytes | None) -> None:
        spec = s.table(table)
        with cur.copy(f"COPY {target} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)") as copy:
            if payload is not None:
                copy.write(payload)
            else:
                copy.set_types([_PG_TYPES[spec.columns[c]] for c in names])
                for row in _python_rows(table, data):
                    copy.write_row(row)

    @staticmethod
    def _newest_stored(conn: psycopg.Connection, devices: list[str]) -> dict[str, Any]:
        """Each device's newest stored reading time (None when it has none): one backward
        primary-key probe per device, whatever the table's size."""
        return dict(conn.execute(
            f"SELECT d, (SELECT max({dd.TS}) FROM {s.READINGS} WHERE {dd.DEVICE_ID} = d) FROM unnest(%s::text[]) AS d",
            (devices,),
        ).fetchall())

    def _append_new_readings(self, conn: psycopg.Connection, data: pd.DataFrame, names: list[str]) -> pd.DataFrame:
        """COPY the readings newer than each device's newest stored one straight into the
        table, inside the caller's transaction; returns the rest, which must be upserted."""
        newest = self._newest_stored(conn, data[dd.DEVICE_ID].unique().tolist())
        floor = pd.to_datetime(data[dd.DEVICE_ID].map(newest), utc=True)  # NaT: nothing stored yet
        fresh = (floor.isna() | (data[dd.TS] > floor)).to_numpy()
        if not fresh.any():
            return data
        appended = data[fresh]
        spec = s.table(s.READINGS)
        try:
            with conn.transaction(), conn.cursor() as cur:  # a savepoint: a clash undoes only this COPY
                self._copy(cur, s.READINGS, s.READINGS, names, appended,
                           pg_copy.encode(appended, names, [spec.columns[c] for c in names]))
        except psycopg.errors.UniqueViolation:
            return data  # another writer stored some of these keys meanwhile: upsert them all
        return data[~fresh]

    def set_watermark(self, source: str, device_id: str, ts: pd.Timestamp, rows_synced: int) -> None:
        with self._guard(f"set watermark {source}") as conn:
            conn.execute(watermark_upsert_sql("%s"), (source, device_id, dd.parse_ts(ts).to_pydatetime(),
                                                      int(rows_synced), dd.utc_now().to_pydatetime()))

    def start_run(self, job: str, details: Mapping[str, Any] | None = None) -> int:
        row = run_row(job, details)
        with self._guard("start run") as conn:
            return int(conn.execute(
                f"INSERT INTO {s.RUNS} ({s.JOB}, {s.STARTED_AT}, {s.STATUS}, {s.ROWS}, {s.DETAILS}) "
                f"VALUES (%s, %s, %s, 0, %s) RETURNING {s.RUN_ID}",
                (job, row[s.STARTED_AT].to_pydatetime(), row[s.STATUS], json.dumps(row[s.DETAILS])),
            ).fetchone()[0])

    def finish_run(self, run_id: int, status: str, rows: int = 0, error: str | None = None) -> None:
        with self._guard("finish run") as conn:
            conn.execute(
                f"UPDATE {s.RUNS} SET {s.FINISHED_AT} = now(), {s.STATUS} = %s, {s.ROWS} = %s, {s.ERROR} = %s "
                f"WHERE {s.RUN_ID} = %s",
                (status, int(rows), run_error(error), int(run_id)),
            )

    # reads -------------------------------------------------------------------------------
    @staticmethod
    def _where(equals, start, stop) -> tuple[str, list]:
        clauses, params = [], []
        for column, value in (equals or {}).items():
            clauses.append(f"{column} = %s")
            params.append(dd.parse_ts(value).to_pydatetime() if isinstance(value, pd.Timestamp) else value)
        for op, bound in ((">=", start), ("<", stop)):
            if bound is not None:
                clauses.append(f"{dd.TS} {op} %s")
                params.append(dd.parse_ts(bound).to_pydatetime())
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _read(self, table, equals, start, stop, limit, descending, columns=None) -> pd.DataFrame:
        spec = s.table(table)
        names = list(columns or spec.columns)
        where, params = self._where(equals, start, stop)
        order = ", ".join(f"{k} {'DESC' if descending else 'ASC'}" for k in spec.keys)
        sql = f"SELECT {', '.join(names)} FROM {table} {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._guard(f"read {table}") as conn, conn.cursor(binary=True) as cur:
            cur.adapters.register_loader("timestamptz", MicrosLoader)
            rows = cur.execute(sql, params).fetchall()
        return s.frame_from_records(table, rows, names, ts_micros=True)

    def _count(self, table, equals, start, stop) -> int:
        where, params = self._where(equals, start, stop)
        with self._guard(f"count {table}") as conn:
            return int(conn.execute(f"SELECT COUNT(*) FROM {table} {where}", params).fetchone()[0])

    def _delete(self, table, equals) -> int:
        where, params = self._where(equals, None, None)
        with self._guard(f"delete from {table}") as conn:
            return conn.execute(f"DELETE FROM {table} {where}", params).rowcount

    def _delete_at(self, table, equals, times) -> int:
        where, params = self._where(equals, None, None)
        instants = [ts.to_pydatetime() for ts in times]
        with self._guard(f"delete from {table}") as conn:
            return conn.execute(f"DELETE FROM {table} {where} AND {dd.TS} = ANY(%s)", [*params, instants]).rowcount

    def newest(self, table, column, equals=None, start=None) -> pd.Timestamp | None:
        s.table(table).columns[column]  # a name outside the schema never reaches the SQL
        where, params = self._where(equals, start, None)
        with self._guard(f"read {table}") as conn:
            value = conn.execute(f"SELECT MAX({column}) FROM {table} {where}", params).fetchone()[0]
        return None if value is None else dd.parse_ts(value)

    def reading_stats(self) -> dict[str, dict[str, Any]]:
        with self._guard("read reading stats") as conn:
            rows = conn.execute(
                f"SELECT {dd.DEVICE_ID}, {s.FIRST_TS}, {s.LAST_TS}, {s.ROW_COUNT} FROM {s.READING_STATS}"
            ).fetchall()
        return {
            device: {s.FIRST_TS: dd.parse_ts(first), s.LAST_TS: dd.parse_ts(last), s.ROW_COUNT: int(n)}
            for device, first, last, n in rows
        }

    def close(self) -> None:
        self._drop_connection()


def _python_rows(table: str, data: pd.DataFrame) -> Iterator[tuple]:
    columns = s.python_columns(table, data)
    for name in columns:
        if s.table(table).columns[name] == s.JSON:  # already JSON text: send it as is, not as a JSON string
            columns[name] = [None if v is None else Jsonb(v, dumps=_as_is) for v in columns[name]]
    return zip(*columns.values())


def _as_is(text: str) -> str:
    return text


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
