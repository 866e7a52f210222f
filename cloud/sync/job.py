"""The sync job: edge store -> cloud store, exactly once in effect.

Per device, a watermark in the cloud records the newest ``ts`` the cloud confirmed. A run
reads the edge from the watermark minus a small overlap (a late row written just behind
the newest one is still picked up), and the ranges the edge store noted as written behind
the device's newest (a backfilled day: ``EdgeStore.late_writes``; that day alone, not
everything after it), in batches of ``batch_size`` ordered by ``ts``, validates each batch (bad rows to quarantine),
upserts it on ``(device_id, ts)`` and only then advances the watermark. The notes are
acknowledged once the whole run has succeeded. A crash anywhere leaves the watermark at or
behind what the cloud holds and the notes in place, and the upsert makes the re-sent rows
land once: no reading is lost or doubled, whatever instant the process dies at.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field

import pandas as pd

from cloud.job_status import record_failure
from cloud.store.base import CloudStore
from cloud.sync.retry import RetryPolicy
from cloud.sync.validation import validate
from der_core import der_data as dd
from der_core.cli_support import progress
from der_core.config import reads_device
from der_core.site_file import is_declared
from edge_gateway.stores.base import EdgeStore, merge_ranges

log = logging.getLogger(__name__)

JOB = "cloud_sync"
DEFAULT_BATCH_SIZE = 10_000
DEFAULT_INTERVAL_S = 60
DEFAULT_OVERLAP = pd.Timedelta(minutes=15)
_STEP = pd.Timedelta(microseconds=1)  # edge timestamps are exact to the microsecond


@dataclass
class SyncSettings:
    source: str | None = None  # the watermarks' name; None: the edge store's own (``EdgeStore.source``)
    batch_size: int = DEFAULT_BATCH_SIZE
    overlap: pd.Timedelta = DEFAULT_OVERLAP
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass
class SyncResult:
    run_id: int
    rows_synced: int = 0
    rows_new: int = 0  # of rows_synced, those outside the overlap re-read behind each watermark
    rows_quarantined: int = 0
    devices: int = 0
    sites: int = 0


def declared_devices(cloud: CloudStore) -> set[str]:
    """The devices whose ``sites`` row is a declaration (``run_cloud_sync.py --site``): what the
    owner declared about a real home wins over what a gateway's configuration says of it."""
    return {row[dd.DEVICE_ID] for row in cloud.sites() if is_declared(row)}


def sync_once(edge: EdgeStore, cloud: CloudStore, settings: SyncSettings | None = None) -> SyncResult:
    """One sync run, recorded in ``pipeline_runs``; raises (after recording) on failure."""
    settings = settings or SyncSettings()
    if settings.source is None:
        settings = dataclasses.replace(settings, source=edge.source)
    retry = settings.retry
    run_id = retry.call("start run", lambda: cloud.start_run(JOB, {"source": settings.source}))
    result = SyncResult(run_id)
    try:
        declared = retry.call("read sites", lambda: declared_devices(cloud))
        edge_sites = edge.sites()
        sites = [row for row in edge_sites if row[dd.DEVICE_ID] not in declared
                 and dd.device_id_problem(row[dd.DEVICE_ID]) is None]
        for device in sorted({row[dd.DEVICE_ID] for row in edge_sites} & declared):
            log.warning("%s is declared in the cloud store; the gateway's site row does not replace it", device)
        result.sites = retry.call("push sites", lambda: cloud.upsert_sites(sites))
        marks = retry.call("read watermarks", lambda: cloud.watermarks(settings.source))
        devices = edge.devices()
        result.devices = len(devices)
        late, through = edge.late_writes()
        spans = {d: _spans(marks.get(d), late.get(d, []), settings.overlap) for d in devices}
        total = sum(math.ceil(_count(edge, d, start, stop) / settings.batch_size) for d in devices for start, stop in spans[d])
        measured = measured_devices(edge_sites)
        with closing(_prefetched(_batches(edge, spans, settings.batch_size))) as batches:
            for device, batch in progress(batches, total=total, desc="cloud sync", unit="batch"):
                marks[device] = _send(cloud, settings, device, batch, marks.get(device), result, device in measured)
        if through:
            edge.acknowledge_late_writes(through)
    except BaseException as error:  # an interrupt or a defect as well: a run must never stay "running"
        record_failure(cloud, run_id, result.rows_synced, error)
        raise
    retry.call("finish run", lambda: cloud.finish_run(run_id, "ok", result.rows_synced))
    # The overlap is re-sent on every run (idempotent upserts): only new readings are news.
    log.log(logging.INFO if result.rows_new or result.rows_quarantined else logging.DEBUG,
            "synced %d readings of %d devices (%d quarantined) to %s", result.rows_new, result.devices,
            result.rows_quarantined, cloud.label)
    return result


Span = tuple[pd.Timestamp | None, pd.Timestamp | None]  # start <= ts < stop, None: open


def _spans(mark: pd.Timestamp | None, late: list, overlap: pd.Timedelta) -> list[Span]:
    """What a device's read covers, oldest first and never twice: the watermark less the
    overlap onwards, and each range written behind it since the last run (``late``: first
    and last stamps, the last ``None`` for up to the newest); everything when nothing was
    confirmed."""
    if mark is None:
        return [(None, None)]
    return merge_ranges([(since, None if until is None else until + _STEP) for since, until in late] + [(mark - overlap, None)])


def _count(edge: EdgeStore, device: str, start: pd.Timestamp | None, stop: pd.Timestamp | None) -> int:
    return edge.count(device, start) - (edge.count(device, stop) if stop is not None else 0)


def _batches(edge: EdgeStore, spans: dict[str, list[Span]], batch_size: int) -> Iterator[tuple[str, pd.DataFrame]]:
    """Each device's rows in each of its spans, ``batch_size`` at a time, resuming after the
    last ``ts`` of the previous batch (``ts`` is unique per device)."""
    for device, device_spans in spans.items():
        for start, stop in device_spans:
            while True:
                batch = edge.read_range(device, start, stop, limit=batch_size)
                if batch.empty:
                    break
                yield device, batch
                if len(batch) < batch_size:
                    break
                start = batch[dd.TS].iloc[-1] + _STEP


def _prefetched(batches: Iterable[tuple[str, pd.DataFrame]]) -> Iterator[tuple[str, pd.DataFrame]]:
    """Read the next batch from the edge while the cloud ingests the current one: the
    database works in its own process, so the two overlap on a second core. Reading ahead
    never moves a watermark; only confirmed batches do."""
    ready: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand_over(message: tuple) -> bool:
        while not stop.is_set():  # never block for good: the consumer may have gone
            try:
                ready.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in batches:
                if not hand_over(("batch", item)):
                    return
            hand_over(("done", None))
        except BaseException as error:  # handed to the consumer, which raises it in its thread
            hand_over(("error", error))

    reader = threading.Thread(target=produce, name="edge-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            kind, item = ready.get()
            if kind == "done":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def measured_devices(sites: list[dict]) -> set[str]:
    """The edge's devices read from a real device (a ``source`` other than the simulator,
    in the site row's configuration). A device measures what it has: a battery inverter no
    weather or prices, so its readings hold those fields empty, and an empty field is a gap
    there, not a damaged reading as it would be from the simulator, which writes every one."""
    return {site[dd.DEVICE_ID] for site in sites if reads_device(site.get("config_json"))}


def _send(cloud: CloudStore, settings: SyncSettings, device: str, batch: pd.DataFrame,
          mark: pd.Timestamp | None, result: SyncResult, measured: bool = False) -> pd.Timestamp:
    """Quarantine, upsert, then advance the watermark; return the new watermark. A reading of
    a ``measured`` device needs no field (:func:`measured_devices`); a simulated one every field."""
    good, bad, reasons = validate(batch, required=() if measured else None)
    retry = settings.retry
    if len(bad):
        retry.call("quarantine", lambda: cloud.quarantine(bad, reasons, settings.source))
        log.warning("%s: %d readings quarantined, first: %s", device, len(bad), reasons.iloc[0])
    if len(good):
        retry.call("upsert readings", lambda: cloud.upsert_readings(good))
    # Only now, with the batch confirmed, may the watermark move (and never backwards). A
    # device whose id no store may hold has every reading quarantined, each run again.
    newest = batch[dd.TS].iloc[-1] if mark is None else max(mark, batch[dd.TS].iloc[-1])
    if dd.device_id_problem(device) is None:
        retry.call("advance watermark", lambda: cloud.set_watermark(settings.source, device, newest, len(good)))
    result.rows_synced += len(good)
    if mark is None:
        result.rows_new += len(good)
    else:
        result.rows_new += int(((good[dd.TS] > mark) | (good[dd.TS] < mark - settings.overlap)).sum())
    result.rows_quarantined += len(bad)
    return newest
