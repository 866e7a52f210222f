"""Backtests: the LP against every strategy with the same information, MPC against the upper
bound, forecasters that only know the past, the report and the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cloud.evaluation import backtest as bt
from cloud.evaluation.report import (
    GUARD_NOTE,
    GUARD_NOTE_NO_CAR,
    LABELS,
    energy_left_after_sessions,
    gap_table,
    metrics,
    sample_day,
    write_report,
)
from cloud.optimization import forecasters as fc
from cloud.optimization.decision import horizon_inputs
from cloud.optimization.lp import solve_dispatch
from cloud.optimization.plan import stored_energy_value_per_kwh
from der_core.config import build_config
from der_core.errors import UsageError
from der_core.tariff import site_tariff
from der_core.tariff_file import tariff_to_dict

ROOT = Path(__file__).resolve().parents[1]
JUNE = pd.Timestamp("2024-06-01")


def _run(days: int, forecaster: str = "naive", **config) -> bt.BacktestResult:
    site = build_config({"seed": 42, **config})
    return bt.run_backtest(site, bt.BacktestSettings(days=days, start=JUNE, forecaster=forecaster))


def _default_site(days: int, forecaster: str) -> bt.BacktestResult:
    """The site as shipped: no seed given, so the one its device id derives."""
    return bt.run_backtest(build_config({}), bt.BacktestSettings(days=days, start=JUNE, forecaster=forecaster))


@pytest.fixture(scope="module")
def week_without_fade() -> bt.BacktestResult:
    """A site whose battery never fades, so the simulator's window is exactly the LP's."""
    return _run(7, battery={"fade_per_cycle_percent": 0.0, "calendar_fade_percent_per_year": 0.0})


def test_the_lp_never_costs_more_than_any_strategy_with_the_same_information(week_without_fade):
    result = week_without_fade
    inputs = bt.horizon_inputs(result.actuals, result.config, result.settings.step_hours)
    start = bt.battery_spec(result.config, None, result.settings.wear_cost_per_kwh)
    for name, run in result.runs.items():
        # Like for like: the LP must end no lower than the strategy did.
        final = float(np.clip(run.soc_percent[-1], start.min_soc_percent, start.max_soc_percent))
        best = solve_dispatch(inputs, dataclasses.replace(start, terminal_soc_percent=final))
        # The LP's objective values the energy left beyond the start; so is the strategy's.
        value = stored_energy_value_per_kwh(inputs.import_cost_per_kwh, start.discharge_efficiency, start.max_discharge_kw)
        left = value * start.kwh(final - start.initial_soc_percent)
        valued = run.bill.total - left
        assert best.objective <= valued + 1e-6 * max(1.0, abs(valued)), name


def test_perfect_foresight_is_never_beaten_and_bills_share_one_accounting(week_without_fade):
    table = metrics(week_without_fade)
    assert table.loc[bt.PERFECT, "capture"] == pytest.approx(1.0)
    assert table.loc[bt.NO_BATTERY, "savings"] == 0.0 and table.loc[bt.NO_BATTERY, "cycles"] == 0.0
    valued = table["bill"] - table["stored"]  # what savings and capture count
    assert (valued >= valued[bt.PERFECT] - 1e-6).all() and (table["capture"].drop(bt.PERFECT) < 1.0).all()
    run = week_without_fade.runs[bt.SELF_CONSUMPTION]
    rebilled = bt.bill(week_without_fade.actuals, run.battery_kw, week_without_fade.config, week_without_fade.settings)
    assert rebilled == run.bill


def test_perfect_foresight_plans_the_capacity_an_aged_battery_has_left():
    """A battery of 4,000 cycles holds 84 % of its nominal capacity. Perfect foresight plans a
    whole month before the battery follows it: planned on the nominal capacity, it asked for
    charges the battery could not take and discharges it could not give, and the MPC, which
    re-plans from the energy measured, beat the upper bound."""
    result = _run(7, battery={"initial_cycles": 4000.0})
    assert result.runs[bt.PERFECT].soc_percent.max() > 0  # a run of the aged battery
    table = metrics(result)
    valued = table["bill"] - table["stored"]
    assert (valued >= valued[bt.PERFECT] - 1e-6).all(), valued.to_dict()


def test_report_has_every_strategy_and_a_sample_day_plot(week_without_fade, tmp_path):
    path = write_report(week_without_fade, tmp_path / "out")
    text = path.read_text()
    for label in LABELS.values():
        assert f"| {label} |" in text
    assert (tmp_path / "out" / "sample_day.png").stat().st_size > 10_000
    # The gap to perfect foresight, part by part, adds up to the two bills' difference.
    gaps = gap_table(week_without_fade)["mpc_minus_perfect"]
    runs = week_without_fade.runs
    assert gaps.sum() == pytest.approx(runs[bt.MPC].valued_total - runs[bt.PERFECT].valued_total, abs=1e-6)
    assert gaps["energy and wear while a car charges"] != 0.0  # the site's car charged that week
    assert f"| total | {gaps.sum():+,.2f} |" in text
    left = energy_left_after_sessions(week_without_fade)
    usable = week_without_fade.config.battery.capacity_kwh * 0.8  # the site's 10-90 % window
    assert set(left) == {bt.MPC, bt.PERFECT} and all(0.0 <= kwh <= usable + 1e-6 for kwh in left.values())
    assert f"{left[bt.MPC]:.2f} kWh under the MPC" in text
    # The guard's note follows what the MPC ran: guarded here (a car), not where no guard ran.
    assert runs[bt.MPC].guarded and GUARD_NOTE in text
    unguarded = dataclasses.replace(week_without_fade, runs=runs | {bt.MPC: dataclasses.replace(runs[bt.MPC], guarded=False)})
    assert GUARD_NOTE not in write_report(unguarded, tmp_path / "unguarded").read_text()
    # A home without a car is not told its peaks come from EV sessions.
    config = week_without_fade.config
    carless = dataclasses.replace(week_without_fade, config=config.model_copy(
        update={"home_load": config.home_load.model_copy(update={"has_ev": False})}))
    told = write_report(carless, tmp_path / "carless").read_text()
    assert GUARD_NOTE_NO_CAR in told and GUARD_NOTE not in told and "EV sessions" not in told
    day = sample_day(week_without_fade)
    assert JUNE.tz_localize(week_without_fade.config.timezone) <= day < JUNE.tz_localize(week_without_fade.config.timezone) + pd.Timedelta(days=7)


@pytest.mark.parametrize("issued_at", ["2024-06-10T03:00Z", "2024-06-12T17:15Z"])
def test_naive_forecast_uses_only_the_past(issued_at):
    config = build_config({"seed": 8, "interval_seconds": 900})
    issued = pd.Timestamp(issued_at)
    history = fc.site_actuals(config, pd.date_range(issued - pd.Timedelta(days=8), issued + pd.Timedelta(days=2), freq="15min"))
    instants = pd.date_range(issued + pd.Timedelta(minutes=15), periods=96, freq="15min")
    honest = fc.NaiveForecaster(config, history[fc.LOAD])(issued, instants)
    tampered = history[fc.LOAD].copy()
    tampered[tampered.index > issued] *= 5.0
    assert fc.NaiveForecaster(config, tampered)(issued, instants).equals(honest)
    assert list(honest.columns) == list(fc.COLUMNS) and (honest[fc.LOAD] >= 0).all()


@pytest.mark.parametrize("issued_at", ["2024-06-10T03:00Z", "2024-06-12T17:15Z"])
def test_the_holdable_peak_uses_only_the_past_and_a_bigger_battery_holds_a_lower_one(issued_at):
    config = build_config({"seed": 8, "interval_seconds": 900})
    issued = pd.Timestamp(issued_at)
    history = fc.site_actuals(config, pd.date_range(issued - pd.Timedelta(days=8), issued + pd.Timedelta(days=2), freq="15min"))
    net = history[fc.LOAD] - history[fc.PV]
    small = fc.holdable_peak_kw(net, issued, 1.0, 5.0, 0.95)
    tampered = net.copy()
    tampered[tampered.index > issued] += 20.0
    assert fc.holdable_peak_kw(tampered, issued, 1.0, 5.0, 0.95) == small
    assert 0.0 < fc.holdable_peak_kw(net, issued, 20.0, 5.0, 0.95) < small < net.loc[:issued].max()


def test_models_forecaster_reports_why_it_cannot_run():
    with pytest.raises(fc.ForecasterUnavailable, match="use --forecaster naive or perfect"):
        fc.models_forecaster(build_config({}))


@pytest.fixture(scope="module")
def month() -> dict[str, pd.DataFrame]:
    """The 30-day backtest of the default site (TOU tariff) the optimizer is measured by."""
    return {name: metrics(_default_site(30, name)) for name in ("naive", "perfect")}


@pytest.mark.slow
def test_mpc_on_perfect_forecasts_reaches_the_upper_bound(month):
    # The LP plans on nominal capacity, the battery runs with fade and derating: a few percent either way.
    assert month["perfect"].loc[bt.MPC, "capture"] == pytest.approx(1.0, abs=0.03)


@pytest.mark.slow
def test_forecast_driven_mpc_captures_85_percent_and_beats_self_consumption(month):
    table = month["naive"]
    assert table.loc[bt.MPC, "capture"] >= 0.85
    assert table.loc[bt.MPC, "bill"] < table.loc[bt.SELF_CONSUMPTION, "bill"]


def test_cli_backtest_writes_the_report_with_each_billing_month(tmp_path):
    """Two days across a month's end: the JSON, the report and the table give each billing
    month's bills, and the months add up to the whole run's."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, str(ROOT / "run_optimizer.py"), "--backtest", "--days", "2", "--start", "2024-06-30",
            "--output", "out"]
    result = subprocess.run([*args, "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert [row["strategy"] for row in body["strategies"]] == list(bt.STRATEGIES)
    report = (tmp_path / "out" / "report.md").read_text()
    assert (tmp_path / "out" / "sample_day.png").exists()
    assert [(row["month"], row["days"]) for row in body["months"]] == [("2024-06", 1.0), ("2024-07", 1.0)]
    for row in body["strategies"]:  # each month's bill less what the battery stored over it
        assert sum(month[row["strategy"]] for month in body["months"]) == pytest.approx(row["bill"] - row["stored"])
        expected = body["strategies"][0]["bill"] - (row["bill"] - row["stored"])  # against no battery
        assert row["savings"] == pytest.approx(expected)
    assert "By billing month" in report and "| 2024-06 | 1 |" in report and "| 2024-07 | 1 |" in report
    table = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert table.returncode == 0, table.stderr
    assert "bills by billing month:" in table.stdout and "2024-07" in table.stdout
    assert table.stdout.splitlines()[1].split()[:4] == ["strategy", "bill", "stored", "savings"]


@pytest.mark.parametrize("seed", [7, 42])
def test_sessions_found_in_the_load_are_the_simulated_ones(seed):
    from cloud.optimization.sessions import charging_mask, find_sessions
    from der_physics import base, generator

    config = build_config({"seed": seed, "interval_seconds": 900})
    instants = pd.date_range("2024-04-01", periods=96 * 30, freq="15min", tz="UTC")
    truth = generator.exogenous([config], base.TimeAxis.from_times(instants)).ev_kw[0] > 0
    found = find_sessions(fc.site_actuals(config, instants)[fc.LOAD], config.home_load.ev_charging_kw)
    mask = charging_mask(instants, found.starts, found.ends)
    assert (mask & ~truth).sum() == 0 and (truth & ~mask).sum() <= 0.05 * truth.sum()


def test_naive_forecast_after_a_session_expects_the_house_load():
    # Right after the car stops, the latest reading sits far below a usual that holds the week's
    # sessions; carried forward, that departure said the house would use nothing for two hours.
    from cloud.optimization.sessions import find_sessions

    config = build_config({"seed": 42, "interval_seconds": 900})
    step = pd.Timedelta(minutes=15)
    readings = fc.site_actuals(config, pd.date_range("2024-05-01", "2024-06-21", freq=step, tz="UTC"))
    forecaster = fc.NaiveForecaster(config, readings[fc.LOAD])
    found = find_sessions(readings.loc["2024-06-01":"2024-06-20", fc.LOAD], config.home_load.ev_charging_kw)
    ratios = []
    for end in found.ends:
        issued = end + step  # the first reading without the car
        instants = pd.date_range(issued + step, periods=8, freq=step)
        ratios.append(forecaster(issued, instants)[fc.LOAD].mean() / readings.loc[instants, fc.LOAD].mean())
    assert len(ratios) >= 5 and min(ratios) > 0.5, ratios


@pytest.mark.parametrize("issued_at", ["2024-06-10T03:00Z", "2024-06-12T02:15Z"])
def test_load_scenarios_use_only_the_past(issued_at):
    config = build_config({"seed": 8, "interval_seconds": 900})
    issued = pd.Timestamp(issued_at)
    history = fc.site_actuals(config, pd.date_range(issued - pd.Timedelta(days=29), issued + pd.Timedelta(days=2), freq="15min"))
    instants = pd.date_range(issued + pd.Timedelta(minutes=15), periods=96, freq="15min")
    honest = fc.NaiveForecaster(config, history[fc.LOAD]).scenarios(issued, instants)
    tampered = history[fc.LOAD].copy()
    tampered[tampered.index > issued] += 7.2
    again = fc.NaiveForecaster(config, tampered).scenarios(issued, instants)
    assert again.frame.equals(honest.frame) and np.array_equal(again.extra_load_kw, honest.extra_load_kw)
    assert honest.extra_load_kw.shape[0] > 1 and all((frame[fc.LOAD] >= 0).all() for frame in honest.frames())


@pytest.mark.parametrize("minutes", [0, 20, -15])
def test_a_policy_interval_off_the_step_is_a_usage_error(minutes):
    with pytest.raises(UsageError, match=f"policy interval {minutes} min: expected a multiple of the 15-minute step"):
        bt.BacktestSettings(policy_every_minutes=minutes)
    assert bt.BacktestSettings(policy_every_minutes=60).policy_every_minutes == 60


def test_the_reserve_policy_is_solved_at_midnight_unless_told_more_often():
    site = build_config({"seed": 42})
    daily = bt.run_backtest(site, bt.BacktestSettings(days=1, start=JUNE))
    every_six_hours = bt.run_backtest(site, bt.BacktestSettings(days=1, start=JUNE, policy_every_minutes=360))
    assert daily.runs[bt.MPC].guarded and (daily.replans, every_six_hours.replans) == (1, 4)


def test_the_guarded_backtest_caps_only_the_steps_of_the_demand_window(monkeypatch):
    """Under a tariff whose demand window is 17:00-21:00 the gateway's cap bound at every step
    of the guarded run, so the battery was held to the month's cap overnight and in the
    morning, where no import sets the billed peak; only the window's steps are capped now."""
    base = build_config({"seed": 42})
    windowed = tariff_to_dict(site_tariff(base)) | {
        "demand_window": {"days": ["weekday", "weekend", "holiday"], "hours": [[17, 21]]}}
    site = build_config({"seed": 42, "tariff": windowed})
    caps = {}
    simulate = bt.generator.simulate

    def recorded(configs, instants, *args, import_cap_kw=None, **kwargs):
        if import_cap_kw is not None and len(instants) == 1:  # the guarded run's steps
            caps[instants[0]] = float(import_cap_kw[0, 0])
        return simulate(configs, instants, *args, import_cap_kw=import_cap_kw, **kwargs)

    monkeypatch.setattr(bt.generator, "simulate", recorded)
    result = bt.run_backtest(site, bt.BacktestSettings(days=1, start=JUNE))
    assert result.runs[bt.MPC].guarded and len(caps) == 96
    capped = np.isfinite([caps[instant] for instant in result.actuals.index])
    billed = horizon_inputs(result.actuals, site, 0.25).demand_window  # the steps whose imports the bill counts
    assert capped.sum() == 16 and (capped == billed).all()


@pytest.mark.parametrize(("discharge_kw", "credited"), [(0.0, False), (5.0, True)])
def test_the_backtest_credits_stored_energy_only_to_a_battery_that_can_give_it_back(discharge_kw, credited):
    """The month's stored energy is valued as a plan's: nothing in a battery whose
    max_discharge_rate_kw is 0, which a strategy filling it was credited for as a saving."""
    site = build_config({"seed": 42, "battery": {"max_discharge_rate_kw": discharge_kw}})
    settings = bt.BacktestSettings(days=1, start=JUNE)
    actuals = fc.site_actuals(site, bt.backtest_window(site, settings))
    charging = np.where(np.arange(len(actuals)) < 8, 2.0, 0.0)  # 4 kWh into the battery in the first two hours
    (_, stored), = bt.billed_by_month(actuals, charging, site, settings).values()
    assert (stored > 0.1) == credited and (credited or stored == 0.0)
