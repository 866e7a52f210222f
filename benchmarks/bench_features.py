#!/usr/bin/env python
"""Full feature rebuild from the embedded cloud store: raw readings per second.

Simulates ``--sites`` homes for ``--days`` at ``--interval`` seconds (100 x 30 days x 5 min =
864,000 readings by default) into a temporary SQLite cloud store (not timed), then times one
feature run over the whole range with no watermarks, i.e. a rebuild from scratch, and prints
where the time went and the machine. On a machine with two or more cores the job's worker processes read
and compute the sites while its own process writes them; with one core, writes run on a
writer thread alongside the maths. Either way the parts add up to more than the total. Run
it two or three times on a shared machine: the spread is part of the figure.
Target: under 10 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import describe  # noqa: E402
from cloud.feature_engineering.job import run_features  # noqa: E402
from cloud.feature_engineering.settings import FeatureSettings  # noqa: E402
from cloud.store.sqlite import SQLiteCloudStore  # noqa: E402
from der_core.config import SimulatorConfig, site_record  # noqa: E402
from der_core.sites import site_configs  # noqa: E402
from der_physics import generator  # noqa: E402

START = pd.Timestamp("2024-03-01T00:00:00Z")
TARGET_S = 10.0


class Timed:
    """The real store, with the time spent in its reads and writes added up (writes are
    timed on the writer thread that makes them; reads made by worker processes, through
    their own connections, are not seen here)."""

    def __init__(self, inner):
        self.inner, self.read_s, self.write_s = inner, 0.0, 0.0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read_readings(self, *args, **kwargs):
        began = time.perf_counter()
        try:
            return self.inner.read_readings(*args, **kwargs)
        finally:
            self.read_s += time.perf_counter() - began

    def upsert_frame(self, *args, **kwargs):
        began = time.perf_counter()
        try:
            return self.inner.upsert_frame(*args, **kwargs)
        finally:
            self.write_s += time.perf_counter() - began


def fill(store: SQLiteCloudStore, sites: int, days: int, interval_s: int) -> int:
    configs = site_configs(SimulatorConfig(seed=2024, device_id="bench", interval_seconds=interval_s), sites)
    store.upsert_sites([site_record(c) for c in configs])
    rows = 0
    for frame in generator.historical(configs, START, START + pd.Timedelta(days=days), chunk_steps=2016):
        rows += store.upsert_readings(frame)
    return rows


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (the job's workers, once it has joined them)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--interval", type=int, default=300, help="seconds between readings")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteCloudStore(Path(folder) / "cloud.db")
        began = time.perf_counter()
        readings = fill(store, args.sites, args.days, args.interval)
        print(f"setup (not timed): {readings:,} readings of {args.sites} sites in {time.perf_counter() - began:.1f} s")
        timed = Timed(store)
        settings = FeatureSettings(lookback_days=args.days)
        began, cpu_began, children_began = time.perf_counter(), time.process_time(), _children_cpu()
        result = run_features(timed, settings, now=START + pd.Timedelta(days=args.days))
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu_began
        workers_cpu = _children_cpu() - children_began
        store.close()
    print(f"full rebuild: {result.readings:,} readings -> {result.rows:,} feature rows ({result.version}) "
          f"in {elapsed:.2f} s = {result.readings / elapsed:,.0f} readings/s "
          f"(CPU time {cpu + workers_cpu:.2f} s)")
    if result.workers:
        print(f"  {result.workers} worker processes: reads and features, CPU {workers_cpu:.2f} s; "
              f"job process: store writes {timed.write_s:.2f} s, CPU {cpu:.2f} s")
    else:
        print(f"  main thread: store reads {timed.read_s:.2f} s, features and waiting for writes "
              f"{elapsed - timed.read_s:.2f} s; writer thread: store writes {timed.write_s:.2f} s")
    print(f"machine: {describe()}, pandas {pd.__version__}")
    if (args.sites, args.days, args.interval) == (100, 30, 300):  # the target is for this size only
        verdict = "met" if elapsed < TARGET_S else "missed"
        print(f"target < {TARGET_S:g} s on 2 cores: {verdict} ({elapsed:.2f} s on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
