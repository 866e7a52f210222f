"""Outputs: per-step CSV (fleet and per strategy), JSON summary of KPIs, Markdown report
with PNG plots (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cloud.portfolio.kpis import FleetResult, satisfaction, summary
from cloud.portfolio.results import SOC_BINS

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


def _plots(result: FleetResult, folder: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {}
    fig, ax = plt.subplots(figsize=(10, 4))
    for key in result.strategies:
        ax.plot(result.times, result.aggregates[key]["grid"], label=key, lw=1)
    if np.isfinite(result.limits.cap_kw).any():
        ax.plot(result.times, result.limits.cap_kw, "k--", lw=0.8, label="import cap")
    ax.set_ylabel("fleet net import (kW)"), ax.legend(fontsize=7), fig.autofmt_xdate()
    names["aggregate"] = _save(fig, folder / "aggregate_load.png")
    window = np.flatnonzero(np.isfinite(result.limits.dr_target_kw))
    if len(window):
        lo, hi = max(window[0] - 6, 0), min(window[-1] + 7, len(result.times))
        fig, ax = plt.subplots(figsize=(8, 4))
        for key in result.strategies:
            ax.plot(result.times[lo:hi], result.aggregates[key]["grid"][lo:hi], label=key)
        ax.plot(result.times[window], result.limits.dr_target_kw[window], "k_", ms=14, mew=2, label="DR target")
        ax.set_ylabel("fleet net import (kW)"), ax.legend(fontsize=7), fig.autofmt_xdate()
        names["dr"] = _save(fig, folder / "dr_event.png")
    key = "central" if "central" in result.soc_hist else result.strategies[-1]
    hist = result.soc_hist[key]
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.imshow((hist / np.maximum(hist.sum(axis=1, keepdims=True), 1)).T, aspect="auto", origin="lower",
              extent=(0, len(result.times), 0, 100), cmap="viridis")
    ax.set_xlabel("step"), ax.set_ylabel(f"SOC % ({key})")
    names["soc"] = _save(fig, folder / "soc_distribution.png")
    fig, ax = plt.subplots(figsize=(7, 4))
    sites = result.sites
    if "no_battery" in result.strategies:
        base = sites[sites.strategy == "no_battery"].set_index("site_id")["bill"]
        for key in result.strategies:
            if key != "no_battery":
                ax.hist(base - sites[sites.strategy == key].set_index("site_id")["bill"], bins=30, alpha=0.5, label=key)
        ax.set_xlabel("savings per site"), ax.legend(fontsize=7)
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


def write_outputs(result: FleetResult, folder: str | Path) -> dict[str, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kpis = summary(result)
    paths = {"timesteps": folder / "timesteps.csv", "sites": folder / "sites.csv", "summary": folder / "summary.json",
             "report": folder / "report.md"}
    timestep_frame(result).to_csv(paths["timesteps"], index=False)
    result.sites.to_csv(paths["sites"], index=False)
    paths["summary"].write_text(json.dumps(kpis, indent=2, default=float) + "\n")
    paths["report"].write_text(markdown(result, kpis, _plots(result, folder)) + "\n")
    return paths


__all__ = ["write_outputs", "timestep_frame", "satisfaction", "SOC_BINS"]
