"""The backtest on recorded data: a declared site's own load and PV through every strategy,
with a what-if battery, deciding only on readings before each decision and never running the
simulator."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import run_cloud_sync
import run_optimizer
from cloud.evaluation import backtest as bt
from cloud.evaluation import recorded
from cloud.forecasting.design import site_history
from cloud.forecasting.targets import LOAD_KW, availability
from cloud.optimization import forecasters as fc
from cloud.optimization import guard, reserve
from cloud.optimization.bill import grid_bill
from cloud.store.sqlite import SQLiteCloudStore
from der_core import der_data as dd
from der_core.cli_support import run_cli
from der_core.config import build_config
from der_core.errors import UsageError
from der_core.site_file import build_site, planning_config
from der_physics import generator, weather
from tests.sim_helpers import bursty_home

SITE = {
    "device_id": "home-1", "location": {"latitude": 48.14, "longitude": 11.58, "altitude_m": 520.0},
    "timezone": "Europe/Berlin", "country": "DE", "currency": "EUR",
    "pv": {"capacity_kwp": 6.0, "tilt_degrees": 30.0, "azimuth_degrees": 180.0, "inverter_kw": 5.0},
    "battery": None, "ev_charger": None, "tariff": "default_tou",
}
DAYS = 3


@pytest.fixture(scope="module")
def meter(tmp_path_factory) -> tuple[str, pd.DataFrame]:
    """A cloud store holding the declared site (no battery) and twelve days of its meter's
    readings, and those readings. They stand in for measured data and are made by the
    simulator here, before any test forbids it."""
    folder = tmp_path_factory.mktemp("recorded")
    config = build_config({"seed": 11, "timezone": "Europe/Berlin", "home_load": {"has_ev": False},
                           "solar": {"latitude": 48.14, "longitude": 11.58, "capacity_kw": 6.0}})
    stamps = pd.date_range("2024-04-29 22:15", "2024-05-11 22:00", freq="15min", tz="UTC")  # local Apr 30 to May 11
    truth = fc.site_actuals(config, stamps)[[fc.LOAD, fc.PV]].round(4)
    return declared_with(folder, truth), truth


def declared_with(folder, series: pd.DataFrame) -> str:
    """A cloud store in ``folder`` holding the declared site and ``series`` (load and PV at
    their instants) imported as its meter's CSV, by the README's commands; the store's file."""
    pd.DataFrame({"timestamp": series.index.strftime("%Y-%m-%dT%H:%M:%SZ"), "pv_kw": series[fc.PV].to_numpy(),
                  "load_kw": series[fc.LOAD].to_numpy()}).to_csv(folder / "meter.csv", index=False)
    (folder / "site.json").write_text(json.dumps(SITE))
    db = str(folder / "cloud.db")
    assert run_cli(run_cloud_sync.main, ["--site", str(folder / "site.json"), "--import", str(folder / "meter.csv"),
                                         "--column-map", "pv_kw=solar_generation_kw,load_kw=home_load_total_load_kw",
                                         "--cloud-db", db]) == 0
    return db


def forbid_the_simulator(monkeypatch) -> None:
    def simulator(*args, **kwargs):
        raise AssertionError("the recorded backtest ran the simulator")

    for module, name in ((weather, "simulate"), (weather, "forecast"), (generator, "exogenous"), (fc, "site_actuals")):
        monkeypatch.setattr(module, name, simulator)


def test_a_what_if_battery_is_backtested_on_the_recorded_days_without_the_simulator(meter, tmp_path, monkeypatch, capsys):
    db, truth = meter
    forbid_the_simulator(monkeypatch)
    monkeypatch.delenv("FORECAST_WEATHER_CSV", raising=False)
    code = run_cli(run_optimizer.main, ["--backtest", "--device-id", "home-1", "--battery-kwh", "10", "--battery-kw", "5",
                                        "--days", str(DAYS), "--cloud-db", db, "--output", str(tmp_path / "out"), "--json"])
    assert code == 0
    table = {row["strategy"]: row for row in json.loads(capsys.readouterr().out)["strategies"]}
    assert list(table) == list(bt.STRATEGIES)
    bills = {name: row["bill"] for name, row in table.items()}
    assert bills[bt.PERFECT] <= bills[bt.MPC] + 1e-6
    assert bills[bt.PERFECT] <= bills[bt.SELF_CONSUMPTION] + 1e-6
    assert bills[bt.MPC] <= bills[bt.SELF_CONSUMPTION] + 0.05 * bills[bt.NO_BATTERY]
    # The default start leaves a week of readings before it: May 8 to 10, local time.
    instants = pd.date_range("2024-05-08", periods=DAYS * 96, freq="15min", tz="Europe/Berlin").tz_convert("UTC") \
        + pd.Timedelta(minutes=15)
    prices = fc.tariff_forecast(build_config({"timezone": "Europe/Berlin", "country": "DE"}), instants, np.zeros(len(instants)))
    meter_bill = grid_bill(truth.loc[instants, fc.LOAD] - truth.loc[instants, fc.PV], prices[fc.IMPORT_PRICE].to_numpy(),
                           prices[fc.EXPORT_PRICE].to_numpy(), 0.25)
    assert table[bt.NO_BATTERY]["energy"] == pytest.approx(float(meter_bill.energy.sum()), rel=1e-9)
    assert table[bt.NO_BATTERY]["peak_import_kw"] == pytest.approx(float(meter_bill.peak_kw), rel=1e-9)
    assert table[bt.MPC]["cycles"] > 0


def test_a_site_that_declares_no_battery_needs_a_what_if_one(meter, tmp_path):
    db, _ = meter
    with pytest.raises(UsageError, match="declares no battery"):
        run_optimizer.main(["--backtest", "--device-id", "home-1", "--cloud-db", db, "--output", str(tmp_path)])


@pytest.mark.parametrize(("kwh", "kw", "field"), [("1e308", "5", "capacity_kwh"), ("10", "1e308", "max_charge_rate_kw")])
def test_a_what_if_battery_no_home_holds_is_one_line_naming_the_flags(meter, tmp_path, kwh, kw, field):
    db, _ = meter
    with pytest.raises(UsageError) as caught:
        run_optimizer.main(["--backtest", "--device-id", "home-1", "--battery-kwh", kwh, "--battery-kw", kw,
                            "--cloud-db", db, "--output", str(tmp_path)])
    assert str(caught.value) == (f"--battery-kwh {float(kwh):g} --battery-kw {float(kw):g}: {field}: Input should be "
                                 "less than or equal to 100000 (got 1e+308)")


def recorded_run(db: str, tamper_after: pd.Timestamp | None = None) -> bt.BacktestResult:
    with SQLiteCloudStore(db) as store:
        site = run_optimizer.stored_sites(store)["home-1"]
        series = recorded.recorded_series(store, "home-1", pd.Timedelta(minutes=15))
    if tamper_after is not None:
        later = series.index > tamper_after
        series.loc[later, fc.LOAD] *= 3.0
        series.loc[later, fc.PV] = 0.0
    config = recorded.with_battery(site.config, 10.0, 5.0)
    return recorded.run_recorded_backtest(config, series, bt.BacktestSettings(execution="capped"), days=2)


def test_the_mpc_never_reads_a_reading_after_its_decision(meter):
    db, _ = meter
    honest = recorded_run(db)
    cut = honest.actuals.index[0] + pd.Timedelta(hours=30)
    tampered = recorded_run(db, tamper_after=cut)
    before = honest.actuals.index <= cut
    np.testing.assert_array_equal(tampered.runs[bt.MPC].battery_kw[before], honest.runs[bt.MPC].battery_kw[before])
    # The tampered future is one the decisions would have seen: knowing it changes the upper bound's.
    assert not np.array_equal(tampered.runs[bt.PERFECT].battery_kw[before], honest.runs[bt.PERFECT].battery_kw[before])
    assert not np.array_equal(tampered.runs[bt.MPC].battery_kw[~before], honest.runs[bt.MPC].battery_kw[~before])


BURSTY_SITE = {
    "device_id": "home-2", "location": {"latitude": 39.74, "longitude": -105.18, "altitude_m": 1800.0},
    "timezone": "America/Denver", "country": "US", "currency": "USD",
    "pv": {"capacity_kwp": 2.0, "tilt_degrees": 30.0, "azimuth_degrees": 180.0, "inverter_kw": 2.0},
    "battery": {"capacity_kwh": 13.5, "max_charge_kw": 5.0, "max_discharge_kw": 5.0, "round_trip_efficiency": 0.9,
                "min_soc": 10.0, "max_soc": 90.0},
    "ev_charger": None, "tariff": "default_tou",
}


def test_a_home_without_a_car_holds_its_routine_bursts_below_the_single_plans_peak(monkeypatch):
    """Its evening bursts come every day at an hour no forecast pins down: a plan on one load
    forecast spends the battery on the evening's peak price and meets a burst empty, where the
    guard's cap and standing reserve, fitted on the weeks before, hold it."""
    forbid_the_simulator(monkeypatch)
    config = planning_config(build_site(BURSTY_SITE))
    series = bursty_home(guard.FIT_DAYS + 8)
    start = pd.Timestamp("2024-05-01", tz="America/Denver") + pd.Timedelta(days=guard.FIT_DAYS + 1)
    runs = {execution: recorded.run_recorded_backtest(config, series, bt.BacktestSettings(start=start, execution=execution),
                                                      days=7).runs
            for execution in ("guarded", "capped")}
    guarded, single = runs["guarded"][bt.MPC], runs["capped"][bt.MPC]
    assert guarded.guarded and not single.guarded
    assert guarded.grid_kw.max() < single.grid_kw.max() - 1.0
    assert guarded.bill.total < single.bill.total
    assert guarded.bill.total < runs["guarded"][bt.SELF_CONSUMPTION].bill.total


def test_a_home_without_a_load_meter_is_planned_and_backtested_from_its_grid_flow_and_pv(meter, tmp_path, capsys):
    """The same home's utility meter (its grid flow, import less export) and inverter (PV,
    which logs nothing from 22:00 to 04:00), no meter of its own load: the load every job
    reads is the balance, the measured one to the readings' rounding, and a plan and a
    backtest run on it."""
    db, truth = meter
    stamps = truth.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    night = (truth.index.tz_convert("Europe/Berlin").hour >= 22) | (truth.index.tz_convert("Europe/Berlin").hour < 4)
    pd.DataFrame({"timestamp": stamps[~night], "pv_kw": truth[fc.PV].to_numpy()[~night]}).to_csv(
        tmp_path / "inverter.csv", index=False)
    pd.DataFrame({"timestamp": stamps, "grid_kw": (truth[fc.LOAD] - truth[fc.PV]).to_numpy()}).to_csv(
        tmp_path / "utility.csv", index=False)
    (tmp_path / "site.json").write_text(json.dumps(SITE))
    flows = str(tmp_path / "flows.db")
    for name, mapped in (("inverter.csv", "pv_kw=solar_generation_kw"), ("utility.csv", "grid_kw=net_grid_flow_kw")):
        assert run_cli(run_cloud_sync.main, ["--site", str(tmp_path / "site.json"), "--import", str(tmp_path / name),
                                             "--column-map", mapped, "--cloud-db", flows]) == 0
    with SQLiteCloudStore(db) as store, SQLiteCloudStore(flows) as balanced:
        expected = recorded.recorded_series(store, "home-1", pd.Timedelta(minutes=15))
        series = recorded.recorded_series(balanced, "home-1", pd.Timedelta(minutes=15))
    pd.testing.assert_frame_equal(series, expected, check_exact=False, atol=1e-3)
    capsys.readouterr()
    assert run_cli(run_optimizer.main, ["--device-id", "home-1", "--start", "2024-05-11T00:00+02:00", "--cloud-db", flows,
                                        "--output", str(tmp_path / "plan"), "--forecaster", "naive"]) == 0, \
        capsys.readouterr().err
    assert run_cli(run_optimizer.main, ["--backtest", "--device-id", "home-1", "--battery-kwh", "10", "--battery-kw", "5",
                                        "--days", "1", "--cloud-db", flows, "--output", str(tmp_path / "bt")]) == 0


def test_a_battery_whose_log_was_left_out_is_named_by_the_import_and_by_every_job(meter, tmp_path, capsys):
    """The home declares a battery, and its owner imports the utility meter and the inverter's
    PV but not the battery's log: the balance has no load, and the import, training, the plan
    and the backtest each say the battery's power is what to import (not the load or the grid
    flow already imported). With the log imported, the jobs take the load from the balance."""
    _, truth = meter
    stamps = truth.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    pd.DataFrame({"timestamp": stamps, "pv_kw": truth[fc.PV].to_numpy(), "grid_kw": (truth[fc.LOAD] - truth[fc.PV]).to_numpy()}
                 ).to_csv(tmp_path / "meters.csv", index=False)
    pd.DataFrame({"timestamp": stamps, "battery_w": 0.0}).to_csv(tmp_path / "battery.csv", index=False)
    battery = {"capacity_kwh": 10, "max_charge_kw": 5, "max_discharge_kw": 5, "round_trip_efficiency": 0.9,
               "min_soc": 10, "max_soc": 90}
    (tmp_path / "site.json").write_text(json.dumps({**SITE, "battery": battery}))
    db = str(tmp_path / "battery.db")
    needs = "battery_power_kw, positive when charging; a battery not installed yet is declared \"battery\": null"
    capsys.readouterr()
    assert run_cli(run_cloud_sync.main, ["--site", str(tmp_path / "site.json"), "--import", str(tmp_path / "meters.csv"),
                                         "--column-map", "pv_kw=solar_generation_kw,grid_kw=net_grid_flow_kw",
                                         "--cloud-db", db]) == 0
    said = capsys.readouterr().out
    assert "house load: warning: none measured (home_load_total_load_kw), and its balance needs the power of the 10 kWh " \
           f"battery the site declares ({needs}" in said
    with SQLiteCloudStore(db) as store:
        site = next(row for row in store.sites() if row["device_id"] == "home-1")
        history = site_history(store.read_readings("home-1"), site, pd.Timedelta(minutes=15))
    check = availability(LOAD_KW, "home-1", history.grid, site, history.step, 1.0)
    assert not check.ok and check.reason.startswith("no house load: none measured") and needs in check.reason
    for job in (["--start", "2024-05-11T00:00+02:00"], ["--backtest", "--days", "1"]):
        assert run_cli(run_optimizer.main, ["--device-id", "home-1", *job, "--cloud-db", db, "--output", str(tmp_path / "o")]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("error: home-1: no house load: none measured") and needs in error and "\n" not in error
    assert run_cli(run_cloud_sync.main, ["--device-id", "home-1", "--import", str(tmp_path / "battery.csv"), "--units", "W",
                                         "--column-map", "battery_w=battery_power_kw", "--cloud-db", db]) == 0
    assert "house load: none measured: the jobs take it from the balance, grid flow + PV - battery" in capsys.readouterr().out
    assert run_cli(run_optimizer.main, ["--backtest", "--device-id", "home-1", "--days", "1", "--cloud-db", db,
                                        "--output", str(tmp_path / "bt")]) == 0


def test_a_home_without_pv_is_backtested_with_its_pv_at_zero(meter, tmp_path):
    """A home that declares no PV imports its utility meter alone: its PV is 0 at every step,
    not missing, so no step of its history is dropped as incomplete."""
    _, truth = meter
    pd.DataFrame({"timestamp": truth.index.strftime("%Y-%m-%dT%H:%M:%SZ"), "grid_kw": truth[fc.LOAD].to_numpy()}).to_csv(
        tmp_path / "meter.csv", index=False)
    (tmp_path / "site.json").write_text(json.dumps({**SITE, "pv": None}))
    db = str(tmp_path / "grid.db")
    assert run_cli(run_cloud_sync.main, ["--site", str(tmp_path / "site.json"), "--import", str(tmp_path / "meter.csv"),
                                         "--column-map", "grid_kw=net_grid_flow_kw", "--cloud-db", db]) == 0
    with SQLiteCloudStore(db) as store:
        series = recorded.recorded_series(store, "home-1", pd.Timedelta(minutes=15))
    assert series[fc.PV].eq(0.0).all() and series[fc.LOAD].notna().all()
    assert run_cli(run_optimizer.main, ["--backtest", "--device-id", "home-1", "--battery-kwh", "10", "--battery-kw", "5",
                                        "--days", "1", "--cloud-db", db, "--output", str(tmp_path / "bt")]) == 0


def test_a_half_hourly_meter_is_backtested_in_its_own_intervals(meter, tmp_path, capsys):
    """A utility meter read every 30 minutes says nothing of the quarter hours inside each
    reading: the backtest runs in 30-minute steps unless asked for longer ones, bills the
    meter's own half hours, and refuses 15-minute steps in one line."""
    _, truth = meter
    half_hours = truth.resample("30min", closed="right", label="right").mean().dropna()
    db = declared_with(tmp_path, half_hours)
    args = ["--backtest", "--device-id", "home-1", "--battery-kwh", "10", "--battery-kw", "5", "--days", "2",
            "--forecaster", "naive", "--cloud-db", db, "--output", str(tmp_path / "out")]
    with pytest.raises(UsageError, match=r"^--step-minutes 15: home-1 has readings every 30 min, which say nothing of "
                                         r"shorter steps; expected 30 or more \(the default\)$"):
        run_optimizer.main([*args, "--step-minutes", "15"])
    capsys.readouterr()
    assert run_cli(run_optimizer.main, [*args, "--json"]) == 0
    table = {row["strategy"]: row for row in json.loads(capsys.readouterr().out)["strategies"]}
    assert "30-minute steps" in (tmp_path / "out" / "report.md").read_text()
    instants = pd.date_range("2024-05-08", periods=2 * 48, freq="30min", tz="Europe/Berlin").tz_convert("UTC") \
        + pd.Timedelta(minutes=30)
    prices = fc.tariff_forecast(build_config({"timezone": "Europe/Berlin", "country": "DE"}), instants, np.zeros(len(instants)))
    meter_bill = grid_bill(half_hours.loc[instants, fc.LOAD] - half_hours.loc[instants, fc.PV],
                           prices[fc.IMPORT_PRICE].to_numpy(), prices[fc.EXPORT_PRICE].to_numpy(), 0.5)
    assert table[bt.NO_BATTERY]["energy"] == pytest.approx(float(meter_bill.energy.sum()), rel=1e-9)
    assert table[bt.PERFECT]["bill"] <= table[bt.MPC]["bill"] + 1e-6


def test_the_longest_run_of_interpolated_steps_is_named_with_its_billing_month(meter, tmp_path, capsys):
    """Steps without a reading are interpolated for the battery's replay; a day of missing PV
    drawn as a straight line weighs on its month's bills as a step here or there does not, so
    the output names the longest run, in local time, beside the count."""
    _, truth = meter
    holed = truth.copy()
    holed.loc["2024-05-08 06:00":"2024-05-08 14:45", fc.PV] = np.nan  # 36 daylight steps: the step ending 08:00 CEST on
    holed = holed.drop(holed.loc["2024-05-09 12:00":"2024-05-09 12:15"].index)  # two steps without a row
    db = declared_with(tmp_path, holed)
    args = ["--backtest", "--device-id", "home-1", "--battery-kwh", "10", "--battery-kw", "5", "--days", "2",
            "--forecaster", "naive", "--cloud-db", db, "--output", str(tmp_path / "out")]
    assert run_cli(run_optimizer.main, args) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "interpolated" in x)
    assert line == ("38 of 192 steps had no reading and were interpolated; the longest run, 9 h from "
                    "Wed 2024-05-08 07:45 CEST, is in 2024-05's bills")
    assert run_cli(run_optimizer.main, [*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["filled_steps"] == 38 and out["filled_longest"] == {"from": "2024-05-08T05:45:00+00:00", "steps": 36}


def test_a_site_without_readings_is_named_and_every_other_site_is_planned(meter, tmp_path, capsys):
    """Planning every stored site: one that cannot be planned (declared, nothing imported yet)
    is named in one line with exit 1, after the others' plans are made and shown."""
    import shutil

    db, _ = meter
    mine = str(tmp_path / "cloud.db")
    shutil.copy(db, mine)
    (tmp_path / "site.json").write_text(json.dumps({**SITE, "device_id": "home-2"}))
    assert run_cli(run_cloud_sync.main, ["--site", str(tmp_path / "site.json"), "--cloud-db", mine]) == 0
    capsys.readouterr()
    assert run_cli(run_optimizer.main, ["--start", "2024-05-10T00:00+02:00", "--forecaster", "naive",
                                        "--cloud-db", mine]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("home-1: times in Europe/Berlin") and "home-2" not in out
    assert err.strip().splitlines()[-1].startswith("error: 1 of 2 sites not planned: home-2: no readings before")
    with SQLiteCloudStore(mine) as store:
        assert store.read_frame("dispatch_plans", {"device_id": "home-1"}).shape[0] == 96


def test_days_in_a_gap_longer_than_the_mpc_learns_from_are_refused_in_one_line(meter):
    """A meter silent for a month: a decision inside it has no reading in the 28 days its peak
    guard and reserve policy are fitted on, so those days are refused, naming the gap and the
    days either side of it; days after it are backtested."""
    _, truth = meter
    later = truth.copy()
    later.index = later.index + pd.Timedelta(days=12 + reserve.MODEL_DAYS + 3)  # 31 days without a reading
    series = pd.concat([truth, later])
    config = recorded.with_battery(planning_config(build_site(SITE)), 10.0, 5.0)
    with pytest.raises(UsageError) as caught:
        recorded.run_recorded_backtest(config, series, bt.BacktestSettings())
    assert str(caught.value) == ("home-1: no load and PV readings from 2024-05-11T22:00:00+00:00 to "
                                 "2024-06-11T22:15:00+00:00 (31.0 days), and the MPC learns each decision from the 28 "
                                 "days before it; expected --start 2024-06-13 or later, or --start and --days whose last day "
                                 "is 2024-06-08 or earlier")
    after = recorded.run_recorded_backtest(config, series, bt.BacktestSettings(start=pd.Timestamp("2024-06-13")),
                                           days=1)
    assert after.filled_steps == 0


def test_a_home_that_declares_pv_and_imported_only_its_load_is_told_to_import_the_pv(meter, tmp_path):
    """Every step lacks the PV of the declared array, so no --start or --days would help: the
    one line names the PV and how to import it, not the backtested days."""
    _, truth = meter
    pd.DataFrame({"timestamp": truth.index.strftime("%Y-%m-%dT%H:%M:%SZ"), "load_kw": truth[fc.LOAD].to_numpy()}).to_csv(
        tmp_path / "meter.csv", index=False)
    (tmp_path / "site.json").write_text(json.dumps(SITE))
    db = str(tmp_path / "load.db")
    assert run_cli(run_cloud_sync.main, ["--site", str(tmp_path / "site.json"), "--import", str(tmp_path / "meter.csv"),
                                         "--column-map", "load_kw=home_load_total_load_kw", "--cloud-db", db]) == 0
    with pytest.raises(UsageError) as caught:
        run_optimizer.main(["--backtest", "--device-id", "home-1", "--battery-kwh", "10", "--battery-kw", "5",
                            "--cloud-db", db, "--output", str(tmp_path / "bt")])
    assert str(caught.value) == ("home-1: no PV readings (solar_generation_kw) of the array the site declares; import "
                                 "them with run_cloud_sync.py --import FILE --column-map COLUMN=FIELD, or declare "
                                 "\"pv\": null if it has none")


def test_a_mistyped_site_is_refused_not_backtested_as_the_built_in_home(meter, tmp_path):
    """A store of sites lacks the name given: it was mistyped, as a plan takes it; backtesting
    the simulator's built-in home under that name would pass for the site's own backtest."""
    db, _ = meter
    with pytest.raises(UsageError, match=r"^--device-id home-l: no site of that name in the cloud store \(sqlite:.*\); "
                                         r"did you mean home-1\? expected one of its 1 sites \(home-1\)"):
        run_optimizer.main(["--backtest", "--device-id", "home-l", "--battery-kwh", "10", "--battery-kw", "5",
                            "--days", "1", "--cloud-db", db, "--output", str(tmp_path / "bt")])
    assert not (tmp_path / "bt").exists()


@pytest.mark.parametrize("hours", [1, 47])
def test_readings_too_few_for_a_whole_day_after_a_day_are_named_not_sent_to_other_days(meter, hours):
    """Readings from Apr 30 00:15 local time: its first day to backtest is May 1, which needs
    readings through May 2 00:00; no --start or --days could help, so none is asked for."""
    _, truth = meter
    config = recorded.with_battery(planning_config(build_site(SITE)), 10.0, 5.0)
    with pytest.raises(UsageError) as caught:
        recorded.recorded_settings(config, bt.BacktestSettings(), truth.iloc[: hours * 4], None)
    assert str(caught.value).startswith(f"home-1: readings from 2024-04-29T22:15:00+00:00 to {dd.format_ts(truth.index[hours * 4 - 1])}, "
                                        "too few to backtest: its first day, 2024-05-01, needs a day of readings before "
                                        "it and the whole day itself; expected readings until 2024-05-02T00:00:00+02:00")
    enough = recorded.recorded_settings(config, bt.BacktestSettings(), truth.iloc[: 48 * 4 + 4], None)
    assert enough.days == 1


def test_a_step_longer_than_the_re_plan_interval_re_plans_at_each_step(meter, tmp_path, capsys):
    """--step-minutes 120 divides a day; the hourly re-plan, which has no flag, is rounded up
    to the step, as it is for a meter read every two hours, instead of refusing a flag the
    user never gave."""
    db, _ = meter
    assert run_cli(run_optimizer.main, ["--backtest", "--device-id", "home-1", "--battery-kwh", "10", "--battery-kw", "5",
                                        "--days", "1", "--step-minutes", "120", "--forecaster", "naive", "--cloud-db", db,
                                        "--output", str(tmp_path / "out"), "--json"]) == 0
    assert {row["strategy"] for row in json.loads(capsys.readouterr().out)["strategies"]} == set(bt.STRATEGIES)
    assert bt.whole_steps_replan(120) == 120 and bt.whole_steps_replan(15) == 60 and bt.whole_steps_replan(45) == 90
