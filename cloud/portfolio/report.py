"""Outputs: per-step CSV (fleet and per strategy), JSON summary of KPIs, Markdown report
with PNG plots (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cloud.portfolio.fleet import REGIONS
from cloud.portfolio.kpis import FleetResult, satisfaction, savings, summary
from cloud.portfolio.results import SOC_BINS
from der_core.runs import true_runs

KPI_ROWS = ("total_cost", "savings", "peak_aggregate_import_kw", "max_ramp_kw_per_step", "load_factor", "self_consumption",
            "emissions_kg", "unserved_kwh", "deferred_kwh", "starved_sites", "satisfaction_mean", "dr_requested_kwh", "dr_delivered_kwh",
            "cap_exceeded_kwh")


def timestep_frame(result: FleetResult) -> pd.DataFrame:
    lim = result.limits
    frame = pd.DataFrame({"ts": result.times, "baseline_net_kw": lim.baseline_kw, "import_cap_kw": lim.cap_kw,
                          "dr_target_kw": lim.dr_target_kw, "market_price": lim.market_price, "supply_kw": lim.supply_kw})
    for key in result.strategies:
        for name, values in result.aggregates[key].items():
            frame[f"{key}_{name}_kw" if name != "stored" else f"{key}_stored_kwh"] = values
    return frame


def step_windows(mask: np.ndarray) -> list[tuple[int, int]]:
    """[first, last + 1) step ranges where ``mask`` holds."""
    return list(zip(*true_runs(mask)))


def _plots(result: FleetResult, folder: Path, timezone: str, currency: str) -> dict[str, str]:
    """Every plot says what it shows, in which unit and time zone (the fleet's local time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    local = result.times.tz_convert(timezone)
    zone = f"local time ({timezone})"
    step = pd.Timedelta(hours=result.step_hours)
    dr = np.isfinite(result.limits.dr_target_kw)

    def shade_dr(ax, times) -> None:
        for i, (a, b) in enumerate(step_windows(dr)):
            ax.axvspan(times[a], times[b - 1] + step, color="tab:orange", alpha=0.2, label="DR window" if i == 0 else None)

    def time_axis(ax, times) -> None:
        ax.set_xlabel(zone)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %b %H:%M", tz=times.tz))

    names = {}
    fig, ax = plt.subplots(figsize=(10, 4))
    for key in result.strategies:
        ax.plot(local, result.aggregates[key]["grid"], label=key, lw=1)
    if np.isfinite(result.limits.cap_kw).any():
        ax.plot(local, result.limits.cap_kw, "k--", lw=0.8, label="import cap")
    shade_dr(ax, local)
    ax.set_title("Fleet net grid import per strategy (kW; negative = export)")
    ax.set_ylabel("fleet net import (kW)"), time_axis(ax, local), ax.legend(fontsize=7), fig.autofmt_xdate()
    names["aggregate"] = _save(fig, folder / "aggregate_load.png")
    if dr.any():
        window = np.flatnonzero(dr)
        lo, hi = max(window[0] - 6, 0), min(window[-1] + 7, len(result.times))
        times = local[lo:hi]
        fig, ax = plt.subplots(figsize=(8, 4))
        for key in result.strategies:
            ax.step(times, result.aggregates[key]["grid"][lo:hi], where="post", label=key)
        shade_dr(ax, local)
        target = result.limits.dr_target_kw[lo:hi]
        ax.step(times, target, "k", where="post", lw=2.5, label="DR target (fleet import at most)")
        ax.set_xlim(times[0], times[-1] + step)
        ax.set_title("Demand-response event: fleet net import against the target (kW)")
        ax.set_ylabel("fleet net import (kW)"), time_axis(ax, times), ax.legend(fontsize=7), fig.autofmt_xdate()
        names["dr"] = _save(fig, folder / "dr_event.png")
    key = "central" if "central" in result.soc_hist else result.strategies[-1]
    hist = result.soc_hist[key]
    fig, ax = plt.subplots(figsize=(10, 3.8))
    shares = 100.0 * hist / np.maximum(hist.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(shares.T, aspect="auto", origin="lower", cmap="viridis",
                      extent=(mdates.date2num(local[0]), mdates.date2num(local[-1] + step), 0, 100))
    ax.xaxis_date(tz=local.tz)
    fig.colorbar(image, ax=ax, label="share of battery sites (%)")
    ax.set_title(f"Battery state of charge across the fleet ({key}), {SOC_BINS} bins of {100 // SOC_BINS} %")
    ax.set_ylabel("state of charge (%)"), time_axis(ax, local), fig.autofmt_xdate()
    names["soc"] = _save(fig, folder / "soc_distribution.png")
    fig, ax = plt.subplots(figsize=(7, 4))
    sites = result.sites
    days = len(result.times) * result.step_hours / 24.0
    if "no_battery" in result.strategies:
        flexible = []
        for key in result.strategies:
            if key != "no_battery":
                saved = flexible = savings(sites, key)
                ax.hist(saved, bins=30, alpha=0.5, label=f"{key} (mean {saved.mean():,.2f})")
        ax.set_xlabel(f"savings per battery site against no battery, less the energy left stored ({currency}, "
                      f"{days:g} days)")
        ax.set_ylabel("battery sites"), ax.legend(fontsize=7)
        ax.set_title(f"Savings across the {len(flexible)} battery sites (sites without one save nothing)")
    names["savings"] = _save(fig, folder / "savings_distribution.png")
    return names


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def markdown(result: FleetResult, kpis: dict, plots: dict[str, str]) -> str:
    strategies = list(kpis["strategies"])
    lines = [f"# Portfolio report: {kpis['sites']} sites, {kpis['steps']} steps from {kpis['start']}", "",
             "| KPI | " + " | ".join(strategies) + " |", "|---|" + "---|" * len(strategies)]
    for row in KPI_ROWS:
        cells = [kpis["strategies"][s].get(row) for s in strategies]
        if any(c is not None for c in cells):
            lines.append(f"| {row} | " + " | ".join("-" if c is None else f"{c:,.3f}" for c in cells) + " |")
    if "central" in kpis:
        rates = kpis["central"]["participation_rate_per_day"]
        lines += ["", f"Central strategy: mean participation {np.mean(rates):.1%}; plan slack "
                      f"(cap {kpis['central']['plan_cap_slack_kwh']:.2f} kWh, DR {kpis['central']['plan_dr_slack_kwh']:.2f} kWh)."]
    lines += ["", f"Satisfaction: the share of each battery site's stand-alone ({kpis['satisfaction_reference']}) savings it keeps.", ""]
    titles = {"aggregate": "Aggregate load per strategy", "dr": "Demand-response window", "soc": "SOC distribution",
              "savings": "Savings across sites"}
    for key, name in plots.items():
        lines += [f"## {titles[key]}", "", f"![{titles[key]}]({name})", ""]
    return "\n".join(lines)


def write_outputs(result: FleetResult, folder: str | Path, region: str = "bay-area") -> dict[str, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kpis = summary(result) | {"region": region, "timezone": REGIONS[region]["timezone"], "currency": REGIONS[region]["currency"]}
    paths = {"timesteps": folder / "timesteps.csv", "sites": folder / "sites.csv", "summary": folder / "summary.json",
             "report": folder / "report.md"}
    timestep_frame(result).to_csv(paths["timesteps"], index=False)
    result.sites.to_csv(paths["sites"], index=False)
    paths["summary"].write_text(json.dumps(kpis, indent=2, default=float) + "\n")
    plots = _plots(result, folder, kpis["timezone"], kpis["currency"])
    paths["report"].write_text(markdown(result, kpis, plots) + "\n")
    return paths


__all__ = ["write_outputs", "timestep_frame", "satisfaction", "SOC_BINS"]
