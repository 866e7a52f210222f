"""A utility's interval download, once its own format is read: one column per channel of
readings in kW (or the channel's own unit), labelled by the end of the interval each
describes, as every reading here is. Green Button XML (:mod:`cloud.sync.green_button`) and
AEMO's NEM12 (:mod:`cloud.sync.nem12`) both come to this table, which the import then
reads as it reads any file, in chunks of rows.

Each channel's readings arrive as a long frame: ``name`` (the column), ``end`` (Unix
seconds, NA where a reading cannot be placed in time), ``cell`` (its value, or its text
where that is no number, for the import to quarantine with it) and, where the format says
when each record was written, ``updated`` (Unix seconds, NA where a record does not say).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TIME_COLUMN = "interval_end"
#: How a refused reading is located: its place among the download's readings in time order.
WHERE = "reading"


@dataclass(frozen=True)
class Readings:
    """A download's readings (:func:`wide_table`), each column's usual reading duration, and
    the map to the contract's fields its format itself gives (its grid flow)."""

    table: pd.DataFrame
    intervals: dict[str, int]  # a column -> the duration (s) most of its timed readings have
    known: dict[str, str]  # a column -> the field it is (``-field``: counted against it)

    def default_map(self) -> dict[str, str]:
        return dict(self.known)

    def default_map_refused(self, path: Path) -> str | None:
        """Why :meth:`default_map` cannot be the import's map, None when it can: its columns
        read different intervals, and a row-by-row sum of them would mix them."""
        intervals = {c: self.intervals[c] for c in self.known if c in self.intervals}
        if len(set(intervals.values())) < 2:
            return None
        (first, one), (second, other) = list(intervals.items())[:2]
        return (f"--import {path}: {first} is in {minutes(one)} intervals and {second} in {minutes(other)} ones; "
                "expected one interval (--column-map to import one of them)")


def minutes(seconds: int) -> str:
    return f"{seconds // 60}-min" if seconds % 60 == 0 else f"{seconds}-s"


def usual_intervals(readings: pd.DataFrame) -> dict[str, int]:
    """Per column, the duration (s) most of its timed readings have (``duration`` column)."""
    timed = readings[readings["end"].notna()]
    return {name: int(group.mode().iloc[0]) for name, group in timed.groupby("name", sort=False)["duration"]}


def wide_table(readings: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """One row per interval end with each column's kept reading of it; then each other
    reading of an interval that differs from the kept one, alone in a row with the same time
    (the import quarantines it as a repeat); then the readings without a time. The kept
    reading is the newest record's where the format dates its records (a meter data
    provider's correction is a newer record of the same day, and the bill follows it), else
    the first in the file; an undated record counts as older than a dated one. A repeat of
    the same value says nothing new and is left out. Rows are numbered from 1 in that order."""
    timed = readings[readings["end"].notna()]
    if "updated" in timed:
        timed = timed.sort_values("updated", ascending=False, kind="stable", na_position="last")
    timed = timed[~timed.duplicated(["name", "end", "cell"])]
    rank = timed.groupby(["name", "end"]).cumcount()
    first = timed[rank == 0].pivot(index="end", columns="name", values="cell").reindex(columns=names)
    first = first.rename_axis(columns=None).reset_index().assign(order=0)
    others = pd.concat([timed[rank > 0].assign(order=rank[rank > 0]), readings[readings["end"].isna()].assign(order=0)])
    alone = pd.DataFrame({"end": others["end"], "order": others["order"],
                          **{n: others["cell"].where(others["name"] == n) for n in names}})
    table = pd.concat([first, alone], ignore_index=True).sort_values(["end", "order"], kind="stable",
                                                                     na_position="last", ignore_index=True)
    text = np.datetime_as_string(table["end"].to_numpy(dtype="int64", na_value=0).astype("datetime64[s]"), unit="s")
    table[TIME_COLUMN] = pd.Series(np.char.add(text, "Z"), dtype=object).where(table["end"].notna(), None)
    return table[[TIME_COLUMN, *names]]
