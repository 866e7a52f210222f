"""Settings of the one-command pipeline, validated once where they enter.

Defaults are chosen so a fresh clone runs the whole chain in well under three minutes on two
cores: three simulated homes, 21 days of 15-minute history (enough for a week of lags plus
the forecasters' minimum of 14 days), everything in one data folder. With site files
(``--site``) the chain runs for those declared sites instead, and simulates nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cloud.store.factory import SQLITE, CloudSettings, cloud_settings
from der_core.config import SimulatorConfig, build_config
from der_core.errors import ConfigError
from der_core.site_file import SiteDeclaration, load_site_file, planning_config

if TYPE_CHECKING:
    from edge_gateway.mqtt.settings import MqttSettings

DEFAULT_DATA_DIR = "data"
DEFAULT_SITES = 3
DEFAULT_DAYS = 21
DEFAULT_INTERVAL_S = 900
DEFAULT_SEED = 2024
DEVICE_PREFIX = "home"

# Production cadences of the cloud jobs: what --continuous schedules.
SYNC_EVERY_S = 60
FEATURES_EVERY_S = 3600
TRAIN_EVERY_S = 86_400
PLAN_EVERY_S = 3600


@dataclass(frozen=True)
class PipelineSettings:
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    sites: int = DEFAULT_SITES
    days: int = DEFAULT_DAYS
    interval_s: int = DEFAULT_INTERVAL_S
    seed: int = DEFAULT_SEED
    cloud: CloudSettings = field(default_factory=CloudSettings)
    #: Retrain when the active models are older than this; younger ones are reused.
    retrain_after: pd.Timedelta = pd.Timedelta(seconds=TRAIN_EVERY_S)
    #: Real sites from their site files (``--site``): the chain runs for them and simulates nothing.
    declared: tuple[SiteDeclaration, ...] = ()
    #: Where the models live when asked (``FORECAST_MODEL_DIR``); see :attr:`model_dir`.
    models: Path | None = None
    #: The broker each plan is sent to (``--publish``, ``MQTT_*``); None: plans are only stored.
    mqtt: MqttSettings | None = None

    def __post_init__(self) -> None:
        ids = [site.device_id for site in self.declared]
        if len(set(ids)) != len(ids):
            twice = next(i for i in ids if ids.count(i) > 1)
            files = " and ".join(site.read_from for site in self.declared if site.device_id == twice)
            raise ConfigError(f"--site: device_id {twice} is declared twice ({files}); expected one site file per site")
        if not 1 <= self.sites <= 200:
            raise ConfigError(f"--sites {self.sites}: expected 1 to 200 simulated sites")
        if not 15 <= self.days <= 90:
            raise ConfigError(f"--days {self.days}: expected 15 to 90 days (the forecasters need 14 days of history)")
        if self.interval_s <= 0 or 86_400 % self.interval_s or self.interval_s > 3600:
            raise ConfigError(f"--interval {self.interval_s}: expected seconds that divide a day, at most 3600")

    @property
    def edge_db(self) -> Path:
        return self.data_dir / "edge.db"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    @property
    def model_dir(self) -> Path:
        """``FORECAST_MODEL_DIR`` when set. Otherwise a real site's models are those of
        ``run_model_training.py`` and ``run_optimizer.py`` (``./trained_models``): the models its
        owner trained are reused, and a plan made by hand reads the pipeline's. Simulated sites
        keep theirs in the data folder, apart from any real site's."""
        from cloud.forecasting.settings import DEFAULT_MODEL_DIR  # the forecasting package loads slowly

        if self.models is not None:
            return self.models
        return Path(DEFAULT_MODEL_DIR) if self.declared else self.data_dir / "models"

    @property
    def history(self) -> pd.Timedelta:
        return pd.Timedelta(days=self.days)

    def declared_configs(self) -> list[SimulatorConfig]:
        """The declared sites as the optimizer reads them."""
        return [planning_config(site) for site in self.declared]

    def template(self) -> SimulatorConfig:
        """The simulated homes' common configuration; ``der_core.sites`` varies each site around it."""
        return build_config({"device_id": DEVICE_PREFIX, "interval_seconds": self.interval_s, "seed": self.seed,
                             "edge_store_path": str(self.edge_db)}, source="pipeline")


def pipeline_settings(data_dir: str | Path = DEFAULT_DATA_DIR, *, sites: int = DEFAULT_SITES, days: int = DEFAULT_DAYS,
                      interval_s: int = DEFAULT_INTERVAL_S, seed: int = DEFAULT_SEED,
                      backend: str | None = None, site_files: Sequence[str | Path] = (),
                      cloud_db: str | Path | None = None, publish: bool = False, fetching: bool = True) -> PipelineSettings:
    """The cloud store follows the usual variables; the embedded one is ``cloud_db``, else
    lives in ``data_dir`` (the jobs' ``--cloud-db FILE`` is the same store). ``publish``: send
    the plans to the broker of the ``MQTT_*`` variables, read here so a bad one is one line.
    Each site file is read and checked here, its price source included, so a wrong one is one
    line before anything runs; without ``fetching`` (``--status``, which asks no service) the
    price source is not built, so a service's key is not asked for."""
    declared: tuple[SiteDeclaration, ...] = ()
    if site_files:
        from cloud.live.inputs import check_declaration  # the outside services' adapters: only with --site

        declared = tuple((check_declaration if fetching else (lambda site: site))(load_site_file(path))
                         for path in site_files)
    data_dir = Path(data_dir)
    embedded = str(cloud_db) if cloud_db is not None else str(data_dir / "cloud.db")
    cloud = cloud_settings(backend=backend, sqlite_path=embedded)
    if cloud.backend != SQLITE:
        cloud = CloudSettings(cloud.backend, embedded, cloud.database_url, cloud.supabase_url, cloud.supabase_key)
    models = os.environ.get("FORECAST_MODEL_DIR") or None
    if publish:
        from edge_gateway.mqtt.settings import mqtt_settings  # the MQTT package only when plans are sent
    return PipelineSettings(data_dir, sites, days, interval_s, seed, cloud, declared=declared,
                            models=None if models is None else Path(models), mqtt=mqtt_settings() if publish else None)
