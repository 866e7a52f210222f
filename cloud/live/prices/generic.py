"""Any service that serves prices as JSON or CSV over HTTP, read through a field mapping.

The mapping (:class:`cloud.live.prices.spec.HttpSpec`) names where the rows are in a JSON
body (a dot path, empty for a top-level list; a CSV body is one row per line under a header),
the field with each interval's start and how it is written, the interval's end (a field, or a
fixed length), the price field with its unit, and when prices become known: at each
interval's end (a real-time feed) or once a day before delivery at a local clock time.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import time as clock
from typing import TYPE_CHECKING, Any

import pandas as pd

from cloud.live.http import MalformedResponse, Service, field
from cloud.live.prices.base import CENTS, PER_KWH, DayAheadPublication, HttpSettings, numbers, price_frame, utc_times

if TYPE_CHECKING:
    from cloud.live.prices.spec import HttpSpec

#: ``time_format`` values that are epoch numbers, with their unit.
EPOCHS = {"epoch_s": "s", "epoch_ms": "ms"}


class HttpPrices:
    """Prices from ``spec.url``; ``{start}`` and ``{end}`` in ``spec.params`` values become the
    window's bounds (ISO 8601, UTC)."""

    def __init__(self, spec: HttpSpec, http: HttpSettings = HttpSettings()):
        self.spec, self.http = spec, http
        self.name, self.area, self.currency = spec.name, spec.area, spec.currency
        self.service = Service(spec.name, "PRICES_HTTP", spec.url)
        self.publication = None if spec.published == "interval_end" else DayAheadPublication(
            spec.time_zone, clock.fromisoformat(spec.published_time))

    def fetch(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        bounds = {"start": start.tz_convert("UTC").isoformat(), "end": end.tz_convert("UTC").isoformat()}
        params = {key: value.format(**bounds) for key, value in self.spec.params.items()}
        with self.http.client(self.service) as http:
            response = http.get(self.spec.url, params)
        rows = self._rows(response.text)
        spec, name = self.spec, self.name
        starts = self._times([field(r, spec.time_field, name) for r in rows], spec.time_field)
        if spec.end_field:
            ends = self._times([field(r, spec.end_field, name) for r in rows], spec.end_field)
        else:
            ends = starts + pd.Timedelta(minutes=spec.interval_minutes)
        prices = numbers([field(r, spec.price_field, name) for r in rows], name, spec.price_field)
        prices = prices * PER_KWH[spec.unit] * (CENTS if spec.cents else 1.0)
        published = ends if self.publication is None else self.publication.published_at(starts)
        return price_frame(self, spec.kind, starts, ends, prices, published, (start, end))

    def _rows(self, text: str) -> list[Any]:
        if self.spec.format == "csv":
            return list(csv.DictReader(io.StringIO(text)))
        try:
            body = json.loads(text)
        except ValueError:
            raise MalformedResponse(f"{self.name}: the answer is not JSON; expected the configured rows") from None
        rows = field(body, self.spec.rows, self.name) if self.spec.rows else body
        if not isinstance(rows, list):
            raise MalformedResponse(f"{self.name}: {self.spec.rows or 'the answer'} is not a list; expected the "
                                    f"price rows there")
        return rows

    def _times(self, values: list[Any], name: str) -> pd.DatetimeIndex:
        spec = self.spec
        if spec.time_format in EPOCHS:
            return utc_times(values, self.name, name, unit=EPOCHS[spec.time_format])
        fmt = "ISO8601" if spec.time_format == "iso" else spec.time_format
        return utc_times(values, self.name, name, fmt=fmt, zone=spec.time_zone)
