"""The mqtt reading source and its battery commands, against the real Mosquitto of
MQTT_HOST/MQTT_PORT (and a private one for the broker going away), each test on topics of
its own."""

from __future__ import annotations

import json
import logging
import math
import threading

import pandas as pd
import pytest

from der_core import der_data as dd
from der_core.config import BatteryConfig, MqttSource, build_config
from der_core.errors import ConfigError
from edge_gateway.daemon import device_jobs, open_runtime
from edge_gateway.gateway import Gateway
from edge_gateway.mqtt import MqttSettings
from edge_gateway.mqtt.commands import SetpointBook
from edge_gateway.sources.mqtt_bridge import MqttBridge, command_payload, value_at
from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.mqtt_fixtures import broker  # noqa: F401 (the fixture mosquitto stands on)
from tests.mqtt_fixtures import WAIT_S, PrivateBroker, Recorder, private_broker, publish, unique_id

T0 = pd.Timestamp("2024-06-01T12:00:00Z")
FIVE_MIN = pd.Timedelta(minutes=5)
MINUTE = pd.Timedelta(minutes=1)
BATTERY = BatteryConfig(max_charge_rate_kw=5.0, max_discharge_rate_kw=4.0, min_soc=10.0, max_soc=90.0)


# -- payloads (no broker) -------------------------------------------------------------------
@pytest.mark.parametrize(("payload", "path", "expected"), [
    (b"1234.5", None, 1234.5),
    (b" -80 \n", None, -80.0),
    (b'{"power": 512}', "power", 512.0),
    (b'{"inverter": {"ac": [{"power": 2.5}, {"power": 3}]}}', "inverter.ac.1.power", 3.0),
    (b'{"soc": "57.5"}', "soc", 57.5),  # a number sent as a string
])
def test_a_value_is_found_at_its_json_path_or_is_the_payload(payload, path, expected):
    assert value_at(payload, path) == expected


@pytest.mark.parametrize(("payload", "path", "reason"), [
    (b"on", None, "'on' is not a number"),
    (b"{not json", "power", "Expecting property name"),
    (b'{"power": 5}', "energy", "no 'energy' on the path 'energy'"),
    (b'{"ac": [1]}', "ac.3", "no '3' on the path 'ac.3'"),
    (b'{"power": true}', "power", "True is not a number"),
    (b'{"power": null}', "power", "None is not a number"),
    (b'{"power": NaN}', "power", "is not a finite number"),
    (b"\xff\xfe", None, "can't decode"),
    (b"[" * 100_000 + b"]" * 100_000, "0", "JSON nested too deeply"),  # a RecursionError, logged on every message
])
def test_a_payload_without_a_number_there_says_what_it_found(payload, path, reason):
    with pytest.raises(ValueError, match=reason):
        value_at(payload, path)


@pytest.mark.parametrize(("template", "power_kw", "mode", "expected"), [
    ("{power_w}", 2.0, "manual", "2000"),
    ("{power_kw}", -1.25, "manual", "-1.25"),
    ('{"mode": "{mode}", "power": {power_w}}', -0.0004, "auto", '{"mode": "auto", "power": 0}'),
    ("{power_kw}", -0.0, "auto", "0"),
])
def test_a_command_payload_fills_its_template(template, power_kw, mode, expected):
    assert command_payload(template, power_kw, mode) == expected


# -- against the broker ---------------------------------------------------------------------
class Clock:
    def __init__(self, at: pd.Timestamp) -> None:
        self.at = at

    def __call__(self) -> pd.Timestamp:
        return self.at


def fields(prefix: str) -> dict:
    """OpenDTU-like topics: PV in W, grid in W exported positive, the battery's JSON state."""
    return {"solar_generation_kw": {"topic": f"{prefix}/dtu/ac/power", "scale": 0.001},
            "net_grid_flow_kw": {"topic": f"{prefix}/meter/state", "path": "power.total", "scale": 0.001, "sign": -1},
            "battery_power_kw": {"topic": f"{prefix}/battery/state", "path": "power_kw"},
            "battery_soc_percent": {"topic": f"{prefix}/battery/state", "path": "soc"}}


def bridge(settings: MqttSettings, prefix: str, clock: Clock, **extra) -> MqttBridge:
    config = MqttSource.model_validate({"kind": "mqtt", "host": settings.host, "port": settings.port, "fields": fields(prefix),
                                        **extra})
    source = MqttBridge(config, BATTERY, unique_id("home"), clock=clock)
    assert source.subscribed.wait(WAIT_S), "the source did not subscribe"
    return source


def send(settings: MqttSettings, source: MqttBridge, messages: list[tuple[str, object]]) -> None:
    """Publish each message and wait until the source has handled it."""
    for topic, payload in messages:
        before = source.received
        publish(settings, topic, payload if isinstance(payload, (str, bytes)) else json.dumps(payload))
        with source.changed:
            assert source.changed.wait_for(lambda: source.received > before, timeout=WAIT_S), f"no message on {topic}"


@pytest.fixture
def mosquitto(broker: MqttSettings) -> MqttSettings:  # noqa: F811 (the imported fixture)
    """The shared broker (MQTT_HOST/MQTT_PORT); skips, or fails under CI, when it is away."""
    return broker


@pytest.fixture
def prefix() -> str:
    return unique_id("der-src")


def test_a_reading_averages_the_interval_s_messages_with_their_scales_and_signs(mosquitto, prefix):
    clock = Clock(T0 - FIVE_MIN)
    source = bridge(mosquitto, prefix, clock)
    try:
        for k, (pv_w, export_w, soc) in enumerate([(1000, 200, 50), (2000, 400, 51), (3000, -600, 52)]):
            clock.at = T0 - FIVE_MIN + (k + 1) * MINUTE
            send(mosquitto, source, [(f"{prefix}/dtu/ac/power", str(pv_w)), (f"{prefix}/meter/state", {"power": {"total": export_w}}),
                                  (f"{prefix}/battery/state", {"power_kw": 0.5 * k, "soc": soc})])
        clock.at = T0 + pd.Timedelta(seconds=5)
        send(mosquitto, source, [(f"{prefix}/dtu/ac/power", "9000")])  # the next interval's
        measured = source.reading(T0 - FIVE_MIN, T0)
        assert measured.pv_kw == pytest.approx(2.0)
        assert measured.grid_kw == pytest.approx(0.0)  # -(0.2 + 0.4 - 0.6) / 3: export counted negative
        assert measured.battery_power_kw == pytest.approx(0.5)
        assert measured.battery_soc_percent == 52.0  # the last, not the mean
        assert measured.load_kw == pytest.approx(2.0 + 0.0 - 0.5)
        following = source.reading(T0, T0 + FIVE_MIN)
        assert following.pv_kw == pytest.approx(9.0)
        assert math.isnan(following.grid_kw) and math.isnan(following.battery_soc_percent)  # no message: empty
        assert math.isnan(following.load_kw)
        assert source.reading(T0 + FIVE_MIN, T0 + 2 * FIVE_MIN) is None  # no message at all: no reading
    finally:
        source.close()


def test_malformed_payloads_are_skipped_with_one_line_per_topic_and_the_source_keeps_reading(mosquitto, prefix, caplog):
    clock = Clock(T0 - MINUTE)
    source = bridge(mosquitto, prefix, clock)
    pv, meter = f"{prefix}/dtu/ac/power", f"{prefix}/meter/state"
    try:
        with caplog.at_level(logging.INFO):
            send(mosquitto, source, [(pv, "offline"), (pv, "n/a"), (meter, "{oops"), (meter, {"power": {}}), (pv, "1500"),
                                  (meter, {"power": {"total": -300}}), (pv, b"\xff")])
        measured = source.reading(T0 - FIVE_MIN, T0)
        assert measured.pv_kw == pytest.approx(1.5) and measured.grid_kw == pytest.approx(0.3)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 3, warnings  # pv once, meter once, pv again after it had parsed
        assert f"{pv}: payload 'offline' skipped ('offline' is not a number); expected a number" in warnings[0]
        assert f"{meter}: payload" in warnings[1] and "expected a number at 'power.total'" in warnings[1]
        assert all(r.levelno < logging.ERROR and r.exc_info is None for r in caplog.records)
    finally:
        source.close()


def test_a_value_beyond_any_device_is_dropped_with_one_line_and_the_rest_is_kept(mosquitto, prefix, caplog):
    """A bridge publishing a state of charge of 150 % or 1e308 W: stored, they would reach the
    plans, and the state of charge would bound the battery's commands."""
    clock = Clock(T0 - MINUTE)
    source = bridge(mosquitto, prefix, clock, command={"topic": f"{prefix}/battery/set", "payload": "{power_w}"})
    pv, battery = f"{prefix}/dtu/ac/power", f"{prefix}/battery/state"
    try:
        with caplog.at_level(logging.WARNING):
            send(mosquitto, source, [(battery, {"power_kw": 1.0, "soc": 150}), (battery, {"power_kw": 1.0, "soc": 151}),
                                  (pv, "1e308"), (pv, "800")])
        measured = source.reading(T0 - FIVE_MIN, T0)
        assert math.isnan(measured.battery_soc_percent) and measured.battery_power_kw == pytest.approx(1.0)
        assert measured.pv_kw == pytest.approx(0.8)  # 1e308 W (1e305 kW) dropped, not averaged in
        assert source.command(3.0, T0) == pytest.approx(3.0)  # no 150 % taken as the window's top
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 2, warnings
        assert "battery_soc_percent of 150 is outside [0, 100]" in warnings[0]
        assert "solar_generation_kw of 1e+305 is outside [-0.5, 10000]" in warnings[1]
    finally:
        source.close()


def test_commands_are_published_within_the_battery_s_limits_and_a_stale_plan_hands_back(mosquitto, prefix, caplog):
    clock = Clock(T0 - MINUTE)
    command = {"topic": f"{prefix}/battery/set", "payload": '{"mode": "{mode}", "power_w": {power_w}}',
               "mode_topic": f"{prefix}/battery/mode", "manual_mode": "remote", "auto_mode": "self-use"}
    recorder = Recorder(mosquitto, [f"{prefix}/battery/set", f"{prefix}/battery/mode"])
    source = bridge(mosquitto, prefix, clock, command=command)
    try:
        send(mosquitto, source, [(f"{prefix}/battery/state", {"power_kw": 0.0, "soc": 55.0})])
        assert source.command(8.0, T0) == pytest.approx(5.0)  # the charge rate
        assert source.command(-1.5, T0 + FIVE_MIN) == pytest.approx(-1.5)
        send(mosquitto, source, [(f"{prefix}/battery/state", {"power_kw": 0.0, "soc": 10.0})])
        assert source.command(-1.5, T0 + 2 * FIVE_MIN) == 0.0  # empty: no discharging at min_soc
        with caplog.at_level(logging.INFO):
            assert math.isnan(source.command(math.nan, T0 + 3 * FIVE_MIN))
            assert math.isnan(source.command(math.nan, T0 + 4 * FIVE_MIN))
        assert recorder.wait_for(lambda: len(recorder.messages) >= 5)
        sent = [(m.topic.removeprefix(prefix), m.payload.decode()) for m in recorder.messages]
        assert sent == [("/battery/mode", "remote"),
                        ("/battery/set", '{"mode": "remote", "power_w": 5000}'),
                        ("/battery/set", '{"mode": "remote", "power_w": -1500}'),
                        ("/battery/set", '{"mode": "remote", "power_w": 0}'),
                        ("/battery/mode", "self-use")]
        assert not any(m.retain for m in recorder.messages)
        handed = [r.getMessage() for r in caplog.records if "handed back" in r.getMessage()]
        assert len(handed) == 1 and "no plan or setpoint in force" in handed[0] and "'self-use'" in handed[0]
    finally:
        source.close()
        recorder.close()


def test_without_a_mode_topic_the_hand_back_is_the_payload_in_auto_mode_with_no_power(mosquitto, prefix):
    recorder = Recorder(mosquitto, [f"{prefix}/set"])
    source = bridge(mosquitto, prefix, Clock(T0), command={"topic": f"{prefix}/set", "payload": "{mode}:{power_kw}", "sign": -1})
    try:
        source.command(2.0, T0)
        source.command(math.nan, T0 + FIVE_MIN)
        assert recorder.wait_for(lambda: len(recorder.messages) >= 2)
        assert [m.payload for m in recorder.messages] == [b"manual:-2", b"auto:0"]
    finally:
        source.close()
        recorder.close()


def test_the_broker_going_away_skips_readings_and_they_resume_when_it_returns(tmp_path, prefix, caplog):
    clock = Clock(T0 - MINUTE)
    with private_broker(tmp_path) as private, caplog.at_level(logging.INFO):
        settings = private.settings
        source = bridge(settings, prefix, clock)
        try:
            send(settings, source, [(f"{prefix}/dtu/ac/power", "1200")])
            private.stop()
            assert source.reading(T0 - FIVE_MIN, T0).pv_kw == pytest.approx(1.2)
            assert math.isnan(source.command(1.0, T0))  # nothing sent to a broker that is away
            assert source.reading(T0, T0 + FIVE_MIN) is None
            private.start()
            assert source.subscribed.wait(WAIT_S), "the source did not subscribe again"
            clock.at = T0 + FIVE_MIN + MINUTE
            send(settings, source, [(f"{prefix}/dtu/ac/power", "800")])
            assert source.reading(T0 + FIVE_MIN, T0 + 2 * FIVE_MIN).pv_kw == pytest.approx(0.8)
        finally:
            source.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("edge_gateway")]
    assert len(warnings) == 2 and "lost the broker" in warnings[0] and "connected again" in warnings[1], warnings
    assert all(r.levelno < logging.ERROR and r.exc_info is None for r in caplog.records)
    assert not [t for t in threading.enumerate() if t.name.startswith("paho") and t.is_alive() and "der-source" in t.name]


def test_a_broker_refusing_the_login_is_one_line_naming_the_password_variable(tmp_path, caplog):
    private = PrivateBroker(tmp_path)
    private.config.write_text(private.config.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    private.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="edge_gateway"):
            config = MqttSource.model_validate({"kind": "mqtt", "host": "127.0.0.1", "port": private.port,
                                                "username": "gateway", "fields": fields("x")})
            source = MqttBridge(config, BATTERY, "home-1")
            refusals = lambda: [r for r in caplog.records if "refused the connection" in r.getMessage()]  # noqa: E731
            try:
                waited = threading.Event()
                for _ in range(int(3 * WAIT_S / 0.1)):  # paho retries every second or so: three attempts
                    if len(refusals()) >= 3 or waited.wait(0.1):
                        break
            finally:
                source.close()
        assert len(refusals()) >= 3
    finally:
        private.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "refused the connection" in errors[0] and "MQTT_PASSWORD" in errors[0], errors


def test_the_gateway_stores_the_bridge_s_readings_and_commands_its_battery(mosquitto, prefix, tmp_path, monkeypatch):
    config = build_config({"device_id": unique_id("home"), "interval_seconds": 300, "battery": {"mode": "setpoint"},
                           "source": {"kind": "mqtt", "host": mosquitto.host, "port": mosquitto.port, "fields": fields(prefix),
                                      "command": {"topic": f"{prefix}/battery/set"}}})
    recorder = Recorder(mosquitto, [f"{prefix}/battery/set"])
    store = SQLiteEdgeStore(tmp_path / "edge.db")
    clock = Clock(T0)
    book = SetpointBook.for_configs([config], clock=clock)
    book.accept(config.device_id, json.dumps({"power_kw": 2.0, "expires_in_s": 3600}).encode())
    source = MqttBridge(config.source, config.battery, config.device_id, clock=clock)
    assert source.subscribed.wait(WAIT_S)
    gateway = Gateway([config], [store.write], tmp_path / "state", setpoints=book, history=store, source=source)
    stamps = [T0 + k * FIVE_MIN for k in range(1, 4)]
    try:
        for k, at in enumerate(stamps):
            clock.at = at - MINUTE
            send(mosquitto, source, [(f"{prefix}/dtu/ac/power", str(1000 * (k + 1))), (f"{prefix}/meter/state", {"power": {"total": -500}}),
                                  (f"{prefix}/battery/state", {"power_kw": 1.0, "soc": 40 + k})])
            clock.at = at
            gateway.step(at)
        stored = store.read_range(config.device_id)
        assert list(stored[dd.TS]) == stamps
        assert list(stored[dd.SOLAR_KW]) == pytest.approx([1.0, 2.0, 3.0])
        assert list(stored[dd.BATTERY_SOC]) == [40.0, 41.0, 42.0]
        assert list(stored[dd.LOAD_TOTAL]) == pytest.approx([0.5, 1.5, 2.5])  # pv + 0.5 import - 1.0 charging
        assert recorder.wait_for(lambda: len(recorder.messages) >= 3)
        assert [m.payload for m in recorder.messages] == [b"2000"] * 3
    finally:
        source.close()
        recorder.close()
        store.close()


def test_the_runtime_opens_the_bridge_and_needs_no_sampling_job(mosquitto, prefix, tmp_path):
    config = build_config({"device_id": "home-1", "source": {"kind": "mqtt", "host": mosquitto.host, "port": mosquitto.port,
                                                              "fields": fields(prefix)}})
    runtime = open_runtime([config], store_path=tmp_path / "edge.db", state_dir=tmp_path / "state")
    try:
        assert isinstance(runtime.gateway.source, MqttBridge)
        assert device_jobs(runtime) == []
    finally:
        runtime.close()


@pytest.mark.parametrize(("source", "message"), [
    ({"kind": "mqtt", "host": "10.0.0.2", "fields": {}}, "config: source.mqtt.fields: Dictionary should have at least 1 item after validation, not 0"),
    ({"kind": "mqtt", "host": "10.0.0.2", "fields": {"pv_kw": {"topic": "a"}}},
     "config: source.mqtt.fields: 'pv_kw' is not a reading field a device reports; expected one of "
     "solar_generation_kw, battery_soc_percent, battery_power_kw, net_grid_flow_kw"),
    ({"kind": "mqtt", "host": "10.0.0.2", "fields": {"solar_generation_kw": {"topic": "solar/+/power"}}},
     "config: source.mqtt.fields.solar_generation_kw.topic: 'solar/+/power' is not a single topic; expected a topic without the wildcards '+' and '#'"),
    ({"kind": "mqtt", "host": "10.0.0.2", "fields": {"solar_generation_kw": {"topic": "a", "scale": 0}}},
     "config: source.mqtt.fields.solar_generation_kw.scale: a scale of 0 would report every value as 0; expected e.g. 1.0, or 0.001 for W into kW"),
    ({"kind": "mqtt", "host": "10.0.0.2", "fields": {"solar_generation_kw": {"topic": "a", "sign": -2}}},
     "config: source.mqtt.fields.solar_generation_kw.sign: Input should be 1 or -1 (got -2)"),
    ({"kind": "mqtt", "host": "10.0.0.2", "fields": {"solar_generation_kw": {"topic": "a"}}, "command": {"topic": "b", "payload": "{mode}"}},
     "config: source.mqtt.command.payload: '{mode}' holds no power; expected a template with {power_w} or {power_kw}"),
    ({"kind": "mqtt", "host": "10.0.0.2", "fields": {"solar_generation_kw": {"topic": "a"}}, "password": "x"},
     "config: source.mqtt.password: unknown field; expected one of the documented fields"),
])
def test_a_bad_mqtt_section_is_one_line_naming_the_field(source, message):
    with pytest.raises(ConfigError) as error:
        build_config({"source": source})
    assert str(error.value) == message
