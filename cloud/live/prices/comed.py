"""ComEd Hourly Pricing: the real-time 5-minute supply prices of northern Illinois.

``GET <base>/api?type=5minutefeed&datestart=YYYYMMDDhhmm&dateend=YYYYMMDDhhmm`` (Chicago wall
time, both ends included) answers ``[{"millisUTC": "…", "price": "…"}]``, the price in cents per
kWh, newest first. ``millisUTC`` is taken as the end of the 5-minute interval: ComEd labels its
hourly prices by the hour's end, and a price enters the feed once its interval has closed, so
it is also the time the price became known.
"""

from __future__ import annotations

import pandas as pd

from cloud.live.http import MalformedResponse, Service, field
from cloud.live.prices.base import CENTS, REAL_TIME, HttpSettings, numbers, price_frame, utc_times

SERVICE = Service("ComEd", "COMED", "https://hourlypricing.comed.com")
ZONE = "America/Chicago"
STEP = pd.Timedelta(minutes=5)


class ComedRealTime:
    """5-minute prices (cents/kWh → USD/kWh), each published at its interval's end."""

    name = "comed"
    area = "ComEd"
    currency = "USD"

    def __init__(self, http: HttpSettings = HttpSettings()):
        self.http = http

    def fetch(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        params = {"type": "5minutefeed", "datestart": _wall(start + STEP), "dateend": _wall(end), "format": "json"}
        with self.http.client(SERVICE) as http:
            rows = http.json("api", params)
        if not isinstance(rows, list):
            raise MalformedResponse(f"{SERVICE.name}: the answer is not a list; expected 5-minute prices")
        ends = utc_times([field(r, "millisUTC", SERVICE.name) for r in rows], SERVICE.name, "millisUTC", unit="ms")
        prices = numbers([field(r, "price", SERVICE.name) for r in rows], SERVICE.name, "price")
        return price_frame(self, REAL_TIME, ends - STEP, ends, prices * CENTS, ends, (start, end))


def _wall(ts: pd.Timestamp) -> str:
    return ts.tz_convert(ZONE).strftime("%Y%m%d%H%M")
