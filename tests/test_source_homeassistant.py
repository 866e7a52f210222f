"""The homeassistant reading source and its battery commands, against a local server speaking
Home Assistant's REST API as documented (``tests/fakes/homeassistant.py``)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd
import pytest

from der_core import der_data as dd
from der_core.config import BatteryConfig, HomeAssistantSource, build_config
from der_core.errors import ConfigError
from der_core.redact import redact
from edge_gateway.gateway import Gateway
from edge_gateway.mqtt.commands import SetpointBook
from edge_gateway.sources.factory import open_source
from edge_gateway.sources.homeassistant import HomeAssistantDevice
from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.fakes.homeassistant import FakeHomeAssistant

T0 = pd.Timestamp("2024-06-01T12:00:00Z")
FIVE_MIN = pd.Timedelta(minutes=5)
MINUTE = pd.Timedelta(minutes=1)
ENTITIES = {"solar_generation_kw": "sensor.pv_power", "battery_soc_percent": "sensor.battery_soc",
            "battery_power_kw": "sensor.battery_power", "net_grid_flow_kw": "sensor.grid_power"}
BATTERY = BatteryConfig(max_charge_rate_kw=5.0, max_discharge_rate_kw=4.0, min_soc=10.0, max_soc=90.0)


def fill(ha: FakeHomeAssistant) -> FakeHomeAssistant:
    """A site at noon: 2345 W of PV, 54.5 % charged, the battery charging 1.5 kW, 1.2 kW
    imported; a battery setpoint entity in W between -6000 and 6000 and a mode select."""
    ha.set("sensor.pv_power", "2345", "W", friendly_name="PV power")
    ha.set("sensor.battery_soc", "54.5", "%")
    ha.set("sensor.battery_power", "1.5", "kW")
    ha.set("sensor.grid_power", "1200", "W")
    ha.set("number.battery_setpoint", "0", "W", min=-6000, max=6000, step=1)
    ha.set("select.battery_mode", "auto", options=["auto", "manual"])
    return ha


@pytest.fixture
def ha():
    server = fill(FakeHomeAssistant()).start()
    yield server
    server.stop()


def settings(ha: FakeHomeAssistant, **extra) -> HomeAssistantSource:
    data = {"kind": "homeassistant", "url": ha.url, "entities": ENTITIES, "timeout_s": 2.0, **extra}
    return HomeAssistantSource.model_validate(data)


def device(ha: FakeHomeAssistant, token: str | None = None, **extra) -> HomeAssistantDevice:
    return HomeAssistantDevice(settings(ha, **extra), BATTERY, token=ha.token if token is None else token)


def read_once(source: HomeAssistantDevice, at: pd.Timestamp = T0):
    return source.reading(at - FIVE_MIN, at)


COMMAND = {"service": "number.set_value", "entity_id": "number.battery_setpoint",
           "mode": {"service": "select.select_option", "entity_id": "select.battery_mode", "manual": "manual", "auto": "auto"}}


def test_states_are_read_with_their_units_into_the_contract_s(ha):
    measured = read_once(device(ha))
    assert measured.pv_kw == pytest.approx(2.345)  # W
    assert measured.battery_power_kw == pytest.approx(1.5)  # kW
    assert measured.battery_soc_percent == pytest.approx(54.5)
    assert measured.grid_kw == pytest.approx(1.2)
    assert measured.load_kw == pytest.approx(2.345 + 1.2 - 1.5)
    assert set(ha.seen_auth) == {f"Bearer {ha.token}"}


@pytest.mark.parametrize(("state", "unit", "expected_kw"), [("2.5", "MW", 2500.0), ("-800", "W", -0.8), ("0.75", "kW", 0.75)])
def test_a_power_in_any_documented_unit_becomes_kw(ha, state, unit, expected_kw):
    ha.set("sensor.grid_power", state, unit)
    assert read_once(device(ha)).grid_kw == pytest.approx(expected_kw)


def test_signs_turn_the_sensors_directions_into_the_contract_s(ha):
    entities = {**ENTITIES, "battery_power_kw": {"entity_id": "sensor.battery_power", "sign": -1},
                "net_grid_flow_kw": {"entity_id": "sensor.grid_power", "sign": -1}}
    measured = read_once(device(ha, entities=entities))
    assert (measured.battery_power_kw, measured.grid_kw) == (pytest.approx(-1.5), pytest.approx(-1.2))
    assert measured.load_kw == pytest.approx(2.345 - 1.2 + 1.5)


def test_a_reading_averages_its_interval_s_samples_and_keeps_the_last_state_of_charge(ha):
    source = device(ha)
    for k, (watts, soc) in enumerate([(1000, 50), (2000, 51), (3000, 52)]):
        ha.set("sensor.grid_power", watts, "W")
        ha.set("sensor.battery_soc", soc, "%")
        source.sample(T0 - FIVE_MIN + (k + 1) * MINUTE)
    ha.set("sensor.grid_power", 9000, "W")
    source.sample(T0 + 10 * pd.Timedelta(seconds=1))  # the next interval's
    first = source.reading(T0 - FIVE_MIN, T0)
    assert first.grid_kw == pytest.approx(2.0) and first.battery_soc_percent == 52.0
    assert source.reading(T0, T0 + FIVE_MIN).grid_kw == pytest.approx(9.0)


@pytest.mark.parametrize("state", ["unavailable", "unknown"])
def test_an_entity_without_a_value_leaves_its_field_empty_without_a_warning(ha, state, caplog):
    ha.set("sensor.battery_power", state)
    with caplog.at_level(logging.WARNING):
        measured = read_once(device(ha))
    assert math.isnan(measured.battery_power_kw) and math.isnan(measured.load_kw)
    assert measured.pv_kw == pytest.approx(2.345)
    assert caplog.records == []


def test_a_unit_that_is_no_power_or_a_missing_entity_leaves_the_field_empty_with_one_line_each(ha, caplog):
    ha.set("sensor.grid_power", "12.5", "kWh")
    ha.states.pop("sensor.pv_power")
    source = device(ha)
    with caplog.at_level(logging.WARNING):
        for k in range(3):
            measured = read_once(source, T0 + k * FIVE_MIN)
    assert math.isnan(measured.grid_kw) and math.isnan(measured.pv_kw) and measured.battery_soc_percent == 54.5
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "sensor.grid_power reports in 'kWh'; expected W or kW or MW for net_grid_flow_kw" in lines[0] + lines[1]
    assert any("sensor.pv_power not read (404" in line for line in lines)


def test_a_state_beyond_any_device_leaves_its_field_empty_with_one_line(ha, caplog):
    """A battery sensor at 140 % (a template gone wrong): not stored, not planned on."""
    ha.set("sensor.battery_soc", "140", "%")
    source = device(ha)
    with caplog.at_level(logging.WARNING):
        readings = [read_once(source, T0 + k * FIVE_MIN) for k in range(3)]
    assert all(math.isnan(m.battery_soc_percent) and m.pv_kw == pytest.approx(2.345) for m in readings)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "battery_soc_percent of 140 is outside [0, 100]" in line


def test_all_entities_without_a_value_give_no_reading(ha):
    for entity_id in ENTITIES.values():
        ha.set(entity_id, "unavailable")
    assert read_once(device(ha)) is None


def test_a_refused_token_is_one_line_naming_the_variable_and_never_shows_the_token(ha, caplog):
    source = device(ha, token="wrong-token-abcdef")
    with caplog.at_level(logging.INFO):
        assert read_once(source) is None
        assert read_once(source, T0 + FIVE_MIN) is None
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("edge_gateway")]
    assert len(lines) == 1 and "HOMEASSISTANT_TOKEN" in lines[0] and "401" in lines[0], lines
    assert "wrong-token-abcdef" not in caplog.text


def test_no_token_is_a_config_error_naming_the_variable(ha, monkeypatch):
    monkeypatch.delenv("HOMEASSISTANT_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="^HOMEASSISTANT_TOKEN is not set; expected a long-lived access token"):
        HomeAssistantDevice(settings(ha), BATTERY)


def test_the_token_variable_is_a_secret_redact_masks(monkeypatch):
    monkeypatch.setenv("HOMEASSISTANT_TOKEN", "eyJhbGciOiJIUzI1NiJ9.secret")
    assert redact("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.secret") == "Authorization: Bearer ***"


def test_home_assistant_going_away_skips_readings_then_they_resume(ha, caplog):
    source = device(ha)
    with caplog.at_level(logging.INFO):
        assert read_once(source, T0) is not None
        ha.stop()
        source.sample(T0 + MINUTE)
        assert read_once(source, T0 + FIVE_MIN) is None
        ha.start()
        ha.set("sensor.grid_power", "700", "W")
        assert read_once(source, T0 + 2 * FIVE_MIN).grid_kw == pytest.approx(0.7)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "not answering" in warnings[0] and "answers again" in warnings[1], warnings
    assert all(r.exc_info is None for r in caplog.records) and "Traceback" not in caplog.text


def test_an_instant_is_read_now_and_leaves_the_interval_s_reading_to_its_samples(ha):
    source = device(ha)
    source.sample(T0 - MINUTE)
    ha.set("sensor.grid_power", "6500", "W")
    instant = source.instant(T0, T0 - FIVE_MIN)
    assert instant.grid_kw == pytest.approx(6.5) and instant.net_load_kw == pytest.approx(5.0)
    assert read_once(source).grid_kw == pytest.approx(1.2)  # the sample's
    ha.stop()
    assert source.instant(T0 + MINUTE, T0) is None  # not answering: nothing, nothing raised


# -- commands -------------------------------------------------------------------------------
@pytest.mark.parametrize(("asked_kw", "soc", "unit", "sign", "sent_value", "sent_kw"), [
    (2.0, "54.5", "W", 1, 2000.0, 2.0),
    (8.0, "54.5", "W", 1, 5000.0, 5.0),  # the battery's charge rate
    (-8.0, "54.5", "W", 1, -4000.0, -4.0),  # its discharge rate
    (-1.25, "54.5", "kW", 1, -1.25, -1.25),
    (2.0, "54.5", "W", -1, -2000.0, 2.0),  # the entity takes discharging as positive
    (3.0, "90", "W", 1, 0.0, 0.0),  # full: no charging at max_soc
    (-3.0, "10", "W", 1, 0.0, 0.0),  # empty: no discharging at min_soc
])
def test_commands_are_posted_within_the_battery_s_limits(ha, asked_kw, soc, unit, sign, sent_value, sent_kw):
    ha.set("sensor.battery_soc", soc, "%")
    ha.set("number.battery_setpoint", "0", unit, min=-6000, max=6000)
    source = device(ha, command={**COMMAND, "sign": sign})
    read_once(source)
    assert source.command(asked_kw, T0) == pytest.approx(sent_kw)
    assert ha.calls == [("select.select_option", {"entity_id": "select.battery_mode", "option": "manual"}),
                        ("number.set_value", {"entity_id": "number.battery_setpoint", "value": sent_value})]
    assert ha.states["number.battery_setpoint"]["state"] == str(sent_value)


def test_a_command_stays_within_the_entity_s_own_range(ha):
    ha.set("number.battery_setpoint", "0", "W", min=-2500, max=3000)
    source = device(ha, command=COMMAND)
    assert source.command(4.5, T0) == pytest.approx(3.0)
    assert source.command(-3.5, T0) == pytest.approx(-2.5)
    assert [data["value"] for service, data in ha.calls if service == "number.set_value"] == [3000.0, -2500.0]


def test_the_mode_is_selected_once_while_the_gateway_keeps_control(ha):
    source = device(ha, command=COMMAND)
    for k, kw in enumerate([1.0, 2.0, -1.0]):
        source.command(kw, T0 + k * FIVE_MIN)
    assert [service for service, _ in ha.calls] == ["select.select_option"] + ["number.set_value"] * 3


def test_without_a_mode_select_no_plan_holds_the_battery_idle(ha, caplog):
    source = device(ha, command={"entity_id": "number.battery_setpoint"})
    source.command(2.0, T0)
    with caplog.at_level(logging.WARNING):
        source.command(math.nan, T0 + FIVE_MIN)
    assert ha.calls[-1] == ("number.set_value", {"entity_id": "number.battery_setpoint", "value": 0})
    assert "battery held idle" in caplog.text


def make_gateway(ha: FakeHomeAssistant, tmp_path, clock, monkeypatch) -> tuple[Gateway, SQLiteEdgeStore, SetpointBook]:
    monkeypatch.setenv("HOMEASSISTANT_TOKEN", ha.token)
    config = build_config({"device_id": "home-1", "interval_seconds": 300,
                           "battery": {"mode": "setpoint", "max_charge_rate_kw": 5.0, "max_discharge_rate_kw": 4.0},
                           "source": {"kind": "homeassistant", "url": ha.url, "entities": ENTITIES, "command": COMMAND}})
    store = SQLiteEdgeStore(tmp_path / "edge.db")
    book = SetpointBook.for_configs([config], clock=clock)
    source = open_source(config)
    assert isinstance(source, HomeAssistantDevice)
    return Gateway([config], [store.write], tmp_path / "state", setpoints=book, history=store, source=source), store, book


def test_the_gateway_stores_readings_commands_and_hands_back_when_the_plan_is_stale(ha, tmp_path, monkeypatch, caplog):
    now = {"t": T0}
    gateway, store, book = make_gateway(ha, tmp_path, lambda: now["t"], monkeypatch)
    book.accept("home-1", json.dumps({"power_kw": -6.0, "expires_in_s": 700}).encode())
    stamps = [T0 + k * FIVE_MIN for k in range(4)]
    with caplog.at_level(logging.INFO):
        for k, at in enumerate(stamps):
            now["t"] = at
            ha.set("sensor.grid_power", 1000 + 100 * k, "W")
            gateway.source.sample(at - MINUTE)
            gateway.step(at)
    stored = store.read_range("home-1")
    assert list(stored[dd.TS]) == stamps
    assert list(stored[dd.NET_GRID_FLOW]) == pytest.approx([1.0, 1.1, 1.2, 1.3])
    assert stored[dd.SOLAR_KW].iloc[0] == pytest.approx(2.345)
    assert stored[dd.LOAD_TOTAL].iloc[0] == pytest.approx(2.345 + 1.0 - 1.5)
    assert math.isnan(stored[dd.PRICE].iloc[0])  # not reported, not invented
    values = [data.get("value", data.get("option")) for _, data in ha.calls]
    assert values == ["manual", -4000.0, -4000.0, -4000.0, "auto"]  # clipped to the discharge rate; expired at T0+700s
    handed = [r.getMessage() for r in caplog.records if "handed back" in r.getMessage()]
    assert len(handed) == 1 and "no plan or setpoint in force" in handed[0]
    store.close()
    gateway.source.close()


@pytest.mark.parametrize(("source", "message"), [
    ({"kind": "homeassistant", "entities": {}}, "config: source.homeassistant.entities: Dictionary should have at least 1 item after validation, not 0"),
    ({"kind": "homeassistant", "entities": {"pv": "sensor.pv"}},
     "config: source.homeassistant.entities: 'pv' is not a reading field a device reports; expected one of "
     "solar_generation_kw, battery_soc_percent, battery_power_kw, net_grid_flow_kw"),
    ({"kind": "homeassistant", "entities": {"solar_generation_kw": "PV Power"}},
     "config: source.homeassistant.entities: 'PV Power' is not an entity id; expected '<domain>.<name>' in lower case, e.g. 'sensor.pv_power'"),
    ({"kind": "homeassistant", "url": "homeassistant.local:8123", "entities": {"solar_generation_kw": "sensor.pv"}},
     "config: source.homeassistant.url: 'homeassistant.local:8123' is not Home Assistant's address; expected e.g. 'http://homeassistant.local:8123'"),
    ({"kind": "homeassistant", "entities": {"solar_generation_kw": "sensor.pv"}, "token": "abc"},
     "config: source.homeassistant.token: unknown field; expected one of the documented fields"),
])
def test_a_bad_homeassistant_section_is_one_line_naming_the_field(source, message):
    with pytest.raises(ConfigError) as error:
        build_config({"source": source})
    assert str(error.value) == message


@pytest.mark.parametrize(("heading", "kind"), [("### Real devices: an MQTT bridge", "mqtt"),
                                               ("### Real devices: Home Assistant", "homeassistant")])
def test_the_documented_real_device_configs_validate(heading, kind):
    text = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    section = text[text.index(heading):]
    block = section[section.index("```json\n") + 8:section.index("```\n", section.index("```json\n") + 8)]
    assert build_config(json.loads(block)).source.kind == kind
