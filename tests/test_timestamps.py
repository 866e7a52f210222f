"""A logger's times to UTC, row by row: local time across both DST changes, changing offsets,
a refused row instead of a refused file, and the time column found by its common names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cloud.sync.timestamps import TimeReader, find_time_columns, time_texts
from der_core.errors import UsageError


def local_texts(zone: str, start_utc: str, periods: int, freq: str = "15min") -> tuple[pd.Series, pd.DatetimeIndex]:
    """A logger's wall-clock texts for a regular UTC series, and the true instants."""
    instants = pd.date_range(start_utc, periods=periods, freq=freq, tz="UTC")
    return pd.Series(instants.tz_convert(zone).strftime("%Y-%m-%d %H:%M:%S")), instants


def read_in_chunks(reader: TimeReader, texts: pd.Series, size: int) -> tuple[pd.Series, pd.Series]:
    parts = [reader.read(texts.iloc[i:i + size]) for i in range(0, len(texts), size)]
    return pd.concat([p[0] for p in parts]), pd.concat([p[1] for p in parts])


@pytest.mark.parametrize("zone, spring, autumn", [
    ("Europe/Berlin", "2024-03-30 12:00", "2024-10-26 12:00"),
    ("America/Los_Angeles", "2024-03-09 20:00", "2024-11-02 20:00"),
])
@pytest.mark.parametrize("chunk", [10_000, 7, 1])  # a chunk may end inside the repeated hour
def test_local_time_across_both_dst_changes_reads_every_instant(zone, spring, autumn, chunk):
    march, march_utc = local_texts(zone, spring, 4 * 36)
    november, november_utc = local_texts(zone, autumn, 4 * 36)
    texts = pd.concat([march, november], ignore_index=True)
    assert texts.duplicated().sum() == 4  # the repeated autumn hour
    ts, reasons = read_in_chunks(TimeReader(zone), texts, chunk)
    assert (reasons == "").all()
    assert ts.tolist() == [*march_utc, *november_utc]


def test_offsets_that_change_at_dst_read_as_their_instants():
    texts = pd.Series(["2024-10-27T02:30:00+02:00", "2024-10-27T02:30:00+01:00", "2024-03-31T03:00:00+02:00",
                       "2024-03-31T00:45Z"])
    ts, reasons = TimeReader("Europe/Berlin").read(texts)
    assert (reasons == "").all()
    assert ts.tolist() == list(pd.to_datetime(["2024-10-27T00:30Z", "2024-10-27T01:30Z", "2024-03-31T01:00Z",
                                               "2024-03-31T00:45Z"]))


@pytest.mark.parametrize("texts, row, reason", [
    (["2024-01-01T00:00", "tomorrow-ish", "2024-01-01T00:30"], 1,
     "timestamp 'tomorrow-ish' is not a time; expected ISO 8601"),
    (["2024-01-01T00:00", None, "2024-01-01T00:30"], 1, "timestamp is empty; expected a time on every row"),
    (["2024-03-31 01:45", "2024-03-31 02:00", "2024-03-31 03:00"], 1,
     "local time 2024-03-31 02:00:00 does not exist in Europe/Berlin (the clock skips it at DST)"),
    (["2024-01-01T00:00Z", "2024-01-01T00:15", "2024-01-01T00:30Z"], 1,
     "timestamp has no offset while the file's times carry one"),
    (["2024-01-01T00:00", "2024-01-01T00:15+01:00", "2024-01-01T00:30"], 1,
     "timestamp carries an offset while the file's times have none (read in Europe/Berlin)"),
])
def test_a_time_that_cannot_be_placed_refuses_its_row_only(texts, row, reason):
    ts, reasons = TimeReader("Europe/Berlin").read(pd.Series(texts))
    assert reasons[row].startswith(reason) and pd.isna(ts[row])
    others = [i for i in range(len(texts)) if i != row]
    assert (reasons[others] == "").all() and ts[others].notna().all()


def test_a_strftime_pattern_reads_day_first_times():
    ts, reasons = TimeReader("UTC", "%d.%m.%Y %H:%M").read(pd.Series(["31.03.2024 14:15", "2024-03-31 14:30"]))
    assert ts[0] == pd.Timestamp("2024-03-31T14:15Z")
    assert reasons[1] == "timestamp '2024-03-31 14:30' is not a time; expected format '%d.%m.%Y %H:%M'"


def test_datetime_columns_of_a_parquet_file_are_taken_as_they_are():
    naive = pd.Series(pd.to_datetime(["2024-07-01 12:00", None]))
    ts, reasons = TimeReader("Europe/Berlin").read(naive)
    assert ts[0] == pd.Timestamp("2024-07-01T10:00Z") and reasons[1].startswith("timestamp is empty")


@pytest.mark.parametrize("name", ["Timestamp", "TIME", "DateTime", "Date/Time", "date_time", "time_utc", "UTC",
                                  "Local Time", "period_end", "Timestamp (UTC)", "measured_on", "Time Stamp"])
def test_common_time_column_names_are_found_in_any_case(name):
    assert find_time_columns(["pv_w", name, "note"], None, "m.csv") == (name,)


@pytest.mark.parametrize("first", ["", "column 1", "Unnamed: 0"])
def test_a_first_column_without_a_name_is_the_time_where_none_is_named(first):
    """A frame indexed by time written with pandas' to_csv leaves the index's name empty
    (NREL's SERF West data in pvanalytics): the import found no time column."""
    assert find_time_columns([first, "ac_power", "poa"], None, "m.csv") == (first,)
    assert find_time_columns([first, "timestamp", "poa"], None, "m.csv") == ("timestamp",)  # a name wins
    with pytest.raises(UsageError, match="no timestamp column"):
        find_time_columns(["ac_power", first, "poa"], None, "m.csv")  # only a first column is an index


def test_separate_date_and_time_columns_are_read_together():
    frame = pd.DataFrame({"Date": ["2024-05-01"], "Time": ["13:15"], "pv_w": [1.0]})
    columns = find_time_columns(list(frame.columns), None, "m.csv")
    assert columns == ("Date", "Time")
    ts, _ = TimeReader("UTC").read(time_texts(frame, columns))
    assert ts[0] == pd.Timestamp("2024-05-01T13:15Z")


def test_a_named_time_column_is_matched_or_the_error_lists_the_columns():
    assert find_time_columns(["When", "pv"], "when", "m.csv") == ("When",)
    with pytest.raises(UsageError, match=r"^m.csv: --timestamp-column 'stamp' not found; columns: \['When', 'pv'\]$"):
        find_time_columns(["When", "pv"], "stamp", "m.csv")
    with pytest.raises(UsageError, match=r"m.csv: no timestamp column; expected one named like ts, timestamp.*"
                                         r"columns: \['When', 'pv'\]"):
        find_time_columns(["When", "pv"], None, "m.csv")


def test_the_repeated_hour_of_a_later_year_starts_again_at_its_first_occurrence():
    first, first_utc = local_texts("Europe/Berlin", "2023-10-29 00:00", 8, "1h")
    second, second_utc = local_texts("Europe/Berlin", "2024-10-27 00:00", 8, "1h")
    ts, reasons = TimeReader("Europe/Berlin").read(pd.concat([first, second], ignore_index=True))
    assert (reasons == "").all() and np.array_equal(ts.to_numpy(), np.concatenate([first_utc, second_utc]))


def test_unix_seconds_and_milliseconds_are_exact_instants():
    texts = pd.Series(["1711846800", "1711846800.5", "1711846800000", "2024-03-31T01:00:00Z"])
    ts, reasons = TimeReader("Europe/Berlin").read(texts)
    assert (reasons == "").all()
    assert ts.tolist() == [pd.Timestamp("2024-03-31T01:00Z"), pd.Timestamp("2024-03-31T01:00:00.5Z"),
                           pd.Timestamp("2024-03-31T01:00Z"), pd.Timestamp("2024-03-31T01:00Z")]


def test_a_strftime_pattern_reads_digits_by_the_pattern_not_as_unix_time():
    ts, reasons = TimeReader("UTC", "%Y%m%d%H").read(pd.Series(["2024033114"]))
    assert (reasons == "").all() and ts[0] == pd.Timestamp("2024-03-31T14:00Z")


@pytest.mark.parametrize("columns, found", [
    (["Datum", "Uhrzeit", "PV (W)"], ("Datum", "Uhrzeit")),
    (["Zeitstempel", "PV (W)"], ("Zeitstempel",)),
    (["Horodatage", "Production (W)"], ("Horodatage",)),
    (["Fecha", "Hora", "FV (W)"], ("Fecha", "Hora")),
])
def test_time_columns_under_european_names_are_found(columns, found):
    assert find_time_columns(columns, None, "m.csv") == found


def test_a_days_end_written_24_00_is_the_next_days_midnight():
    """Meter operators' files of interval ends write a day's last quarter hour as 24:00."""
    reader = TimeReader("Europe/Berlin", "%d.%m.%Y %H:%M")
    ts, reasons = reader.read(pd.Series(["31.12.2023 23:45", "31.12.2023 24:00", "01.01.2024 00:15", "1.1.2024 124:00"]))
    assert ts[:3].tolist() == [pd.Timestamp(f"2023-12-31T{t}Z") for t in ("22:45", "23:00", "23:15")]
    assert reasons[:3].tolist() == ["", "", ""] and "is not a time" in reasons[3]
    ts, _ = TimeReader().read(pd.Series(["2024-03-30T24:00:00+01:00", "2024-03-31T24:00+02:00"]))
    assert ts.tolist() == [pd.Timestamp("2024-03-30T23:00Z"), pd.Timestamp("2024-03-31T22:00Z")]
