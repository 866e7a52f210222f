"""Price and time-of-use features at each grid instant."""

from __future__ import annotations

import numpy as np
import pandas as pd

from der_core import der_data as dd

FEED_IN, CARBON, PRICE_SPREAD = "feed_in_tariff", "carbon_intensity_g_kwh", "price_spread_per_kwh"


def tou_name(period: str) -> str:
    return f"tou_{period}"


TOU_FEATURES: tuple[str, ...] = tuple(tou_name(p) for p in dd.TOU_PERIODS)
MARKET_FEATURES: tuple[str, ...] = (*TOU_FEATURES, FEED_IN, PRICE_SPREAD, CARBON)


def market_features(price: pd.Series, feed_in: pd.Series, carbon: pd.Series, tou_period: pd.Series) -> pd.DataFrame:
    """One-hot TOU period (all NaN when the period is unknown), feed-in tariff, the spread
    between buying and selling a kWh, and carbon intensity."""
    periods = tou_period.astype("object").to_numpy()
    known = pd.notna(periods) & np.isin(periods, dd.TOU_PERIODS)
    columns = {
        tou_name(p): np.where(known, (periods == p).astype("float64"), np.nan) for p in dd.TOU_PERIODS
    }
    columns[FEED_IN] = feed_in.to_numpy(dtype="float64")
    columns[PRICE_SPREAD] = price.to_numpy(dtype="float64") - columns[FEED_IN]
    columns[CARBON] = carbon.to_numpy(dtype="float64")
    return pd.DataFrame(columns, index=price.index)
