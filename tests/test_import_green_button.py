"""Green Button "Download My Data" XML (NAESB ESPI): a utility's interval data of a home's
meter, imported as its grid flow with no options at all."""

from __future__ import annotations

import re
import zlib

import pandas as pd
import pytest

import run_cloud_sync
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
from cloud.sync import green_button
from cloud.sync.importer import ImportOptions, import_file
from der_core import der_data as dd
from der_core.cli_support import run_cli
from der_core.errors import UsageError

#: 2024-06-01T00:00-07:00 (PDT), in Unix seconds.
START = 1717225200


def entry(self_link: str, up: str, content: str, related: tuple[str, ...] = (), title: str = "") -> str:
    links = [f'<link rel="self" href="{self_link}"/>', f'<link rel="up" href="{up}"/>',
             *(f'<link rel="related" href="{r}"/>' for r in related)]
    return (f"<entry><id>urn:uuid:{zlib.crc32(self_link.encode()):012d}</id>{''.join(links)}<title>{title}</title>"
            f"<content>{content}</content><published>2024-06-03T00:00:00Z</published>"
            "<updated>2024-06-03T00:00:00Z</updated></entry>")


def reading_type(flow: int, uom: int = 72, multiplier: int = 0, accumulation: int = 4) -> str:
    return (f'<ReadingType xmlns="http://naesb.org/espi"><accumulationBehaviour>{accumulation}</accumulationBehaviour>'
            f"<commodity>1</commodity><currency>840</currency><dataQualifier>12</dataQualifier>"
            f"<flowDirection>{flow}</flowDirection><intervalLength>900</intervalLength><kind>12</kind>"
            f"<phase>769</phase><powerOfTenMultiplier>{multiplier}</powerOfTenMultiplier>"
            f"<timeAttribute>0</timeAttribute><uom>{uom}</uom></ReadingType>")


def block(start: int, values: list[int], duration: int = 900) -> str:
    readings = "".join(f"<IntervalReading><cost>{v * 3}</cost><ReadingQuality><quality>19</quality></ReadingQuality>"
                       f"<timePeriod><duration>{duration}</duration><start>{start + k * duration}</start></timePeriod>"
                       f"<value>{v}</value></IntervalReading>" for k, v in enumerate(values))
    return (f'<IntervalBlock xmlns="http://naesb.org/espi"><interval><duration>{duration * len(values)}</duration>'
            f"<start>{start}</start></interval>{readings}</IntervalBlock>")


def feed(delivered: list[list[int]], received: list[list[int]] | None = None, types: tuple[str, str] | None = None,
         start: int = START, durations: tuple[int, int] = (900, 900)) -> str:
    """A feed laid out as the Green Button Alliance's sample "Download My Data" files: the
    local time parameters, the usage point, then per meter reading its entry, its reading
    type and its interval blocks (one per hour of readings here, each from its own entry),
    the readings of each meter reading of its duration in ``durations``."""
    base = "https://utility.example/DataCustodian/espi/1_1/resource/RetailCustomer/9b6c7063"
    parts = [entry("https://utility.example/DataCustodian/espi/1_1/resource/LocalTimeParameters/1",
                   "https://utility.example/DataCustodian/espi/1_1/resource/LocalTimeParameters",
                   '<LocalTimeParameters xmlns="http://naesb.org/espi"><dstEndRule>B40E2000</dstEndRule>'
                   "<dstOffset>3600</dstOffset><dstStartRule>360E2000</dstStartRule><tzOffset>-28800</tzOffset>"
                   "</LocalTimeParameters>"),
             entry(f"{base}/UsagePoint/1", f"{base}/UsagePoint",
                   '<UsagePoint xmlns="http://naesb.org/espi"><ServiceCategory><kind>0</kind></ServiceCategory>'
                   "</UsagePoint>", (f"{base}/UsagePoint/1/MeterReading",), "Home")]
    kinds = types or (reading_type(1), reading_type(19))
    for number, (hours, kind, duration) in enumerate(zip((delivered, received or []), kinds, durations), start=1):
        if not hours:
            continue
        meter = f"{base}/UsagePoint/1/MeterReading/{number}"
        type_link = f"https://utility.example/DataCustodian/espi/1_1/resource/ReadingType/{number}"
        parts.append(entry(meter, f"{base}/UsagePoint/1/MeterReading", '<MeterReading xmlns="http://naesb.org/espi"/>',
                           (f"{meter}/IntervalBlock", type_link)))
        parts.append(entry(type_link, "https://utility.example/DataCustodian/espi/1_1/resource/ReadingType", kind))
        parts += [entry(f"{meter}/IntervalBlock/{h}", f"{meter}/IntervalBlock", block(start + 3600 * h, values, duration))
                  for h, values in enumerate(hours)]
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><id>urn:uuid:0</id><title>Green Button Usage Feed'
            f"</title><updated>2024-06-03T00:00:00Z</updated>{''.join(parts)}</feed>\n")


DELIVERED = [[300, 250, 0, 50], [120, 0, 0, 0]]  # Wh per quarter hour
RECEIVED = [[0, 0, 400, 100], [0, 75, 500, 500]]


@pytest.fixture()
def cloud(tmp_path):
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        yield store


def test_a_download_imports_as_the_grid_flow_with_no_options(tmp_path, capsys):
    """Energy delivered to the home less energy received from it, per quarter hour, as the
    mean kW of each interval, at its end; the times are exact (Unix seconds)."""
    (tmp_path / "usage.xml").write_text(feed(DELIVERED, RECEIVED))
    db = str(tmp_path / "cloud.db")
    code = run_cli(run_cloud_sync.main, ["--import", str(tmp_path / "usage.xml"), "--device-id", "home-1",
                                         "--cloud-db", db])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "imported 8 readings of home-1 (0 quarantined)" in out
    assert ("  columns: delivered (kW) - received (kW) as net_grid_flow_kw, as the file says (--column-map to take "
            "them elsewhere)") in out.splitlines()
    with SQLiteCloudStore(db) as store:
        stored = store.read_readings("home-1")
    assert stored[dd.TS].tolist() == list(pd.date_range("2024-06-01T07:15Z", periods=8, freq="15min", unit="us"))
    flows = [d - r for day_d, day_r in zip(DELIVERED, RECEIVED) for d, r in zip(day_d, day_r)]
    assert stored[dd.NET_GRID_FLOW].tolist() == pytest.approx([4 * f / 1000 for f in flows])
    assert stored[dd.LOAD_TOTAL].isna().all()


def test_a_column_map_takes_the_download_elsewhere_and_the_multiplier_scales_it(tmp_path, cloud):
    """A home without PV: what was delivered is its load. ``powerOfTenMultiplier`` -3 with
    values in mWh, and readings of the home's gas in therms, which no power field takes."""
    gas = reading_type(1, uom=169)
    text = feed([[300_000, 250_000]], [[5, 6]], types=(reading_type(1, multiplier=-3), gas))
    (tmp_path / "usage.xml").write_text(text)
    result = import_file(tmp_path / "usage.xml", cloud, ImportOptions("home-1", {"delivered (kW)": dd.LOAD_TOTAL}))
    assert result.columns_not_imported == ["delivered (therm)"]
    assert cloud.read_readings("home-1")[dd.LOAD_TOTAL].tolist() == pytest.approx([1.2, 1.0])
    with pytest.raises(UsageError, match=r"column 'delivered \(therm\)' is in therm by the file's header; expected "
                                         r"power or energy"):
        import_file(tmp_path / "usage.xml", cloud, ImportOptions("home-2", {"delivered (therm)": dd.LOAD_TOTAL}))


def test_an_hour_of_readings_the_clock_repeats_is_two_hours_of_readings(tmp_path, cloud):
    """Times in Unix seconds: the autumn hour the clock shows twice holds eight readings."""
    (tmp_path / "usage.xml").write_text(feed([[400] * 4, [400] * 4], start=1730620800))  # 01:00 PDT, 2024-11-03
    result = import_file(tmp_path / "usage.xml", cloud, ImportOptions("home-1"))
    assert (result.rows_synced, result.rows_quarantined) == (8, 0)
    assert cloud.read_readings("home-1")[dd.TS].tolist() == list(pd.date_range("2024-11-03T08:15Z", "2024-11-03T10:00Z",
                                                                               freq="15min", unit="us"))


@pytest.mark.parametrize("text,message", [
    ("<feed xmlns='http://www.w3.org/2005/Atom'><entry>", r"not readable as Green Button XML \(.*\); expected an ESPI"),
    (feed([]), r"a Green Button feed without interval readings; expected IntervalBlock entries"),
    (feed([[]]), r"a Green Button feed without interval readings; expected IntervalBlock entries"),
    (feed([[1, 2]], types=(reading_type(1, accumulation=1), "")),
     r"holds a meter's totals \(accumulationBehaviour 1, bulkQuantity\); expected interval data \(deltaData, 4\)"),
    (feed([[300, 250]], durations=(0, 900)), r"no interval reading has a time; expected each IntervalReading's timePeriod"),
])
def test_a_feed_that_cannot_be_read_is_refused_in_one_line(tmp_path, cloud, text, message):
    (tmp_path / "usage.xml").write_text(text)
    with pytest.raises(UsageError, match=message):
        import_file(tmp_path / "usage.xml", cloud, ImportOptions("home-1"))
    assert cloud.read_readings("home-1").empty


def test_a_value_that_is_no_number_is_quarantined_with_its_place(tmp_path, cloud):
    """An interval reading without a number is refused with its place in the feed's time
    order and its text; the others are stored."""
    (tmp_path / "usage.xml").write_text(feed([[300, 250, 100]]).replace("<value>250</value>", "<value>n/a</value>"))
    result = import_file(tmp_path / "usage.xml", cloud, ImportOptions("home-1"))
    assert (result.rows_synced, result.rows_quarantined) == (2, 1)
    assert cloud.read_quarantine("home-1")[s.REASON].tolist() == ["reading 2: delivered (kW) 'n/a' is not a number"]


def test_a_decimal_value_is_energy_as_a_whole_one_is(tmp_path, cloud):
    """``250.0`` Wh in a quarter hour is 1 kW, not 250: the value is energy like any other."""
    (tmp_path / "usage.xml").write_text(feed([[300, 250, 100]]).replace("<value>250</value>", "<value>250.0</value>"))
    result = import_file(tmp_path / "usage.xml", cloud, ImportOptions("home-1"))
    assert (result.rows_synced, result.rows_quarantined) == (3, 0)
    assert cloud.read_readings("home-1")[dd.NET_GRID_FLOW].tolist() == pytest.approx([1.2, 1.0, 0.4])


def test_numbers_beyond_64_bits_are_quarantined_not_a_traceback(tmp_path, cloud):
    """A value that no meter measured is a number out of range; a start no clock reaches
    places its reading nowhere. Each is quarantined, the others stored."""
    text = (feed([[300, 250, 0, 100]]).replace("<value>250</value>", "<value>99999999999999999999</value>")
            .replace(f"<start>{START + 1800}</start>", "<start>99999999999999999999</start>"))
    (tmp_path / "usage.xml").write_text(text)
    result = import_file(tmp_path / "usage.xml", cloud, ImportOptions("home-1"))
    assert (result.rows_synced, result.rows_quarantined) == (2, 2)
    assert sorted(cloud.read_quarantine("home-1")[s.REASON]) == [
        "reading 2: net_grid_flow_kw outside [-20000, 20000] (got 4e+17)",
        "reading 4: timestamp is empty; expected a time on every row"]


def test_a_second_reading_of_an_interval_is_quarantined_as_a_repeat(tmp_path, cloud):
    """A later block of the same hour (a corrected reading): the first is stored, each that
    differs is quarantined as a repeat of its time, and one that says the same is left out."""
    text = feed([[300, 250, 0, 50], [120, 0, 0, 0]], [[0, 0, 400, 100]]).replace(
        block(START + 3600, [120, 0, 0, 0]), block(START, [300, 999, 0, 999]))
    (tmp_path / "usage.xml").write_text(text)
    result = import_file(tmp_path / "usage.xml", cloud, ImportOptions("home-1"))
    assert (result.rows_synced, result.rows_quarantined) == (4, 2)
    assert cloud.read_readings("home-1")[dd.NET_GRID_FLOW].tolist() == pytest.approx([1.2, 1.0, -1.6, -0.2])
    assert cloud.read_quarantine("home-1")[s.REASON].tolist() == [
        "reading 3: time 2024-06-01 07:30:00Z repeats an earlier row's",
        "reading 6: time 2024-06-01 08:00:00Z repeats an earlier row's"]


@pytest.mark.parametrize("period", ["<timePeriod><duration>0</duration><start>{start}</start></timePeriod>",
                                    "<timePeriod><duration>-900</duration><start>{start}</start></timePeriod>",
                                    "<timePeriod><duration>900</duration></timePeriod>", ""])
def test_a_reading_without_a_time_period_is_quarantined_after_the_others(tmp_path, cloud, period):
    """No start, or a duration that is no span of time: the reading has no place in time,
    so it is quarantined, numbered after the readings that have one."""
    original = f"<timePeriod><duration>900</duration><start>{START + 900}</start></timePeriod>"
    (tmp_path / "usage.xml").write_text(feed([[300, 250, 0, 50]]).replace(original, period.format(start=START + 900)))
    result = import_file(tmp_path / "usage.xml", cloud, ImportOptions("home-1"))
    assert (result.rows_synced, result.rows_quarantined) == (3, 1)
    assert cloud.read_quarantine("home-1")[s.REASON].tolist() == [
        "reading 4: timestamp is empty; expected a time on every row"]


@pytest.mark.parametrize("name,text,expected", [
    ("usage.csv", "Source,Green Button Download (schema http://naesb.org/espi)\n\ntimestamp,home_load_total_load_kw\n"
                  "2024-06-01T00:15:00Z,1.0\n", False),
    ("usage.csv", "timestamp,note\n2024-06-01T00:15:00Z,<feed xmlns='http://www.w3.org/2005/Atom'>\n", False),
    ("usage.txt", "\ufeff\n  " + feed([[300]]), True),
    ("usage.txt", "<!-- exported -->" + feed([[300]]).split("\n", 1)[1], True),
    ("usage.txt", "<notes>none</notes>", False),
])
def test_a_file_is_a_feed_when_it_is_xml_naming_atom_or_espi(tmp_path, name, text, expected):
    """A CSV may mention the ESPI namespace in a note and still be a CSV; only a file that
    starts as XML does (after a byte-order mark and blanks)."""
    (tmp_path / name).write_text(text, encoding="utf-8")
    assert green_button.is_green_button(tmp_path / name) is expected


def test_a_csv_that_mentions_espi_imports_as_a_csv(tmp_path, cloud):
    text = ("Source,Green Button Download (schema http://naesb.org/espi)\n\n"
            "timestamp,home_load_total_load_kw\n2024-06-01T00:15:00Z,1.0\n2024-06-01T00:30:00Z,1.5\n")
    (tmp_path / "usage.csv").write_text(text)
    assert import_file(tmp_path / "usage.csv", cloud, ImportOptions("home-1")).rows_synced == 2


def test_delivered_and_received_in_different_intervals_are_refused_as_the_grid_flow(tmp_path, capsys):
    """Quarter hours of delivered energy less hours of received energy, row by row, are no
    grid flow: the file's map is refused, naming each interval; a map of one imports it."""
    (tmp_path / "usage.xml").write_text(feed([[100, 100, 100, 900]], [[400]], durations=(900, 3600)))
    db = str(tmp_path / "cloud.db")
    args = ["--import", str(tmp_path / "usage.xml"), "--device-id", "home-1", "--cloud-db", db]
    assert run_cli(run_cloud_sync.main, args) != 0
    err = capsys.readouterr().err
    assert err == (f"error: --import {tmp_path / 'usage.xml'}: delivered (kW) is in 15-min intervals and received (kW) "
                   "in 60-min ones; expected one interval (--column-map to import one of them)\n")
    with SQLiteCloudStore(db) as store:
        assert store.read_readings("home-1").empty
    assert run_cli(run_cloud_sync.main, [*args, "--column-map", "received (kW)=-net_grid_flow_kw"]) == 0
    with SQLiteCloudStore(db) as store:
        assert store.read_readings("home-1")[dd.NET_GRID_FLOW].tolist() == pytest.approx([-0.4])


def test_two_meters_in_one_download_are_named_apart_and_none_is_taken(tmp_path, capsys):
    """Which meter is the home's is not the order of the feed's entries to say: both
    columns carry their reading type, the file's map takes neither, and the import asks
    for --column-map in one line."""
    other = feed([[100, 100, 100, 100]]).replace("UsagePoint/1", "UsagePoint/2").replace("ReadingType/1", "ReadingType/9")
    entries = [e for e in re.findall(r"<entry>.*?</entry>", other) if "UsagePoint/2/MeterReading" in e
               or "ReadingType/9" in e]
    (tmp_path / "usage.xml").write_text(feed([[300, 250, 0, 50]]).replace("</feed>", "".join(entries) + "</feed>"))
    db = str(tmp_path / "cloud.db")
    assert run_cli(run_cloud_sync.main, ["--import", str(tmp_path / "usage.xml"), "--device-id", "home-1",
                                         "--cloud-db", db]) != 0
    err = capsys.readouterr().err
    types = "https://utility.example/DataCustodian/espi/1_1/resource/ReadingType"
    assert err.startswith("error: ") and err.count("\n") == 1 and "--column-map" in err
    assert f"'delivered (kW) [{types}/1]', 'delivered (kW) [{types}/9]'" in err
    with SQLiteCloudStore(db) as store:
        assert store.read_readings("home-1").empty


def test_register_readings_beside_interval_data_are_left_out(tmp_path, cloud):
    """A meter's register reads next to its interval data: the interval data is imported,
    the totals are not a column."""
    text = feed([[300, 250, 0, 50]], [[1000300, 1000550, 1000550, 1000600]],
                types=(reading_type(1), reading_type(1, accumulation=1)))
    (tmp_path / "usage.xml").write_text(text)
    result = import_file(tmp_path / "usage.xml", cloud, ImportOptions("home-1"))
    assert (result.rows_synced, result.rows_quarantined, result.columns_not_imported) == (4, 0, [])
    assert cloud.read_readings("home-1")[dd.NET_GRID_FLOW].tolist() == pytest.approx([1.2, 1.0, 0.0, 0.2])


@pytest.mark.parametrize("kind,column", [
    (reading_type(1).replace("<flowDirection>1</flowDirection>", ""), "delivered (kW)"),
    (reading_type(4), "net (kW)"),
    (reading_type(19), "net (kW)"),  # beside received readings, the net ones alone
])
def test_consumption_without_a_flow_and_net_readings_are_the_grid_flow(tmp_path, cloud, kind, column):
    """A reading type naming no flow is the home's consumption, delivered to it; a net one
    (flow 4) is the grid flow as it is."""
    received = kind == reading_type(19)
    (tmp_path / "usage.xml").write_text(feed([[300, -250]], [[0, 250]], types=(reading_type(4), kind)) if received
                                        else feed([[300, -250]], types=(kind, "")))
    result = import_file(tmp_path / "usage.xml", cloud, ImportOptions("home-1"))
    assert result.mapped_by_file == {dd.NET_GRID_FLOW: column}
    assert cloud.read_readings("home-1")[dd.NET_GRID_FLOW].tolist() == pytest.approx([1.2, -1.0])


def test_the_import_help_names_green_button_xml():
    assert "Green Button XML" in run_cloud_sync.build_parser().format_help()


def test_a_correction_in_an_entry_updated_later_is_the_one_stored(tmp_path, cloud):
    """The same hour in two blocks, the second from an entry updated a day later (a
    utility's corrected reading): it is stored, wherever it stands in the feed, and the
    first entry's readings that differ are quarantined."""
    later = block(START, [300, 999, 0, 999])
    text = feed([[300, 250, 0, 50], [120, 0, 0, 0]]).replace(block(START + 3600, [120, 0, 0, 0]), later)
    corrected = text.split(later)[0].rsplit("<entry>", 1)[1] + later
    text = text.replace(corrected + "</content><published>2024-06-03T00:00:00Z</published><updated>2024-06-03",
                        corrected + "</content><published>2024-06-03T00:00:00Z</published><updated>2024-06-04")
    assert text.count("<updated>2024-06-04") == 1
    (tmp_path / "usage.xml").write_text(text)
    result = import_file(tmp_path / "usage.xml", cloud, ImportOptions("home-1"))
    assert (result.rows_synced, result.rows_quarantined) == (4, 2)
    assert cloud.read_readings("home-1")[dd.NET_GRID_FLOW].tolist() == pytest.approx([1.2, 3.996, 0.0, 3.996])
    assert len(cloud.read_quarantine("home-1")) == 2
