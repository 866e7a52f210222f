"""Rows per second: 500,000 readings from the SQLite edge store into Postgres end to end
(the sync job's bulk path: read, validate, COPY + INSERT … ON CONFLICT, watermarks), then
psycopg ``executemany`` upserting the same rows, in one run (targets: at least
60,000 rows/s end to end and at least 1.5x executemany).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python benchmarks/bench_sync.py [--rows N]

Creates and drops its own database on that server; the edge file lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._database import throwaway_database  # noqa: E402
from benchmarks._machine import describe  # noqa: E402
from cloud.store import schema as s  # noqa: E402
from cloud.store.postgres import PostgresCloudStore  # noqa: E402
from cloud.sync.job import SyncSettings, sync_once  # noqa: E402
from edge_gateway.stores.sqlite import SQLiteEdgeStore  # noqa: E402
from tests.sync_fixtures import readings  # noqa: E402

DEVICES = 10


def executemany_upsert(url: str, frame, batch: int) -> float:
    spec = s.table(s.READINGS)
    columns = s.python_columns(s.READINGS, s.coerce(s.READINGS, frame))
    names = list(columns)
    sql = (f"INSERT INTO {s.READINGS} ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))}) "
           f"ON CONFLICT ({', '.join(spec.keys)}) DO UPDATE SET "
           + ", ".join(f"{c} = EXCLUDED.{c}" for c in names if c not in spec.keys))
    rows = list(zip(*columns.values()))
    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for start in range(0, len(rows), batch):
            cur.executemany(sql, rows[start:start + batch])
            conn.commit()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--batch-size", type=int, default=50_000, help="SYNC_BATCH_SIZE for the sync")
    args = parser.parse_args()
    with throwaway_database() as url:
        with tempfile.TemporaryDirectory() as folder:
            frame = readings(DEVICES, args.rows // DEVICES, seed=11)
            with SQLiteEdgeStore(Path(folder) / "edge.db") as edge:
                edge.write(frame)
                with PostgresCloudStore(url) as cloud:
                    cloud.init_schema()
                    started = time.perf_counter()
                    result = sync_once(edge, cloud, SyncSettings(batch_size=args.batch_size))
                    bulk_s = time.perf_counter() - started
                    assert cloud.count_readings() == len(frame) == result.rows_synced
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"TRUNCATE {s.READINGS}")
            many_s = executemany_upsert(url, frame, args.batch_size)
    bulk, many = len(frame) / bulk_s, len(frame) / many_s
    print(f"machine: {describe()}, {platform.system()}")
    print(f"rows: {len(frame):,} ({DEVICES} devices), batch size {args.batch_size:,}")
    print(f"sync end to end (SQLite edge -> COPY + upsert): {bulk:,.0f} rows/s ({bulk_s:.2f} s)")
    print(f"psycopg executemany upsert (same rows):          {many:,.0f} rows/s ({many_s:.2f} s)")
    print(f"speed-up: {bulk / many:.2f}x   targets: >= 60,000 rows/s and >= 1.5x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
