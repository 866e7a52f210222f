"""Settings of the feature job, validated once where they enter: flags first, then the
spec's environment variables (``FE_SITE_ID``, ``FE_BATCH_SIZE``, ``FE_ROLLING_WINDOW_DAYS``,
``FE_LOOKBACK_DAYS``) and two of ours for the grid (``FE_STEP_MINUTES``,
``FE_MAX_GAP_MINUTES``). ``FE_BATCH_SIZE`` is the number of feature rows per upsert."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import pandas as pd

from cloud.feature_engineering.pipeline import version_label
from der_core.cli_support import bounded_int, env_value, positive_int
from der_core.errors import ConfigError

DEFAULT_BATCH_SIZE = 1000
DEFAULT_ROLLING_WINDOW_DAYS = 7
DEFAULT_LOOKBACK_DAYS = 30
DEFAULT_STEP_MINUTES = 15
DEFAULT_MAX_GAP_MINUTES = 60
DEFAULT_INTERVAL_S = 3600
LONGEST_LAG = pd.Timedelta(days=7)
MINUTES_PER_DAY = 1440


def day_dividing_minutes(text: str) -> int:
    """A grid step in whole minutes that divides a day, so every day starts on a step and
    the daily and weekly lags land on steps."""
    value = positive_int(text)
    if MINUTES_PER_DAY % value:
        raise ValueError(text)
    return value


#: The longest history a lookback, a rolling window or a gap carried forward may span: beyond
#: it no date can be counted back to.
MOST_LOOKBACK_DAYS = 36_500
MOST_MINUTES = MOST_LOOKBACK_DAYS * MINUTES_PER_DAY


@dataclass(frozen=True)
class FeatureSettings:
    step: pd.Timedelta = pd.Timedelta(minutes=DEFAULT_STEP_MINUTES)
    max_gap: pd.Timedelta = pd.Timedelta(minutes=DEFAULT_MAX_GAP_MINUTES)
    rolling_window_days: int = DEFAULT_ROLLING_WINDOW_DAYS
    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    batch_size: int = DEFAULT_BATCH_SIZE
    site_id: str | None = None
    #: Steps already written that a run computes again: the last step may have been partial
    #: and the sync job re-sends its last 15 minutes, so readings can land behind the newest.
    reprocess: pd.Timedelta = pd.Timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.step <= pd.Timedelta(0) or pd.Timedelta(days=1) % self.step:
            raise ConfigError(f"grid step {self.step}: expected a whole number of minutes that divides a day")
        if self.max_gap < pd.Timedelta(0):
            raise ConfigError(f"max gap {self.max_gap}: expected zero or more minutes")
        if self.rolling_window_days < 1 or self.lookback_days < 1 or self.batch_size < 1:
            raise ConfigError("rolling window, lookback and batch size must be positive")
        if self.lookback_days > MOST_LOOKBACK_DAYS:
            raise ConfigError(f"lookback {self.lookback_days:,} days: expected at most {MOST_LOOKBACK_DAYS:,} (a century; "
                              "no meter's history is longer)")

    @property
    def version(self) -> str:
        return version_label(self.step, self.rolling_window_days, self.max_gap)

    @property
    def history(self) -> pd.Timedelta:
        """Readings before the first written step that its lags and rolling windows need:
        the longer of the week lag and the window, one step for the shift, the carry-forward
        of a gap, and one step for the interval of the first reading."""
        window = max(LONGEST_LAG, pd.Timedelta(days=self.rolling_window_days))
        return window + 2 * self.step + self.max_gap


def settings_from(args: argparse.Namespace) -> FeatureSettings:
    """Flags win over the environment."""
    lookback = args.lookback_days if getattr(args, "lookback_days", None) is not None else env_value(
        "FE_LOOKBACK_DAYS", positive_int, DEFAULT_LOOKBACK_DAYS, expected="a positive whole number of days")
    return FeatureSettings(
        step=pd.Timedelta(minutes=env_value("FE_STEP_MINUTES", day_dividing_minutes, DEFAULT_STEP_MINUTES,
                                            expected=f"a whole number of minutes that divides a day ({MINUTES_PER_DAY})")),
        max_gap=pd.Timedelta(minutes=env_value("FE_MAX_GAP_MINUTES", bounded_int(0, MOST_MINUTES), DEFAULT_MAX_GAP_MINUTES,
                                               expected=f"a whole number of minutes up to {MOST_MINUTES:,} (a century)")),
        rolling_window_days=env_value("FE_ROLLING_WINDOW_DAYS", bounded_int(1, MOST_LOOKBACK_DAYS),
                                      DEFAULT_ROLLING_WINDOW_DAYS,
                                      expected=f"a positive whole number of days up to {MOST_LOOKBACK_DAYS:,} (a century)"),
        lookback_days=lookback,
        batch_size=env_value("FE_BATCH_SIZE", positive_int, DEFAULT_BATCH_SIZE, expected="a positive whole number"),
        site_id=os.environ.get("FE_SITE_ID") or None,
    )
