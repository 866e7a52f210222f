"""Open-Meteo's archived day-ahead forecasts (cloud/live/weather/open_meteo.py,
``OpenMeteoPreviousRuns``) against a local fake answering the documented body: rows issued
exactly the lead before their hour, backfilled one request per missing span, stored with
``run_cloud_sync.py --weather-history``, and read by a recorded-data backtest only where they
were issued before each decision."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import run_cloud_sync
from cloud.evaluation import backtest as bt
from cloud.evaluation import recorded
from cloud.forecasting.weather import TEMP
from cloud.live.http import RetryPolicy
from cloud.live.inputs import declared_inputs
from cloud.live.weather import (
    Connection, OpenMeteoPreviousRuns, StoredWeatherForecast, backfill_previous_runs, missing_spans,
)
from cloud.optimization import forecasters as fc
from cloud.optimization.pv_forecast import MeasuredPV, pv_forecast
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
from der_core import der_data as dd
from der_core.cli_support import run_cli
from der_core.errors import ConfigError
from der_core.site_file import build_site, planning_config, site_row
from der_physics.solar import clear_sky_output
from tests.fakes.http_service import FakeService, Reply
from tests.fakes.service_bodies import previous_runs_body, unix

FAST = RetryPolicy(attempts=2, timeout_s=2.0, backoff_s=0.1, max_backoff_s=0.1, max_wait_s=1.0)
DECLARATION = {
    "device_id": "home-1", "location": {"latitude": 52.52, "longitude": 13.40, "altitude_m": 34},
    "timezone": "Europe/Berlin", "country": "DE", "currency": "EUR",
    "pv": {"capacity_kwp": 6.0, "tilt_degrees": 30, "azimuth_degrees": 180, "inverter_kw": 5.0},
    "battery": None, "ev_charger": None, "tariff": "default_tou", "weather": "open-meteo",
}
SITE = build_site(DECLARATION)
ROW = site_row(SITE)
PATH = "/v1/forecast"


def source(fake: FakeService, lead_days: int = 1) -> OpenMeteoPreviousRuns:
    environ = {"DER_OPEN_METEO_PREVIOUS_RUNS_URL": fake.url + "/v1"}
    return OpenMeteoPreviousRuns(lead_days, connection=Connection(environ=environ, policy=FAST, sleep=lambda _: None))


@pytest.fixture
def fake():
    with FakeService() as service:
        yield service


@pytest.fixture
def store(tmp_path):
    with SQLiteCloudStore(tmp_path / "cloud.db") as cloud:
        cloud.upsert_sites([ROW])
        yield cloud


@pytest.mark.parametrize("lead_days", [1, 2])
def test_each_hour_is_issued_exactly_the_lead_before_it_in_utc_across_a_dst_day(fake, lead_days):
    """Berlin springs forward on 2024-03-31 at 01:00 UTC; asked in GMT the two days are 48
    continuous UTC hours, each issued lead × 24 h before it, and only what was issued before
    ``now`` is kept."""
    fake.route(PATH, Reply(200, previous_runs_body(unix("2024-03-31T00:00", 48, "h"), lead_days)))
    now = pd.Timestamp("2024-04-01T12:00Z") - pd.Timedelta(days=lead_days)  # keeps ts before April 1, 12:00
    rows = source(fake, lead_days).fetch(ROW, now, pd.Timestamp("2024-03-31", tz="UTC"), pd.Timestamp("2024-04-02", tz="UTC"))
    assert len(rows) == 36 and str(rows[dd.TS].dt.tz) == "UTC" and (rows[s.SOURCE] == "open-meteo").all()
    assert (rows[dd.TS].diff().dropna() == pd.Timedelta(hours=1)).all()
    assert (rows[dd.TS] - rows[s.ISSUED_AT] == pd.Timedelta(hours=24 * lead_days)).all()
    assert rows[s.ISSUED_AT].max() < now and rows[s.TEMP_AIR].iloc[0] == 15.0
    query = fake.requests[0].query
    assert query["hourly"] == [",".join(f"{v}_previous_day{lead_days}" for v in (
        "shortwave_radiation", "direct_normal_irradiance", "diffuse_radiation", "temperature_2m", "cloud_cover",
        "wind_speed_10m"))]
    assert query["start_date"] == ["2024-03-31"] and query["end_date"] == ["2024-04-01"]
    assert query["timezone"] == ["GMT"] and query["timeformat"] == ["unixtime"] and query["wind_speed_unit"] == ["ms"]


def test_a_lead_outside_the_apis_one_to_seven_days_is_one_line():
    with pytest.raises(ConfigError, match="^previous-runs lead 8 days: expected 1 to 7"):
        OpenMeteoPreviousRuns(8)


def test_missing_days_are_asked_for_once_one_request_per_span(fake, store):
    fake.route(PATH, Reply(200, previous_runs_body(unix("2024-03-01T00:00", 7 * 24, "h"))))
    day = pd.Timedelta(days=1)
    start, now = pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC")
    assert backfill_previous_runs(store, ROW, start + day, start + 2 * day, source(fake), now) == 24
    # A live issue stored under the same name on March 4 is not the archived day-ahead forecast.
    store.upsert_frame(s.WEATHER_FORECASTS, pd.DataFrame({
        dd.DEVICE_ID: "home-1", s.SOURCE: "open-meteo", s.ISSUED_AT: pd.Timestamp("2024-03-04T09:20Z"),
        dd.TS: pd.date_range("2024-03-04T10:00", periods=4, freq="h", tz="UTC"), s.GHI: 100.0, s.TEMP_AIR: 9.0}))
    assert backfill_previous_runs(store, ROW, start, start + 5 * day, source(fake), now) == 4 * 24
    asked = [(q.query["start_date"][0], q.query["end_date"][0]) for q in fake.requests[1:]]
    assert asked == [("2024-03-01", "2024-03-01"), ("2024-03-03", "2024-03-05")]
    assert backfill_previous_runs(store, ROW, start, start + 5 * day, source(fake), now) == 0 and len(fake.requests) == 3
    assert missing_spans(pd.DatetimeIndex([], tz="UTC"), start + pd.Timedelta(hours=6), start + 2 * day) == [
        (start + pd.Timedelta(hours=6), start + 2 * day)]


def test_a_quarter_hour_target_reads_the_hourly_issue_of_the_hour_it_lies_in(store):
    hours = pd.date_range("2024-05-02T10:00", periods=3, freq="h", tz="UTC")
    store.upsert_frame(s.WEATHER_FORECASTS, pd.DataFrame({
        dd.DEVICE_ID: "home-1", s.SOURCE: "open-meteo", s.ISSUED_AT: hours - pd.Timedelta(days=1), dd.TS: hours,
        s.GHI: 400.0, s.TEMP_AIR: [10.0, 11.0, 12.0]}))
    quarters = pd.date_range("2024-05-02T10:00", "2024-05-02T11:00", freq="15min", tz="UTC")
    reader = StoredWeatherForecast(store, "open-meteo")
    seen = reader.forecast(ROW, pd.DatetimeIndex([pd.Timestamp("2024-05-01T11:30Z")] * len(quarters)), quarters)
    assert seen[TEMP].tolist() == [10.0, 11.0, 11.0, 11.0, 11.0]  # 10:15 to 11:00 lie in the hour ending 11:00
    # Issued at 11:00 the day before, the hour is not known to a forecast made then.
    at_issue = reader.forecast(ROW, pd.DatetimeIndex([pd.Timestamp("2024-05-01T11:00Z")] * len(quarters)), quarters)
    assert at_issue[TEMP].tolist()[0] == 10.0 and at_issue[TEMP].iloc[1:].isna().all()


# --- a recorded-data backtest on them -----------------------------------------------------------

#: Each recorded day's clear-sky index: sunny and overcast alternate, so yesterday's sky (the
#: persistence a site without forecasts plans on) is wrong every day and a forecast is not.
SKY = {"2024-05-01": 0.9, "2024-05-02": 0.25, "2024-05-03": 0.95, "2024-05-04": 0.2, "2024-05-05": 0.9}


def daily(instants: pd.DatetimeIndex) -> np.ndarray:
    local = (instants - pd.Timedelta(minutes=1)).tz_convert("Europe/Berlin").strftime("%Y-%m-%d")
    return np.array([SKY.get(d, 0.9) for d in local])


def recorded_readings() -> pd.DataFrame:
    """Four local days of a synthetic meter: PV the declared array's clear-sky output under each
    day's sky, a load with an evening peak."""
    config = planning_config(SITE)
    stamps = pd.date_range("2024-04-30T22:15", "2024-05-04T22:00", freq="15min", tz="UTC")
    pv = clear_sky_output(config.solar, stamps, daily(stamps)).generation_kw
    hour = stamps.tz_convert("Europe/Berlin").hour
    load = 0.4 + 1.6 * ((hour >= 17) & (hour < 21))
    return pd.DataFrame({fc.LOAD: load, fc.PV: pv}, index=stamps)


def backfilled(fake: FakeService, store) -> None:
    """Store the archive's day-ahead forecasts of the recorded days: the true sky, as forecast."""
    times = pd.date_range("2024-04-30T00:00", "2024-05-05T23:00", freq="h", tz="UTC")
    ghi = clear_sky_output(planning_config(SITE).solar, times, daily(times)).ghi_w_m2
    fake.route(PATH, Reply(200, previous_runs_body([int(t.timestamp()) for t in times],
                                                   shortwave_radiation=[round(float(v), 2) for v in ghi])))
    assert backfill_previous_runs(store, ROW, times[0], times[-1] + pd.Timedelta(hours=1), source(fake)) > 0


def backtest(store) -> bt.BacktestResult:
    config = recorded.with_battery(planning_config(SITE), 10.0, 5.0)
    settings = bt.BacktestSettings(start=pd.Timestamp("2024-05-02"), execution="capped")
    return recorded.run_recorded_backtest(config, recorded_readings(), settings, days=2,
                                          inputs=declared_inputs(store, SITE))


def test_a_recorded_backtest_plans_on_the_archived_forecasts_issued_before_each_decision(fake, store, tmp_path):
    with SQLiteCloudStore(tmp_path / "empty.db") as empty:
        empty.upsert_sites([ROW])
        without = backtest(empty)
    backfilled(fake, store)
    honest = backtest(store)
    mpc, blind = honest.runs[bt.MPC], without.runs[bt.MPC]
    assert not np.allclose(mpc.battery_kw, blind.battery_kw)  # the archived forecasts reached the MPC
    # What the MPC's PV forecast reads at a decision: the archived sky, not yesterday's.
    decision = pd.Timestamp("2024-05-02T06:00", tz="Europe/Berlin").tz_convert("UTC")
    instants = pd.date_range(decision + pd.Timedelta(minutes=15), periods=96, freq="15min")
    readings = recorded_readings()
    truth, history = readings[fc.PV].reindex(instants).to_numpy(), readings.loc[:decision, fc.PV]
    errors = [np.mean(np.abs(pv_forecast(planning_config(SITE), decision, instants, MeasuredPV(history, weather))
                             .generation_kw - truth)) for weather in (declared_inputs(store, SITE).weather_forecast(), None)]
    assert errors[0] < 0.05 * errors[1]

    # Values issued at or after the decision are replaced by an overcast that never came, and an
    # issue made at the decision itself says the same of the next day: what was decided up to
    # and at the decision is unchanged, what was decided after it is not.
    rows = store.read_frame(s.WEATHER_FORECASTS, {dd.DEVICE_ID: "home-1", s.SOURCE: "open-meteo"})
    later = rows[rows[s.ISSUED_AT] >= decision].assign(**{s.GHI: 0.0})
    at_decision = rows[(rows[dd.TS] > decision) & (rows[dd.TS] < decision + pd.Timedelta(days=1))].assign(
        **{s.ISSUED_AT: decision, s.GHI: 0.0})
    assert store.upsert_frame(s.WEATHER_FORECASTS, pd.concat([later, at_decision])) == len(later) + len(at_decision) > 23
    tampered = backtest(store)
    before = honest.actuals.index <= decision + pd.Timedelta(minutes=15)  # up to the step decided at it
    np.testing.assert_array_equal(tampered.runs[bt.MPC].battery_kw[before], mpc.battery_kw[before])
    assert not np.array_equal(tampered.runs[bt.MPC].battery_kw[~before], mpc.battery_kw[~before])


# --- the command --------------------------------------------------------------------------------

def test_run_cloud_sync_stores_the_days_asked_for_and_refuses_bad_input_in_one_line(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DER_OPEN_METEO_PREVIOUS_RUNS_URL", fake.url + "/v1")
    fake.route(PATH, Reply(200, previous_runs_body(unix("2024-03-01T00:00", 48, "h"))))
    site_file, db = tmp_path / "site.json", str(tmp_path / "cloud.db")
    site_file.write_text(json.dumps(DECLARATION))
    assert run_cli(run_cloud_sync.main, ["--site", str(site_file), "--weather-history", "2024-03-01:2024-03-02",
                                         "--cloud-db", db]) == 0
    assert "stored 48 rows of Open-Meteo's day-ahead forecasts of home-1 for 2024-03-01 to 2024-03-02" in \
        capsys.readouterr().out
    query = fake.requests[0].query
    assert (query["start_date"], query["end_date"]) == (["2024-03-01"], ["2024-03-02"])
    with SQLiteCloudStore(db) as store:
        rows = store.read_frame(s.WEATHER_FORECASTS, {dd.DEVICE_ID: "home-1", s.SOURCE: "open-meteo"})
    assert len(rows) == 48 and (rows[dd.TS] - rows[s.ISSUED_AT] == pd.Timedelta(days=1)).all()

    with pytest.raises(SystemExit) as exited:
        run_cloud_sync.main(["--site", str(site_file), "--weather-history", "2024-03-02:2024-03-01"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().endswith(
        "'2024-03-02:2024-03-01' is not START:END days, END not before START (2024-03-01:2024-06-01) (see --help)")
    for span in ("0001-01-01:9999-12-30", "2023-12-31:2024-01-01", f"2024-01-01:{dd.utc_now() + pd.Timedelta(days=1):%Y-%m-%d}"):
        assert run_cli(run_cloud_sync.main, ["--site", str(site_file), "--weather-history", span, "--cloud-db", db]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"error: --weather-history {span}: Open-Meteo's archive of past forecasts holds 2024-01-01 "
                               "to today (") and line.endswith("); expected days within it")
    site_file.write_text(json.dumps({**DECLARATION, "weather": None}))
    assert run_cli(run_cloud_sync.main, ["--site", str(site_file), "--weather-history", "2024-03-01:2024-03-02",
                                         "--cloud-db", db]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['error: --weather-history stores Open-Meteo\'s forecasts, which site home-1 reads only when its '
                   'site file declares "weather": "open-meteo"']
    assert len(fake.requests) == 1
