"""Small helpers for tests that need simulated readings."""

from __future__ import annotations

import pandas as pd

from der_core.config import SimulatorConfig, build_config
from der_physics import generator


def config(**overrides) -> SimulatorConfig:
    return build_config(overrides)


def readings(configs, start: str, end: str) -> pd.DataFrame:
    configs = list(configs) if isinstance(configs, (list, tuple)) else [configs]
    frames = list(generator.historical(configs, pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")))
    return pd.concat(frames, ignore_index=True)
