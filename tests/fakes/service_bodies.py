"""Documented answers of the outside services, shared by the tests that fake them.

* Open-Meteo's forecast API (open-meteo.com/en/docs, "API Response"): a header with
  ``utc_offset_seconds`` and ``timezone`` GMT, then ``<block>_units`` and ``<block>`` with
  ``time`` and one list per variable, e.g. ``"hourly": {"time": ["2022-07-01T00:00", ...],
  "temperature_2m": [13.7, ...]}``.
* Open-Meteo's Previous Model Runs API (https://open-meteo.com/en/docs/previous-runs-api):
  the same body, each hourly variable named with the suffix asked for,
  ``"hourly": {"time": [...], "temperature_2m_previous_day1": [...]}`` and the same keys in
  ``hourly_units``; "``_previous_day1`` is the value that was predicted 24 hours before valid
  time", radiation "averaged over the past hour".
* Octopus Energy's tariff charges listing (developer.octopus.energy/rest/guides/endpoints,
  "standard-unit-rates"; example apis.io/examples/octopus-energy/octopus-energy-list-electricity-
  standard-unit-rates-example/): ``{"count", "next", "previous", "results": [{"value_exc_vat",
  "value_inc_vat", "valid_from", "valid_to", "payment_method"}]}``, pence per kWh, UTC "Z"
  times, newest first, paginated through ``next``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from tests.fakes.http_service import Reply


def open_meteo_body(block: str, times: list, **overrides) -> dict:
    """Open-Meteo's answer for ``times`` (unix seconds or ISO text): radiation and temperature
    ramp up over the answer, cloud cover and wind are constant; ``overrides`` replace variables."""
    n = len(times)
    ramp = np.linspace(0.0, 1.0, n)
    data = {"time": times, "shortwave_radiation": list(np.round(600 * ramp, 1)),
            "direct_normal_irradiance": list(np.round(700 * ramp, 1)),
            "diffuse_radiation": list(np.round(100 * ramp, 1)), "temperature_2m": list(np.round(15 + 5 * ramp, 1)),
            "cloud_cover": [40] * n, "wind_speed_10m": [3.2] * n}
    data.update(overrides)
    return {"latitude": 52.52, "longitude": 13.419998, "generationtime_ms": 0.1, "utc_offset_seconds": 0,
            "timezone": "GMT", "timezone_abbreviation": "GMT", "elevation": 38.0,
            f"{block}_units": {"time": "unixtime" if n and isinstance(times[0], int) else "iso8601",
                               "shortwave_radiation": "W/m²", "direct_normal_irradiance": "W/m²",
                               "diffuse_radiation": "W/m²", "temperature_2m": "°C", "cloud_cover": "%",
                               "wind_speed_10m": "m/s"},
            block: data}


def previous_runs_body(times: list, lead_days: int = 1, **overrides) -> dict:
    """The Previous Model Runs API's answer (module docstring) for ``times``: :func:`open_meteo_body`'s
    hourly values under ``<variable>_previous_day<lead_days>``; ``overrides`` by plain variable name."""
    body = open_meteo_body("hourly", times, **overrides)
    suffix = f"_previous_day{lead_days}"
    for block in ("hourly", "hourly_units"):
        body[block] = {(k if k == "time" else k + suffix): v for k, v in body[block].items()}
    return body


def unix(start: str | pd.Timestamp, periods: int, freq: str) -> list[int]:
    return [int(t.timestamp()) for t in pd.date_range(start, periods=periods, freq=freq, tz="UTC")]


PRODUCT, REGION = "AGILE-24-10-01", "C"
TARIFF = f"E-1R-{PRODUCT}-{REGION}"
RATES_PATH = f"/v1/products/{PRODUCT}/electricity-tariffs/{TARIFF}/standard-unit-rates/"


def agile_results(start: pd.Timestamp, end: pd.Timestamp,
                  pence: Callable[[int, pd.Timestamp], float] = lambda i, _: 10 + 0.5 * i) -> list[dict]:
    """Agile's half-hourly rates from ``start`` to ``end``, newest first; slot ``i`` starting
    at ``t`` costs ``pence(i, t)`` p/kWh including VAT (default: 10 p rising by 0.5 p a slot)."""
    starts = pd.date_range(start, end, freq="30min", inclusive="left")
    rows = [{"value_exc_vat": round(pence(i, t) / 1.05, 4), "value_inc_vat": pence(i, t),
             "valid_from": f"{t:%Y-%m-%dT%H:%M:%SZ}", "valid_to": f"{t + pd.Timedelta(minutes=30):%Y-%m-%dT%H:%M:%SZ}",
             "payment_method": None} for i, t in enumerate(starts)]
    return rows[::-1]


def agile_pages(base_url: str, results: list[dict], size: int) -> list[Reply]:
    """``results`` as the listing's pages of ``size``, each linking the next at ``base_url``."""
    pages = [results[i:i + size] for i in range(0, len(results), size)]
    return [Reply(200, {"count": len(results),
                        "next": f"{base_url}{RATES_PATH}?page={n + 2}&page_size={size}" if n + 1 < len(pages) else None,
                        "previous": None, "results": page}) for n, page in enumerate(pages)]
