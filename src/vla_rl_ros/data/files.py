"""The dataset's parquet and json files by name: parquet written atomically (through atomic.py), and
reads that turn a missing or corrupt file into a DatasetError naming it. Apart from atomic.py, which
is standard library only, because this side needs pyarrow."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from vla_rl_ros.data.atomic import DatasetError, writing

T = TypeVar("T")


def write_parquet(path: Path, table: pa.Table) -> None:
    with writing(path) as tmp:
        pq.write_table(table, tmp, compression="snappy")


def read_json(path: Path) -> dict:
    return read_file(path, lambda p: json.loads(p.read_text()))


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    return read_file(path, lambda p: pq.ParquetFile(p).read(columns=columns))


def read_file(path: Path, reader: Callable[[Path], T]) -> T:
    """`reader(path)`, with a missing or corrupt file reported by its name (DatasetError)."""
    try:
        return reader(path)
    except FileNotFoundError as exc:
        raise DatasetError(f"missing dataset file {path}") from exc
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DatasetError(f"corrupt dataset file {path}: {exc}") from exc
