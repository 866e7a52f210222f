"""Run the chain once (``--once``) or on the production cadences (``--continuous``).

Once: every stage in order with a progress line each; an unavailable stage is reported and
skipped, a failed stage stops the chain (later stages would work on stale inputs) and makes
the run fail. Continuous: the gateway steps every interval and each cloud job runs on its own
APScheduler schedule; one lock serialises the jobs, so they never overlap on the stores.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import pandas as pd

from cloud.job_status import STALE
from cloud.pipeline import settings as ps
from cloud.pipeline import stages
from cloud.pipeline.simulate import configs_for
from cloud.store.factory import open_cloud_store
from der_core.errors import DERError
from der_core.scheduling import Every, run_schedule
from edge_gateway.gateway import Gateway, align
from edge_gateway.stores.sqlite import SQLiteEdgeStore

log = logging.getLogger(__name__)
OK, UNAVAILABLE, FAILED = "ok", "unavailable", "failed"


class PipelineFailed(DERError):
    """A stage failed; the message names it and why."""


@dataclass
class StageOutcome:
    name: str
    status: str
    message: str
    rows: int = 0
    seconds: float = 0.0


@dataclass
class PipelineResult:
    outcomes: list[StageOutcome] = field(default_factory=list)
    plans: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> StageOutcome | None:
        return next((o for o in self.outcomes if o.status == FAILED), None)


def run_stage(name: str, func: Callable[[stages.Context], stages.StageReport], ctx: stages.Context) -> StageOutcome:
    started = time.perf_counter()
    try:
        report = func(ctx)
    except stages.StageUnavailable as error:
        return StageOutcome(name, UNAVAILABLE, str(error), 0, time.perf_counter() - started)
    except DERError as error:
        log.debug("%s failed", name, exc_info=True)
        return StageOutcome(name, FAILED, str(error), 0, time.perf_counter() - started)
    return StageOutcome(name, STALE if report.stale else OK, report.message, report.rows, time.perf_counter() - started)


def _announce(index: int, total: int, outcome: StageOutcome, out) -> None:
    print(f"[{index}/{total}] {outcome.name:<12} {outcome.status:<11} {outcome.seconds:6.1f} s  {outcome.message}",
          file=out, flush=True)


def open_context(settings: ps.PipelineSettings, resources: ExitStack) -> stages.Context:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    cloud = open_cloud_store(settings.cloud)
    resources.callback(cloud.close)
    if settings.declared:  # real sites: no simulated homes, so no edge store
        return stages.Context(settings, None, cloud, settings.declared_configs())
    edge = resources.enter_context(SQLiteEdgeStore(settings.edge_db))
    return stages.Context(settings, edge, cloud, configs_for(settings))


def run_chain(ctx: stages.Context, chain=None, out=None) -> PipelineResult:
    out = out or sys.stdout
    chain = chain or stages.chain_of(ctx.settings)
    result, started = PipelineResult(), time.perf_counter()
    for index, (name, func) in enumerate(chain, start=1):
        if result.failed:
            outcome = StageOutcome(name, "skipped", f"not run: {result.failed.name} failed")
        else:
            outcome = run_stage(name, func, ctx)
        result.outcomes.append(outcome)
        _announce(index, len(chain), outcome, out)
    result.plans, result.seconds = list(ctx.plans), time.perf_counter() - started
    return result


def run_once(settings: ps.PipelineSettings, out=None) -> PipelineResult:
    with ExitStack() as resources:
        ctx = open_context(settings, resources)
        result = run_chain(ctx, out=out)
    if result.failed:
        raise PipelineFailed(f"{result.failed.name} failed: {result.failed.message}")
    return result


def _job(name: str, lock: threading.Lock, ctx: stages.Context, chain) -> Callable[[], None]:
    def run() -> None:
        with lock:  # one job at a time: the stores are shared and the stages feed each other
            for stage, func in chain:
                outcome = run_stage(stage, func, ctx)
                level = logging.INFO if outcome.status == OK else logging.WARNING
                log.log(level, "%s: %s %s (%.1f s)", stage, outcome.status, outcome.message, outcome.seconds)
                if outcome.status == FAILED:
                    return

    return run


def declared_jobs(ctx: stages.Context, lock: threading.Lock) -> list[Every]:
    """Declared sites' schedule: no gateway or sync (their readings arrive by import or a real
    gateway's sync); features hourly, training daily, and hourly the inputs, then the plans,
    after declaring any site the first run could not (``stages.declare_pending``)."""
    named = {**dict(stages.DECLARED_STAGES), "declare": stages.declare_pending}
    return [
        Every("features", _job("features", lock, ctx, [("features", named["features"])]), ps.FEATURES_EVERY_S,
              run_now=False),
        Every("training", _job("training", lock, ctx, [("forecasting", named["forecasting"])]), ps.TRAIN_EVERY_S,
              run_now=False),
        Every("plans", _job("plans", lock, ctx, [(name, named[name])
                                                 for name in ("declare", "inputs", "forecasting", "planning")]
                            + _sent(ctx)), ps.PLAN_EVERY_S, run_now=False),
    ]


def _sent(ctx: stages.Context) -> list:
    """The publish stage after each hour's plans, when the pipeline sends them."""
    return [("publish", stages.publish)] if ctx.settings.mqtt is not None else []


def continuous_jobs(ctx: stages.Context, lock: threading.Lock) -> list[Every]:
    settings = ctx.settings
    if settings.declared:
        return declared_jobs(ctx, lock)
    gateway = Gateway(ctx.configs, sinks=[ctx.edge.write], state_dir=settings.state_dir, history=ctx.edge)

    def step() -> None:
        with lock:
            gateway.step(align(pd.Timestamp.now(tz="UTC"), settings.interval_s))

    named = dict(stages.STAGES)
    return [
        Every("gateway", step, settings.interval_s, aligned=True),
        Every("sync", _job("sync", lock, ctx, [("sync", named["sync"])]), ps.SYNC_EVERY_S, run_now=False),
        Every("features", _job("features", lock, ctx, [("features", named["features"])]), ps.FEATURES_EVERY_S,
              run_now=False),
        Every("training", _job("training", lock, ctx, [("forecasting", named["forecasting"])]), ps.TRAIN_EVERY_S,
              run_now=False),
        Every("plans", _job("plans", lock, ctx, [("forecasting", named["forecasting"]), ("planning", named["planning"])]
                            + _sent(ctx)), ps.PLAN_EVERY_S, run_now=False),
    ]


def run_continuous(settings: ps.PipelineSettings, out=None, stop: threading.Event | None = None) -> None:
    """The whole chain once (so the dashboard has data at once), then every job on its schedule
    until SIGINT/SIGTERM or ``stop``."""
    with ExitStack() as resources:
        ctx = open_context(settings, resources)
        first = run_chain(ctx, out=out)
        if first.failed:
            log.warning("first run: %s failed (%s); the schedule retries it", first.failed.name, first.failed.message)
        run_schedule(continuous_jobs(ctx, threading.Lock()), stop=stop)
