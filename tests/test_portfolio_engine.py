"""Fleet sums equal the sum of their sites; partitioning (serial or on Dask) changes nothing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from cloud.portfolio.distributed import dask_client, dask_mapper
from cloud.portfolio.engine import RunSpec, run_portfolio
from cloud.portfolio.fleet import Fleet, draw_fleet
from cloud.portfolio.kpis import combine, summary
from cloud.portfolio.scenario import SCENARIOS

TIMES = pd.date_range("2025-07-01", periods=48, freq="h", tz="America/Los_Angeles").tz_convert("UTC")
ALL = ("no_battery", "rule_based", "decentralised", "central")


def run(spec: RunSpec, partitions: int, mapper=None):
    parts, limits = run_portfolio(spec, partitions) if mapper is None else run_portfolio(spec, partitions, mapper)
    return combine(parts, spec.times, 1.0, limits)


def assert_identical(a, b):
    for key in a.aggregates:
        for name in a.aggregates[key]:
            np.testing.assert_array_equal(a.aggregates[key][name], b.aggregates[key][name], err_msg=f"{key}.{name}")
    pd.testing.assert_frame_equal(a.sites, b.sites)
    assert summary(a) == summary(b)


@pytest.fixture(scope="module")
def fleet():
    return draw_fleet(12, seed=4, group_size=4)


@pytest.mark.parametrize("strategy", ["no_battery", "rule_based", "decentralised"])
def test_fleet_aggregate_equals_the_sum_of_its_sites_run_alone(fleet, strategy):
    scenario = SCENARIOS["none"]
    whole = run(RunSpec(fleet, TIMES, (strategy,), scenario), partitions=1)
    alone = [run(RunSpec(Fleet((site,), fleet.region, 1), TIMES, (strategy,), scenario), 1) for site in fleet.sites]
    for name in ("grid", "import", "export", "battery", "load", "pv"):
        total = sum(np.round(r.aggregates[strategy][name] * 1e4).astype(np.int64) for r in alone)
        np.testing.assert_array_equal(np.round(whole.aggregates[strategy][name] * 1e4).astype(np.int64), total)
    frame = pd.concat([r.sites for r in alone], ignore_index=True)
    pd.testing.assert_frame_equal(whole.sites, frame)


@pytest.mark.parametrize("scenario", ["default", "shortfall"])
def test_partitioning_does_not_change_any_result(fleet, scenario):
    spec = RunSpec(fleet, TIMES, ALL, SCENARIOS[scenario], seed=9)
    assert_identical(run(spec, 1), run(spec, 3))


def test_dask_threads_give_the_serial_result(fleet):
    spec = RunSpec(fleet, TIMES, ALL, SCENARIOS["default"], seed=9)
    with dask_client(workers=2, processes=False) as client:
        on_dask = run(spec, 3, dask_mapper(client))
    assert_identical(run(spec, 1), on_dask)


@pytest.mark.slow
def test_dask_worker_processes_give_the_serial_result(fleet):
    spec = RunSpec(fleet, TIMES, ("rule_based", "central"), SCENARIOS["default"], seed=9)
    with dask_client(workers=2, processes=True) as client:
        on_dask = run(spec, 2, dask_mapper(client))
    assert_identical(run(spec, 1), on_dask)


def test_unknown_strategy_is_a_usage_error(fleet):
    from der_core.errors import UsageError

    with pytest.raises(UsageError, match="unknown magic"):
        RunSpec(fleet, TIMES, ("magic",), SCENARIOS["none"])


def test_no_strategy_is_a_usage_error_before_the_run(tmp_path):
    """``--strategies ,`` named none: the run went on and died in its second phase on an
    IndexError, after the fleet's simulation."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "run_portfolio.py"), "--sites", "2", "--hours", "2", "--workers", "1",
                           "--strategies", ",", "--output", str(tmp_path / "out")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --strategies: none given; expected some of no_battery, rule_based, decentralised, central"]


@pytest.mark.parametrize("sites, group_size, count", [
    (12, 5, 2), (12, 5, 3), (12, 5, 7), (12, 4, 2), (12, 1, 5), (7, 3, 1), (30, 4, 4), (1, 100, 3),
])
def test_partitions_are_whole_groups_in_order_and_as_even_as_possible(fleet, sites, group_size, count):
    sized = dataclasses.replace(fleet, sites=(fleet.sites * 3)[:sites], group_size=group_size)
    groups = [(g.start, g.stop) for g in sized.groups()]
    parts = sized.partitions(count)
    assert len(parts) == min(count, len(groups))
    assert parts[0].start == 0 and parts[-1].stop == sites
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))  # contiguous, nothing twice or left out
    starts, stops = {g[0] for g in groups}, {g[1] for g in groups}
    assert all(p.start in starts and p.stop in stops for p in parts)  # no group is split
    per_part = [sum(1 for g in groups if p.start <= g[0] and g[1] <= p.stop) for p in parts]
    assert max(per_part) - min(per_part) <= 1

