"""``--import FILE --device-id ID``: measured meter data through the sync's validation and
upsert path; fields the file lacks stay empty."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import run_cloud_sync
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
from cloud.sync.importer import ImportOptions, import_file, parse_column_map
from der_core import der_data as dd
from der_core.cli_support import run_cli
from der_core.errors import UsageError


def meter_frame(steps: int = 96, freq: str = "15min") -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({
        "Time": pd.date_range("2024-03-20 00:00", periods=steps, freq=freq).strftime("%Y-%m-%d %H:%M:%S"),
        "pv_w": np.round(rng.uniform(0, 4000, steps), 1),
        "load_w": np.round(rng.uniform(200, 3000, steps), 1),
        "meter_note": "ok",
    })


def write(frame: pd.DataFrame, path) -> None:
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)


@pytest.fixture
def cloud(tmp_path):
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        yield store


OPTIONS = ImportOptions("meter-1", {"pv_w": dd.SOLAR_KW, "load_w": dd.LOAD_TOTAL}, units="W",
                        timezone="Europe/Berlin", timestamp_column="Time")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("freq", ["15min", "1h"])
def test_import_maps_columns_converts_units_and_zone_leaves_the_rest_empty(tmp_path, cloud, suffix, freq):
    raw = meter_frame(freq=freq)
    path = tmp_path / f"meter{suffix}"
    write(raw, path)
    result = import_file(path, cloud, OPTIONS)
    back = cloud.read_readings("meter-1")
    assert result.rows_synced == len(raw) == len(back)
    assert back[dd.SOLAR_KW].tolist() == pytest.approx((raw["pv_w"] / 1000).tolist())
    assert back[dd.LOAD_TOTAL].tolist() == pytest.approx((raw["load_w"] / 1000).tolist())
    assert back[dd.TS][0] == pd.Timestamp("2024-03-19T23:00:00Z")  # Berlin is UTC+1 before the spring switch
    untouched = [c for c in dd.FIELD_TYPES if c not in (dd.SOLAR_KW, dd.LOAD_TOTAL)]
    assert back[untouched].isna().all().all()
    assert cloud.last_run("cloud_import")[s.STATUS] == "ok"


def test_dst_change_keeps_a_regular_utc_series(tmp_path, cloud):
    raw = meter_frame(steps=8, freq="1h")
    raw["Time"] = pd.date_range("2024-10-27 00:00", periods=8, freq="1h", tz="UTC").tz_convert(
        "Europe/Berlin").strftime("%Y-%m-%d %H:%M:%S")  # local clock repeats 02:00-03:00
    write(raw, tmp_path / "m.csv")
    import_file(tmp_path / "m.csv", cloud, OPTIONS)
    ts = cloud.read_readings("meter-1")[dd.TS]
    assert (ts.diff().dropna() == pd.Timedelta(hours=1)).all() and len(ts) == 8


def test_a_local_time_the_clock_skips_is_refused_not_guessed(tmp_path, cloud):
    raw = meter_frame(steps=4, freq="1h")
    raw["Time"] = ["2024-03-31 00:00", "2024-03-31 01:00", "2024-03-31 02:00", "2024-03-31 03:00"]
    write(raw, tmp_path / "m.csv")
    with pytest.raises(UsageError, match="2024-03-31 02:00:00 is a nonexistent time"):
        import_file(tmp_path / "m.csv", cloud, OPTIONS)


def test_bad_rows_are_quarantined_missing_columns_are_not(tmp_path, cloud):
    raw = meter_frame(steps=10)
    raw.loc[2, "pv_w"] = -500.0
    raw.loc[5, "load_w"] = np.nan
    write(raw, tmp_path / "m.csv")
    result = import_file(tmp_path / "m.csv", cloud, OPTIONS)
    assert (result.rows_synced, result.rows_quarantined) == (8, 2)
    reasons = cloud.read_quarantine("meter-1")[s.REASON].tolist()
    assert reasons == ["solar_generation_kw outside [0, 10000] (got -0.5)",
                       "home_load_total_load_kw is missing (NaN) but required"]


def test_import_is_idempotent(tmp_path, cloud):
    write(meter_frame(), tmp_path / "m.csv")
    import_file(tmp_path / "m.csv", cloud, OPTIONS)
    import_file(tmp_path / "m.csv", cloud, OPTIONS)
    assert cloud.count_readings("meter-1") == 96


@pytest.mark.parametrize("text, message", [
    ("pv_w", "expected FILE_COLUMN=field pairs"),
    ("pv_w=solar_kw", "'solar_kw' is not a reading field"),
])
def test_bad_column_map_is_a_usage_error(text, message):
    with pytest.raises(UsageError, match=message):
        parse_column_map(text)


def test_file_without_timestamp_or_fields_says_what_it_expected(tmp_path, cloud):
    pd.DataFrame({"when": ["2024-01-01"], "pv_w": [1.0]}).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(UsageError, match="no timestamp column; expected one of"):
        import_file(tmp_path / "a.csv", cloud, ImportOptions("m"))
    pd.DataFrame({"ts": ["2024-01-01"], "pv_w": [1.0]}).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(UsageError, match="no reading fields found; map the file's columns"):
        import_file(tmp_path / "b.csv", cloud, ImportOptions("m"))


def test_cli_import(tmp_path, capsys):
    write(meter_frame(steps=12), tmp_path / "m.csv")
    args = ["--import", str(tmp_path / "m.csv"), "--device-id", "meter-9", "--column-map",
            "pv_w=solar_generation_kw,load_w=home_load_total_load_kw", "--units", "W", "--timezone", "UTC",
            "--timestamp-column", "Time", "--cloud-db", str(tmp_path / "cloud.db")]
    assert run_cli(run_cloud_sync.main, args) == 0
    assert "imported 12 readings of meter-9 (0 quarantined)" in capsys.readouterr().out
    assert run_cli(run_cloud_sync.main, [*args[:4], "--timezone", "Mars/Olympus"]) == 2
    assert "--timezone 'Mars/Olympus': expected an IANA name" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["has space", "../up", "", "x" * 65])
def test_device_id_is_checked_where_it_enters(tmp_path, capsys, device):
    write(meter_frame(steps=4), tmp_path / "m.csv")
    with pytest.raises(SystemExit) as stop:
        run_cli(run_cloud_sync.main, ["--import", str(tmp_path / "m.csv"), "--device-id", device, "--cloud-db", str(tmp_path / "c.db")])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("run_cloud_sync.py: error: argument --device-id: device_id ") and "is not valid; expected 1 to 64" in line
    with pytest.raises(UsageError, match="--device-id: device_id 'has space' is not valid"):
        ImportOptions("has space")


@pytest.mark.parametrize("times, message", [
    (["2024-01-01T00:00", "tomorrow-ish"], "m.csv: line 3: timestamp 'tomorrow-ish' is not an ISO 8601 time; expected ISO 8601 times"),
    (["2024-01-01T00:00Z", "2024-01-01T01:00"], "m.csv: timestamp column mixes times with and without an offset"),
])
def test_unreadable_times_name_the_line_and_keep_what_was_stored(tmp_path, cloud, capsys, times, message):
    write(meter_frame(), tmp_path / "good.csv")
    import_file(tmp_path / "good.csv", cloud, OPTIONS)
    bad = meter_frame(steps=2).assign(Time=times)
    write(bad, tmp_path / "m.csv")
    args = ["--import", "m.csv", "--device-id", "meter-1", "--timestamp-column", "Time", "--column-map",
            "pv_w=solar_generation_kw", "--cloud-db", str(tmp_path / "cloud.db")]
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert run_cli(run_cloud_sync.main, args) == 2
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: {message}")
    assert cloud.count_readings("meter-1") == 96


def test_times_whose_offsets_change_with_the_season_are_read(tmp_path, cloud):
    raw = meter_frame(steps=2).assign(Time=["2024-03-31T01:00:00+01:00", "2024-03-31T03:00:00+02:00"])
    write(raw, tmp_path / "m.csv")
    import_file(tmp_path / "m.csv", cloud, OPTIONS)
    assert cloud.read_readings("meter-1")[dd.TS].tolist() == list(pd.to_datetime(["2024-03-31T00:00Z", "2024-03-31T01:00Z"]))
