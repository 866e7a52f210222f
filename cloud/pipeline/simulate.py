"""The edge side of the pipeline: simulated homes filling their edge store up to now.

A first run backfills ``days`` of history; later runs continue from the battery state the
last run (or the live gateway) saved, so history is never rewritten and a ``--once`` rerun
only adds the steps since. The state files are the live gateway's own (``state_file.StateFile``),
so ``--continuous`` hands over to :class:`edge_gateway.gateway.Gateway` seamlessly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from cloud.pipeline.settings import PipelineSettings
from der_core.config import SimulatorConfig, site_record
from der_core.sites import site_configs
from der_physics import generator
from der_physics.battery import BatteryState
from edge_gateway.gateway import align
from edge_gateway.state_file import GatewayState, SiteSnapshot, StateFile
from edge_gateway.stores.base import EdgeStore

log = logging.getLogger(__name__)

JOB = "simulate"
CHUNK_STEPS = 2_880


@dataclass
class SimulateResult:
    rows: int
    start: pd.Timestamp | None
    end: pd.Timestamp
    continued: bool


def configs_for(settings: PipelineSettings) -> list[SimulatorConfig]:
    return site_configs(settings.template(), settings.sites)


def _resume_point(states: list[StateFile], oldest: pd.Timestamp) -> tuple[pd.Timestamp, BatteryState] | None:
    """The common instant and battery state every site saved, if recent enough to continue."""
    saved = [state.load() for state in states]
    if any(s is None for s in saved):
        return None
    stamps = {s.latest.ts for s in saved}
    if len(stamps) != 1 or next(iter(stamps)) < oldest:
        return None
    return stamps.pop(), BatteryState.from_sites([s.latest.battery for s in saved])


def simulate_until(edge: EdgeStore, configs: list[SimulatorConfig], settings: PipelineSettings,
                   now: pd.Timestamp) -> SimulateResult:
    """Readings for every site up to the last interval boundary at or before ``now``."""
    end = align(now, settings.interval_s)
    step = pd.Timedelta(seconds=settings.interval_s)
    states = [StateFile(settings.state_dir, c.device_id) for c in configs]
    for config in configs:
        edge.put_site(site_record(config))
    resume = _resume_point(states, end - settings.history)
    if resume is not None and resume[0] >= end:
        return SimulateResult(0, None, end, True)
    start, state = (resume[0] + step, resume[1]) if resume else (end - settings.history + step, generator.initial_state(configs))
    times = generator.time_range(start, end + step, settings.interval_s)
    body, rows = times[:-1], 0
    for offset in range(0, len(body), CHUNK_STEPS):
        sim, state = generator.simulate(configs, body[offset:offset + CHUNK_STEPS], state)
        rows += edge.write(sim.frame())
    # The state before the last step is kept so a repeated instant is redone, as the gateway does.
    before_ts, before = (body[-1] if len(body) else start - step), state
    sim, state = generator.simulate(configs, times[-1:], state)
    rows += edge.write(sim.frame())
    for i, file in enumerate(states):
        file.save(GatewayState(SiteSnapshot(end, state.site(i)), SiteSnapshot(before_ts, before.site(i))))
    log.info("simulated %d readings of %d sites from %s to %s", rows, len(configs), start, end)
    return SimulateResult(rows, start, end, resume is not None)
