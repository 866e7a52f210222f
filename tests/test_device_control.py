"""A measured battery holds the schedule's import cap between readings: against the real
Modbus TCP SunSpec server of the modbus-sunspec tests and the real Mosquitto for the MQTT
bridge. Each poll is called directly at a given instant; the daemon's job runs on its own
schedule and is waited on, never timed."""

from __future__ import annotations

import json
import logging
import math
import threading

import pandas as pd
import pytest

from der_core import der_data as dd
from der_core.config import build_config
from der_core.scheduling import run_schedule
from edge_gateway.daemon import device_jobs, open_runtime
from edge_gateway.gateway import Gateway
from edge_gateway.mqtt.commands import SetpointBook
from edge_gateway.sources.mqtt_bridge import MqttBridge
from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.mqtt_fixtures import (
    WAIT_S,
    Recorder,
    broker,  # noqa: F401 (a fixture)
    publish,
    unique_id,
)
from tests.sunspec_server import BATTERY, METER, STORAGE, SunSpecServer
from tests.test_source_modbus_sunspec import command_registers, fill, make_gateway

T0 = pd.Timestamp("2024-06-01T12:00:00Z")
FIVE_MIN = pd.Timedelta(minutes=5)
POLL = pd.Timedelta(seconds=10)
KW_PER_IN_RTE = 0.005  # InWRte counts 0.1 % (InOutWRte_SF -1) of WChaMax 5000 W (fill)


@pytest.fixture
def server():
    running = fill(SunSpecServer()).start()
    running.set(802, BATTERY["W"], 0)  # the battery idle: the net load is the grid import
    yield running
    running.stop()


def load(server: SunSpecServer, grid_kw: float) -> None:
    """The meter's import now (W_SF 2: hundreds of watts)."""
    server.set(203, METER["W"], round(grid_kw * 10))


def commanded_kw(server: SunSpecServer) -> float:
    in_rte, _, mode, _ = command_registers(server)
    return in_rte * KW_PER_IN_RTE if mode == 0b11 else math.nan


def plan(book: SetpointBook, device_id: str, power_kw: float, cap_kw: float | None = None, event: bool = False) -> None:
    entry = {"ts": dd.format_ts(T0), "power_kw": power_kw, "event": event} | ({} if cap_kw is None else {"import_limit_kw": cap_kw})
    book.accept(device_id, json.dumps({"schedule": [entry, entry | {"ts": dd.format_ts(T0 + pd.Timedelta(hours=1))}]}).encode())


@pytest.mark.parametrize(("power_kw", "net_kw", "sent_kw"), [
    (0.0, 7.0, -4.0),  # discharges the 4 kW above the cap
    (0.0, 10.0, -5.0),  # as far as the battery's rate allows
    (2.0, 4.5, -1.5),  # a charge command turns to discharge
    (2.0, 2.0, 1.0),  # charges only what stays under the cap
    (-1.0, 2.0, -1.0),  # under the cap: the interval's command stands
])
def test_a_burst_above_the_cap_is_met_by_the_battery_between_readings(server, tmp_path, power_kw, net_kw, sent_kw):
    gateway, store, book = make_gateway(server, tmp_path)
    plan(book, "home-1", power_kw, cap_kw=3.0)
    load(server, 1.0)
    gateway.step(T0)
    assert commanded_kw(server) == pytest.approx(power_kw)
    load(server, net_kw)
    sent = gateway.control.hold_cap(T0 + POLL)
    assert commanded_kw(server) == pytest.approx(sent_kw)
    if sent_kw == power_kw:
        assert math.isnan(sent)  # nothing new to send
    else:
        assert sent == pytest.approx(sent_kw)
        assert net_kw + sent_kw == pytest.approx(3.0) or sent_kw == -5.0  # the import held, or the battery at its rate
    store.close()


@pytest.mark.parametrize(("power_kw", "net_kw", "sent_kw"), [
    (0.0, 7.0, -4.0),  # a burst already on at the reading: the battery meets it at once
    (2.0, 2.0, 1.0),  # charges only what stays under the cap
    (-1.0, 2.0, -1.0),  # under the cap: the plan's command as it is
])
def test_the_reading_s_own_command_holds_the_cap_on_the_grid_flow_read_as_it_is_sent(server, tmp_path, power_kw, net_kw,
                                                                                    sent_kw):
    gateway, store, book = make_gateway(server, tmp_path)
    plan(book, "home-1", power_kw, cap_kw=3.0)
    load(server, 1.0)
    gateway.source.sample(T0 - pd.Timedelta(minutes=1))  # the interval's reading: 1 kW, the month's peak so far
    load(server, net_kw)  # the load as the reading's command is sent
    gateway.step(T0)
    assert store.read_range("home-1")[dd.NET_GRID_FLOW].tolist() == pytest.approx([1.0])
    assert commanded_kw(server) == pytest.approx(sent_kw)
    assert math.isnan(gateway.control.hold_cap(T0 + POLL))  # the poll finds the cap held: nothing more to send
    store.close()


def test_a_reading_that_cannot_read_the_grid_flow_sends_the_plan_s_command(server, tmp_path):
    gateway, store, book = make_gateway(server, tmp_path)
    plan(book, "home-1", 0.5, cap_kw=3.0)
    server.set(802, BATTERY["W"], 0x8000)  # not implemented: no battery power, so no net load
    load(server, 7.0)
    gateway.step(T0)
    assert commanded_kw(server) == pytest.approx(0.5)
    store.close()


def test_when_the_burst_passes_the_battery_returns_to_the_interval_s_command(server, tmp_path):
    gateway, store, book = make_gateway(server, tmp_path)
    plan(book, "home-1", 0.5, cap_kw=3.0)
    load(server, 1.0)
    gateway.step(T0)
    load(server, 6.0)
    assert gateway.control.hold_cap(T0 + POLL) == pytest.approx(-3.0)
    load(server, 6.05)
    assert math.isnan(gateway.control.hold_cap(T0 + 2 * POLL))  # within the deadband: the device is spared a write
    assert commanded_kw(server) == pytest.approx(-3.0)
    load(server, 1.0)
    assert gateway.control.hold_cap(T0 + 3 * POLL) == pytest.approx(0.5)
    assert commanded_kw(server) == pytest.approx(0.5)
    store.close()


def test_the_cap_is_raised_to_the_month_s_peak_except_in_a_demand_response_event(server, tmp_path):
    for event, sent_kw in [(False, -2.0), (True, -3.0)]:
        gateway, store, book = make_gateway(server, tmp_path / str(event))
        plan(book, "home-1", 0.0, cap_kw=1.0, event=event)
        load(server, 2.0)
        gateway.step(T0)  # the month's peak so far: 2 kW
        load(server, 4.0)
        assert gateway.control.hold_cap(T0 + POLL) == pytest.approx(sent_kw)
        store.close()


def sentinel(server: SunSpecServer) -> None:
    """Registers no command of ours holds, so any write shows."""
    server.set(124, STORAGE["StorCtl_Mod"], 0)
    server.set(124, STORAGE["InWRte"], 7)
    server.set(124, STORAGE["OutWRte"], 7)


@pytest.mark.parametrize("power_kw", [-1.0, None], ids=["a plan without a cap", "no plan"])
def test_without_a_cap_in_force_the_poll_sends_nothing(server, tmp_path, power_kw):
    gateway, store, book = make_gateway(server, tmp_path)
    if power_kw is not None:
        plan(book, "home-1", power_kw)
    gateway.step(T0)
    sentinel(server)
    load(server, 9.0)
    assert math.isnan(gateway.control.hold_cap(T0 + POLL))
    assert command_registers(server)[:3] == (7, 7, 0)  # the device keeps its own mode, or the plan's command
    store.close()


def test_a_poll_after_the_interval_leaves_the_command_to_the_next_reading(server, tmp_path):
    gateway, store, book = make_gateway(server, tmp_path)
    plan(book, "home-1", 0.0, cap_kw=3.0)
    gateway.step(T0)
    load(server, 9.0)
    assert math.isnan(gateway.control.hold_cap(T0 + FIVE_MIN))
    assert commanded_kw(server) == pytest.approx(0.0)
    store.close()


def test_a_device_that_stops_answering_is_one_warning_and_the_polls_go_on(server, tmp_path, caplog):
    gateway, store, book = make_gateway(server, tmp_path)
    plan(book, "home-1", 0.0, cap_kw=3.0)
    gateway.step(T0)
    load(server, 7.0)
    server.stop()
    with caplog.at_level(logging.INFO):
        for k in range(1, 4):
            assert math.isnan(gateway.control.hold_cap(T0 + k * POLL))
        server.start()
        assert gateway.control.hold_cap(T0 + 10 * POLL) == pytest.approx(-4.0)
    assert commanded_kw(server) == pytest.approx(-4.0)
    ours = [r for r in caplog.records if r.name == "edge_gateway.device_control" and r.levelno == logging.WARNING]
    assert len(ours) == 1 and "not held between readings" in ours[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records) and "Traceback" not in caplog.text
    store.close()


def test_a_device_without_battery_power_is_one_warning_and_keeps_the_interval_s_command(server, tmp_path, caplog):
    gateway, store, book = make_gateway(server, tmp_path)
    plan(book, "home-1", 0.0, cap_kw=3.0)
    gateway.step(T0)
    server.set(802, BATTERY["W"], 0x8000)  # not implemented: no battery power, so no net load
    load(server, 7.0)
    with caplog.at_level(logging.WARNING):
        assert math.isnan(gateway.control.hold_cap(T0 + POLL))
        assert math.isnan(gateway.control.hold_cap(T0 + 2 * POLL))
    assert commanded_kw(server) == pytest.approx(0.0)
    # Other components may log too (the source on the unimplemented value): one warning of ours.
    assert sum(r.getMessage().count("not held") for r in caplog.records) == 1
    store.close()


def test_the_polls_leave_the_stored_readings_as_the_samples_make_them(server, tmp_path):
    gateway, store, book = make_gateway(server, tmp_path)
    plan(book, "home-1", 0.0, cap_kw=3.0)
    gateway.step(T0)
    load(server, 1.0)
    gateway.source.sample(T0 + pd.Timedelta(minutes=1))
    load(server, 7.0)
    assert gateway.control.hold_cap(T0 + pd.Timedelta(minutes=2)) == pytest.approx(-4.0)
    gateway.step(T0 + FIVE_MIN)
    assert store.read_range("home-1")[dd.NET_GRID_FLOW].tolist() == pytest.approx([1.2, 1.0])  # the sample's, not the poll's
    store.close()


def test_the_daemon_holds_the_cap_on_its_own_schedule(server, tmp_path, broker):  # noqa: F811 (the imported fixture)
    config = build_config({"device_id": unique_id("home"), "interval_seconds": 3600, "battery": {"mode": "setpoint"},
                           "source": {"kind": "modbus-sunspec", "host": "127.0.0.1", "port": server.port, "timeout_s": 1.0,
                                      "cap_poll_s": 1}})
    book = SetpointBook.for_configs([config])
    runtime = open_runtime([config], store_path=tmp_path / "edge.db", mqtt=broker, state_dir=tmp_path / "state",
                           setpoints=book)
    stop = threading.Event()
    try:
        assert [(job.name, job.interval_s) for job in device_jobs(runtime)] == [("sampler", 10.0), ("import-cap", 1.0)]
        book.accept(config.device_id, json.dumps({"power_kw": 0.0, "import_limit_kw": 3.0, "expires_in_s": 3600}).encode())
        load(server, 1.0)
        runtime.gateway.step()  # now: the command is in force from when it came
        load(server, 7.0)
        jobs = threading.Thread(target=run_schedule, args=(device_jobs(runtime),), kwargs={"stop": stop})
        jobs.start()
        held = threading.Event()
        for _ in range(int(2 * WAIT_S / 0.1)):
            if commanded_kw(server) == pytest.approx(-4.0) or held.wait(0.1):
                break
        assert commanded_kw(server) == pytest.approx(-4.0)
    finally:
        stop.set()
        if "jobs" in locals():
            jobs.join(WAIT_S)
        runtime.close()


def test_no_cap_job_without_commands_or_with_polling_off(server, tmp_path, broker):  # noqa: F811 (the imported fixture)
    source = {"kind": "modbus-sunspec", "host": "127.0.0.1", "port": server.port, "timeout_s": 1.0}
    config = build_config({"device_id": unique_id("home"), "battery": {"mode": "setpoint"}, "source": source})
    runtime = open_runtime([config], store_path=tmp_path / "edge.db", state_dir=tmp_path / "state")
    try:
        assert [job.name for job in device_jobs(runtime)] == ["sampler"]  # no MQTT link: no schedule to hold
    finally:
        runtime.close()
    config = build_config({"device_id": unique_id("home"), "battery": {"mode": "setpoint"}, "source": source | {"cap_poll_s": 0}})
    runtime = open_runtime([config], store_path=tmp_path / "edge2.db", mqtt=broker, state_dir=tmp_path / "state2")
    try:
        assert [job.name for job in device_jobs(runtime)] == ["sampler"]
    finally:
        runtime.close()


# -- the MQTT bridge --------------------------------------------------------------------------
class Clock:
    def __init__(self, at: pd.Timestamp) -> None:
        self.at = at

    def __call__(self) -> pd.Timestamp:
        return self.at


def test_an_mqtt_bridge_s_battery_holds_the_cap_on_its_latest_messages(broker, tmp_path):  # noqa: F811
    prefix = unique_id("der-cap")
    fields = {"net_grid_flow_kw": {"topic": f"{prefix}/grid", "scale": 0.001},
              "battery_power_kw": {"topic": f"{prefix}/battery", "scale": 0.001},
              "battery_soc_percent": {"topic": f"{prefix}/soc"}}
    config = build_config({"device_id": unique_id("home"), "interval_seconds": 300,
                           "battery": {"mode": "setpoint", "max_discharge_rate_kw": 4.0},
                           "source": {"kind": "mqtt", "host": broker.host, "port": broker.port, "fields": fields,
                                      "command": {"topic": f"{prefix}/set"}}})
    clock = Clock(T0 - pd.Timedelta(minutes=1))
    recorder = Recorder(broker, [f"{prefix}/set"])
    store = SQLiteEdgeStore(tmp_path / "edge.db")
    book = SetpointBook.for_configs([config], clock=clock)
    source = MqttBridge(config.source, config.battery, config.device_id, clock=clock)
    assert source.subscribed.wait(WAIT_S)
    gateway = Gateway([config], [store.write], tmp_path / "state", setpoints=book, history=store, source=source)

    def send(topic: str, payload: str) -> None:
        before = source.received
        publish(broker, f"{prefix}/{topic}", payload)
        with source.changed:
            assert source.changed.wait_for(lambda: source.received > before, timeout=WAIT_S)

    try:
        book.accept(config.device_id, json.dumps({"power_kw": 1.0, "import_limit_kw": 2.5, "expires_in_s": 3600}).encode())
        for topic, payload in [("grid", "800"), ("battery", "0"), ("soc", "60")]:
            send(topic, payload)
        clock.at = T0
        gateway.step(T0)
        assert math.isnan(gateway.control.hold_cap(T0 + POLL))  # 0.8 kW net: the charge fits under the cap
        clock.at = T0 + POLL
        send("grid", "5300")  # the battery still charging 1 kW: a 4.3 kW net load
        send("battery", "1000")
        assert gateway.control.hold_cap(T0 + 2 * POLL) == pytest.approx(-1.8)
        send("grid", "9000")
        assert gateway.control.hold_cap(T0 + 3 * POLL) == pytest.approx(-4.0)  # the battery's discharge rate
        assert recorder.wait_for(lambda: len(recorder.messages) >= 3)
        assert [m.payload for m in recorder.messages] == [b"1000", b"-1800", b"-4000"]
    finally:
        source.close()
        recorder.close()
        store.close()


def test_the_bridge_reports_nothing_for_a_value_older_than_asked(broker):  # noqa: F811
    prefix = unique_id("der-cap")
    config = build_config({"device_id": unique_id("home"), "source": {"kind": "mqtt", "host": broker.host, "port": broker.port,
                                                                      "fields": {"net_grid_flow_kw": {"topic": f"{prefix}/grid"}}}})
    clock = Clock(T0)
    source = MqttBridge(config.source, config.battery, config.device_id, clock=clock)
    try:
        assert source.subscribed.wait(WAIT_S)
        with source.changed:
            publish(broker, f"{prefix}/grid", "2.5")
            assert source.changed.wait_for(lambda: source.received > 0, timeout=WAIT_S)
        assert source.instant(T0 + POLL, T0 - FIVE_MIN).grid_kw == 2.5
        assert source.instant(T0 + FIVE_MIN, T0) is None
        assert source.reading(T0 - FIVE_MIN, T0).grid_kw == 2.5  # the instants took nothing from the reading
    finally:
        source.close()
