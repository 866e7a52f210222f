"""A simulated fleet for demand-response tests end to end: gateways on the real broker of
MQTT_HOST/MQTT_PORT, each with its edge store, state and setpoint book, a SQLite cloud
store the readings sync to, the fleet's decision (FleetDR with the MQTT publisher) over
it, and one injected clock for all of them."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import pandas as pd

from cloud.dr.decision import FleetDR
from cloud.dr.dispatch import MqttPublisher
from cloud.store.sqlite import SQLiteCloudStore
from cloud.sync.job import SyncSettings, sync_once
from der_core import der_data as dd
from der_core.config import build_config
from der_physics import generator
from edge_gateway.daemon import open_runtime
from edge_gateway.mqtt import topics
from edge_gateway.mqtt.commands import SetpointBook
from edge_gateway.mqtt.settings import MqttSettings
from tests.mqtt_fixtures import WAIT_S, clear_retained, unique_id

SITES = 23
#: Gateways that must receive and follow an event's schedule: a site near its battery floor
#: may be left out, and at least twenty still take part.
FOLLOWING = 20
INTERVAL = pd.Timedelta(minutes=15)
NOW = pd.Timestamp("2024-07-16T00:00:00Z")  # Monday 17:00 in Los Angeles, before the evening peak
HISTORY = pd.Timedelta(days=8)  # 5 earlier weekdays: the forecast baseline and high 5 of 10 both need them


class Fleet:
    """The gateways, their edge stores, the cloud store and the fleet's decision, on one clock."""

    def __init__(self, folder, settings: MqttSettings, sites: int = SITES) -> None:
        self.clock = [NOW]
        tag = unique_id("dr")
        self.configs = [build_config({"device_id": f"{tag}-{i:02d}", "seed": 100 + i, "interval_seconds": 900,
                                      "battery": {"mode": "setpoint"}}) for i in range(sites)]
        self.settings = settings
        self.runtimes = []
        for config in self.configs:
            book = SetpointBook.for_configs([config], clock=self.now)
            runtime = open_runtime([config], store_path=folder / config.device_id / "edge.db", mqtt=settings,
                                   state_dir=folder / config.device_id / "state", setpoints=book)
            self.runtimes.append(runtime)
            times = generator.time_range(NOW - HISTORY + INTERVAL, NOW, 900)  # the gateway's backfilled history
            runtime.store.write(generator.simulate([config], times)[0].frame())
        for runtime in self.runtimes:
            assert runtime.link.subscribed.wait(WAIT_S), "a gateway did not subscribe to its setpoints"
        self.cloud = SQLiteCloudStore(folder / "cloud.db")
        self.dr = FleetDR(self.cloud, MqttPublisher(settings, clock=self.now), clock=self.now)

    def now(self) -> pd.Timestamp:
        return self.clock[0]

    @property
    def books(self) -> list[SetpointBook]:
        return [runtime.link.setpoints for runtime in self.runtimes]

    def step(self, at: pd.Timestamp) -> list[pd.DataFrame]:
        self.clock[0] = at
        return [runtime.gateway.step(at) for runtime in self.runtimes]

    def sync(self) -> None:
        for runtime in self.runtimes:
            sync_once(runtime.store, self.cloud, SyncSettings(source="edge:sqlite"))

    def dispatched(self, event_id: str) -> set[str]:
        """The sites the event's plan sent a schedule to (its stored plan rows name them)."""
        return set(self.cloud.read_frame("dr_results", {"event_id": event_id})[dd.DEVICE_ID]) - {"fleet"}

    def received(self, devices: Iterable[str]) -> bool:
        """Each of ``devices`` has a command in its gateway's book."""
        wanted = set(devices)
        return all(book.command(c.device_id) is not None for book, c in zip(self.books, self.configs)
                   if c.device_id in wanted)

    def wait_for_commands(self, devices: Iterable[str]) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not self.received(devices):
            time.sleep(0.05)

    def follow(self, end: pd.Timestamp) -> tuple[np.ndarray, list[pd.DataFrame]]:
        """Step every gateway from the clock to ``end``, one interval at a time: per step the
        power each book commanded for the interval (steps, sites) and the readings made."""
        commanded, frames = [], []
        at = self.now() + INTERVAL
        while at <= end:
            start = at - INTERVAL  # the command in force at the interval's start drives the reading
            commanded.append([book.power_kw(c.device_id, start) for book, c in zip(self.books, self.configs)])
            frames.append(pd.concat(self.step(at), ignore_index=True))
            at += INTERVAL
        return np.array(commanded), frames

    def close(self) -> None:
        for runtime in self.runtimes:
            runtime.close()
        self.cloud.close()
        clear_retained(self.settings, [t for c in self.configs for t in
                                       [topics.status(c.device_id), topics.setpoint(c.device_id),
                                        *(topics.discovery_topic(c.device_id, s) for s in topics.SENSORS)]])
