"""The model registry: one folder per trained version under ``FORECAST_MODEL_DIR``.

::

    trained_models/
      ACTIVE                      the active version's name (replaced atomically)
      20240601T120000Z/
        manifest.json             design version, features, targets (and why any was skipped),
                                  sites, training and test ranges, settings
        metrics.json              every model's test metrics, per-horizon curves, backtest
        sample_week.png           forecast against actuals for a sample test week
        evaluations.json          what each --evaluate measured later, with drift verdicts
        load_kw/lightgbm/p10.txt  model files, one folder per target and model kind
        load_kw/ridge/...

A version is written completely under a temporary name and then renamed, so a crash never
leaves a half-written version that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import pandas as pd

from cloud.forecasting.models import Forecaster, load_model
from der_core.errors import DERError

ACTIVE, MANIFEST, METRICS, EVALUATIONS, PLOT = "ACTIVE", "manifest.json", "metrics.json", "evaluations.json", "sample_week.png"


def site_range(entry: dict[str, Any], device_id: str) -> tuple[pd.Timestamp | None, pd.Timestamp]:
    """From a target's manifest entry, the newest truth a site's training rows held and the
    newest the version learnt from for it (its test rows' too): the site's own, each site being
    split at its own time; the target's whole range for a version that kept none per site."""
    own = entry.get("site_ranges", {}).get(device_id)
    if own is not None:
        trained, tested = (pd.Timestamp(x) for x in own)
        return trained, max(trained, tested)
    trained, tested = (pd.Timestamp(entry[key][1]) if entry.get(key) else None for key in ("train_range", "test_range"))
    return trained, max(t for t in (trained, tested) if t is not None)


class NoModels(DERError):
    """No trained version (or not the one asked for) in the registry."""


class DamagedModels(NoModels):
    """A registry file that cannot be read as the registry wrote it: no usable models, said
    in one line naming the file, where a job would otherwise stop on a JSON error."""


#: How a damaged version is mended, said with every :class:`DamagedModels`.
MEND = "train again with `python run_model_training.py --train`, or remove that version"


def _json(path: Path, *, manifest: bool = False) -> Any:
    """``path`` read as the registry wrote it (a manifest: an object naming its version and
    targets), else :class:`DamagedModels`."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DamagedModels(f"{path}: cannot be read as the registry wrote it ({str(error)[:120]}); {MEND}") from None
    if manifest and not (isinstance(value, dict) and isinstance(value.get("version"), str)
                         and isinstance(value.get("targets"), dict)):
        raise DamagedModels(f"{path}: holds no version and targets as the registry writes them; {MEND}")
    return value


@dataclass
class LoadedVersion:
    name: str
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    models: dict[str, dict[str, Forecaster]]  # target -> kind -> model


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))


class Registry:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def new_version(self, now: pd.Timestamp) -> tuple[str, Path]:
        """A fresh version name and the temporary folder to write it in."""
        base = pd.Timestamp(now).tz_convert("UTC").strftime("%Y%m%dT%H%M%SZ")
        name, k = base, 1
        while (self.root / name).exists():
            k += 1
            name = f"{base}-{k}"
        staging = self.root / f".{name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return name, staging

    def commit(self, name: str, staging: Path, manifest: dict[str, Any], metrics: dict[str, Any],
               models: dict[str, dict[str, Forecaster]]) -> Path:
        for target, kinds in models.items():
            for kind, model in kinds.items():
                model.save(staging / target / kind)
        _write_json(staging / MANIFEST, {**manifest, "version": name})
        _write_json(staging / METRICS, metrics)
        final = self.root / name
        staging.rename(final)
        return final

    def activate(self, name: str) -> None:
        if not (self.root / name / MANIFEST).exists():
            raise NoModels(f"no version {name!r} in {self.root}")
        temporary = self.root / f".{ACTIVE}.tmp"
        temporary.write_text(name + "\n")
        os.replace(temporary, self.root / ACTIVE)

    def active(self) -> str | None:
        try:
            name = (self.root / ACTIVE).read_text().strip()
        except OSError:
            return None
        return name if (self.root / name / MANIFEST).exists() else None

    def versions(self) -> list[dict[str, Any]]:
        """Manifests of every complete version, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and not folder.name.startswith(".") and (folder / MANIFEST).exists():
                found.append(self.manifest(folder.name))
        return found

    def manifest(self, name: str) -> dict[str, Any]:
        """Version ``name``'s manifest, read alone: a damaged other version does not stop it."""
        return _json(self.root / name / MANIFEST, manifest=True)

    def metrics(self, name: str) -> dict[str, Any]:
        return _json(self.root / name / METRICS)

    def load(self, name: str | None = None) -> LoadedVersion:
        name = name or self.active()
        if name is None:
            raise NoModels(f"no active model in {self.root}: train one with `python run_model_training.py --train`")
        folder = self.root / name
        if not (folder / MANIFEST).exists():
            raise NoModels(f"no version {name!r} in {self.root}")
        manifest = self.manifest(name)
        try:
            models = {target: {kind: load_model(folder / target / kind) for kind in info["models"]}
                      for target, info in manifest["targets"].items()}
        except (OSError, ValueError, KeyError, TypeError, lgb.basic.LightGBMError) as error:
            raise DamagedModels(f"{folder}: a model cannot be read as training wrote it ({str(error)[:120]}); {MEND}") from None
        return LoadedVersion(name, manifest, self.metrics(name), models)

    def record_evaluation(self, name: str, evaluation: dict[str, Any]) -> None:
        path = self.root / name / EVALUATIONS
        history = _json(path) if path.exists() else []
        history.append(evaluation)
        _write_json(path, history)

    def evaluations(self, name: str) -> list[dict[str, Any]]:
        path = self.root / name / EVALUATIONS
        return _json(path) if path.exists() else []

    def age(self, name: str, now: pd.Timestamp) -> pd.Timedelta:
        created = pd.Timestamp(self.manifest(name)["created_at"])
        return pd.Timestamp(now) - created
