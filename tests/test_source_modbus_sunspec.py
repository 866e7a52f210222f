"""The modbus-sunspec reading source and SunSpec battery commands, against a real Modbus TCP
server on localhost (``tests/sunspec_server.py``) holding a SunSpec map."""

from __future__ import annotations

import json
import logging
import math
from types import SimpleNamespace

import pandas as pd
import pytest
from pymodbus.constants import ExcCodes

from der_core import der_data as dd
from der_core.config import ModbusSunSpecSource, build_config
from der_core.errors import ConfigError, UsageError
from edge_gateway.daemon import device_jobs, open_runtime
from edge_gateway.gateway import Gateway
from edge_gateway.mqtt.commands import SetpointBook
from edge_gateway.sources.base import Measured
from edge_gateway.sources.factory import open_source
from edge_gateway.sources.modbus_sunspec import SunSpecDevice
from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.sunspec_server import BATTERY, INVERTER, METER, STORAGE, SunSpecServer

T0 = pd.Timestamp("2024-06-01T12:00:00Z")
FIVE_MIN = pd.Timedelta(minutes=5)


def fill(server: SunSpecServer) -> SunSpecServer:
    """A hybrid at noon: 2345.6 W of PV, 54.32 % charged, the battery charging 1500 W (802 W
    reports discharge as positive), 1200 W imported; a 5000 W charge limit."""
    server.set(103, INVERTER["W"], 23456)
    server.set(103, INVERTER["W_SF"], -1)
    server.set(103, INVERTER["DCW"], 312)
    server.set(103, INVERTER["DCW_SF"], 1)
    server.set(124, STORAGE["WChaMax"], 500)
    server.set(124, STORAGE["WChaMax_SF"], 1)
    server.set(124, STORAGE["ChaState"], 5432)
    server.set(124, STORAGE["ChaState_SF"], -2)
    server.set(124, STORAGE["MinRsvPct"], 0xFFFF)
    server.set(124, STORAGE["InOutWRte_SF"], -1)
    server.set(802, BATTERY["SoC"], 61)
    server.set(802, BATTERY["SoC_SF"], 0)
    server.set(802, BATTERY["W"], -150)
    server.set(802, BATTERY["W_SF"], 1)
    server.set(203, METER["W"], 12)
    server.set(203, METER["W_SF"], 2)
    return server


@pytest.fixture
def server():
    running = fill(SunSpecServer()).start()
    yield running
    running.stop()


def device(server: SunSpecServer, **settings) -> SunSpecDevice:
    config = ModbusSunSpecSource(kind="modbus-sunspec", host="127.0.0.1", port=server.port, timeout_s=1.0, **settings)
    return SunSpecDevice(config, soc_window=settings.pop("soc_window", (10.0, 90.0)))


def test_commands_stay_within_the_sites_configured_rates_below_the_devices_limit(server):
    server.set(124, STORAGE["ChaState"], 5432)
    config = ModbusSunSpecSource(kind="modbus-sunspec", host="127.0.0.1", port=server.port, timeout_s=1.0)
    source = SunSpecDevice(config, soc_window=(10.0, 90.0), rates_kw=(2.0, 3.0))
    assert source.command(4.0, T0) == pytest.approx(2.0)  # WChaMax is 5 kW; the site allows 2 kW
    assert source.command(-4.0, T0) == pytest.approx(-3.0)


def read_once(source: SunSpecDevice, at: pd.Timestamp = T0) -> Measured | None:
    return source.reading(at - FIVE_MIN, at)


@pytest.mark.parametrize("base", [40000, 0, 50000])
def test_the_map_is_found_at_each_base_address_sunspec_allows(base, caplog):
    server = fill(SunSpecServer(base=base)).start()
    try:
        with caplog.at_level(logging.INFO):
            measured = read_once(device(server))
    finally:
        server.stop()
    assert f"SunSpec map at {base}, models 1, 103, 124, 802, 203" in caplog.text
    assert measured.pv_kw == pytest.approx(2.3456)


def test_a_map_whose_lengths_lead_past_the_register_space_is_a_device_not_answering(server, caplog):
    """Model 1 claiming 65534 registers sends the next model's address past 65535: pymodbus
    raised a ValueError that no one caught, and the gateway's every run failed on it."""
    server.set(1, 1, 0xFFFE)
    with caplog.at_level(logging.WARNING):
        assert read_once(device(server)) is None
    (said,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "not answering (a read of 2 registers at " in said and "runs past the register space (65535)" in said


def test_an_answer_shorter_than_the_read_is_a_device_not_answering(server, caplog):
    """A device answering one register fewer than asked, past its marker: discovery unpacked
    too few values and the map's reading indexed past the answer (a ValueError or an
    IndexError in every run); now the read is refused and retried later."""
    source = device(server)
    real = source._client.read_holding_registers

    def short(address, **kwargs):
        answer = real(address, **kwargs)
        return answer if address == server.base else SimpleNamespace(isError=answer.isError, registers=answer.registers[:-1])

    source._client.read_holding_registers = short
    with caplog.at_level(logging.WARNING):
        assert read_once(source) is None
    assert f"1 registers in the answer to a read of 2 at {server.base + 2}" in caplog.text


def test_values_carry_their_scale_factors_and_the_contract_signs(server):
    measured = read_once(device(server))
    assert measured.pv_kw == pytest.approx(2.3456)
    assert measured.battery_soc_percent == pytest.approx(54.32)  # model 124 before 802's 61
    assert measured.battery_power_kw == pytest.approx(1.5)  # charging
    assert measured.grid_kw == pytest.approx(1.2)  # importing
    assert measured.load_kw == pytest.approx(2.3456 + 1.2 - 1.5)


@pytest.mark.parametrize(("battery_sign", "meter_sign", "battery_kw", "grid_kw"), [
    ("discharge-positive", "import-positive", 1.5, 1.2),
    ("charge-positive", "import-positive", -1.5, 1.2),
    ("discharge-positive", "export-positive", 1.5, -1.2),
    ("charge-positive", "export-positive", -1.5, -1.2),
])
def test_sign_settings_turn_the_device_s_signs_into_the_contract_s(server, battery_sign, meter_sign, battery_kw, grid_kw):
    measured = read_once(device(server, battery_power_sign=battery_sign, meter_power_sign=meter_sign))
    assert (measured.battery_power_kw, measured.grid_kw) == (pytest.approx(battery_kw), pytest.approx(grid_kw))
    assert measured.load_kw == pytest.approx(2.3456 + grid_kw - battery_kw)


def test_pv_can_be_read_from_the_dc_input(server):
    assert read_once(device(server, pv_point="DCW")).pv_kw == pytest.approx(3.12)


@pytest.mark.parametrize(("model", "point", "raw", "field"), [
    (103, INVERTER["W"], 0x8000, "pv_kw"),  # int16 not implemented
    (103, INVERTER["W_SF"], 0x8000, "pv_kw"),  # its scale factor not implemented
    (103, INVERTER["W_SF"], 11, "pv_kw"),  # a scale factor outside -10..10
    (802, BATTERY["W"], 0x8000, "battery_power_kw"),
    (802, BATTERY["W_SF"], 0x8000, "battery_power_kw"),
])
def test_not_implemented_values_are_missing_never_numbers(server, model, point, raw, field):
    server.set(model, point, raw)
    measured = read_once(device(server))
    assert math.isnan(getattr(measured, field))
    assert math.isnan(measured.load_kw)  # the balance needs all three powers


def test_state_of_charge_falls_back_to_the_battery_model_and_is_missing_when_neither_has_it(server):
    server.set(124, STORAGE["ChaState"], 0xFFFF)  # uint16 not implemented
    assert read_once(device(server)).battery_soc_percent == 61.0
    server.set(802, BATTERY["SoC"], 0xFFFF)
    assert math.isnan(read_once(device(server)).battery_soc_percent)


def test_a_meter_without_a_total_is_read_as_the_sum_of_its_phases(server):
    server.set(203, METER["W"], 0x8000)
    for phase, watts in zip(("WphA", "WphB", "WphC"), (5, -2, 0x8000)):
        server.set(203, METER[phase], watts)
    assert read_once(device(server)).grid_kw == pytest.approx(0.3)  # (5 - 2) x 100 W, phase C not implemented
    server.set(203, METER["WphA"], 0x8000)
    server.set(203, METER["WphB"], 0x8000)
    assert math.isnan(read_once(device(server)).grid_kw)


def test_a_device_without_a_battery_model_reports_no_battery_power_and_no_load():
    server = fill(SunSpecServer(models=(1, 103, 124, 203))).start()
    try:
        measured = read_once(device(server))
    finally:
        server.stop()
    assert measured.pv_kw == pytest.approx(2.3456) and measured.grid_kw == pytest.approx(1.2)
    assert math.isnan(measured.battery_power_kw) and math.isnan(measured.load_kw)


def test_a_scale_factor_changed_between_reads_never_pairs_with_the_other_value(server):
    """The device flips between two encodings of the same 2345.6 W before every read it
    answers; a value read apart from its scale factor would come out 10x too large or small."""
    value_at = server.where[103] - 40000 + INVERTER["W"]
    encodings = [(23456, (-1) & 0xFFFF), (2346, 0)]
    flips = {"n": 0}

    def flip(registers: list[int], _start: int) -> None:
        flips["n"] += 1
        value, sf = encodings[flips["n"] % 2]
        registers[value_at], registers[value_at + 1] = value, sf

    server.on_read = flip
    source = device(server)
    readings = [read_once(source, T0 + k * FIVE_MIN).pv_kw for k in range(6)]
    assert flips["n"] > 6
    assert all(kw in (pytest.approx(2.3456), pytest.approx(2.346)) for kw in readings), readings


def test_a_reading_averages_the_samples_of_its_interval(server):
    source = device(server)
    for k, watts in enumerate([10, 20, 30]):  # x 100 W at the meter
        server.set(203, METER["W"], watts)
        source.sample(T0 - FIVE_MIN + pd.Timedelta(seconds=60 * (k + 1)))
    server.set(203, METER["W"], 90)
    source.sample(T0 + pd.Timedelta(seconds=10))  # belongs to the next interval
    assert source.reading(T0 - FIVE_MIN, T0).grid_kw == pytest.approx(2.0)
    assert source.reading(T0, T0 + FIVE_MIN).grid_kw == pytest.approx(9.0)


def test_a_value_beyond_any_device_is_dropped_with_one_line_until_it_is_plausible_again(server, caplog):
    """A state of charge scale factor of +10 is inside SunSpec's range: read as it scales, the
    state of charge was 5e13 %, stored at the edge and taken as the commands' window."""
    source = device(server)
    server.set(124, STORAGE["ChaState_SF"], 10)
    with caplog.at_level(logging.WARNING):
        first, second = read_once(source, T0), read_once(source, T0 + FIVE_MIN)
        server.set(124, STORAGE["ChaState_SF"], -2)
        third = read_once(source, T0 + 2 * FIVE_MIN)
        server.set(124, STORAGE["ChaState_SF"], 10)
        read_once(source, T0 + 3 * FIVE_MIN)
    assert math.isnan(first.battery_soc_percent) and math.isnan(second.battery_soc_percent)
    assert first.pv_kw == pytest.approx(2.3456) and first.grid_kw == pytest.approx(1.2)  # the rest stands
    assert third.battery_soc_percent == pytest.approx(54.32)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 2, said  # once, and again after it had been plausible
    assert "battery_soc_percent of 5.432e+13 is outside [0, 100]; dropped as not reported" in said[0]


# -- commands -------------------------------------------------------------------------------
def command_registers(server: SunSpecServer) -> tuple[int, int, int, int]:
    signed = lambda r: r - 0x10000 if r >= 0x8000 else r  # noqa: E731
    return (signed(server.get(124, STORAGE["InWRte"])), signed(server.get(124, STORAGE["OutWRte"])),
            server.get(124, STORAGE["StorCtl_Mod"]), server.get(124, STORAGE["InOutWRte_RvrtTms"]))


@pytest.mark.parametrize(("asked_kw", "soc_raw", "reserve_pct", "sent_kw", "in_rte"), [
    (2.0, 5432, None, 2.0, 400),  # 40.0 % of 5000 W at InOutWRte_SF -1
    (-1.25, 5432, None, -1.25, -250),
    (8.0, 5432, None, 5.0, 1000),  # clipped to WChaMax
    (-8.0, 5432, None, -5.0, -1000),
    (3.0, 9500, None, 0.0, 0),  # full: at the window's top no charging
    (-3.0, 1000, None, 0.0, 0),  # at the window's bottom no discharging
    (-3.0, 2500, 30, 0.0, 0),  # below the device's own reserve (MinRsvPct)
    (-3.0, 4000, 30, -3.0, -600),
])
def test_commands_land_in_storage_control_within_the_device_s_limits(server, asked_kw, soc_raw, reserve_pct, sent_kw, in_rte):
    server.set(124, STORAGE["ChaState"], soc_raw)
    if reserve_pct is not None:
        server.set(124, STORAGE["MinRsvPct"], reserve_pct)
        server.set(124, STORAGE["MinRsvPct_SF"], 0)
    source = device(server, revert_after_s=600)
    assert source.command(asked_kw, T0) == pytest.approx(sent_kw)
    assert command_registers(server) == (in_rte, -in_rte, 0b11, 600)


@pytest.mark.parametrize(("sf", "sent_kw", "in_rte"), [
    (1, 1.0, 2),  # 24 % of WChaMax in steps of 10 %: the device is sent 20 %, and that is what is returned
    (-2, 1.2, 2400),
])
def test_a_command_is_what_the_rate_s_scale_factor_can_carry(server, sf, sent_kw, in_rte):
    server.set(124, STORAGE["InOutWRte_SF"], sf & 0xFFFF)
    assert device(server).command(1.2, T0) == pytest.approx(sent_kw)
    assert command_registers(server)[:2] == (in_rte, -in_rte)


@pytest.mark.parametrize(("point", "raw", "said"), [
    ("InOutWRte_SF", 10, "InOutWRte_SF is 10: rates in steps of 1e+10% of WChaMax"),  # every command would round to 0
    ("InOutWRte_SF", (-5) & 0xFFFF, "InOutWRte_SF is -5"),  # no more than 0.3 % of WChaMax
    ("WChaMax_SF", 10, "a WChaMax of 5e+12 W, beyond any battery"),  # every command a tiny share of it
])
def test_a_scale_that_cannot_carry_a_command_sends_none_and_says_so_once(server, caplog, point, raw, said):
    server.set(124, STORAGE[point], raw)
    source = device(server)
    with caplog.at_level(logging.WARNING):
        assert math.isnan(source.command(2.0, T0)) and math.isnan(source.command(-2.0, T0 + FIVE_MIN))
    assert command_registers(server)[:3] == (0, 0, 0)  # nothing written: the device keeps its own mode
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and said in warnings[0], warnings


def make_gateway(server: SunSpecServer, tmp_path, clock=None, **settings) -> tuple[Gateway, SQLiteEdgeStore, SetpointBook]:
    config = build_config({"device_id": "home-1", "interval_seconds": 300, "battery": {"mode": "setpoint"},
                           "source": {"kind": "modbus-sunspec", "host": "127.0.0.1", "port": server.port, "timeout_s": 1.0,
                                      **settings}})
    store = SQLiteEdgeStore(tmp_path / "edge.db")
    book = SetpointBook.for_configs([config], clock=clock or (lambda: T0))
    source = open_source(config)
    gateway = Gateway([config], [store.write], tmp_path / "state", setpoints=book, history=store, source=source)
    return gateway, store, book


def test_a_device_that_refuses_commands_keeps_its_link_and_readings_and_says_so_once(server, caplog):
    """An exception response to a write (storage control locked on the device) is an answer:
    taken for a lost link, it dropped the readings of the next second after every command and
    logged 'not answering' and 'answers again' each time."""
    server.on_write = lambda address, values: ExcCodes.ILLEGAL_ADDRESS
    source = device(server, control=True)
    caplog.set_level(logging.WARNING, logger="edge_gateway.sources.modbus_sunspec")
    for step in range(3):
        at = T0 + step * FIVE_MIN
        assert math.isnan(source.command(2.0, at))
        assert source.instant(at + pd.Timedelta(milliseconds=1), at) == Measured(2.3456, 54.32, 1.5, 1.2)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "refuses battery commands (exception code 2 to a write of 4 registers" in said[0]
    server.on_write = None
    assert source.command(2.0, T0 + 3 * FIVE_MIN) == pytest.approx(2.0)
    source.close()


def test_a_stale_plan_hands_control_back_to_the_device_in_one_line(server, tmp_path, caplog):
    now = {"t": T0}
    gateway, store, book = make_gateway(server, tmp_path, clock=lambda: now["t"])
    book.accept("home-1", json.dumps({"power_kw": 2.0, "expires_in_s": 400}).encode())
    gateway.step(T0)
    assert command_registers(server)[2] == 0b11
    with caplog.at_level(logging.INFO):
        now["t"] = T0 + FIVE_MIN
        gateway.step(T0 + FIVE_MIN)  # the command expires at T0 + 400 s
        gateway.step(T0 + 2 * FIVE_MIN)
    assert command_registers(server)[2] == 0
    handed = [r for r in caplog.records if "handed back" in r.getMessage()]
    assert len(handed) == 1 and "no plan or setpoint in force" in handed[0].getMessage()
    store.close()


def test_the_gateway_stores_measured_readings_and_survives_the_device_going_away(server, tmp_path, caplog):
    gateway, store, book = make_gateway(server, tmp_path)
    book.accept("home-1", json.dumps({"power_kw": -1.0, "expires_in_s": 3600}).encode())
    stamps = [T0 + k * FIVE_MIN for k in range(6)]
    with caplog.at_level(logging.INFO):
        for at in stamps[:2]:
            gateway.step(at)
        server.stop()
        assert gateway.step(stamps[2]).empty and gateway.step(stamps[3]).empty
        server.start()
        for at in stamps[4:]:
            gateway.step(at)
    stored = store.read_range("home-1")
    assert list(stored[dd.TS]) == [stamps[k] for k in (0, 1, 4, 5)]  # the two before the outage kept, readings resumed
    first = stored.iloc[0]
    assert first[dd.SOLAR_KW] == pytest.approx(2.3456) and first[dd.NET_GRID_FLOW] == pytest.approx(1.2)
    assert first[dd.LOAD_TOTAL] == pytest.approx(2.0456)
    assert math.isnan(first[dd.PRICE]) and math.isnan(first[dd.SOLAR_IRRADIANCE])  # not reported, not invented
    assert command_registers(server)[:3] == (-200, 200, 0b11)  # commands resume too
    assert all(r.levelno <= logging.WARNING and r.exc_info is None for r in caplog.records)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "not answering" in warnings[0] and "answers again" in warnings[1], warnings
    assert "Traceback" not in caplog.text
    store.close()


def test_a_repeated_instant_rereads_without_stepping_the_control_memory_twice(server, tmp_path):
    gateway, store, _ = make_gateway(server, tmp_path)
    gateway.step(T0)
    gateway.step(T0)
    assert store.count("home-1") == 1
    store.close()


@pytest.mark.parametrize(("source", "message"), [
    ({"kind": "modbus"}, "config: source.kind: got 'modbus'; expected one of 'simulator', 'modbus-sunspec', 'mqtt', 'homeassistant'"),
    ({"kind": "modbus-sunspec"}, "config: source.modbus-sunspec.host: Field required"),
    ({"kind": "modbus-sunspec", "host": "10.0.0.5", "port": 70000}, "config: source.modbus-sunspec.port: Input should be less than or equal to 65535 (got 70000)"),
    ({"kind": "modbus-sunspec", "host": "10.0.0.5", "meter_power_sign": "up"},
     "config: source.modbus-sunspec.meter_power_sign: Input should be 'import-positive' or 'export-positive' (got 'up')"),
    ({"kind": "simulator", "host": "10.0.0.5"}, "config: source.simulator.host: unknown field; expected one of the documented fields"),
])
def test_a_bad_source_section_is_one_line_naming_the_field(source, message):
    with pytest.raises(ConfigError) as error:
        build_config({"source": source})
    assert str(error.value) == message


def test_the_simulator_stays_the_default_source():
    assert build_config({}).source.kind == "simulator"


def test_the_runtime_reads_the_configured_device_and_samples_it_between_readings(server, tmp_path):
    config = build_config({"device_id": "home-1", "interval_seconds": 60,
                           "source": {"kind": "modbus-sunspec", "host": "127.0.0.1", "port": server.port, "sample_every_s": 5}})
    runtime = open_runtime([config], store_path=tmp_path / "edge.db", state_dir=tmp_path / "state")
    try:
        assert isinstance(runtime.gateway.source, SunSpecDevice)
        assert [(job.name, job.interval_s) for job in device_jobs(runtime)] == [("sampler", 5.0)]
        runtime.gateway.step(T0)
        assert runtime.store.count("home-1") == 1
    finally:
        runtime.close()
    with pytest.raises(UsageError, match="reads one real site"):
        open_runtime([config, config.model_copy(update={"device_id": "home-2"})], store_path=None, state_dir=tmp_path / "state")
