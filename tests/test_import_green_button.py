"""Green Button "Download My Data" XML (NAESB ESPI): a utility's interval data of a home's
meter, imported as its grid flow with no options at all."""

from __future__ import annotations

import zlib

import pandas as pd
import pytest

import run_cloud_sync
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
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
         start: int = START) -> str:
    """A feed laid out as the Green Button Alliance's sample "Download My Data" files: the
    local time parameters, the usage point, then per meter reading its entry, its reading
    type and its interval blocks (one per hour of readings here, each from its own entry)."""
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
    for number, (hours, kind) in enumerate(zip((delivered, received or []), kinds), start=1):
        if not hours:
            continue
        meter = f"{base}/UsagePoint/1/MeterReading/{number}"
        type_link = f"https://utility.example/DataCustodian/espi/1_1/resource/ReadingType/{number}"
        parts.append(entry(meter, f"{base}/UsagePoint/1/MeterReading", '<MeterReading xmlns="http://naesb.org/espi"/>',
                           (f"{meter}/IntervalBlock", type_link)))
        parts.append(entry(type_link, "https://utility.example/DataCustodian/espi/1_1/resource/ReadingType", kind))
        parts += [entry(f"{meter}/IntervalBlock/{h}", f"{meter}/IntervalBlock", block(start + 3600 * h, values))
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
    (feed([[1, 2]], types=(reading_type(1, accumulation=1), "")),
     r"holds a meter's totals \(accumulationBehaviour 1, bulkQuantity\); expected interval data \(deltaData, 4\)"),
])
def test_a_feed_that_cannot_be_read_is_refused_in_one_line(tmp_path, cloud, text, message):
    (tmp_path / "usage.xml").write_text(text)
    with pytest.raises(UsageError, match=message):
        import_file(tmp_path / "usage.xml", cloud, ImportOptions("home-1"))
    assert cloud.read_readings("home-1").empty


def test_a_value_that_is_no_integer_is_quarantined_with_its_place(tmp_path, cloud):
    """An interval reading without a number is refused with its place in the feed's time
    order and its text; the others are stored."""
    (tmp_path / "usage.xml").write_text(feed([[300, 250, 100]]).replace("<value>250</value>", "<value>n/a</value>"))
    result = import_file(tmp_path / "usage.xml", cloud, ImportOptions("home-1"))
    assert (result.rows_synced, result.rows_quarantined) == (2, 1)
    assert cloud.read_quarantine("home-1")[s.REASON].tolist() == ["reading 2: delivered (kW) 'n/a' is not a number"]
