"""Realistic-looking flat reading frames for sync tests, built directly on the data contract
(independent of the simulator): N devices over T steps, physically consistent enough that
validation passes (loads sum to the total, net flow balances, values in range)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from der_core import der_data as dd

START = pd.Timestamp("2024-06-01T00:00:00Z")


def readings(devices: int = 2, steps: int = 48, *, start: pd.Timestamp = START, step_s: int = 300,
             seed: int = 0, prefix: str = "dev") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = start + pd.to_timedelta(np.arange(steps) * step_s, unit="s")
    frames = []
    for d in range(devices):
        hours = ts.hour.to_numpy() + ts.minute.to_numpy() / 60
        sun = np.clip(np.sin((hours - 6) / 12 * np.pi), 0, None)
        solar = np.round(sun * rng.uniform(3, 8) * rng.uniform(0.7, 1.0, steps), 6)
        parts = {c: np.round(rng.uniform(0, 1.5, steps), 6) for c in dd.LOAD_COMPONENTS}
        total = sum(parts.values())
        battery = np.round(rng.uniform(-3, 3, steps), 6)
        frame = pd.DataFrame({
            dd.DEVICE_ID: f"{prefix}-{d:03d}",
            dd.TS: ts,
            dd.SOLAR_KW: solar,
            dd.SOLAR_IRRADIANCE: sun * 950,
            dd.PANEL_TEMP: 20 + sun * 25,
            dd.flat_name("solar", "efficiency_percent"): rng.uniform(17, 20, steps),
            dd.BATTERY_SOC: rng.uniform(10, 90, steps),
            dd.BATTERY_CAPACITY: 13.5,
            dd.BATTERY_POWER: battery,
            dd.BATTERY_VOLTAGE: rng.uniform(48, 54, steps),
            dd.BATTERY_TEMP: rng.uniform(15, 35, steps),
            dd.BATTERY_CYCLES: np.arange(steps) // 100 + d,
            dd.BATTERY_HEALTH: 99.5,
            dd.LOAD_TOTAL: total,
            **parts,
            dd.PRICE: rng.uniform(0.08, 0.30, steps),
            dd.FEED_IN: 0.05,
            dd.DEMAND_CHARGE: 10.0,
            dd.TOU_PERIOD: rng.choice(dd.TOU_PERIODS, steps),
            dd.CARBON: rng.uniform(100, 500, steps),
            dd.NET_GRID_FLOW: total + battery - solar,
        })
        frames.append(frame)
    return dd.coerce_frame(pd.concat(frames, ignore_index=True))


def site(device_id: str) -> dict:
    return {"device_id": device_id, "latitude": 37.77, "longitude": -122.42, "timezone": "America/Los_Angeles",
            "country": "US", "pv_capacity_kw": 8.0, "battery_capacity_kwh": 13.5, "has_ev": True}


def assert_same_readings(cloud_frame: pd.DataFrame, edge_frame: pd.DataFrame) -> None:
    """Equal field by field, each reading exactly once."""
    keys = list(dd.KEY_COLUMNS)
    assert not cloud_frame.duplicated(keys).any(), "a reading is in the cloud more than once"
    left = cloud_frame.sort_values(keys).reset_index(drop=True)
    right = edge_frame.sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_exact=True)
