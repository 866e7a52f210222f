"""Home Assistant over MQTT, against the real broker of MQTT_HOST/MQTT_PORT: energy meters,
the next-action sensor, the battery mode select and manual setpoint number, and removing a
device's retained messages."""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from der_core import der_data as dd
from der_core.config import build_config
from der_core.setpoints import CommandRejected
from edge_gateway import cli
from edge_gateway.daemon import open_runtime
from edge_gateway.energy import EnergyMeters
from edge_gateway.gateway import Gateway
from edge_gateway.mqtt import topics
from edge_gateway.mqtt.commands import SetpointBook
from edge_gateway.mqtt.controls import MODES, ManualLimits, parse_manual_kw, parse_mode
from edge_gateway.mqtt.next_action import MAX_ATTRIBUTES_BYTES, next_action
from edge_gateway.mqtt.remove import QUIET_S
from edge_gateway.mqtt.settings import MqttSettings
from edge_gateway.state_file import StateFile
from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.mqtt_fixtures import WAIT_S, Recorder, broker, clear_retained, publish, unique_id  # noqa: F401

T0 = pd.Timestamp("2024-06-15T19:00:00Z")  # midday in San Francisco: PV exports, the battery charges
NIGHT = pd.Timestamp("2024-06-15T09:00:00Z")  # 02:00 there: the battery's own rule discharges into the load
STEP = pd.Timedelta(minutes=5)
METER_FIELDS = [m.field for m in topics.ENERGY_SENSORS]


def site(device_id: str, mode: str = "setpoint", **battery) -> object:
    return build_config({"device_id": device_id, "seed": 7, "battery": {"mode": mode, **battery}})


@contextmanager
def gateway(settings: MqttSettings, folder: Path, config, setpoints: SetpointBook | None = None, clean: bool = True):
    runtime = open_runtime([config], store_path=folder / "edge.db", mqtt=settings, state_dir=folder / "state", setpoints=setpoints)
    try:
        assert runtime.link.connected.wait(WAIT_S) and runtime.link.subscribed.wait(WAIT_S)
        yield runtime
    finally:
        runtime.close()
        if clean:
            clear_retained(settings, topics.state_topics(config.device_id) + topics.all_discovery_topics(config.device_id))


def node_configs(settings: MqttSettings, device_id: str) -> dict[str, dict]:
    """The retained discovery configs of the device's node, as a fresh subscriber gets them."""
    recorder = Recorder(settings, [f"homeassistant/+/{topics.node_id(device_id)}/+/config"])
    try:
        recorder.wait_for(lambda: False, timeout_s=QUIET_S * 2)
        return {m.topic: json.loads(m.payload) for m in recorder.messages if m.retain and m.payload}
    finally:
        recorder.close()


def latest_json(recorder: Recorder, topic: str, predicate=lambda payload: True) -> dict:
    assert recorder.wait_for(lambda: any(predicate(json.loads(m.payload)) for m in recorder.on(topic) if m.payload)), topic
    return [p for p in (json.loads(m.payload) for m in recorder.on(topic) if m.payload) if predicate(p)][-1]


# --- discovery -------------------------------------------------------------------------------


def test_discovery_offers_five_energy_meters_a_next_action_and_the_manual_controls(broker, tmp_path):  # noqa: F811
    device = unique_id("ha")
    config = site(device, max_charge_rate_kw=4.0, max_discharge_rate_kw=3.5)
    with gateway(broker, tmp_path, config):
        configs = node_configs(broker, device)
    node = topics.node_id(device)
    assert sorted(configs) == sorted(topics.all_discovery_topics(device))
    energy = {t: c for t, c in configs.items() if c.get("device_class") == "energy"}
    assert sorted(c["unique_id"] for c in energy.values()) == sorted(f"der_{node}_{m.key}" for m in topics.ENERGY_SENSORS)
    for meter in energy.values():
        assert (meter["unit_of_measurement"], meter["state_class"], meter["state_topic"]) == ("kWh", "total_increasing", topics.energy(device))
        assert meter["value_template"].removeprefix("{{ value_json.").removesuffix(" }}") in METER_FIELDS
    action = configs[f"homeassistant/sensor/{node}/next_action/config"]
    assert action["device_class"] == "enum" and sorted(action["options"]) == ["auto", "charge", "discharge", "hold"]
    assert action["json_attributes_topic"] == action["state_topic"] == topics.next_action(device)
    mode = configs[f"homeassistant/select/{node}/battery_mode/config"]
    assert mode["options"] == list(MODES) and mode["command_topic"] == topics.mode(device) + "/set"
    number = configs[f"homeassistant/number/{node}/manual_setpoint/config"]
    assert (number["min"], number["max"], number["step"], number["unit_of_measurement"]) == (-3.5, 4.0, 0.1, "kW")
    assert number["command_topic"] == topics.manual_kw(device) + "/set" and number["state_topic"] == topics.manual_kw(device)


def test_a_battery_that_runs_its_own_rule_gets_no_manual_controls(broker, tmp_path):  # noqa: F811
    device = unique_id("ha")
    with gateway(broker, tmp_path, site(device, mode="self_consumption")):
        configs = node_configs(broker, device)
    components = sorted({topic.split("/")[1] for topic in configs})
    assert components == ["sensor"] and len(configs) == len(topics.SENSORS) + len(topics.ENERGY_SENSORS) + 1


# --- energy meters ---------------------------------------------------------------------------


def test_the_meters_grow_across_a_restart_and_equal_the_stored_readings_integrated(broker, tmp_path):  # noqa: F811
    device = unique_id("ha")
    config = site(device)
    recorder = Recorder(broker, [topics.energy(device)])
    try:
        for run in range(2):
            with gateway(broker, tmp_path, config, clean=run == 1) as runtime:
                for k in range(3):
                    runtime.gateway.step(T0 + (3 * run + k) * STEP)
                assert recorder.wait_for(lambda: len(recorder.on(topics.energy(device))) >= 3 * (run + 1))
        published = [json.loads(m.payload) for m in recorder.on(topics.energy(device)) if m.payload]
    finally:
        recorder.close()
    with SQLiteEdgeStore(tmp_path / "edge.db") as store:
        readings = store.read_range(device)
    assert [p["ts"] for p in published][-6:] == [dd.format_ts(T0 + k * STEP) for k in range(6)]
    for field in METER_FIELDS:
        values = [p[field] for p in published]
        assert values == sorted(values), f"{field} went backwards: {values}"
    last = published[-1]
    assert last["pv_kwh"] > published[2]["pv_kwh"] > 0  # the second run went on from the first
    hours = STEP.total_seconds() / 3600
    assert last["pv_kwh"] == pytest.approx(float(readings[dd.SOLAR_KW].sum()) * hours, abs=1e-5)
    grid = readings[dd.NET_GRID_FLOW]
    assert last["grid_export_kwh"] == pytest.approx(float((-grid).clip(lower=0).sum()) * hours, abs=1e-5)
    assert last["grid_import_kwh"] == pytest.approx(float(grid.clip(lower=0).sum()) * hours, abs=1e-5)
    battery = readings[dd.BATTERY_POWER]
    assert last["battery_charge_kwh"] == pytest.approx(float(battery.clip(lower=0).sum()) * hours, abs=1e-5)
    assert last["battery_discharge_kwh"] == pytest.approx(float((-battery).clip(lower=0).sum()) * hours, abs=1e-5)


def _gateway_with_store(tmp_path: Path, config) -> tuple[Gateway, SQLiteEdgeStore]:
    store = SQLiteEdgeStore(tmp_path / "edge.db")
    return Gateway([config], [store.write], tmp_path / "state", history=store), store


@pytest.mark.parametrize("lost", ["state-file", "meters-of-an-older-state-file"])
def test_meters_lost_with_the_state_go_on_from_the_stored_readings_not_from_zero(tmp_path, lost):
    config = site("meter-site")
    gateway, store = _gateway_with_store(tmp_path, config)
    try:
        for k in range(4):
            gateway.step(T0 + k * STEP)
        before = StateFile(tmp_path / "state", "meter-site").load().latest.energy
        path = tmp_path / "state" / "meter-site.json"
        if lost == "state-file":
            path.unlink()
        else:
            saved = json.loads(path.read_text())
            saved.pop("energy"), saved["previous"].pop("energy")
            path.write_text(json.dumps(saved))
        gateway.step(T0 + 4 * STEP)
        after = StateFile(tmp_path / "state", "meter-site").load().latest.energy
    finally:
        store.close()
    assert before.pv_kwh > 0
    for field in METER_FIELDS:
        assert getattr(after, field) >= getattr(before, field) - 1e-12
    assert after.pv_kwh > before.pv_kwh
    assert after.pv_kwh == pytest.approx(before.pv_kwh + float(store_pv_kw(tmp_path, T0 + 4 * STEP)) * STEP.total_seconds() / 3600)


def store_pv_kw(folder: Path, at: pd.Timestamp) -> float:
    with SQLiteEdgeStore(folder / "edge.db") as store:
        frame = store.read_range("meter-site", at, at + pd.Timedelta(seconds=1))
    return float(frame[dd.SOLAR_KW].iloc[0])


def test_the_same_instant_again_does_not_count_its_energy_twice(tmp_path):
    gateway = Gateway([site("meter-site")], state_dir=tmp_path)
    for k in range(3):
        gateway.step(T0 + k * STEP)
    once = StateFile(tmp_path, "meter-site").load().latest.energy
    gateway.step(T0 + 2 * STEP)
    assert StateFile(tmp_path, "meter-site").load().latest.energy == once


def test_a_missing_power_adds_nothing_and_signs_split_into_their_meters():
    meters = EnergyMeters().after(grid_kw=-2.0, pv_kw=math.nan, battery_kw=3.0, hours=0.5)
    assert meters == EnergyMeters(grid_import_kwh=0.0, grid_export_kwh=1.0, pv_kwh=0.0, battery_charge_kwh=1.5)
    meters = meters.after(grid_kw=4.0, pv_kw=-0.01, battery_kw=-1.0, hours=0.25)
    assert meters == EnergyMeters(1.0, 1.0, 0.0, 1.5, 0.25)


# --- next action -----------------------------------------------------------------------------

NOW = pd.Timestamp("2024-06-15T12:00:00Z")


def _book(device: str = "site", clock=lambda: NOW) -> SetpointBook:
    return SetpointBook.for_configs([site(device)], clock=clock)


def _schedule(*entries: tuple[pd.Timedelta, float | None], savings: dict | None = None) -> bytes:
    body = {"schedule": [{"ts": dd.format_ts(NOW + offset), "power_kw": power} for offset, power in entries]}
    return json.dumps(body | ({"expected_savings": savings} if savings else {})).encode()


def test_the_next_action_follows_a_known_schedule_merging_repeats_and_filling_gaps_with_auto():
    book = _book()
    hour = pd.Timedelta(hours=1)
    book.accept("site", _schedule((-STEP, 2.0), (hour - STEP, 2.0), (hour, -3.0), (2 * hour, None), (3 * hour, 0.0),
                                  savings={"amount": 1.84, "currency": "USD"}))
    payload = next_action(book, "site", NOW)
    assert payload["state"] == "charge"
    assert payload["attributes"] | {"plan": None} == {"mode": "plan", "power_kw": 2.0, "until": dd.format_ts(NOW + hour),
                                                      "expected_savings": {"amount": 1.84, "currency": "USD"}, "plan": None,
                                                      "plan_complete": True}
    # The last entry lasts as long as the step before it (one hour), then the battery's own rule.
    assert payload["attributes"]["plan"] == [
        {"start": dd.format_ts(NOW), "action": "charge", "power_kw": 2.0},
        {"start": dd.format_ts(NOW + hour), "action": "discharge", "power_kw": -3.0},
        {"start": dd.format_ts(NOW + 2 * hour), "action": "auto", "power_kw": None},
        {"start": dd.format_ts(NOW + 3 * hour), "action": "hold", "power_kw": 0.0},
        {"start": dd.format_ts(NOW + 4 * hour), "action": "auto", "power_kw": None},
    ]


def test_without_a_command_the_battery_runs_its_own_rule_until_the_plan_starts():
    book = _book()
    assert next_action(book, "site", NOW) == {"state": "auto", "attributes": {
        "mode": "plan", "power_kw": None, "until": None, "expected_savings": None,
        "plan": [{"start": dd.format_ts(NOW), "action": "auto", "power_kw": None}], "plan_complete": True}}
    book.accept("site", _schedule((pd.Timedelta(hours=2), -1.0)))
    payload = next_action(book, "site", NOW)
    assert (payload["state"], payload["attributes"]["until"]) == ("auto", dd.format_ts(NOW + pd.Timedelta(hours=2)))


def test_a_day_of_alternating_five_minute_commands_is_cut_to_fit_home_assistants_attribute_limit():
    book = _book()
    book.accept("site", _schedule(*[(k * STEP, 1.25 if k % 2 else -1.25) for k in range(288)]))
    full = [(NOW + k * STEP, "charge" if k % 2 else "discharge") for k in range(288)]
    attributes = next_action(book, "site", NOW)["attributes"]
    assert len(json.dumps(attributes)) <= MAX_ATTRIBUTES_BYTES < 16 * 1024
    assert attributes["plan_complete"] is False and 100 < len(attributes["plan"]) < 288
    assert [(dd.parse_ts(p["start"]), p["action"]) for p in attributes["plan"]] == full[: len(attributes["plan"])]


# --- manual controls -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"turbo", "expected one of plan, auto, hold, charge, discharge"),
        (b"", "expected one of"),
        (b"\xff\xfe", "not UTF-8"),
        (b"charge" * 20, "expected a short text"),
    ],
)
def test_a_mode_that_is_not_one_of_the_options_is_refused(payload, reason):
    with pytest.raises(CommandRejected, match=reason):
        parse_mode(payload)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"abc", "expected a number of kW"),
        (b"5.1", "expected -3 to 5 kW"),
        (b"-3.01", "expected -3 to 5 kW"),
        (b"nan", "expected -3 to 5 kW"),
        (b"inf", "expected -3 to 5 kW"),
    ],
)
def test_a_manual_setpoint_outside_the_batterys_rates_is_refused(payload, reason):
    with pytest.raises(CommandRejected, match=reason):
        parse_manual_kw(payload, ManualLimits(max_charge_kw=5.0, max_discharge_kw=3.0))


def test_a_manual_mode_replaces_the_plans_power_cap_and_reserve_until_plan_is_chosen_again():
    book = _book()
    book.accept("site", json.dumps({"schedule": [{"ts": dd.format_ts(NOW), "power_kw": 1.0, "import_limit_kw": 4.0}]}).encode())
    assert (book.power_kw("site", NOW), book.import_limit_kw("site", NOW)) == (1.0, 4.0)
    expected = {b"hold": 0.0, b"charge": 5.0, b"discharge": -5.0}
    for mode, power_kw in expected.items():
        book.set_mode("site", mode)
        assert (book.power_kw("site", NOW), math.isnan(book.import_limit_kw("site", NOW))) == (power_kw, True)
    book.set_mode("site", b"auto")
    assert math.isnan(book.power_kw("site", NOW))
    book.set_manual_kw("site", b"-2.3")
    assert (book.override("site").mode, book.power_kw("site", NOW)) == ("discharge", -2.3)
    book.set_mode("site", b"plan")
    assert (book.power_kw("site", NOW), book.import_limit_kw("site", NOW)) == (1.0, 4.0)


def wait_for_command(runtime, device: str) -> bool:
    deadline = time.monotonic() + WAIT_S
    while runtime.link.setpoints.command(device) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return runtime.link.setpoints.command(device) is not None


def _echo(recorder: Recorder, topic: str, payload: bytes) -> None:
    assert recorder.wait_for(lambda: bool(recorder.on(topic)) and recorder.on(topic)[-1].payload == payload), \
        f"{topic}: {[m.payload for m in recorder.on(topic)]}"


def test_select_and_number_reach_the_controller_and_change_what_the_battery_is_asked(broker, tmp_path, caplog):  # noqa: F811
    device = unique_id("ha")
    config = site(device)
    book = SetpointBook.for_configs([config], clock=lambda: NIGHT)
    states = Recorder(broker, [topics.mode(device), topics.manual_kw(device), topics.next_action(device)])
    caplog.set_level(logging.WARNING, logger="edge_gateway")
    try:
        with gateway(broker, tmp_path, config, setpoints=book) as runtime:
            _echo(states, topics.mode(device), b"plan")
            step = iter(NIGHT + k * STEP for k in range(10))
            rule_kw = float(runtime.gateway.step(next(step))[dd.BATTERY_POWER].iloc[0])
            assert rule_kw < 0  # at night the battery's own rule discharges into the load

            publish(broker, topics.command(topics.mode(device)), "charge")
            _echo(states, topics.mode(device), b"charge")
            _echo(states, topics.manual_kw(device), b"5")
            assert float(runtime.gateway.step(next(step))[dd.BATTERY_POWER].iloc[0]) == pytest.approx(5.0)
            assert latest_json(states, topics.next_action(device))["state"] == "charge"

            publish(broker, topics.command(topics.manual_kw(device)), "-1.5")
            _echo(states, topics.manual_kw(device), b"-1.5")
            _echo(states, topics.mode(device), b"discharge")
            assert float(runtime.gateway.step(next(step))[dd.BATTERY_POWER].iloc[0]) == pytest.approx(-1.5)

            for bad_topic, bad in [(topics.mode(device), b"turbo"), (topics.manual_kw(device), b"99"),
                                   (topics.manual_kw(device), b"abc"), (topics.mode(device), b"\xff")]:
                publish(broker, topics.command(bad_topic), bad)
            publish(broker, topics.command(topics.manual_kw(device)), "-1.2")  # after the bad ones, in order
            _echo(states, topics.manual_kw(device), b"-1.2")
            assert runtime.link.dead_threads() == []
            assert float(runtime.gateway.step(next(step))[dd.BATTERY_POWER].iloc[0]) == pytest.approx(-1.2)

            hold = [{"ts": dd.format_ts(NIGHT + k * pd.Timedelta(hours=1)), "power_kw": 0.0} for k in range(2)]
            publish(broker, topics.setpoint(device), json.dumps({"schedule": hold}))
            assert wait_for_command(runtime, device)
            assert float(runtime.gateway.step(next(step))[dd.BATTERY_POWER].iloc[0]) == pytest.approx(-1.2)  # manual wins
            publish(broker, topics.command(topics.mode(device)), "plan")
            _echo(states, topics.mode(device), b"plan")
            _echo(states, topics.manual_kw(device), b"None")
            assert float(runtime.gateway.step(next(step))[dd.BATTERY_POWER].iloc[0]) == 0.0  # the plan's hold
    finally:
        states.close()
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 4, refused
    assert all(r.levelno == logging.WARNING and "\n" not in r.getMessage() for r in caplog.records if "refused" in r.getMessage())


def test_the_next_action_of_a_schedule_is_published_retained_when_it_arrives(broker, tmp_path):  # noqa: F811
    device = unique_id("ha")
    config = site(device)
    now = dd.utc_now().floor("s")
    book = SetpointBook.for_configs([config], clock=lambda: now)
    with gateway(broker, tmp_path, config, setpoints=book):
        body = {"schedule": [{"ts": dd.format_ts(now - STEP), "power_kw": -2.0}, {"ts": dd.format_ts(now + STEP), "power_kw": 1.0}],
                "expected_savings": {"amount": 0.42, "currency": "EUR"}}
        publish(broker, topics.setpoint(device), json.dumps(body))
        fresh = Recorder(broker, [topics.next_action(device)])
        try:
            found = latest_json(fresh, topics.next_action(device), lambda p: p["state"] == "discharge")
        finally:
            fresh.close()
    assert found["attributes"]["until"] == dd.format_ts(now + STEP)
    assert found["attributes"]["expected_savings"] == {"amount": 0.42, "currency": "EUR"}
    assert [p["action"] for p in found["attributes"]["plan"]] == ["discharge", "charge", "auto"]


# --- removing a device -----------------------------------------------------------------------


def test_remove_device_leaves_nothing_retained_for_it_and_says_how_many_it_cleared(broker, tmp_path, capsys, monkeypatch):  # noqa: F811
    device, other = unique_id("ha.rm"), unique_id("ha")
    monkeypatch.setenv("MQTT_HOST", broker.host)
    monkeypatch.setenv("MQTT_PORT", str(broker.port))
    with gateway(broker, tmp_path / "other", site(other), clean=False):
        pass
    with gateway(broker, tmp_path, site(device), clean=False) as runtime:
        runtime.gateway.step(T0)
        assert runtime.link.wait_settled(WAIT_S)
    legacy = f"homeassistant/sensor/{topics.node_id(device)}/an_entity_of_an_older_release/config"
    publish(broker, legacy, json.dumps({"name": "old"}), retain=True)
    before = node_configs(broker, device)
    try:
        assert cli.main(["--remove-device", device]) == 0
        out = capsys.readouterr().out
        # Only the two devices' own trees: the shared broker may hold thousands of other retained
        # messages, whose delivery could outlast the wait on a busy machine.
        everything = Recorder(broker, [f"homeassistant/+/{topics.node_id(device)}/#",
                                       f"homeassistant/+/{topics.node_id(other)}/#", f"der/{device}/#"])
        try:
            everything.wait_for(lambda: False, timeout_s=QUIET_S * 2)
            left = {m.topic for m in everything.messages if m.retain and m.payload}
        finally:
            everything.close()
        # discovery configs (12 with the legacy one) and status, energy, next action, mode, manual setpoint
        assert f"cleared {len(before) + 5} retained message(s) of device {device}" in out
        assert legacy in before and len(before) == len(topics.all_discovery_topics(device)) + 1
        assert not [t for t in left if topics.node_id(device) in t or f"der/{device}/" in t]
        assert sorted(topics.all_discovery_topics(other)) == sorted(t for t in left if t.startswith("homeassistant/") and f"/{topics.node_id(other)}/" in t)
    finally:
        clear_retained(broker, topics.state_topics(other) + topics.all_discovery_topics(other))
