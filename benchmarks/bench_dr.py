"""Demand response at fleet scale: 1,000 simulated sites, a reduction announced 1 h ahead.

Prints the time from the event to every schedule published (target under 60 s), and the
requested, planned and delivered reduction once the simulated sites have run through the
window following their schedules (goal: at least 95 % of the accepted reduction delivered).

    MQTT_HOST=127.0.0.1 MQTT_PORT=1883 python benchmarks/bench_dr.py [--sites 1000] [--share 0.6]

The sites' history (15 days at 15-minute readings, the battery on its own rule) goes into a
SQLite cloud store in a temporary folder. Schedules go to the broker of MQTT_HOST/MQTT_PORT
when it answers (retained, then cleared); otherwise they are built and counted, and the
output says so. The window is simulated with the gateway's own physics: each site's
schedule decoded by the gateway's command book, the command in force at each interval's
start applied, and its import cap passed through the gateway's controller
(:meth:`der_core.control.Controller.cap_kw`, which holds an event's cap as given) with the
month's peak import before the event.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import describe  # noqa: E402
from cloud.dr.capability import fleet_state  # noqa: E402
from cloud.dr.decision import DRSettings, FleetDR  # noqa: E402
from cloud.dr.dispatch import MqttPublisher  # noqa: E402
from cloud.dr.model import DREvent, Signal  # noqa: E402
from cloud.store.sqlite import SQLiteCloudStore  # noqa: E402
from der_core import der_data as dd  # noqa: E402
from der_core.config import build_config, site_record  # noqa: E402
from der_core.control import ControlBattery, Controller, SiteMemory  # noqa: E402
from der_core.setpoints import SetpointSchedule  # noqa: E402
from der_physics import generator  # noqa: E402
from edge_gateway.mqtt.commands import SetpointBook  # noqa: E402
from edge_gateway.mqtt.settings import mqtt_settings  # noqa: E402

NOW = pd.Timestamp("2024-07-16T00:00:00Z")  # Monday 17:00 in Los Angeles: the evening peak ahead
HISTORY_DAYS = 15
INTERVAL_S = 900


class Recording:
    """Keeps each schedule sent; forwards it to the broker when there is one."""

    def __init__(self, mqtt: MqttPublisher | None) -> None:
        self.mqtt, self.sent = mqtt, {}

    def publish(self, device_id: str, schedule: SetpointSchedule) -> None:
        payload = schedule.to_json()  # built either way: the broker-less count includes the encoding
        if self.mqtt is not None:
            self.mqtt.publish(device_id, schedule)
        self.sent[device_id] = payload

    def clear(self, device_id: str) -> None:
        if self.mqtt is not None:
            self.mqtt.clear(device_id)


def broker_answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def fleet(sites: int, tag: str) -> list:
    return [build_config({"device_id": f"dr-{tag}-{i:04d}", "seed": i, "interval_seconds": INTERVAL_S,
                          "battery": {"mode": "setpoint"}}) for i in range(sites)]


def history(configs, store) -> tuple[object, np.ndarray]:
    """15 days of readings into ``store``; the battery state at NOW and each site's peak import this month."""
    state, peak = None, np.zeros(len(configs))
    month = NOW.tz_convert(configs[0].timezone).replace(day=1).normalize().tz_convert("UTC")
    for day in range(HISTORY_DAYS, 0, -1):
        times = generator.time_range(NOW - pd.Timedelta(days=day) + pd.Timedelta(seconds=INTERVAL_S),
                                     NOW - pd.Timedelta(days=day - 1) + pd.Timedelta(seconds=1), INTERVAL_S)
        sim, state = generator.simulate(configs, times, state)
        frame = sim.frame()
        store.upsert_readings(frame)
        recent = frame[frame[dd.TS] > month]
        if len(recent):
            peak = np.maximum(peak, recent.groupby(dd.DEVICE_ID, sort=False)[dd.NET_GRID_FLOW].max()
                              .reindex([c.device_id for c in configs]).to_numpy())
    store.upsert_sites([site_record(c) for c in configs])
    return state, peak


def follow(configs, state, peak, sent: dict[str, str], end: pd.Timestamp) -> pd.DataFrame:
    """The sites through the window as their gateways run them: readings from NOW to ``end``."""
    book = SetpointBook.for_configs(configs, clock=lambda: NOW)
    for device, payload in sent.items():
        book.accept(device, payload.encode(), retained=True)
    times = generator.time_range(NOW + pd.Timedelta(seconds=INTERVAL_S), end + pd.Timedelta(seconds=1), INTERVAL_S)
    starts = times - pd.Timedelta(seconds=INTERVAL_S)  # a reading's interval starts one interval before it
    power = np.array([[book.power_kw(c.device_id, t) for t in starts] for c in configs])
    controllers = [Controller(ControlBattery.from_config(c.battery), c.timezone,
                              SiteMemory(month=NOW.tz_convert(c.timezone).strftime("%Y-%m"), peak_import_kw=p))
                   for c, p in zip(configs, peak, strict=True)]
    caps = np.array([[controller.cap_kw(book.import_limit_kw(c.device_id, t), t, book.event(c.device_id, t)) for t in starts]
                     for c, controller in zip(configs, controllers, strict=True)])
    sim, _ = generator.simulate(configs, times, state, power, import_cap_kw=caps)
    return sim.frame()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--share", type=float, default=0.6, help="reduction asked, as a share of the fleet's capability")
    args = parser.parse_args(argv)
    settings = mqtt_settings()
    reachable = broker_answers(settings.host, settings.port)
    publisher = Recording(MqttPublisher(settings) if reachable else None)
    configs = fleet(args.sites, f"{time.time_ns() % 10**8:08d}")
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteCloudStore(Path(folder) / "cloud.db")
        started = time.perf_counter()
        state, peak = history(configs, store)
        history_s = time.perf_counter() - started
        clock = [NOW]
        dr = FleetDR(store, publisher, clock=lambda: clock[0])
        start, end = NOW + pd.Timedelta(hours=1), NOW + pd.Timedelta(hours=3)
        steps = pd.date_range(start, end, freq=DRSettings().step, inclusive="left")
        capability = fleet_state(store, store.sites(), steps, DRSettings().step, NOW, DRSettings().forecast_days, 3).capability_kw(2.0).sum()
        requested = round(args.share * capability, 1)
        event = DREvent("bench", "bench", start, end, Signal.REDUCTION, requested, NOW)
        began = time.perf_counter()
        answer = dr.decide(event)
        decide_s = time.perf_counter() - began
        frame = follow(configs, state, peak, publisher.sent, end)
        store.upsert_readings(frame)
        clock[0] = end
        delivery = dr.delivery("bench", "bench")
        if reachable:
            for device in publisher.sent:
                publisher.clear(device)
        store.close()
    print(f"machine: {describe()}")
    print(f"fleet: {args.sites} sites, {HISTORY_DAYS} days of 15-minute history ({history_s:.1f} s to simulate and store)")
    where = f"published to MQTT {settings.address}" if reachable else f"built, not published (no broker at {settings.address})"
    print(f"event: {requested:.1f} kW ({args.share:.0%} of the fleet's {capability:.1f} kW capability) for 2 h, announced 1 h ahead")
    print(f"decision: {'opt in' if answer.opt_in else 'opt out'} ({answer.reason})")
    print(f"event to all schedules {where}: {decide_s:.2f} s for {len(publisher.sent)} schedules (target < 60 s)")
    if delivery is not None:
        share = delivery.delivered_kw / answer.planned_kw if answer.planned_kw else float("nan")
        print(f"requested {requested:.1f} kW, planned {answer.planned_kw:.1f} kW, delivered {delivery.delivered_kw:.1f} kW "
              f"against the forecast baseline: {share:.1%} of the accepted reduction (goal >= 95 %)")
        sites = pd.Series(delivery.per_site_kw, dtype=float)
        print(f"per site delivered (kW): median {sites.median():.2f}, 5th percentile {sites.quantile(0.05):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
