"""Settings of model training, validated once where they enter: flags first, then the spec's
``FORECAST_MODEL_DIR`` and ``FORECAST_TEST_SIZE``, and ours: ``FORECAST_DRIFT_THRESHOLD``
(relative MAE rise that counts as drift, default 0.25), ``FORECAST_WEATHER_CSV`` (a weather
service's forecasts; without it simulated sites use the simulator's forecast) and
``FORECAST_SITE_ID`` (train one site only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cloud.forecasting.weather import (
    CsvWeatherForecast,
    SimulatedWeatherForecast,
    WeatherForecast,
)
from der_core.cli_support import env_value, output_folder, positive_float
from der_core.errors import ConfigError, UsageError

DEFAULT_MODEL_DIR = "./trained_models"
DEFAULT_TEST_SIZE = 0.2
DEFAULT_DRIFT = 0.25
STEP = pd.Timedelta(minutes=15)
MAX_GAP = pd.Timedelta(hours=1)


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise ValueError(text)
    return value


@dataclass(frozen=True)
class ForecastSettings:
    model_dir: Path = Path(DEFAULT_MODEL_DIR)
    test_size: float = DEFAULT_TEST_SIZE
    horizon_hours: float = 24.0
    drift_threshold: float = DEFAULT_DRIFT
    weather_csv: str | None = None
    site_id: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.test_size < 1:
            raise ConfigError(f"test size {self.test_size}: expected a fraction strictly between 0 and 1")
        if not 0 < self.horizon_hours <= 7 * 24:  # first: pd.Timedelta holds no longer span
            raise UsageError(f"--horizon-hours {self.horizon_hours:g}: expected a multiple of 0.25 h up to 168 h")
        steps = pd.Timedelta(hours=self.horizon_hours) / STEP
        if steps < 1 or steps != int(steps):
            raise UsageError(f"--horizon-hours {self.horizon_hours:g}: expected a multiple of 0.25 h up to 168 h")

    @property
    def horizon_steps(self) -> int:
        return int(pd.Timedelta(hours=self.horizon_hours) / STEP)

    def weather(self) -> WeatherForecast:
        """The recorded forecasts, else the simulator's (which has none for a declared site)."""
        return self.recorded_weather() or SimulatedWeatherForecast()

    def recorded_weather(self) -> WeatherForecast | None:
        """The weather service's forecasts recorded in ``weather_csv``; None without the file."""
        return CsvWeatherForecast(self.weather_csv) if self.weather_csv else None


def settings_from(model_dir: str | None = None, horizon_hours: float | None = None, *, training: bool = False) -> ForecastSettings:
    """Flags win over the environment. ``training``: the model folder must take the models
    trained, checked before the training rather than found when it is done; a command that
    only loads models may read them from a folder it cannot write in."""
    test_size = env_value("FORECAST_TEST_SIZE", fraction, DEFAULT_TEST_SIZE,
                          expected="a fraction strictly between 0 and 1, such as 0.2")
    drift = env_value("FORECAST_DRIFT_THRESHOLD", positive_float, DEFAULT_DRIFT,
                      expected="a positive fraction, such as 0.25 for a 25% rise in MAE")
    directory = model_dir or os.environ.get("FORECAST_MODEL_DIR") or DEFAULT_MODEL_DIR
    output_folder(directory, "--model-dir" if model_dir else "FORECAST_MODEL_DIR" if os.environ.get("FORECAST_MODEL_DIR")
                  else "the model folder", writable=training)
    return ForecastSettings(Path(directory), test_size, 24.0 if horizon_hours is None else horizon_hours, drift,
                            os.environ.get("FORECAST_WEATHER_CSV") or None, os.environ.get("FORECAST_SITE_ID") or None)
