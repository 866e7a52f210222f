"""aWATTar market data: the EPEX SPOT day-ahead prices of Austria or Germany.

``GET <base>/v1/marketdata?start=<ms>&end=<ms>`` (milliseconds since the epoch) answers
``{"object": "list", "data": [{"start_timestamp", "end_timestamp", "marketprice", "unit":
"Eur/MWh"}]}``, the interval bounds in milliseconds since the epoch (UTC). Austria is served by
``api.awattar.at``, Germany by ``api.awattar.de``; ``DER_AWATTAR_URL`` replaces either.
"""

from __future__ import annotations

import pandas as pd

from cloud.live.http import MalformedResponse, Service, field
from cloud.live.prices.base import DAY_AHEAD, PER_KWH, SDAC, HttpSettings, numbers, price_frame, utc_times

SERVICES = {"AT": Service("aWATTar", "AWATTAR", "https://api.awattar.at"),
            "DE": Service("aWATTar", "AWATTAR", "https://api.awattar.de")}
UNIT = "eur/mwh"


class Awattar:
    """EPEX SPOT day-ahead prices (EUR/MWh → EUR/kWh) as aWATTar relays them; they are the
    coupled auction's results, so they are known when the SDAC's are (13:00 CET the day before)."""

    name = "awattar"
    currency = "EUR"

    def __init__(self, area: str, http: HttpSettings = HttpSettings()):
        self.area, self.service, self.http = area, SERVICES[area], http

    def fetch(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        with self.http.client(self.service) as http:
            body = http.json("v1/marketdata", {"start": _ms(start), "end": _ms(end)})
        rows = field(body, "data", self.service.name)
        if not isinstance(rows, list):
            raise MalformedResponse(f"{self.service.name}: field 'data' is not a list; expected the price rows")
        name = self.service.name
        for i in range(len(rows)):
            unit = field(rows, f"{i}.unit", name)
            if str(unit).lower() != UNIT:
                raise MalformedResponse(f"{name}: data.{i}.unit is {unit!r}; expected 'Eur/MWh'")
        starts = utc_times([field(r, "start_timestamp", name) for r in rows], name, "data.start_timestamp", unit="ms")
        ends = utc_times([field(r, "end_timestamp", name) for r in rows], name, "data.end_timestamp", unit="ms")
        prices = numbers([field(r, "marketprice", name) for r in rows], name, "data.marketprice")
        return price_frame(self, DAY_AHEAD, starts, ends, prices * PER_KWH["per_mwh"], SDAC.published_at(starts),
                           (start, end))


def _ms(ts: pd.Timestamp) -> int:
    return int(ts.tz_convert("UTC").value // 1_000_000)
