"""The short summary a person reads after ``run_pipeline.py``: what each site should do when,
what the next 24 h should cost, and what that saves."""

from __future__ import annotations

import sys

import pandas as pd

from cloud.pipeline.runner import OK, PipelineResult
from edge_gateway.cli_support import print_table

MAX_WINDOWS = 4


def action_windows(plan, limit: int = MAX_WINDOWS) -> list[str]:
    """Contiguous runs of one non-idle action as ``buy 01:00-03:30`` in the site's local time."""
    starts = plan.step_starts.tz_convert(plan.timezone)
    step = pd.Timedelta(hours=plan.plan.step_hours)
    windows, current = [], None
    for ts, action in zip(starts, plan.plan.actions):
        if current and current[0] == action and current[2] == ts:
            current[2] = ts + step
            continue
        if current and current[0] != "idle":
            windows.append(current)
        current = [action, ts, ts + step]
    if current and current[0] != "idle":
        windows.append(current)
    return [f"{a} {s:%H:%M}-{e:%H:%M}" for a, s, e in windows[:limit]] + (
        [f"+{len(windows) - limit} more"] if len(windows) > limit else [])


def print_summary(result: PipelineResult, dashboard_hint: str, out=None) -> None:
    out = out or sys.stdout
    print(f"\npipeline finished in {result.seconds:.1f} s", file=out)
    missing = [o for o in result.outcomes if o.status != OK]
    for outcome in missing:
        print(f"  {outcome.name}: {outcome.status} ({outcome.message})", file=out)
    if result.plans:
        print("\nnext 24 h per site (times local to the site):", file=out)
        rows = [{
            "site": p.device_id,
            "bill": round(p.plan.total_cost, 2),
            "no battery": round(p.no_battery.total, 2),
            "saves": round(p.savings_vs_no_battery, 2),
            "vs self-consumption": round(p.savings_vs_self_consumption, 2),
            "what to do": ", ".join(action_windows(p)) or "keep the battery idle",
        } for p in result.plans]
        print_table(rows, file=out)
        total = sum(p.savings_vs_no_battery for p in result.plans)
        print(f"\nexpected savings across {len(result.plans)} sites: {total:.2f} (tariff currency)", file=out)
    print(f"\n{dashboard_hint}", file=out)
