"""Dynamic prices from outside services, stored with the time each was published.

One :class:`PriceSource` per service (ENTSO-E, Octopus Agile, aWATTar, ComEd, a generic JSON or
CSV feed), built from a site's spec by :func:`price_source`; :func:`fetch_prices` stores what a
source has that the store lacks; :func:`published_prices` reads prices as they were known at
an instant, and :func:`price_forecast` beyond what is published.
"""

from cloud.live.prices.base import DAY_AHEAD, REAL_TIME, HttpSettings, PriceSource
from cloud.live.prices.history import fetch_prices, knows_present, missing_windows, price_forecast, published_prices
from cloud.live.prices.spec import price_source

__all__ = ["DAY_AHEAD", "REAL_TIME", "HttpSettings", "PriceSource", "fetch_prices", "knows_present", "missing_windows",
           "price_forecast", "price_source", "published_prices"]
