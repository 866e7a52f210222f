"""Tariff files: a tariff (``der_core.tariff``) read from and written to JSON (or YAML, when
PyYAML is installed), validated once where it enters, and the built-in tariffs by name."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from der_core import der_data as dd
from der_core.config import MAX_JSON_BYTES, GridPriceConfig, read_json_file, validated
from der_core.errors import ConfigError
from der_core.files import input_problem, read_input
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


#: What a YAML document's top level is, for "expected a mapping, got ..." lines.
_YAML_KINDS = {type(None): "an empty file", list: "a list", str: "a string", int: "a number", float: "a number",
               bool: "true/false"}


class _Refused(Exception):
    """A YAML construct a tariff file may not use, with the line it is on."""


def _strict_loader(yaml: Any) -> type:
    """PyYAML's safe loader, held to what the JSON reader (``der_core.config.read_json_file``)
    holds a file to: a key written twice in one mapping is refused, since the reader would keep
    the last and which of two prices the owner meant cannot be told; an alias is refused, since
    the reader expands each one again, so a few lines of nested aliases make billions of
    values (a tariff has nothing worth sharing by reference)."""

    class StrictLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise _Refused(f"an alias (*{event.anchor}) at line {event.start_mark.line + 1}; expected each value "
                               "written out where it is used")
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    continue  # an unhashable key is the safe loader's own error
                if key in seen:
                    raise _Refused(f"field {dd.shown(key)} is written twice in one mapping (line "
                                   f"{key_node.start_mark.line + 1}); expected each field once")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def _read_yaml(path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write the tariff as JSON") from None
    if input_problem(path) == "not found":
        raise ConfigError(f"{path}: tariff file not found; write one as docs/tariffs.md shows")
    raw = read_input(path, MAX_JSON_BYTES, dd.shown(str(path), 200), "a tariff file (a YAML file)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start}); "
                          "expected a YAML file in UTF-8") from None
    try:
        data = yaml.load(text, Loader=_strict_loader(yaml))  # a SafeLoader, stricter still
    except _Refused as error:
        raise ConfigError(f"{path}: {error}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read; expected the documented sections") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: malformed YAML{where}: {getattr(error, 'problem', None) or 'unreadable'}") from None
    if not isinstance(data, dict):
        got = _YAML_KINDS.get(type(data), type(data).__name__)
        raise ConfigError(f"{path}: expected a mapping of the tariff's fields at the top level, got {got}")
    return data


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
