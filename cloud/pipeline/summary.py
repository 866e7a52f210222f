"""The short summary a person reads after ``run_pipeline.py``: per site every action block of
its plan with the reason, when the next action is, and the day's bills and savings, all from
the plan's one summary (``cloud.optimization.summary``), in the site's time zone and currency."""

from __future__ import annotations

import sys

from cloud.optimization.summary import plan_summary
from cloud.pipeline.runner import OK, PipelineResult


def print_summary(result: PipelineResult, dashboard_hint: str, out=None) -> None:
    out = out or sys.stdout
    print(f"\npipeline finished in {result.seconds:.1f} s", file=out)
    missing = [o for o in result.outcomes if o.status != OK]
    for outcome in missing:
        print(f"  {outcome.name}: {outcome.status} ({outcome.message})", file=out)
    if result.plans:
        print("\nwhat each battery should do over the next 24 h:", file=out)
        summaries = [plan_summary(p) for p in result.plans]
        for summary in summaries:
            print("", *summary.lines(), sep="\n", file=out)
        currencies = {summary.currency for summary in summaries}
        if len(summaries) > 1 and len(currencies) == 1:
            total = summaries[0].money(sum(summary.savings for summary in summaries))
            print(f"\nexpected savings across {len(summaries)} sites: {total} against no battery", file=out)
    print(f"\n{dashboard_hint}", file=out)
