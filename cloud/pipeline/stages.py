"""The pipeline's stages, each a thin call into the package that owns the work.

A simulated fleet runs :data:`STAGES`; declared sites (``--site``) run :data:`DECLARED_STAGES`:
their readings come from imported meter files or a real gateway's sync, so nothing is
simulated or synced here; their weather and prices are fetched first (:func:`inputs`), and a
service that is down leaves those inputs stale rather than stopping the chain.

A stage returns what it did in one line; a stage that cannot run yet (too little history
to train the forecasters) raises :class:`StageUnavailable` with the reason, which the runner
reports without pretending the stage ran. Every stage's library records its own
``pipeline_runs`` row; the simulator, the fetching of declared sites' inputs and the sending
of plans have no job of their own in the cloud, so :func:`simulate`, :func:`inputs` and
:func:`publish` record one each.

The forecasting and planning libraries are imported by their stages, not here: they take
most of a second to load, and ``run_pipeline.py --status`` and ``--help`` need neither.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from cloud.feature_engineering.job import run_features
from cloud.feature_engineering.settings import FeatureSettings
from cloud.job_status import recorded_run
from cloud.pipeline import simulate as sim
from cloud.pipeline.settings import PipelineSettings
from cloud.store.base import CloudStore
from cloud.sync.job import SyncSettings, sync_once
from der_core.config import SimulatorConfig
from der_core.errors import DERError
from edge_gateway.stores.base import EdgeStore

if TYPE_CHECKING:
    from cloud.live.inputs import SiteInputs
    from cloud.optimization.planner import SitePlan

log = logging.getLogger(__name__)


class StageUnavailable(DERError):
    """A stage that cannot run yet; the message says why."""


@dataclass
class Context:
    settings: PipelineSettings
    edge: EdgeStore | None  # None for declared sites: nothing is simulated or synced
    cloud: CloudStore
    configs: list[SimulatorConfig]
    plans: list[SitePlan] = field(default_factory=list)
    #: Each declared site's outside inputs, kept across runs so a stale mark lasts until a fetch succeeds.
    inputs: dict[str, SiteInputs] = field(default_factory=dict)

    @property
    def declared(self) -> bool:
        return bool(self.settings.declared)


@dataclass
class StageReport:
    rows: int
    message: str
    stale: bool = False  # done on old data (an outside service down): said, not failed


def simulate(ctx: Context) -> StageReport:
    def work():
        result = sim.simulate_until(ctx.edge, ctx.configs, ctx.settings, pd.Timestamp.now(tz="UTC"))
        return result, result.rows

    result = recorded_run(ctx.cloud, sim.JOB, {"sites": len(ctx.configs), "days": ctx.settings.days}, work)
    if not result.rows:
        return StageReport(0, f"{len(ctx.configs)} sites already up to {result.end:%Y-%m-%d %H:%M} UTC")
    how = "continued" if result.continued else "backfilled"
    return StageReport(result.rows, f"{how} {result.rows} readings of {len(ctx.configs)} sites up to "
                                    f"{result.end:%Y-%m-%d %H:%M} UTC")


def sync(ctx: Context) -> StageReport:
    result = sync_once(ctx.edge, ctx.cloud, SyncSettings())  # the store's own watermarks, as the sync command's
    quarantined = f", {result.rows_quarantined} quarantined" if result.rows_quarantined else ""
    return StageReport(result.rows_synced, f"{result.rows_synced} readings of {result.devices} devices to "
                                           f"{ctx.cloud.label}{quarantined}")


def features(ctx: Context) -> StageReport:
    settings = FeatureSettings(step=pd.Timedelta(seconds=ctx.settings.interval_s), lookback_days=ctx.settings.days)
    result = run_features(ctx.cloud, settings)
    skipped = [s.device_id for s in result.sites if s.skipped]
    tail = f" ({len(skipped)} skipped: {', '.join(skipped)})" if skipped else ""
    return StageReport(result.rows, f"{result.rows} feature rows ({result.version}) for "
                                    f"{len(result.sites) - len(skipped)} sites{tail}")


def forecasting(ctx: Context) -> StageReport:
    """Train the forecasters (or reuse models younger than a day) and issue the next 24 h."""
    from cloud.forecasting.job import issue_forecasts, train_or_reuse
    from cloud.forecasting.registry import NoModels
    from cloud.forecasting.training import NotEnoughData

    try:
        trained = train_or_reuse(ctx.cloud, ctx.settings.model_dir, max_age=ctx.settings.retrain_after)
        rows = issue_forecasts(ctx.cloud, ctx.settings.model_dir, [c.device_id for c in ctx.configs])
    except (NotEnoughData, NoModels) as error:  # too little history yet: plan on the naive forecaster
        raise StageUnavailable(f"forecasting not available yet: {error}") from None
    return StageReport(int(rows), f"{trained}; {rows} forecast rows for the next 24 h")


def planning(ctx: Context) -> StageReport:
    """The optimizer's day-ahead plan per site (``cloud.optimization.planner.run_plan``), on the
    optimizer's default forecaster: the models trained above where they cover the site, else
    naive (seasonal load, clear-sky PV, the tariff), each with why."""
    from cloud.optimization.planner import PlanSettings, run_plan

    settings = PlanSettings(step_minutes=ctx.settings.interval_s // 60, model_dir=str(ctx.settings.model_dir))
    ctx.plans, refused = [], []
    for config in ctx.configs:  # one site that cannot be planned never holds back the others' plans
        try:
            ctx.plans.append(run_plan(config, settings, ctx.cloud, ctx.declared, ctx.inputs.get(config.device_id)))
        except DERError as error:
            refused.append(str(error))
    for reason in refused[1:]:  # the stage's line names the first; each reason is said once
        log.warning("planning: not planned: %s", reason)
    if refused and not ctx.plans:
        raise DERError(refused[0] if len(refused) == 1 else f"no site planned; {refused[0]} (and {len(refused) - 1} more)")
    rows = sum(len(p.step_starts) for p in ctx.plans)
    used = "; ".join(sorted({f"{p.forecaster} forecasts: {p.forecaster_reason}" for p in ctx.plans}))
    stale = sum(bool(p.stale) for p in ctx.plans)
    tail = f"; {stale} planned on stale inputs" if stale else ""
    tail += f"; {len(refused)} not planned: {refused[0]}" + (" (and others)" if len(refused) > 1 else "") if refused else ""
    return StageReport(rows, f"{len(ctx.plans)} plans of {settings.horizon_hours:g} h ({used}){tail}")


def declare(ctx: Context) -> StageReport:
    """Store (or update) each declared site from its site file (``cloud.sync.declare``), and
    its outside inputs."""
    from cloud.live.inputs import declared_inputs
    from cloud.sync.declare import declare_sites

    sites = ctx.settings.declared
    for device_id, versions in declare_sites(ctx.cloud, sites).items():
        log.info("declare: %s changed zone, country, place or panels; its features (%s) are written again",
                 device_id, ", ".join(versions))
    for site in sites:
        ctx.inputs.setdefault(site.device_id, declared_inputs(ctx.cloud, site))
    return StageReport(len(sites), f"{len(sites)} declared site(s) in {ctx.cloud.label}: "
                                   f"{', '.join(site.device_id for site in sites)}")


def declare_pending(ctx: Context) -> StageReport:
    """:func:`declare`, where this process has not yet declared every site: the first run
    declares them, and one the store refused then (unreachable as the pipeline started) is
    declared by the next hour's plans rather than never, which left them no inputs to fetch."""
    if all(site.device_id in ctx.inputs for site in ctx.settings.declared):
        return StageReport(0, "every site declared")
    return declare(ctx)


INPUTS_JOB = "live_inputs"


def inputs(ctx: Context) -> StageReport:
    """Each declared site's weather issue and today's and tomorrow's prices
    (``cloud.live.inputs.SiteInputs.refresh``); a service that is down is one warning line
    and a stale mark on the site's next plan, never a failed stage. The stage is its own
    ``pipeline_runs`` job (:data:`INPUTS_JOB`), ``stale`` with what is stale and why, so
    ``--status`` says it after the run that found it."""
    from der_core.site_file import site_row

    def work():
        rows, stale, down = 0, [], {}  # a service down for one site is not waited on again for each other
        for site in ctx.settings.declared:
            site_inputs = ctx.inputs[site.device_id]
            rows += site_inputs.refresh(site_row(site), down=down)
            stale += [f"{site.device_id} {kind} {text}" for kind, text in sorted(site_inputs.stale.items())]
        return (rows, stale), rows

    rows, stale = recorded_run(ctx.cloud, INPUTS_JOB, {"sites": len(ctx.settings.declared)}, work,
                               stale_of=lambda done: "; ".join(done[1]))
    kinds = sum((site.weather is not None) + (site.prices is not None) for site in ctx.settings.declared)
    message = f"{rows} rows of weather and prices stored for {len(ctx.settings.declared)} site(s), {kinds} input(s)"
    return StageReport(rows, message + (f"; {'; '.join(stale)}" if stale else ""), stale=bool(stale))


PUBLISH_JOB = "publish"


def publish(ctx: Context) -> StageReport:
    """Each plan just made sent to its gateway (``--publish``): one retained schedule on
    ``der/<device_id>/battery/setpoint``, the plan or, where the plan is worse, the battery's
    own rule (``SitePlan.schedule``). A broker that does not acknowledge fails the stage with
    its reason, and the plans not yet sent are left; they stay stored, and the next hourly run
    sends the next ones."""
    from cloud.optimization.publish import PublishFailed, publish_schedule

    mqtt = ctx.settings.mqtt
    broker = f"{mqtt.host}:{mqtt.port}"

    def work():
        sent = []
        # The first refusal stops the rest: a broker down for one site is down for all, and a
        # thousand sites each waiting out its timeout would hold the next hour's plans back.
        for site_plan in ctx.plans:
            try:
                sent.append(publish_schedule(mqtt, site_plan.device_id, site_plan.schedule()))
            except PublishFailed as error:
                raise PublishFailed(f"{len(ctx.plans) - len(sent)} of {len(ctx.plans)} plans not sent to {broker} "
                                    f"({len(sent)} sent); {site_plan.device_id}: {error}") from None
        return sent, len(sent)

    sent = recorded_run(ctx.cloud, PUBLISH_JOB, {"broker": broker, "sites": len(ctx.plans)}, work)
    topic = sent[0] if len(sent) == 1 else "der/<device_id>/battery/setpoint"
    return StageReport(len(sent), f"{len(sent)} plan(s) sent to {topic} on {broker}")


#: Chain order; the runner stops the chain at the first failure, never at an unavailable stage.
STAGES = (("simulate", simulate), ("sync", sync), ("features", features), ("forecasting", forecasting),
          ("planning", planning))
#: The chain of declared sites (``--site``).
DECLARED_STAGES = (("declare", declare), ("inputs", inputs), ("features", features), ("forecasting", forecasting),
                   ("planning", planning))


def chain_of(settings: PipelineSettings) -> tuple:
    """The stages to run, with the sending of the plans last when asked (``--publish``)."""
    chain = DECLARED_STAGES if settings.declared else STAGES
    return (*chain, ("publish", publish)) if settings.mqtt is not None else chain
