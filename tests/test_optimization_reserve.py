"""The reserve policy's program and what it learns (cloud/optimization/reserve_dp.py,
reserve.py): the compiled recursion against a plain expectimax, the thresholds read off it,
and session statistics drawn from the past readings only."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.optimization import forecasters as fc
from cloud.optimization import reserve
from cloud.optimization.decision import DEFAULT_WEAR_COST_PER_KWH, battery_spec
from cloud.optimization.model import BatterySpec, HorizonInputs
from cloud.optimization.reserve_dp import backward, limits
from der_core.config import build_config
from der_core.control import ControlBattery, Controller, ReservePolicy

ZONE = "America/Los_Angeles"
#: Whole-kW instances: unit efficiencies and 0.25 kWh per kW-step keep every import on a
#: whole kW, so integer overshoot levels make the program's interpolation exact.
E = np.arange(5) * 0.25
LEVELS = np.arange(0.0, 25.0)


def _expectimax(p: dict) -> dict:
    """The expected cost-to-go by plain recursion over the session's moves, the house draws
    and every battery move, tracking the overshoot paid exactly."""
    T, K, M = len(p["house"]), len(p["cont"]), len(p["mult"])
    done = K * M + 1
    moves = np.arange(-2, 3)  # kW, at most 2 each way

    def successors(t: int, s: int) -> list[tuple[float, int]]:
        """(probability, state at t + 1) from state ``s`` at ``t``."""
        arrive = p["hazard"][t + 1]
        turns = p["new_day"][t + 1]
        waiting = [(arrive * p["mult_prob"][m], 1 + m) for m in range(M)] + [(1.0 - arrive, 0)]
        if s == 0:
            return waiting
        if s == done:
            return waiting if turns else [(1.0, done)]
        k, m = (s - 1) // M + 1, (s - 1) % M
        on = p["cont"][k - 1]
        stop = waiting if (turns or not p["one_a_day"]) else [(1.0, done)]
        return [(on, 1 + (min(k + 1, K) - 1) * M + m)] + [(q * (1.0 - on), x) for q, x in stop]

    @functools.cache
    def value(t: int, s: int, paid: float, i: int) -> float:
        if t == T:
            return -p["terminal"] * (E[i] - E[0])
        charging = 0 < s < done
        base = p["house"][t] * (p["mult"][(s - 1) % M] if charging else 1.0) + (p["charger"] if charging else 0.0) - p["pv"][t]
        total = 0.0
        for draw, prob in zip(p["resid"], p["resid_prob"], strict=True):
            best = math.inf
            for kw in moves:
                j = i + int(kw)
                if not 0 <= j < len(E):
                    continue
                grid = base + draw + kw
                cost = (p["price"][t] if grid > 0 else p["feed_in"][t]) * grid * 0.25 + p["wear"] * abs(kw) * 0.25
                over = grid - p["cap"] if p["window"][t] else -math.inf  # no import outside the window sets the peak
                cost += p["demand"] * max(over - paid, 0.0)
                after = sum(q * value(t + 1, x, max(paid, over, 0.0), j) for q, x in successors(t, s)) if t + 1 < T \
                    else value(T, 0, paid, j)
                best = min(best, cost + after)
            total += prob * best
        return total

    return {(s, i): value(0, s, 0.0, i) for s in range(done + 1) for i in range(len(E))}


def _solve(p: dict):
    return backward(
        np.asarray(p["house"], float), np.asarray(p["pv"], float), np.asarray(p["price"], float),
        np.asarray(p["feed_in"], float), np.asarray(p["hazard"], float), np.asarray(p["new_day"]),
        np.asarray(p["cont"], float), p["charger"], p["one_a_day"], E, 1.0, 1.0, 2.0, 2.0, 0.25, p["wear"], p["cap"],
        p["demand"], LEVELS, p["terminal"], np.asarray(p["mult"], float), np.asarray(p["mult_prob"], float),
        np.asarray(p["resid"], float), np.asarray(p["resid_prob"], float),
        np.asarray(p.get("window", [True] * len(p["house"])), dtype=bool),
    )


instances = st.fixed_dictionaries({
    "house": st.lists(st.integers(0, 3), min_size=4, max_size=4),
    "pv": st.lists(st.integers(0, 2), min_size=4, max_size=4),
    "price": st.lists(st.sampled_from([0.1, 0.3, 0.5]), min_size=4, max_size=4),
    "feed_in": st.lists(st.sampled_from([0.0, 0.05]), min_size=4, max_size=4),
    "hazard": st.lists(st.sampled_from([0.0, 0.3, 1.0]), min_size=4, max_size=4),
    "new_day": st.lists(st.booleans(), min_size=4, max_size=4),
    "cont": st.lists(st.sampled_from([0.0, 0.5, 0.9]), min_size=1, max_size=2),
    "charger": st.sampled_from([0.0, 3.0]),
    "one_a_day": st.booleans(),
    "wear": st.sampled_from([0.0, 0.02]),
    "cap": st.sampled_from([1.0, 3.0]),
    "demand": st.sampled_from([0.0, 2.0, 10.0]),
    "terminal": st.sampled_from([0.0, 0.2]),
    "mult": st.sampled_from([[1.0], [1.0, 2.0]]),
    "resid": st.sampled_from([[0.0], [-1.0, 1.0]]),
    "window": st.lists(st.booleans(), min_size=4, max_size=4),  # the tariff's demand window
})


@settings(max_examples=25, deadline=None)
@given(instances)
def test_the_program_equals_a_plain_expectimax_on_small_whole_kw_cases(p):
    p = p | {"mult_prob": [1.0 / len(p["mult"])] * len(p["mult"]), "resid_prob": [1.0 / len(p["resid"])] * len(p["resid"])}
    V, _ = _solve(p)
    for (s, i), expected in _expectimax(p).items():
        assert V[0, s, 0, i] == pytest.approx(expected, rel=1e-9, abs=1e-9), (s, i)


def _evening_car(hazard_at: int, demand: float) -> dict:
    """Eight steps of a 1 kW house, dearer in the first four; a 3 kW car arrives at step
    ``hazard_at`` for certain and charges through the end; imports above 2 kW pay ``demand``
    per kW."""
    hazard = [0.0] * 8
    hazard[hazard_at] = 1.0
    return {"house": [1] * 8, "pv": [0] * 8, "price": [0.5] * 4 + [0.3] * 4, "feed_in": [0.0] * 8, "hazard": hazard,
            "new_day": [False] * 8, "cont": [1.0], "charger": 3.0, "one_a_day": True, "wear": 0.0, "cap": 2.0,
            "demand": demand, "terminal": 0.0, "mult": [1.0], "mult_prob": [1.0], "resid": [0.0], "resid_prob": [1.0]}


def test_the_thresholds_keep_energy_back_only_when_a_session_will_need_it():
    p = _evening_car(hazard_at=4, demand=10.0)
    _, after = _solve(p)
    floor, charge_to = limits(after, np.asarray(p["price"], float), E, 1.0, 1.0, 0.0)
    # Before the car comes the battery keeps what the session's imports above the cap need
    # (2 kW over four steps: 2 kWh, more than it holds), dear as the house's load is then.
    assert (floor[:4, 0] == E[-1]).all()
    # With no demand charge nothing is kept for the car: the 1 kWh goes a quarter to each of
    # the four dear steps' load.
    _, free = _solve(_evening_car(hazard_at=4, demand=0.0))
    np.testing.assert_allclose(limits(free, np.asarray(p["price"], float), E, 1.0, 1.0, 0.0)[0][:4, 0], [0.75, 0.5, 0.25, 0.0])
    assert (charge_to <= floor + 1e-12).all()


def _sessions(days: int, start_hour: float, steps: int, house_kw: float = 1.0) -> pd.Series:
    """A flat house with a 7.2 kW car charging ``steps`` readings from ``start_hour`` (local)
    each weekday, nothing at weekends."""
    index = pd.date_range("2024-05-06", periods=days * 96, freq="15min", tz=ZONE) + pd.Timedelta(minutes=15)
    load = pd.Series(house_kw, index=index)
    local = index - pd.Timedelta(minutes=15)
    slot = (local.hour * 60 + local.minute) // 15
    first = int(start_hour * 4)
    charging = (slot >= first) & (slot < first + steps) & (local.day_of_week < 5)
    load[charging] += 7.2
    return load.tz_convert("UTC")


def test_the_session_model_learns_when_cars_arrive_and_how_long_they_charge():
    load = _sessions(28, 18.0, 8)
    issued = load.index[-1]
    model = reserve.SessionModel.from_readings(load, issued, 7.2, ZONE)
    weekday, weekend = model.arrival_hazard
    first_at = weekday * np.cumprod(np.r_[1.0, 1.0 - weekday[:-1]])  # the chance the day's first session starts there
    assert int(np.argmax(first_at)) == 72 and first_at.sum() == pytest.approx(0.98) and first_at[:60].sum() < 1e-3
    assert weekend.max() < 1e-6  # no weekend sessions seen
    # Eight-step sessions, smoothed (the longest seen is not the longest possible): all but
    # sure to go on through the fifth step, then less and less likely to.
    cont = model.continuation
    assert cont[:5].min() > 0.95 and cont[7] < 0.6 and cont[10] < 0.25 and (np.diff(cont[4:]) <= 1e-12).all()
    assert model.one_session_a_day and model.sessions_seen == 20
    np.testing.assert_allclose(model.multipliers, 1.0, atol=1e-9)  # the house runs as usual meanwhile


def test_the_session_model_reads_only_the_readings_before_the_policy():
    load = _sessions(35, 18.0, 8)
    issued = load.index[28 * 96]
    model = reserve.SessionModel.from_readings(load, issued, 7.2, ZONE)
    tampered = load.copy()
    tampered[tampered.index > issued] += 7.2
    again = reserve.SessionModel.from_readings(tampered, issued, 7.2, ZONE)
    for name in ("arrival_hazard", "continuation", "multipliers", "residuals_kw"):
        np.testing.assert_array_equal(getattr(model, name), getattr(again, name))


@pytest.mark.parametrize("capacity_kwh", [13.5, 40.0])
def test_a_fitted_policy_covers_the_day_ahead_within_the_battery(capacity_kwh):
    config = build_config({"seed": 42, "interval_seconds": 900, "battery": {"capacity_kwh": capacity_kwh}})
    issued = pd.Timestamp("2024-06-10T07:00Z")  # local midnight
    history = fc.site_actuals(config, pd.date_range(issued - pd.Timedelta(days=29), issued, freq="15min"))
    spec = battery_spec(config, None, DEFAULT_WEAR_COST_PER_KWH)
    policy = reserve.fit_policy(config, history[fc.LOAD], issued, spec, 7.0, pd.Timedelta(minutes=15))
    assert policy.start == issued and len(policy.house_kw) == 36 * 4 and policy.floor_kwh.shape == (144, policy.states)
    assert len(reserve.energy_levels(spec)) <= reserve.MAX_ENERGY_LEVELS + 1
    assert (policy.floor_kwh >= spec.min_kwh - 1e-9).all() and (policy.floor_kwh <= spec.max_kwh + 1e-9).all()
    assert (policy.charge_to_kwh <= policy.floor_kwh + 1e-9).all()
    # Something is kept back at some hour, and not at every hour.
    assert policy.floor_kwh[:, 0].max() > spec.min_kwh + 0.5 and policy.floor_kwh[:, 0].min() < spec.min_kwh + 0.5


def test_a_home_without_a_car_keeps_the_standing_reserve_under_the_programs_thresholds():
    """Its program prices arbitrage and never sees a car; a household's bursts outlast its
    independent house draws, so the guard's standing reserve is a floor at every hour, and
    above it the program's thresholds stand."""
    config = build_config({"seed": 42, "interval_seconds": 900, "home_load": {"has_ev": False}})
    issued = pd.Timestamp("2024-06-10T07:00Z")  # local midnight
    history = fc.site_actuals(config, pd.date_range(issued - pd.Timedelta(days=29), issued, freq="15min"))
    spec = battery_spec(config, None, DEFAULT_WEAR_COST_PER_KWH)
    step = pd.Timedelta(minutes=15)
    program = reserve.fit_policy(config, history[fc.LOAD], issued, spec, 4.0, step)
    standing = 3.0
    kept = reserve.fit_policy(config, history[fc.LOAD], issued, spec, 4.0, step, standing_kwh=standing)
    assert program.floor_kwh.min() < spec.min_kwh + standing  # the program alone spends below it
    np.testing.assert_allclose(kept.floor_kwh, np.maximum(program.floor_kwh, spec.min_kwh + standing))
    np.testing.assert_allclose(kept.charge_to_kwh, np.maximum(program.charge_to_kwh, spec.min_kwh + standing))


def _bursts(days: int, seed: int = 3) -> pd.Series:
    """A house at 0.5 kW that on two days in three runs a 4 kW oven for an hour, starting at a
    different quarter-hour between 17:00 and 20:00 each time: bursts no same-time average holds."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-03-04", periods=days * 96, freq="15min", tz=ZONE)
    load = pd.Series(0.5, index=index)
    for day in range(days):
        if rng.random() < 2 / 3:
            start = day * 96 + 68 + int(rng.integers(0, 13))
            load.iloc[start : start + 4] += 4.0
    return load.tz_convert("UTC")


def test_a_home_without_a_car_learns_its_own_bursts_as_its_sessions():
    load = _bursts(35)
    issued = load.index[-1]
    model, lift_kw = reserve.SessionModel.from_bursts(load, issued, ZONE)
    assert 12 <= model.sessions_seen <= 22  # two days in three of the four weeks with a week behind them
    assert 3.0 < lift_kw < 4.0  # 4 kW above 0.5, less the week's own average of the ovens at that time
    weekday = model.arrival_hazard[0]
    assert 17 * 4 - 3 <= int(np.argmax(weekday)) <= 20 * 4 and weekday[: 14 * 4].max() < 1e-3
    assert model.continuation[:2].min() > 0.9 and model.continuation[6] < 0.5  # an hour, four readings
    assert not model.one_session_a_day and model.residuals_kw.max() < reserve.BURST_KW


def test_a_home_without_a_car_keeps_energy_back_for_its_bursts_in_the_evening():
    """The same house planned with its bursts as sessions keeps more stored before its evening
    than with the house's step-to-step spread alone."""
    config = build_config({"seed": 42, "interval_seconds": 900, "home_load": {"has_ev": False}})
    load = _bursts(35)
    issued = load.index[-1] - pd.Timedelta(hours=load.index[-1].tz_convert(ZONE).hour)  # local midnight
    spec = battery_spec(config, None, DEFAULT_WEAR_COST_PER_KWH)
    step = pd.Timedelta(minutes=15)
    fitted = reserve.fit(config, load, issued, spec, 1.5, step)
    with_bursts, spread = fitted.policy, fitted.program
    plain = reserve.SessionModel.from_readings(load, issued, 0.0, config.timezone)
    house = np.asarray(spread[0])
    forecast = pd.DataFrame({fc.PV: spread[1], fc.IMPORT_PRICE: spread[2], fc.EXPORT_PRICE: spread[3]},
                            index=pd.date_range(issued + step, periods=len(house), freq=step))
    alone = reserve.solve(plain, forecast, house, spec, config, 1.5, step).policy
    local = forecast.index.tz_convert(ZONE)
    evening = (local.hour >= 15) & (local.hour < 17) & (local.day == local[0].day)
    assert (with_bursts.floor_kwh[evening, 0] > alone.floor_kwh[evening, 0] + 0.5).all()
    # The battery is told to tell bursts from the house load; the car's policy is not.
    assert with_bursts.burst_kw == reserve.BURST_KW and alone.burst_kw is None


@pytest.mark.parametrize("burst_kw", [2.0, None])
def test_a_burst_in_the_house_load_moves_the_battery_into_the_programs_burst_states(burst_kw):
    """Without a car the program's sessions are the household's bursts: a reading 2 kW or
    more above the policy's house forecast puts the next step in the burst's second step,
    and a quiet reading back in "no burst yet". A car's policy reads sessions from the
    charger only, so the same house load leaves it where it was."""
    start, steps = pd.Timestamp("2024-06-10T18:00Z"), 4
    floor = np.tile([4.5, 3.0, 1.0, 4.5], (steps, 1))  # columns: none yet, burst step 1, step 2+, done
    policy = ReservePolicy(start=start, step_s=900, floor_kwh=floor, charge_to_kwh=np.zeros((steps, 4)),
                           charging_steps=2, house_levels=(1.0,), house_kw=np.full(steps, 0.5), one_session_a_day=False,
                           burst_kw=burst_kw)
    controller = Controller(ControlBattery(5.0, 1.0, 1.0), "UTC")
    covered = []
    for i, house in enumerate([3.0, 0.6, 0.5]):  # a burst's reading (2.5 kW above the forecast), then quiet ones
        at = start + i * policy.step
        covered.append(-controller.request_kw(policy, at, 3.0, 0.0, 5.0, 0.25))
        controller.observe(policy, at, 0.0, 0.0, house)
    # 3 kW of load covered from 5 kWh down to the floor of the step's state: 4.5 kWh leaves
    # 2 kW for a quarter hour, 1 kWh all 3 kW.
    assert covered == ([2.0, 3.0, 2.0] if burst_kw else [2.0, 2.0, 2.0])


def test_the_plan_shown_under_a_policy_keeps_its_floor_and_defends_the_cap():
    steps, start = 16, pd.Timestamp("2024-06-10T00:00Z")
    battery = BatterySpec(capacity_kwh=10.0, initial_soc_percent=90.0, min_soc_percent=10.0, max_soc_percent=90.0,
                          max_charge_kw=5.0, max_discharge_kw=5.0)
    load = np.r_[np.full(8, 2.0), np.full(8, 9.0)]  # a quiet morning, then a car
    inputs = HorizonInputs(load, np.zeros(steps), np.full(steps, 0.3), np.zeros(steps), step_hours=0.25)
    floor = np.full((steps, 3), battery.min_kwh)
    floor[:8] = 6.0  # keep 6 kWh through the morning
    policy = ReservePolicy(start=start, step_s=900, floor_kwh=floor, charge_to_kwh=np.full((steps, 3), battery.min_kwh),
                           charging_steps=1, house_levels=(1.0,), house_kw=load, one_session_a_day=False)
    step_starts = pd.date_range(start, periods=steps, freq="15min")
    plan = reserve.expected_dispatch(policy, inputs, battery, step_starts, cap_kw=6.0, timezone="UTC")
    energy = np.asarray(plan.soc_percent) / 100.0 * battery.capacity_kwh
    assert energy[8] == pytest.approx(6.0)  # covered the morning's load down to the floor, no lower
    # Then the cap: 9 kW of load held to 6 kW while the energy lasts, never beyond the rates.
    held = np.asarray(plan.grid_kw[8:]) <= 6.0 + 1e-9
    assert held[:4].all() and not held.all()
    assert (np.abs(plan.battery_power_kw) <= 5.0 + 1e-9).all() and energy.min() >= battery.min_kwh - 1e-9


def test_the_program_charges_before_the_demand_window_to_hold_the_peak_in_it():
    """A 3 kW house, an empty 1 kWh battery and a 1 kW cap at a 10 per kW demand charge: with
    every step billed the peak cannot be held (20 in demand charge); with only the last two
    steps in the tariff's demand window, the battery charges at 2 kW in the first two (a 5 kW
    import no bill counts) and covers 2 kW of the window's load, so only energy is paid."""
    p = {"house": [3] * 4, "pv": [0] * 4, "price": [0.1] * 4, "feed_in": [0.0] * 4, "hazard": [0.0] * 4,
         "new_day": [False] * 4, "cont": [0.0], "charger": 0.0, "one_a_day": False, "wear": 0.0, "cap": 1.0,
         "demand": 10.0, "terminal": 0.0, "mult": [1.0], "mult_prob": [1.0], "resid": [0.0], "resid_prob": [1.0]}
    energy = 3 * 4 * 0.25 * 0.1
    assert _solve(p)[0][0, 0, 0, 0] == pytest.approx(energy + 20.0)
    assert _solve(p | {"window": [False, False, True, True]})[0][0, 0, 0, 0] == pytest.approx(energy)


def test_the_plan_shown_under_a_policy_defends_the_cap_only_in_the_demand_window():
    """A policy that keeps the battery full, 9 kW of load from the ninth step and a 6 kW cap:
    the battery covers the load above the cap only in the tariff's demand window (the last
    four steps). Before it no import sets the billed peak, and spending the battery there
    left less to hold the window's."""
    steps, start = 16, pd.Timestamp("2024-06-10T00:00Z")
    battery = BatterySpec(capacity_kwh=10.0, initial_soc_percent=90.0, min_soc_percent=10.0, max_soc_percent=90.0,
                          max_charge_kw=5.0, max_discharge_kw=5.0)
    load = np.r_[np.full(8, 2.0), np.full(8, 9.0)]
    inputs = HorizonInputs(load, np.zeros(steps), np.full(steps, 0.3), np.zeros(steps), step_hours=0.25,
                           demand_charge_per_kw=10.0, demand_window=np.arange(steps) >= 12)
    full = np.full((steps, 3), battery.max_kwh)
    policy = ReservePolicy(start=start, step_s=900, floor_kwh=full, charge_to_kwh=full, charging_steps=1,
                           house_levels=(1.0,), house_kw=load, one_session_a_day=False)
    plan = reserve.expected_dispatch(policy, inputs, battery, pd.date_range(start, periods=steps, freq="15min"),
                                     cap_kw=6.0, timezone="UTC")
    np.testing.assert_allclose(plan.grid_kw[:12], load[:12])
    np.testing.assert_allclose(plan.grid_kw[12:], 6.0)
