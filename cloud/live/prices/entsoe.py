"""ENTSO-E transparency platform: day-ahead prices [12.1.D] of a bidding zone.

The RESTful API answers ``GET <base>?documentType=A44&in_Domain=<EIC>&out_Domain=<EIC>
&periodStart=yyyyMMddHHmm&periodEnd=…&securityToken=…`` (times in UTC) with an XML
``Publication_MarketDocument``: ``TimeSeries`` of ``Period`` s, each a ``timeInterval``, a
``resolution`` (PT15M, PT30M, PT60M) and ``Point`` s (``position`` from 1, ``price.amount`` in
``currency_Unit.name`` per ``price_Measure_Unit.name``, EUR per MWH). With ``curveType`` A03 a
position left out repeats the one before it. Where no prices exist (yet) the answer is an
``Acknowledgement_MarketDocument`` with reason 999. Since the SDAC moved to 15-minute
products a document may hold a zone's prices at two resolutions; the finest one is kept.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd

from cloud.live.http import MalformedResponse, Service, SourceRefused
from cloud.live.prices.base import DAY_AHEAD, PER_KWH, SDAC, HttpSettings, price_frame, utc_times
from der_core.errors import ConfigError

SERVICE = Service("ENTSO-E", "ENTSOE", "https://web-api.tp.entsoe.eu/api", key_variable="ENTSOE_API_KEY")
#: Bidding zones of the day-ahead coupling and their EIC codes (the API guide's area list);
#: any other zone is given by its 16-character EIC code.
ZONES = {
    "AT": "10YAT-APG------L", "BE": "10YBE----------2", "BG": "10YCA-BULGARIA-R", "CH": "10YCH-SWISSGRIDZ",
    "CZ": "10YCZ-CEPS-----N", "DE_LU": "10Y1001A1001A82H", "DK_1": "10YDK-1--------W", "DK_2": "10YDK-2--------M",
    "EE": "10Y1001A1001A39I", "ES": "10YES-REE------0", "FI": "10YFI-1--------U", "FR": "10YFR-RTE------C",
    "GR": "10YGR-HTSO-----Y", "HR": "10YHR-HEP------M", "HU": "10YHU-MAVIR----U", "IT_NORD": "10Y1001A1001A73I",
    "IT_CNOR": "10Y1001A1001A70O", "IT_CSUD": "10Y1001A1001A71M", "IT_SUD": "10Y1001A1001A788",
    "IT_SICI": "10Y1001A1001A75E", "IT_SARD": "10Y1001A1001A74G", "IT_CALA": "10Y1001C--00096J",
    "LT": "10YLT-1001A0008Q", "LV": "10YLV-1001A00074", "NL": "10YNL----------L", "NO_1": "10YNO-1--------2",
    "NO_2": "10YNO-2--------T", "NO_3": "10YNO-3--------J", "NO_4": "10YNO-4--------9", "NO_5": "10Y1001A1001A48H",
    "PL": "10YPL-AREA-----S", "PT": "10YPT-REN------W", "RO": "10YRO-TEL------P", "SE_1": "10Y1001A1001A44P",
    "SE_2": "10Y1001A1001A45N", "SE_3": "10Y1001A1001A46L", "SE_4": "10Y1001A1001A47J", "SI": "10YSI-ELES-----O",
    "SK": "10YSK-SEPS-----K",
}
RESOLUTIONS = {"PT15M": pd.Timedelta(minutes=15), "PT30M": pd.Timedelta(minutes=30),
               "PT60M": pd.Timedelta(hours=1), "PT1H": pd.Timedelta(hours=1)}
NO_DATA = "999"


def zone_code(area: str) -> str:
    """The EIC code of a bidding zone name or of an EIC code given as is."""
    if area in ZONES:
        return ZONES[area]
    if len(area) == 16 and area[:2].isdigit() and area[2] in "YZ":
        return area
    raise ValueError(f"unknown bidding zone {area!r}; expected one of {', '.join(ZONES)} or a 16-character EIC code")


class EntsoeDayAhead:
    """Day-ahead prices of one bidding zone (EUR/MWh → EUR/kWh), published by 13:00 CET the
    day before delivery (:data:`~cloud.live.prices.base.SDAC`). The key is read from
    ``ENTSOE_API_KEY`` when the source is built, so a missing one is a configuration error
    before any request."""

    name = "entsoe"
    currency = "EUR"

    def __init__(self, area: str, http: HttpSettings = HttpSettings()):
        try:
            self.eic = zone_code(area)
        except ValueError as error:
            raise ConfigError(f"prices.area: {error}") from None
        self.area, self.http = area, http
        self._key = SERVICE.key(http.environ)

    def fetch(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        params = {"documentType": "A44", "in_Domain": self.eic, "out_Domain": self.eic,
                  "contract_MarketAgreement.type": "A01", "periodStart": _stamp(start.floor("h")),
                  "periodEnd": _stamp(end.ceil("h")), "securityToken": self._key}
        with self.http.client(SERVICE) as http:
            text = http.text(http.base_url, params)
        starts, ends, prices, currency = parse_day_ahead(text)
        return price_frame(self, DAY_AHEAD, starts, ends, prices * PER_KWH["per_mwh"], SDAC.published_at(starts),
                           (start, end), currency)


def _stamp(ts: pd.Timestamp) -> str:
    return ts.tz_convert("UTC").strftime("%Y%m%d%H%M")


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _text(element: ET.Element, path: str) -> str:
    """The text at ``path`` (``/``-separated local names) or MalformedResponse naming it."""
    found = element.find("/".join(f"{{*}}{part}" for part in path.split("/")))
    if found is None or not (found.text or "").strip():
        raise MalformedResponse(f"{SERVICE.name}: the response has no field {path!r} "
                                f"(expected as the service documents it)")
    return found.text.strip()


def parse_day_ahead(text: str) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex, np.ndarray, str | None]:
    """Interval starts, ends, prices (currency per MWh) and currency of a day-ahead price
    document; empty for the acknowledgement that no prices exist; SourceRefused for any
    other acknowledgement."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        raise MalformedResponse(f"{SERVICE.name}: the answer is not XML; expected a "
                                f"Publication_MarketDocument") from None
    if _local(root.tag) == "Acknowledgement_MarketDocument":
        code = root.findtext("{*}Reason/{*}code", "").strip()
        if code == NO_DATA:
            return pd.DatetimeIndex([], tz="UTC"), pd.DatetimeIndex([], tz="UTC"), np.array([]), None
        reason = " ".join(root.findtext("{*}Reason/{*}text", "").split())[:200]
        raise SourceRefused(f"{SERVICE.name} refused the request: reason {code or '?'} {reason}")
    if _local(root.tag) != "Publication_MarketDocument":
        raise MalformedResponse(f"{SERVICE.name}: the answer is a {_local(root.tag)}; expected a "
                                f"Publication_MarketDocument")
    series = [_series(element) for element in root.findall("{*}TimeSeries")]
    rows = pd.concat(series, ignore_index=True) if series else pd.DataFrame()
    if rows.empty:  # no series, or periods without a priced point
        return pd.DatetimeIndex([], tz="UTC"), pd.DatetimeIndex([], tz="UTC"), np.array([]), None
    rows = _finest(rows)
    currencies = rows["currency"].unique()
    if len(currencies) > 1:
        raise MalformedResponse(f"{SERVICE.name}: one document prices in {', '.join(currencies)}; expected one currency")
    return (pd.DatetimeIndex(rows["start"]), pd.DatetimeIndex(rows["end"]), rows["price"].to_numpy(),
            str(currencies[0]))


def _series(element: ET.Element) -> pd.DataFrame:
    """The rows of one ``TimeSeries``: one per position of each of its periods."""
    currency = _text(element, "currency_Unit.name")
    measure = _text(element, "price_Measure_Unit.name")
    if measure.upper() != "MWH":
        raise MalformedResponse(f"{SERVICE.name}: prices per {measure}; expected price_Measure_Unit.name MWH")
    repeats = (element.findtext("{*}curveType") or "A01").strip() == "A03"
    frames = []
    for period in element.findall("{*}Period"):
        first, last = utc_times([_text(period, "timeInterval/start"), _text(period, "timeInterval/end")],
                                SERVICE.name, "Period.timeInterval")
        if last <= first:
            raise MalformedResponse(f"{SERVICE.name}: a Period's timeInterval ends at {_text(period, 'timeInterval/end')}, "
                                    f"not after its start {_text(period, 'timeInterval/start')}; expected an end after the start")
        resolution = _text(period, "resolution")
        if resolution not in RESOLUTIONS:
            raise MalformedResponse(f"{SERVICE.name}: resolution {resolution!r}; expected one of "
                                    f"{', '.join(RESOLUTIONS)}")
        step = RESOLUTIONS[resolution]
        count = int((last - first) / step)
        prices = np.full(count, np.nan)
        for point in period.findall("{*}Point"):
            try:
                position, amount = int(_text(point, "position")), float(_text(point, "price.amount"))
            except ValueError:
                raise MalformedResponse(f"{SERVICE.name}: a Point's position or price.amount is not a number") from None
            if not 1 <= position <= count:
                raise MalformedResponse(f"{SERVICE.name}: Point position {position} outside its period of {count}")
            prices[position - 1] = amount
        if repeats:
            prices = pd.Series(prices).ffill().to_numpy()
        starts = first + step * np.arange(count)
        frames.append(pd.DataFrame({"start": starts, "end": starts + step, "price": prices, "step": step,
                                    "currency": currency}).dropna(subset=["price"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["start", "end", "price", "step", "currency"])


def _finest(rows: pd.DataFrame) -> pd.DataFrame:
    """Of rows overlapping in time, those of the finest resolution (the market's own
    time unit; a coarser series of the same zone is an average of it)."""
    kept: list[pd.DataFrame] = []
    for _, group in rows.sort_values("step").groupby("step", sort=True):
        if kept:
            finer = pd.concat(kept)
            lo, hi = finer["start"].to_numpy(), finer["end"].to_numpy()
            overlaps = (group["start"].to_numpy()[:, None] < hi) & (group["end"].to_numpy()[:, None] > lo)
            group = group[~overlaps.any(axis=1)]
        kept.append(group.drop_duplicates("start"))
    return pd.concat(kept).sort_values("start", ignore_index=True)
