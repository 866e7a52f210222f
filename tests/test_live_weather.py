"""Weather forecasts from outside services (cloud/live/weather.py), against local fakes of
Open-Meteo and Forecast.Solar that answer with the bodies their documentation gives: rows in
the table's shape with UTC instants, one issue per site and hour, the archive's issue rule,
Forecast.Solar's azimuth, local times and rate limit, one-line errors, and forecasts read back
with only what was issued before the forecast's own issue time."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from cloud.forecasting.weather import CLEAR_SKY_INDEX, TEMP, WEATHER_COLUMNS
from cloud.live.http import MalformedResponse, NoData, RetryPolicy, SourceUnavailable
from cloud.live.inputs import SiteInputs
from cloud.live.weather import (
    Connection,
    ForecastSolar,
    OpenMeteo,
    OpenMeteoArchive,
    StoredWeatherForecast,
    backfill_weather,
    clear_sky_index,
    fetch_weather,
    forecast_solar_azimuth,
    pv_clear_sky_index,
    site_place,
)
from cloud.optimization.pv_forecast import MeasuredPV, declared_pv_forecast
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
from der_core import der_data as dd
from der_core.errors import ConfigError
from der_core.site_file import build_site, planning_config, site_row
from der_physics.solar import clear_sky_output
from tests.fakes.http_service import FakeService, Reply
from tests.fakes.service_bodies import open_meteo_body, unix

FAST = RetryPolicy(attempts=3, timeout_s=2.0, backoff_s=1.0, max_backoff_s=4.0, max_wait_s=60.0)
DECLARATION = {
    "device_id": "home-1", "location": {"latitude": 52.52, "longitude": 13.40, "altitude_m": 34},
    "timezone": "Europe/Berlin", "country": "DE", "currency": "EUR",
    "pv": {"capacity_kwp": 8.0, "tilt_degrees": 30, "azimuth_degrees": 180, "inverter_kw": 7.0},
    "battery": None, "ev_charger": None, "tariff": "default_tou",
}
SITE = site_row(build_site(DECLARATION))
NOW = pd.Timestamp("2026-06-21T10:20:00Z")


def connection(fake: FakeService, waits: list[float] | None = None, **environ: str) -> Connection:
    env = {"DER_OPEN_METEO_URL": fake.url, "DER_OPEN_METEO_ARCHIVE_URL": fake.url + "/archive",
           "DER_FORECAST_SOLAR_URL": fake.url, **environ}
    return Connection(environ=env, policy=FAST, sleep=(waits if waits is not None else []).append)


@pytest.fixture
def fake():
    with FakeService() as service:
        yield service


@pytest.fixture
def store(tmp_path):
    with SQLiteCloudStore(tmp_path / "cloud.db") as cloud:
        cloud.upsert_sites([SITE])
        yield cloud


# --- Open-Meteo -------------------------------------------------------------------------------

def test_fifteen_minute_forecast_is_rows_of_the_table_issued_at_the_fetch(fake):
    times = unix("2026-06-21T10:00", 8, "15min")
    fake.route("/forecast", Reply(200, open_meteo_body("minutely_15", times)))
    rows = OpenMeteo(connection=connection(fake)).fetch(SITE, NOW)
    assert list(rows.columns[:4]) == [dd.DEVICE_ID, s.SOURCE, s.ISSUED_AT, dd.TS]
    assert (rows[s.ISSUED_AT] == NOW).all() and (rows[dd.DEVICE_ID] == "home-1").all()
    assert str(rows[dd.TS].dt.tz) == "UTC" and rows[dd.TS].iloc[0] == pd.Timestamp("2026-06-21T10:00Z")
    assert rows[s.GHI].iloc[-1] == 600.0 and rows[s.WIND_SPEED].iloc[0] == 3.2 and rows[s.PV_POWER].isna().all()
    query = fake.requests[0].query
    assert query["latitude"] == ["52.52"] and query["longitude"] == ["13.4"]
    assert query["timezone"] == ["GMT"] and query["wind_speed_unit"] == ["ms"] and query["timeformat"] == ["unixtime"]
    assert query["minutely_15"] == ["shortwave_radiation,direct_normal_irradiance,diffuse_radiation,"
                                    "temperature_2m,cloud_cover,wind_speed_10m"]


def test_hourly_forecast_in_iso_times_of_the_documented_example(fake):
    times = ["2022-07-01T00:00", "2022-07-01T01:00", "2022-07-01T02:00"]
    fake.route("/forecast", Reply(200, open_meteo_body("hourly", times, temperature_2m=[13.7, 13.3, 12.8])))
    rows = OpenMeteo("hourly", connection=connection(fake)).fetch(SITE, pd.Timestamp("2022-06-30T22:00Z"))
    assert rows[dd.TS].tolist() == list(pd.date_range("2022-07-01", periods=3, freq="h", tz="UTC"))
    assert rows[s.TEMP_AIR].tolist() == [13.7, 13.3, 12.8]
    assert "hourly" in fake.requests[0].query and "minutely_15" not in fake.requests[0].query


@pytest.mark.parametrize("times", [
    unix("2026-03-29T00:00", 96, "15min"),  # as asked: unixtime
    [t.strftime("%Y-%m-%dT%H:%M") for t in pd.date_range("2026-03-29T02:00", periods=96, freq="15min")],
], ids=["unixtime", "iso-with-offset"])
def test_a_daylight_saving_day_gives_96_continuous_utc_instants(fake, times):
    """Berlin springs forward on 2026-03-29 at 01:00 UTC. Asked in GMT, the day is 96 steps of
    15 min in UTC; a body in local ISO times is moved back by its ``utc_offset_seconds``."""
    body = open_meteo_body("minutely_15", times)
    if isinstance(times[0], str):
        body["utc_offset_seconds"] = 7200
    fake.route("/forecast", Reply(200, body))
    rows = OpenMeteo(connection=connection(fake)).fetch(SITE, pd.Timestamp("2026-03-28T23:00Z"))
    assert len(rows) == 96 and str(rows[dd.TS].dt.tz) == "UTC"
    assert rows[dd.TS].iloc[0] == pd.Timestamp("2026-03-29T00:00Z")
    assert (rows[dd.TS].diff().dropna() == pd.Timedelta(minutes=15)).all()


def test_a_partial_horizon_stores_only_the_instants_the_service_filled(fake, store):
    times = unix("2026-06-21T10:00", 8, "15min")
    nulls = {k: [1.0] * 5 + [None] * 3 for k in ("shortwave_radiation", "direct_normal_irradiance",
                                                  "diffuse_radiation", "temperature_2m", "cloud_cover", "wind_speed_10m")}
    fake.route("/forecast", Reply(200, open_meteo_body("minutely_15", times, **nulls)))
    assert fetch_weather(store, SITE, OpenMeteo(connection=connection(fake)), NOW) == 5
    seen = StoredWeatherForecast(store, "open-meteo").forecast(
        SITE, pd.DatetimeIndex([NOW + pd.Timedelta(hours=1)] * 8), pd.to_datetime(times, unit="s", utc=True))
    assert seen[TEMP].notna().tolist() == [True] * 5 + [False] * 3


NULLS = {k: [None] * 8 for k in ("shortwave_radiation", "direct_normal_irradiance", "diffuse_radiation",
                                 "temperature_2m", "cloud_cover", "wind_speed_10m")}


@pytest.mark.parametrize("first, nulls", [
    ("2026-06-21T10:00", NULLS),  # every value null
    ("2026-06-20T10:00", {}),  # only hours already past
])
def test_an_answer_with_nothing_from_this_hour_on_is_no_data_and_the_next_answer_is_stored(fake, store, first, nulls):
    """Such an answer is NoData and stores nothing, not 0 rows unsaid: the plan would read an older
    issue as if it were new. The next answer is stored."""
    fake.route("/forecast", Reply(200, open_meteo_body("minutely_15", unix(first, 8, "15min"), **nulls)),
               Reply(200, open_meteo_body("minutely_15", unix("2026-06-21T10:00", 8, "15min"))))
    source = OpenMeteo(connection=connection(fake))
    with pytest.raises(NoData, match=r"^open-meteo: the answer holds no value from 2026-06-21T10:00:00\+00:00 on"):
        fetch_weather(store, SITE, source, NOW)
    assert store.read_frame(s.WEATHER_FORECASTS).empty
    assert fetch_weather(store, SITE, source, NOW + pd.Timedelta(minutes=5)) == 8


def test_values_no_weather_can_have_are_stored_as_missing_and_said_once(fake, caplog):
    """A fill value (-1000, 1e308) or a unit mixed up is no reading of the weather: each is
    stored as missing, with one warning counting them, and a row of nothing else is no row."""
    times = unix("2026-06-21T10:00", 4, "15min")
    fake.route("/forecast", Reply(200, open_meteo_body(
        "minutely_15", times, shortwave_radiation=[600.0, -1000.0, 1e308, 620.0], cloud_cover=[20.0, 150.0, 20.0, 20.0],
        direct_normal_irradiance=[500.0, -1000.0, 500.0, 500.0], diffuse_radiation=[100.0, -1000.0, 100.0, 100.0],
        temperature_2m=[21.0, -1000.0, 21.0, 21.0], wind_speed_10m=[3.0, -1000.0, 3.0, 3.0])))
    with caplog.at_level(logging.WARNING):
        rows = OpenMeteo(connection=connection(fake)).fetch(SITE, NOW)
    assert rows[dd.TS].tolist() == [pd.Timestamp(t, unit="s", tz="UTC") for t in (times[0], times[2], times[3])]
    assert rows[s.GHI].tolist()[0] == 600.0 and np.isnan(rows[s.GHI].tolist()[1]) and rows[s.GHI].tolist()[2] == 620.0
    (said,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert said.startswith("open-meteo: values outside what the weather can be, stored as missing: "
                           "2 ghi_w_m2 (e.g. -1000; expected 0 to 1500), 1 dni_w_m2")
    assert "1 cloud_cover_percent (e.g. 150; expected 0 to 100)" in said


@pytest.mark.parametrize("body, message", [
    (open_meteo_body("minutely_15", [1], shortwave_radiation=None) | {"minutely_15": {"time": [1]}},
     "Open-Meteo: the response has no field 'minutely_15.shortwave_radiation'"),
    (open_meteo_body("minutely_15", [1, 2], temperature_2m=[1.0]),
     "Open-Meteo: field 'minutely_15.temperature_2m' is not a list of 2 numbers"),
    (open_meteo_body("minutely_15", [1]) | {"minutely_15_units": {"wind_speed_10m": "km/h"}},
     "Open-Meteo: minutely_15_units.wind_speed_10m is 'km/h', expected 'm/s'"),
    (open_meteo_body("minutely_15", [*unix("2026-06-21T10:00Z", 3, "15min"), None]),
     "Open-Meteo: field 'minutely_15.time' holds a null; expected a time for every step"),
], ids=["missing-field", "short-list", "wrong-unit", "null-time"])
def test_a_malformed_body_is_one_line_naming_service_and_field(fake, body, message):
    fake.route("/forecast", Reply(200, body))
    with pytest.raises(MalformedResponse) as caught:
        OpenMeteo(connection=connection(fake)).fetch(SITE, NOW)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


# --- the archive ------------------------------------------------------------------------------

def test_the_archive_stamps_each_value_issued_at_its_own_instant_and_backfills_missing_days_once(fake, store):
    times = unix("2026-06-01T00:00", 48, "h")
    fake.route("/archive/forecast", Reply(200, open_meteo_body("hourly", times)))
    archive = OpenMeteoArchive(connection=connection(fake))
    start, end, now = pd.Timestamp("2026-06-01T00:00Z"), pd.Timestamp("2026-06-03T00:00Z"), pd.Timestamp("2026-06-02T12:00Z")
    assert backfill_weather(store, SITE, archive, start, end, now) == 36  # nothing at or after `now`
    rows = store.read_frame(s.WEATHER_FORECASTS, {s.SOURCE: "open-meteo-archive"})
    assert (rows[s.ISSUED_AT] == rows[dd.TS]).all() and rows[dd.TS].max() < now
    query = fake.requests[0].query
    assert query["start_date"] == ["2026-06-01"] and query["end_date"] == ["2026-06-02"] and "hourly" in query
    assert backfill_weather(store, SITE, archive, start, now, now) == 0 and len(fake.requests) == 1
    # Such a value never reaches a forecast of a later instant.
    seen = StoredWeatherForecast(store, archive).forecast(SITE, pd.DatetimeIndex([now]), pd.DatetimeIndex([now + pd.Timedelta(hours=1)]))
    assert seen.isna().all().all()


# --- Forecast.Solar ---------------------------------------------------------------------------

def forecast_solar_body() -> dict:
    """doc.forecast.solar/api:estimate, "Example": ``result`` holds ``watts``,
    ``watt_hours_period``, ``watt_hours`` and ``watt_hours_day`` keyed by the end of each period
    in local time ("2017-09-18 01:00:00" unless ``?time=`` says otherwise, doc.forecast.solar/api);
    ``message.info.timezone`` names the zone, ``message.ratelimit`` the budget. The public plan
    covers today and tomorrow only."""
    watts = {"2026-06-21 04:43:00": 0, "2026-06-21 05:00:00": 120, "2026-06-21 06:00:00": 900,
             "2026-06-21 12:00:00": 5400, "2026-06-22 04:44:00": 0, "2026-06-22 05:00:00": 100}
    period = {"2026-06-21 04:43:00": 0, "2026-06-21 05:00:00": 17, "2026-06-21 06:00:00": 510,
              "2026-06-21 12:00:00": 19800, "2026-06-22 04:44:00": 0, "2026-06-22 05:00:00": 16}
    return {"result": {"watts": watts, "watt_hours_period": period, "watt_hours": period,
                       "watt_hours_day": {"2026-06-21": 20327, "2026-06-22": 16}},
            "message": {"code": 0, "type": "success", "text": "",
                        "info": {"latitude": 52.52, "longitude": 13.4, "distance": 0, "place": "Berlin",
                                 "timezone": "Europe/Berlin", "time": "2026-06-21T12:20:00+02:00",
                                 "time_utc": "2026-06-21T10:20:00+00:00"},
                        "ratelimit": {"zone": "IP", "period": 3600, "limit": 12, "remaining": 11}}}


PLANE = "/estimate/52.5200/13.4000/30/0/8"


@pytest.mark.parametrize("compass, theirs", [(180, 0), (90, -90), (270, 90), (0, -180), (135, -45)])
def test_forecast_solar_azimuth_is_measured_from_south(compass, theirs):
    assert forecast_solar_azimuth(compass) == theirs


def test_forecast_solar_gives_pv_kw_per_period_end_in_utc(fake):
    fake.route(PLANE, Reply(200, forecast_solar_body()))
    rows = ForecastSolar(connection=connection(fake)).fetch(SITE, NOW, end=pd.Timestamp("2026-06-25T00:00Z"))
    assert rows[dd.TS].iloc[1] == pd.Timestamp("2026-06-21T03:00Z")  # 05:00 CEST
    # Mean power of each period ending at ts: 510 Wh over 05:00-06:00 is 0.51 kW, 19.8 kWh over 6 h is 3.3 kW.
    assert rows[s.PV_POWER].round(6).tolist()[2:4] == [0.51, 3.3]
    assert rows[s.PV_POWER].iloc[1] == pytest.approx(17 / (17 / 60) / 1000)
    assert rows[dd.TS].max() == pd.Timestamp("2026-06-22T03:00Z") and (rows[s.ISSUED_AT] == NOW).all()
    assert rows[s.GHI].isna().all()


def test_forecast_solar_key_goes_in_the_path_and_never_in_an_error(fake):
    key = "fs-key-0123456789abcdef"
    fake.route(f"/{key}{PLANE}", Reply(200, forecast_solar_body()))
    rows = ForecastSolar(connection=connection(fake, FORECAST_SOLAR_API_KEY=key)).fetch(SITE, NOW)
    assert len(rows) == 6
    fake.route(f"/{key}{PLANE}", Reply(500))
    with pytest.raises(SourceUnavailable) as caught:
        ForecastSolar(connection=connection(fake, FORECAST_SOLAR_API_KEY=key)).fetch(SITE, NOW)
    assert key not in str(caught.value)


def test_forecast_solar_429_is_waited_out_as_it_asks(fake):
    limited = {"result": "Rate limit for API calls reached.",
               "message": {"code": 429, "type": "error", "text": "Rate limit for API calls reached.",
                           "ratelimit": {"zone": "IP", "period": 3600, "limit": 12}}}
    fake.route(PLANE, Reply(429, limited, headers={"Retry-After": "7", "X-Ratelimit-Limit": "12"}),
               Reply(200, forecast_solar_body()))
    waits: list[float] = []
    assert len(ForecastSolar(connection=connection(fake, waits)).fetch(SITE, NOW)) == 6
    assert waits == [7.0] and len(fake.requests) == 2


def test_forecast_solar_429_retry_at_an_hour_away_asks_no_more(fake):
    """Asking before ``X-Ratelimit-Retry-At`` extends the ban (doc.forecast.solar/facing429)."""
    retry_at = (pd.Timestamp.now(tz="Europe/Berlin") + pd.Timedelta(hours=1)).isoformat()
    fake.route(PLANE, Reply(429, {"message": {"code": 429, "ratelimit": {"retry-at": retry_at}}},
                            headers={"X-Ratelimit-Retry-At": retry_at}))
    waits: list[float] = []
    with pytest.raises(SourceUnavailable, match="Forecast.Solar asks to wait 3[56]\\d\\d s"):
        ForecastSolar(connection=connection(fake, waits)).fetch(SITE, NOW)
    assert waits == [] and len(fake.requests) == 1


def test_forecast_solar_without_watts_is_one_line_naming_the_field(fake):
    fake.route(PLANE, Reply(200, {"result": {}, "message": {"code": 0}}))
    with pytest.raises(MalformedResponse, match="^Forecast.Solar: the response has no field 'result.watts'"):
        ForecastSolar(connection=connection(fake)).fetch(SITE, NOW)


@pytest.mark.parametrize("zone", [None, 7200])
def test_forecast_solar_with_no_zone_name_for_its_local_keys_is_one_line(fake, zone):
    body = forecast_solar_body()
    body["message"]["info"]["timezone"] = zone
    fake.route(PLANE, Reply(200, body))
    with pytest.raises(MalformedResponse, match=f"^Forecast.Solar: message.info.timezone is {zone!r}; expected a time zone"):
        ForecastSolar(connection=connection(fake)).fetch(SITE, NOW)


# --- sites, storing and reading ---------------------------------------------------------------

def test_the_place_is_the_declarations_and_a_site_without_one_is_refused_in_one_line():
    moved = {**SITE, "latitude": 0.0}  # the declaration, not a stray column, says where the site is
    place = site_place(moved)
    assert (place.latitude, place.altitude_m, place.azimuth_degrees, place.pv_kwp) == (52.52, 34.0, 180.0, 8.0)
    with pytest.raises(ConfigError, match="^site x: no latitude/longitude; declare its location"):
        site_place({dd.DEVICE_ID: "x", "latitude": None, "longitude": None})
    with pytest.raises(ConfigError, match="Forecast.Solar needs a PV plane"):
        ForecastSolar().fetch(site_row(build_site({**DECLARATION, "pv": None})), NOW)


def test_one_issue_per_hour_a_second_call_asks_nothing(fake, store):
    fake.route("/forecast", Reply(200, open_meteo_body("minutely_15", unix("2026-06-21T10:00", 16, "15min"))))
    source = OpenMeteo(connection=connection(fake))
    assert fetch_weather(store, SITE, source, NOW) == 16
    assert fetch_weather(store, SITE, source, NOW + pd.Timedelta(minutes=30)) == 0 and len(fake.requests) == 1
    assert fetch_weather(store, SITE, source, NOW + pd.Timedelta(minutes=45)) == 12  # 11:00 on, a new issue
    issues = store.read_frame(s.WEATHER_FORECASTS, {dd.DEVICE_ID: "home-1"})[s.ISSUED_AT].unique()
    assert list(issues) == [NOW, NOW + pd.Timedelta(minutes=45)] and len(fake.requests) == 2


def issue(store, issued_at: str, ghi: float, temp: float, targets: pd.DatetimeIndex) -> None:
    store.upsert_frame(s.WEATHER_FORECASTS, pd.DataFrame({
        dd.DEVICE_ID: "home-1", s.SOURCE: "open-meteo", s.ISSUED_AT: pd.Timestamp(issued_at), dd.TS: targets,
        s.GHI: ghi, s.TEMP_AIR: temp}))


def test_a_forecast_at_t_sees_only_issues_made_before_t(store):
    targets = pd.date_range("2026-06-21T11:00", periods=6, freq="h", tz="UTC")
    t = pd.Timestamp("2026-06-21T10:00Z")
    issue(store, "2026-06-20T18:00Z", 500.0, 18.0, targets)
    issue(store, "2026-06-21T06:00Z", 300.0, 21.0, targets)
    reader = StoredWeatherForecast(store, "open-meteo")
    issued = pd.DatetimeIndex([t] * len(targets))
    before = reader.forecast(SITE, issued, targets)
    assert list(before.columns) == list(WEATHER_COLUMNS) and (before[TEMP] == 21.0).all()

    issue(store, "2026-06-21T10:00Z", 900.0, 30.0, targets)  # at t: not before it
    issue(store, "2026-06-21T12:00Z", 50.0, 5.0, targets)
    issue(store, "2026-06-21T12:00Z", 60.0, 6.0, targets[:3])  # and changed again, still after t
    pd.testing.assert_frame_equal(reader.forecast(SITE, issued, targets), before)

    issue(store, "2026-06-21T09:00Z", 100.0, 25.0, targets)  # before t and newer: it is what t sees
    after = reader.forecast(SITE, issued, targets)
    assert (after[TEMP] == 25.0).all() and (after[CLEAR_SKY_INDEX] < before[CLEAR_SKY_INDEX]).all()
    # One call may carry several issue times: each row gets its own.
    mixed = reader.forecast(SITE, pd.DatetimeIndex([pd.Timestamp("2026-06-21T07:00Z"), t]), targets[:2])
    assert mixed[TEMP].tolist() == [21.0, 25.0]


def test_the_clear_sky_index_is_ghi_over_the_clear_sky_the_pv_forecast_multiplies_back(store):
    """A stored GHI of half the site's clear sky makes the declared PV forecast the clear-sky
    output at index 0.5; at night the index is 0."""
    system = planning_config(build_site(DECLARATION)).solar
    times = pd.date_range("2026-06-21T06:00", periods=9, freq="h", tz="UTC")
    clear = clear_sky_output(system, times).clear_sky_ghi_w_m2
    store.upsert_frame(s.WEATHER_FORECASTS, pd.DataFrame({
        dd.DEVICE_ID: "home-1", s.SOURCE: "open-meteo", s.ISSUED_AT: pd.Timestamp("2026-06-21T00:00Z"),
        dd.TS: times, s.GHI: 0.5 * clear, s.TEMP_AIR: 24.0}))
    weather = StoredWeatherForecast(store, "open-meteo")
    pv = declared_pv_forecast(system, "home-1", MeasuredPV(pd.Series(dtype="float64"), weather),
                              pd.Timestamp("2026-06-21T05:00Z"), times)
    np.testing.assert_allclose(pv.generation_kw, clear_sky_output(system, times, 0.5, 24.0).generation_kw, rtol=1e-12)
    night = pd.DatetimeIndex(["2026-06-21T23:00Z"])
    assert clear_sky_index(site_place(SITE), night, np.array([3.0])).tolist() == [0.0]


def test_a_pv_forecast_services_power_over_the_arrays_clear_sky_is_the_index_read():
    """Forecast.Solar forecasts power, not irradiance: 40 % of the declared array's clear-sky
    output reads as index 0.4 (and 0 at night), issue-time correct like any other issue."""
    system = planning_config(build_site(DECLARATION)).solar
    times = pd.date_range("2026-06-21T07:00", periods=8, freq="h", tz="UTC")
    clear = clear_sky_output(system, times).generation_kw
    with SQLiteCloudStore(":memory:") as cloud:
        cloud.upsert_sites([SITE])
        cloud.upsert_frame(s.WEATHER_FORECASTS, pd.DataFrame({
            dd.DEVICE_ID: "home-1", s.SOURCE: "forecast-solar", s.ISSUED_AT: pd.Timestamp("2026-06-21T05:00Z"),
            dd.TS: times, s.PV_POWER: 0.4 * clear}))
        reader = StoredWeatherForecast(cloud, "forecast-solar")
        seen = reader.forecast(SITE, pd.DatetimeIndex([pd.Timestamp("2026-06-21T06:00Z")] * len(times)), times)
        np.testing.assert_allclose(seen[CLEAR_SKY_INDEX], 0.4, rtol=1e-9)
        assert seen[TEMP].isna().all()
        early = reader.forecast(SITE, pd.DatetimeIndex([pd.Timestamp("2026-06-21T05:00Z")] * len(times)), times)
        assert early[CLEAR_SKY_INDEX].isna().all()  # issued at 05:00: not before a forecast made then
    night = pv_clear_sky_index(system, pd.DatetimeIndex(["2026-06-21T23:00Z"]), np.array([0.2]))
    assert night.tolist() == [0.0]


@pytest.mark.parametrize("failure, asked", [
    (Reply(503, {"reason": "down"}), FAST.attempts),  # unreachable: the second home is not made to wait again
    (Reply(200, {"minutely_15": {}}), 2),  # malformed: another home's answer may differ, so it is asked
])
def test_a_service_down_for_one_home_is_not_asked_again_for_the_next_in_the_same_round(fake, store, failure, asked):
    fake.route("/forecast", failure)
    homes = [SiteInputs(store, device_id, "Europe/Berlin", OpenMeteo(connection=connection(fake)))
             for device_id in ("home-1", "home-2")]
    down: dict = {}
    for home in homes:
        assert home.refresh(site_row(build_site({**DECLARATION, "device_id": home.device_id})), NOW, down) == 0
    assert len(fake.requests) == asked
    assert homes[0].stale == homes[1].stale and list(homes[1].stale) == ["weather"]
    homes[1].refresh(site_row(build_site({**DECLARATION, "device_id": "home-2"})), NOW, {})  # a new round asks
    assert len(fake.requests) > asked
