"""Property: no configuration file, however malformed, gets past ``load_config`` as anything but
a valid :class:`SimulatorConfig` or one short :class:`ConfigError` line."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from der_core.config import SimulatorConfig, config_to_dict, load_config
from der_core.errors import ConfigError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)

#: Every field path of the configuration, from the defaults (so new fields are fuzzed too).
_DEFAULTS = config_to_dict(SimulatorConfig())
FIELD_PATHS = [(key,) for key, value in _DEFAULTS.items() if not isinstance(value, dict)] + [
    (section, key) for section, fields in _DEFAULTS.items() if isinstance(fields, dict) for key in fields
]


def check(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.json"
        path.write_bytes(raw)
        try:
            config = load_config(path)
        except ConfigError as error:
            text = str(error)
            assert text.startswith(str(path)) and "\n" not in text and len(text) < 600, text
        else:
            assert isinstance(config, SimulatorConfig)


@FUZZ
@given(path=st.sampled_from(FIELD_PATHS), value=json_values)
def test_any_value_in_any_field(path, value):
    data = json.loads(json.dumps(_DEFAULTS))
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    check(json.dumps(data).encode())


@FUZZ
@given(data=st.dictionaries(st.sampled_from([p[0] for p in FIELD_PATHS]) | st.text(max_size=10), json_values, max_size=6))
def test_whole_random_objects(data):
    check(json.dumps(data).encode())


@FUZZ
@given(raw=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_whole_random_files(raw):
    check(raw)


@FUZZ
@given(depth=st.integers(1, 3000), key=st.sampled_from(["solar", "battery", "x"]), bracket=st.booleans())
def test_any_nesting(depth, key, bracket):
    opening, closing = (b"[", b"]") if bracket else (b'{"' + key.encode() + b'": ', b"}")
    check(b'{"solar": ' + opening * depth + b"1" + closing * depth + b"}")


@FUZZ
@given(path=st.sampled_from(FIELD_PATHS), junk=st.binary(min_size=1, max_size=20))
def test_raw_bytes_inside_a_field(path, junk):
    head = "".join(f'{{"{part}": ' for part in path).encode()
    check(head + b'"' + junk + b'"' + b"}" * len(path))
