"""A site's price source as its configuration gives it, validated once into an adapter.

``{"source": "entsoe", "area": "DE_LU"}``, ``{"source": "octopus", "product":
"AGILE-24-10-01", "region": "C"}``, ``{"source": "awattar", "area": "AT"}``, ``{"source":
"comed"}`` or ``{"source": "http", "url": …, …}`` (:class:`HttpSpec`) → :func:`price_source`.
A wrong spec is one :class:`~der_core.errors.ConfigError` line naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from cloud.live.prices.awattar import Awattar
from cloud.live.prices.base import DAY_AHEAD, HttpSettings, PriceSource
from cloud.live.prices.comed import ComedRealTime
from cloud.live.prices.entsoe import EntsoeDayAhead, zone_code
from cloud.live.prices.generic import EPOCHS, HttpPrices
from cloud.live.prices.octopus import OctopusAgile
from der_core.config import _Section, check_zone, validated
from der_core.errors import ConfigError

WHERE = "prices"


class EntsoeSpec(_Section):
    source: Literal["entsoe"]
    area: str = Field(description="bidding zone, e.g. DE_LU, or its EIC code")

    @field_validator("area")
    @classmethod
    def _known(cls, area: str) -> str:
        zone_code(area)
        return area

    def build(self, http: HttpSettings) -> PriceSource:
        return EntsoeDayAhead(self.area, http)


class OctopusSpec(_Section):
    source: Literal["octopus"]
    product: str = Field(pattern=r"^[A-Z0-9][A-Z0-9-]*$", description="e.g. AGILE-24-10-01")
    region: str = Field(pattern=r"^[A-HJ-NP]$", description="GSP group letter A-P (no I or O)")

    def build(self, http: HttpSettings) -> PriceSource:
        return OctopusAgile(self.product, self.region, http)


class AwattarSpec(_Section):
    source: Literal["awattar"]
    area: Literal["AT", "DE"]

    def build(self, http: HttpSettings) -> PriceSource:
        return Awattar(self.area, http)


class ComedSpec(_Section):
    source: Literal["comed"]

    def build(self, http: HttpSettings) -> PriceSource:
        return ComedRealTime(http)


class HttpSpec(_Section):
    """A JSON or CSV price feed read through a field mapping (see :mod:`.generic`)."""

    source: Literal["http"]
    name: str = Field("http", pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="the source column")
    area: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://\S+$")
    params: dict[str, str] = Field(default_factory=dict, description="query; {start}/{end} become the window")
    format: Literal["json", "csv"] = "json"
    rows: str = Field("", description="dot path to the list of rows in a JSON body; empty: the body")
    time_field: str = Field(min_length=1)
    time_format: str = Field("iso", description="iso, epoch_s, epoch_ms or a strftime pattern")
    time_zone: str = Field("UTC", description="zone of times written without an offset, and of published_time")
    end_field: str | None = None
    interval_minutes: int = Field(60, gt=0, le=1440, description="interval length without end_field")
    price_field: str = Field(min_length=1)
    unit: Literal["per_kwh", "per_mwh"]  # the keys of base.PER_KWH
    cents: bool = Field(False, description="prices in hundredths of the currency (cents, pence)")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    kind: Literal["day_ahead", "real_time"] = DAY_AHEAD
    published: Literal["interval_end", "day_before"] = "interval_end"
    published_time: str = Field("13:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="local, with day_before")

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, zone: str) -> str:
        return check_zone(zone)

    @field_validator("params")
    @classmethod
    def _placeholders(cls, params: dict[str, str]) -> dict[str, str]:
        """Each value formats with the window's bounds alone, so a wrong one is refused here,
        where the site file enters, not at every fetch."""
        for key, value in params.items():
            try:
                value.format(start="", end="")
            except (KeyError, IndexError, ValueError, AttributeError) as error:
                raise ValueError(f"{key}: {value!r} cannot be filled ({type(error).__name__}: {error}); expected "
                                 "text with {start} and {end} as its only placeholders, literal braces doubled") from None
        return params

    @field_validator("time_format")
    @classmethod
    def _format(cls, fmt: str) -> str:
        if fmt != "iso" and fmt not in EPOCHS and "%" not in fmt:
            raise ValueError(f"unknown time format {fmt!r}; expected iso, epoch_s, epoch_ms or a strftime pattern")
        return fmt

    def build(self, http: HttpSettings) -> PriceSource:
        return HttpPrices(self, http)


SPECS: dict[str, type[_Section]] = {"entsoe": EntsoeSpec, "octopus": OctopusSpec, "awattar": AwattarSpec,
                                    "comed": ComedSpec, "http": HttpSpec}


def price_source(spec: Mapping[str, Any], http: HttpSettings = HttpSettings()) -> PriceSource:
    """The adapter a site's ``prices`` spec asks for; ConfigError (one line) for an unknown
    source, a missing or wrong field, or a key the source needs and the environment lacks."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{WHERE}: expected an object with a \"source\" field, got {type(spec).__name__}")
    name = spec.get("source")
    if name not in SPECS:
        shown = "no source" if name is None else f"unknown source {name!r}"
        raise ConfigError(f"{WHERE}.source: {shown}; expected one of {', '.join(SPECS)}")
    return validated(SPECS[name], dict(spec), WHERE).build(http)
