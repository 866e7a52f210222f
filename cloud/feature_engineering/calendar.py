"""Calendar features in the site's local time: the rhythm of a household follows its own
clock (and its country's public holidays), not UTC."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

HOUR, DAY_OF_WEEK, MONTH, DAY_OF_YEAR = "hour", "day_of_week", "month", "day_of_year"
IS_WEEKEND, IS_HOLIDAY = "is_weekend", "is_holiday"
HOUR_SIN, HOUR_COS, DOW_SIN, DOW_COS, DOY_SIN, DOY_COS = (
    "hour_sin", "hour_cos", "dow_sin", "dow_cos", "doy_sin", "doy_cos",
)
CALENDAR_FEATURES: tuple[str, ...] = (
    HOUR, DAY_OF_WEEK, MONTH, DAY_OF_YEAR, IS_WEEKEND, IS_HOLIDAY,
    HOUR_SIN, HOUR_COS, DOW_SIN, DOW_COS, DOY_SIN, DOY_COS,
)


@lru_cache(maxsize=256)
def holiday_dates(country: str, years: tuple[int, ...]) -> frozenset | None:
    """Public holidays of ``country`` in ``years``; ``None`` when the package has no calendar
    for it (then ``is_holiday`` is unknown, not false)."""
    import holidays

    try:
        return frozenset(np.datetime64(day, "D") for day in holidays.country_holidays(country, years=years))
    except NotImplementedError:
        return None


def calendar_features(index: pd.DatetimeIndex, timezone: str, country: str | None) -> pd.DataFrame:
    """Hour, weekday, month, weekend and public holiday of each instant in ``timezone``, with
    sin/cos encodings so 23:45 sits next to 00:00 and December next to January."""
    index = pd.DatetimeIndex(index)
    # Computed once per distinct grid, time zone and country, not once per site.
    values = _calendar_values(index.asi8.tobytes(), str(index.dtype), timezone, country)
    return pd.DataFrame(values.copy(), index=index, columns=list(CALENDAR_FEATURES))


@lru_cache(maxsize=8)
def _calendar_values(stamps: bytes, dtype: str, timezone: str, country: str | None) -> np.ndarray:
    """The features of one grid (keyed by its raw int64 stamps and dtype), one column each."""
    unit = dtype.split("[")[1].split(",")[0].rstrip("]")  # datetime64[us, UTC] -> us
    index = pd.DatetimeIndex(np.frombuffer(stamps, dtype="int64").view(f"datetime64[{unit}]"), tz="UTC")
    # Wall-clock local time as naive stamps: every field below reads them directly, where a
    # tz-aware index converts to local time again for each field.
    local = index.tz_convert(timezone).tz_localize(None)
    hour_of_day = local.hour.to_numpy() + local.minute.to_numpy() / 60.0 + local.second.to_numpy() / 3600.0
    dow = local.day_of_week.to_numpy()
    doy = local.day_of_year.to_numpy()
    days_in_year = np.where(local.is_leap_year, 366.0, 365.0)
    dates = local.to_numpy().astype("datetime64[D]")
    years = tuple(int(year) for year in np.unique(local.year))
    holidays = holiday_dates(country.upper(), years) if country and len(local) else None
    if holidays is None:
        is_holiday = np.full(len(local), np.nan)
    else:
        is_holiday = np.isin(dates, np.array(sorted(holidays), dtype="datetime64[D]")).astype("float64")
    features = {
        HOUR: local.hour.to_numpy(),
        DAY_OF_WEEK: dow,
        MONTH: local.month.to_numpy(),
        DAY_OF_YEAR: doy,
        IS_WEEKEND: (dow >= 5),
        IS_HOLIDAY: is_holiday,
        HOUR_SIN: np.sin(2 * np.pi * hour_of_day / 24.0),
        HOUR_COS: np.cos(2 * np.pi * hour_of_day / 24.0),
        DOW_SIN: np.sin(2 * np.pi * dow / 7.0),
        DOW_COS: np.cos(2 * np.pi * dow / 7.0),
        DOY_SIN: np.sin(2 * np.pi * (doy - 1) / days_in_year),
        DOY_COS: np.cos(2 * np.pi * (doy - 1) / days_in_year),
    }
    return np.column_stack([np.asarray(features[name], dtype="float64") for name in CALENDAR_FEATURES])
