"""The fleet report's queries, run on DuckDB embedded over the report dataset.

The queries are plain SQL in ``fleet_sql/*.sql`` (shipped in the wheel), written against
the dataset's documented tables and a one-row ``fleet_period`` (``week``,
``previous_week``), so that a fleet too big for one machine runs the same files on
Trino or Spark SQL with those names bound to its tables (``docs/report.md`` says how).

Here the tables come from the report store (a folder, ``s3://`` or any location
``report.location`` accepts, opened by the same code as the weekly report's), and DuckDB's
own Parquet reader reads them: a folder's files where they are; object storage's two
weeks of files downloaded first, several at a time, into a temporary folder, through the
store's pyarrow filesystem with its credentials and endpoint settings (DuckDB's own S3
support is an extension it downloads at run time, which a cluster without egress cannot,
and scanning the files through pyarrow instead was several times slower:
``docs/performance.md``). Only the columns a query names are read, and each table is
bound already limited to the reported week and the one before: DuckDB does not push a
join with ``fleet_period`` down into a scan, and the queries' own ``WHERE`` clauses say
the same, so the answer is the same and only two weeks' files are read (or downloaded).
``not_reported.sql`` reads only the partition columns over every earlier week; it gets
``gpu_hourly`` as the list of its partitions (one row per cluster and week), which gives
it the same answer without opening a file.

DuckDB sums ``decimal(18, 6)`` into ``decimal(38, 6)``: money comes back as exact
``Decimal`` values, never floats.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from gpuwatch.report.data import ReportPeriod
from gpuwatch.report.schema import PARTITIONS, SCHEMAS
from gpuwatch.report.store import ReportStore, ReportStoreError

QUERIES = (
    "clusters",
    "pools",
    "teams",
    "savings",
    "scoped_savings",
    "levers",
    "findings",
    "not_reported",
)
"""The files of ``fleet_sql``, in the order they run."""
FLEET_TABLES = ("gpu_hourly", "holder_hourly", "findings", "savings")
"""The dataset's tables the queries read."""
PARTITION_ONLY = frozenset({"not_reported"})
"""Queries that read only ``cluster`` and ``week``: answered from the partition list."""

_ISO_WEEK = re.compile(r"^\d{4}-W\d{2}$")

Row = dict[str, Any]


@dataclass(frozen=True)
class FleetRows:
    """What the queries returned: each query's rows, as dicts of column to value."""

    week: str
    previous_week: str
    rows: Mapping[str, list[Row]]


def query_text(name: str) -> str:
    """The SQL of ``fleet_sql/<name>.sql``."""
    return resources.files("gpuwatch.report").joinpath(f"fleet_sql/{name}.sql").read_text()


def previous_week(week: str) -> str:
    """``2026-W48`` -> ``2026-W47`` (ISO weeks: ``2027-W01`` -> ``2026-W53``)."""
    start = ReportPeriod.iso_week(week).start - timedelta(days=7)
    year, number, _ = start.date().isocalendar()
    return f"{year}-W{number:02d}"


def run_fleet_queries(
    store: ReportStore,
    week: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FleetRows:
    """Every query of ``QUERIES`` over ``store``'s dataset for ``week`` (an ISO week;
    default: the newest one any cluster reported). ``progress(done, total)``: the
    files downloaded, from object storage.

    ReportStoreError when the location cannot be read or holds no ``gpu_hourly`` yet.
    """
    datasets = {name: _dataset_or_none(store, name) for name in FLEET_TABLES}
    gpu_hourly = datasets["gpu_hourly"]
    if gpu_hourly is None:
        raise ReportStoreError(
            store.location, "read the fleet", "not_found", "no cluster has written a report yet"
        )
    partitions = partition_list(gpu_hourly)
    weeks = sorted({w for w in partitions.column("week").to_pylist() if _ISO_WEEK.match(w)})
    if week is None:
        if not weeks:
            raise ReportStoreError(
                store.location,
                "read the fleet",
                "not_found",
                "no ISO week written yet (the fleet report reads weeks; a --from/--to "
                "range is not one)",
            )
        week = weeks[-1]
    before = previous_week(week)
    in_period = ds.field("week").isin([week, before])
    period = pa.table({"week": [week], "previous_week": [before]})
    rows: dict[str, list[Row]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="gpuwatch-fleet-") as folder,
        duckdb.connect(config={"threads": os.cpu_count() or 1}) as con,
    ):
        listed = {name: _files(dataset, in_period) for name, dataset in datasets.items()}
        everything = [path for paths in listed.values() for path in paths]
        local = iter(store.local_files(everything, Path(folder), progress))
        files = {name: [next(local) for _ in paths] for name, paths in listed.items()}
        con.register("fleet_period", period)
        con.register("fleet_partitions", partitions)
        for name in datasets:
            _bind(con, name, files[name])
        for name in QUERIES:
            if name in PARTITION_ONLY:
                con.execute("CREATE OR REPLACE TEMP VIEW gpu_hourly AS FROM fleet_partitions")
            cursor = con.execute(query_text(name))
            columns = [column[0] for column in cursor.description]
            rows[name] = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
            if name in PARTITION_ONLY:
                _bind(con, "gpu_hourly", files["gpu_hourly"])
    return FleetRows(week=week, previous_week=before, rows=rows)


def _files(dataset: ds.Dataset | None, where: ds.Expression) -> list[str]:
    """The files of ``dataset`` in the weeks ``where`` selects (none without one)."""
    if dataset is None:
        return []
    return [fragment.path for fragment in dataset.get_fragments(filter=where)]


def _bind(con: duckdb.DuckDBPyConnection, name: str, files: list[str]) -> None:
    """Make ``name`` the table ``name`` of the local Parquet ``files``.

    They are read by DuckDB's own Parquet reader (several times faster than scanning
    through pyarrow); files of an earlier minor version lack the columns added since,
    which come back null (``UNION ALL BY NAME`` with the empty table of the whole
    schema). No files: the table is empty.
    """
    schema_table = f"{name}__schema"
    con.register(schema_table, _empty(name))
    if not files:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS FROM {schema_table}")
        return
    listed = ", ".join("'" + path.replace("'", "''") + "'" for path in files)
    # cluster and week stay strings: a cluster named 42 is not a number.
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {name} AS "
        f"FROM read_parquet([{listed}], hive_partitioning = true, union_by_name = true, "
        f"hive_types = {{'cluster': VARCHAR, 'week': VARCHAR}}) "
        f"UNION ALL BY NAME FROM {schema_table}"
    )


def partition_list(dataset: ds.Dataset) -> pa.Table:
    """One row per file of ``dataset``: its ``cluster`` and ``week``."""
    found: dict[str, list[str]] = {name: [] for name in PARTITIONS}
    for fragment in dataset.get_fragments():
        keys = ds.get_partition_keys(fragment.partition_expression)
        for name in PARTITIONS:
            found[name].append(str(keys[name]))
    return pa.table(found, schema=pa.schema([(name, pa.string()) for name in PARTITIONS]))


def _dataset_or_none(store: ReportStore, table: str) -> ds.Dataset | None:
    """``store.dataset(table)``; None when nothing was written under it (a fleet of
    1.0 writers has no ``holder_hourly``)."""
    try:
        return store.dataset(table)
    except ReportStoreError as exc:
        if exc.kind == "not_found":
            return None
        raise


def _empty(table: str) -> pa.Table:
    schema = SCHEMAS[table]
    for name in PARTITIONS:
        schema = schema.append(pa.field(name, pa.string()))
    return schema.empty_table()
