"""MQTT against the real broker of MQTT_HOST/MQTT_PORT: telemetry, status, Home Assistant
discovery, setpoint commands, and no reading lost while the broker is away."""

from __future__ import annotations

import argparse
import json
import math
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from der_core import der_data as dd
from der_core.config import build_config
from edge_gateway.daemon import open_runtime, watermark_path
from edge_gateway.mqtt import add_mqtt_flags, mqtt_settings, parse_command, topics
from edge_gateway.mqtt.commands import DEFAULT_EXPIRES_S, CommandRejected, SetpointBook
from edge_gateway.mqtt.delivery import Delivery, Item, WatermarkFile
from edge_gateway.mqtt.link import micros
from edge_gateway.mqtt.settings import MqttSettings
from tests.mqtt_fixtures import (  # noqa: F401
    WAIT_S,
    Recorder,
    broker,
    clear_retained,
    free_port,
    private_broker,
    publish,
    unique_id,
)

pytestmark = pytest.mark.mqtt
T0 = pd.Timestamp("2024-06-15T19:00:00Z")  # midday in San Francisco: sun, load, and a battery mid-window


def site(device_id: str, mode: str = "setpoint", **battery) -> object:
    return build_config({"device_id": device_id, "seed": 7, "battery": {"mode": mode, **battery}})


def retained_topics(device_id: str) -> list[str]:
    return [topics.status(device_id)] + [topics.discovery_topic(device_id, s) for s in topics.SENSORS]


def every_retained_topic(device_id: str) -> list[str]:
    return topics.state_topics(device_id) + topics.all_discovery_topics(device_id)


def wait_until(predicate, timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@contextmanager
def gateway(settings: MqttSettings, folder: Path, *configs, store: bool = True, setpoints: SetpointBook | None = None):
    runtime = open_runtime(list(configs), store_path=folder / "edge.db" if store else None, mqtt=settings, state_dir=folder / "state", setpoints=setpoints)
    try:
        assert runtime.link.connected.wait(WAIT_S), f"gateway could not connect to {settings.address}"
        assert runtime.link.subscribed.wait(WAIT_S), "gateway did not get its setpoint subscription acknowledged"
        yield runtime
    finally:
        runtime.close()
        clear_retained(settings, [t for c in configs for t in every_retained_topic(c.device_id)])


def battery_power(frame: pd.DataFrame) -> float:
    return float(frame[dd.BATTERY_POWER].iloc[0])


# --- telemetry, status, discovery ------------------------------------------------------------


def test_every_reading_arrives_as_the_contracts_nested_json(broker, tmp_path):
    device = unique_id()
    recorder = Recorder(broker, [topics.telemetry(device)])
    try:
        with gateway(broker, tmp_path, site(device)) as runtime:
            for k in range(3):
                runtime.gateway.step(T0 + pd.Timedelta(minutes=5 * k))
            assert recorder.wait_for(lambda: len(recorder.on(topics.telemetry(device))) == 3)
            stored = runtime.store.read_range(device)
        messages = recorder.on(topics.telemetry(device))
        assert {m.qos for m in messages} == {1}
        readings = [json.loads(m.payload) for m in messages]
        assert all(list(r) == list(dd.unflatten(dd.frame_to_rows(stored)[0])) for r in readings)
        pd.testing.assert_frame_equal(dd.nested_to_frame(readings), stored)
    finally:
        recorder.close()


def _template_value(template: str, reading: dict) -> object:
    path = re.fullmatch(r"\{\{ value_json\.([\w.]+) \}\}", template).group(1)
    value = reading
    for key in path.split("."):
        value = value[key]
    return value


def test_status_and_discovery_are_retained_for_a_fresh_subscriber(broker, tmp_path):
    device = unique_id("ha.node")  # a '.' is legal in device ids but not in discovery node ids
    status = Recorder(broker, [topics.status(device)])
    try:
        with gateway(broker, tmp_path, site(device)) as runtime:
            reading = next(dd.frame_to_nested(runtime.gateway.step(T0)))
            assert runtime.link.wait_settled(WAIT_S)
            fresh = Recorder(broker, retained_topics(device))
            try:
                assert fresh.wait_for(lambda: len(fresh.messages) == 1 + len(topics.SENSORS))
                assert all(m.retain for m in fresh.messages)
                assert fresh.on(topics.status(device))[0].payload == b"online"
                configs = {m.topic: json.loads(m.payload) for m in fresh.messages if m.topic.startswith("homeassistant/")}
            finally:
                fresh.close()
        # Closing says "offline" (retained) before gateway() deletes the retained messages.
        assert status.wait_for(lambda: [m.payload for m in status.on(topics.status(device))][:2] == [b"online", b"offline"])
    finally:
        status.close()
    node = device.replace(".", "_")
    assert sorted(configs) == sorted(f"homeassistant/sensor/{node}/{s.key}/config" for s in topics.SENSORS)
    flat = dd.flatten(reading)
    for sensor in topics.SENSORS:
        config = configs[f"homeassistant/sensor/{node}/{sensor.key}/config"]
        assert config["state_topic"] == topics.telemetry(device)
        assert config["availability"] == [{"topic": topics.status(device)}]
        assert config["payload_available"] == "online" and config["payload_not_available"] == "offline"
        assert config["unique_id"] == f"der_{node}_{sensor.key}"
        assert config["device"]["identifiers"] == [f"der_{node}"]
        assert config["unit_of_measurement"] == sensor.unit and config["state_class"] == "measurement"
        assert config.get("device_class") == sensor.device_class
        assert _template_value(config["value_template"], reading) == flat[sensor.column]
    assert {configs[t].get("device_class") for t in configs} == {"power", "battery", None}


# --- setpoint commands -----------------------------------------------------------------------


def _command_in_force(runtime, device: str) -> bool:
    return wait_until(lambda: runtime.link.setpoints.command(device) is not None)


NIGHT = pd.Timestamp("2024-06-15T09:00:00Z")  # 02:00 in San Francisco: no PV, the rule covers the load from the battery


@pytest.mark.parametrize(
    ("battery", "command", "expected_kw", "rule_kw_differs"),
    [
        pytest.param({}, {"power_kw": 50.0}, 5.0, True, id="beyond-the-rate-clamped-to-max-charge"),
        pytest.param({}, {"power_kw": -2.5, "expires_in_s": 600}, -2.5, True, id="discharge-within-limits"),
        pytest.param({"max_discharge_rate_kw": 3.0}, {"power_kw": -4.9}, -3.0, True, id="discharge-clamped-to-its-own-rate"),
        # At its minimum the battery idles whether commanded or not: the command is in force and
        # the limit, not the rule, holds the power at zero.
        pytest.param({"initial_soc": 10.0, "min_soc": 10.0, "max_charge_rate_kw": 0.0}, {"power_kw": -3.0}, 0.0, False,
                     id="discharge-at-min-soc-does-nothing"),
    ],
)
def test_a_setpoint_drives_the_battery_on_the_next_step_within_its_limits(broker, tmp_path, battery, command, expected_kw, rule_kw_differs):
    """The book's clock is fixed, so the command arrives at NIGHT whatever the wall clock says,
    and the same site without a command shows what its own rule does then."""
    device = unique_id()
    config = site(device, **battery)
    book = SetpointBook.for_configs([config], clock=lambda: NIGHT)
    recorder = Recorder(broker, [topics.telemetry(device)])
    try:
        with gateway(broker, tmp_path, config, setpoints=book) as runtime:
            runtime.gateway.step(NIGHT - pd.Timedelta(minutes=5))
            publish(broker, topics.setpoint(device), json.dumps(command))
            assert _command_in_force(runtime, device)
            after = runtime.gateway.step(NIGHT)
            assert recorder.wait_for(lambda: len(recorder.on(topics.telemetry(device))) == 2)
        commanded_kw = book.power_kw(device, NIGHT)
    finally:
        recorder.close()
    reference = open_runtime([config], store_path=None, state_dir=tmp_path / "reference")
    reference.gateway.step(NIGHT - pd.Timedelta(minutes=5))
    rule = reference.gateway.step(NIGHT)
    reference.close()
    assert commanded_kw == command["power_kw"]
    assert battery_power(after) == pytest.approx(expected_kw, abs=1e-9)
    assert (battery_power(rule) != pytest.approx(expected_kw, abs=1e-9)) is rule_kw_differs
    assert recorder.json_on(topics.telemetry(device))[1]["battery"]["power_kw"] == pytest.approx(expected_kw, abs=1e-9)


def test_a_schedule_is_followed_entry_by_entry_and_ends(broker, tmp_path):
    device = unique_id()
    now = dd.utc_now().floor("s")
    later = now + pd.Timedelta(hours=1)
    schedule = [  # out of order on purpose: a plan may list entries in any order
        {"ts": dd.format_ts(later), "power_kw": -2.0},
        {"ts": (now - pd.Timedelta(minutes=1)).tz_convert("Europe/Berlin").isoformat(), "power_kw": 1.5},
    ]
    with gateway(broker, tmp_path, site(device)) as runtime:
        publish(broker, topics.setpoint(device), json.dumps({"schedule": schedule}))
        assert _command_in_force(runtime, device)
        first = runtime.gateway.step(now)
        second = runtime.gateway.step(later + pd.Timedelta(minutes=5))
        book = runtime.link.setpoints
        # the last entry lasts as long as the step before it: 61 minutes
        end = later + pd.Timedelta(minutes=61)
        in_force = [book.power_kw(device, end - pd.Timedelta(seconds=1)), book.power_kw(device, end)]
    assert battery_power(first) == pytest.approx(1.5)
    assert battery_power(second) == pytest.approx(-2.0)
    assert in_force[0] == -2.0 and math.isnan(in_force[1])


def _future(minutes: int) -> str:
    return dd.format_ts(dd.utc_now() + pd.Timedelta(minutes=minutes))


MALFORMED = [
    pytest.param(b"charge please", "malformed JSON", id="not-json"),
    pytest.param(b"[1, 2]", "expected a JSON object", id="not-an-object"),
    pytest.param(b"{}", "expected {", id="empty-object"),
    pytest.param(b'{"power_kw": "2.5"}', "must be a number", id="power-as-text"),
    pytest.param(b'{"power_kw": true}', "must be a number", id="power-as-bool"),
    pytest.param(b'{"power_kw": NaN}', "NaN is not a number", id="power-nan"),
    pytest.param(b'{"power_kw": 1e6}', "beyond", id="power-absurd"),
    pytest.param(b'{"power_kw": 1, "expires_in_s": 0}', "expires_in_s", id="expires-zero"),
    pytest.param(b'{"power_kw": 1, "expires_in_s": 864000}', "expires_in_s", id="expires-too-long"),
    pytest.param(b'{"power_kw": 1, "expires_in_s": 1e-300}', "expires_in_s", id="expires-under-a-second"),
    pytest.param(b'{"power_kw": 1, "colour": "red"}', "unknown key 'colour'", id="unknown-key"),
    pytest.param(b'{"power_kw": 1, "power_kw": 2}', "duplicate key", id="duplicate-key"),
    # 200,000 keys, 3 MB: refused for its keys in one pass; counting each among the others
    # held the MQTT thread for many minutes and the broker dropped the connection.
    pytest.param(lambda: ("{" + ",".join(f'"k{i}":{i}' for i in range(200_000)) + "}").encode(), "expected {",
                 id="many-keys"),
    pytest.param(b'{"schedule": []}', "non-empty list", id="empty-schedule"),
    pytest.param(b'{"schedule": "soon"}', "non-empty list", id="schedule-not-a-list"),
    pytest.param(b'{"schedule": [{"ts": "2030-06-15T12:00:00", "power_kw": 1}]}', "no UTC offset", id="naive-ts"),
    pytest.param(b'{"schedule": [{"ts": "tomorrow", "power_kw": 1}]}', "not ISO 8601", id="unparseable-ts"),
    pytest.param(b'{"schedule": [{"ts": 1718452800, "power_kw": 1}]}', "ISO 8601 string", id="numeric-ts"),
    pytest.param(b'{"schedule": [{"ts": "2020-01-01T00:00:00+00:00", "power_kw": 1}]}', "before now", id="schedule-in-the-past"),
    pytest.param(lambda: json.dumps({"schedule": [{"ts": _future(5), "power_kw": 1, "note": "x"}]}).encode(), "unknown key 'note'", id="entry-unknown-key"),
    pytest.param(lambda ts=None: json.dumps({"schedule": [{"ts": (ts := _future(5)), "power_kw": 1}, {"ts": ts, "power_kw": 2}]}).encode(), "two entries", id="duplicate-ts"),
    pytest.param(lambda: json.dumps({"schedule": [{"ts": _future(5)}]}).encode(), "lacks power_kw", id="entry-without-power"),
    pytest.param(lambda: json.dumps({"schedule": [{"ts": _future(5), "power_kw": None, "import_limit_kw": -1}]}).encode(), "is negative", id="entry-negative-cap"),
    pytest.param(lambda: json.dumps({"schedule": [{"ts": _future(5), "power_kw": 1, "import_limit_kw": None}]}).encode(), "import_limit_kw must be a number", id="entry-null-cap"),
    pytest.param(b'{"power_kw": null}', "power_kw must be a number", id="immediate-null-power"),
    pytest.param(b'{"power_kw": 1, "import_limit_kw": "5"}', "import_limit_kw must be a number", id="cap-as-text"),
    pytest.param(b'{"power_kw": 1, "import_limit_kw": Infinity}', "Infinity is not a number", id="cap-infinite"),
]


@pytest.mark.parametrize(("payload", "reason"), MALFORMED)
def test_a_malformed_command_is_refused_with_a_reason_and_never_applied(broker, tmp_path, payload, reason):
    payload = payload() if callable(payload) else payload
    device = unique_id()
    errors = Recorder(broker, [topics.setpoint_error(device)])
    try:
        with gateway(broker, tmp_path / "mqtt", site(device)) as runtime:
            publish(broker, topics.setpoint(device), payload)
            assert errors.wait_for(lambda: len(errors.on(topics.setpoint_error(device))) == 1)
            assert runtime.link.setpoints.command(device) is None
            at = dd.utc_now().floor("s")
            commanded = runtime.gateway.step(at)
        reference = open_runtime([site(device)], store_path=None, state_dir=tmp_path / "reference")
        untouched = reference.gateway.step(at)
        reference.close()
    finally:
        errors.close()
    message = errors.json_on(topics.setpoint_error(device))[0]
    assert message["device_id"] == device
    assert reason in message["error"]
    assert message["payload"] == payload.decode()[:200] + ("..." if len(payload) > 200 else "")
    assert battery_power(commanded) == battery_power(untouched)


def test_a_retained_power_command_is_refused_because_it_would_restart_on_every_reconnect(broker, tmp_path):
    device = unique_id()
    publish(broker, topics.setpoint(device), json.dumps({"power_kw": 1.0}), retain=True)
    errors = Recorder(broker, [topics.setpoint_error(device)])
    try:
        with gateway(broker, tmp_path, site(device)) as runtime:
            assert errors.wait_for(lambda: len(errors.on(topics.setpoint_error(device))) == 1)
            assert runtime.link.setpoints.command(device) is None
    finally:
        errors.close()
        clear_retained(broker, [topics.setpoint(device)])
    assert "must not be retained" in errors.json_on(topics.setpoint_error(device))[0]["error"]


def test_a_device_not_in_setpoint_mode_refuses_commands_and_says_how_to_enable_them(broker, tmp_path):
    device = unique_id()
    errors = Recorder(broker, [topics.setpoint_error(device)])
    try:
        with gateway(broker, tmp_path, site(device, mode="self_consumption")) as runtime:
            publish(broker, topics.setpoint(device), json.dumps({"power_kw": 1.0}))
            assert errors.wait_for(lambda: len(errors.on(topics.setpoint_error(device))) == 1)
            assert runtime.link.setpoints.command(device) is None
    finally:
        errors.close()
    assert 'battery.mode to "setpoint"' in errors.json_on(topics.setpoint_error(device))[0]["error"]


# --- the broker goes away ---------------------------------------------------------------------


def test_no_reading_is_lost_while_the_broker_is_stopped_and_restarted(tmp_path, caplog):
    """At-least-once: the subscriber (persistent session, QoS 1) gets every stored reading,
    possibly twice; deduplicated by (device_id, timestamp) it matches the edge store exactly."""
    caplog.set_level("INFO", logger="edge_gateway.mqtt")
    device = unique_id()
    (tmp_path / "broker").mkdir()
    with private_broker(tmp_path / "broker") as server:
        settings = MqttSettings(**{**server.settings.__dict__, "queue_size": 2})
        recorder = Recorder(settings, [topics.telemetry(device)], client_id=unique_id("persistent"), clean=False)
        runtime = open_runtime([site(device)], store_path=tmp_path / "edge.db", mqtt=settings, state_dir=tmp_path / "state")
        try:
            assert runtime.link.connected.wait(WAIT_S)
            steps = iter(T0 + pd.Timedelta(minutes=5 * k) for k in range(100))
            for _ in range(3):
                runtime.gateway.step(next(steps))
            assert recorder.wait_for(lambda: len(recorder.messages) == 3)
            server.stop()
            assert wait_until(lambda: not runtime.link.connected.is_set())
            for _ in range(6):  # more than the queue holds: the oldest wait only in the store
                runtime.gateway.step(next(steps))
            server.start()
            assert runtime.link.connected.wait(WAIT_S)
            runtime.gateway.step(next(steps))
            stored = runtime.store.read_range(device)
            expected = set(zip(stored[dd.DEVICE_ID], stored[dd.TS].map(dd.format_ts)))
            assert len(expected) == 10

            def received() -> set:
                return {(r["device_id"], r["timestamp"]) for r in recorder.json_on(topics.telemetry(device))}

            assert recorder.wait_for(lambda: received() == expected, timeout_s=20), sorted(expected - received())
            assert runtime.link.wait_settled(WAIT_S)
            assert "resent" in caplog.text  # the readings dropped from memory came back from the store
            assert runtime.link.watermarks()[device] == int(stored[dd.TS].iloc[-1].as_unit("us").asm8.view("int64"))
        finally:
            runtime.close()
            recorder.close()


def test_readings_made_before_a_restart_without_a_broker_are_sent_by_the_next_run(broker, tmp_path):
    device = unique_id()
    nowhere = MqttSettings(host="127.0.0.1", port=free_port(), stop_timeout_s=0.5)
    offline = open_runtime([site(device)], store_path=tmp_path / "edge.db", mqtt=nowhere, state_dir=tmp_path / "state")
    for k in range(3):
        offline.gateway.step(T0 + pd.Timedelta(minutes=5 * k))
    offline.close()
    recorder = Recorder(broker, [topics.telemetry(device)])
    try:
        with gateway(broker, tmp_path, site(device)) as runtime:
            runtime.gateway.step(T0 + pd.Timedelta(minutes=15))
            assert recorder.wait_for(lambda: len({m.payload for m in recorder.on(topics.telemetry(device))}) == 4)
            assert runtime.link.wait_settled(WAIT_S)
    finally:
        recorder.close()
    stamps = sorted(r["timestamp"] for r in recorder.json_on(topics.telemetry(device)))
    assert stamps == [dd.format_ts(T0 + pd.Timedelta(minutes=5 * k)) for k in range(4)]


def test_a_clean_stop_waits_for_a_reading_the_sender_holds_between_queue_and_publish(broker, tmp_path):
    """The sender takes a reading off the queue before paho has it: a stop in between must not
    take the empty queue for "all acknowledged" and save a watermark below that reading.

    The sender is held inside ``publish`` until the stop's wait has either returned or looked
    at the link twice, so the stop always falls in between, on any machine."""
    device = unique_id()
    with gateway(broker, tmp_path, site(device)) as runtime:
        link, client = runtime.link, runtime.link._client
        publish_now, drain_now, wait_now = client.publish, link._drain_acks, link.wait_settled
        changed, publishing, stopper = threading.Condition(), threading.Event(), threading.current_thread()
        seen = {"looks": 0, "returned": False, "returned_before_publish": None}

        def counting_drain():  # one call per look of wait_settled at the link
            if threading.current_thread() is stopper:
                with changed:
                    seen["looks"] += 1
                    changed.notify_all()
            return drain_now()

        def watched_wait(timeout_s):
            result = wait_now(timeout_s)
            with changed:
                seen["returned"] = True
                changed.notify_all()
            return result

        def held_publish(*args, **kwargs):
            if threading.current_thread() is not stopper:  # the sender's reading, not the stop's "offline"
                publishing.set()
                with changed:
                    changed.wait_for(lambda: seen["returned"] or seen["looks"] >= 2, timeout=WAIT_S)
                    seen["returned_before_publish"] = seen["returned"]
            return publish_now(*args, **kwargs)

        link._drain_acks, link.wait_settled, client.publish = counting_drain, watched_wait, held_publish
        runtime.gateway.step(T0)
        assert publishing.wait(WAIT_S), "the sender should be publishing the reading"
    assert seen["returned_before_publish"] is False, "the stop stopped waiting while the sender still held a reading"
    saved = WatermarkFile(watermark_path(tmp_path / "state", device)).load()
    assert saved[device] == micros([T0])[0], "the stop saved a watermark below the reading it had not waited for"


# --- without a broker: settings, command parsing, delivery bookkeeping ----------------------------


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, ("127.0.0.1", 1883, False)),
        ([], {"MQTT_HOST": "broker.lan", "MQTT_PORT": "1884"}, ("broker.lan", 1884, False)),
        (["--mqtt-host", "flag.lan", "--mqtt-port", "1885"], {"MQTT_HOST": "env.lan", "MQTT_PORT": "1884"}, ("flag.lan", 1885, False)),
        ([], {"MQTT_TLS": "true"}, ("127.0.0.1", 8883, True)),
        (["--mqtt-tls", "--mqtt-port", "18883"], {"MQTT_TLS": "false"}, ("127.0.0.1", 18883, True)),
    ],
)
def test_a_flag_wins_over_its_variable_which_wins_over_the_default(monkeypatch, argv, env, expected):
    for name in ("MQTT_HOST", "MQTT_PORT", "MQTT_TLS", "MQTT_USERNAME", "MQTT_PASSWORD", "MQTT_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    add_mqtt_flags(parser)
    settings = mqtt_settings(parser.parse_args(argv))
    assert (settings.host, settings.port, settings.tls) == expected


NOW = pd.Timestamp("2024-06-15T12:00:00.700Z")


def test_a_power_command_runs_from_the_second_it_arrived_for_its_default_lifetime():
    (segment,) = parse_command(b'{"power_kw": -2.5}', "d", 50.0, NOW).segments
    assert segment.start == pd.Timestamp("2024-06-15T12:00:00Z")
    assert segment.end == NOW + pd.Timedelta(seconds=DEFAULT_EXPIRES_S)
    assert segment.power_kw == -2.5


@pytest.mark.parametrize(
    ("entries", "last_end"),
    [
        ([("2024-06-15T12:00:00+00:00", 1.0)], "2024-06-15T12:15:00+00:00"),  # one entry: the default 900 s
        ([("2024-06-15T12:00:00+00:00", 1.0), ("2024-06-15T14:30:00+02:00", 2.0)], "2024-06-15T13:00:00+00:00"),  # 12:30Z plus the 30 min step
    ],
)
def test_each_schedule_entry_lasts_until_the_next_and_the_last_for_the_step_before_it(entries, last_end):
    payload = json.dumps({"schedule": [{"ts": ts, "power_kw": p} for ts, p in entries]}).encode()
    segments = parse_command(payload, "d", 50.0, NOW).segments
    assert [s.power_kw for s in segments] == [p for _, p in entries]
    assert all(a.end == b.start for a, b in zip(segments, segments[1:]))
    assert segments[-1].end == pd.Timestamp(last_end)


def test_the_queue_drops_its_oldest_payloads_and_marks_them_for_a_replay_from_the_store():
    delivery = Delivery(queue_size=2)
    for ts in (1, 2, 3, 4):
        delivery.enqueue(Item("d", ts, f"r{ts}"))
    assert [i.ts_us for i in delivery.queue] == [3, 4]
    assert delivery.replays_due() == [("d", 1)]
    assert [ts for ts in (1, 2, 3, 4) if delivery.needs_send("d", ts)] == [1, 2]  # 3 and 4 go from memory


def test_the_watermark_never_passes_an_unacknowledged_reading():
    delivery = Delivery(queue_size=10)
    for mid, ts in enumerate((10, 20, 30), start=1):
        delivery.enqueue(Item("d", ts, "x"))
        delivery.sent(delivery.next_queued(), mid)
    delivery.acked(2)
    delivery.acked(3)
    assert delivery.watermarks() == {"d": 9}  # 10 is still out: a restart resends from 10 on
    delivery.acked(1)
    assert delivery.watermarks() == {"d": 30} and delivery.settled()


def test_a_saved_watermark_makes_the_next_run_look_in_the_store(tmp_path):
    marks = WatermarkFile(tmp_path / "mqtt-d.json")
    marks.save({"d": 100})
    delivery = Delivery(queue_size=10, watermarks=marks.load())
    assert delivery.replays_due() == [("d", 101)]
    assert not delivery.needs_send("d", 100) and delivery.needs_send("d", 101)


def _schedule(*entries: dict) -> bytes:
    return json.dumps({"schedule": [{"ts": f"2024-06-15T12:{15 * i:02d}:00+00:00", **e} for i, e in enumerate(entries)]}).encode()


def test_a_null_power_entry_means_no_command_and_an_import_limit_rides_along():
    payload = _schedule({"power_kw": 1.5, "import_limit_kw": 4.0}, {"power_kw": None, "import_limit_kw": 0}, {"power_kw": None})
    first, second, third = parse_command(payload, "d", 50.0, NOW).segments
    assert (first.power_kw, first.import_limit_kw) == (1.5, 4.0)
    assert math.isnan(second.power_kw) and second.import_limit_kw == 0.0
    assert math.isnan(third.power_kw) and math.isnan(third.import_limit_kw)


def test_an_immediate_command_may_carry_an_import_limit_and_has_none_otherwise():
    (capped,) = parse_command(b'{"power_kw": 0, "import_limit_kw": 6.5}', "d", 50.0, NOW).segments
    (plain,) = parse_command(b'{"power_kw": 0}', "d", 50.0, NOW).segments
    assert capped.import_limit_kw == 6.5 and math.isnan(plain.import_limit_kw)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(_schedule({"power_kw": 1, "import_limit_kw": -0.5}), r"schedule\[0\]\.import_limit_kw -0.5 kW is negative", id="negative"),
        pytest.param(_schedule({"power_kw": None, "import_limit_kw": True}), r"schedule\[0\]\.import_limit_kw must be a number", id="bool"),
        pytest.param(_schedule({"power_kw": None, "import_limit_kw": [5]}), r"schedule\[0\]\.import_limit_kw must be a number", id="list"),
        pytest.param(_schedule({"power_kw": "null"}), r"schedule\[0\]\.power_kw must be a number", id="null-as-text"),
        pytest.param(_schedule({"ts_": 1, "power_kw": None}), "unknown key 'ts_'", id="unknown-key"),
        pytest.param(b'{"power_kw": 1, "import_limit_kw": 1e999}', "import_limit_kw must be finite", id="overflow"),
        pytest.param(b'{"power_kw": null, "import_limit_kw": 5}', "power_kw must be a number", id="immediate-null"),
    ],
)
def test_malformed_import_limits_and_null_powers_are_refused_with_the_field_named(payload, reason):
    with pytest.raises(CommandRejected, match=reason):
        parse_command(payload, "d", 50.0, NOW)


def test_the_book_reports_the_cap_in_force_and_nan_outside_any_entry():
    book = SetpointBook({"d": 50.0}, clock=lambda: NOW)
    book.accept("d", _schedule({"power_kw": None, "import_limit_kw": 3.0}, {"power_kw": -1.0, "import_limit_kw": 5.0}))
    inside = pd.Timestamp("2024-06-15T12:20:00Z")
    assert book.import_limit_kw("d", pd.Timestamp("2024-06-15T12:05:00Z")) == 3.0
    assert math.isnan(book.power_kw("d", pd.Timestamp("2024-06-15T12:05:00Z")))
    assert (book.power_kw("d", inside), book.import_limit_kw("d", inside)) == (-1.0, 5.0)
    assert math.isnan(book.import_limit_kw("d", pd.Timestamp("2024-06-15T12:30:00Z")))
    assert math.isnan(book.import_limit_kw("other", inside))
