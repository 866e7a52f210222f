"""The MQTT link against hostile input and outages: no payload, callback failure or broker
outage stops it, every refused command is answered on ``.../setpoint/error``, and a dead
thread is restarted."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import timedelta, timezone

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from der_core import der_data as dd
from edge_gateway.daemon import open_runtime
from edge_gateway.mqtt import (
    MqttLink,
    MqttSettings,
    SetpointBook,
    parse_command,
    topics,
)
from edge_gateway.mqtt.commands import CommandRejected, excerpt, nesting_depth
from edge_gateway.mqtt.link import make_client
from tests.mqtt_fixtures import (  # noqa: F401
    WAIT_S,
    Recorder,
    broker,
    private_broker,
    publish,
    unique_id,
)
from tests.test_mqtt import T0, gateway, site, wait_until

pytestmark = pytest.mark.mqtt

NOW = pd.Timestamp("2024-06-15T12:00:00Z")
NUMBER_BOMB = b'{"power_kw": ' + b"9" * 5000 + b"}"
NESTING_BOMB = b"[" * 200_000 + b"]" * 200_000


# --- parsing: bounded before the parser runs ----------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(NUMBER_BOMB, "a number with 5000 digits; expected at most 20", id="number-bomb"),
        pytest.param(b'{"power_kw": -' + b"1" * 21 + b"}", "a number with 21 digits", id="negative-long-integer"),
        pytest.param(NESTING_BOMB, "nested 200000 deep; expected at most 16", id="nesting-bomb"),
        pytest.param(b'{"schedule": ' + b"[" * 17 + b"]" * 17 + b"}", "nested 18 deep", id="just-too-deep"),
        pytest.param(b'{"schedule": [{"ts": "0001-01-01T00:00:00+01:00", "power_kw": 1}]}', "expected a year from 1970", id="year-one"),
        pytest.param(b'{"schedule": [{"ts": "9999-12-31T23:59:59+00:00", "power_kw": 1}]}', "expected a year from 1970", id="year-9999"),
    ],
)
def test_bombs_and_absurd_instants_are_refused_with_the_bound_named(payload, reason):
    with pytest.raises(CommandRejected, match=reason):
        parse_command(payload, "d", 50.0, NOW)


def test_brackets_inside_strings_do_not_count_as_nesting():
    deep_text = "[" * 100 + '\\"{' * 100
    with pytest.raises(CommandRejected, match="not ISO 8601"):
        parse_command(json.dumps({"schedule": [{"ts": deep_text, "power_kw": 1}]}).encode(), "d", 50.0, NOW)


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(alphabet='[]{}"\\ab\n\u00e9'),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(alphabet='[]{}"\\k'), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES, st.booleans())
def test_the_depth_count_matches_the_parsed_structure(value, ascii_only):
    assert nesting_depth(json.dumps(value, ensure_ascii=ascii_only).encode()) == _depth(value)


def test_an_empty_payload_clears_the_devices_command():
    book = SetpointBook({"d": 50.0}, clock=lambda: NOW)
    book.accept("d", b'{"power_kw": 1}')
    assert book.accept("d", b"") is None
    assert book.command("d") is None


def test_an_excerpt_of_a_huge_payload_is_its_head():
    assert excerpt(b"x" * 10_000_000) == "x" * 200 + "..."
    assert excerpt("é".encode() * 300) == "é" * 200 + "..."


# --- the on_message path with real paho messages, no broker ---------------------------------------


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _message(topic: str, payload: bytes, retain: bool = False) -> mqtt.MQTTMessage:
    message = mqtt.MQTTMessage(topic=topic.encode())
    message.payload = payload
    message.retain = retain
    return message


@pytest.fixture
def offline_link():
    """A link that is never started: its callbacks are driven by hand; what it publishes is kept."""
    device = unique_id()
    link = MqttLink(MqttSettings(), [site(device)], setpoints=SetpointBook.for_configs([site(device)], clock=dd.utc_now))
    sent: list[tuple[str, bytes]] = []
    link._client.publish = lambda topic, payload=None, qos=0, retain=False, properties=None: sent.append((topic, payload))
    handler = Captured()
    logging.getLogger("edge_gateway.mqtt").addHandler(handler)
    try:
        yield link, device, sent, handler
    finally:
        logging.getLogger("edge_gateway.mqtt").removeHandler(handler)


def _future(minutes: float) -> str:
    return dd.format_ts(dd.utc_now() + pd.Timedelta(minutes=minutes))


NUMBERS = st.one_of(
    st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.integers(1, 4000).map(lambda n: int("9" * n)),  # json.dumps itself stops at 4,300 digits
    st.sampled_from([1e308, -1e308, 5e-324, 0.0, -0.0, 2.5, -2.5]),
)
TIMESTAMPS = st.one_of(
    st.datetimes(timezones=st.none() | st.just(timezone.utc) | st.just(timezone(timedelta(hours=-14)))).map(lambda t: t.isoformat()),
    st.integers(-1440, 1440).map(_future), st.text(max_size=30),
)
FIELDS = st.one_of(JSON_VALUES, NUMBERS, TIMESTAMPS)
COMMAND_SHAPES = st.one_of(
    st.builds(lambda p, e: {"power_kw": p, "expires_in_s": e}, NUMBERS | FIELDS, NUMBERS | FIELDS),
    st.builds(lambda p, cap: {"power_kw": p, "import_limit_kw": cap}, NUMBERS, NUMBERS | FIELDS),
    st.builds(
        lambda entries: {"schedule": entries},
        st.lists(st.fixed_dictionaries({"ts": TIMESTAMPS, "power_kw": st.none() | NUMBERS},
                                        optional={"import_limit_kw": NUMBERS | FIELDS, "x": FIELDS}), max_size=4) | FIELDS,
    ),
    st.builds(lambda r, ts: {"schedule": [{"ts": ts, "power_kw": 1}], "reserve": r},
              st.dictionaries(st.sampled_from(["start", "step_s", "charging_steps", "house_levels", "one_session_a_day",
                                               "house_kw", "floor_kwh", "charge_to_kwh", "other"]), FIELDS), TIMESTAMPS),
    st.dictionaries(st.text(max_size=12), FIELDS, max_size=4),
)


def _encoded(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.just(b""),
    st.just(NUMBER_BOMB),
    st.integers(0, 60_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(0, 60_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(1, 6000).map(lambda n: b'{"power_kw": 1e' + b"9" * n + b"}"),
    FIELDS.map(_encoded),
    COMMAND_SHAPES.map(_encoded),
    COMMAND_SHAPES.map(lambda v: _encoded(v)[: len(_encoded(v)) // 2]),  # cut short
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payload=PAYLOADS, retain=st.booleans())
def test_any_payload_is_applied_cleared_or_answered_with_a_reason_and_nothing_escapes(offline_link, payload, retain):
    link, device, sent, handler = offline_link
    link.setpoints.accept(device, b"")  # each example starts with no command
    sent.clear()
    handler.records.clear()
    link._client.on_message(link._client, None, _message(topics.setpoint(device), payload, retain))
    errors = [r.getMessage() for r in handler.records if r.levelno >= logging.ERROR]
    assert errors == [], "an exception reached the catch-alls instead of a named refusal"
    replies = [json.loads(body) for topic, body in sent if topic == topics.setpoint_error(device)]
    applied = link.setpoints.command(device) is not None
    if not payload or applied:
        assert replies == []
    else:
        assert len(replies) == 1 and replies[0]["device_id"] == device and replies[0]["error"]
        assert replies[0]["payload"] == excerpt(payload)
    assert not (applied and not payload)
    # A valid command is still taken afterwards.
    link._client.on_message(link._client, None, _message(topics.setpoint(device), b'{"power_kw": 1.5}'))
    assert link.setpoints.power_kw(device, dd.utc_now()) == 1.5


def test_an_unexpected_failure_while_checking_a_command_is_logged_and_answered(offline_link, monkeypatch):
    link, device, sent, handler = offline_link

    def broken(*_args, **_kwargs):
        raise RuntimeError("validation bug")

    monkeypatch.setattr(link.setpoints, "accept", broken)
    link._client.on_message(link._client, None, _message(topics.setpoint(device), b'{"power_kw": 1}'))
    (reply,) = [json.loads(body) for topic, body in sent if topic == topics.setpoint_error(device)]
    assert "could not check this command (RuntimeError); it was not applied" in reply["error"]
    assert any(r.levelno == logging.ERROR and "validation bug" in r.getMessage() for r in handler.records)


@pytest.mark.parametrize("callback", ["on_connect", "on_disconnect", "on_publish", "on_subscribe", "on_connect_fail", "on_message"])
def test_no_callback_raises_into_paho(offline_link, monkeypatch, callback):
    """Each callback is made to fail inside; paho must get a normal return and the log a line."""
    link, device, _sent, handler = offline_link
    boom = RuntimeError("inside " + callback)

    def explode(*_args, **_kwargs):
        raise boom

    class Reason:
        is_failure = False

    client = link._client
    if callback == "on_connect":
        monkeypatch.setattr(link, "status_topics", explode)
        args = (client, None, None, Reason(), None)
    elif callback == "on_disconnect":
        monkeypatch.setattr(link, "connected", type("E", (), {"clear": staticmethod(explode)})())
        args = (client, None, None, Reason(), None)
    elif callback == "on_publish":
        monkeypatch.setattr(link, "_acks", type("Q", (), {"put": staticmethod(explode)})())
        args = (client, None, 1, Reason(), None)
    elif callback == "on_subscribe":
        monkeypatch.setattr(link, "subscribed", type("E", (), {"set": staticmethod(explode)})())
        args = (client, None, 1, [], None)
    elif callback == "on_connect_fail":
        monkeypatch.setattr(link, "settings", None)  # its log line reads the settings
        args = (client, None)
    else:
        monkeypatch.setattr(link, "setpoints", None)
        monkeypatch.setattr(link, "_refuse", explode)
        args = (client, None, _message(topics.setpoint(device), b"{}"))
    assert getattr(client, callback)(*args) is None
    assert any(r.levelno == logging.ERROR and callback.removeprefix("on_") in r.getMessage() for r in handler.records)


# --- reconnecting ----------------------------------------------------------------------------------


def test_the_default_backoff_reaches_a_returning_broker_within_10_s():
    """After any outage the next attempt comes at most ``reconnect_max_s`` later, and an attempt
    lasts at most paho's connect timeout."""
    defaults = MqttSettings()
    client = make_client(defaults, "backoff-check")
    assert client._reconnect_max_delay + client.connect_timeout < 10


@pytest.mark.slow
def test_a_gateway_reconnects_within_10_s_of_the_broker_returning_after_an_outage(tmp_path):
    """18 s down: long enough for a doubling backoff without a low cap to wait 16 s more."""
    device = unique_id()
    (tmp_path / "broker").mkdir()
    with private_broker(tmp_path / "broker") as server:
        defaults = MqttSettings(host="127.0.0.1", port=server.port)
        runtime = open_runtime([site(device)], store_path=tmp_path / "edge.db", mqtt=defaults, state_dir=tmp_path / "state")
        try:
            assert runtime.link.connected.wait(WAIT_S)
            server.stop()
            assert wait_until(lambda: not runtime.link.connected.is_set())
            time.sleep(18)
            server.start()
            assert runtime.link.connected.wait(10.0), "the gateway was still disconnected 10 s after the broker returned"
        finally:
            runtime.close()


# --- end to end through the real broker ---------------------------------------------------------


def _errors_for(recorder: Recorder, device: str) -> list[dict]:
    return recorder.json_on(topics.setpoint_error(device))


def _still_working(broker_settings, runtime, device: str, recorder: Recorder, at: pd.Timestamp) -> None:
    """A valid command is applied and a reading reaches the broker."""
    runtime.link.setpoints.accept(device, b"")
    publish(broker_settings, topics.setpoint(device), b'{"power_kw": 1.0}')
    assert wait_until(lambda: runtime.link.setpoints.command(device) is not None), "a valid command after the bad ones was not applied"
    before = len(recorder.on(topics.telemetry(device)))
    runtime.gateway.step(at)
    assert recorder.wait_for(lambda: len(recorder.on(topics.telemetry(device))) > before), "telemetry stopped"
    assert runtime.link.dead_threads() == []


@pytest.mark.parametrize(("payload", "reason"), [(NUMBER_BOMB, "5000 digits"), (NESTING_BOMB, "nested 200000 deep")], ids=["number-bomb", "nesting-bomb"])
def test_a_bomb_is_answered_on_the_error_topic_and_the_link_keeps_working(broker, tmp_path, payload, reason):
    device = unique_id()
    recorder = Recorder(broker, [topics.setpoint_error(device), topics.telemetry(device)])
    try:
        with gateway(broker, tmp_path, site(device)) as runtime:
            publish(broker, topics.setpoint(device), payload)
            assert recorder.wait_for(lambda: len(_errors_for(recorder, device)) == 1), "no reply on the error topic"
            assert reason in _errors_for(recorder, device)[0]["error"]
            for k in range(25):  # more than paho's 20 unacknowledged messages: the broker still acknowledges
                runtime.gateway.step(T0 + pd.Timedelta(minutes=5 * k))
            assert runtime.link.wait_settled(WAIT_S)
            _still_working(broker, runtime, device, recorder, T0 + pd.Timedelta(hours=3))
    finally:
        recorder.close()


def test_an_empty_retained_message_clears_the_retained_schedule_without_an_error(broker, tmp_path, caplog):
    caplog.set_level("INFO", logger="edge_gateway.mqtt")
    device = unique_id()
    schedule = {"schedule": [{"ts": dd.format_ts(dd.utc_now().floor("s")), "power_kw": 1.5}]}
    recorder = Recorder(broker, [topics.setpoint_error(device)])
    try:
        publish(broker, topics.setpoint(device), json.dumps(schedule), retain=True)
        with gateway(broker, tmp_path, site(device)) as runtime:
            assert wait_until(lambda: runtime.link.setpoints.command(device) is not None), "the retained schedule was not applied"
            publish(broker, topics.setpoint(device), b"", retain=True)
            assert wait_until(lambda: runtime.link.setpoints.command(device) is None), "the empty message did not clear the schedule"
            publish(broker, topics.setpoint(device), b"marker")  # answered after anything the empty one caused
            assert recorder.wait_for(lambda: len(_errors_for(recorder, device)) >= 1)
        assert [e["payload"] for e in _errors_for(recorder, device)] == ["marker"]
        assert f"{device}: setpoint cleared by an empty message" in caplog.text
    finally:
        recorder.close()
        publish(broker, topics.setpoint(device), b"", retain=True)


def test_hostile_commands_through_the_broker_never_stop_the_link(broker, tmp_path):
    """Property-based, end to end: whatever arrives, a refused command is answered once, and
    afterwards the link applies a valid command and still publishes telemetry."""
    device = unique_id()
    recorder = Recorder(broker, [topics.setpoint_error(device), topics.telemetry(device)])
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique_id("fuzz"))
    sender.connect(broker.host, broker.port)
    sender.loop_start()
    markers = iter(range(10**6))
    try:
        with gateway(broker, tmp_path, site(device)) as runtime:

            @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
            @given(payload=PAYLOADS)
            def check(payload):
                runtime.link.setpoints.accept(device, b"")
                before = len(_errors_for(recorder, device))
                marker = f"marker-{next(markers)}".encode()
                for body in (payload, marker):  # the marker's reply comes after anything the payload caused
                    sender.publish(topics.setpoint(device), body, qos=1).wait_for_publish(WAIT_S)
                assert recorder.wait_for(lambda: any(e["payload"] == marker.decode() for e in _errors_for(recorder, device)))
                replies = _errors_for(recorder, device)[before:-1]
                applied = runtime.link.setpoints.command(device) is not None
                assert len(replies) == (0 if not payload or applied else 1)
                assert runtime.link.dead_threads() == []

            check()
            _still_working(broker, runtime, device, recorder, T0)
    finally:
        sender.disconnect()
        sender.loop_stop()
        recorder.close()


# --- the supervisor ---------------------------------------------------------------------------------


def _fast_supervision(settings: MqttSettings) -> MqttSettings:
    return MqttSettings(**{**settings.__dict__, "supervise_s": 0.1})


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's death is the point
def test_a_dead_network_thread_is_replaced_by_a_new_client(broker, tmp_path, caplog):
    caplog.set_level("ERROR", logger="edge_gateway.mqtt")
    device = unique_id()
    recorder = Recorder(broker, [topics.telemetry(device)])
    try:
        with gateway(_fast_supervision(broker), tmp_path, site(device)) as runtime:
            link, crashed = runtime.link, runtime.link._client

            def die(*_args, **_kwargs):
                raise SystemExit  # ends the thread as an escaped exception would, without a report

            crashed._loop = die
            assert wait_until(lambda: link._client is not crashed), "the supervisor did not replace the client"
            assert link.connected.wait(WAIT_S) and link.subscribed.wait(WAIT_S)
            _still_working(broker, runtime, device, recorder, T0)
        assert "the network thread has stopped" in caplog.text
    finally:
        recorder.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's death is the point
def test_a_dead_sender_thread_is_started_again_and_sends_what_waited(broker, tmp_path, caplog):
    caplog.set_level("ERROR", logger="edge_gateway.mqtt")
    device = unique_id()
    recorder = Recorder(broker, [topics.telemetry(device)])
    try:
        with gateway(_fast_supervision(broker), tmp_path, site(device)) as runtime:
            link, pump, died = runtime.link, runtime.link._pump, threading.Event()

            def die_once():
                link._pump = pump
                died.set()
                raise SystemExit

            link._pump = die_once
            runtime.gateway.step(T0)
            assert died.wait(WAIT_S)
            assert recorder.wait_for(lambda: len(recorder.on(topics.telemetry(device))) == 1), "the reading made while the sender died was not sent"
            _still_working(broker, runtime, device, recorder, T0 + pd.Timedelta(minutes=5))
        assert "the sender thread has stopped" in caplog.text
    finally:
        recorder.close()
