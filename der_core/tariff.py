"""A home's tariff as data: what a kWh imported costs, what one exported earns, and the fixed
and demand charges on top. ``der_physics.tariff.tariff_prices`` turns one into per-step prices;
every bill is made from those (``cloud.optimization.bill.grid_bill``).

Import price, one of:

* ``{"kind": "fixed", "price": 0.30}``;
* ``{"kind": "tou", "periods": [...], "otherwise": 0.08}``: each period has a ``price``, the
  ``days`` it applies on (``weekday``, ``weekend``, ``holiday``: every local date is exactly one,
  a public holiday of the site's country first) and local ``hours`` as ``[from, to)`` ranges
  (``[22, 6]`` runs across midnight); the first period that holds sets the price, ``otherwise``
  where none does;
* ``{"kind": "dynamic", "factor": 1.0, "adders": {"grid_fee": 0.10}, "vat": 0.19}``: the
  wholesale price of the step times ``factor``, plus the adders, the sum taxed at ``vat``
  (the German retail formula ``(spot + levies and fees) * (1 + VAT)``).

Export price: ``fixed`` or ``tou`` as above, or ``{"kind": "dynamic", "factor": 1.0,
"adder": 0.0, "minimum": 0.0}``: wholesale times factor plus adder, never below ``minimum``
when one is given. Prices are per kWh in the tariff's currency (the site's when null).

``standing_charge_per_day`` is paid every day whatever flows; ``demand_charge_per_kw`` on the
billing period's peak import, counted only in ``demand_window`` (local days and hours, as a
period's) when one is given.

The simulated sites' time-of-use schedule (:data:`DEFAULT_SCHEDULE`, priced from the simulator
configuration's ``grid_price`` by :func:`tou_tariff`) is one tariff of this form; the
simulator's own real-time noise and spikes are added on top of its prices in
``der_physics.grid_price``, not here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from der_core.money import check_currency
from der_core.section import Section

if TYPE_CHECKING:
    from der_core.config import SimulatorConfig

DAY_KINDS: tuple[str, ...] = ("weekday", "weekend", "holiday")
DayKind = Literal["weekday", "weekend", "holiday"]
Price = Annotated[float, Field(ge=-10, le=100, description="per kWh")]
#: Exports are worth more when the grid is short: the simulated sites' feed-in tariff per
#: time-of-use period (off-peak, shoulder, peak) as a share of the base feed-in tariff.
FEED_IN_FACTOR = np.array([0.8, 1.0, 1.6])


class When(Section):
    """Local days and hours: ``hours`` are ``[from, to)`` ranges in [0, 24]; ``from > to``
    runs across midnight."""

    days: list[DayKind] = Field(min_length=1)
    #: At most a range per quarter hour of the day: more can only repeat one, and each is a pass
    #: over every priced step, so a file of hundreds of thousands slowed every plan to a crawl.
    hours: list[list[float]] = Field(min_length=1, max_length=96)

    @field_validator("hours")
    @classmethod
    def _ranges(cls, value: list[list[float]]) -> list[list[float]]:
        for i, pair in enumerate(value):
            if len(pair) != 2 or not all(0 <= h <= 24 for h in pair) or pair[0] == pair[1]:
                raise ValueError(f"range {i} is {pair}; expected [from, to] with two different local hours "
                                 "in 0..24, such as [16, 21] (or [22, 6] across midnight)")
            if pair == [24, 0]:  # from midnight's end to its start: across midnight, it holds no instant
                raise ValueError(f"range {i} is {pair}, which holds no hour; expected [0, 24] for the whole day")
        return value


class TouPeriod(When):
    price: Price
    name: str | None = Field(None, max_length=40)


class FixedPrice(Section):
    kind: Literal["fixed"]
    price: Price


class TouPrice(Section):
    kind: Literal["tou"]
    periods: list[TouPeriod] = Field(min_length=1, max_length=48)
    otherwise: Price = Field(description="the price outside every period")


class DynamicImport(Section):
    kind: Literal["dynamic"]
    factor: float = Field(1.0, gt=0, le=10, description="times the wholesale price")
    adders: dict[str, Price] = Field(default_factory=dict, description="per kWh, added before tax")
    vat: float = Field(0.0, ge=0, le=1, description="tax on the sum, 0.19 for 19 %")


class DynamicExport(Section):
    kind: Literal["dynamic"]
    factor: float = Field(1.0, ge=0, le=10, description="times the wholesale price")
    adder: Price = 0.0
    minimum: Price | None = Field(None, description="the lowest price paid; null: none")


ImportPrice = Annotated[FixedPrice | TouPrice | DynamicImport, Field(discriminator="kind")]
ExportPrice = Annotated[FixedPrice | TouPrice | DynamicExport, Field(discriminator="kind")]


class Tariff(Section):
    """A tariff, as the module says."""

    name: str | None = Field(None, max_length=80)
    currency: str | None = Field(None, description="ISO 4217 code; null: the site's")
    import_price: ImportPrice
    export_price: ExportPrice
    standing_charge_per_day: float = Field(0.0, ge=0, le=1000)
    demand_charge_per_kw: float = Field(0.0, ge=0, le=10_000, description="per kW of the billing period's peak import")
    demand_window: When | None = Field(None, description="when the peak counts; null: always")

    _currency = field_validator("currency")(lambda cls, value: check_currency(value))

    @model_validator(mode="after")
    def _window_needs_a_charge(self) -> Tariff:
        if self.demand_window is not None and self.demand_charge_per_kw == 0:
            raise ValueError("demand_window is given but demand_charge_per_kw is 0; expected a charge for the window")
        return self

    def billing_currency(self, site_currency: str | None) -> str | None:
        """The currency a site billed on this tariff counts its money in: the site's, else the
        tariff's (None: the site's country's). A bill adds the tariff's prices up unconverted,
        so a site declaring another currency than its tariff is refused (ValueError)."""
        if site_currency and self.currency and site_currency != self.currency:
            raise ValueError(f"the site's currency is {site_currency} and its tariff's {self.currency}; expected one "
                             "currency (leave the site's null to take the tariff's)")
        return site_currency or self.currency

    @property
    def needs_wholesale(self) -> bool:
        """Whether pricing it takes a wholesale price per step."""
        return "dynamic" in (self.import_price.kind, self.export_price.kind)


#: The simulated sites' time-of-use periods, named as ``der_data.TOU_PERIODS``. Weekdays:
#: peak 16:00-21:00, shoulder 07:00-16:00 and 21:00-23:00; weekends and public holidays:
#: shoulder 16:00-21:00; off-peak otherwise (the shape of common US and Australian
#: residential time-of-use tariffs).
DEFAULT_SCHEDULE: tuple[tuple[str, tuple[str, ...], tuple[tuple[float, float], ...]], ...] = (
    ("peak", ("weekday",), ((16.0, 21.0),)),
    ("shoulder", ("weekday",), ((7.0, 16.0), (21.0, 23.0))),
    ("shoulder", ("weekend", "holiday"), ((16.0, 21.0),)),
)
OTHERWISE_PERIOD = "off_peak"


def _schedule(prices: dict[str, float]) -> TouPrice:
    periods = [TouPeriod(name=name, days=list(days), hours=[list(h) for h in hours], price=prices[name])
               for name, days, hours in DEFAULT_SCHEDULE]
    return TouPrice(kind="tou", periods=periods, otherwise=prices[OTHERWISE_PERIOD])


@lru_cache(maxsize=64)
def tou_tariff(off_peak_price: float, shoulder_price: float, peak_price: float, base_feed_in_tariff: float,
               demand_charge: float = 0.0, name: str | None = "default_tou") -> Tariff:
    """The simulated sites' time-of-use tariff at these prices: :data:`DEFAULT_SCHEDULE`,
    exports paid ``base_feed_in_tariff`` times :data:`FEED_IN_FACTOR` of the period but never
    more than an import costs then."""
    imports = {"off_peak": off_peak_price, "shoulder": shoulder_price, "peak": peak_price}
    exports = {period: min(base_feed_in_tariff * float(factor), imports[period])
               for period, factor in zip(imports, FEED_IN_FACTOR, strict=True)}
    return Tariff(name=name, import_price=_schedule(imports), export_price=_schedule(exports),
                  demand_charge_per_kw=demand_charge)


def site_tariff(config: SimulatorConfig) -> Tariff:
    """The tariff a site's plans and bills price energy with: its configuration's ``tariff``,
    else the time-of-use tariff of its ``grid_price`` section."""
    if config.tariff is not None:
        return config.tariff
    g = config.grid_price
    return tou_tariff(g.off_peak_price, g.shoulder_price, g.peak_price, g.base_feed_in_tariff, g.demand_charge)
