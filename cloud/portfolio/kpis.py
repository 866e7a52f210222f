"""Fleet results from partition results, and the KPIs compared across strategies.

Fleet sums add integer 0.1 W units and per-site totals go through ``math.fsum``, so neither
depends on how the fleet was partitioned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cloud.portfolio.inputs import UNITS_PER_KW
from cloud.portfolio.results import PartitionResult
from cloud.portfolio.scenario import FleetLimits

SATISFIED_SHARE = 0.9


@dataclass(frozen=True)
class FleetResult:
    times: pd.DatetimeIndex
    step_hours: float
    limits: FleetLimits
    aggregates: dict[str, dict[str, np.ndarray]]  # strategy -> name -> kW (T,)
    soc_hist: dict[str, np.ndarray]
    sites: pd.DataFrame  # one row per site and strategy
    followed_per_day: np.ndarray | None
    slack_kwh: tuple[float, float]

    @property
    def strategies(self) -> list[str]:
        return [k for k in self.aggregates if k != "baseline"]


def combine(parts: list[PartitionResult], times: pd.DatetimeIndex, step_hours: float, limits: FleetLimits) -> FleetResult:
    parts = sorted(parts, key=lambda p: p.first)
    keys = parts[0].aggregates.keys()
    aggregates = {k: {n: sum(p.aggregates[k][n] for p in parts).astype(float) / UNITS_PER_KW for n in parts[0].aggregates[k]}
                  for k in keys}
    soc = {k: sum(p.soc_hist[k] for p in parts) for k in parts[0].soc_hist}
    frames = []
    for key in parts[0].sites:
        for p in parts:
            frame = pd.DataFrame(p.sites[key])
            frame.insert(0, "strategy", key)
            frame.insert(0, "archetype", p.archetypes)
            frame.insert(0, "site_id", p.site_ids)
            frames.append(frame)
    followed = None if parts[0].followed_per_day is None else sum(p.followed_per_day for p in parts)
    slack = (math.fsum(p.slack_kwh[0] for p in parts), math.fsum(p.slack_kwh[1] for p in parts))
    return FleetResult(times, step_hours, limits, aggregates, soc, pd.concat(frames, ignore_index=True), followed, slack)


def rounding_kw(result: FleetResult) -> float:
    """How far a fleet sum of powers published at 0.1 W may sit from the exact sum."""
    return 0.5 * result.sites["site_id"].nunique() / UNITS_PER_KW


def _total(frame: pd.DataFrame, column: str) -> float:
    return math.fsum(frame[column].to_numpy())


def savings(sites: pd.DataFrame, strategy: str) -> pd.Series:
    """Per battery site (``sites.csv``'s rows), what ``strategy`` saves it against no battery:
    the bill less the value of the energy its battery gained (``results.stored_value``; a
    run's output written before it was kept is read as bills alone)."""
    by = {k: f.set_index("site_id") for k, f in sites.groupby("strategy")}
    if strategy not in by or "no_battery" not in by:
        return pd.Series(dtype=float)

    def valued(rows: pd.DataFrame) -> pd.Series:
        return rows["bill"] - (rows["stored_value"] if "stored_value" in rows else 0.0)

    base = by["no_battery"]
    flexible = base.index[base["battery_kwh"] > 0]
    return (valued(base) - valued(by[strategy])).loc[flexible]


def satisfaction(sites: pd.DataFrame, strategy: str, reference: str) -> pd.Series:
    """Per battery site: the share of its stand-alone (``reference``) savings it keeps."""
    own, kept = savings(sites, reference), savings(sites, strategy)
    if own.empty or kept.empty:
        return pd.Series(dtype=float)
    eligible = own > 0.01
    return (kept[eligible] / own[eligible]).clip(0.0, 1.0)


def strategy_kpis(result: FleetResult, key: str) -> dict[str, float]:
    agg, dt = result.aggregates[key], result.step_hours
    frame = result.sites[result.sites["strategy"] == key]
    grid = agg["grid"]
    peak = float(max(grid.max(), 0.0))
    ramps = np.abs(np.diff(grid))
    revenue = _total(frame, "market_revenue")
    out = {
        "total_cost": _total(frame, "bill") - revenue - _total(frame, "stored_value"),
        "site_bills": _total(frame, "bill"),
        "stored_value": _total(frame, "stored_value"),
        "aggregator_market_revenue": revenue,
        "peak_aggregate_import_kw": peak,
        "max_ramp_kw_per_step": float(ramps.max()) if len(ramps) else 0.0,
        "mean_ramp_kw_per_step": float(ramps.mean()) if len(ramps) else 0.0,
        "load_factor": float(np.maximum(grid, 0.0).mean() / peak) if peak > 0 else 0.0,
        "self_consumption": _total(frame, "self_consumed_kwh") / max(_total(frame, "pv_kwh"), 1e-12),
        "import_kwh": _total(frame, "import_kwh"),
        "export_kwh": _total(frame, "export_kwh"),
        "emissions_kg": _total(frame, "emissions_kg"),
        "unserved_kwh": _total(frame, "unserved_kwh"),
        "starved_sites": int((frame["unserved_kwh"] > 1e-9).sum()),
        "deferred_kwh": _total(frame, "deferred_kwh"),
        "deferred_site_hours": _total(frame, "deferred_hours"),
    }
    supply = result.limits.supply_kw
    if np.isfinite(supply).any():
        served = np.isfinite(supply)
        out["blackout_avoided"] = bool(out["unserved_kwh"] <= 1e-9 and np.all(grid[served] <= supply[served] + rounding_kw(result)))
    cap = result.limits.cap_kw
    if np.isfinite(cap).any():
        over = np.where(np.isfinite(cap), np.maximum(grid - cap - rounding_kw(result), 0.0), 0.0)
        out["cap_exceeded_kwh"] = float(over.sum() * dt)
    out |= _dr_kpis(result, grid)
    return out


def _dr_kpis(result: FleetResult, grid: np.ndarray) -> dict[str, float]:
    """Demand response, one definition for all three figures. Each step of the window asks for
    ``baseline - target`` kW less; it delivers its reduction against the baseline, counted up
    to what it asked (more in one step cannot make up for less in another, as the grid needs
    the reduction when it asks) and as all of it within the fleet sums' rounding. So
    ``requested = delivered + shortfall`` and the target is met exactly when
    ``delivered >= requested``, i.e. when no step falls short."""
    lim, dt = result.limits, result.step_hours
    window = np.isfinite(lim.dr_target_kw)
    if not window.any():
        return {}
    asked = np.maximum(lim.baseline_kw[window] - lim.dr_target_kw[window], 0.0)
    got = np.clip(lim.baseline_kw[window] - grid[window], 0.0, asked)
    got = np.where(asked - got <= rounding_kw(result), asked, got)
    requested, delivered = math.fsum(asked * dt), math.fsum(got * dt)
    return {"dr_requested_kwh": requested, "dr_delivered_kwh": delivered, "dr_shortfall_kwh": requested - delivered,
            "dr_target_met": bool(delivered >= requested)}


def summary(result: FleetResult) -> dict:
    """The JSON summary: KPIs per strategy, savings against no battery, satisfaction."""
    kpis = {k: strategy_kpis(result, k) for k in result.strategies}
    base = kpis.get("no_battery", {}).get("total_cost")
    reference = "decentralised" if "decentralised" in kpis else "rule_based"
    for key, values in kpis.items():
        if base is not None:
            values["savings"] = base - values["total_cost"]
        kept = satisfaction(result.sites, key, reference)
        if len(kept):
            values["satisfaction_mean"] = float(kept.mean())
            values["satisfied_share"] = float((kept >= SATISFIED_SHARE).mean())
    out = {"sites": int(result.sites["site_id"].nunique()), "steps": len(result.times), "step_hours": result.step_hours,
           "start": result.times[0].isoformat(), "strategies": kpis, "satisfaction_reference": reference}
    if result.followed_per_day is not None:
        n = out["sites"]
        out["central"] = {"participation_rate_per_day": [float(f) / n for f in result.followed_per_day],
                          "plan_cap_slack_kwh": result.slack_kwh[0], "plan_dr_slack_kwh": result.slack_kwh[1]}
    return out
