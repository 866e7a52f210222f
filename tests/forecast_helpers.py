"""Simulated fleets for the forecasting tests, generated in memory with fixed seeds."""

from __future__ import annotations

import pandas as pd

from cloud.forecasting import design as dz
from der_core.config import build_config, site_record
from der_core.sites import site_configs
from der_physics import generator

STEP = pd.Timedelta(minutes=15)


def fleet(sites: int, days: int, seed: int, start: str = "2024-04-01") -> tuple[list, pd.DataFrame]:
    """Site configs and their flat readings every 15 minutes."""
    configs = site_configs(build_config({"seed": seed, "interval_seconds": 900}), sites)
    begin = pd.Timestamp(start, tz="UTC")
    times = generator.time_range(begin, begin + pd.Timedelta(days=days), 900)
    simulation, _ = generator.simulate(configs, times)
    return configs, simulation.frame()


def histories(configs, readings: pd.DataFrame) -> list[dz.SiteHistory]:
    return [dz.site_history(readings[readings["device_id"] == c.device_id], site_record(c), STEP) for c in configs]


def fill_store(store, configs, readings: pd.DataFrame) -> None:
    store.init_schema()
    store.upsert_readings(readings)
    store.upsert_sites([site_record(c) for c in configs])
