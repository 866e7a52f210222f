"""A declared site's live weather and prices reach its plan end to end: ``run_pipeline.py
--site`` declares the site, fetches Open-Meteo and Octopus Agile (local fakes answering with
their documented bodies), and plans on them; the plan moves when the published prices move;
a service that is down stops nothing, and the stored plan, the API and the printout say
which input is stale since when; a weather issue stored after a plan's issue time changes
nothing in it; a backtest on stored prices bills at them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

import run_cloud_sync
from cloud.dashboard.app import create_app
from cloud.evaluation import backtest as bt
from cloud.evaluation import recorded
from cloud.live.inputs import stored_site_inputs
from cloud.live.prices import HttpSettings, fetch_prices, price_source
from cloud.live.weather import Connection, OpenMeteo, fetch_weather
from cloud.optimization import forecasters as fc
from cloud.optimization.bill import grid_bill
from cloud.optimization.planner import PlanSettings, plan_site, stored_sites
from cloud.optimization.summary import read_summary
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
from der_core import der_data as dd
from der_core.cli_support import run_cli
from der_core.config import build_config
from der_core.site_file import build_site, site_row
from tests.fakes.http_service import FakeService, Reply
from tests.fakes.service_bodies import PRODUCT, RATES_PATH, REGION, TARIFF, agile_pages, agile_results, open_meteo_body, unix

ROOT = Path(__file__).resolve().parents[1]
ZONE = "Europe/London"
SITE = {
    "device_id": "home-uk", "location": {"latitude": 51.45, "longitude": -2.58, "altitude_m": 20.0},
    "timezone": ZONE, "country": "GB",
    "pv": {"capacity_kwp": 3.0, "tilt_degrees": 35.0, "azimuth_degrees": 180.0, "inverter_kw": 3.0},
    "battery": {"capacity_kwh": 10.0, "max_charge_kw": 5.0, "max_discharge_kw": 5.0, "round_trip_efficiency": 0.9,
                "min_soc": 10.0, "max_soc": 90.0},
    "ev_charger": None, "weather": "open-meteo",
    "prices": {"source": "octopus", "product": PRODUCT, "region": REGION},
}
DAYS = 15  # the forecasters' 14 days and one
EVENING = (17, 20)  # local hours whose Agile rates are 15 p, the day's cheapest
HORIZON = pd.Timedelta(hours=24)  # the pipeline's plan
DEAR = pd.Timedelta(hours=3)  # the span whose rates test (b) raises to 30 p
DEAR_STARTS = range(17, 23)  # local hours that span may begin at
LEAD = pd.Timedelta(hours=1)  # it begins this long after the plan it is chosen from: a later run's plan still holds it

Span = tuple[pd.Timestamp, pd.Timestamp]


def pence(dear: Span | None = None):
    """Agile rates: 20 p/kWh, 15 p from 17:00 to 20:00 UK time, and 30 p over ``dear``."""
    def rate(_: int, t: pd.Timestamp) -> float:
        if dear is not None and dear[0] <= t < dear[1]:
            return 30.0
        return 15.0 if EVENING[0] <= t.tz_convert(ZONE).hour < EVENING[1] else 20.0
    return rate


def dear_hours(start: pd.Timestamp) -> Span:
    """The three hours whose rates test (b) raises for plans starting from ``start``: the first
    three on the hour that begin at 17:00 to 22:00 UK time, at least :data:`LEAD` after
    ``start`` and end inside the :data:`HORIZON` from it. A 24 h plan always holds them whole
    (the next 17:00-20:00 evening it holds only in part when it starts inside one), and with no
    export price the battery's discharge is worth only the load it displaces, which these
    hours hold in every season, unlike a summer afternoon's covered by PV."""
    start = start.tz_convert("UTC")  # UK offsets are whole hours; counted in UTC, no hour is missing or twice
    hours = pd.date_range((start + LEAD).ceil("h"), start + HORIZON - DEAR, freq="h").tz_convert(ZONE)
    begin = next(t for t in hours if t.hour in DEAR_STARTS)
    return begin, begin + DEAR


def serve(fake: FakeService, *, dear: Span | None = None, weather_up: bool = True, prices_up: bool = True) -> None:
    """Open-Meteo's next three days from this hour and Agile's rates from a week ago to the
    day after tomorrow, both past the end of a plan made now, or a 503 (with Retry-After: 0,
    so the retries wait nothing)."""
    down = Reply(503, {"detail": "Service Unavailable"}, headers={"Retry-After": "0"})
    hour = pd.Timestamp.now(tz="UTC").floor("h")
    fake.route("/forecast", Reply(200, open_meteo_body("minutely_15", unix(hour, 3 * 96, "15min")))
               if weather_up else down)
    today = pd.Timestamp.now(tz=ZONE).normalize()
    start, end = (today - pd.Timedelta(days=8)).tz_convert("UTC"), (today + pd.Timedelta(days=3)).tz_convert("UTC")
    fake.route(RATES_PATH, *agile_pages(fake.url, agile_results(start, end, pence(dear)), 2000)
               if prices_up else [down])


@pytest.fixture(scope="module")
def fake():
    with FakeService() as service:
        yield service


@pytest.fixture(scope="module")
def base(tmp_path_factory, fake) -> Path:
    """A data folder whose cloud store holds the declared site, its meter's last 15 days (a
    simulated home's, standing in for imported data), last week's Agile rates and a weather
    issue of three hours ago, both fetched from the fakes, and trained forecasting models."""
    folder = tmp_path_factory.mktemp("live")
    data = folder / "data"
    data.mkdir()
    (folder / "site.json").write_text(json.dumps(SITE))
    config = build_config({"seed": 5, "timezone": ZONE, "country": "GB", "home_load": {"has_ev": False},
                           "solar": {"latitude": 51.45, "longitude": -2.58, "capacity_kw": 3.0}})
    now = pd.Timestamp.now(tz="UTC").floor("15min")
    stamps = pd.date_range(now - pd.Timedelta(days=DAYS), now, freq="15min", inclusive="right")
    truth = fc.site_actuals(config, stamps)
    pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"), "pv_kw": truth[fc.PV].round(4).to_numpy(),
                  "load_kw": truth[fc.LOAD].round(4).to_numpy()}).to_csv(folder / "meter.csv", index=False)
    db = str(data / "cloud.db")
    assert run_cli(run_cloud_sync.main, ["--site", str(folder / "site.json"), "--import", str(folder / "meter.csv"),
                                         "--column-map", "pv_kw=solar_generation_kw,load_kw=home_load_total_load_kw",
                                         "--cloud-db", db]) == 0
    serve(fake)
    environ = {"DER_OPEN_METEO_URL": fake.url, "DER_OCTOPUS_URL": fake.url}
    today = pd.Timestamp.now(tz=ZONE).normalize()
    with SQLiteCloudStore(db) as store:
        source = price_source(SITE["prices"], HttpSettings(environ=environ))
        assert fetch_prices(store, source, (today - pd.Timedelta(days=7)).tz_convert("UTC"), today.tz_convert("UTC")) > 0
        row = site_row(build_site(SITE))
        assert fetch_weather(store, row, OpenMeteo(connection=Connection(environ=environ)),
                             now - pd.Timedelta(hours=3)) > 0
    trained = _run([str(ROOT / "run_model_training.py"), "--train", "--cloud-db", db], {}, cwd=folder)  # ./trained_models
    assert trained.returncode == 0, trained.stderr
    return folder


def _run(args: list[str], environ: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", **environ}
    for name in ("SUPABASE_URL", "SUPABASE_KEY", "DATABASE_URL", "FORECAST_WEATHER_CSV"):
        env.pop(name, None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def pipeline(base: Path, name: str, fake: FakeService, **served) -> tuple[Path, subprocess.CompletedProcess]:
    """``run_pipeline.py --site`` on a copy of the base folder, the fakes serving as asked."""
    folder = base.parent / name
    shutil.copytree(base, folder)
    serve(fake, **served)
    done = _run([str(ROOT / "run_pipeline.py"), "--site", str(folder / "site.json"), "--data-dir", str(folder / "data"),
                 "--cloud-db", "sqlite"], {"DER_OPEN_METEO_URL": fake.url, "DER_OCTOPUS_URL": fake.url}, cwd=folder)
    return folder, done


def stored_plan(folder: Path) -> tuple[pd.DataFrame, dict]:
    with SQLiteCloudStore(folder / "data" / "cloud.db") as store:
        plans = store.read_frame(s.PLANS, {dd.DEVICE_ID: "home-uk"})
        newest = plans[plans[s.ISSUED_AT] == plans[s.ISSUED_AT].max()].sort_values(dd.TS)
        summary = read_summary(store, "home-uk", newest[s.ISSUED_AT].iloc[0])
    return newest, summary.to_dict()


def within(plan: pd.DataFrame, span: Span) -> np.ndarray:
    steps = pd.DatetimeIndex(plan[dd.TS])
    return np.asarray((steps >= span[0]) & (steps < span[1]))


def discharge_kwh(plan: pd.DataFrame, span: Span) -> float:
    return float(np.clip(-plan[dd.BATTERY_POWER].to_numpy()[within(plan, span)], 0, None).sum() * 0.25)


@pytest.fixture(scope="module")
def normal(base, fake):
    return pipeline(base, "normal", fake)


@pytest.mark.slow
def test_a_declared_site_is_planned_on_its_fetched_weather_and_prices(normal):
    folder, done = normal
    assert done.returncode == 0, done.stderr
    assert "[2/5] inputs" in done.stdout and "stale" not in done.stdout + done.stderr
    # the models its owner trained by the README's commands (./trained_models) are the pipeline's
    active = (folder / "trained_models" / "ACTIVE").read_text().strip()
    assert f"reused models {active}" in done.stdout and not (folder / "data" / "models").exists()
    plan, summary = stored_plan(folder)
    assert len(plan) == 96 and summary["stale"] == {}
    # The plan is priced at the published Agile rates: 0.20 or 0.15 GBP/kWh, nothing else.
    assert set(np.round(plan[s.PLAN_PRICE].to_numpy(), 6)) <= {0.2, 0.15}
    with SQLiteCloudStore(folder / "data" / "cloud.db") as store:
        issues = store.read_frame(s.WEATHER_FORECASTS, {dd.DEVICE_ID: "home-uk"})[s.ISSUED_AT].nunique()
    assert issues == 2  # the base's, and the one fetched by this run


@pytest.mark.parametrize("start, begin", [
    ("2026-12-07 10:00", "2026-12-07 17:00"),  # today's evening
    ("2026-12-07 16:30", "2026-12-07 18:00"),
    ("2026-12-07 18:30", "2026-12-07 20:00"),  # inside an evening: tomorrow's would end past the plan
    ("2026-12-07 19:45", "2026-12-07 21:00"),
    ("2026-12-07 23:30", "2026-12-08 17:00"),  # tomorrow's evening
    ("2026-10-24 20:30", "2026-10-24 22:00"),  # the clocks go back: Sunday's evening ends 24.5 h later
    ("2026-10-24 21:30", "2026-10-25 17:00"),
])
def test_the_dear_hours_are_an_evenings_whole_three_inside_the_plan(start, begin):
    at = pd.Timestamp(start, tz=ZONE)
    assert dear_hours(at) == (pd.Timestamp(begin, tz=ZONE), pd.Timestamp(begin, tz=ZONE) + DEAR)


@pytest.mark.parametrize("day", ["2026-03-28", "2026-03-29", "2026-06-07", "2026-10-24", "2026-10-25", "2026-12-07"])
def test_a_plan_starting_at_any_step_of_a_day_holds_dear_hours_after_its_lead(day):
    midnights = [pd.Timestamp(pd.Timestamp(day) + pd.Timedelta(days=n), tz=ZONE).tz_convert("UTC") for n in (0, 1)]
    for start in pd.date_range(*midnights, freq="15min", inclusive="left"):
        begin, end = dear_hours(start)
        assert start + LEAD <= begin and end <= start + HORIZON and begin.hour in DEAR_STARTS, start


@pytest.mark.slow
def test_dearer_evening_prices_make_the_plan_discharge_more_in_those_hours(base, fake, normal):
    """Three evening hours whose served rates go from 20 p or 15 p to 30 p, chosen whole inside
    both plans whatever the hour they are made at: the plan takes 30 p for them and only for
    them, and discharges more in them."""
    cheap_plan, _ = stored_plan(normal[0])
    dear = dear_hours(pd.Timestamp(cheap_plan[dd.TS].iloc[0]))
    dearer, done = pipeline(base, "dearer", fake, dear=dear)
    assert done.returncode == 0, done.stderr
    dear_plan, _ = stored_plan(dearer)
    assert within(cheap_plan, dear).sum() == within(dear_plan, dear).sum() == DEAR / pd.Timedelta(minutes=15)
    served = pence(dear)
    np.testing.assert_allclose(dear_plan[s.PLAN_PRICE].to_numpy(),
                               [served(0, t) / 100 for t in pd.DatetimeIndex(dear_plan[dd.TS])])
    assert discharge_kwh(dear_plan, dear) > discharge_kwh(cheap_plan, dear) + 0.5


@pytest.mark.slow
@pytest.mark.parametrize("down, table, service", [
    ("weather", s.WEATHER_FORECASTS, "Open-Meteo"),
    ("prices", s.PRICES, "Octopus Energy"),
])
def test_a_source_that_is_down_leaves_a_plan_marked_stale_since_its_newest_data(base, fake, down, table, service):
    folder, done = pipeline(base, f"{down}-down", fake, weather_up=down != "weather", prices_up=down != "prices")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and service in warnings[0] and "HTTP 503" in warnings[0]
    with SQLiteCloudStore(base / "data" / "cloud.db") as store:
        since = pd.Timestamp(store.read_frame(table)[s.FETCHED_AT].max())
    expected = f"stale since {since:%Y-%m-%dT%H:%MZ}"
    plan, summary = stored_plan(folder)
    assert len(plan) == 96 and np.isfinite(plan[s.PLAN_PRICE]).all()
    assert list(summary["stale"]) == [down] and summary["stale"][down].startswith(expected)
    assert f"{down} {expected}" in done.stdout  # the printed summary
    with SQLiteCloudStore(folder / "data" / "cloud.db") as store:
        body = TestClient(create_app(store)).get("/api/sites/home-uk/plan").json()
    assert body["stale"][down].startswith(expected) and body["summary"]["stale_lines"][0].startswith(f"{down} {expected}")


def test_a_weather_issue_stored_after_the_plans_issue_time_changes_nothing(base, tmp_path, fake):
    """At the planner: the naive plan of a past start, before and after an issue stamped a
    minute after that start is stored; an issue stamped a minute before it does change it."""
    shutil.copy(base / "data" / "cloud.db", tmp_path / "cloud.db")
    start = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(hours=36)
    settings = PlanSettings(start=start, forecaster="naive")

    def plan(store):
        return plan_site(stored_sites(store)["home-uk"].config, settings, store, declared=True).plan.battery_power_kw

    def issue_at(store, issued):  # a sky brighter than any clear one: PV above the house's load
        times = unix(start, 2 * 96, "15min")
        body = open_meteo_body("minutely_15", times, shortwave_radiation=[1000.0] * len(times))
        fake.route("/forecast", Reply(200, body))
        source = OpenMeteo(connection=Connection(environ={"DER_OPEN_METEO_URL": fake.url}))
        assert fetch_weather(store, site_row(build_site(SITE)), source, issued) > 0

    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        before = plan(store)
        issue_at(store, start + pd.Timedelta(minutes=1))
        np.testing.assert_array_equal(plan(store), before)
        issue_at(store, start - pd.Timedelta(minutes=1))
        assert not np.array_equal(plan(store), before)


def test_a_backtest_on_stored_prices_bills_at_the_prices_in_force(base):
    """The recorded backtest of the site over a day whose Agile rates are stored: its no-battery
    bill is the meter's flow at exactly those rates."""
    with SQLiteCloudStore(base / "data" / "cloud.db") as store:
        site = stored_sites(store)["home-uk"]
        inputs = stored_site_inputs(store, "home-uk")
        series = recorded.recorded_series(store, "home-uk", pd.Timedelta(minutes=15))
        day = (pd.Timestamp.now(tz=ZONE).normalize() - pd.Timedelta(days=3)).tz_localize(None)
        result = recorded.run_recorded_backtest(site.config, series, bt.BacktestSettings(start=day, execution="capped"),
                                                days=1, store=store, inputs=inputs)
    instants = result.actuals.index
    local = (instants - pd.Timedelta(minutes=15)).tz_convert(ZONE).hour
    rates = np.where((local >= EVENING[0]) & (local < EVENING[1]), 0.15, 0.20)
    np.testing.assert_allclose(result.actuals[fc.IMPORT_PRICE].to_numpy(), rates)
    flow = result.actuals[fc.LOAD] - result.actuals[fc.PV]
    bill = grid_bill(flow.to_numpy(), rates, np.zeros(len(rates)), 0.25)
    assert result.runs[bt.NO_BATTERY].bill.energy == pytest.approx(float(bill.energy.sum()), rel=1e-9)
    assert set(np.round(result.actuals[fc.EXPORT_PRICE].to_numpy(), 9)) == {0.0}  # no export price declared
    assert TARIFF in inputs.prices.area
