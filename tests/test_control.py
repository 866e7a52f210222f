"""One control law, three places: the gateway, the backtest and the plan's preview all step a
site through der_core.control.Controller, so the battery does the same in each."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from cloud.evaluation import backtest as bt
from cloud.optimization import forecasters as fc
from cloud.optimization import guard, reserve
from cloud.optimization.decision import battery_spec, horizon_inputs
from cloud.optimization.sessions import SESSION_HISTORY_DAYS
from der_core import der_data as dd
from der_core.config import build_config
from der_core.control import ControlBattery, Controller, ReservePolicy
from edge_gateway.gateway import Gateway

SEED = 42
#: A day on which the site's car charges for 13 readings, and one on which it does not charge.
CAR_DAY, NO_CAR_DAY = pd.Timestamp("2024-06-11"), pd.Timestamp("2024-06-12")
#: A battery without the physics the plan's preview leaves out (reserve.expected_dispatch).
NO_WEAR = {"fade_per_cycle_percent": 0.0, "calendar_fade_percent_per_year": 0.0, "internal_resistance_ohm": 0.0}


@dataclass
class Fitted:
    """A schedule source serving what the backtest fitted, each from the step it was fitted
    at: the reserve policy, and the peak guard's cap as the import limit; no power command."""

    fits: list[tuple[ReservePolicy, float]] = field(default_factory=list)

    def _in_force(self, at: pd.Timestamp) -> tuple[ReservePolicy, float]:
        return [fit for fit in self.fits if fit[0].start <= at][-1]

    def power_kw(self, device_id: str, at: pd.Timestamp) -> float:
        return math.nan

    def import_limit_kw(self, device_id: str, at: pd.Timestamp) -> float:
        return self._in_force(at)[1]

    def reserve(self, device_id: str, at: pd.Timestamp) -> ReservePolicy:
        return self._in_force(at)[0]

    def event(self, device_id: str, at: pd.Timestamp) -> bool:
        return False


def _backtest_day(monkeypatch, config, day: pd.Timestamp) -> tuple[bt.StrategyRun, Fitted, pd.DataFrame]:
    """The backtest's reserved run of one day, and the policies and caps it fitted."""
    settings = bt.BacktestSettings(days=1, start=day)
    instants = bt.backtest_window(config, settings)
    start = instants[0] - pd.Timedelta(days=max(fc.HISTORY_DAYS, SESSION_HISTORY_DAYS) + 1)
    history = fc.site_actuals(config, pd.date_range(start, instants[-1], freq=settings.step))
    fitted, rules = Fitted(), []
    fit_guard, fit_policy = guard.fit_guard, reserve.fit_policy

    def guard_spy(*args, **kwargs):
        rules.append(fit_guard(*args, **kwargs))
        return rules[-1]

    def policy_spy(*args, **kwargs):
        fitted.fits.append((fit_policy(*args, **kwargs), rules[-1].target_kw))
        return fitted.fits[-1][0]

    monkeypatch.setattr(guard, "fit_guard", guard_spy)
    monkeypatch.setattr(reserve, "fit_policy", policy_spy)
    actuals = history.loc[instants[0] :]
    run, solves = bt.reserved(config, actuals, settings, history)
    assert solves == len(fitted.fits) >= 1
    return run, fitted, actuals


def _gateway_day(tmp_path, config, fitted: Fitted, instants: pd.DatetimeIndex) -> pd.DataFrame:
    gateway = Gateway([config], state_dir=tmp_path, setpoints=fitted)
    return pd.concat([gateway.step(at) for at in instants], ignore_index=True)


def _site(**battery):
    return build_config({"seed": SEED, "interval_seconds": 900, "battery": {"mode": "setpoint"} | battery})


@pytest.mark.parametrize("day", [CAR_DAY, NO_CAR_DAY], ids=["car", "no-car"])
def test_the_gateway_runs_a_day_as_the_backtest_measures_it(tmp_path, monkeypatch, day):
    config = _site()
    run, fitted, actuals = _backtest_day(monkeypatch, config, day)
    readings = _gateway_day(tmp_path, config, fitted, actuals.index)
    assert (readings[dd.LOAD_EV] > 0).any() == (day == CAR_DAY)
    # The policy decided: the battery neither only followed its own rule nor idled.
    assert np.ptp(run.battery_kw) > 1.0
    # Same physics, same control: equal to the readings' 0.1 W (the gateway remembers the
    # peak and the session's house load from its readings, rounded to that).
    np.testing.assert_allclose(readings[dd.BATTERY_POWER].to_numpy(), run.battery_kw, rtol=0, atol=1e-4)


def test_the_plans_preview_of_a_day_without_the_car_is_what_the_gateway_does(tmp_path, monkeypatch):
    config = _site(**NO_WEAR)
    run, fitted, actuals = _backtest_day(monkeypatch, config, NO_CAR_DAY)
    assert len(fitted.fits) == 1, "one policy all day, as the preview has"
    policy, cap_kw = fitted.fits[0]
    readings = _gateway_day(tmp_path, config, fitted, actuals.index)
    assert not (readings[dd.LOAD_EV] > 0).any()
    step_starts = actuals.index - pd.Timedelta(minutes=15)
    spec = battery_spec(config, None, 0.0)
    preview = reserve.expected_dispatch(policy, horizon_inputs(actuals, config, 0.25), spec, step_starts, cap_kw,
                                        config.timezone)
    # The preview's battery has no fade or resistance, as this site's; it never derates for
    # temperature, which a June battery indoors does not reach; and it steps the unrounded
    # load, the gateway its readings (0.1 W).
    assert (readings[dd.NET_GRID_FLOW] <= cap_kw + 1e-4).all(), "the cap held: the gateway never raised it"
    np.testing.assert_allclose(preview.battery_power_kw, readings[dd.BATTERY_POWER].to_numpy(), rtol=0, atol=1e-4)


def _dr_site_day(tmp_path, event: bool) -> pd.DataFrame:
    """A site whose battery charged at full rate from the grid in the afternoon (the month's
    peak import), then holds a 0.3 kW import cap with no discharge command through the evening."""
    from edge_gateway.mqtt.commands import SetpointBook

    config = build_config({"device_id": "dr-cap", "seed": 7, "interval_seconds": 900,
                           "battery": {"mode": "setpoint", "initial_soc": 20.0}})
    noon, evening = pd.Timestamp("2024-07-15T19:00Z"), pd.Timestamp("2024-07-16T01:00Z")
    entries = [{"ts": dd.format_ts(noon), "power_kw": config.battery.max_charge_rate_kw}]
    entries += [{"ts": dd.format_ts(evening + i * pd.Timedelta(minutes=15)), "power_kw": 0.0, "import_limit_kw": 0.3,
                 **({"event": True} if event else {})} for i in range(8)]
    book = SetpointBook.for_configs([config], clock=lambda: noon)
    book.accept(config.device_id, json.dumps({"schedule": entries}).encode())
    gateway = Gateway([config], state_dir=tmp_path / str(event), setpoints=book)
    instants = pd.date_range(noon + pd.Timedelta(minutes=15), evening + pd.Timedelta(hours=2), freq="15min")
    return pd.concat([gateway.step(at) for at in instants], ignore_index=True)


def test_an_event_step_holds_its_cap_below_the_months_peak(tmp_path):
    held, raised = _dr_site_day(tmp_path, event=True), _dr_site_day(tmp_path, event=False)
    window = lambda frame: frame[frame[dd.TS] > pd.Timestamp("2024-07-16T01:00Z")]  # noqa: E731
    peak = held[dd.NET_GRID_FLOW].iloc[:4].max()
    assert peak > 3.0, "charging from the grid sets the month's peak well above the cap"
    assert (window(held)[dd.NET_GRID_FLOW] <= 0.3 + 1e-3).all(), "the event's cap held, the battery discharging"
    assert (window(held)[dd.BATTERY_POWER] < 0).any()
    # The same cap outside an event is raised to the month's peak: the battery holds at 0.
    assert (window(raised)[dd.BATTERY_POWER] == 0.0).all() and window(raised)[dd.NET_GRID_FLOW].max() > 0.3


def _one_step_policy(floor_kwh: float, charge_to_kwh: float) -> ReservePolicy:
    """A policy of one 15-minute step from 2024-06-12 00:00 UTC, the same limits in every state."""
    states = 1 * 1 + 2
    return ReservePolicy(start=pd.Timestamp("2024-06-12T00:00Z"), step_s=900,
                         floor_kwh=np.full((1, states), floor_kwh), charge_to_kwh=np.full((1, states), charge_to_kwh),
                         charging_steps=1, house_levels=(1.0,), house_kw=np.array([1.0]), one_session_a_day=True)


@pytest.mark.parametrize("command_kw", [math.nan, -1.5])
def test_a_battery_whose_charge_is_unread_is_asked_nothing_by_the_policy(command_kw):
    """A device whose SOC was not read (NaN) cannot be told where it stands against the floor:
    the policy asked it to cover the whole load, as if it held energy above the reserve kept
    for the car. It hands back to the command in force, as outside the policy's steps."""
    controller = Controller(ControlBattery(5.0, 0.95, 0.95), "UTC")
    policy, at = _one_step_policy(floor_kwh=6.0, charge_to_kwh=2.0), pd.Timestamp("2024-06-12T00:00Z")
    asked = controller.request_kw(policy, at, 2.0, 0.0, math.nan, 0.25, command_kw)
    assert asked == command_kw or (math.isnan(asked) and math.isnan(command_kw))
    # With its charge read, the same step covers the load only down to the floor.
    assert controller.request_kw(policy, at, 2.0, 0.0, 6.25, 0.25, command_kw) == pytest.approx(-0.95)
