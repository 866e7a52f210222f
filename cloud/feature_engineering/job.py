"""The incremental feature job: raw readings in the cloud store -> ``der_features``.

Per site, a watermark (the sync job's table, under the source ``feature_engineering:<version>``)
records the newest feature instant written, and a second one (:func:`covered_source`) the
start of the window written so far. The lookback window counts back from the site's newest
reading (never after now), so a site whose readings are history gets its features as a live
one does. A run writes from the watermark minus ``reprocess`` (never before the window
written so far) up to now, and reads ``history`` more readings before that for the lags and
rolling windows: readings that arrive after a long silence (a gateway back after weeks
offline, a second meter file imported) all get their rows, however many more than the lookback
holds. From the start of the lookback window it writes on a first run, or when the window
reaches further back than the one written so far. Readings imported for times already
written (the load of weeks whose PV came first) move the watermark back (:func:`rewind`).
Features depend only on the past, so the rows a run writes equal those of a full rebuild;
rewriting them is an idempotent upsert, and the watermark only moves after a site's rows are
stored, so a crash followed by a rerun leaves the same table. A new feature-set version (or
new settings) has a new watermark source, which rebuilds the lookback window.

Sites are a pipeline of two threads: while one writer thread stores a site's rows
and moves its watermark, the job computes the next site's features, so the store's own work
(SQLite's B-trees and WAL, a server's round trips, all outside the GIL) overlaps the maths.
The store is never used by both threads at once: the next site's readings are read after the
previous write has finished and before this one starts, so adapters need no locking.

A fleet in a store that can be opened again elsewhere (``store.opener()``, the embedded
SQLite file) goes to worker processes instead (:mod:`workers`): each reads and computes whole
sites with its own connection, and the job's process only writes, in plan order.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pandas as pd

from cloud.feature_engineering import workers as wk
from cloud.feature_engineering.pipeline import build_features
from cloud.feature_engineering.resample import (
    FILLED,
    LAST_COLUMNS,
    MEAN_COLUMNS,
    OBSERVED,
    Gap,
    resample_site,
)
from cloud.feature_engineering.settings import FeatureSettings
from cloud.job_status import record_failure
from cloud.site_steps import completed
from cloud.store import schema as s
from cloud.store.base import CloudStore
from der_core import der_data as dd
from der_core.cli_support import progress
from der_core.errors import ConfigError, DERError
from der_core.site_file import unreadable

log = logging.getLogger(__name__)

JOB = "feature_engineering"
NO_SITE_ROW = "no row in sites (time zone, country and PV system unknown)"
#: The reading columns resampling uses; reading only these halves what a rebuild fetches.
READ_COLUMNS: tuple[str, ...] = (*MEAN_COLUMNS, *LAST_COLUMNS)


@dataclass
class SiteResult:
    device_id: str
    rows: int = 0
    first_ts: pd.Timestamp | None = None
    last_ts: pd.Timestamp | None = None
    gaps: tuple[Gap, ...] = ()
    skipped: str | None = None


@dataclass
class FeatureRunResult:
    run_id: int
    version: str
    sites: list[SiteResult] = field(default_factory=list)
    readings: int = 0  # raw readings read, history included
    workers: int = 0  # worker processes that read and computed the sites (0: this process)

    @property
    def rows(self) -> int:
        return sum(site.rows for site in self.sites)


def watermark_source(settings: FeatureSettings) -> str:
    return f"{JOB}:{settings.version}"


def covered_source(settings: FeatureSettings) -> str:
    """The watermark source recording, per site, the first instant of the window written."""
    return f"{watermark_source(settings)}:from"


def rewind(store: CloudStore, device_id: str, since: pd.Timestamp) -> list[str]:
    """Readings stored at ``since`` or after for a site whose features were written past it
    (a second meter file of the same weeks: the load after the PV) leave those rows stale,
    and a run starts at its watermark: each feature version's watermark for the site moves
    back to just before ``since``, so the next run rewrites its rows from there. The
    versions moved, for the import's report."""
    marks = store.read_frame(s.WATERMARKS, {dd.DEVICE_ID: device_id})
    moved = []
    for source, mark in zip(marks[s.SOURCE], marks[s.WATERMARK_TS], strict=True):
        version = str(source).removeprefix(f"{JOB}:")
        if version != source and not version.endswith(":from") and dd.parse_ts(mark) >= since:
            store.set_watermark(str(source), device_id, since - pd.Timedelta(microseconds=1), 0)
            moved.append(version)
    return sorted(moved)


def forget_marks(store: CloudStore, device_id: str) -> int:
    """Remove every feature version's watermarks of a device whose features are removed
    (``run_cloud_sync.py --forget``): left behind, they would have the next run of a device
    imported again under the name start past rows that no longer exist. How many went."""
    marks = store.read_frame(s.WATERMARKS, {dd.DEVICE_ID: device_id})
    return sum(store.delete_rows(s.WATERMARKS, {s.SOURCE: str(source), dd.DEVICE_ID: device_id})
               for source in marks[s.SOURCE] if str(source).startswith(f"{JOB}:"))


def run_details(settings: FeatureSettings) -> dict[str, Any]:
    return {
        "version": settings.version,
        "step_minutes": settings.step.total_seconds() / 60,
        "max_gap_minutes": settings.max_gap.total_seconds() / 60,
        "rolling_window_days": settings.rolling_window_days,
        "lookback_days": settings.lookback_days,
        "site_id": settings.site_id,
    }


def run_features(store: CloudStore, settings: FeatureSettings | None = None,
                 now: pd.Timestamp | None = None) -> FeatureRunResult:
    """One incremental run, recorded in ``pipeline_runs``; raises (after recording) on failure."""
    settings = settings or FeatureSettings()
    now = dd.utc_now() if now is None else dd.parse_ts(now)
    result = FeatureRunResult(store.start_run(JOB, run_details(settings)), settings.version)
    try:
        process_sites(store, settings, plan_sites(store, settings, now), now, result)
    except BaseException as error:  # an interrupt or a defect as well: a run must never stay "running"
        record_failure(store, result.run_id, result.rows, error)
        raise
    store.finish_run(result.run_id, "ok", result.rows)
    log.info("features %s: %d rows for %d sites from %d readings in %s",
             settings.version, result.rows, len(result.sites), result.readings, store.label)
    return result


class Planned(NamedTuple):
    device: str
    site: Mapping[str, Any] | None  # its ``sites`` row; None: skipped
    start: pd.Timestamp  # the first instant to write
    covers_from: pd.Timestamp | None = None  # the window's start when this run writes it whole
    skipped: str = NO_SITE_ROW  # why, when ``site`` is None


def require_site(site_id: str, known: set[str], store: CloudStore) -> None:
    """``FE_SITE_ID`` must name a site with readings or a site row: a mistyped one would
    otherwise read as a site without features."""
    if site_id not in known:
        raise ConfigError(f"FE_SITE_ID={site_id!r}: no readings or site row for it in {store.label}")


def plan_sites(store: CloudStore, settings: FeatureSettings, now: pd.Timestamp) -> list[Planned]:
    """What to write for every site to process."""
    sites = {row[dd.DEVICE_ID]: row for row in store.sites()}
    stats = store.reading_stats()
    devices = sorted(stats)
    if settings.site_id is not None:
        require_site(settings.site_id, set(devices) | set(sites), store)
        devices = [settings.site_id]
    marks, covered = store.watermarks(watermark_source(settings)), store.watermarks(covered_source(settings))
    refused = {device: why for device, row in sites.items() if (why := unreadable(row)) is not None}
    if settings.site_id in refused:
        raise ConfigError(refused[settings.site_id])
    plan = []
    for device in devices:
        if device in refused:  # its zone and panels are unknown to this version: this site alone waits
            plan.append(Planned(device, None, now, skipped=refused[device]))
            continue
        newest = stats.get(device, {}).get(s.LAST_TS)
        anchor = now if newest is None else min(now, dd.parse_ts(newest))
        lookback_start = (anchor - pd.Timedelta(days=settings.lookback_days)).ceil(settings.step)
        # Without a recorded window start the window written is unknown: write it whole, once.
        if device in marks and device in covered and lookback_start >= covered[device]:
            start = max(covered[device], (marks[device] - settings.reprocess).ceil(settings.step))
            plan.append(Planned(device, sites.get(device), start))
        else:
            plan.append(Planned(device, sites.get(device), lookback_start, lookback_start))
    return plan


@dataclass
class SiteRows:
    """One site's computed feature rows, waiting to be stored, as ``der_features`` takes
    them (``device_id``, ``ts``, ``version``, the features): built by whichever process
    computed them, so that the writing process, the pipeline's slowest stage, only writes."""

    result: SiteResult
    rows: pd.DataFrame
    covers_from: pd.Timestamp | None = None  # Planned.covers_from


Plan = Sequence[Planned]


def process_sites(store: CloudStore, settings: FeatureSettings, plan: Plan, now: pd.Timestamp,
                  result: FeatureRunResult) -> None:
    """Compute every planned site and store its rows, in plan order; site results are added
    to ``result`` once their rows are stored."""
    opener: Callable[[], Callable[[], CloudStore]] | None = getattr(store, "opener", None)
    workers = wk.worker_count(sum(planned.site is not None for planned in plan)) if opener else 0
    if workers:
        _in_workers(store, settings, plan, now, result, opener(), workers)
    else:
        _in_threads(store, settings, plan, now, result)


def _in_threads(store: CloudStore, settings: FeatureSettings, plan: Plan, now: pd.Timestamp,
                result: FeatureRunResult) -> None:
    """Compute each site here and hand its rows to one writer thread."""
    pending: tuple[Future, SiteRows] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-writer") as writer:
        try:
            readings = _read_next(store, settings, plan, 0, now, result)
            for position, (device, site, write_start, covers_from, _) in enumerate(
                    progress(plan, total=len(plan), desc="features", unit="site")):
                if site is None:
                    pending = _stored(pending, result)  # None; waiting keeps results in plan order
                    _skip(device, plan[position].skipped, result)
                    continue
                computed = compute_site(settings, site, write_start, readings, covers_from)
                pending = _stored(pending, result)
                readings = _read_next(store, settings, plan, position + 1, now, result)
                pending = (writer.submit(store_site, store, settings, computed), computed)
            _stored(pending, result)
        except BaseException:
            _settle(pending, result)
            raise


def _in_workers(store: CloudStore, settings: FeatureSettings, plan: Plan, now: pd.Timestamp,
                result: FeatureRunResult, opener: Callable[[], CloudStore], workers: int) -> None:
    """Worker processes read and compute the sites, at most two per worker ahead of the
    writes (so a slow store never piles a fleet's rows up in memory); this process stores
    each site's rows as they come back, in plan order."""
    result.workers = workers
    sites, queued = iter(plan), deque()
    with wk.pool(opener, workers) as pool:
        def submit_next() -> None:
            planned = next(sites, None)
            if planned is not None:
                task = None if planned.site is None else pool.submit(_read_and_compute, settings, planned, now)
                queued.append((planned, task))

        try:
            for _ in range(2 * workers):
                submit_next()
            for _ in progress(range(len(plan)), total=len(plan), desc="features", unit="site"):
                planned, task = queued.popleft()
                submit_next()
                if task is None:
                    _skip(planned.device, planned.skipped, result)
                    continue
                readings, computed = task.result()
                result.readings += readings
                store_site(store, settings, computed)
                _record(computed, result)
        except BaseException as error:
            pool.shutdown(wait=True, cancel_futures=True)
            if isinstance(error, BrokenProcessPool):
                raise DERError(f"a feature worker process stopped unexpectedly ({error})") from None
            raise


def _read_and_compute(settings: FeatureSettings, planned: Planned, now: pd.Timestamp) -> tuple[int, SiteRows]:
    """One site in a worker process, read through the worker's own store."""
    readings = read_site(wk.store(), settings, planned.device, planned.start, now)
    return len(readings), compute_site(settings, planned.site, planned.start, readings, planned.covers_from)


def read_site(store: CloudStore, settings: FeatureSettings, device: str, write_start: pd.Timestamp,
              now: pd.Timestamp) -> pd.DataFrame:
    """The readings a site's features from ``write_start`` need, history included."""
    return store.read_readings(device, write_start - settings.history, now, columns=READ_COLUMNS)


def _read_next(store: CloudStore, settings: FeatureSettings, plan: Plan, position: int,
               now: pd.Timestamp, result: FeatureRunResult) -> pd.DataFrame | None:
    """The readings of the first site at or after ``position`` that has a site row."""
    for device, site, write_start, *_ in plan[position:]:
        if site is not None:
            readings = read_site(store, settings, device, write_start, now)
            result.readings += len(readings)
            return readings
    return None


def _skip(device: str, why: str, result: FeatureRunResult) -> None:
    log.warning("%s: skipped, %s", device, why)
    result.sites.append(SiteResult(device, skipped=why))


def _record(computed: SiteRows, result: FeatureRunResult) -> None:
    """A site whose rows are stored: its result, and the gaps its rows met (logged here, by
    the job's process, whichever process computed them)."""
    site = computed.result
    for gap in site.gaps:
        if gap.missing_steps:
            log.info("%s: no readings %s to %s (%d steps, %d left missing)", site.device_id,
                     dd.format_ts(gap.start), dd.format_ts(gap.end), gap.steps, gap.missing_steps)
    result.sites.append(site)


def _stored(pending: tuple[Future, SiteRows] | None, result: FeatureRunResult) -> None:
    """Wait for the write in flight (raising its error) and record its site; returns
    ``None``, the next value of ``pending``."""
    if pending is not None:
        future, computed = pending
        future.result()
        _record(computed, result)
    return None


def _settle(pending: tuple[Future, SiteRows] | None, result: FeatureRunResult) -> None:
    """After a failure: let the write in flight finish, and count its rows if it stored them
    (its own error, if any, is second to the one being raised)."""
    try:
        _stored(pending, result)
    except Exception as error:  # noqa: BLE001 - the first failure is the one reported
        log.debug("write in flight also failed: %s", error)


def compute_site(settings: FeatureSettings, site: Mapping[str, Any], write_start: pd.Timestamp,
                 readings: pd.DataFrame, covers_from: pd.Timestamp | None = None) -> SiteRows:
    """One site's feature rows from ``write_start`` on (no store access: this is what runs
    while the previous site is being written)."""
    device = site[dd.DEVICE_ID]
    if readings.empty:
        return SiteRows(SiteResult(device), readings.iloc[:0], covers_from)
    resampled = resample_site(readings, settings.step, settings.max_gap)
    grid = completed(resampled.grid, site, settings.step)
    features = build_features(grid, site, settings.step, settings.rolling_window_days)
    keep = (grid.index >= write_start) & (grid[OBSERVED].to_numpy() | (grid[FILLED].to_numpy() > 0))
    rows = features[keep]
    gaps = tuple(g for g in resampled.gaps if g.end >= write_start)
    if rows.empty:
        return SiteRows(SiteResult(device, gaps=gaps), rows, covers_from)
    return SiteRows(SiteResult(device, len(rows), rows.index[0], rows.index[-1], gaps),
                    wide_rows(device, rows, settings.version), covers_from)


def wide_rows(device: str, features: pd.DataFrame, version: str) -> pd.DataFrame:
    """Feature rows indexed by ``ts`` -> the wide frame of ``der_features`` keys and features."""
    wide = features.reset_index()
    wide.insert(0, dd.DEVICE_ID, device)
    wide.insert(2, s.VERSION, version)
    return wide


def store_site(store: CloudStore, settings: FeatureSettings, computed: SiteRows) -> None:
    """Store one site's rows, then move its watermarks: only once they are all stored."""
    if computed.rows.empty:
        return
    device = computed.result.device_id
    write_rows(store, computed.rows, settings.batch_size)
    store.set_watermark(watermark_source(settings), device, computed.result.last_ts, len(computed.rows))
    if computed.covers_from is not None:
        store.set_watermark(covered_source(settings), device, computed.covers_from, 0)


def write_rows(store: CloudStore, wide: pd.DataFrame, batch_size: int) -> None:
    """Upsert one site's rows in batches of ``batch_size``, as wide frames: each adapter
    encodes them its own way (``schema.is_packed_features``), so the SQLite store never
    formats a million floats as JSON text."""
    for offset in range(0, len(wide), batch_size):
        store.upsert_frame(s.FEATURES, wide.iloc[offset:offset + batch_size])
