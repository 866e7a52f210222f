"""The backtest's findings: per-strategy metrics, a Markdown report and PNG plots of a sample day.

Definitions (also printed in the report):

* bill = energy (imports at the price minus exports at the feed-in tariff) + each billing
  month's demand charge on its peak import + battery wear per kWh of throughput;
* stored = the energy the battery gained over each month (negative where it spent what it
  began with), valued as a plan values what it leaves: the month's cheapest import price
  times the discharge efficiency;
* savings = the no-battery bill minus the strategy's bill less what it stored, so emptying
  the battery is never a saving; capture = savings as a share of the perfect-foresight
  savings;
* self-consumption = share of PV energy used on site (1 - exports / PV; exports of
  battery energy count against it);
* cycles = battery throughput / (2 x capacity), equivalent full cycles;
* emissions = imported energy x the grid's carbon intensity at the time (exports not credited).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cloud.evaluation import backtest as bt
from cloud.optimization import forecasters as fc
from cloud.optimization import reserve, sessions
from cloud.optimization.bill import grid_bill
from der_core.tariff import Tariff, site_tariff

LABELS = {
    bt.NO_BATTERY: "no battery",
    bt.SELF_CONSUMPTION: "self-consumption rule",
    bt.TOU: "TOU arbitrage rule",
    bt.MPC: "MPC (forecasts of the time)",
    bt.PERFECT: "perfect foresight (upper bound)",
}


def savings_and_capture(no_battery: float, bill: float, perfect: float) -> tuple[float, float]:
    """A bill's savings against no battery, and their share of perfect foresight's (NaN when
    perfect foresight saves nothing)."""
    savings, best = no_battery - bill, no_battery - perfect
    return savings, savings / best if best > 0 else float("nan")


def metrics(result: bt.BacktestResult) -> pd.DataFrame:
    """One row per strategy, in the order of :data:`backtest.STRATEGIES`."""
    actuals, step_h = result.actuals, result.settings.step_hours
    baseline, perfect = result.runs[bt.NO_BATTERY].valued_total, result.runs[bt.PERFECT].valued_total
    pv_kwh = float(actuals[fc.PV].sum() * step_h)
    capacity = result.config.battery.capacity_kwh
    rows = []
    for name, run in result.runs.items():
        imports, exports = np.maximum(run.grid_kw, 0.0), np.maximum(-run.grid_kw, 0.0)
        savings, capture = savings_and_capture(baseline, run.valued_total, perfect)
        rows.append({
            "strategy": name,
            "bill": run.bill.total,
            "stored": run.stored,
            "energy": run.bill.energy,
            "demand": run.bill.demand,
            "wear": run.bill.wear,
            "savings": savings,
            "capture": capture,
            "peak_import_kw": float(imports.max(initial=0.0)),
            "self_consumption": 1.0 - float(exports.sum() * step_h) / pv_kwh if pv_kwh > 0 else float("nan"),
            "cycles": run.throughput_kwh / (2 * capacity) if capacity > 0 else 0.0,
            "emissions_kg": float((imports * actuals[fc.CARBON].to_numpy()).sum() * step_h / 1000.0),
            "failed_plans": run.failed_plans,
        })
    return pd.DataFrame(rows).set_index("strategy")


def by_month(result: bt.BacktestResult) -> pd.DataFrame:
    """Each billing month's bill less what the battery stored over it, under every strategy
    (one column each, in the order of :data:`backtest.STRATEGIES`), then the MPC's savings
    and capture: the demand charge is paid month by month, so a battery's value differs from
    month to month as the peaks do, and each month starts with what the one before left in
    the battery, which the stored value accounts for. The months are those each run was billed
    by (``StrategyRun.monthly_bills``), so they add up to the whole run's."""
    actuals, settings, config = result.actuals, result.settings, result.config
    months, steps = np.unique(bt.billing_months(actuals.index, settings.step, config.timezone), return_counts=True)
    rows = []
    for month, count in zip(months, steps, strict=True):
        label = bt.month_label(month)
        bills = {name: run.valued_month(label) for name, run in result.runs.items()}
        savings, capture = savings_and_capture(bills[bt.NO_BATTERY], bills[bt.MPC], bills[bt.PERFECT])
        rows.append({"month": label, "days": float(count * settings.step_hours / 24), **bills, "mpc_savings": savings,
                     "mpc_capture": capture})
    return pd.DataFrame(rows).set_index("month")


def _charges(tariff: Tariff) -> str:
    """The tariff's demand and standing charges, as the report's header says them."""
    window = "" if tariff.demand_window is None else \
        f" in {', '.join(tariff.demand_window.days)} hours {tariff.demand_window.hours}"
    standing = f"; standing charge {tariff.standing_charge_per_day:g} per day" if tariff.standing_charge_per_day else ""
    return f"demand charge {tariff.demand_charge_per_kw:g} per kW of each month's peak import{window}{standing}."


def sample_day(result: bt.BacktestResult) -> pd.Timestamp:
    """The local day where perfect foresight beats the MPC by the most: the most instructive."""
    local = (result.actuals.index - result.settings.step).tz_convert(result.config.timezone)
    days = local.normalize()
    cost = {name: pd.Series(_step_cost(result, run), index=days).groupby(level=0).sum() for name, run in result.runs.items()}
    gap = cost[bt.MPC] - cost[bt.PERFECT]
    return gap.idxmax()


def _step_cost(result: bt.BacktestResult, run: bt.StrategyRun) -> np.ndarray:
    a = result.actuals
    return grid_bill(run.grid_kw, a[fc.IMPORT_PRICE].to_numpy(), a[fc.EXPORT_PRICE].to_numpy(), result.settings.step_hours).energy


def plot_day(result: bt.BacktestResult, day: pd.Timestamp, path: Path) -> Path:
    """Prices, load and PV, SOC and grid flow per strategy over one local day."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    local = (result.actuals.index - result.settings.step).tz_convert(result.config.timezone)
    rows = local.normalize() == day
    x = local[rows].tz_localize(None)
    a = result.actuals[rows]
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    axes[0].step(x, a[fc.IMPORT_PRICE], where="post", label="import price")
    axes[0].step(x, a[fc.EXPORT_PRICE], where="post", label="feed-in tariff")
    axes[0].set_ylabel("per kWh")
    axes[1].plot(x, a[fc.LOAD], label="load")
    axes[1].plot(x, a[fc.PV], label="PV")
    axes[1].set_ylabel("kW")
    for name, run in result.runs.items():
        if name != bt.NO_BATTERY:
            axes[2].plot(x, run.soc_percent[rows], label=LABELS[name])
        axes[3].plot(x, run.grid_kw[rows], label=LABELS[name], linewidth=1)
    axes[2].set_ylabel("SOC %")
    axes[3].set_ylabel("grid kW (+ import)")
    for ax in axes:
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{result.config.device_id}, {day:%Y-%m-%d} ({result.config.timezone})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


MPC_NOTE = (
    "How the MPC plans, and why it falls short of the upper bound: each plan is one LP over the naive forecaster's "
    "load scenarios (with a car: the charging sessions and house-load residuals of recent days of the same kind, "
    "a session under way continuing as long as past ones did; without one, the house's own forecast alone) whose "
    "first hour is decided once and whose peak covers every scenario; while a car charges, the battery discharges "
    "only what the import cap demands. Perfect foresight knows the load to come; the MPC plans on what recent "
    "days looked like."
)

GUARD_NOTE = (
    "How the MPC decides, and why it falls short of the upper bound: most of the bill is the demand charge on "
    "the month's peak, which EV sessions set. The import cap is the peak guard's, fitted on the last four weeks "
    "of readings at the month's first step and again once a session has passed it. Under that cap the battery "
    "follows the reserve policy, solved at each local midnight over the next 36 hours: a stochastic dynamic "
    "program on the naive house-load forecast, the PV forecast and the tariff, with the car's arrivals, session "
    "lengths and the house's load meanwhile learnt from the same weeks. Per step and session state it keeps a "
    "floor the battery covers load down to and a level it charges up to; the battery applies them to the load it "
    "measures and defends the cap. The policy pays for not knowing the future: it keeps energy through evenings "
    "that bring no car and through sessions that turn out short, which perfect foresight spends at the peak "
    "price, and a month whose sessions run harder than the past weeks' sets a higher peak. The table below says "
    "where the difference went."
)


GUARD_NOTE_NO_CAR = (
    "How the MPC decides, and why it falls short of the upper bound: much of the bill is the demand charge on "
    "the month's peak, which the household's heaviest evenings and bursts set. The import cap is the peak "
    "guard's, fitted on the last four weeks of readings at the month's first step and again once the month's "
    "peak has passed it. Under that cap the battery follows the reserve policy, solved at each local midnight "
    "over the next 36 hours: a stochastic dynamic program on the naive house-load forecast, the PV forecast and "
    "the tariff, with the household's bursts (load standing well above the forecast) and their lengths learnt "
    "from the same weeks. Per step and burst state it keeps a floor the battery covers load down to and a level "
    "it charges up to; the battery applies them to the load it measures and defends the cap. The policy pays "
    "for not knowing the future: it keeps energy for bursts that do not come, which perfect foresight spends at "
    "the peak price, and an evening heavier than the past weeks' sets a higher peak. The table below says where "
    "the difference went."
)


def gap_table(result: bt.BacktestResult) -> pd.DataFrame:
    """Where the MPC's bill differs from perfect foresight's: the demand charge, energy and
    wear while a car charges (sessions found in the load) and at all other times, and the
    energy each left stored, valued; the parts add up to the difference that capture counts."""
    a, step_h = result.actuals, result.settings.step_hours
    found = sessions.find_sessions(a[fc.LOAD], result.config.home_load.ev_charger_kw)
    charging = sessions.charging_mask(a.index, found.starts, found.ends)
    wear = result.settings.wear_cost_per_kwh

    def energy_and_wear(run: bt.StrategyRun) -> np.ndarray:
        return _step_cost(result, run) + wear * np.abs(run.battery_kw) * step_h

    mpc, perfect = result.runs[bt.MPC], result.runs[bt.PERFECT]
    difference = energy_and_wear(mpc) - energy_and_wear(perfect)
    rows = {"demand charge": mpc.bill.demand - perfect.bill.demand}
    if charging.any():
        rows["energy and wear while a car charges"] = float(difference[charging].sum())
    rows["energy and wear at all other times"] = float(difference[~charging].sum())
    rows["energy stored, valued (less stored is dearer)"] = perfect.stored - mpc.stored
    return pd.Series(rows, name="mpc_minus_perfect").to_frame()


def energy_left_after_sessions(result: bt.BacktestResult) -> dict[str, float]:
    """Per strategy, the mean battery energy above its minimum SOC (kWh, nominal capacity) at
    the last reading of each weekday charging session; empty without sessions."""
    a, config, step = result.actuals, result.config, result.settings.step
    found = sessions.find_sessions(a[fc.LOAD], config.home_load.ev_charger_kw)
    weekday = np.asarray((found.starts - step).tz_convert(config.timezone).day_of_week < 5)
    ends = a.index.get_indexer(found.ends[weekday])
    if not len(ends):
        return {}
    battery = config.battery
    return {name: float(np.mean((run.soc_percent[ends] - battery.min_soc) / 100.0 * battery.capacity_kwh))
            for name, run in result.runs.items() if name in (bt.MPC, bt.PERFECT)}


def _cadence(result: bt.BacktestResult) -> str:
    s = result.settings
    if result.runs[bt.MPC].guarded:
        return (f"MPC follows the reserve policy, solved each local midnight over {reserve.HORIZON / pd.Timedelta(hours=1):g} h "
                f"with the `{s.forecaster}` forecasts ({result.replans} solves)")
    return f"MPC re-plans every {s.replan_minutes} minutes over {s.horizon_hours:g} h with the `{s.forecaster}` forecaster ({result.replans} plans)"


def _money(value: float) -> str:
    return f"{value:,.2f}"


def markdown(result: bt.BacktestResult, table: pd.DataFrame, plot: Path | None) -> str:
    s, window = result.settings, result.actuals.index
    lines = [
        f"# Backtest: {result.config.device_id}",
        "",
        f"{s.days} days from {(window[0] - s.step).tz_convert(result.config.timezone):%Y-%m-%d %H:%M %Z}, "
        f"{s.step_minutes}-minute steps. " + _cadence(result) + f", execution `{s.execution}`; "
        f"wear {s.wear_cost_per_kwh:g} per kWh of throughput; " + _charges(site_tariff(result.config)),
        "",
        "| strategy | bill | energy | demand | wear | stored | savings | capture | peak import kW | self-consumption | cycles | emissions kg |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in table.iterrows():
        lines.append(
            f"| {LABELS[name]} | {_money(row.bill)} | {_money(row.energy)} | {_money(row.demand)} | {_money(row.wear)} "
            f"| {_money(row.stored)} | {_money(row.savings)} | {row.capture:.1%} | {row.peak_import_kw:.2f} | {row.self_consumption:.1%} "
            f"| {row.cycles:.1f} | {row.emissions_kg:,.1f} |"
        )
    failed = int(table.loc[bt.MPC, "failed_plans"])
    if failed:
        lines += ["", f"{failed} MPC plans failed; the battery ran its self-consumption rule for those hours."]
    if s.forecaster == "naive" and result.runs[bt.MPC].guarded:
        lines += ["", GUARD_NOTE if result.config.home_load.has_ev else GUARD_NOTE_NO_CAR]
    elif s.forecaster == "naive" and s.scenarios:
        lines += ["", MPC_NOTE]
    months = by_month(result)
    if len(months) > 1:
        lines += ["", "By billing month (each month's demand charge on its own peak; bills less what the battery stored "
                      "over the month):", "",
                  "| month | days | " + " | ".join(LABELS[name] for name in result.runs) + " | MPC savings | capture |",
                  "| --- | ---: | " + " | ".join("---:" for _ in result.runs) + " | ---: | ---: |"]
        lines += [f"| {month} | {row.days:g} | " + " | ".join(_money(row[name]) for name in result.runs)
                  + f" | {_money(row.mpc_savings)} | {row.mpc_capture:.1%} |" for month, row in months.iterrows()]
    gaps = gap_table(result)
    lines += ["", "| MPC bill against perfect foresight | difference |", "| --- | ---: |"]
    lines += [f"| {part} | {value:+,.2f} |" for part, value in gaps["mpc_minus_perfect"].items()]
    lines += [f"| total | {gaps['mpc_minus_perfect'].sum():+,.2f} |"]
    left = energy_left_after_sessions(result)
    if left:
        lines += ["", f"Battery energy left when a car stopped charging on a weekday (mean, above the minimum SOC): "
                      f"{left[bt.MPC]:.2f} kWh under the MPC, {left[bt.PERFECT]:.2f} kWh under perfect foresight."]
    lines += ["", (__doc__ or "").split("Definitions (also printed in the report):")[1].strip()]
    if plot is not None:
        lines += ["", f"![sample day]({plot.name})"]
    return "\n".join(lines) + "\n"


def write_report(result: bt.BacktestResult, output: Path) -> Path:
    """``report.md`` and ``sample_day.png`` in ``output``; returns the Markdown path."""
    output.mkdir(parents=True, exist_ok=True)
    table = metrics(result)
    plot = plot_day(result, sample_day(result), output / "sample_day.png")
    path = output / "report.md"
    path.write_text(markdown(result, table, plot))
    return path
