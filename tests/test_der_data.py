import json

import numpy as np
import pandas as pd
import pytest

from der_core import der_data as dd
from tests.sim_helpers import config, readings

# The spec's output format, verbatim: the contract for keys and types.
SPEC_EXAMPLE = json.loads(
    """{
  "timestamp": "2024-06-15T14:30:00", "device_id": "edge-gateway-001",
  "solar": {"generation_kw": 7.5, "irradiance_w_m2": 900.0, "panel_temp_celsius": 40.0, "efficiency_percent": 17.5},
  "battery": {"soc_percent": 65.0, "capacity_kwh": 13.5, "power_kw": 2.0, "voltage_v": 51.5,
              "temperature_celsius": 30.0, "cycles": 200, "health_percent": 97.0},
  "home_load": {"total_load_kw": 3.5, "hvac_kw": 1.5, "appliances_kw": 1.0, "lighting_kw": 0.3,
                "ev_charging_kw": 0.0, "other_kw": 0.7},
  "grid_price": {"price_per_kwh": 0.28, "feed_in_tariff": 0.08, "demand_charge": 10.0,
                 "time_of_use_period": "peak", "carbon_intensity_g_kwh": 380.0},
  "net_grid_flow_kw": -2.0
}"""
)


def shape(value):
    """Keys and JSON types of a reading, recursively."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return type(value).__name__


@pytest.fixture(scope="module")
def day():
    return readings([config(seed=1), config(seed=2, device_id="other")], "2024-06-15", "2024-06-16")


def test_generated_readings_have_exactly_the_specs_keys_and_types(day):
    for reading in dd.frame_to_nested(day):
        assert shape(reading) == shape(SPEC_EXAMPLE)
        assert list(reading) == list(SPEC_EXAMPLE)


def test_timestamps_are_utc_iso_with_offset(day):
    first = next(dd.frame_to_nested(day))
    assert first["timestamp"] == "2024-06-15T00:00:00+00:00"


def test_flatten_unflatten_round_trip():
    flat = dd.flatten(SPEC_EXAMPLE)
    assert flat[dd.SOLAR_KW] == 7.5 and flat[dd.TOU_PERIOD] == "peak" and flat[dd.BATTERY_CYCLES] == 200
    back = dd.unflatten(flat)
    assert back["timestamp"] == "2024-06-15T14:30:00+00:00"  # naive input is taken as UTC
    assert {k: v for k, v in back.items() if k != "timestamp"} == {k: v for k, v in SPEC_EXAMPLE.items() if k != "timestamp"}


def test_frame_paths_agree_with_row_paths(day):
    nested = list(dd.frame_to_nested(day))
    assert nested == [dd.unflatten(row) for row in dd.frame_to_rows(day)]
    pd.testing.assert_frame_equal(dd.nested_to_frame(nested), dd.coerce_frame(day))


@pytest.mark.parametrize("columns", [(dd.TS, dd.SOLAR_KW), (dd.BATTERY_CYCLES, dd.DEVICE_ID, dd.TOU_PERIOD, dd.TS),
                                     (dd.DEVICE_ID,)])
def test_coercing_some_columns_gives_those_of_the_full_coercion(day, columns):
    """A column-limited read converts only its columns, with exactly the full conversion's
    dtypes and values, in the full conversion's order; the other columns need not be present."""
    raw = day[list(columns)].astype(object).set_axis(range(7, 7 + len(day)))
    raw.iloc[2, 0] = None if columns[0] != dd.TS else raw.iloc[2, 0]
    full = dd.coerce_frame(day.astype(object).assign(**{c: raw[c].to_numpy() for c in columns}))
    pd.testing.assert_frame_equal(dd.coerce_frame(raw, columns), full[[c for c in full.columns if c in columns]])


def test_coercing_a_frame_without_a_wanted_column_names_it():
    with pytest.raises(KeyError, match=dd.SOLAR_KW):
        dd.coerce_frame(pd.DataFrame({dd.TS: []}), (dd.TS, dd.SOLAR_KW))


def test_flat_columns_join_group_and_field():
    assert dd.COLUMNS[:2] == ("device_id", "ts")
    assert "solar_generation_kw" in dd.COLUMNS and "grid_price_time_of_use_period" in dd.COLUMNS
    assert len(dd.COLUMNS) == 2 + sum(len(f) for f in dd.GROUPS.values()) + 1


def test_nan_becomes_missing():
    flat = dd.flatten({**SPEC_EXAMPLE, "solar": {**SPEC_EXAMPLE["solar"], "generation_kw": float("nan")}})
    assert flat[dd.SOLAR_KW] is None
    assert np.isnan(dd.rows_to_frame([flat])[dd.SOLAR_KW].iloc[0])


def test_jsonl_is_each_nested_reading_as_orjson_writes_it(day):
    """The column-wise JSON Lines writer must give the bytes of dumping each nested reading,
    missing and infinite values and awkward text included."""
    import orjson

    frame = dd.coerce_frame(day)
    frame[dd.DEVICE_ID] = np.where(np.arange(len(frame)) % 2, 'odd "id", 100%', "plain")
    frame.loc[3, dd.SOLAR_KW] = np.nan
    frame.loc[4, dd.PRICE] = np.inf
    frame.loc[5, dd.BATTERY_CYCLES] = pd.NA
    expected = b"".join(orjson.dumps(reading) + b"\n" for reading in dd.frame_to_nested(frame))
    assert dd.to_jsonl(frame) == expected
    assert dd.to_jsonl(frame.iloc[:0]) == b""
