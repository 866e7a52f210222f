"""Tariffs as data: prices of every kind on the local clock (daylight-saving days included), the
German dynamic formula, the demand window in the bill and in the LP, the standing charge, the
simulated sites' time-of-use as one tariff, and tariff files (round trip, one-line errors)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cloud.optimization import BatterySpec, HorizonInputs, build_plan, solve_dispatch
from cloud.optimization.bill import grid_bill
from cloud.optimization.decision import Decision, Execution, cap_floor_kw, horizon_inputs
from cloud.optimization.forecasters import EXPORT_PRICE, IMPORT_PRICE, site_actuals, tariff_forecast
from cloud.optimization.guard import ArrivalWindows, GuardRule
from cloud.optimization.lp import lp_arrays
from cloud.optimization.planner import SitePlan
from cloud.optimization.reference import cost_without_battery, self_consumption_dispatch
from der_core import der_data as dd
from der_core.config import build_config
from der_core.errors import ConfigError
from der_core.site_file import build_site, declared_site, load_site_file, planning_config, site_row
from der_core.tariff import site_tariff, tou_tariff
from der_core.tariff_file import TARIFFS, build_tariff, load_tariff_file, tariff_to_dict, write_tariff_file
from der_physics import generator
from der_physics.grid_price import tou_period
from der_physics.tariff import demand_window, tariff_prices
from tests.test_site_file import SITE

ROOT = Path(__file__).resolve().parents[1]
BERLIN = "Europe/Berlin"
FIXED = {"kind": "fixed", "price": 0.25}
#: A weekend night rate from 01:00 to 03:00 and a weekday all-day rate; 0.10 otherwise.
NIGHT_TOU = {"kind": "tou", "otherwise": 0.10, "periods": [
    {"name": "night", "days": ["weekend"], "hours": [[1, 3]], "price": 0.40},
    {"days": ["weekday"], "hours": [[0, 24]], "price": 0.90},
]}
#: Exports earn 0.12 from 22:00 to 06:00 (across midnight) on any day, 0.05 otherwise.
OVERNIGHT_EXPORT = {"kind": "tou", "otherwise": 0.05, "periods": [
    {"days": ["weekday", "weekend", "holiday"], "hours": [[22, 6]], "price": 0.12},
]}
GERMAN_IMPORT = {"kind": "dynamic", "factor": 1.0, "vat": 0.19,
                 "adders": {"grid_fee": 0.0950, "electricity_tax": 0.0205, "levies": 0.0290, "margin": 0.0200}}
SPOT_EXPORT = {"kind": "dynamic", "factor": 1.0, "adder": 0.0, "minimum": 0.0}


def tariff(**fields):
    return build_tariff({"import_price": FIXED, "export_price": {"kind": "fixed", "price": 0.08}, **fields})


def local_day(date: str) -> pd.DatetimeIndex:
    """The 15-minute instants of one local Berlin day."""
    start = pd.Timestamp(date, tz=BERLIN)
    return pd.date_range(start, start + pd.DateOffset(days=1), freq="15min", inclusive="left").tz_convert("UTC")


# Both days are Sundays: 2024-03-31 has 23 hours (02:00-03:00 never happens), 2024-10-27 has
# 25 (02:00-03:00 happens twice). Counts are of the 15-minute instants in each local range.
DST_DAYS = [
    pytest.param("2024-03-31", 92, 4, 28, id="23h"),
    pytest.param("2024-10-27", 100, 12, 36, id="25h"),
]


@pytest.mark.parametrize(("date", "steps", "in_1_to_3", "in_22_to_6"), DST_DAYS)
def test_fixed_and_time_of_use_prices_follow_the_local_clock_on_a_daylight_saving_day(date, steps, in_1_to_3, in_22_to_6):
    instants = local_day(date)
    imports, exports = tariff_prices(tariff(import_price=NIGHT_TOU, export_price=OVERNIGHT_EXPORT), instants, BERLIN, "DE")
    assert len(instants) == steps
    assert (imports == 0.40).sum() == in_1_to_3 and (imports == 0.10).sum() == steps - in_1_to_3
    assert (exports == 0.12).sum() == in_22_to_6 and (exports == 0.05).sum() == steps - in_22_to_6
    fixed, _ = tariff_prices(tariff(), instants, BERLIN, "DE")
    assert fixed.tolist() == [0.25] * steps


@pytest.mark.parametrize("minutes", [15, 60])
def test_a_step_is_priced_by_the_period_in_force_over_the_interval_it_ends(minutes):
    """A step's time is the end of its interval, as a reading's is: with a 16:00-21:00 peak,
    the interval ending 16:00 is still shoulder, the one ending 21:00 still peak, as the
    utility bills them; priced at their end instants, a plan discharged one step early and
    stopped one step before the peak ended. The demand window and the simulator's readings
    follow the same clock."""
    config = build_config({"timezone": "America/Los_Angeles", "grid_price": {"demand_charge": 10.0}})
    step = pd.Timedelta(minutes=minutes)
    ends = pd.date_range("2024-07-10T15:00", "2024-07-10T22:00", freq=step, tz="America/Los_Angeles")  # a Wednesday
    imports, _ = tariff_prices(site_tariff(config), ends, config.timezone, config.country)
    peak = pd.Series(imports == config.grid_price.peak_price, index=ends.strftime("%H:%M"))
    assert not peak["16:00"] and peak[(pd.Timestamp("2024-07-10T16:00") + step).strftime("%H:%M")] and peak["21:00"]
    assert not peak[(pd.Timestamp("2024-07-10T21:00") + step).strftime("%H:%M")]
    assert peak.sum() == 5 * 60 // minutes
    # a day's last interval ends at midnight and is priced on the day it lies in
    midnight = pd.DatetimeIndex([pd.Timestamp("2024-07-13T00:00", tz="America/Los_Angeles")])  # Friday's last
    friday, = tariff_prices(tou_tariff(0.1, 0.2, 0.3, 0.05), midnight, config.timezone, config.country)[0]
    assert friday == 0.1  # off-peak at 23:45-24:00 on a weekday
    simulated = config.model_copy(update={"interval_seconds": minutes * 60})
    readings = pd.concat(generator.historical([simulated], ends[0], ends[-1] + step))
    by_time = dict(zip(readings[dd.TS].dt.tz_convert(config.timezone).dt.strftime("%H:%M"), readings[dd.TOU_PERIOD]))
    assert by_time["16:00"] == "shoulder" and by_time["21:00"] == "peak"


@pytest.mark.parametrize(("date", "steps", "in_1_to_3", "in_22_to_6"), DST_DAYS)
def test_dynamic_prices_follow_the_wholesale_price_step_by_step(date, steps, in_1_to_3, in_22_to_6):
    instants = local_day(date)
    wholesale = np.linspace(-0.05, 0.20, steps)
    wholesale[7] = np.nan
    dynamic = tariff(import_price={"kind": "dynamic", "factor": 2.0, "adders": {"fee": 0.1}, "vat": 0.5},
                     export_price={"kind": "dynamic", "factor": 0.5, "adder": 0.01, "minimum": 0.0})
    imports, exports = tariff_prices(dynamic, instants, BERLIN, "DE", wholesale)
    known = ~np.isnan(wholesale)
    np.testing.assert_allclose(imports[known], (2.0 * wholesale[known] + 0.1) * 1.5)
    np.testing.assert_allclose(exports[known], np.maximum(0.5 * wholesale[known] + 0.01, 0.0))
    assert np.isnan(imports[7]) and np.isnan(exports[7])  # unknown stays unknown, the floor included
    assert np.isnan(tariff_prices(dynamic, instants, BERLIN, "DE")[0]).all()


def test_a_german_dynamic_tariff_reproduces_the_hand_computed_price():
    # (spot + 0.0950 + 0.0205 + 0.0290 + 0.0200) * 1.19 at a spot of 85 and -10 EUR/MWh.
    german = tariff(import_price=GERMAN_IMPORT, export_price=SPOT_EXPORT, currency="EUR")
    instants = pd.date_range("2024-05-08 10:00", periods=3, freq="1h", tz="UTC")
    imports, exports = tariff_prices(german, instants, BERLIN, "DE", np.array([0.0850, -0.0100, np.nan]))
    np.testing.assert_allclose(imports[:2], [0.296905, 0.183855])
    np.testing.assert_allclose(exports[:2], [0.0850, 0.0])
    assert np.isnan(imports[2]) and np.isnan(exports[2])


def test_a_public_holiday_is_its_own_kind_of_day():
    holiday = local_day("2024-10-03") + pd.Timedelta(minutes=15)  # the intervals of German Unity Day, a Thursday
    rates = tariff(import_price={"kind": "tou", "otherwise": 0.1, "periods": [
        {"days": ["holiday"], "hours": [[0, 24]], "price": 0.5}, {"days": ["weekday"], "hours": [[0, 24]], "price": 0.9}]})
    assert set(tariff_prices(rates, holiday, BERLIN, "DE")[0]) == {0.5}
    assert set(tariff_prices(rates, holiday, BERLIN, "FR")[0]) == {0.9}  # not a holiday in France


def test_the_simulated_sites_time_of_use_is_the_default_tariff():
    config = build_config({"seed": 4})  # America/Los_Angeles, US holidays
    stamps = ["2024-07-03 03:00", "2024-07-03 12:00", "2024-07-03 18:00", "2024-07-03 22:30",
              "2024-07-04 18:00", "2024-07-06 18:00"]  # Wednesday night, day, evening, late; July 4th; Saturday
    instants = pd.DatetimeIndex(stamps).tz_localize(config.timezone).tz_convert("UTC")
    imports, exports = tariff_prices(site_tariff(config), instants, config.timezone, config.country)
    assert imports.tolist() == [0.08, 0.15, 0.30, 0.15, 0.15, 0.15]
    np.testing.assert_allclose(exports, [0.04, 0.05, 0.08, 0.05, 0.05, 0.05])
    assert site_tariff(config) == TARIFFS["default_tou"]
    assert tou_period(np.array([3.0, 12.0, 18.0, 22.5, 18.0, 18.0]), np.array([2, 2, 2, 2, 3, 5]),
                      np.array([False] * 4 + [True, False])).tolist() == [0, 1, 2, 1, 1, 1]


def test_the_simulated_price_is_the_tariff_plus_its_noise():
    """Without real-time variation and spikes the simulator bills exactly the tariff, for a year."""
    quiet = build_config({"seed": 4, "grid_price": {"volatility": 0.0, "spike_probability_per_day": 0.0,
                                                    "peak_price": 0.05, "base_feed_in_tariff": 0.04}})
    instants = pd.date_range("2024-01-01", "2025-01-01", freq="15min", tz="UTC", inclusive="left")
    truth = site_actuals(quiet, instants)
    forecast = tariff_forecast(quiet, instants, np.zeros(len(instants)))
    np.testing.assert_array_equal(truth[IMPORT_PRICE].to_numpy(), forecast[IMPORT_PRICE].to_numpy())
    np.testing.assert_array_equal(truth[EXPORT_PRICE].to_numpy(), forecast[EXPORT_PRICE].to_numpy())
    assert forecast[EXPORT_PRICE].max() == 0.05  # the peak's feed-in (0.064) is capped at its price


# --- demand window and standing charge -----------------------------------------------------------


def test_a_peak_outside_the_demand_window_costs_no_demand_charge():
    grid = np.array([5.0, 1.0, 2.0, 1.5, -1.0])
    window = np.array([False, True, True, True, True])
    windowed = grid_bill(grid, 0.2, 0.05, 1.0, demand_charge_per_kw=10.0, demand_window=window)
    everywhere = grid_bill(grid, 0.2, 0.05, 1.0, demand_charge_per_kw=10.0)
    assert (windowed.peak_kw, windowed.demand) == (2.0, 20.0) and (everywhere.peak_kw, everywhere.demand) == (5.0, 50.0)
    np.testing.assert_array_equal(windowed.energy, everywhere.energy)


def test_the_demand_window_is_read_on_the_local_clock():
    evening = tariff(demand_charge_per_kw=8.0, demand_window={"days": ["weekend"], "hours": [[1, 3]]})
    for date, _, in_window, _ in (p.values for p in DST_DAYS):
        assert demand_window(evening, local_day(date), BERLIN, "DE").sum() == in_window
    assert demand_window(tariff(demand_charge_per_kw=8.0), local_day("2024-03-31"), BERLIN, "DE") is None


def window_case(window: np.ndarray | None) -> tuple[HorizonInputs, BatterySpec]:
    """Eight hours of 3 kW load at a flat price; the battery starts empty and may end so."""
    inputs = HorizonInputs(np.full(8, 3.0), np.zeros(8), np.full(8, 0.20), np.zeros(8), step_hours=1.0,
                           demand_charge_per_kw=10.0, demand_window=window)
    battery = BatterySpec(capacity_kwh=10.0, max_charge_kw=3.0, max_discharge_kw=3.0, charge_efficiency=1.0,
                          discharge_efficiency=1.0, min_soc_percent=0.0, max_soc_percent=100.0, initial_soc_percent=0.0,
                          wear_cost_per_kwh=0.01)
    return inputs, battery


def test_the_plan_moves_the_peak_out_of_the_demand_window():
    window = np.arange(8) >= 4
    plan = solve_dispatch(*window_case(window))
    # 10 kWh bought in the first four hours cover all but 2 kWh of the window's 12.
    assert plan.peak_import_kw == pytest.approx(0.5, abs=1e-6) and plan.costs.demand == pytest.approx(5.0, abs=1e-5)
    assert plan.import_kw[:4].sum() == pytest.approx(22.0, abs=1e-5) and plan.import_kw[:4].max() > 5.0
    unwindowed = solve_dispatch(*window_case(None))
    assert unwindowed.peak_import_kw == pytest.approx(3.0, abs=1e-6)  # charging would only raise the one peak


@pytest.mark.parametrize("execution", [Execution.CAPPED, Execution.GUARDED])
def test_the_import_cap_sent_with_a_plan_binds_only_in_the_demand_window(execution):
    """The plan charges at up to 6 kW before the window to hold its peak in it to 0.5 kW; its
    cap, 0.5 kW on every step, told the battery to hold the grid there before the window as
    well, undoing the very charging the plan was made of. Outside the window no import sets
    the billed peak, so no cap is sent there."""
    window = np.arange(8) >= 4
    inputs, battery = window_case(window)
    plan = solve_dispatch(inputs, battery)
    _, caps = Decision(plan, inputs).commands(0.0, 0.0, execution)
    assert np.isnan(caps[~window]).all()
    assert caps[window] == pytest.approx(np.full(4, plan.peak_import_kw))
    assert (plan.import_kw[window] <= caps[window] + 1e-6).all()


def test_a_guarded_plans_cap_binds_only_in_the_demand_window():
    """Under a reserve policy the plan sends the month's cap (the guard's, 3 kW here) and no
    power command; that cap went on every step, so the gateway held the grid to it before the
    window too, where the policy charges to hold the window's peak and no import is billed."""
    window = np.arange(8) >= 4
    inputs, battery = window_case(window)
    inputs = dataclasses.replace(inputs, peak_so_far_kw=3.0)
    plan = solve_dispatch(inputs, battery)
    steps = pd.date_range("2024-05-08T12:00Z", periods=8, freq="1h")
    site = SitePlan(device_id="home-1", timezone="UTC", issued_at=steps[0], step_starts=steps, forecaster="test",
                    state_source="simulator", inputs=inputs, battery=battery, decision=Decision(plan, inputs),
                    no_battery=cost_without_battery(inputs), self_consumption=self_consumption_dispatch(inputs, battery),
                    guard=GuardRule(3.0, 0.0, ArrivalWindows.any_hour()), policy_plan=plan)
    power, caps = site.commands()
    assert np.isnan(power).all() and np.isnan(caps[~window]).all()
    np.testing.assert_allclose(caps[window], 3.0)


def test_the_cap_floor_counts_only_the_imports_the_demand_window_bills():
    """The floor under every cap is the peak a full battery could have held on recent days; a
    car charging at 8 kW each night outside the 17:00-21:00 window sets no billed peak, so it
    must not lift the floor of a cap that binds only in the window."""
    window = {"import_price": {"kind": "fixed", "price": 0.3}, "export_price": {"kind": "fixed", "price": 0.05},
              "demand_charge_per_kw": 10.0, "demand_window": {"days": ["weekday", "weekend", "holiday"],
                                                              "hours": [[17, 21]]}}
    config = build_config({"timezone": "America/Los_Angeles", "tariff": window})
    instants = pd.date_range("2024-06-01T00:15", periods=96 * 14, freq="15min", tz=config.timezone)
    hour = (instants - pd.Timedelta(minutes=15)).hour
    net = pd.Series(np.where((hour >= 1) & (hour < 4), 8.0, np.where((hour >= 17) & (hour < 21), 2.0, 1.0)), index=instants)
    spec = BatterySpec.from_config(config.battery)
    billed = cap_floor_kw(net, instants[-1], spec, config)
    everything = cap_floor_kw(net, instants[-1], spec)
    assert billed == pytest.approx(0.0, abs=1e-6) and everything > 3.0


def test_the_lp_is_the_same_without_a_window_and_frees_only_the_peak_rows_outside_one():
    none, battery = window_case(None)
    everywhere = lp_arrays(dataclasses.replace(none, demand_window=np.ones(8, dtype=bool)), battery)
    base = lp_arrays(none, battery)
    for a, b in zip(base[1:], everywhere[1:], strict=True):
        np.testing.assert_array_equal(a, b)
    assert (base[0] != everywhere[0]).nnz == 0
    partial = lp_arrays(dataclasses.replace(none, demand_window=np.arange(8) >= 4), battery)
    assert (partial[0] != base[0]).nnz == 0
    freed = np.flatnonzero(partial[5] != base[5])
    assert freed.tolist() == list(range(16, 20)) and np.isinf(partial[5][freed]).all()  # peak rows of steps 0-3


def test_the_standing_charge_adds_days_times_the_charge_and_changes_no_decision():
    three_days = np.tile([1.0, -0.5, 2.0, 0.0], 72)  # 288 quarter hours
    bill = grid_bill(three_days, 0.3, 0.1, 0.25, demand_charge_per_kw=4.0, standing_charge_per_day=0.45)
    assert bill.standing == pytest.approx(1.35)
    assert bill.total == pytest.approx(bill.energy.sum() + bill.demand + 1.35)
    inputs, battery = window_case(np.arange(8) >= 4)
    charged = dataclasses.replace(inputs, standing_charge_per_day=2.4)  # 8 hours: 0.8
    plain, standing = solve_dispatch(inputs, battery), solve_dispatch(charged, battery)
    np.testing.assert_allclose(standing.battery_power_kw, plain.battery_power_kw, atol=1e-9)
    assert standing.costs.standing == pytest.approx(0.8) and standing.total_cost == pytest.approx(plain.total_cost + 0.8)
    assert standing.objective == pytest.approx(standing.valued_cost, abs=1e-6)
    idle = build_plan(charged, battery, np.zeros(8), np.zeros(8), status="idle")
    assert idle.costs.standing == pytest.approx(0.8)


def test_a_site_plans_with_its_tariffs_window_and_standing_charge(tmp_path):
    site_tariff_data = tariff_to_dict(tariff(demand_charge_per_kw=8.0, standing_charge_per_day=0.3,
                                             demand_window={"days": ["weekday"], "hours": [[17, 20]]}))
    config = planning_config(build_site({**SITE, "tariff": site_tariff_data}))
    instants = pd.date_range("2024-05-08 00:15", periods=96, freq="15min", tz=BERLIN).tz_convert("UTC")
    frame = pd.DataFrame({"load_kw": 1.0, "pv_kw": 0.0, IMPORT_PRICE: 0.25, EXPORT_PRICE: 0.08, "carbon_g_per_kwh": 300.0},
                         index=instants)
    inputs = horizon_inputs(frame, config, 0.25)
    assert (inputs.demand_charge_per_kw, inputs.standing_charge_per_day) == (8.0, 0.3)
    assert inputs.demand_window.sum() == 12  # 17:00 to 19:45 on a Wednesday


@pytest.mark.parametrize(("currency", "shown"), [(None, "GBP"), ("GBP", "GBP")])
def test_a_site_configured_with_a_tariff_in_pounds_shows_its_money_in_pounds(currency, shown):
    """A configuration in Germany with a tariff priced in GBP showed its plans' money in EUR,
    the country's, though every bill adds the tariff's prices up unconverted."""
    data = {"country": "DE", "timezone": BERLIN, "currency": currency,
            "tariff": {"currency": "GBP", "import_price": {"kind": "fixed", "price": 0.25},
                       "export_price": {"kind": "fixed", "price": 0.05}}}
    assert build_config(data).currency_code == shown


def test_a_site_configured_in_another_currency_than_its_tariff_is_one_line():
    data = {"country": "DE", "currency": "EUR", "tariff": {"currency": "GBP", "import_price": {"kind": "fixed", "price": 0.25},
                                                            "export_price": {"kind": "fixed", "price": 0.05}}}
    with pytest.raises(ConfigError, match="the site's currency is EUR and its tariff's GBP; expected one currency"):
        build_config(data)


# --- tariff files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_tariff_file_round_trips(tmp_path, suffix):
    original = tariff(import_price=GERMAN_IMPORT, export_price=SPOT_EXPORT, currency="EUR", standing_charge_per_day=0.4,
                      demand_charge_per_kw=3.0, demand_window={"days": ["weekday"], "hours": [[17, 20]]}, name="x")
    path = write_tariff_file(original, tmp_path / f"tariff{suffix}")
    assert load_tariff_file(path) == original
    for default in TARIFFS.values():
        assert load_tariff_file(write_tariff_file(default, tmp_path / f"default{suffix}")) == default


def test_the_example_tariff_file_is_valid():
    example = load_tariff_file(ROOT / "examples" / "tariff-dynamic-de.json")
    assert example.import_price.kind == "dynamic" and example.currency == "EUR"


def test_a_site_file_names_its_tariff_file_relative_to_itself(tmp_path):
    folder = tmp_path / "home"
    folder.mkdir()
    write_tariff_file(tariff(import_price=GERMAN_IMPORT, export_price=SPOT_EXPORT), folder / "tariff.json")
    (folder / "site.json").write_text(json.dumps({**SITE, "tariff": "tariff.json"}))
    site = load_site_file(folder / "site.json")
    assert site.tariff == load_tariff_file(folder / "tariff.json")
    assert declared_site(site_row(site)) == site  # the store keeps the tariff itself, not its path
    old = build_site({**SITE, "tariff": "default_tou"})
    assert old.tariff == TARIFFS["default_tou"] == tou_tariff(0.08, 0.15, 0.30, 0.05, 10.0)


@pytest.mark.parametrize(("data", "message"), [
    ({"import_price": {"kind": "spot"}}, "import_price.kind: got 'spot'; expected one of 'fixed', 'tou', 'dynamic'"),
    ({"import_price": {**GERMAN_IMPORT, "vat": 19}}, "import_price.dynamic.vat: Input should be less than or equal to 1"),
    ({"import_price": {**NIGHT_TOU, "periods": [{"days": ["weekend"], "hours": [[16]], "price": 0.3}]}},
     "import_price.tou.periods.0.hours: range 0 is [16.0]; expected [from, to]"),
    ({"import_price": {**NIGHT_TOU, "periods": [{"days": ["monday"], "hours": [[1, 2]], "price": 0.3}]}},
     "import_price.tou.periods.0.days.0: Input should be 'weekday', 'weekend' or 'holiday'"),
    ({"import_price": {**NIGHT_TOU, "periods": [{"days": ["weekday"], "hours": [[24, 0]], "price": 0.3}]}},
     "import_price.tou.periods.0.hours: range 0 is [24.0, 0.0], which holds no hour; expected [0, 24]"),
    ({"import_price": {**NIGHT_TOU, "periods": [{"days": ["weekday"], "hours": [[h / 5, h / 5 + 0.1] for h in range(97)],
                                                 "price": 0.3}]}},
     "import_price.tou.periods.0.hours: List should have at most 96 items after validation, not 97"),
    ({"demand_charge_per_kw": 5, "demand_window": {"days": ["weekday"], "hours": [[24, 0]]}},
     "demand_window.hours: range 0 is [24.0, 0.0], which holds no hour"),
    ({"export_price": {**SPOT_EXPORT, "minimum": "0"}}, "export_price.dynamic.minimum: Input should be a valid number"),
    ({"demand_window": {"days": ["weekday"], "hours": [[17, 20]]}}, "demand_window is given but demand_charge_per_kw is 0"),
    ({"standing_charge": 0.3}, "standing_charge: unknown field"),
    ({"currency": "eur"}, "currency: 'eur' is not a currency code; expected it in capitals, 'EUR' (ISO 4217)"),
    ({"currency": "UDS"}, "currency: 'UDS' is not a currency code; expected an ISO 4217 code such as 'USD'"),
    ({"currency": "BTC"}, "currency: 'BTC' is not a currency code; expected an ISO 4217 code such as 'USD'"),
    ({"export_price": None}, "export_price: expected an object, got null"),
])
def test_a_bad_tariff_file_is_one_line_naming_the_field(tmp_path, data, message):
    path = tmp_path / "tariff.json"
    path.write_text(json.dumps({"import_price": FIXED, "export_price": {"kind": "fixed", "price": 0.08}, **data}))
    with pytest.raises(ConfigError) as caught:
        load_tariff_file(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


@pytest.mark.parametrize(("name", "content", "message"), [
    ("t.yaml", "import_price: [unclosed\n", "malformed YAML at line 2"),
    ("t.json", "{\"import_price\": ", "malformed JSON at line 1"),
    ("missing.json", None, "tariff file not found"),
])
def test_an_unreadable_tariff_file_is_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        load_tariff_file(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("value", "message"), [
    ("flat", "tariff: unknown tariff 'flat'; expected one of default_tou, a tariff file"),
    ({"off_peak_price": 0.1, "shoulder_price": 0.2, "peak_price": -1, "base_feed_in_tariff": 0.05},
     "tariff: peak_price: Input should be greater than or equal to 0"),
    ({"import_price": FIXED}, "tariff.export_price: Field required"),
    ({"export_price": FIXED, "demand_charge": 5.0}, "tariff.import_price: Field required"),
])
def test_a_bad_tariff_in_a_site_file_is_one_line_naming_the_field(value, message):
    with pytest.raises(ConfigError) as caught:
        build_site({**SITE, "tariff": value}, source="site.json")
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_a_bad_tariff_file_named_by_a_site_file_names_the_tariff_file(tmp_path):
    (tmp_path / "tariff.json").write_text(json.dumps({"import_price": {"kind": "fixed", "price": "high"}}))
    (tmp_path / "site.json").write_text(json.dumps({**SITE, "tariff": "tariff.json"}))
    with pytest.raises(ConfigError, match=r"tariff\.json: import_price\.fixed\.price: Input should be a valid number"):
        load_site_file(tmp_path / "site.json")


_YAML_PRICES = "import_price: {kind: fixed, price: 0.30}\nexport_price: {kind: fixed, price: 0.08}\n"
_YAML_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]\n" for a, b in zip("abcdefg", "bcdefgh"))


@pytest.mark.parametrize(("content", "message"), [
    (_YAML_PRICES + "import_price: {kind: fixed, price: 0.90}\n", "field 'import_price' is written twice"),
    ("import_price: {kind: fixed, price: 0.30, price: 0.90}\nexport_price: {kind: fixed, price: 0.08}\n",
     "field 'price' is written twice"),
    (_YAML_BOMB + _YAML_PRICES, "an alias (*a) at line 2"),
    ("[" * 5000 + "]" * 5000, "nested too deeply to read"),
    (b"name: '" + b"a" * (16 * 2**20) + b"'\n" + _YAML_PRICES.encode(), "larger than 16 MiB"),
    ("", "expected a mapping of the tariff's fields at the top level, got an empty file"),
    ("- 0.3\n", "expected a mapping of the tariff's fields at the top level, got a list"),
])
def test_a_yaml_tariff_file_is_read_as_strictly_as_a_json_one(tmp_path, content, message):
    """A YAML reader keeps the last of a repeated key, expands aliases without bound and
    recurses into any nesting; a tariff file is refused for each in one line, as JSON is."""
    path = tmp_path / "tariff.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        load_tariff_file(path)
    text = str(caught.value)
    assert message in text and "\n" not in text and len(text) < 300, text
    assert time.perf_counter() - started < 5
