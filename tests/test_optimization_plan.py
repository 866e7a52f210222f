"""Day-ahead plans: the table, dispatch_plans in the embedded store, readings as the site's
state, the setpoint schedule on the real broker and the gateway following it, and the CLI."""

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

from cloud.optimization import ACTIONS
from cloud.optimization.decision import battery_spec, effective_execution
from cloud.optimization.planner import (
    JOB,
    PlanSettings,
    fit_site_guard,
    plan_site,
    run_plan,
    state_from_simulator,
)
from cloud.optimization.publish import PublishFailed, publish_schedule
from cloud.optimization.reference import cost_without_battery
from cloud.optimization.stochastic import ScenarioPlan
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
from der_core import der_data as dd
from der_core.config import SimulatorConfig, build_config, site_record
from der_core.errors import UsageError
from der_core.tariff import site_tariff
from der_core.tariff_file import tariff_to_dict
from der_physics import generator
from der_physics.tariff import demand_window
from edge_gateway.gateway import Gateway
from edge_gateway.mqtt import MqttLink, SetpointBook, parse_command, topics
from edge_gateway.mqtt.settings import MqttSettings
from tests.mqtt_fixtures import WAIT_S, Recorder, broker, clear_retained, unique_id  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
START = pd.Timestamp("2024-06-12T00:00", tz="America/Los_Angeles")


@pytest.fixture
def store(tmp_path):
    cloud = SQLiteCloudStore(tmp_path / "cloud.db")
    yield cloud
    cloud.close()


def test_plan_is_written_to_dispatch_plans_with_a_run(store):
    config = SimulatorConfig(seed=3)
    site_plan = run_plan(config, PlanSettings(start=START), store)
    rows = store.read_frame(s.PLANS, equals={dd.DEVICE_ID: config.device_id})
    assert len(rows) == 96 == len(site_plan.table())
    assert rows[dd.TS].iloc[0] == START.tz_convert("UTC")
    np.testing.assert_allclose(rows[dd.BATTERY_POWER], site_plan.plan.battery_power_kw)
    np.testing.assert_allclose(rows[s.EXPECTED_COST], site_plan.plan.step_cost)
    assert store.last_run(JOB)[s.STATUS] == "ok" and store.last_run(JOB)[s.ROWS] == 96
    assert {row["action"] for row in site_plan.table()} <= set(ACTIONS)
    soc = np.array([row["soc_percent"] for row in site_plan.table()])
    assert soc.min() >= config.battery.min_soc - 0.05 and soc.max() <= config.battery.max_soc + 0.05
    # Idle ends where it started, which the plan must too: it can only do better.
    assert site_plan.savings_vs_no_battery >= -1e-6


def test_each_step_of_a_night_the_clocks_go_back_has_a_time_of_its_own():
    """Its 01:00 to 01:45 come twice; without their offsets the step table and the JSON
    listed them twice, alike."""
    autumn = pd.Timestamp("2024-11-03T00:00", tz="America/Los_Angeles")
    times = [row["time"] for row in plan_site(SimulatorConfig(seed=1), PlanSettings(start=autumn, horizon_hours=4)).table()]
    assert len(times) == len(set(times)) == 16
    assert times[4:9:4] == ["2024-11-03 01:00-07:00", "2024-11-03 01:00-08:00"]


@pytest.mark.parametrize(("hours", "minutes", "steps"), [(24, 15, 96), (6, 30, 12), (48, 60, 48)])
def test_horizon_and_step_set_the_plan_length(hours, minutes, steps):
    site_plan = plan_site(SimulatorConfig(seed=1), PlanSettings(start=START, horizon_hours=hours, step_minutes=minutes))
    assert len(site_plan.step_starts) == steps
    assert (site_plan.step_starts[1:] - site_plan.step_starts[:-1] == pd.Timedelta(minutes=minutes)).all()
    assert len(site_plan.schedule().entries) == steps


@pytest.mark.parametrize(("hours", "minutes"), [(24, 7), (0.1, 15), (24, 0), (1000, 15)])
def test_bad_horizon_is_a_usage_error(hours, minutes):
    with pytest.raises(UsageError):
        PlanSettings(horizon_hours=hours, step_minutes=minutes)


@pytest.mark.parametrize(("health", "capacity"), [(80.0, 0.8 * 13.5), (0.8, 13.5), (np.nan, 13.5)])
def test_a_battery_is_planned_in_the_capacity_its_health_reading_leaves_it(store, health, capacity):
    """SOC is a share of what the battery holds now: at 80 % health and 50 % SOC a 13.5 kWh
    battery holds 5.4 kWh, not 6.75, and can take 5.4 more. A health of 0.8 is a fraction
    written where a percent belongs, not a battery at under 1 % of its capacity."""
    config = SimulatorConfig(seed=5, interval_seconds=300)
    for frame in generator.historical([config], START - pd.Timedelta(days=9), START):
        store.upsert_readings(frame.assign(**{dd.BATTERY_HEALTH: health, dd.BATTERY_SOC: 50.0}))
    spec = plan_site(config, PlanSettings(start=START), store).battery
    assert spec.capacity_kwh == pytest.approx(capacity) and spec.initial_soc_percent == pytest.approx(50.0)
    assert spec.initial_kwh == pytest.approx(capacity / 2)


def test_stored_readings_give_the_start_soc_and_the_month_peak(store):
    config = SimulatorConfig(seed=5, interval_seconds=300)
    for frame in generator.historical([config], START - pd.Timedelta(days=9), START):
        store.upsert_readings(frame)
    site_plan = plan_site(config, PlanSettings(start=START), store)
    readings = store.read_readings(config.device_id)
    assert site_plan.state_source == "readings"
    assert site_plan.battery.initial_soc_percent == pytest.approx(readings[dd.BATTERY_SOC].iloc[-1], abs=1e-6)
    # The peak of the plan's own steps, as the bill's: a 5-minute reading's spike is not a quarter hour's.
    grid = readings.set_index(dd.TS)[dd.NET_GRID_FLOW].resample("15min", label="right", closed="right").mean()
    month = grid.index > pd.Timestamp("2024-06-01", tz="America/Los_Angeles")
    assert site_plan.inputs.peak_so_far_kw == pytest.approx(grid[month].max())
    assert site_plan.inputs.peak_so_far_kw < readings[dd.NET_GRID_FLOW].max()


def test_the_month_peak_of_stored_readings_counts_only_the_demand_window(store):
    """Under a tariff billing the peak from 06:00 to 12:00 only, the month's peak so far was
    the highest import of any hour, so the plan and its cap took an evening car's import, which
    no bill counts, as a peak already paid for."""
    base = SimulatorConfig(seed=5, interval_seconds=300)
    morning = {"days": ["weekday", "weekend", "holiday"], "hours": [[6, 12]]}
    config = build_config({"seed": 5, "interval_seconds": 300,
                           "tariff": tariff_to_dict(site_tariff(base)) | {"demand_window": morning}})
    for frame in generator.historical([config], START - pd.Timedelta(days=9), START):
        store.upsert_readings(frame)
    site_plan = plan_site(config, PlanSettings(start=START), store)
    grid = store.read_readings(config.device_id).set_index(dd.TS)[dd.NET_GRID_FLOW].resample(
        "15min", label="right", closed="right").mean()
    month = grid[grid.index > pd.Timestamp("2024-06-01", tz="America/Los_Angeles")]
    billed = demand_window(site_tariff(config), month.index, config.timezone, config.country)
    assert site_plan.inputs.peak_so_far_kw == pytest.approx(month[billed].max())
    assert month[billed].max() < month.max()


def test_a_home_without_a_grid_meter_has_paid_for_the_peak_of_its_load_less_its_pv(store):
    """A home imported as its PV and its house load (no grid meter): the month's peak so far
    was taken from the grid column alone, so it was 0, and every plan counted the whole
    month's demand charge as a saving."""
    config = SimulatorConfig(seed=5, interval_seconds=900)
    for frame in generator.historical([config], START - pd.Timedelta(days=9), START):
        store.upsert_readings(frame.assign(**{dd.NET_GRID_FLOW: np.nan, dd.BATTERY_POWER: np.nan, dd.BATTERY_SOC: np.nan}))
    site_plan = plan_site(config, PlanSettings(start=START), store)
    readings = store.read_readings(config.device_id).set_index(dd.TS)
    month = readings.index > pd.Timestamp("2024-06-01", tz="America/Los_Angeles")
    drawn = (readings[dd.LOAD_TOTAL] - readings[dd.SOLAR_KW])[month]
    assert site_plan.inputs.peak_so_far_kw == pytest.approx(drawn.max()) and drawn.max() > 1.0


def test_a_guarded_plan_sends_the_reserve_policy_fitted_on_the_site_and_caps_at_the_guards_cap():
    config = SimulatorConfig(seed=3, interval_seconds=900)
    site_plan = plan_site(config, PlanSettings(start=START))
    rule, policy = site_plan.guard, site_plan.policy
    assert rule is not None and policy is not None
    command = parse_command(site_plan.schedule().to_json().encode(), config.device_id, 100.0, START)
    # What the gateway will run is the policy the backtest measures, to the watt-hour.
    sent, steps = command.reserve, len(site_plan.step_starts)
    assert sent.start == policy.start == START and sent.step == policy.step and sent.states == policy.states
    assert len(sent.house_kw) == steps and len(policy.house_kw) > steps  # the policy looks past the plan
    np.testing.assert_allclose(sent.floor_kwh, policy.floor_kwh[:steps], atol=5e-4)
    np.testing.assert_allclose(sent.charge_to_kwh, policy.charge_to_kwh[:steps], atol=5e-4)
    np.testing.assert_allclose(sent.house_kw, policy.house_kw[:steps], atol=5e-4)
    battery = site_plan.battery
    assert (policy.floor_kwh >= battery.min_kwh - 1e-9).all() and (policy.floor_kwh <= battery.max_kwh + 1e-9).all()
    assert (policy.charge_to_kwh <= policy.floor_kwh + 1e-9).all()
    # Every step is the policy's to decide; the cap is the guard's.
    assert np.isnan([seg.power_kw for seg in command.segments]).all()
    assert site_plan.inputs.peak_so_far_kw == pytest.approx(rule.target_kw)
    np.testing.assert_allclose([seg.import_limit_kw for seg in command.segments], rule.target_kw, atol=1e-4)
    summary = site_plan.summary().reserve
    assert summary.cap_kw == pytest.approx(rule.target_kw, abs=1e-4) and summary.states == policy.states
    assert 0.0 <= summary.floor_above_min_kwh_lowest <= summary.floor_above_min_kwh_now
    assert summary.floor_above_min_kwh_now <= summary.floor_above_min_kwh_highest <= battery.max_kwh - battery.min_kwh


def test_a_plan_made_during_the_day_sends_the_policy_solved_at_the_midnight_before():
    """As the backtest solves it: the hourly re-plans do not re-solve the policy."""
    config = SimulatorConfig(seed=3, interval_seconds=900)
    afternoon = START + pd.Timedelta(hours=15)
    at_midnight = plan_site(config, PlanSettings(start=START)).policy
    later = plan_site(config, PlanSettings(start=afternoon))
    assert later.policy.start == START.tz_convert("UTC")
    sent = parse_command(later.schedule().to_json().encode(), config.device_id, 100.0, afternoon).reserve
    assert sent.start == afternoon and len(sent.house_kw) == 96
    # Its hours overlap the midnight plan's 36: the same policy there but for the end of the
    # look-ahead, which the afternoon's plan sets 15 hours later to cover all its steps.
    apart = np.abs(sent.floor_kwh[:60] - at_midnight.floor_kwh[60:120])
    assert np.mean(apart <= 0.25) > 0.95 and apart.max() <= 1.0


def test_under_a_reserve_policy_no_power_is_commanded_and_the_caps_are_the_capped_ones():
    site_plan = plan_site(SimulatorConfig(seed=3, interval_seconds=900), PlanSettings(start=START))
    decision, peak = site_plan.decision, site_plan.inputs.peak_so_far_kw
    guarded, guarded_cap = decision.commands(peak, 0.0, "guarded")
    capped, capped_cap = decision.commands(peak, 0.0, "capped")
    assert np.isnan(guarded).all() and not np.isnan(capped).all()
    np.testing.assert_array_equal(guarded_cap, capped_cap)
    # A site the policy does not cover (no car, too few readings) carries its plan out capped.
    assert effective_execution("guarded", False) == "capped" and effective_execution("guarded", True) == "guarded"


def test_no_guard_under_another_execution():
    site_plan = plan_site(build_config({"seed": 3}), PlanSettings(start=START, execution="capped"))
    assert site_plan.guard is None and site_plan.policy is None and site_plan.schedule().reserve is None


def test_a_home_without_a_car_is_sent_its_guards_cap_and_a_policy_over_its_standing_reserve():
    """A household's own bursts come at any hour: the guard keeps its reserve at all hours
    and the policy, which never sees a car, keeps no less, as the backtest runs it."""
    site_plan = plan_site(build_config({"seed": 3, "home_load": {"has_ev": False}}), PlanSettings(start=START))
    rule, policy, battery = site_plan.guard, site_plan.policy, site_plan.battery
    assert rule.windows.all_day and rule.standing_reserve_kwh == rule.reserve_kwh
    assert (policy.floor_kwh >= battery.min_kwh + rule.reserve_kwh - 1e-9).all()
    assert (policy.charge_to_kwh >= battery.min_kwh + rule.reserve_kwh - 1e-9).all()
    command = parse_command(site_plan.schedule().to_json().encode(), "edge-gateway-001", 100.0, START)
    assert command.reserve is not None and site_plan.held_for_car is None
    assert np.isnan([seg.power_kw for seg in command.segments]).all()
    np.testing.assert_allclose([seg.import_limit_kw for seg in command.segments], rule.target_kw, atol=1e-4)


def test_an_unknown_execution_is_a_usage_error():
    with pytest.raises(UsageError, match="execution 'fast'"):
        PlanSettings(execution="fast")


def test_publish_to_an_unreachable_broker_is_one_clear_error():
    plan = plan_site(SimulatorConfig(seed=1), PlanSettings(start=START, horizon_hours=1))
    with pytest.raises(PublishFailed, match="127.0.0.1:1 unreachable"):
        publish_schedule(MqttSettings(host="127.0.0.1", port=1), "site", plan.schedule(), timeout_s=2)


def _setpoint_site(device_id: str) -> SimulatorConfig:
    return build_config({"device_id": device_id, "seed": 11, "interval_seconds": 900, "battery": {"mode": "setpoint"}})


def test_published_schedule_reaches_a_subscriber_and_the_gateway_follows_it(broker, tmp_path):  # noqa: F811
    config = _setpoint_site(unique_id("opt"))
    topic = topics.setpoint(config.device_id)
    book = SetpointBook.for_configs([config])
    recorder, link = Recorder(broker, [topic]), MqttLink(broker, [config], setpoints=book).start()
    try:
        assert link.subscribed.wait(WAIT_S), "gateway did not subscribe to its setpoint topic"
        site_plan = plan_site(config, PlanSettings(horizon_hours=6, execution="capped"))
        assert publish_schedule(broker, config.device_id, site_plan.schedule()) == topic
        assert recorder.wait_for(lambda: recorder.on(topic)), "no schedule arrived"
        command = parse_command(recorder.on(topic)[0].payload, config.device_id, 100.0, dd.utc_now())
        power, cap = site_plan.commands()
        local = np.isnan(power)
        if site_plan.published == "plan":  # the rule, when sent, leaves every step to the battery
            assert set(np.array(site_plan.plan.actions)[local]) <= {"store", "discharge"}
            assert (np.abs(site_plan.plan.grid_kw[local]) <= 1e-3).all()
        np.testing.assert_allclose([seg.power_kw for seg in command.segments], power, atol=1e-4)  # NaN where null
        np.testing.assert_allclose([seg.import_limit_kw for seg in command.segments], cap, atol=1e-4)
        assert (np.isnan(cap) | (cap >= site_plan.plan.import_kw - 1e-4)).all()
        assert recorder.wait_for(lambda: book.command(config.device_id) is not None), "gateway did not accept the schedule"
        gateway = Gateway([config], state_dir=tmp_path / "state", setpoints=book)
        for start, at in zip(site_plan.step_starts[:3], site_plan.step_starts[1:4]):
            reading = gateway.step(at)
            # A reading covers the interval ending at its stamp, so the entry starting it governs it.
            commanded, limit = book.power_kw(config.device_id, start), book.import_limit_kw(config.device_id, start)
            row = reading.iloc[0]
            net_kw = row[dd.LOAD_TOTAL] - row[dd.SOLAR_KW]
            wanted = min(-net_kw if np.isnan(commanded) else commanded, limit - net_kw)
            low, high = -config.battery.max_discharge_rate_kw, config.battery.max_charge_rate_kw
            assert row[dd.BATTERY_POWER] == pytest.approx(min(max(wanted, low), high), abs=2e-3)
    finally:
        link.close()
        recorder.close()
        clear_retained(broker, [topic])


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MQTT_HOST": "127.0.0.1", "MQTT_PORT": "1"}
    env.pop("DATABASE_URL", None), env.pop("SUPABASE_URL", None), env.pop("SUPABASE_KEY", None)
    return subprocess.run([sys.executable, str(ROOT / "run_optimizer.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_plan_table_json_and_status(tmp_path):
    table = _cli("--start", "2024-06-12", "--horizon-hours", "2", "--steps", "--device-id", "site-a", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "site-a: times in America/Los_Angeles (PDT), money in USD"
    assert "with no battery" in table.stdout
    header = lines[lines.index(next(line for line in lines if line.startswith("every step"))) + 1]
    assert header.split() == ["time", "action", "battery", "kW", "SOC", "%", "price", "USD/kWh", "cost", "USD"]
    as_json = _cli("--start", "2024-06-12", "--horizon-hours", "2", "--json", "--device-id", "site-b", cwd=tmp_path)
    body = json.loads(as_json.stdout)
    assert body["device_id"] == "site-b" and len(body["plan"]) == 8 and body["published_to"] is None
    status = _cli("--status", cwd=tmp_path)
    assert status.returncode == 0 and "last run: #2" in status.stdout and " ok," in status.stdout


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--start", "yesterday-ish"], 2, "--start: 'yesterday-ish' is not an ISO 8601 date or time"),
    (["--config", "missing.json"], 2, "missing.json: config file not found"),
    (["--step-minutes", "7"], 2, "--step-minutes 7: expected a whole number of minutes dividing a day"),
    (["--forecaster", "models", "--device-id", "site-a"], 1, "use --forecaster naive or perfect"),
    (["--publish", "--horizon-hours", "1", "--device-id", "site-a"], 1, "MQTT broker 127.0.0.1:1 unreachable"),
    # A what-if battery given to a plan was ignored: the plan, as made for the site's own, came back with exit 0.
    (["--battery-kwh", "50", "--battery-kw", "25"], 2, "--battery-kwh, --battery-kw only apply to --backtest"),
    (["--days", "3"], 2, "--days only applies to --backtest"),
    # A mistyped store made an empty one there, and the device was planned as the built-in home.
    (["--device-id", "berlin", "--cloud-db", "clod.db"], 2, "no cloud store at 'clod.db'"),
    (["--backtest", "--device-id", "berlin", "--cloud-db", "clod.db"], 2, "no cloud store at 'clod.db'"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, code, message):
    result = _cli(*args, cwd=tmp_path)
    assert result.returncode == code
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_device_id_the_store_lacks_beside_its_sites_is_one_line(tmp_path):
    """A store of sites and a mistyped name: planning the built-in home in Los Angeles under
    it, stored and exit 0, would pass for the site meant."""
    (tmp_path / "data").mkdir()
    with SQLiteCloudStore(tmp_path / "data" / "cloud.db") as store:
        store.upsert_sites([site_record(build_config({"device_id": "golden-home"}))])
    assert _cli("--start", "2024-06-12", "--horizon-hours", "1", "--device-id", "golden-home", cwd=tmp_path).returncode == 0
    typo = _cli("--start", "2024-06-12", "--horizon-hours", "1", "--device-id", "golden-hom", cwd=tmp_path)
    assert typo.returncode == 2 and len(typo.stderr.strip().splitlines()) == 1
    assert typo.stderr.strip().endswith(
        "--device-id golden-hom: no site of that name in the cloud store (sqlite:data/cloud.db); did you mean "
        "golden-home? expected one of its 1 sites (golden-home), or --config FILE to plan a simulated home")


def test_cli_verbose_shows_the_traceback(tmp_path):
    result = _cli("--forecaster", "models", "--device-id", "site-a", "--verbose", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" in result.stderr


@pytest.mark.parametrize(("overrides", "execution", "over_scenarios"), [
    ({"home_load": {"has_ev": False}}, "capped", True), ({}, "capped", True), ({}, "guarded", False),
    ({"home_load": {"has_ev": False}}, "guarded", False),
], ids=["no-car-capped", "capped", "guarded", "no-car-guarded"])
def test_the_plan_decides_as_the_backtest_does(overrides, execution, over_scenarios):
    """A guarded plan follows one forecast; any other the naive forecaster's load scenarios,
    its first hour decided for all of them, and the cap never below what a full battery held."""
    settings = PlanSettings(start=START, execution=execution)
    site_plan = plan_site(build_config({"seed": 3, **overrides}), settings)
    assert isinstance(site_plan.decision.plan, ScenarioPlan) is over_scenarios
    if over_scenarios:
        assert site_plan.decision.plan.shared_steps == settings.replan_minutes // settings.step_minutes
        assert site_plan.plan is site_plan.decision.plan.plans[0]
        assert site_plan.summary().load_scenarios == len(site_plan.decision.plan.plans)
    plans, forecasts = site_plan.decision.plans, site_plan.decision.scenario_inputs
    expected = site_plan.summary().expected_over_scenarios
    if execution == "capped" and "home_load" not in overrides:  # the car's sessions of recent days, one scenario each
        # Expected costs: each scenario's plan against the references on that scenario's forecast.
        assert len(forecasts) == len(plans) == expected.scenarios
        # ...energy by probability, demand charge at the worst scenario's peak (the month's).
        idle = [cost_without_battery(f) for f in forecasts]
        idle_cost = np.mean([c.total - c.demand for c in idle]) + max(c.demand for c in idle)
        plan_cost = np.mean([p.total_cost - p.costs.demand for p in plans]) + max(p.costs.demand for p in plans)
        assert expected.savings_vs_no_battery == pytest.approx(idle_cost - plan_cost)
        inputs = site_plan.inputs  # the plan holds one peak in all scenarios: the worst reaches it
        shared = max(0.0, site_plan.decision.plan.peak_import_kw - inputs.peak_so_far_kw) * inputs.demand_charge_per_kw
        assert max(p.costs.demand for p in plans) == pytest.approx(shared, abs=1e-6)
    else:  # one forecast (guarded, or no car's sessions to replay): its costs are the plan's own
        assert len(plans) == 1 and expected is None
    # The plan's value is counted on the forecast it was costed on.
    assert site_plan.no_battery == cost_without_battery(site_plan.inputs)
    _, cap = site_plan.commands()
    assert site_plan.cap_floor_kw > 0 and (cap >= site_plan.cap_floor_kw - 1e-9).all()


@pytest.mark.slow
def test_a_weeks_guarded_schedule_is_one_the_gateway_accepts():
    """The longest plan there is: a week at 15 minutes, its reserve policy on every step."""
    config = SimulatorConfig(seed=3, interval_seconds=900)
    site_plan = plan_site(config, PlanSettings(start=START, horizon_hours=168))
    command = parse_command(site_plan.schedule().to_json().encode(), config.device_id, 100.0, START)
    assert len(command.reserve.house_kw) == 672 and command.reserve.row(START + pd.Timedelta(days=7) - pd.Timedelta(minutes=15)) == 671


def test_the_guards_cap_is_the_months_until_a_session_passes_it():
    """As in the backtest: fitted on the weeks before the month began, the same at every
    hourly plan, and fitted again with no cap below the peak once the peak has passed it."""
    config = SimulatorConfig(seed=3, interval_seconds=900)
    step = pd.Timedelta(minutes=15)
    spec = battery_spec(config, None, 0.02)
    caps = []
    for start in (START + pd.Timedelta(hours=1), START + pd.Timedelta(days=5, hours=19)):
        state = state_from_simulator(config, start.tz_convert("UTC"), step)
        caps.append(fit_site_guard(config, state, start.tz_convert("UTC"), spec).target_kw)
    assert caps[0] == caps[1]
    passed = dataclasses.replace(state, peak_so_far_kw=caps[0] + 1.0)
    assert fit_site_guard(config, passed, start.tz_convert("UTC"), spec).target_kw >= caps[0] + 1.0


@pytest.mark.parametrize(("start", "line"), [
    ("nan", "argument --start: 'nan' is not an ISO 8601 date or time in 1900-2200"),
    ("", "argument --start: '' is not an ISO 8601 date or time in 1900-2200"),
    ("0001-01-01", "argument --start: '0001-01-01' is not an ISO 8601 date or time in 1900-2200"),
    ("2024-03-10T02:30", "error: --start '2024-03-10 02:30:00': 2024-03-10 02:30 does not exist in America/Los_Angeles"),
    ("2024-11-03T01:30", "error: --start '2024-11-03 01:30:00': 2024-11-03 01:30 occurs twice in America/Los_Angeles"),
])
@pytest.mark.parametrize("mode", [[], ["--backtest", "--days", "1"]], ids=["plan", "backtest"])
def test_a_start_no_clock_shows_once_or_no_plan_can_hold_is_one_line(tmp_path, start, line, mode):
    """The site's zone places a local --start; a time its clock skips or repeats is refused,
    not guessed an hour off, and so are NaT and years whose history pandas cannot hold."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_KEY")}
    (tmp_path / "site.json").write_text("{}")  # the simulator's default site, in Los Angeles
    done = subprocess.run([sys.executable, str(ROOT / "run_optimizer.py"), *mode, "--config", "site.json", "--start", start], cwd=tmp_path,
                          env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    (only,) = done.stderr.strip().splitlines()
    assert done.returncode == 2 and line in only, done.stderr


def test_a_start_past_the_history_a_plan_reads_is_one_line_naming_it(tmp_path):
    """A plan of a later step forecasts from what is known now, and reads only the weeks before
    its start: a start months ahead left nothing known, and a simulated home was told to
    import its meter data (exit 1)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_KEY")}
    (tmp_path / "site.json").write_text("{}")
    done = subprocess.run([sys.executable, str(ROOT / "run_optimizer.py"), "--config", "site.json", "--start", "2199-12-31T12:00"],
                          cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    (only,) = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert only.startswith("error: --start 2199-12-31T20:00:00+00:00: ") and "days after now" in only
    assert "import" not in only and only.endswith("expected a start at most 29 days ahead")
    # A start that far ahead is planned, from what is known now.
    latest = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=28)).tz_convert("America/Los_Angeles").strftime("%Y-%m-%dT%H:%M")
    assert plan_site(SimulatorConfig(home_load={"has_ev": False}), PlanSettings(start=pd.Timestamp(latest),
                     horizon_hours=1, execution="capped")).plan.steps == 4
