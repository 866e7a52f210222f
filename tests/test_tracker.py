"""A single-axis tracker, declared as one: its clear sky is the tracker's (pvlib's
``tracking.singleaxis`` turning the panels), which NREL's measured Mesa tracker follows
through the day where a fixed plane misses its mornings by half; and its import is checked
against that clear sky."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import run_cloud_sync
from benchmarks import real_data
from cloud.feature_engineering.physics import solar_config
from cloud.store.sqlite import SQLiteCloudStore
from der_core.cli_support import run_cli
from der_core.config import SolarConfig
from der_core.errors import ConfigError
from der_core.site_file import build_site, planning_config, site_row
from der_physics.solar import clear_sky_output

#: NREL's campus (its Solar Radiation Research Laboratory, beside the Mesa array).
CAMPUS = {"latitude": 39.742, "longitude": -105.18, "altitude_m": 1829}
TRACKER = {"capacity_kwp": 360, "tilt_degrees": 0, "azimuth_degrees": 180, "inverter_kw": 330,
           "tracking": "single-axis"}
SITE = {"device_id": "mesa", "location": CAMPUS, "timezone": "America/Denver", "country": "US", "currency": "USD",
        "pv": TRACKER, "battery": None, "ev_charger": None, "tariff": "default_tou"}


@pytest.fixture(scope="module")
def measured() -> pd.Series:
    frame = pd.read_csv(real_data.TRACKER_SOURCE.path())
    return pd.Series(frame["ac_power"].to_numpy(), index=pd.to_datetime(frame["measured_on"], utc=True))


def _index_by_part_of_day(measured: pd.Series, array: SolarConfig) -> pd.DataFrame:
    """Measured over clear-sky energy in the morning (8-10), at midday (12-14) and in the
    afternoon (16-18) of each local day."""
    clear = pd.Series(clear_sky_output(array, measured.index - pd.Timedelta(minutes=7.5)).generation_kw,
                      index=measured.index)
    local = measured.index.tz_convert("America/Denver")
    parts = {"morning": (8, 10), "midday": (12, 14), "afternoon": (16, 18)}
    rows = {}
    for day in sorted(set(local.date)):
        on = local.date == day
        rows[day] = {name: measured[on & (local.hour >= a) & (local.hour < b)].sum()
                     / clear[on & (local.hour >= a) & (local.hour < b)].sum() for name, (a, b) in parts.items()}
    return pd.DataFrame(rows).T


def test_the_measured_tracker_follows_the_tracker_s_clear_sky_not_a_fixed_plane_s(measured):
    """On the file's two clear days (28 and 30 June) the tracker's clear-sky index is flat
    through the day; against a flat or a south-facing fixed plane the mornings read 1.7 to
    2.2 times as bright as midday, which no sky does."""
    tracker = planning_config(build_site(SITE)).solar
    flat = tracker.model_copy(update={"tracking": "fixed"})
    south = flat.model_copy(update={"tilt_degrees": 40.0})
    clear_days = [pd.Timestamp("2010-06-28").date(), pd.Timestamp("2010-06-30").date()]
    for array, spread in ((tracker, (0.9, 1.1)), (flat, (1.5, 1.8)), (south, (1.9, 2.3))):
        index = _index_by_part_of_day(measured, array).loc[clear_days]
        ratio = index["morning"] / index["midday"]
        assert ratio.between(*spread).all(), (array.tracking, array.tilt_degrees, ratio.tolist())
    index = _index_by_part_of_day(measured, tracker).loc[clear_days]
    assert index.to_numpy() == pytest.approx(1.0, abs=0.1)  # and near the declared nameplate's clear sky


def test_a_tracker_makes_more_than_a_fixed_plane_and_turns_within_its_limit():
    """A summer day at 33 N: a flat north-south tracker makes a fifth to a third more than
    the same panels lying flat, and as much at solar noon, where it lies flat too; held
    within 30 degrees it makes less than within 60."""
    times = pd.date_range("2024-06-21", periods=96, freq="15min", tz="America/Phoenix")
    flat = SolarConfig(capacity_kw=10, inverter_kw=10, latitude=33.4, longitude=-111.9, tilt_degrees=0)
    tracker = flat.model_copy(update={"tracking": "single-axis"})
    narrow = flat.model_copy(update={"tracking": "single-axis", "max_angle_degrees": 30.0})
    out = {name: clear_sky_output(a, times).generation_kw for name, a in (("flat", flat), ("tracker", tracker),
                                                                          ("narrow", narrow))}
    assert 1.2 < out["tracker"].sum() / out["flat"].sum() < 1.35
    assert out["flat"].sum() < out["narrow"].sum() < out["tracker"].sum()
    noon = int(np.argmax(out["flat"]))
    assert out["tracker"][noon] == pytest.approx(out["flat"][noon], rel=0.01)


def test_a_declared_tracker_reaches_every_job_s_pv_system():
    site = build_site({**SITE, "pv": {**TRACKER, "max_angle_degrees": 52, "backtrack": False}})
    solar = planning_config(site).solar
    assert (solar.tracking, solar.max_angle_degrees, solar.backtrack, solar.ground_coverage_ratio) == (
        "single-axis", 52, False, SolarConfig().ground_coverage_ratio)
    assert solar_config(site_row(site)) == solar  # the features' and the import's array: the declaration's


@pytest.mark.parametrize("pv, weather, message", [
    ({**TRACKER, "tracking": "fixed", "max_angle_degrees": 60}, None,
     'pv: max_angle_degrees describes a tracker; expected "tracking": "single-axis" beside it'),
    ({**TRACKER, "tracking": "dual-axis"}, None, "pv.tracking: Input should be 'fixed' or 'single-axis'"),
    (TRACKER, "forecast-solar", "Forecast.Solar forecasts a fixed PV plane and the site's panels track the sun"),
])
def test_what_a_tracker_cannot_be_is_one_line(pv, weather, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_site({**SITE, "pv": pv, **({"weather": weather} if weather else {})})


def test_the_measured_tracker_imports_without_a_clock_warning(tmp_path, capsys):
    """Six June days with storms on four afternoons: their summed PV peaks over an hour
    early, which alone read as a clock running an hour early; the clearest morning and
    afternoon of the file peak where the tracker's clear sky does."""
    (tmp_path / "site.json").write_text(json.dumps(SITE))
    assert run_cli(run_cloud_sync.main, ["--site", str(tmp_path / "site.json"), "--import",
                                         str(real_data.TRACKER_SOURCE.path()), "--column-map",
                                         "ac_power=solar_generation_kw", "--cloud-db", str(tmp_path / "cloud.db")]) == 0
    out = capsys.readouterr().out
    assert "imported 576 readings of mesa (0 quarantined)" in out
    assert "  clock: PV peaks within 45 min of the declared array's clear-sky peak in every month" in out
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        assert store.count_readings("mesa") == 576
