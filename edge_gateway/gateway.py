"""The live gateway: one reading per site per call, state carried across calls and restarts.

Each step a site's battery follows the schedule's power command and import cap, or, where the
schedule carries a reserve policy, that policy; :class:`control.Controller` decides both, as
it does in the backtest and the plan's preview. The battery state after each step is
persisted (atomically) per device, with what the control remembers of the readings
(control.SiteMemory: the car's sessions, the month's peak import), so ``--once`` run from
cron, ``--continuous`` and a restarted daemon all continue the same battery and reserve
policy, and a repeated instant recomputes the same reading instead of stepping twice. A gateway whose state file is lost
or unreadable rebuilds both from the readings it stored (``history``).

The site's energy meters (edge_gateway/energy.py) are stepped with each reading and kept in
the same file; observers (the MQTT link) are told them once a step is saved.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from der_core import der_data as dd
from der_core.config import SimulatorConfig
from der_core.control import (
    REPLAY_DAYS,
    ControlBattery,
    Controller,
    ReservePolicy,
    SiteMemory,
)
from der_core.errors import StoreError, StoreUnavailable
from der_physics import base, generator
from der_physics.battery import BatteryState, state_from_reading
from der_physics.tariff import billed_peak_steps
from edge_gateway.device_control import DeviceControl
from edge_gateway.energy import EnergyMeters
from edge_gateway.sources.base import DeviceSource, Measured, measured_frame
from edge_gateway.state_file import GatewayState, SiteSnapshot, StateFile
from edge_gateway.stores.base import EdgeStore

log = logging.getLogger(__name__)

Sink = Callable[[pd.DataFrame], None]


class SetpointSource(Protocol):
    """Commands for batteries in ``setpoint`` mode (the MQTT link's ``SetpointBook``)."""

    def power_kw(self, device_id: str, at: pd.Timestamp) -> float:
        """The battery power command in force at ``at`` (kW, + charges), NaN when none."""
        ...

    def import_limit_kw(self, device_id: str, at: pd.Timestamp) -> float:
        """The grid import cap in force at ``at``, which the battery defends by discharging more
        (or charging less) than its power command; NaN when none."""
        ...

    def reserve(self, device_id: str, at: pd.Timestamp) -> ReservePolicy | None:
        """The reserve policy in force at ``at`` (control.py): the energy kept for EV sessions,
        applied at every reading to the load the battery measures; None when none."""
        ...

    def event(self, device_id: str, at: pd.Timestamp) -> bool:
        """The step in force at ``at`` is a demand-response event's: its import cap is held as
        given (:meth:`Controller.cap_kw`)."""
        ...


class SiteObserver(Protocol):
    """Told what a step left of a site, once it is saved (the MQTT link publishes it)."""

    def stepped(self, device_id: str, at: pd.Timestamp, meters: EnergyMeters) -> None:
        ...


class JsonlSink:
    """Append readings as JSON Lines to a file (or write them to a stream)."""

    def __init__(self, path: str | Path | None = None, stream=None) -> None:
        self.path, self.stream = (Path(path) if path else None), stream

    def __call__(self, frame: pd.DataFrame) -> None:
        data = dd.to_jsonl(frame)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as handle:
                handle.write(data)
        if self.stream is not None:
            self.stream.write(data.decode())
            self.stream.flush()


#: Readings a running gateway holds in memory while its edge store refuses them: a week of
#: five-minute readings of one site. Beyond it the oldest go, said in the log: the memory is
#: a Raspberry Pi's.
HELD_ROWS = 7 * 288


class HeldWrites:
    """The edge store's write for a gateway that keeps running: a write the store refuses (a
    full disk, a file another process holds locked) is held in memory and written, oldest
    first, before the next reading, so readings made while the disk was full are stored once
    it has room rather than lost. Other sinks are not held up. A run of one reading
    (``--once``) does not hold, since its process ends: its failure is its exit status."""

    def __init__(self, write: Sink, most_rows: int = HELD_ROWS) -> None:
        self.write, self.most_rows = write, most_rows
        self.held: deque[pd.DataFrame] = deque()
        self.dropped = 0

    @property
    def rows(self) -> int:
        return sum(len(frame) for frame in self.held)

    def __call__(self, frame: pd.DataFrame) -> None:
        self.held.append(frame)
        self.flush()

    def flush(self) -> bool:
        """Write what is held, oldest first; False (and still held) where the store refuses."""
        try:
            while self.held:
                self.write(self.held[0])
                self.held.popleft()
        except StoreError as error:
            while self.rows > self.most_rows and len(self.held) > 1:
                self.dropped += len(self.held.popleft())
            lost = f"; {self.dropped} older ones dropped, beyond {self.most_rows}" if self.dropped else ""
            log.warning("edge store refused a write (%s); %d readings held in memory until it takes them%s", error,
                        self.rows, lost)
            return False
        if self.dropped:
            log.warning("edge store takes writes again; %d readings held beyond %d were dropped", self.dropped,
                        self.most_rows)
            self.dropped = 0
        return True


class Gateway:
    def __init__(
        self,
        configs: Sequence[SimulatorConfig],
        sinks: Sequence[Sink] = (),
        state_dir: str | Path = "data/state",
        setpoints: SetpointSource | None = None,
        history: EdgeStore | None = None,
        source: DeviceSource | None = None,
        observers: Sequence[SiteObserver] = (),
    ) -> None:
        self.configs = tuple(configs)
        if source is not None and len(self.configs) != 1:
            raise ValueError("a measured source reads one site; got a fleet of simulated sites")
        self.sinks = list(sinks)
        self.setpoints = setpoints
        self.history = history
        self.source = source
        self.observers = list(observers)
        self.states = [StateFile(Path(state_dir), c.device_id) for c in self.configs]
        #: A measured battery's commands: the interval's, and the import cap held at and between readings.
        self.control = None if source is None else DeviceControl(self.configs[0], source, setpoints)
        self._unread_since: pd.Timestamp | None = None  # the first reading made without reading the store

    @property
    def interval_s(self) -> int:
        return self.configs[0].interval_seconds

    def _state_before(self, at: pd.Timestamp, newest: list[pd.Timestamp | None] | None) -> tuple[list[SiteSnapshot], float]:
        """Per site, what to step from: the battery state, its instant and the control's
        memory then (as saved); and the step length (h). ``newest`` None: the store cannot
        be read (:meth:`_newest_stored`), so a lost state is not rebuilt from it."""
        sites, dt_h = [], self.interval_s / 3600.0
        initial = generator.initial_state(self.configs)
        readable = newest is not None
        newest = newest if readable else [None] * len(self.configs)
        for i, state_file in enumerate(self.states):
            saved = state_file.load()
            site = SiteSnapshot(None, initial.site(i))
            if saved is None:
                site = (self._recovered(i, at) if readable else None) or site
            elif at == saved.latest.ts:  # the same instant again: redo that step, do not step twice
                site = saved.previous
            elif at > saved.latest.ts:
                ahead = self._stored_since(saved.latest.ts, at, newest[i])
                site = (self._recovered(i, at) or saved.latest) if ahead else saved.latest
            else:
                log.warning("%s: clock is behind the last reading (%s); continuing its state", self.configs[i].device_id,
                            dd.format_ts(saved.latest.ts))
                site = dataclasses.replace(saved.latest, ts=None)
            if site.ts is not None:
                dt_h = min(dt_h, (at - site.ts).total_seconds() / 3600.0)
            sites.append(self._metered(i, site))
        return sites, dt_h

    def _newest_stored(self, at: pd.Timestamp) -> list[pd.Timestamp | None] | None:
        """Per site, its newest stored reading's instant (None: no store or no reading), read
        once a step for both checks below; None for all when the store cannot be read
        (InfluxDB down). The reading is made all the same: the store keeps it in its outbox
        until the server returns, where refusing to step would lose every reading of the
        outage. Only the checks against stored readings are skipped for that step. An outage
        is one warning when it begins and one line when it ends, not a warning a step."""
        if self.history is None:
            return [None] * len(self.configs)
        try:
            newest = [self.history.latest(config.device_id) for config in self.configs]
        except StoreUnavailable as error:
            level = logging.WARNING if self._unread_since is None else logging.DEBUG
            log.log(level, "%s; readings made without checking the stored readings until it can be read", error)
            self._unread_since = self._unread_since or at
            return None
        if self._unread_since is not None:
            log.info("edge store readable again; readings from %s on were made unchecked", dd.format_ts(self._unread_since))
            self._unread_since = None
        return [None if frame.empty else dd.parse_ts(frame[dd.TS].iloc[-1]) for frame in newest]

    @staticmethod
    def _stored_since(saved_at: pd.Timestamp, at: pd.Timestamp, stored: pd.Timestamp | None) -> pd.Timestamp | None:
        """The site's newest stored reading when it is after its saved state and before ``at``
        (else None): the process stopped between delivering a step and saving it, so the
        store is ahead of the state, which stepping on would take back one interval."""
        return stored if stored is not None and saved_at < stored < at else None

    def _stored_behind(self, at: pd.Timestamp, newest: list[pd.Timestamp | None] | None) -> list[str]:
        """The sites whose clock has gone back behind their newest stored reading to an
        instant whose reading the store holds (the store's newest, not the state's: a reading
        made at an instant the store lacked moves the state back too): made again, it would
        replace what was measured (and maybe synced) with a reading of the wrong time. An
        instant not stored is read, so a clock corrected after a jump ahead fills its hours
        again."""
        if newest is None:
            return []
        return [config.device_id for config, stored in zip(self.configs, newest, strict=True)
                if stored is not None and at < stored and not self.history.read_range(
                    config.device_id, at, at + pd.Timedelta(microseconds=1)).empty]

    def _metered(self, i: int, site: SiteSnapshot) -> SiteSnapshot:
        """The snapshot with its energy meters: those saved, else (state saved without them, or
        rebuilt) those of the stored readings up to the snapshot's instant, so the meters go on
        from what the site has measured rather than from zero."""
        if site.energy is not None:
            return site
        if site.ts is None or self.history is None:
            return dataclasses.replace(site, energy=EnergyMeters())
        readings = self.history.read_range(self.configs[i].device_id, None, site.ts + pd.Timedelta(microseconds=1))
        return dataclasses.replace(site, energy=EnergyMeters.integrated(readings, self.interval_s))

    def _saved(self, i: int, at: pd.Timestamp, latest: SiteSnapshot, before: SiteSnapshot) -> None:
        """Persist a site's step, then tell the observers its meters."""
        self.states[i].save(GatewayState(latest, before))
        for observer in self.observers:
            observer.stepped(self.configs[i].device_id, at, latest.energy)

    def _recovered(self, i: int, at: pd.Timestamp) -> SiteSnapshot | None:
        """A site's state, its instant and the control's memory, rebuilt from the readings
        stored before ``at`` (None: no history or no reading): a gateway whose state file
        was lost continues its battery and keeps the month's peak, instead of starting again
        from the configured battery. See :func:`state_from_reading` for what is exact."""
        if self.history is None:
            return None
        config = self.configs[i]
        month_start = at.tz_convert(config.timezone).replace(day=1).normalize().tz_convert("UTC")
        since = min(month_start, at - pd.Timedelta(days=REPLAY_DAYS))
        readings = self.history.read_range(config.device_id, since, at)
        if readings.empty:
            readings = self.history.latest(config.device_id)
            if readings.empty or readings[dd.TS].iloc[-1] >= at:
                return None
        newest = readings.iloc[-1]
        site = state_from_reading(config.battery, float(newest[dd.BATTERY_SOC]), float(newest[dd.BATTERY_CYCLES]),
                                  float(newest[dd.BATTERY_HEALTH]), float(newest[dd.BATTERY_TEMP]))
        stamps = pd.DatetimeIndex(readings[dd.TS])
        interval = pd.Timedelta(seconds=config.interval_seconds)
        gaps = stamps.to_series().diff().fillna(interval).clip(upper=interval)
        memory = SiteMemory.rebuilt(stamps - pd.TimedeltaIndex(gaps), config.timezone, readings[dd.LOAD_EV].to_numpy(),
                                    readings[dd.NET_GRID_FLOW].to_numpy(), billed_peak_steps(config, stamps))
        log.warning("%s: no saved state; continuing from its stored reading of %s", config.device_id, dd.format_ts(newest[dd.TS]))
        return SiteSnapshot(dd.parse_ts(newest[dd.TS]), site, memory)

    def _commands(self, at: pd.Timestamp, dt_h: float, controllers: list[Controller]) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Battery power and grid import cap commanded for the interval ``(at - dt, at]``.

        A reading covers the interval ending at its instant, so a schedule entry governs the
        readings whose interval starts within it; a command that arrived during the interval
        (in force at its end only) applies to it too. NaN means no command. A cap below the
        month's peak import so far is raised to it unless the interval starts in a
        demand-response event's step (:meth:`Controller.cap_kw`).
        """
        if self.setpoints is None:
            return None, None
        setpoints, start = self.setpoints, at - pd.Timedelta(hours=dt_h)

        def lookup(method, device_id: str) -> float:
            value = method(device_id, start)
            return method(device_id, at) if np.isnan(value) else value

        power = np.array([[lookup(setpoints.power_kw, c.device_id)] for c in self.configs], dtype=float)
        caps = np.array([[controller.cap_kw(lookup(setpoints.import_limit_kw, c.device_id), start,
                                            setpoints.event(c.device_id, start))]
                         for c, controller in zip(self.configs, controllers, strict=True)], dtype=float)
        return power, caps

    def _policies(self, at: pd.Timestamp, dt_h: float) -> list[ReservePolicy | None]:
        """Each site's reserve policy in force for the interval ``(at - dt, at]``."""
        if self.setpoints is None:
            return [None] * len(self.configs)
        start = at - pd.Timedelta(hours=dt_h)
        reserve = self.setpoints.reserve
        return [reserve(c.device_id, start) or reserve(c.device_id, at) for c in self.configs]

    def _reserved(self, power: np.ndarray | None, policies: list[ReservePolicy | None], at: pd.Timestamp, dt_h: float,
                  state: BatteryState, controllers: list[Controller], exo: generator.Exogenous) -> np.ndarray | None:
        """The power commands with each site's reserve policy applied (:meth:`Controller.request_kw`):
        on the interval's own load (the battery measures it), the stored energy now and the
        session state of the readings before, remembered across restarts."""
        if power is None:
            return power
        start = at - pd.Timedelta(hours=dt_h)
        for i, (policy, controller) in enumerate(zip(policies, controllers, strict=True)):
            power[i, 0] = controller.request_kw(policy, start, float(exo.load_kw[i, 0] - exo.solar_kw[i, 0]),
                                                float(exo.ev_kw[i, 0]), float(state.energy_kwh[i]), dt_h, power[i, 0])
        return power

    def step(self, at: pd.Timestamp | None = None) -> pd.DataFrame:
        """Make, deliver and return one reading per site for instant ``at`` (default: now)."""
        at = dd.parse_ts(at if at is not None else dd.utc_now()).floor("s")
        newest = self._newest_stored(at)
        kept = self._stored_behind(at, newest)
        if kept:
            log.warning("%s: clock is behind the last reading and %s is stored already; kept, no reading made until the "
                        "clock passes the last reading or reaches an instant not stored", ", ".join(kept), dd.format_ts(at))
            return dd.empty_frame()
        if self.source is not None:
            return self._measured_step(at, None if newest is None else newest[0])
        before, dt_h = self._state_before(at, newest)
        controllers = [Controller(ControlBattery.from_config(c.battery), c.timezone, site.memory_to_step())
                       for c, site in zip(self.configs, before, strict=True)]
        state = BatteryState.from_sites([site.battery for site in before])
        power, caps = self._commands(at, dt_h, controllers)
        policies = self._policies(at, dt_h)
        exo = generator.exogenous(self.configs, base.TimeAxis.from_times([at]))
        power = self._reserved(power, policies, at, dt_h, state, controllers, exo)
        sim, new_state = generator.simulate(self.configs, [at], state, power, dt_h=np.array([dt_h]), import_cap_kw=caps, exo=exo)
        frame = sim.frame()
        for sink in self.sinks:  # deliver before persisting: a crash in between redoes the step
            sink(frame)
        start = at - pd.Timedelta(hours=dt_h)
        for i, (controller, policy) in enumerate(zip(controllers, policies, strict=True)):
            row = frame.iloc[i]
            controller.observe(policy, start, float(row[dd.LOAD_EV]), float(row[dd.NET_GRID_FLOW]),
                               float(row[dd.LOAD_TOTAL] - row[dd.LOAD_EV]), bool(billed_peak_steps(self.configs[i], [at])[0]))
            meters = before[i].energy.after_reading(row, dt_h)
            self._saved(i, at, SiteSnapshot(at, new_state.site(i), controller.memory, meters), before[i])
        return frame

    def _measured_step(self, at: pd.Timestamp, stored: pd.Timestamp | None) -> pd.DataFrame:
        """The device's reading of the interval ending at ``at``, delivered as a simulated one
        is; then its battery is told the request for the interval starting at ``at``. A
        device that answered nothing in the interval gives no reading (a row of nothing but
        missing values would tell the store, the sync and the forecasts nothing); the control
        memory then waits for the next reading."""
        config, state_file = self.configs[0], self.states[0]
        saved = state_file.load()
        before = SiteSnapshot(None, {})
        if saved is not None:
            before = saved.previous if at == saved.latest.ts else saved.latest
            ahead = self._stored_since(saved.latest.ts, at, stored)
            if ahead:  # the meters go on from every stored reading; the control's memory misses that interval
                before = dataclasses.replace(saved.latest, ts=ahead, energy=None)
        before = self._metered(0, before)
        start = at - pd.Timedelta(seconds=self.interval_s)
        measured = self.source.reading(start, at)
        controller = Controller(ControlBattery.from_config(config.battery), config.timezone, before.memory_to_step())
        if measured is None:
            self.control.interval_command(at, math.nan, controller)
            return dd.empty_frame()
        frame = measured_frame(config.device_id, at, measured)
        for sink in self.sinks:
            sink(frame)
        policy = self._policies(at, self.interval_s / 3600.0)[0]
        controller.observe(policy, start, math.nan, measured.grid_kw, measured.load_kw, bool(billed_peak_steps(config, [at])[0]))
        self.control.interval_command(at, self._device_request(at, controller, measured), controller)
        meters = before.energy.after_reading(frame.iloc[0], self.interval_s / 3600.0)
        self._saved(0, at, SiteSnapshot(at, {}, controller.memory, meters), before)
        return frame

    def _device_request(self, at: pd.Timestamp, controller: Controller, measured: Measured) -> float:
        """The battery power (kW, + charges) the plan or setpoint in force asks of a measured
        device for the interval starting at ``at``, on the reading just made (NaN: none in
        force, the device's own mode). The schedule's import cap is not applied here, on the
        interval's mean load: a burst within the interval would pass it. It is held on the
        device's own grid flow as the command is sent and between readings (:class:`DeviceControl`)."""
        if self.setpoints is None:
            return math.nan
        device_id, step_h = self.configs[0].device_id, self.interval_s / 3600.0
        energy_kwh = measured.battery_soc_percent / 100.0 * self.configs[0].battery.capacity_kwh
        return controller.request_kw(self.setpoints.reserve(device_id, at), at, measured.net_load_kw, 0.0,
                                     energy_kwh, step_h, self.setpoints.power_kw(device_id, at))


def align(at: pd.Timestamp, interval_s: int) -> pd.Timestamp:
    """The latest instant at or before ``at`` on the ``interval_s`` grid (clock-aligned)."""
    seconds = math.floor(at.timestamp() / interval_s) * interval_s
    return pd.Timestamp(seconds, unit="s", tz="UTC")


class ClockSteps:
    """Step a gateway at the clock's instants, each instant once.

    The reading's instant is now on the ``interval_s`` grid (``aligned``), else now to the
    second. A scheduler that ran late catches up with a run inside the same interval (or the
    same second): that instant has its reading already, and stepping it again would deliver
    the same reading twice, to the output file and to MQTT. Such a run is passed over.
    """

    def __init__(self, gateway: Gateway, aligned: bool) -> None:
        self.gateway, self.aligned = gateway, aligned
        self.last: pd.Timestamp | None = None

    def __call__(self) -> pd.DataFrame | None:
        now = dd.utc_now()
        at = align(now, self.gateway.interval_s) if self.aligned else now.floor("s")
        if self.last is not None and at <= self.last:
            log.debug("the reading at %s is made already; this run is passed over", dd.format_ts(at))
            return None
        self.last = at
        return self.gateway.step(at)
