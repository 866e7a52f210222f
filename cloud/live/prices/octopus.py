"""Octopus Energy Agile: half-hourly unit rates of one product in one region (GSP group).

``GET <base>/v1/products/<product>/electricity-tariffs/E-1R-<product>-<region>/
standard-unit-rates/?period_from=…&period_to=…&page_size=…`` answers ``{"count", "next",
"previous", "results": [{"value_exc_vat", "value_inc_vat", "valid_from", "valid_to",
"payment_method"}]}`` (pence per kWh, times ISO 8601 in UTC), newest first, a page at a time
with ``next`` the link to the following page. The price a home pays is ``value_inc_vat``.
"""

from __future__ import annotations

from datetime import time as clock
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import pandas as pd

from cloud.live.http import MalformedResponse, Service, field
from cloud.live.prices.base import CENTS, DAY_AHEAD, DayAheadPublication, HttpSettings, numbers, price_frame, utc_times

SERVICE = Service("Octopus Energy", "OCTOPUS", "https://api.octopus.energy")
#: Agile's rates for 23:00 to 23:00 UK time are published from 16:00 UK time the day before.
AGILE = DayAheadPublication("Europe/London", clock(16, 0), timedelta(hours=23))
PAGE_SIZE = 1500
MAX_PAGES = 100


class OctopusAgile:
    """Agile rates (p/kWh incl. VAT → GBP/kWh); ``area`` is the tariff code."""

    name = "octopus"
    currency = "GBP"

    def __init__(self, product: str, region: str, http: HttpSettings = HttpSettings()):
        self.area = f"E-1R-{product}-{region}"
        self.path = f"v1/products/{product}/electricity-tariffs/{self.area}/standard-unit-rates/"
        self.http = http

    def fetch(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        params = {"period_from": _iso(start), "period_to": _iso(end), "page_size": str(PAGE_SIZE)}
        froms, tos, values = [], [], []
        with self.http.client(SERVICE) as http:
            for _ in range(MAX_PAGES):
                page = http.json(self.path, params)
                results = field(page, "results", SERVICE.name)
                if not isinstance(results, list):
                    raise MalformedResponse(f"{SERVICE.name}: field 'results' is not a list; expected the rates")
                for i in range(len(results)):
                    froms.append(field(page, f"results.{i}.valid_from", SERVICE.name))
                    tos.append(field(page, f"results.{i}.valid_to", SERVICE.name))
                    values.append(field(page, f"results.{i}.value_inc_vat", SERVICE.name))
                link = page.get("next")
                if not link:
                    break
                if not isinstance(link, str):
                    raise MalformedResponse(f"{SERVICE.name}: field 'next' is {link!r}; expected the next page's link")
                # The next page of the same endpoint, asked of our base URL (DER_OCTOPUS_URL).
                params = dict(parse_qsl(urlsplit(link).query))
            else:
                raise MalformedResponse(f"{SERVICE.name}: more than {MAX_PAGES} pages of rates; expected "
                                        f"the window to fit in fewer")
        starts = utc_times(froms, SERVICE.name, "results.valid_from")
        return price_frame(self, DAY_AHEAD, starts, utc_times(tos, SERVICE.name, "results.valid_to"),
                           numbers(values, SERVICE.name, "results.value_inc_vat") * CENTS,
                           AGILE.published_at(starts), (start, end))


def _iso(ts: pd.Timestamp) -> str:
    return ts.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
