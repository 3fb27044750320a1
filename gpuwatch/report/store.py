"""Where the weekly report's dataset and HTML live: a local folder or object storage.

The Parquet tables are a published interface (see ``gpuwatch.report.schema``): a fleet of
clusters writes into one location, and pandas, DuckDB, Spark and Trino read the result
as one hive-partitioned dataset without knowing gpuwatch. This module owns that layout,
so that no other code builds a path into it:

    <location>/table=<table>/cluster=<cluster>/week=<label>/part-0.parquet
    <location>/html/cluster=<cluster>/week=<label>/report.html
    <location>/html/cluster=<cluster>/latest.html
    <location>/html/fleet/week=<label>/report.html      (the fleet report, every cluster)

Re-running a report for a cluster and week replaces that partition and nothing else, so
a fleet's writers never step on each other and a backfill is just a re-run. Readers see
the old file or the new one, never half of one: locally through a temporary file and a
rename, on object storage because an object appears whole when its upload completes.

Every filesystem failure becomes a ``ReportStoreError`` that names the location (never
its credentials), what was being done, and the likely cause (a missing bucket, refused
credentials, an endpoint that does not answer, a folder that is a file): see
``store_errors``. Opening the location from the settings is ``store_location``'s job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from gpuwatch.config.settings import ReportSettings
from gpuwatch.report.data import ReportData, ReportPeriod
from gpuwatch.report.schema import (
    PARTITIONS,
    SCHEMA_VERSION,
    SCHEMAS,
    TABLE_SINCE,
    TABLES,
    price_metadata,
)
from gpuwatch.report.store_errors import ReportStoreError, translated
from gpuwatch.report.store_location import bucket_of, open_location, shown_with_endpoint
from gpuwatch.util.atomic import write_atomic, write_atomic_bytes

PART_FILE = "part-0.parquet"
"""The one file of a partition; a partition is small enough (a cluster's week) for one."""
ROW_GROUP_ROWS = 128 * 1024
"""Rows per Parquet row group: large enough for column statistics and vectorized reads to
pay off, small enough that readers never hold a whole big table to scan part of it."""
COMPRESSION = "zstd"
"""zstd at pyarrow's default level (1). Measured on a 10,000-GPU week (60 MiB of
Parquet, 0.96 s of CPU to write): lz4 and snappy write it 15 % faster into 21 % and 30 %
larger files, zstd level 3 7 % slower for 0.5 % less; every reader of the dataset
(pandas, DuckDB, Spark, Trino) reads zstd."""
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
HTML_CONTENT_TYPE = "text/html; charset=utf-8"
HTML_FOLDER = "html"

# Partition values become path segments that every reader decodes its own way. Only
# characters that no reader escapes or decodes differently are allowed, and a first
# character that is neither ``.`` nor ``_``: pyarrow and Spark skip such files as hidden.
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")

_DOWNLOADS = 16
"""Files downloaded at once from object storage: each is a request's round trip more
than its bytes."""
_PARTITIONING = pa.schema([pa.field(name, pa.string()) for name in PARTITIONS])
"""``cluster`` and ``week`` are strings whatever they look like: a cluster named ``42``
must not come back as an integer column."""


class ReportStore:
    """The report dataset and HTML under one location, on any pyarrow filesystem.

    Build it with ``from_settings``; the constructor is for a filesystem already open.
    """

    def __init__(
        self,
        filesystem: pafs.FileSystem,
        root: str,
        *,
        uri: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        """``root`` is the location as a path of ``filesystem`` (``bucket/prefix`` on S3).

        ``uri`` is how the location is shown and how written files are named in return
        values (``s3://bucket/prefix``); it must carry no credentials. Unset: the local
        path. ``endpoint`` is shown in errors only.
        """
        self._fs = filesystem
        self._root = root.rstrip("/") or root
        self._local = isinstance(filesystem, pafs.LocalFileSystem)
        self._uri = (uri or self._root).rstrip("/")
        self._endpoint = endpoint
        self._bucket = bucket_of(filesystem, self._root)

    @classmethod
    def from_settings(cls, settings: ReportSettings) -> ReportStore:
        """Open ``settings.location``: a local folder (created when missing) or a URI
        (``store_location.open_location`` says how)."""
        opened = open_location(settings)
        return cls(opened.filesystem, opened.root, uri=opened.uri, endpoint=opened.endpoint)

    @property
    def location(self) -> str:
        """The location as errors show it: the folder, or the URI without credentials."""
        return shown_with_endpoint(self._uri, self._endpoint)

    def __repr__(self) -> str:
        return f"ReportStore({self.location})"

    # -- the dataset --------------------------------------------------------------------

    def write_tables(self, data: ReportData) -> list[str]:
        """Write each table to its ``cluster`` and ``week`` partition; return the files.

        What that partition held before is replaced; other clusters and weeks are left
        alone. The new file is in place before anything else there is removed, so that a
        reader of the dataset never finds the week empty.
        """
        cluster = _segment("cluster", data.cluster, self.location)
        week = _segment("week", data.period.label, self.location)
        # Every table is checked before the first is written: no half-written week.
        extra = price_metadata(data.prices.book, data.prices.examples) if data.prices else {}
        tables = {name: _with_schema(data.tables[name], SCHEMAS[name], extra) for name in TABLES}
        written = []
        for name, table in tables.items():
            partition = f"table={name}/cluster={cluster}/week={week}"
            operation = f"write {partition}/{PART_FILE}"
            with self._errors(operation):
                payload = _parquet_bytes(table)
                self._put(f"{partition}/{PART_FILE}", payload, PARQUET_CONTENT_TYPE)
                self._remove_all_but(partition, PART_FILE)
            written.append(self._public(f"{partition}/{PART_FILE}"))
        return written

    def read_tables(self, cluster: str, label: str) -> dict[str, pa.Table] | None:
        """The tables one report wrote for ``cluster`` and the week ``label``.

        None when that week was never written. Each table has exactly its schema in
        ``SCHEMAS`` (the partition columns are not in it); columns a later minor version
        added are dropped and columns an earlier one lacked come back null. A table added
        after the version the week was written with (``TABLE_SINCE``) is left out.
        """
        cluster = _segment("cluster", cluster, self.location)
        week = _segment("week", label, self.location)
        tables: dict[str, pa.Table] = {}
        missing = []
        versions = []
        for name in TABLES:
            relative = f"table={name}/cluster={cluster}/week={week}/{PART_FILE}"
            with self._errors(f"read {relative}"):
                try:
                    with self._fs.open_input_file(self._path(relative)) as handle:
                        parquet = pq.ParquetFile(handle)
                        written_as = parquet.schema_arrow.metadata or {}
                        table = parquet.read()
                except FileNotFoundError:
                    missing.append(name)
                    continue
            tables[name] = self._conform(table, name, written_as, relative)
            versions.append(_version(written_as.get(b"gpuwatch.schema_version", b"").decode()))
        if not tables:
            self._check_bucket(f"read cluster={cluster}/week={week}")
            return None
        newest = max(versions)
        missing = [
            name
            for name in missing
            if name not in TABLE_SINCE or _version(TABLE_SINCE[name]) <= newest
        ]
        if missing:
            raise ReportStoreError(
                self.location,
                f"read cluster={cluster}/week={week}",
                "incomplete",
                f"{', '.join(missing)} missing while {', '.join(tables)} exist (an "
                "interrupted write?); re-run the report for that week",
            )
        return tables

    def dataset(self, table: str) -> ds.Dataset:
        """One table over every cluster and week, with ``cluster`` and ``week`` columns.

        The schema is the table's in ``SCHEMAS`` plus the two partition columns (strings),
        whatever the files hold, so that readers of a growing fleet see one schema.
        """
        if table not in SCHEMAS:
            raise ValueError(f"unknown report table {table!r}; expected one of {TABLES}")
        operation = f"open the table={table} dataset"
        base = self._path(f"table={table}")
        with self._errors(operation):
            found = self._fs.get_file_info(base).type != pafs.FileType.NotFound
        if not found:
            self._check_bucket(operation)
            raise ReportStoreError(
                self.location, operation, "not_found", f"nothing written under table={table}/ yet"
            )
        schema = SCHEMAS[table]
        for field in _PARTITIONING:
            schema = schema.append(field)
        with self._errors(operation):
            return ds.dataset(
                base,
                schema=schema,
                format="parquet",
                filesystem=self._fs,
                partitioning=ds.partitioning(_PARTITIONING, flavor="hive"),
            )

    def local_files(
        self,
        files: Sequence[str],
        folder: Path,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[str]:
        """The files ``files`` (paths in this store, as its ``dataset`` lists them) as
        local paths: a folder's as they are; object storage's downloaded under ``folder``
        with their partition folders (``table=…/cluster=…/week=…``), several at a time, so
        that a local reader reads them at local speed. ``progress(done, total)`` is told
        how many are done, in the order of ``files``."""
        if self._local:
            return list(files)
        local = pafs.LocalFileSystem()
        targets = [str(folder / self._relative(path)) for path in files]

        def fetch(pair: tuple[str, str]) -> None:
            source, target = pair
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            with self._errors(f"read {self._relative(source)}"):
                pafs.copy_files(
                    source,
                    target,
                    source_filesystem=self._fs,
                    destination_filesystem=local,
                    use_threads=False,
                )

        pool = ThreadPoolExecutor(max_workers=_DOWNLOADS, thread_name_prefix="gpuwatch-fetch")
        try:
            for done, _ in enumerate(pool.map(fetch, zip(files, targets, strict=True)), 1):
                if progress is not None:
                    progress(done, len(files))
        finally:  # after a failure, the downloads not yet begun are not begun
            pool.shutdown(cancel_futures=True)
        return targets

    def _relative(self, path: str) -> str:
        """A path of this store relative to its location."""
        root = self._root.rstrip("/") + "/"
        return path[len(root) :] if path.startswith(root) else path.lstrip("/")

    # -- the HTML -----------------------------------------------------------------------

    def write_html(self, cluster: str, period: ReportPeriod, html: str) -> str:
        """Write the report as ``report.html`` in its week and as the cluster's
        ``latest.html`` (the report written last); return the week's file."""
        cluster = _segment("cluster", cluster, self.location)
        week = _segment("week", period.label, self.location)
        relative = f"{HTML_FOLDER}/cluster={cluster}/week={week}/report.html"
        for target in (relative, f"{HTML_FOLDER}/cluster={cluster}/latest.html"):
            with self._errors(f"write {target}"):
                self._put_html(target, html)
        return self._public(relative)

    def write_fleet_html(self, label: str, html: str) -> str:
        """Write the fleet report of the week ``label`` as ``html/fleet/week=<label>/
        report.html`` and ``html/fleet/latest.html``; return the week's file. (``fleet``
        cannot clash with a cluster's folder, which is ``cluster=<name>``.)"""
        week = _segment("week", label, self.location)
        relative = f"{HTML_FOLDER}/fleet/week={week}/report.html"
        for target in (relative, f"{HTML_FOLDER}/fleet/latest.html"):
            with self._errors(f"write {target}"):
                self._put_html(target, html)
        return self._public(relative)

    # -- filesystem plumbing ------------------------------------------------------------

    def _put_html(self, relative: str, html: str) -> None:
        if self._local:
            write_atomic(Path(self._path(relative)), html)
        else:
            self._put(relative, html.encode("utf-8"), HTML_CONTENT_TYPE)

    def _path(self, relative: str) -> str:
        return f"{self._root}/{relative}"

    def _public(self, relative: str) -> str:
        return f"{self._uri}/{relative}"

    def _put(self, relative: str, payload: bytes | pa.Buffer, content_type: str) -> None:
        path = self._path(relative)
        if self._local:
            write_atomic_bytes(Path(path), memoryview(payload))
            return
        with self._fs.open_output_stream(path, metadata={"Content-Type": content_type}) as out:
            out.write(payload)

    def _remove_all_but(self, partition: str, keep: str) -> None:
        """Delete what else a partition holds: files of another writer's layout, and the
        temporary files of a local write that crashed."""
        folder = self._path(partition)
        kept = f"{folder}/{keep}"
        selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
        entries = sorted(self._fs.get_file_info(selector), key=lambda info: -len(info.path))
        for info in entries:
            if info.type == pafs.FileType.Directory:
                self._fs.delete_dir(info.path)
            elif info.path != kept:
                self._fs.delete_file(info.path)

    def _check_bucket(self, operation: str) -> None:
        """Object stores answer "not found" for keys in a bucket that does not exist;
        tell that apart from a week never written."""
        if self._bucket is None:
            return
        with self._errors(operation):
            exists = self._fs.get_file_info(self._bucket).type != pafs.FileType.NotFound
        if not exists:
            raise ReportStoreError(
                self.location,
                operation,
                "bucket_missing",
                f"bucket {self._bucket!r} does not exist; create it first",
            )

    def _conform(
        self, table: pa.Table, name: str, written_as: Mapping[bytes, bytes], relative: str
    ) -> pa.Table:
        """``table`` as read, in exactly ``SCHEMAS[name]``."""
        operation = f"read {relative}"
        file_table = written_as.get(b"gpuwatch.table", b"").decode()
        file_version = written_as.get(b"gpuwatch.schema_version", b"").decode()
        if file_table != name:
            raise ReportStoreError(
                self.location,
                operation,
                "bad_file",
                f"the file says it holds table {file_table or '(nothing)'!r}, not {name!r}",
            )
        if file_version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ReportStoreError(
                self.location,
                operation,
                "bad_file",
                f"written with schema version {file_version or '(none)'}; this gpuwatch "
                f"reads {SCHEMA_VERSION.split('.')[0]}.x",
            )
        schema = SCHEMAS[name]
        columns = []
        for field in schema:
            if field.name in table.column_names:
                column = table.column(field.name)
                # Parquet has no second timestamps: they come back as milliseconds.
                columns.append(column if column.type == field.type else column.cast(field.type))
            elif field.nullable:
                columns.append(pa.nulls(table.num_rows, field.type))
            else:
                raise ReportStoreError(
                    self.location, operation, "bad_file", f"required column {field.name} missing"
                )
        return pa.Table.from_arrays(columns, schema=schema)

    def _errors(self, operation: str) -> AbstractContextManager[None]:
        return translated(self.location, operation, bucket=self._bucket, endpoint=self._endpoint)


def _version(text: str) -> tuple[int, ...]:
    """``1.10`` -> (1, 10), to compare versions as numbers; () when unreadable."""
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return ()


def _segment(what: str, value: str, location: str) -> str:
    """``value`` when it is safe as a hive partition value, else a ReportStoreError."""
    if _SAFE_SEGMENT.fullmatch(value):
        return value
    raise ReportStoreError(
        location,
        f"use {what} {value!r} as a partition",
        "invalid_name",
        "expected 1 to 253 letters, digits, '.', '_' or '-', starting with a letter or "
        "digit (no '/', '=', spaces or characters that need escaping)",
    )


def _with_schema(table: pa.Table, schema: pa.Schema, extra: Mapping[str, str]) -> pa.Table:
    """``table`` carrying ``schema``'s metadata (the docs, the table name and version)
    and ``extra`` (the price book), which ``ReportData`` does not require of its tables.
    A table that breaks its schema is a bug upstream, a ValueError: not a storage
    problem."""
    name = schema.metadata[b"gpuwatch.table"].decode()
    if not table.schema.equals(schema, check_metadata=False):
        raise ValueError(f"report table {name}: not the {name} schema")
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise ValueError(f"report table {name}: nulls in the non-null column {field.name}")
    metadata = {**{k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}, **extra}
    return pa.Table.from_arrays(table.columns, schema=schema.with_metadata(metadata))


def _parquet_bytes(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression=COMPRESSION,
        row_group_size=ROW_GROUP_ROWS,
        use_dictionary=_dictionary_columns(table.schema),
    )
    return sink.getvalue()


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns worth dictionary encoding: all but the measurements (floats) and the
    money (decimals). Their values hardly repeat, so a dictionary fills up in the first
    pages and the writer falls back to plain encoding after the work of trying: on a
    10,000-GPU week, leaving them plain writes the dataset 29 % faster (0.96 s of CPU,
    not 1.36 s) and 17 % smaller (60 MiB, not 72 MiB); strings, timestamps and ids repeat
    and stay dictionary encoded."""
    return [
        field.name
        for field in schema
        if not (pa.types.is_floating(field.type) or pa.types.is_decimal(field.type))
    ]
