"""Tariff files: a tariff (``der_core.tariff``) read from and written to JSON (or YAML, when
PyYAML is installed), validated once where it enters, and the built-in tariffs by name."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from der_core.config import GridPriceConfig, read_json_file, validated
from der_core.errors import ConfigError
from der_core.tariff import Tariff, tou_tariff

YAML_SUFFIXES = (".yaml", ".yml")
FILE_SUFFIXES = (".json", *YAML_SUFFIXES)

_DEFAULT_PRICES = GridPriceConfig()
#: Built-in tariffs by name: ``default_tou`` is the simulated sites' time-of-use tariff at the
#: simulator configuration's default prices and demand charge.
TARIFFS: Mapping[str, Tariff] = {
    "default_tou": tou_tariff(_DEFAULT_PRICES.off_peak_price, _DEFAULT_PRICES.shoulder_price, _DEFAULT_PRICES.peak_price,
                              _DEFAULT_PRICES.base_feed_in_tariff, _DEFAULT_PRICES.demand_charge),
}


def build_tariff(data: Any, source: str = "tariff") -> Tariff:
    """Validate parsed data into a :class:`Tariff`, or raise one-line :class:`ConfigError`."""
    return validated(Tariff, data, source)


def _read_yaml(path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write the tariff as JSON") from None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: tariff file not found; write one as docs/tariffs.md shows") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read tariff file ({error}); expected a YAML file in UTF-8") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: malformed YAML{where}: {getattr(error, 'problem', None) or 'unreadable'}") from None


def load_tariff_file(path: str | Path) -> Tariff:
    """Read and validate a tariff file: YAML by its suffix (``.yaml``, ``.yml``), else JSON."""
    path = Path(path)
    if path.suffix.lower() in YAML_SUFFIXES:
        data = _read_yaml(path)
    else:
        data = read_json_file(path, "tariff file", "write one as docs/tariffs.md shows")
    return build_tariff(data, source=str(path))


def tariff_to_dict(tariff: Tariff) -> dict[str, Any]:
    return tariff.model_dump(mode="json")


def write_tariff_file(tariff: Tariff, path: str | Path) -> Path:
    """Write ``tariff`` as JSON, or YAML by the path's suffix; it reads back equal."""
    path = Path(path)
    data = tariff_to_dict(tariff)
    if path.suffix.lower() in YAML_SUFFIXES:
        import yaml

        path.write_text(yaml.safe_dump(data, sort_keys=False))
    else:
        path.write_text(json.dumps(data, indent=2) + "\n")
    return path
