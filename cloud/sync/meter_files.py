"""Meter files (CSV, Parquet) read in chunks of bounded size, each row labelled with where
it sits in the file (a CSV line, counting the header, or a Parquet row), so that a refused
row can be found again."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from der_core.errors import UsageError

_CSV = (".csv", ".txt", ".gz")
_PARQUET = (".parquet", ".pq")


@dataclass(frozen=True)
class MeterFile:
    path: Path
    columns: list[str]
    where: str  # "line" (CSV, the header is line 1) or "row" (Parquet, from 1)
    total_chunks: int | None  # for progress; None when unknown without reading the file

    def chunks(self, size: int) -> Iterator[pd.DataFrame]:
        """The file's rows ``size`` at a time, indexed by line (or row) number; CSV cells as
        text, so a value that is not a number is refused by its row alone."""
        first = 2 if self.where == "line" else 1
        try:
            if self.where == "row":
                import pyarrow.parquet as pq

                batches = (b.to_pandas() for b in pq.ParquetFile(self.path).iter_batches(batch_size=size))
            else:
                batches = pd.read_csv(self.path, dtype=str, chunksize=size)
            for chunk in batches:
                chunk.index = pd.RangeIndex(first, first + len(chunk))
                first += len(chunk)
                yield chunk
        except (ValueError, OSError) as error:
            raise UsageError(f"--import {self.path}: cannot read near {self.where} {first} "
                             f"({' '.join(str(error).split())})") from None


def open_meter_file(path: Path, chunk_size: int) -> MeterFile:
    """The file's columns and size, read from its header (CSV) or metadata (Parquet)."""
    if not path.is_file():
        raise UsageError(f"--import {path}: file not found")
    suffix = path.suffix.lower()
    if suffix not in _CSV + _PARQUET:
        raise UsageError(f"--import {path}: expected a .csv (or .csv.gz) or .parquet file")
    try:
        if suffix in _PARQUET:
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path)
            return MeterFile(path, list(meta.schema_arrow.names), "row", -(-meta.metadata.num_rows // chunk_size))
        columns = [str(c) for c in pd.read_csv(path, nrows=0).columns]
        return MeterFile(path, columns, "line", None if suffix == ".gz" else -(-_count_lines(path) // chunk_size))
    except (ValueError, OSError, gzip.BadGzipFile) as error:
        raise UsageError(f"--import {path}: cannot read ({' '.join(str(error).split())})") from None


def _count_lines(path: Path) -> int:
    lines = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            lines += block.count(b"\n")
    return max(lines - 1, 1)
