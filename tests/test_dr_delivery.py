"""Delivery's measurement of a window (cloud/dr/delivery): which readings count, and when a
past day has read enough of a window to serve the high-5-of-10 baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cloud.dr.delivery import utility_baseline, window_means
from cloud.dr.model import DREvent, Signal
from cloud.store.sqlite import SQLiteCloudStore
from der_core import der_data as dd

DAY = pd.Timestamp("2024-07-16T00:00:00Z")  # a Tuesday in UTC
STEP, MINUTE = pd.Timedelta(minutes=15), pd.Timedelta(minutes=1)
MISSING = DAY + pd.Timedelta(hours=2)  # the one reading lost


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Site ``a`` reading 2 kW every 15 minutes for 3 weeks up to ``DAY`` 04:00, but at
    ``MISSING``; site ``b`` every 5 minutes on the day before."""
    a = pd.date_range(DAY - pd.Timedelta(days=21), DAY + pd.Timedelta(hours=4), freq=STEP)
    b = pd.date_range(DAY - pd.Timedelta(days=1), DAY, freq="5min")
    store = SQLiteCloudStore(tmp_path_factory.mktemp("delivery") / "cloud.db")
    for device, stamps in (("a", a[a != MISSING]), ("b", b)):
        readings = dd.empty_frame().reindex(range(len(stamps)))
        store.upsert_readings(readings.assign(device_id=device, ts=stamps, net_grid_flow_kw=2.0))
    yield store
    store.close()


ONE = DAY - pd.Timedelta(hours=23)  # 01:00 the day before


@pytest.mark.parametrize("device, start, end, read", [
    ("a", ONE, ONE + 120 * MINUTE, 1.0),  # on the step: 8 readings, 8 read
    ("a", ONE + 7 * MINUTE, ONE + 127 * MINUTE, 1.0),  # off it: 01:15 to 03:00, 8 read
    ("a", ONE + 7 * MINUTE, ONE + 52 * MINUTE, 1.0),  # 45 minutes: 3 of 3
    ("a", MISSING - 53 * MINUTE, MISSING + 67 * MINUTE, 7 / 8),  # one lost of 8
    ("b", ONE + 7 * MINUTE, ONE + 127 * MINUTE, 1.0),  # 5-minute readings, 9 steps read
    ("b", ONE + 7 * MINUTE, ONE + 14 * MINUTE, 1.0),  # within one step: its reading at 01:10
])
def test_a_window_off_the_plan_step_is_read_in_full_when_every_reading_it_holds_came(store, device, start, end, read):
    """A window stamped (01:07, 03:07] holds the 15-minute readings 01:15 to 03:00, 8 of them:
    counted against the 9 steps covering it, a day read in full was 8/9 read, and a 45-minute
    window 3/4, below the 80 % a baseline day needs."""
    _, coverage = window_means(store, [device], start, end, STEP)
    assert coverage[device] == pytest.approx(read)


def test_a_45_minute_window_off_the_plan_step_has_a_high_5_of_10_baseline(store):
    """Read in full on every earlier day, yet counted 3/4 read against its 4 covering steps,
    below the share a baseline day needs: no day was eligible and no baseline settled."""
    start = DAY + pd.Timedelta(hours=1) + 7 * MINUTE
    event = DREvent("e", "test", start, start + 45 * MINUTE, Signal.REDUCTION, 1.0, DAY, (), 0)
    baseline = utility_baseline(store, event, ["a"], {"a": "UTC"}, STEP, [])
    assert baseline["a"] == pytest.approx(2.0)


def test_capability_weighs_the_battery_s_own_rule_over_the_window_as_its_baseline_is():
    """Over 01:07-03:07 the steps 01:00 and 03:00 lie 8/15 and 7/15 inside the window; a plain
    mean over the covering steps counted the battery's own rule in 03:07-03:15 as much as in
    any minute of the window."""
    from cloud.dr.baseline import step_shares
    from cloud.dr.capability import FleetState

    step = pd.Timedelta(minutes=15)
    steps = pd.date_range("2024-07-16T01:00Z", "2024-07-16T03:00Z", freq=step)
    start, end = pd.Timestamp("2024-07-16T01:07Z"), pd.Timestamp("2024-07-16T03:07Z")
    gap = np.zeros(len(steps))
    gap[-1] = 9.0  # the own rule draws 9 kW more than the baseline in the last step only
    one = np.ones(1)
    state = FleetState(["site-0"], np.ones(1, bool), 10 * one, 0 * one, 13.5 * one, 5 * one, 5 * one, one, 0.3 * one,
                       np.zeros((1, len(steps))), gap[None, :], 15 * one, np.ones(1, bool))
    shares = step_shares(steps, step, start, end)
    assert shares[0] == pytest.approx(8 / 15) and shares[-1] == pytest.approx(7 / 15)
    weighed = state.capability_kw(2.0, shares)
    assert weighed[0] == pytest.approx(5.0 - 9.0 * (7 / 15) / 8.0)
    assert state.capability_kw(2.0)[0] == pytest.approx(5.0 - 9.0 / 9)
