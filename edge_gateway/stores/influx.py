"""InfluxDB 2.x edge store, with a durable SQLite outbox so a gateway loses nothing offline.

Why not the client's batching writer: it keeps points only in memory, reports failures only
through callbacks, and its ``flush()`` is a no-op in influxdb-client 1.50. So writes use the
SYNCHRONOUS API and batching is ours:

* ``write(frame)`` validates and encodes the frame, then appends the rows to the table
  ``influx_spool`` in the spool's SQLite file (one transaction) before anything is sent. A
  crash, a power cut or a dead network never loses an accepted reading.
* A flush sends the spool oldest first (by arrival) in batches of ``batch_size`` lines and
  deletes each batch once InfluxDB has acknowledged it. It runs when ``batch_size`` readings
  wait, when the oldest has waited ``flush_interval_s`` (checked on every call and by a
  background thread), on ``flush()``/``replay_spool()`` and on ``close()``.
* A batch is retried ``max_retries`` times with exponential backoff and jitter on 5xx, 429,
  timeouts and refused connections. When that fails the rows stay in the spool and automatic
  flushes pause (growing backoff) so the gateway keeps working; the next successful flush,
  or an explicit ``replay_spool()``, drains it.
* While the server is known down, a writer's store asks it once per pause, not once per
  call: each call in between (a flush, a read of the gateway's step) fails at once with the
  last error, and the call after the pause makes one attempt without retries, as the pause
  is the backoff. Retried on every step, an outage cost each reading seconds of retries, so
  a gateway reading every few seconds skipped readings for as long as it lasted.
* A batch the server refuses as malformed (400) cannot succeed by retrying; it moves to
  ``influx_rejected`` with the server's message, never dropped, and the rest continues.
* Reads merge the rows still waiting in the spool, so the sync job never misses them.
* What is said: a failed flush is one warning with the readings that wait; closing after
  writes that are still spooled (the flush skipped while paused) is one warning too. A store
  opened while the server is down says so at DEBUG only: a reader (the sync, ``--status``)
  meets the error itself, a writer hears it from its first failed flush or at close.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd
import urllib3
from influxdb_client import BucketRetentionRules, InfluxDBClient
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from der_core import der_data as dd
from der_core.errors import StoreError, StoreUnavailable
from der_core.redact import redact
from edge_gateway.stores import influx_protocol as lp
from edge_gateway.stores.base import store_source
from edge_gateway.stores.influx_settings import InfluxSettings
from edge_gateway.stores.sqlite import (
    LateRange,
    LateWrites,
    SQLiteEdgeStore,
    bound_micros,
    connect,
    ts_to_micros,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BACKOFF_S = 300.0
#: The sync's source name of an InfluxDB edge store; its bucket's name and id follow it.
SOURCE = "edge:influxdb"
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


class _Rejected(StoreError):
    """InfluxDB refused a batch as malformed (400): retrying the same bytes cannot succeed."""


class _Outbox:
    """Readings accepted but not yet acknowledged by InfluxDB, in the spool's SQLite file."""

    def __init__(self, spool: SQLiteEdgeStore, bucket: str) -> None:
        self._conn = connect(spool.path)
        if not self._has("influx_named_bucket"):
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                # A spool from before buckets were named by id: its store's watermarks are kept
                # under the bucket's name alone, which the bucket it next finds keeps.
                before_ids = self._has("influx_spool") and not self._has("influx_named_bucket")
                self._conn.execute("CREATE TABLE IF NOT EXISTS influx_named_bucket (bucket TEXT PRIMARY KEY, bucket_id TEXT)")
                if before_ids:
                    self._conn.execute("INSERT OR IGNORE INTO influx_named_bucket VALUES (?, NULL)", (bucket,))
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS influx_spool (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            f" {dd.DEVICE_ID} TEXT NOT NULL, ts_us INTEGER NOT NULL, row_json TEXT NOT NULL)"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS influx_rejected (seq INTEGER PRIMARY KEY, row_json TEXT NOT NULL,"
            " error TEXT NOT NULL, rejected_at TEXT NOT NULL)"
        )
        self.late = LateWrites(self._conn)

    def _has(self, table: str) -> bool:
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() \
            is not None

    def bucket_identity(self, bucket: str, bucket_id: str) -> str:
        """The identity the store of bucket ``bucket_id`` syncs under: none ("") for the bucket
        a spool from before ids named by name alone (the first one it finds under that name),
        else the id."""
        query = "SELECT bucket_id FROM influx_named_bucket WHERE bucket = ?"
        row = self._conn.execute(query, (bucket,)).fetchone()
        if row is not None and row[0] is None:
            try:
                with self._conn:
                    self._conn.execute("UPDATE influx_named_bucket SET bucket_id = ? WHERE bucket = ? AND bucket_id IS NULL",
                                       (bucket_id, bucket))
            except sqlite3.Error:  # a spool that cannot be written adopts no bucket yet
                return bucket_id
            row = self._conn.execute(query, (bucket,)).fetchone()  # another process may have adopted one first
        return "" if row is not None and row[0] == bucket_id else bucket_id

    def add(self, frame: pd.DataFrame) -> None:
        rows = dd.frame_to_rows(frame)
        micros = ts_to_micros(frame[dd.TS]).tolist()
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                f"INSERT INTO influx_spool ({dd.DEVICE_ID}, ts_us, row_json) VALUES (?, ?, ?)",
                [(r[dd.DEVICE_ID], us, json.dumps(r)) for r, us in zip(rows, micros)],
            )
            self.late.note([r[dd.DEVICE_ID] for r in rows], micros)

    def oldest(self, n: int) -> tuple[list[int], pd.DataFrame]:
        rows = self._conn.execute("SELECT seq, row_json FROM influx_spool ORDER BY seq LIMIT ?", (n,)).fetchall()
        return [r[0] for r in rows], dd.rows_to_frame(json.loads(r[1]) for r in rows)

    def remove(self, seqs: list[int]) -> None:
        with self._conn:
            self._conn.executemany("DELETE FROM influx_spool WHERE seq = ?", [(s,) for s in seqs])

    def reject(self, seqs: list[int], error: str) -> None:
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            for seq in seqs:
                self._conn.execute(
                    "INSERT INTO influx_rejected SELECT seq, row_json, ?, ? FROM influx_spool WHERE seq = ?",
                    (error, dd.format_ts(dd.utc_now()), seq),
                )
                self._conn.execute("DELETE FROM influx_spool WHERE seq = ?", (seq,))

    def size(self, table: str = "influx_spool") -> int:
        return int(self._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def frame(self, device_id: str | None, start=None, stop=None) -> pd.DataFrame:
        clauses, params = [], []
        for clause, value in ((f"{dd.DEVICE_ID} = ?", device_id), ("ts_us >= ?", bound_micros(start)),
                              ("ts_us < ?", bound_micros(stop))):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._conn.execute(f"SELECT row_json FROM influx_spool {where} ORDER BY seq", params).fetchall()
        frame = dd.rows_to_frame(json.loads(r[0]) for r in rows)
        # A reading written twice before a flush: the later write is the one InfluxDB keeps.
        return frame.drop_duplicates(list(dd.KEY_COLUMNS), keep="last")

    def close(self) -> None:
        self._conn.close()


def _merge(remote: pd.DataFrame, waiting: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    if waiting.empty:
        return remote
    both = pd.concat([remote, waiting], ignore_index=True).drop_duplicates(list(dd.KEY_COLUMNS), keep="last")
    both = both.sort_values(list(dd.KEY_COLUMNS), kind="stable").reset_index(drop=True)
    return dd.coerce_frame(both if limit is None else both.head(limit))


class InfluxEdgeStore:
    """The configured edge store (DESIGN.md, "Stores"); see the module docstring for delivery."""

    @property
    def source(self) -> str:
        """The name the sync keeps this store's watermarks under: its bucket's name and id. A
        bucket deleted and made again under the same name is another store, sent whole; named
        by name alone it would be read from where the old bucket's sync stopped, and its
        readings behind that would never reach the cloud. The id is asked of the server at
        each call (one lookup, as a sync run makes once), since a bucket can be replaced
        while a sync runs. The bucket a store from before ids found first keeps the bare
        name, and the watermarks kept under it (:meth:`_Outbox.bucket_identity`)."""
        s = self.settings
        found = [b for b in self._call(lambda: self._client.buckets_api().find_buckets(name=s.bucket, org=s.org)).buckets
                 or [] if b.name == s.bucket]
        if not found:
            raise StoreError(f"InfluxDB at {redact(s.url)}: no bucket {s.bucket} in organisation {s.org}; expected the "
                             "gateway to have made it (it does at its first start)")
        return store_source(f"{SOURCE}:{s.bucket}", self._outbox.bucket_identity(s.bucket, found[0].id))

    def __init__(
        self,
        settings: InfluxSettings,
        spool: SQLiteEdgeStore,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        background: bool = True,
        reader: bool = False,
    ) -> None:
        """``reader``: a process that only reads (the sync, ``--status``) over the gateway's own
        spool: it sends nothing and creates no bucket, so readings its gateway left spooled
        are read from the spool, sent by the gateway, and a server that is down is the
        reader's one error line rather than warnings of a spool that is not its own."""
        self.settings = settings
        self.reader = reader
        self._spool = spool
        self._outbox = _Outbox(spool, settings.bucket)
        self._sleep, self._clock, self._rng = sleep, clock, rng or random.Random()
        self._lock = threading.RLock()
        self._failures = 0
        self._paused_until = float("-inf")
        # Rows left by an earlier run are overdue: the first chance to flush replays them.
        self._waiting_since: float | None = float("-inf") if self._outbox.size() else None
        self._bucket_ready = False
        self._written = 0  # readings this process handed to write(), for what close() says
        self.last_error: str | None = None
        self._client = InfluxDBClient(
            url=settings.url, token=settings.token, org=settings.org,
            timeout=int(settings.timeout_s * 1000), retries=False,
        )
        self._writer = self._client.write_api(write_options=SYNCHRONOUS)
        self._stop = threading.Event()
        try:
            if not reader:
                self._ensure_bucket()
        except StoreUnavailable as error:
            self._note_failure(error, logging.DEBUG)  # start offline: readings wait in the spool
        except StoreError:
            self._client.close()
            self._outbox.close()
            spool.close()  # the store owns its spool from here on, as close() shows
            raise
        self._thread = None
        if background and not reader and settings.flush_interval_s > 0:
            self._thread = threading.Thread(target=self._flush_loop, name="influx-flush", daemon=True)
            self._thread.start()

    # --- errors and retries ---
    def _wrap(self, error: Exception) -> StoreError:
        s, url, bucket = self.settings, redact(self.settings.url), self.settings.bucket
        if isinstance(error, ApiException):
            status = error.status or 0
            reason = _server_message(error)
            if status in (401, 403):
                return StoreError(f"InfluxDB at {url} rejected the token ({status}): expected a token with"
                                  f" write access to bucket {bucket}")
            if status == 404:
                return StoreError(f"InfluxDB at {url}: {reason} (404): expected organisation {s.org} and bucket"
                                  f" {bucket} to exist or the token to be allowed to create the bucket")
            if status in _TRANSIENT_STATUS:
                return StoreUnavailable(f"InfluxDB at {url} is unavailable ({status}: {reason}): expected it to"
                                        f" accept requests for bucket {bucket}")
            if status == 400:
                return _Rejected(f"InfluxDB at {url} refused the data (400: {reason}): expected valid line protocol")
            return StoreError(f"InfluxDB at {url} refused the request ({status}: {reason})")
        if isinstance(error, InfluxDBError):
            return StoreError(f"InfluxDB at {url}: {error.message}")
        reason = getattr(error, "reason", None) or error
        return StoreUnavailable(f"InfluxDB at {url} cannot be reached ({type(error).__name__}: {reason}):"
                                " expected an InfluxDB 2.x server listening there")

    def _backoff(self, attempt: int) -> float:
        # "Equal jitter": half the exponential delay is fixed, half random, so gateways that lost
        # the server together do not all come back at the same instant.
        delay = min(MAX_BACKOFF_S, self.settings.retry_base_s * 2**attempt)
        return delay / 2 + self._rng.uniform(0, delay / 2)

    def _known_down(self) -> bool:
        """A writer whose last call failed on a server that is unavailable: it waits out its pause."""
        return not self.reader and self._failures > 0

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one client call, retrying transient failures; vendor errors come out as ours.

        A writer's store whose server is known down makes one attempt: its pause between
        attempts is the backoff."""
        retries = 0 if self._known_down() else self.settings.max_retries
        for attempt in range(retries + 1):
            try:
                return fn()
            except (ApiException, InfluxDBError, urllib3.exceptions.HTTPError, OSError) as vendor:
                error = self._wrap(vendor)
            if not isinstance(error, StoreUnavailable) or attempt == retries:
                raise error
            self._sleep(self._backoff(attempt))
        raise AssertionError("unreachable")

    def _note_failure(self, error: StoreError, level: int = logging.WARNING) -> None:
        self.last_error = str(error)
        self._failures += 1
        self._paused_until = self._clock() + self._backoff(min(self._failures, 16))
        log.log(level, "%s; %d readings wait in the spool", error, self._outbox.size())

    # --- bucket ---
    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        s = self.settings
        buckets = self._client.buckets_api()
        found = self._call(lambda: buckets.find_buckets(name=s.bucket, org=s.org)).buckets or []
        if not any(b.name == s.bucket for b in found):
            rules = [BucketRetentionRules(type="expire", every_seconds=s.retention_days * 86400)] \
                if s.retention_days > 0 else []
            self._call(lambda: buckets.create_bucket(bucket_name=s.bucket, retention_rules=rules, org=s.org))
            log.info("created InfluxDB bucket %s (retention %s days)", s.bucket, s.retention_days or "infinite")
        self._bucket_ready = True

    # --- writing ---
    def write(self, frame: pd.DataFrame) -> int:
        if frame.empty:
            return 0
        try:
            lp.frame_to_lines(frame)  # refuse what InfluxDB could never store before accepting it
        except ValueError as error:
            raise StoreError(f"InfluxDB store: {error}") from None
        with self._lock:
            self._outbox.add(frame)
            self._written += len(frame)
            if self._waiting_since is None:
                self._waiting_since = self._clock()
        self.flush_if_due()
        return len(frame)

    def flush_if_due(self) -> int:
        """Flush when a batch is full or the oldest reading has waited long enough, unless paused."""
        with self._lock:
            if self.reader or self._waiting_since is None or self._clock() < self._paused_until:
                return 0
            overdue = self._clock() - self._waiting_since >= self.settings.flush_interval_s
            if not overdue and self._outbox.size() < self.settings.batch_size:
                return 0
            try:
                return self.flush()
            except StoreUnavailable:
                return 0  # already logged; the rows wait in the spool

    def flush(self) -> int:
        """Send every waiting reading, oldest first; return how many InfluxDB acknowledged.

        Raises :class:`StoreUnavailable` (rows stay spooled) or :class:`StoreError` (bad token,
        missing organisation: rows stay spooled until the configuration is fixed).
        """
        sent = 0
        with self._lock:
            try:
                self._ensure_bucket()
                while True:
                    seqs, frame = self._outbox.oldest(self.settings.batch_size)
                    if not seqs:
                        break
                    sent += self._send(seqs, frame)
            except StoreError as error:
                self._note_failure(error)
                raise
            self._failures, self._paused_until, self._waiting_since = 0, float("-inf"), None
            self.last_error = None
        return sent

    def _send(self, seqs: list[int], frame: pd.DataFrame) -> int:
        lines = lp.frame_to_lines(frame, "ns")
        s = self.settings
        try:
            self._call(lambda: self._writer.write(bucket=s.bucket, org=s.org, record=lines, write_precision="ns"))
        except _Rejected as error:
            log.error("%s; %d readings moved to influx_rejected", error, len(seqs))
            self._outbox.reject(seqs, str(error))
            return 0
        self._outbox.remove(seqs)
        return len(seqs)

    def replay_spool(self) -> int:
        """Send what the spool holds now (e.g. when the daemon sees InfluxDB come back)."""
        return self.flush()

    def spool_size(self) -> int:
        """Readings accepted but not yet acknowledged by InfluxDB."""
        return self._outbox.size()

    def rejected_size(self) -> int:
        """Readings InfluxDB refused as malformed, kept in ``influx_rejected`` for inspection."""
        return self._outbox.size("influx_rejected")

    def ping(self) -> bool:
        return bool(self._client.ping())

    def status(self) -> dict[str, Any]:
        """Connectivity and backlog, for the daemon's ``--status``."""
        return {"url": self.settings.url, "bucket": self.settings.bucket, "reachable": self.ping(),
                "spool_size": self.spool_size(), "rejected": self.rejected_size(), "last_error": self.last_error}

    def _flush_loop(self) -> None:
        while not self._stop.wait(min(self.settings.flush_interval_s, 1.0)):
            try:
                self.flush_if_due()
            except StoreError as error:
                log.error("%s", error)

    # --- reading ---
    def _query(self, flux: str) -> str:
        """A read's answer. A writer's failed read pauses the store as a failed flush does, so the
        gateway's next steps do not wait on a server the read found down; a success ends the pause."""
        api = self._client.query_api()
        with self._lock:
            if self._known_down() and self._clock() < self._paused_until:
                raise StoreUnavailable(f"{self.last_error} (next attempt in {self._paused_until - self._clock():.0f} s)")
            try:
                answer = self._call(lambda: api.query_raw(flux, org=self.settings.org).data.decode("utf-8"))
            except StoreUnavailable as error:
                if not self.reader:
                    self._note_failure(error)
                raise
            if self._known_down():
                self._failures, self._paused_until = 0, float("-inf")
            return answer

    def read_range(self, device_id, start=None, stop=None, limit=None) -> pd.DataFrame:
        self.flush_if_due()
        remote = lp.csv_to_frame(self._query(lp.range_query(self.settings.bucket, device_id, start, stop, limit)))
        return _merge(remote, self._outbox.frame(device_id, start, stop), limit)

    def latest(self, device_id: str) -> pd.DataFrame:
        times = lp.csv_values(self._query(lp.latest_time_query(self.settings.bucket, device_id)), "_time")
        remote = dd.empty_frame()
        if times:
            newest = max(times)
            remote = self.read_range(device_id, newest, newest + pd.Timedelta(1, "ns"))
        both = _merge(remote, self._outbox.frame(device_id), None)
        return both if both.empty else dd.coerce_frame(both.sort_values(dd.TS).tail(1).reset_index(drop=True))

    def devices(self) -> list[str]:
        remote = lp.csv_values(self._query(lp.devices_query(self.settings.bucket)))
        return sorted(set(map(str, remote)) | set(self._outbox.frame(None)[dd.DEVICE_ID]))

    def count(self, device_id: str | None = None, start: pd.Timestamp | None = None) -> int:
        """Stored readings plus those waiting in the spool.

        A spooled reading whose earlier write reached InfluxDB but whose acknowledgement was
        lost is counted twice until the next flush settles it.
        """
        remote = lp.csv_values(self._query(lp.count_query(self.settings.bucket, device_id, start)), "_time")
        return int(sum(remote)) + len(self._outbox.frame(device_id, start))

    # --- sites live beside the spool ---
    def late_writes(self) -> tuple[dict[str, list[LateRange]], int]:
        return self._outbox.late.pending()

    def acknowledge_late_writes(self, through: int) -> None:
        self._outbox.late.acknowledge(through)

    def put_site(self, site: dict) -> None:
        self._spool.put_site(site)

    def sites(self) -> list[dict]:
        return self._spool.sites()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            # After a recent failure, don't hold up shutdown with retries: the spool keeps the rows.
            if self.spool_size() and self._clock() >= self._paused_until and not self.reader:
                self.flush()
            elif self._written and self.spool_size():
                log.warning("closing with %d readings spooled, sent once InfluxDB takes them: %s",
                            self.spool_size(), self.last_error)
        except StoreError:
            pass  # the failed flush has said so, with the readings that wait
        finally:
            self._client.close()
            self._outbox.close()
            self._spool.close()

    def __enter__(self) -> InfluxEdgeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _server_message(error: ApiException) -> str:
    try:
        return json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(error.reason or "no message")
