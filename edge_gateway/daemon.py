"""``run_simulator.py --daemon``: the gateway with every enabled sink, for months unattended.

Readings are made on the clock-aligned schedule and go, in this order, to the edge store
(SQLite, or InfluxDB with its SQLite spool), the JSON Lines file when one is configured,
and MQTT. The store comes first so a reading the MQTT queue has to drop from memory is
already on disk to be resent from. SIGTERM or SIGINT lets the running step finish, then
sends what MQTT still holds (bounded), publishes the ``offline`` status, flushes and
closes the store, and exits 0.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from der_core import der_data as dd
from der_core.config import SimulatorConfig, site_record
from der_core.errors import UsageError
from der_core.scheduling import Every, run_schedule
from edge_gateway.gateway import ClockSteps, Gateway, HeldWrites, JsonlSink
from edge_gateway.mqtt import MqttLink, MqttSettings, SetpointBook
from edge_gateway.sources.factory import open_source
from edge_gateway.stores.base import EdgeStore
from edge_gateway.stores.factory import open_edge_store
from edge_gateway.stores.influx_settings import InfluxSettings
from edge_gateway.stores.sqlite import SQLiteEdgeStore

log = logging.getLogger(__name__)

# syslog priorities by logging level: systemd reads a "<N>" prefix on each stderr line as
# the entry's priority (SyslogLevelPrefix=, on by default), so `journalctl -p warning` works.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        # One entry per line: a traceback is folded into the same entry rather than split.
        return f"<{priority}>{record.name}: " + super().format(record).replace("\n", "\n    ")


def stderr_is_journal() -> bool:
    """systemd names the journal stream in ``JOURNAL_STREAM`` as device:inode; a child that
    inherited the variable but writes elsewhere must not match (systemd.exec(5))."""
    try:
        device, inode = (int(part) for part in os.environ.get("JOURNAL_STREAM", "").split(":"))
        stat = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (stat.st_dev, stat.st_ino) == (device, inode)


def journal_logging() -> None:
    """Writing to the journal, drop our timestamps (it adds its own) and tag each line with its
    priority; elsewhere keep the plain stderr format."""
    if not stderr_is_journal():
        return
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JournalFormatter("%(message)s"))


def watermark_path(state_dir: Path, gateway_id: str) -> Path:
    return state_dir / f"mqtt-{gateway_id}.json"


@dataclass
class Runtime:
    """The live gateway and what it writes to, closed in the order that loses nothing."""

    gateway: Gateway
    store: EdgeStore | None = None
    link: MqttLink | None = None
    extra: list = field(default_factory=list)  # further resources to close last (the replay reader)
    held: HeldWrites | None = None  # the store's writes held while it refused them

    def close(self) -> None:
        try:
            if self.held is not None and self.held.held and not self.held.flush():
                log.error("%d readings held in memory are lost: the edge store did not take them before the gateway "
                          "stopped", self.held.rows)
            if self.link is not None:
                self.link.close()
        finally:
            for resource in [self.store, *self.extra]:
                if resource is not None:
                    resource.close()


def open_runtime(
    configs: list[SimulatorConfig],
    *,
    store_path: str | Path | None,
    influx: InfluxSettings | None = None,
    mqtt: MqttSettings | None = None,
    output_file: str | None = None,
    stream=None,
    gateway_id: str | None = None,
    state_dir: str | Path | None = None,
    setpoints: SetpointBook | None = None,
    hold_writes: bool = False,
) -> Runtime:
    """Open the store (``store_path=None``: none), MQTT and JSONL sinks and the gateway over them.
    ``setpoints`` replaces the book MQTT commands go to (one with its own clock, for tests);
    ``hold_writes`` holds what the store refuses until it takes it (:class:`HeldWrites`), for a
    gateway that keeps running."""
    gateway_id = gateway_id or configs[0].device_id
    state_dir = Path(state_dir or Path(store_path or configs[0].edge_store_path).parent / "state")
    if len(configs) > 1 and configs[0].reads_device:
        raise UsageError(f"--sites simulates sites around the configured one; a {configs[0].source.kind} source reads one real site")
    store, sinks, extra, held = None, [], [], None
    if store_path is not None:
        store = open_edge_store(store_path, influx)
        for site in configs:
            store.put_site(site_record(site))
        held = HeldWrites(store.write) if hold_writes else None
        sinks.append(held or store.write)
    if output_file or stream is not None:
        sinks.append(JsonlSink(output_file, stream))
    link = None
    if mqtt is not None:
        # The link resends from the store on its own thread: SQLite gets a connection of its own.
        reader = SQLiteEdgeStore(store_path) if isinstance(store, SQLiteEdgeStore) else store
        if reader is not store:
            extra.append(reader)
        link = MqttLink(mqtt, configs, gateway_id=gateway_id, setpoints=setpoints, reader=reader, watermark_path=watermark_path(state_dir, gateway_id))
        link.start()
        sinks.append(link)
    source = open_source(configs[0])
    if source is not None:
        extra.append(source)
    gateway = Gateway(configs, sinks, state_dir, setpoints=link.setpoints if link else None, history=store, source=source,
                      observers=[link] if link else [])
    return Runtime(gateway, store, link, extra, held)


def device_jobs(runtime: Runtime) -> list[Every]:
    """The jobs that run a measured device between readings: sampling it, so each reading
    averages the interval rather than taking one instant of it (none for a source whose device
    sends its values itself: for MQTT each message is a sample), and holding the schedule's
    import cap on its grid flow every ``cap_poll_s`` (none without commands to follow, or with
    ``cap_poll_s`` 0). None for the simulator, whose step holds the cap itself."""
    gateway = runtime.gateway
    source, settings, interval_s = gateway.source, gateway.configs[0].source, gateway.configs[0].interval_seconds
    if source is None:
        return []
    jobs = []
    if getattr(settings, "sample_every_s", None) is not None:
        jobs.append(Every("sampler", source.sample, min(settings.sample_every_s, interval_s)))
    if gateway.setpoints is not None and settings.cap_poll_s > 0:
        jobs.append(Every("import-cap", gateway.control.hold_cap, min(settings.cap_poll_s, interval_s)))
    return jobs


def run_daemon(
    configs: list[SimulatorConfig],
    *,
    store_path: str | Path,
    influx: InfluxSettings | None,
    mqtt: MqttSettings | None,
    output_file: str | None,
    gateway_id: str | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``); return the exit status."""
    journal_logging()
    runtime = open_runtime(configs, store_path=store_path, influx=influx, mqtt=mqtt, output_file=output_file, gateway_id=gateway_id,
                           hold_writes=True)
    interval = configs[0].interval_seconds
    step_lock = threading.Lock()  # the scheduler stops without waiting for a running step
    sinks = ["edge store"] + (["jsonl"] if output_file else []) + (["mqtt"] if mqtt else [])
    log.info("daemon: %d site(s), a reading every %ds, sinks: %s", len(configs), interval, ", ".join(sinks))

    step = ClockSteps(runtime.gateway, aligned=True)

    def tick() -> None:
        with step_lock:
            frame = step()
            if frame is not None:
                log.debug("reading at %s for %d site(s)", frame[dd.TS].iloc[0] if len(frame) else "-", len(frame))

    def shutdown() -> None:
        with step_lock:
            log.info("daemon: stopping: flushing and closing sinks")
            runtime.close()
            log.info("daemon: stopped cleanly")

    run_schedule([Every("gateway", tick, interval, aligned=True), *device_jobs(runtime)], stop=stop, on_stop=shutdown)
    sys.stderr.flush()
    return 0
