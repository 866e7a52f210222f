"""Properties of every command line: whatever the flags and values, no traceback; a refused
command is exactly one line on stderr and exit status 2; and a meter import, however bad
its rows, never loses readings already stored.

Commands run in-process through ``main(argv)`` (as ``run_*.py`` call them) in a scratch
folder. Only short work is started: ``run_simulator.py`` backfills at most two hours, and the
other entry points are exercised through their argument parsing.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cloud.store.sqlite import SQLiteCloudStore
from cloud.sync.importer import UNITS
from der_core import der_data as dd
from der_core.cli_support import run_cli
from edge_gateway import cli

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parses(text: str) -> bool:
    try:
        return pd.Timestamp(text) is not pd.NaT
    except (ValueError, TypeError, OverflowError):
        return False


def call(main, argv: list[str]) -> tuple[int, str]:
    """Exit status and stderr of one in-process run, as the ``run_*.py`` wrapper gives them."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = run_cli(main, argv)
        except SystemExit as stop:  # argparse's own exit (bad flags, --help)
            code = stop.code if isinstance(stop.code, int) else 2
    return code, err.getvalue()


def assert_clean(code: int, stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert code in (0, 1, 2), (code, stderr)
    if code == 2:
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and "error: " in lines[0], stderr
        assert len(lines[0]) < 2_500


# --- run_simulator.py --------------------------------------------------------------------
junk = st.text(max_size=30).filter(lambda t: not parses(t))
short_range_start = st.datetimes(min_value=pd.Timestamp("2024-01-01").to_pydatetime(),
                                 max_value=pd.Timestamp("2024-12-31").to_pydatetime())
values = st.one_of(
    junk,
    st.integers(-10**6, 10**12).map(str),
    st.sampled_from(["", "-", "/", "/proc/x/y", "nodir/x.jsonl", "..", "a b", "\x00", "é", "0", "-1", "1e9", "nan"]),
)
option_flags = ["--config", "--interval", "--output", "--seed", "--device-id", "--sites", "--store", "--influxdb-url",
                "--influxdb-token", "--influxdb-org", "--influxdb-bucket", "--influxdb-retention-days", "--mqtt-host",
                "--mqtt-port"]
switches = ["--no-store", "--force", "--quiet", "--frobnicate", "--once", "--continuous"]


@st.composite
def simulator_argv(draw) -> list[str]:
    mode = draw(st.sampled_from(["--historical", "--generate-config", "--status"]))
    argv = [mode]
    if mode == "--historical":
        start = draw(short_range_start)
        end = start + pd.Timedelta(minutes=draw(st.integers(-60, 120)))
        argv += ["--start", draw(st.sampled_from([start.isoformat(), draw(junk)])),
                 "--end", draw(st.sampled_from([end.isoformat(), end.strftime("%Y-%m-%dT%H:%M"), draw(junk)]))]
    for flag in draw(st.lists(st.sampled_from(option_flags), max_size=4, unique=True)):
        argv += [flag, draw(values)]
    argv += draw(st.lists(st.sampled_from(switches), max_size=2, unique=True))
    return argv


@contextlib.contextmanager
def scratch():
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        yield Path(folder)


@FUZZ
@given(argv=simulator_argv(), config=st.none() | st.binary(max_size=120) | st.sampled_from(
    [b'{"output_file": "/"}', b'{"interval_seconds": "300"}', b'{"country": "ZZ"}', b'{"sites": 3}', b"{}"]))
def test_simulator_command_lines(argv, config):
    # Sites beyond a handful make this test slow, not more thorough.
    assume("--sites" not in argv or not argv[argv.index("--sites") + 1].isdigit() or int(argv[argv.index("--sites") + 1]) <= 3
           or int(argv[argv.index("--sites") + 1]) > cli.MAX_SITES)
    with scratch() as folder:
        if config is not None:
            (folder / "given.json").write_bytes(config)
            argv = [*argv, "--config", "given.json"] if "--config" not in argv else argv
        assert_clean(*call(cli.main, argv))


# --- every other entry point: argument parsing -------------------------------------------
ENTRY_POINTS = ["run_cloud_sync", "run_dashboard", "run_feature_engineering", "run_model_training", "run_optimizer",
                "run_pipeline", "run_portfolio"]


@pytest.mark.parametrize("name", ENTRY_POINTS)
@FUZZ
@given(data=st.data())
def test_other_command_lines_parse_to_one_line(name, data):
    parser = importlib.import_module(name).build_parser()
    flags = [o for action in parser._actions for o in action.option_strings if o not in ("-h", "--help")]
    argv = []
    for flag in data.draw(st.lists(st.sampled_from(flags), max_size=5)):
        argv += [flag] + data.draw(st.lists(values, max_size=1))
    argv += data.draw(st.lists(st.sampled_from(["--frobnicate", "-x", "--"]), max_size=1))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
            code = 0
        except SystemExit as stop:
            code = stop.code
    assert_clean(code, err.getvalue())


# --- run_cloud_sync.py --import ----------------------------------------------------------
cells = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**20, 10**20),
                  st.text(max_size=12), st.sampled_from(["2024-01-01", "2024-03-31 02:30", "2024-01-01T01:00+01:00", "peak", "1e400", ""]))
columns = st.sampled_from(["ts", "time", "solar_generation_kw", "home_load_total_load_kw", "battery_soc_percent",
                           "grid_price_time_of_use_period", "device_id", "pv_w", "battery_cycles", "x"])


@st.composite
def meter_files(draw) -> str:
    names = draw(st.lists(columns, min_size=1, max_size=5))
    rows = draw(st.lists(st.lists(cells, min_size=len(names), max_size=len(names)), max_size=8))
    if draw(st.booleans()):  # keep a plausible time column in front so row checks are reached
        names, rows = ["ts", *names], [[f"2024-01-01T{i % 24:02d}:00:00Z", *row] for i, row in enumerate(rows)]
    frame = pd.DataFrame(rows, columns=names) if rows else pd.DataFrame(columns=names)
    text = frame.to_csv(index=False)
    return draw(st.sampled_from([text, text.replace(",", ";"), text[: len(text) // 2], text + draw(st.text(max_size=20))]))


GOOD = pd.DataFrame({"ts": pd.date_range("2023-06-01", periods=6, freq="h", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "solar_generation_kw": np.linspace(0.5, 3.0, 6), "home_load_total_load_kw": np.linspace(1.0, 2.0, 6)})


@pytest.fixture(scope="module")
def seeded_cloud():
    """A cloud store holding a good import, copied per example."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "seed.db"
        GOOD.to_csv(Path(folder) / "good.csv", index=False)
        assert call(importlib.import_module("run_cloud_sync").main,
                    ["--import", str(Path(folder) / "good.csv"), "--device-id", "meter-1", "--cloud-db", str(path)])[0] == 0
        with SQLiteCloudStore(path) as store:
            store.close()  # folds the write-ahead log into the file so a byte copy is complete
        yield path


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=meter_files(), device=st.sampled_from(["meter-1", "meter-2", "bad id", "", "-x"]),
       units=st.sampled_from(list(UNITS)), zone=st.sampled_from(["UTC", "America/Los_Angeles", "Mars/Base"]))
def test_bad_imports_keep_what_was_stored(seeded_cloud, text, device, units, zone):
    sync = importlib.import_module("run_cloud_sync")
    with scratch() as folder:
        shutil.copyfile(seeded_cloud, folder / "cloud.db")
        (folder / "m.csv").write_text(text)
        code, stderr = call(sync.main, ["--import", "m.csv", "--device-id", device, "--units", units, "--timezone", zone,
                                        "--cloud-db", "cloud.db"])
        assert_clean(code, stderr)
        with SQLiteCloudStore(folder / "cloud.db") as store:
            kept = store.read_readings("meter-1")
        if device != "meter-1" or code != 0:
            assert len(kept) == len(GOOD)
            assert kept[dd.SOLAR_KW].tolist() == pytest.approx(GOOD["solar_generation_kw"].tolist())
        else:
            assert len(kept) >= len(GOOD)
