import json
import os

import pytest

from der_core.config import (
    MAX_JSON_BYTES,
    BatteryConfig,
    SimulatorConfig,
    build_config,
    load_config,
    write_config,
)
from der_core.errors import ConfigError

SPEC_DEFAULTS = {
    ("device_id",): "edge-gateway-001",
    ("interval_seconds",): 300,
    ("output_file",): None,
    ("seed",): None,
    ("solar", "capacity_kw"): 10.0,
    ("solar", "latitude"): 37.7749,
    ("solar", "panel_efficiency"): 0.20,
    ("solar", "temp_coefficient"): -0.004,
    ("battery", "capacity_kwh"): 13.5,
    ("battery", "max_charge_rate_kw"): 5.0,
    ("battery", "max_discharge_rate_kw"): 5.0,
    ("battery", "round_trip_efficiency"): 0.90,
    ("battery", "initial_soc"): 50.0,
    ("battery", "min_soc"): 10.0,
    ("battery", "max_soc"): 90.0,
    ("home_load", "base_load_kw"): 0.5,
    ("home_load", "peak_load_kw"): 8.0,
    ("home_load", "has_ev"): True,
    ("home_load", "ev_charging_kw"): 7.2,
    ("home_load", "hvac_capacity_kw"): 3.5,
    ("grid_price", "off_peak_price"): 0.08,
    ("grid_price", "shoulder_price"): 0.15,
    ("grid_price", "peak_price"): 0.30,
    ("grid_price", "base_feed_in_tariff"): 0.05,
    ("grid_price", "demand_charge"): 10.0,
    ("grid_price", "volatility"): 0.15,
}


@pytest.mark.parametrize("path,expected", SPEC_DEFAULTS.items(), ids=[".".join(p) for p in SPEC_DEFAULTS])
def test_defaults_are_the_specs(path, expected):
    value = SimulatorConfig()
    for part in path:
        value = getattr(value, part)
    assert value == expected


@pytest.mark.parametrize(
    "data,message",
    [
        ({"solar": {"capacity_kw": -1}}, "solar.capacity_kw: Input should be greater than or equal to 0 (got -1)"),
        ({"battery": {"min_soc": 95}}, "battery: min_soc (95.0) must not exceed max_soc (90.0)"),
        ({"battery": {"min_soc": 90, "initial_soc": 90}}, "battery: min_soc (90.0) equals max_soc (90.0)"),
        ({"battery": {"capacity_kwh": 5e-324}}, "battery: capacity_kwh (4.94066e-324) is below 0.01 kWh"),
        ({"battery": {"initial_soc": 5}}, "initial_soc (5.0) must lie within [min_soc, max_soc]"),
        ({"battery": {"round_trip_efficiency": 0}}, "battery.round_trip_efficiency: Input should be greater than or equal to 0.5"),
        # 0.09 for 0.9: accepted, every plan bought energy to burn nine tenths of it.
        ({"battery": {"round_trip_efficiency": 0.09}}, "battery.round_trip_efficiency: Input should be greater than or equal to 0.5"),
        ({"battery": {"round_trip_efficiency": 1.2}}, "battery.round_trip_efficiency: Input should be less than or equal to 1"),
        ({"solar": {"latitude": 91}}, "solar.latitude: Input should be less than or equal to 90 (got 91)"),
        ({"solar": {"latitude": -90.5}}, "solar.latitude: Input should be greater than or equal to -90"),
        ({"colour": "blue"}, "colour: unknown field"),
        ({"battery": {"capacity": 10}}, "battery.capacity: unknown field"),
        ({"interval_seconds": "often"}, "interval_seconds: Input should be a valid integer"),
        ({"home_load": {"has_ev": "maybe"}}, "home_load.has_ev: Input should be a valid boolean"),
        ({"timezone": "Mars/Olympus"}, "timezone: unknown time zone 'Mars/Olympus'"),
        ({"device_id": "has space"}, "config: device_id: 'has space' is not valid; expected 1 to 64 letters"),
        ({"interval_seconds": "300"}, "config: interval_seconds: Input should be a valid integer (got a string '300')"),
        ({"interval_seconds": 300.0}, "config: interval_seconds: Input should be a valid integer (got a number 300.0)"),
        ({"home_load": {"has_ev": 1}}, "config: home_load.has_ev: Input should be a valid boolean (got an integer 1)"),
        ({"solar": {"capacity_kw": "10"}}, "config: solar.capacity_kw: Input should be a valid number (got a string '10')"),
        ({"solar": {"capacity_kw": True}}, "config: solar.capacity_kw: Input should be a valid number (got true/false True)"),
        ({"device_id": 7}, "config: device_id: Input should be a valid string (got an integer 7)"),
        ({"country": "ZZ"}, "config: country: 'ZZ' is not a country with a public-holiday calendar; expected an ISO 3166 "
                            "alpha-2 code such as 'US', 'DE' or 'GB'"),
        ({"solar": {"latitude": float("nan")}}, "config: solar.latitude: Input should be a finite number (got nan)"),
        ({"battery": {"mode": "yolo"}}, "battery.mode: Input should be 'self_consumption', 'tou_arbitrage' or 'setpoint'"),
    ],
)
def test_bad_config_is_one_line_naming_the_field(data, message):
    with pytest.raises(ConfigError) as caught:
        build_config(data)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


def test_generated_config_round_trips(tmp_path):
    path = write_config(build_config({"seed": 5, "solar": {"capacity_kw": 6.5}}), tmp_path / "c.json")
    loaded = load_config(path)
    assert loaded.seed == 5 and loaded.solar.capacity_kw == 6.5
    assert set(json.loads(path.read_text())) >= {"device_id", "solar", "battery", "home_load", "grid_price"}


def test_partial_config_keeps_other_defaults(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"battery": {"capacity_kwh": 20}}))
    loaded = load_config(path)
    assert loaded.battery.capacity_kwh == 20 and loaded.battery.max_soc == 90.0 and loaded.solar.capacity_kw == 10.0


@pytest.mark.parametrize(
    "text,message",
    [("{", "malformed JSON at line 1"), ("[1, 2]", "expected a JSON object at the top level, got list"),
     # Comments, which editors and other formats allow: the line says what the reader met.
     ('{"seed": 1, // mine\n}', "malformed JSON at line 1 column 13: a comment, which JSON does not allow"),
     ('# home\n{"seed": 1}', "malformed JSON at line 1 column 1: a comment, which JSON does not allow"),
     ('{"seed": 1 /* x */}', "malformed JSON at line 1 column 12: a comment, which JSON does not allow")],
)
def test_malformed_files(tmp_path, text, message):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(ConfigError, match="--generate-config"):
        load_config(tmp_path / "nope.json")


def test_null_seed_is_stable_per_device():
    a, b = build_config({"device_id": "a"}), build_config({"device_id": "b"})
    assert a.effective_seed == build_config({"device_id": "a"}).effective_seed
    assert a.effective_seed != b.effective_seed
    assert build_config({"seed": 3}).effective_seed == 3


def test_numbers_stay_numbers_and_names_stay_names():
    config = build_config({"interval_seconds": 60, "solar": {"capacity_kw": 6}, "battery": {"mode": "setpoint"}, "country": "DE"})
    assert config.interval_seconds == 60 and config.solar.capacity_kw == 6.0
    assert config.battery.mode.value == "setpoint" and config.country == "DE"


@pytest.mark.parametrize("field", ["device_id", "timezone", "country", "x" * 10_000_000])
def test_huge_input_is_quoted_cut_short(field):
    data = {field: "a" * 10_000_000} if len(field) < 20 else {field: 1}
    with pytest.raises(ConfigError) as caught:
        build_config(data)
    text = str(caught.value)
    assert "\n" not in text and len(text) < 300 and "characters)" in text


@pytest.mark.parametrize(
    "raw,message",
    [
        (b'{"device_id": "\xff\xfe"}', "c.json: not UTF-8 text (byte 0xff at offset 15); expected a JSON file in UTF-8"),
        (b'{"solar": ' * 100_000 + b"1" + b"}" * 100_000, "c.json: nested too deeply to read; expected the documented sections"),
        (b'{"a": ' * 40 + b"1" + b"}" * 40, "c.json: nested more than 32 levels deep; expected the documented sections"),
        (b'{"seed": NaN}', "c.json: NaN is not a JSON number; expected plain JSON numbers"),
        (b'{"seed": ' + b"9" * 5000 + b"}", "c.json: a number with thousands of digits; expected plain JSON numbers"),
    ],
    ids=["not-utf8", "recursion", "deep", "nan", "long-integer"],
)
def test_unreadable_files_are_one_line(tmp_path, raw, message):
    path = tmp_path / "c.json"
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert message in text and "\n" not in text and len(text) < 400


def awkward_paths(tmp_path) -> dict[str, tuple[str, str]]:
    """Paths no file is read from, each with what is said of it: a device that never ends,
    a pipe that waits for a writer, a folder, a loop of links, a name too long."""
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    return {"device": ("/dev/zero", "is not a regular file (a device or a pipe)"),
            "pipe": (str(tmp_path / "pipe"), "is not a regular file (a device or a pipe)"),
            "folder": (str(tmp_path), "is a folder"),
            "loop": (str(tmp_path / "loop-a"), "is a loop of symbolic links"),
            "long": (str(tmp_path / ("a" * 5000)), "File name too long")}


@pytest.mark.parametrize("kind", ["device", "pipe", "folder", "loop", "long"])
def test_a_path_that_is_no_file_is_refused_before_it_is_opened(tmp_path, kind):
    """Read whole, ``/dev/zero`` filled the memory and a pipe waited for ever."""
    path, said = awkward_paths(tmp_path)[kind]
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert f": {said}; expected config file (a JSON file)" in text and len(text) < 400


def test_a_byte_order_mark_is_read_past(tmp_path):
    """Notepad writes one before the first brace; Python's JSON reader refused the file."""
    path = tmp_path / "c.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"seed": 7}).encode())
    assert load_config(path).seed == 7


def test_a_file_too_large_to_be_a_config_is_refused_unread(tmp_path):
    path = tmp_path / "c.json"
    with open(path, "wb") as handle:
        handle.truncate(MAX_JSON_BYTES + 1)
    with pytest.raises(ConfigError, match="c.json': larger than 16 MiB; expected config file"):
        load_config(path)


@pytest.mark.parametrize(("round_trip", "one_way"), [(0.81, 0.9), (1.0, 1.0), (0.64, 0.8)])
def test_a_round_trip_is_split_evenly_between_charging_and_discharging(round_trip, one_way):
    battery = BatteryConfig(round_trip_efficiency=round_trip)
    assert battery.one_way_efficiency == pytest.approx(one_way, rel=1e-15)
    assert battery.one_way_efficiency**2 == pytest.approx(round_trip, rel=1e-15)
