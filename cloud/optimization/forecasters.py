"""What the planner knows about the next horizon: forecasters behind one small interface.

A :class:`Forecaster` is called with the instant a plan is issued and the reading instants
of the horizon, and returns one row per instant with :data:`COLUMNS`. Instants follow the
readings' convention: the values at ``t`` describe the interval ending at ``t``.

* :class:`PerfectForecaster` returns what will happen (the upper bound's information);
* :class:`NaiveForecaster` uses only what is known at issue time: load from the site's past
  (same time on recent days, corrected towards the latest reading, never below the house's own
  load without the car), PV as :func:`pv_forecast.pv_forecast` says for the kind of site it
  is, price from the tariff's time-of-use schedule, which is published in advance, or for a
  dynamic tariff from the wholesale prices known at issue time (:data:`Wholesale`);
* :func:`models_forecaster` adapts ``cloud.forecasting``'s active models when that package
  is installed.

Forecasters are chosen by name from :data:`FORECASTERS` (:func:`make_forecaster`); the
default name, :data:`AUTO`, is the trained models wherever they cover the site and naive
elsewhere (:func:`choose`), so a site with models plans on them on every path. One that
also offers load scenarios is a :class:`ScenarioForecaster`; only the perfect one knows when
load nobody can time, a car's session, will come (:func:`times_the_load`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from cloud.optimization import sessions
from cloud.optimization.model import DispatchError
from cloud.optimization.pv_forecast import MeasuredPV, pv_forecast
from cloud.optimization.same_time import values_at, wall
from der_core import der_data as dd
from der_core.config import SimulatorConfig
from der_core.errors import UsageError
from der_core.tariff import site_tariff
from der_physics import base, generator, grid_price
from der_physics.tariff import tariff_prices

LOAD, PV, IMPORT_PRICE, EXPORT_PRICE, CARBON = (
    "load_kw", "pv_kw", "import_price_per_kwh", "export_price_per_kwh", "carbon_g_per_kwh",
)
COLUMNS: tuple[str, ...] = (LOAD, PV, IMPORT_PRICE, EXPORT_PRICE, CARBON)
DAY = pd.Timedelta(days=1)
HISTORY_DAYS = 7
#: How long the latest load reading's departure from the usual pattern stays in the forecast,
#: in full: a car charging now typically goes on for an hour or two and then stops, so a fade
#: would tell the planner it can cover the load for a while longer than it can hold the peak.
ANOMALY_PERSIST_H = 2.0
YESTERDAY_WEIGHT = 0.3
#: Readings whose median anomaly the house-only load forecast carries (an hour of 15-minute readings).
HOUSE_ANOMALY_READINGS = 4
#: The step the forecasting package's models are trained on.
MODELS_STEP = pd.Timedelta(minutes=15)


#: The wholesale price of each instant as known at the issue time, ``wholesale(issued_at,
#: instants)``, that a dynamic tariff prices from (``cloud.live.inputs.SiteInputs.wholesale``).
Wholesale = Callable[[pd.Timestamp, pd.DatetimeIndex], "np.ndarray | None"]


class ForecasterUnavailable(DispatchError):
    """The requested forecaster cannot run here (its package or models are missing)."""


class Forecaster(Protocol):
    name: str

    def __call__(self, issued_at: pd.Timestamp, instants: pd.DatetimeIndex) -> pd.DataFrame:
        """One row per instant of ``instants`` with :data:`COLUMNS`, using what is known at ``issued_at``."""
        ...


def site_actuals(config: SimulatorConfig, instants: Sequence[pd.Timestamp] | pd.DatetimeIndex) -> pd.DataFrame:
    """What the simulated site does at ``instants`` regardless of its battery (the truth)."""
    axis = base.TimeAxis.from_times(instants)
    exo = generator.exogenous([config], axis)
    return pd.DataFrame(
        {
            LOAD: exo.load_kw[0],
            PV: exo.solar_kw[0],
            IMPORT_PRICE: exo.price_per_kwh[0],
            EXPORT_PRICE: exo.feed_in_tariff[0],
            CARBON: exo.carbon_g_kwh[0],
        },
        index=axis.times,
    )


@dataclass(frozen=True)
class ScenarioForecast:
    """A forecast whose load is uncertain in a way one value per step cannot say: ``frame``
    (:data:`COLUMNS`) plus, per scenario, load added on top of its ``LOAD`` column."""

    frame: pd.DataFrame
    extra_load_kw: np.ndarray  # (scenarios, steps)
    charging_now: bool = False  # an EV session is under way at the issue instant

    def frames(self) -> list[pd.DataFrame]:
        """One forecast frame per scenario."""
        return [self.frame.assign(**{LOAD: self.frame[LOAD].to_numpy() + extra}) for extra in self.extra_load_kw]


@runtime_checkable
class ScenarioForecaster(Forecaster, Protocol):
    """A forecaster that also says how the load may turn out: the planner plans over its
    scenarios (stochastic.py) where one forecast would average a car's session away."""

    def scenarios(self, issued_at: pd.Timestamp, instants: pd.DatetimeIndex) -> ScenarioForecast:
        """The forecast of ``__call__``'s instants with load scenarios on top."""
        ...


class PerfectForecaster:
    """Tomorrow as it will be: the information of the perfect-foresight upper bound, which the
    site's simulator holds. A declared site has no simulator, so it has no perfect forecaster
    (:func:`perfect_forecaster` refuses it)."""

    name = "perfect"
    reason = ""  # why it was chosen (make_forecaster)

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config

    def __call__(self, issued_at: pd.Timestamp, instants: pd.DatetimeIndex) -> pd.DataFrame:
        return site_actuals(self.config, instants)


def perfect_forecaster(config: SimulatorConfig, measured: MeasuredPV | None = None) -> PerfectForecaster:
    """The perfect forecaster of a simulated site; a declared one (``measured`` given) is refused."""
    if measured is not None:
        raise ForecasterUnavailable(f"{config.device_id} is a declared site: perfect foresight replays a simulator, "
                                    "which a real site has not; use --forecaster naive or models")
    return PerfectForecaster(config)


def tariff_forecast(config: SimulatorConfig, instants: pd.DatetimeIndex, clear_sky_ghi_w_m2: np.ndarray,
                    wholesale_per_kwh: np.ndarray | None = None) -> pd.DataFrame:
    """Prices from the site's tariff (``der_core.tariff.site_tariff``), which is published in
    advance, and carbon intensity, without the simulator's real-time variation and scarcity
    spikes nobody knows a day ahead. ``wholesale_per_kwh``: the wholesale price of each
    instant for a dynamic tariff (NaN where unknown)."""
    axis = base.TimeAxis.from_times(instants)
    hour, _, _ = base.local_clock(axis, config.timezone)
    price, feed_in = tariff_prices(site_tariff(config), axis.times, config.timezone, config.country, wholesale_per_kwh)
    sun_up = np.clip(clear_sky_ghi_w_m2 / 1000.0, 0.0, 1.0)
    carbon = grid_price.carbon_intensity(hour, sun_up, np.zeros(len(axis)))
    return pd.DataFrame({IMPORT_PRICE: price, EXPORT_PRICE: feed_in, CARBON: carbon}, index=axis.times)


def naive_load_kw(history_kw: pd.Series, issued_at: pd.Timestamp, instants: pd.DatetimeIndex, timezone: str,
                  anomaly_readings: int = 1) -> np.ndarray:
    """Seasonal-naive load: the same local clock time (:func:`same_time.values_at`, the
    household's routine) on the latest day known, blended with the mean of the same time over
    the last week, plus the latest anomaly for ANOMALY_PERSIST_H.

    The anomaly is the median over the last ``anomaly_readings`` readings of their departure
    from the usual: one reading catches a car that just started; with the car taken out
    (:meth:`NaiveForecaster.scenarios`) a few keep a kettle's one-slot burst from lasting hours.
    Only readings at or before ``issued_at`` are used; missing ones fall back to the mean.
    No step is forecast below the lowest load of the last week: a house is never quieter
    than its standing load, however far below the usual its latest reading fell (a quiet
    evening after a busy week's would otherwise forecast 0 kW for the anomaly's hours).
    """
    past = history_kw.loc[:issued_at].dropna()
    if past.empty:
        raise ForecasterUnavailable(f"no house load ({dd.LOAD_TOTAL}) before {issued_at}: a plan needs the home's "
                                    f"own; import it (run_cloud_sync.py --import FILE --column-map COLUMN={dd.LOAD_TOTAL}), "
                                    f"or the grid flow beside the PV (COLUMN={dd.NET_GRID_FLOW})")
    fallback = float(past.mean())
    readings = past.iloc[-anomaly_readings:]
    lead = wall(instants, timezone) - wall(issued_at, timezone)  # on the clock: a day is 24 h
    days_back = np.r_[np.maximum(np.ceil(np.asarray(lead / DAY)), 1).astype(int), np.ones(len(readings), dtype=int)]
    # Row k: the same time k days before the latest day known, at the instants and then at the
    # latest readings (whose latest day known is the day before): one lookup for both.
    same_time = values_at(past, instants.append(readings.index), days_back + np.arange(HISTORY_DAYS)[:, None], timezone)
    week = _nanmean_rows(same_time) if len(past) > 1 else np.full(len(days_back), np.nan)
    anomaly = _median_departure_kw(readings.to_numpy() - week[len(instants):])
    latest, week = same_time[0, :len(instants)], week[:len(instants)]
    latest, week = np.where(np.isnan(latest), fallback, latest), np.where(np.isnan(week), fallback, week)
    expected = YESTERDAY_WEIGHT * latest + (1 - YESTERDAY_WEIGHT) * week
    hours = (instants - past.index[-1]) / pd.Timedelta(hours=1)
    standing = max(float(past[past.index > past.index[-1] - HISTORY_DAYS * DAY].min()), 0.0)
    return np.maximum(expected + anomaly * (np.asarray(hours) <= ANOMALY_PERSIST_H), standing)


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Column means over the rows that have a value; NaN where none has (without a warning)."""
    counts = np.isfinite(values).sum(axis=0)
    sums = np.nansum(values, axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _median_departure_kw(departures: np.ndarray) -> float:
    """The median of the latest readings' departures from the usual, 0 where none has a usual."""
    departures = departures[np.isfinite(departures)]
    return float(np.median(departures)) if len(departures) else 0.0


class NaiveForecaster:
    """The baseline every learnt model must beat, using only what is known at issue time."""

    name = "naive"
    reason = ""

    def __init__(self, config: SimulatorConfig, load_history_kw: pd.Series, measured: MeasuredPV | None = None,
                 wholesale: Wholesale | None = None) -> None:
        self.config, self.measured, self.wholesale = config, measured, wholesale
        self.load_history_kw = load_history_kw.sort_index()

    def __call__(self, issued_at: pd.Timestamp, instants: pd.DatetimeIndex) -> pd.DataFrame:
        """One forecast: the site's load as :func:`naive_load_kw` says, never below the house's
        own (the readings with the car's sessions taken off). A car only adds load, but right
        after a session the latest reading sits far below a usual that holds the week's
        sessions, and that departure, carried for :data:`ANOMALY_PERSIST_H`, would say the house
        uses nothing: a plan on it leaves the battery idle through the rest of a peak-price
        evening."""
        frame = self._frame(issued_at, instants, self.load_history_kw)
        charger_kw = self.config.home_load.ev_charger_kw
        if charger_kw > 0:
            _, _, house = sessions.house_history(self.load_history_kw, issued_at, charger_kw)
            if len(house):
                own = naive_load_kw(house, issued_at, frame.index, self.config.timezone, HOUSE_ANOMALY_READINGS)
                frame[LOAD] = np.maximum(frame[LOAD].to_numpy(), own)
        return frame

    def scenarios(self, issued_at: pd.Timestamp, instants: pd.DatetimeIndex) -> ScenarioForecast:
        """The house's own load forecast, with the EV sessions and load residuals of recent
        days of the same kind on top (:func:`sessions.load_scenarios_kw`): the mean of a week of sessions
        is a load no evening has, and no single evening says when the car will come."""
        found = sessions.load_scenarios_kw(self.load_history_kw, issued_at, instants, self.config.home_load.ev_charger_kw,
                                           self.config.timezone)
        frame = self._frame(issued_at, instants, found.house_load_kw, HOUSE_ANOMALY_READINGS)
        return ScenarioForecast(frame, found.extra_load_kw, found.charging_now)

    def _frame(self, issued_at: pd.Timestamp, instants: pd.DatetimeIndex, load_history_kw: pd.Series,
               anomaly_readings: int = 1) -> pd.DataFrame:
        pv = pv_forecast(self.config, issued_at, instants, self.measured)
        frame = tariff_forecast(self.config, instants, pv.clear_sky_ghi_w_m2, _known(self.wholesale, issued_at, instants))
        frame[LOAD] = naive_load_kw(load_history_kw, issued_at, frame.index, self.config.timezone, anomaly_readings)
        frame[PV] = pv.generation_kw
        return frame[list(COLUMNS)]


class ModelsForecaster:
    """The forecasting package's active models (P50 load, PV and price), issued at the plan's
    start from the readings stored until then; export price and carbon from the tariff, and
    PV from :func:`pv_forecast.pv_forecast` when the models have no PV target for the site, or
    their PV model did no better than same time yesterday on its test days (:func:`held_out_skill`)."""

    name = "models"
    reason = ""

    def __init__(self, config: SimulatorConfig, store, model_dir: str | None = None,
                 measured: MeasuredPV | None = None, wholesale: Wholesale | None = None) -> None:
        self.config, self.store, self.model_dir, self.measured = config, store, model_dir, measured
        self.wholesale = wholesale
        self._version = None

    def __call__(self, issued_at: pd.Timestamp, instants: pd.DatetimeIndex) -> pd.DataFrame:
        predicted = self._predicted(issued_at, instants)
        pv = pv_forecast(self.config, issued_at, instants, self.measured)
        frame = tariff_forecast(self.config, instants, pv.clear_sky_ghi_w_m2, _known(self.wholesale, issued_at, instants))
        if "load_kw_p50" not in predicted or predicted["load_kw_p50"].isna().any():
            raise ForecasterUnavailable(f"the active models give no load forecast for {self.config.device_id} at every instant")
        frame[LOAD] = np.maximum(predicted["load_kw_p50"].to_numpy(), 0.0)
        solar_kw = predicted.get("solar_kw_p50")
        pv_skill = held_out_skill(self._loaded().metrics, PV)
        learnt = solar_kw is not None and not solar_kw.isna().any() and taken(pv_skill)
        frame[PV] = np.maximum(solar_kw.to_numpy(), 0.0) if learnt else pv.generation_kw
        price = predicted.get("price_per_kwh_p50")
        if self.wholesale is None and price is not None and not price.isna().any():  # published prices win
            frame[IMPORT_PRICE] = np.maximum(price.to_numpy(), 0.0)
            frame[EXPORT_PRICE] = np.minimum(frame[EXPORT_PRICE], frame[IMPORT_PRICE])  # selling never beats buying
        return frame[list(COLUMNS)]

    def load_kw(self, issued_at: pd.Timestamp, instants: pd.DatetimeIndex) -> np.ndarray:
        """The P50 load at ``instants``, NaN at those past the models' trained horizon."""
        trained = int(self._loaded().manifest["horizon_steps"])
        reach = instants[instants <= issued_at + trained * MODELS_STEP]
        predicted = self._predicted(issued_at, reach) if len(reach) else pd.DataFrame(index=reach)
        load = predicted.get("load_kw_p50", pd.Series(np.nan, index=reach)).reindex(instants)
        return np.maximum(load.to_numpy(dtype=float), 0.0)

    def _loaded(self):
        """The active version, loaded once: every plan of a backtest issues from the same models."""
        if self._version is None:
            from cloud.forecasting.registry import Registry
            from cloud.forecasting.settings import settings_from

            self._version = Registry(settings_from(self.model_dir).model_dir).load()
        return self._version

    def _predicted(self, issued_at: pd.Timestamp, instants: pd.DatetimeIndex) -> pd.DataFrame:
        from cloud.forecasting.issue import forecast_next_day

        step = _step_of(instants)
        per_step = models_steps_in(step)
        if per_step is None:
            raise ForecasterUnavailable(f"the models forecast 15-minute steps, which make no "
                                        f"{step / pd.Timedelta(minutes=1):g}-minute step")
        steps = int(np.ceil((instants[-1] - issued_at) / MODELS_STEP))
        issued = forecast_next_day(self.store, self.config.device_id, issued_at, horizon_steps=steps,
                                   model_dir=self.model_dir, version=self._loaded(),
                                   weather=self.measured.weather if self.measured is not None else None)
        fine = issued.set_index("target_ts")
        if per_step == 1:
            return fine.reindex(instants)
        # A coarser step's value is the mean over the interval ending at it: of the models'
        # steps ending inside it (a half hour's two quarter hours), all of them or none.
        values = fine.select_dtypes("number")
        parts = [values.reindex(instants - k * MODELS_STEP).set_axis(instants) for k in range(per_step)]
        return sum(parts) / per_step


def _step_of(instants: pd.DatetimeIndex) -> pd.Timedelta:
    return instants[1] - instants[0] if len(instants) > 1 else MODELS_STEP


def models_steps_in(step: pd.Timedelta) -> int | None:
    """How many of the models' 15-minute steps make one of ``step`` (a half-hourly meter's
    plan takes the mean of two); None for a step no whole number of them makes."""
    count = step / MODELS_STEP
    return int(count) if count >= 1 and count == int(count) else None


def models_forecaster(config: SimulatorConfig, store=None, model_dir: str | None = None, measured: MeasuredPV | None = None,
                      wholesale: Wholesale | None = None, **_: object) -> Forecaster:
    """An adapter to ``cloud.forecasting``'s active models; unavailable without a cloud store
    holding the site's readings or without an active model version."""
    try:
        from cloud.forecasting.registry import NoModels, Registry
        from cloud.forecasting.settings import settings_from
    except ImportError as error:
        raise ForecasterUnavailable(f"the models forecaster needs cloud.forecasting ({error}); use --forecaster naive or perfect") from None
    if store is None:
        raise ForecasterUnavailable("the models forecaster needs the cloud store with the site's readings; use --forecaster naive or perfect")
    folder = settings_from(model_dir, None).model_dir
    try:
        active = Registry(folder).active()
    except NoModels as error:
        raise ForecasterUnavailable(f"{error}, or use --forecaster naive or perfect") from None
    if active is None:
        raise ForecasterUnavailable(f"no active models in {folder}: run run_model_training.py --train first, or use --forecaster naive or perfect")
    return ModelsForecaster(config, store, model_dir, measured, wholesale)


def house_load_kw(forecaster: Forecaster | None, house_history_kw: pd.Series, issued_at: pd.Timestamp,
                  instants: pd.DatetimeIndex, timezone: str) -> np.ndarray:
    """The house's own load (no car) at ``instants``, as the forecaster the site plans with
    says it: the models' P50 where their trained horizon reaches (a median, which a car
    charging on fewer than half of the days does not move), else, and for every other
    forecaster, the naive forecast of the house's own readings (:func:`naive_load_kw`)."""
    naive = naive_load_kw(house_history_kw, issued_at, instants, timezone, HOUSE_ANOMALY_READINGS)
    if not isinstance(forecaster, ModelsForecaster):
        return naive
    learnt = forecaster.load_kw(issued_at, instants)
    return np.where(np.isnan(learnt), naive, learnt)


def holdable_peak_kw(
    net_load_history_kw: pd.Series, issued_at: pd.Timestamp, usable_kwh: float, max_discharge_kw: float,
    discharge_efficiency: float, days: int = HISTORY_DAYS,
) -> float:
    """The import peak a full battery could have held on each of the last ``days`` days.

    Per day the lowest cap ``P`` with ``max(net - P) <= max_discharge_kw`` and the energy above
    it, ``sum(max(net - P, 0)) * dt / discharge_efficiency``, within ``usable_kwh``; the answer
    is the highest of those days. It is what the month's peak will likely come to when load
    nobody can time (a car plugged in for hours) arrives, so a cap below it only empties the
    battery early in such a session and lets the rest through unshaved. Only readings at or
    before ``issued_at`` are used; 0 without history.
    """
    past = net_load_history_kw.loc[issued_at - days * DAY : issued_at].dropna()
    past = past[past.index > issued_at - days * DAY]
    if len(past) < 2:
        return 0.0
    step_h = float(np.median(np.diff(past.index)) / pd.Timedelta(hours=1))  # the index's unit may be us or ns
    day = ((past.index - issued_at) // DAY).to_numpy()
    _, slot = np.unique(day, return_inverse=True)
    net = np.full((slot.max() + 1, np.bincount(slot).max()), -np.inf)
    net[slot, np.arange(len(slot)) - np.searchsorted(slot, slot)] = past.to_numpy()
    low = np.maximum(net.max(axis=1) - max_discharge_kw, 0.0)
    high = np.maximum(net.max(axis=1), low)
    for _ in range(40):  # bisection, every day at once
        middle = 0.5 * (low + high)
        needed = np.maximum(net - middle[:, None], 0.0).sum(axis=1) * step_h / discharge_efficiency
        holds = needed <= usable_kwh
        high, low = np.where(holds, middle, high), np.where(holds, low, middle)
    return float(high.max())


def _known(wholesale: Wholesale | None, issued_at: pd.Timestamp, instants: pd.DatetimeIndex) -> np.ndarray | None:
    return None if wholesale is None else wholesale(issued_at, instants)


def known_prices(forecaster: Forecaster | None, config: SimulatorConfig, issued_at: pd.Timestamp,
                 instants: pd.DatetimeIndex, clear_sky_ghi_w_m2: np.ndarray) -> pd.DataFrame:
    """The tariff's prices at ``instants`` as ``forecaster`` knows them at ``issued_at``: a
    dynamic tariff priced from the wholesale prices the forecaster was given, so that every
    decision on one site prices energy the same way (None, or a forecaster given none: the
    tariff's own schedule)."""
    wholesale = forecaster.wholesale if isinstance(forecaster, (NaiveForecaster, ModelsForecaster)) else None
    return tariff_forecast(config, instants, clear_sky_ghi_w_m2, _known(wholesale, issued_at, instants))


def times_the_load(forecaster: Forecaster) -> bool:
    """Whether ``forecaster`` knows when load nobody can time (a car plugged in for hours) will
    come. Only perfect foresight does: a plan on it beats any hedge, while every other
    forecast, a learnt one too, places a session at best on average."""
    return isinstance(forecaster, PerfectForecaster)


#: Each forecaster by its name (``--forecaster``), as a factory of the site's configuration,
#: its readings so far (:data:`COLUMNS`), the cloud store, the models' folder and, for a
#: declared site, what its PV forecast is made from (:class:`pv_forecast.MeasuredPV`) and the
#: wholesale prices its dynamic tariff prices from (:data:`Wholesale`).
FORECASTERS: Mapping[str, Callable[..., Forecaster]] = {
    "naive": lambda config, history, measured=None, wholesale=None, **_: NaiveForecaster(config, history[LOAD], measured,
                                                                                          wholesale),
    "perfect": lambda config, history, measured=None, **_: perfect_forecaster(config, measured),
    "models": lambda config, history, store=None, model_dir=None, measured=None, wholesale=None: models_forecaster(
        config, store=store, model_dir=model_dir, measured=measured, wholesale=wholesale),
}


#: The default name: the trained models where they cover the site, else naive (:func:`choose`).
AUTO = "auto"
#: Every name ``--forecaster`` takes.
NAMES: tuple[str, ...] = (AUTO, *FORECASTERS)
#: A plan issued this long after the newest reading the active models learnt from stands at
#: their end, not inside it: the pipeline trains and then plans, and readings keep arriving.
LEARNT_SLACK = pd.Timedelta(hours=1)
#: Models whose newest reading is this far behind the plan are still taken (they beat same
#: time yesterday on their test days), but the reason says how old they are and how to renew
#: them: a home's habits and its array's shading drift with the seasons.
OLD_MODELS = pd.Timedelta(days=7)


@dataclass(frozen=True)
class Choice:
    """The forecaster a plan or a backtest uses, and why (shown with the plan and the backtest)."""

    name: str
    reason: str


def choose(name: str, config: SimulatorConfig, store=None, model_dir: str | None = None,
           issued_from: pd.Timestamp | None = None, step: pd.Timedelta = MODELS_STEP,
           horizon: pd.Timedelta = DAY) -> Choice:
    """The forecaster ``name`` stands for. Any name but :data:`AUTO` is itself. :data:`AUTO`
    is ``models`` where the active model version can forecast the site from ``issued_from``
    (the first plan's issue instant) over ``horizon`` in ``step`` steps, else ``naive``.

    The models can when the cloud store holds the site's readings, the version's load model
    was trained on the site (the manifest lists it), ``step`` is a whole number of theirs (a
    half-hourly meter's backtest takes the mean of two quarter hours), the horizon within
    their trained one, and they learnt from nothing after ``issued_from`` (give or take
    :data:`LEARNT_SLACK`): a backtest over the days the models were trained on would score
    what they remember, not what they forecast."""
    if name not in NAMES:
        raise UsageError(f"forecaster {name!r}: expected one of {', '.join(NAMES)}")
    from cloud.forecasting.registry import NoModels, Registry
    from cloud.forecasting.settings import settings_from

    if name != AUTO:
        return Choice(name, "--forecaster " + name + (_remembered(Registry(settings_from(model_dir).model_dir),
                                                                  config.device_id, issued_from)
                                                      if name == "models" and store is not None else ""))
    if store is None:
        return Choice("naive", "no cloud store to forecast from")
    registry = Registry(settings_from(model_dir).model_dir)
    active = registry.active()
    if active is None:
        return Choice("naive", f"no trained models in {registry.root}")
    try:
        manifest = registry.manifest(active)
    except NoModels as damaged:
        return Choice("naive", str(damaged))
    load = manifest.get("targets", {}).get(LOAD, {})
    if config.device_id not in load.get("sites", ()):
        return Choice("naive", f"the active models in {registry.root} were not trained on {config.device_id}")
    if models_steps_in(step) is None or horizon > MODELS_STEP * int(manifest.get("horizon_steps", 0)):
        trained_h = MODELS_STEP * int(manifest.get("horizon_steps", 0)) / pd.Timedelta(hours=1)
        return Choice("naive", f"the active models in {registry.root} forecast {trained_h:g} h in 15-minute steps, "
                               f"not {horizon / pd.Timedelta(hours=1):g} h in {step / pd.Timedelta(minutes=1):g}-minute steps")
    learnt_until = _learnt_until(load, config.device_id)
    if issued_from is not None and learnt_until > pd.Timestamp(issued_from) + LEARNT_SLACK:
        return Choice("naive", f"the active models in {registry.root} learnt from readings up to "
                               f"{learnt_until:%Y-%m-%d %H:%M}Z, after {pd.Timestamp(issued_from):%Y-%m-%d %H:%M}Z")
    try:
        metrics = registry.metrics(active)
    except NoModels:
        metrics = {}
    skill = held_out_skill(metrics, LOAD)
    if not taken(skill):
        return Choice("naive", f"the active models in {registry.root} forecast the load no better than same time "
                               f"yesterday on their test days (skill {skill:+.2f})")
    age = pd.Timestamp(issued_from) - learnt_until if issued_from is not None else pd.Timedelta(0)
    old = (f"; they learnt from readings up to {learnt_until:%Y-%m-%d}, {age.days} days before "
           "(`run_model_training.py --train` renews them)") if age > OLD_MODELS else ""
    from cloud.forecasting.issue import not_covered

    pv_skill = held_out_skill(metrics, PV)
    if not taken(pv_skill):
        return Choice("models", f"active models in {registry.root}; PV as the naive forecaster has it, the PV model "
                                f"being no better than same time yesterday on its test days (skill {pv_skill:+.2f}){old}")
    left_out = not_covered(manifest, "solar_kw", config.device_id)
    if left_out is not None:
        return Choice("models", f"active models in {registry.root}; PV as the naive forecaster has it, {left_out}{old}")
    return Choice("models", f"active models in {registry.root}{old}")


def _learnt_until(load: Mapping, device_id: str) -> pd.Timestamp:
    """The newest reading a version's load model learnt from for the site, by its manifest entry."""
    from cloud.forecasting.registry import site_range

    return site_range(load, device_id)[1]


def _remembered(registry, device_id: str, issued_from: pd.Timestamp | None) -> str:
    """For models asked for by name: a note where they learnt from readings after the first
    issue (a backtest over their own training days scores what they remember, not what they
    forecast), so that the figures are not taken for a forecast's; empty otherwise or where
    the models say nothing of it (the forecaster itself refuses models that cannot serve)."""
    from cloud.forecasting.registry import NoModels

    active = registry.active()
    if active is None or issued_from is None:
        return ""
    try:
        load = registry.manifest(active).get("targets", {}).get(LOAD, {})
    except NoModels:
        return ""
    if device_id not in load.get("sites", ()) or not any(load.get(key) for key in ("train_range", "test_range")):
        return ""
    learnt_until = _learnt_until(load, device_id)
    if learnt_until <= pd.Timestamp(issued_from) + LEARNT_SLACK:
        return ""
    first = pd.Timestamp(issued_from)
    return (f"; they learnt from readings up to {learnt_until:%Y-%m-%d %H:%M}Z, after {first:%Y-%m-%d %H:%M}Z: these days "
            "were in their training, so the figures are what they remember, not a forecast's")


def taken(skill: float | None) -> bool:
    """Whether a target's model is taken, by its :func:`held_out_skill`: where it was not
    measured, or beat same time yesterday there. One rule for the choice and the forecast."""
    return skill is None or skill > 0


def held_out_skill(metrics: Mapping, column: str) -> float | None:
    """A version's model's skill against same time yesterday on the days its training held out
    (the newest of its history, unseen by the fitted models; daytime for PV), from the
    version's metrics; None where not measured. A model at or below zero there forecasts no
    better than the simplest rule, and the planner does not take it for that target."""
    from cloud.forecasting.evaluation import headline
    from cloud.forecasting.models import PRIMARY

    target = {LOAD: "load_kw", PV: "solar_kw"}[column]
    skill = headline(metrics.get(target, {}).get(PRIMARY, {}), target).get("skill")
    return None if skill is None or not np.isfinite(skill) else float(skill)


def make_forecaster(name: str, config: SimulatorConfig, history: pd.DataFrame, store=None,
                    model_dir: str | None = None, measured: MeasuredPV | None = None,
                    issued_from: pd.Timestamp | None = None, step: pd.Timedelta = MODELS_STEP,
                    horizon: pd.Timedelta = DAY, wholesale: Wholesale | None = None) -> Forecaster:
    """The forecaster ``name`` stands for (:func:`choose`, with ``issued_from``, ``step`` and
    ``horizon``) for the site, its ``reason`` attribute saying why it is the one; ``measured``
    says the site is a declared one and what its PV forecast is made from (None: simulated);
    ``wholesale`` gives a dynamic tariff its prices (None: the tariff needs none)."""
    choice = choose(name, config, store, model_dir, issued_from, step, horizon)
    forecaster = FORECASTERS[choice.name](config, history, store=store, model_dir=model_dir, measured=measured,
                                          wholesale=wholesale)
    forecaster.reason = choice.reason
    return forecaster
