"""The report store against a real folder and a real S3 endpoint (moto on loopback).

What is checked is what readers outside gpuwatch rely on: the exact layout, one file per
partition, a re-run replacing its own partition and nothing else, a fleet's clusters
reading back as one dataset; and that every failure says where and why.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from gpuwatch.config.settings import ReportSettings
from gpuwatch.report.data import ReportData, ReportPeriod
from gpuwatch.report.schema import SCHEMA_VERSION, SCHEMAS, TABLE_SINCE, TABLES
from gpuwatch.report.store import ReportStore, ReportStoreError
from tests.integration.moto_s3 import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    MotoS3,
    moto_s3_fixture,  # noqa: F401
    s3_env_fixture,  # noqa: F401
)
from tests.integration.prometheus_server import free_port
from tests.report_tables import WEEK, report_data

pytestmark = pytest.mark.integration

PREVIOUS = ReportPeriod.iso_week("2026-W47")
HTML = "<!doctype html><title>prod-a 2026-W48</title><p>GPU spend: 1 234 USD ✓</p>"


def layout(cluster: str, week: str) -> set[str]:
    """The files one report writes, relative to the location, as the schema documents."""
    return {f"table={name}/cluster={cluster}/week={week}/part-0.parquet" for name in TABLES}


def html_layout(cluster: str, week: str) -> set[str]:
    return {
        f"html/cluster={cluster}/week={week}/report.html",
        f"html/cluster={cluster}/latest.html",
    }


def files_under(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


def assert_same_tables(read: dict[str, pa.Table] | None, data: ReportData) -> None:
    assert read is not None
    assert set(read) == set(TABLES)
    for name in TABLES:
        assert read[name].schema.equals(SCHEMAS[name], check_metadata=True), name
        assert read[name].equals(data.tables[name]), name


def local_store(tmp_path: Path) -> ReportStore:
    return ReportStore.from_settings(ReportSettings(location=str(tmp_path / "reports")))


# -- a local folder ----------------------------------------------------------------------


def test_local_round_trip_in_the_documented_layout(tmp_path):
    store = local_store(tmp_path)
    data = report_data("prod-a")

    written = store.write_tables(data)
    html_path = store.write_html("prod-a", WEEK, HTML)

    root = tmp_path / "reports"
    assert sorted(written) == sorted(str(root / rel) for rel in layout("prod-a", "2026-W48"))
    assert html_path == str(root / "html/cluster=prod-a/week=2026-W48/report.html")
    assert files_under(root) == layout("prod-a", "2026-W48") | html_layout("prod-a", "2026-W48")
    assert_same_tables(store.read_tables("prod-a", "2026-W48"), data)
    assert Path(html_path).read_text(encoding="utf-8") == HTML
    assert (root / "html/cluster=prod-a/latest.html").read_text(encoding="utf-8") == HTML


def test_files_carry_the_table_and_version_not_the_partition_columns(tmp_path):
    store = local_store(tmp_path)
    store.write_tables(report_data("prod-a", hours=200))

    path = tmp_path / "reports/table=gpu_hourly/cluster=prod-a/week=2026-W48/part-0.parquet"
    parquet = pq.ParquetFile(path)
    metadata = parquet.metadata.metadata
    assert metadata[b"gpuwatch.table"] == b"gpu_hourly"
    assert metadata[b"gpuwatch.schema_version"] == SCHEMA_VERSION.encode()
    assert parquet.schema_arrow.names == SCHEMAS["gpu_hourly"].names
    assert parquet.metadata.num_rows == 400
    column = parquet.metadata.row_group(0).column(0)
    assert column.compression == "ZSTD"
    assert parquet.schema_arrow.field("cost").metadata[b"doc"]


def test_rewriting_a_week_replaces_that_partition_only(tmp_path):
    store = local_store(tmp_path)
    root = tmp_path / "reports"
    store.write_tables(report_data("prod-a", PREVIOUS))
    store.write_tables(report_data("prod-b", WEEK))
    store.write_tables(report_data("prod-a", WEEK, util=0.5))
    untouched = {
        rel: (root / rel).read_bytes()
        for rel in layout("prod-a", "2026-W47") | layout("prod-b", "2026-W48")
    }
    # What a crashed writer or another tool may have left in the partition.
    week = root / "table=gpu_hourly/cluster=prod-a/week=2026-W48"
    (week / "part-1.parquet").write_bytes(b"stale")
    (week / ".part-0.parquet.abc.tmp").write_bytes(b"half")

    rerun = report_data("prod-a", WEEK, util=0.9, gpus=1)
    store.write_tables(rerun)

    assert_same_tables(store.read_tables("prod-a", "2026-W48"), rerun)
    assert sorted(path.name for path in week.iterdir()) == ["part-0.parquet"]
    assert {rel: (root / rel).read_bytes() for rel in untouched} == untouched
    assert files_under(root) == (
        layout("prod-a", "2026-W47") | layout("prod-b", "2026-W48") | layout("prod-a", "2026-W48")
    )


def test_a_week_never_written_reads_as_none(tmp_path):
    store = local_store(tmp_path)
    assert store.read_tables("prod-a", "2026-W47") is None
    store.write_tables(report_data("prod-a", WEEK))
    assert store.read_tables("prod-a", "2026-W47") is None
    assert store.read_tables("prod-b", "2026-W48") is None


def test_a_week_half_written_is_an_error_not_a_smaller_report(tmp_path):
    store = local_store(tmp_path)
    store.write_tables(report_data("prod-a", WEEK))
    (tmp_path / "reports/table=savings/cluster=prod-a/week=2026-W48/part-0.parquet").unlink()

    with pytest.raises(ReportStoreError) as caught:
        store.read_tables("prod-a", "2026-W48")
    assert caught.value.kind == "incomplete"
    assert "savings missing" in str(caught.value)
    assert "cluster=prod-a/week=2026-W48" in str(caught.value)


def test_a_file_of_a_newer_minor_version_reads_in_this_schema(tmp_path):
    store = local_store(tmp_path)
    data = report_data("prod-a", WEEK)
    store.write_tables(data)
    path = tmp_path / "reports/table=actions/cluster=prod-a/week=2026-W48/part-0.parquet"
    newer = data.tables["actions"].append_column("approver", pa.array(["ops"], pa.string()))
    metadata = {"gpuwatch.table": "actions", "gpuwatch.schema_version": "1.99"}
    pq.write_table(newer.replace_schema_metadata(metadata), path)

    assert_same_tables(store.read_tables("prod-a", "2026-W48"), data)


def test_a_week_written_before_a_table_existed_reads_without_it(tmp_path):
    """A 1.0 week has no holder_hourly: that is not a half-written week."""
    store = local_store(tmp_path)
    data = report_data("prod-a", WEEK)
    store.write_tables(data)
    root = tmp_path / "reports"
    for name in TABLES:
        path = root / f"table={name}/cluster=prod-a/week=2026-W48/part-0.parquet"
        if name in TABLE_SINCE:
            path.unlink()
            continue
        old = pq.read_table(path)
        if name == "gpu_hourly":
            old = old.drop_columns(["allocated_ratio"])  # added in 1.1
        metadata = {"gpuwatch.table": name, "gpuwatch.schema_version": "1.0"}
        pq.write_table(old.replace_schema_metadata(metadata), path)

    read = store.read_tables("prod-a", "2026-W48")
    assert read is not None and set(read) == set(TABLES) - set(TABLE_SINCE)
    assert read["gpu_hourly"]["allocated_ratio"].null_count == read["gpu_hourly"].num_rows

    # Written with this version, a missing table is a half-written week.
    store.write_tables(data)
    (root / "table=holder_hourly/cluster=prod-a/week=2026-W48/part-0.parquet").unlink()
    with pytest.raises(ReportStoreError, match="holder_hourly missing"):
        store.read_tables("prod-a", "2026-W48")


def test_local_dataset_reads_clusters_and_weeks_as_string_columns(tmp_path):
    store = local_store(tmp_path)
    store.write_tables(report_data("42", WEEK, gpus=2, hours=1))
    store.write_tables(report_data("prod-a", PREVIOUS, gpus=3, hours=1))

    table = store.dataset("gpu_hourly").to_table()

    assert table.schema.field("cluster").type == pa.string()
    assert table.schema.field("week").type == pa.string()
    counts = table.group_by(["cluster", "week"]).aggregate([("gpu_uuid", "count")])
    assert sorted(counts.to_pylist(), key=lambda row: row["cluster"]) == [
        {"cluster": "42", "week": "2026-W48", "gpu_uuid_count": 2},
        {"cluster": "prod-a", "week": "2026-W47", "gpu_uuid_count": 3},
    ]


def test_relative_and_file_uri_locations_are_folders_created_when_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = ReportStore.from_settings(ReportSettings(location="out/reports"))
    assert (tmp_path / "out/reports").is_dir()
    assert relative.location == str(tmp_path / "out/reports")

    by_uri = ReportStore.from_settings(ReportSettings(location=(tmp_path / "uri").as_uri()))
    written = by_uri.write_tables(report_data("prod-a"))
    assert all(path.startswith(str(tmp_path / "uri") + "/table=") for path in written)


def test_a_local_location_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "reports").write_text("not a folder")

    with pytest.raises(ReportStoreError) as caught:
        ReportStore.from_settings(ReportSettings(location=str(tmp_path / "reports")))

    assert caught.value.kind == "not_a_directory"
    assert str(tmp_path / "reports") in str(caught.value)
    assert "cannot open" in str(caught.value)


def test_a_file_in_the_way_of_a_partition_is_a_clear_error(tmp_path):
    store = local_store(tmp_path)
    (tmp_path / "reports/table=gpu_hourly").write_text("in the way")

    with pytest.raises(ReportStoreError) as caught:
        store.write_tables(report_data("prod-a"))

    assert caught.value.kind == "not_a_directory"
    assert "write table=gpu_hourly/cluster=prod-a/week=2026-W48/part-0.parquet" in str(caught.value)


@pytest.mark.parametrize(
    "cluster", ["a/b", "a=b", "a b", "..", ".hidden", "_tmp", "prod%2Fa", "grün", "", "x" * 254]
)
def test_cluster_names_that_are_not_safe_path_segments_are_refused(tmp_path, cluster):
    store = local_store(tmp_path)

    for attempt in (
        lambda: store.write_tables(report_data(cluster)),
        lambda: store.write_html(cluster, WEEK, HTML),
        lambda: store.read_tables(cluster, "2026-W48"),
    ):
        with pytest.raises(ReportStoreError) as caught:
            attempt()
        assert caught.value.kind == "invalid_name"
        assert repr(cluster) in str(caught.value)

    assert files_under(tmp_path / "reports") == set()


def test_unknown_table_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match="unknown report table"):
        local_store(tmp_path).dataset("gpu_daily")


def test_endpoint_settings_on_a_location_that_is_not_s3_are_refused():
    settings = ReportSettings(location="gs://bucket/reports", s3_endpoint_url="http://x:9000")
    with pytest.raises(ReportStoreError) as caught:
        ReportStore.from_settings(settings)
    assert caught.value.kind == "invalid_location"
    assert "s3:// locations only" in str(caught.value)


@pytest.mark.parametrize(
    "location", ["s3://AKIAEXAMPLE:hunter2@bucket/fleet?bogus=1", "ftp://ops:hunter2@host/x"]
)
def test_a_uri_pyarrow_refuses_is_reported_without_its_credentials(location):
    with pytest.raises(ReportStoreError) as caught:
        ReportStore.from_settings(ReportSettings(location=location))
    assert caught.value.kind == "invalid_location"
    assert "hunter2" not in str(caught.value)
    assert "AKIAEXAMPLE" not in str(caught.value)


# -- S3 (moto) ---------------------------------------------------------------------------


def s3_keys(moto_s3: MotoS3, bucket: str, prefix: str) -> set[str]:
    listed = moto_s3.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")
    return {item["Key"].removeprefix(f"{prefix}/") for item in listed.get("Contents", [])}


def test_s3_round_trip_and_rewrite(s3_env):
    bucket = s3_env.create_bucket()
    store = ReportStore.from_settings(s3_env.settings(f"s3://{bucket}/fleet"))
    previous = report_data("prod-a", PREVIOUS)
    store.write_tables(previous)

    written = store.write_tables(report_data("prod-a", WEEK, util=0.5))
    rerun = report_data("prod-a", WEEK, util=0.9, gpus=1)
    store.write_tables(rerun)

    assert sorted(written) == sorted(
        f"s3://{bucket}/fleet/{rel}" for rel in layout("prod-a", "2026-W48")
    )
    assert s3_keys(s3_env, bucket, "fleet") == layout("prod-a", "2026-W47") | layout(
        "prod-a", "2026-W48"
    )
    assert_same_tables(store.read_tables("prod-a", "2026-W48"), rerun)
    assert_same_tables(store.read_tables("prod-a", "2026-W47"), previous)
    assert store.read_tables("prod-a", "2026-W46") is None


def test_s3_fleet_reads_back_as_one_dataset(s3_env):
    bucket = s3_env.create_bucket()
    for cluster, gpus in (("prod-a", 2), ("prod-b", 3)):
        store = ReportStore.from_settings(s3_env.settings(f"s3://{bucket}/fleet"))
        store.write_tables(report_data(cluster, WEEK, gpus=gpus, hours=2))

    dataset = store.dataset("gpu_hourly")
    table = dataset.to_table()
    prod_b = dataset.to_table(filter=ds.field("cluster") == "prod-b")

    assert table.num_rows == (2 + 3) * 2
    assert set(table.column("cluster").to_pylist()) == {"prod-a", "prod-b"}
    assert set(table.column("week").to_pylist()) == {"2026-W48"}
    assert prod_b.num_rows == 3 * 2
    assert table.schema.names == [*SCHEMAS["gpu_hourly"].names, "cluster", "week"]


def test_s3_files_are_downloaded_with_their_partition_folders(s3_env, tmp_path):
    bucket = s3_env.create_bucket()
    store = ReportStore.from_settings(s3_env.settings(f"s3://{bucket}/fleet"))
    for cluster in ("prod-a", "prod-b"):
        store.write_tables(report_data(cluster, WEEK))
    files = [f.path for f in store.dataset("gpu_hourly").get_fragments()]

    told: list[tuple[int, int]] = []
    local = store.local_files(files, tmp_path / "copy", lambda *step: told.append(step))

    assert told == [(1, 2), (2, 2)]
    assert files_under(tmp_path / "copy") == {
        f"table=gpu_hourly/cluster={c}/week=2026-W48/part-0.parquet" for c in ("prod-a", "prod-b")
    }
    for remote, path in zip(files, local, strict=True):
        key = remote.removeprefix(f"{bucket}/")
        body = s3_env.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        assert Path(path).read_bytes() == body


def test_a_file_gone_before_its_download_names_the_file(s3_env, tmp_path):
    bucket = s3_env.create_bucket()
    store = ReportStore.from_settings(s3_env.settings(f"s3://{bucket}/fleet"))
    store.write_tables(report_data("prod-a", WEEK))
    files = [f.path for f in store.dataset("gpu_hourly").get_fragments()]
    s3_env.client().delete_object(Bucket=bucket, Key=files[0].removeprefix(f"{bucket}/"))

    with pytest.raises(ReportStoreError) as caught:
        store.local_files(files, tmp_path / "copy")

    assert "read table=gpu_hourly/cluster=prod-a/week=2026-W48/part-0.parquet" in str(caught.value)


def test_a_folders_files_are_read_where_they_are(tmp_path):
    store = local_store(tmp_path)
    store.write_tables(report_data("prod-a", WEEK))
    files = [f.path for f in store.dataset("gpu_hourly").get_fragments()]

    assert store.local_files(files, tmp_path / "copy") == files
    assert not (tmp_path / "copy").exists()


def test_s3_html_upload_and_readback(s3_env):
    bucket = s3_env.create_bucket()
    store = ReportStore.from_settings(s3_env.settings(f"s3://{bucket}/fleet"))

    uri = store.write_html("prod-a", WEEK, HTML)

    assert uri == f"s3://{bucket}/fleet/html/cluster=prod-a/week=2026-W48/report.html"
    client = s3_env.client()
    for key in ("html/cluster=prod-a/week=2026-W48/report.html", "html/cluster=prod-a/latest.html"):
        got = client.get_object(Bucket=bucket, Key=f"fleet/{key}")
        assert got["Body"].read().decode("utf-8") == HTML
        assert got["ContentType"] == "text/html; charset=utf-8"


def test_credentials_and_options_in_the_uri_never_show(s3_env):
    # Without s3_endpoint_url pyarrow reads everything from the URI; none of it is shown.
    bucket = s3_env.create_bucket()
    endpoint = s3_env.endpoint_url.removeprefix("http://")
    location = (
        f"s3://{ACCESS_KEY}:{SECRET_KEY}@{bucket}/fleet"
        f"?region={REGION}&scheme=http&endpoint_override={endpoint}"
    )
    store = ReportStore.from_settings(ReportSettings(location=location))

    written = store.write_tables(report_data("prod-a"))

    assert store.location == f"s3://{bucket}/fleet"
    assert all(uri.startswith(f"s3://{bucket}/fleet/table=") for uri in written)
    with pytest.raises(ReportStoreError) as caught:
        store.write_tables(report_data("prod/a"))
    assert SECRET_KEY not in str(caught.value)
    assert ACCESS_KEY not in str(caught.value)


def test_s3_missing_bucket(s3_env):
    store = ReportStore.from_settings(s3_env.settings("s3://no-such-bucket/fleet"))

    for attempt in (
        lambda: store.write_tables(report_data("prod-a")),
        lambda: store.read_tables("prod-a", "2026-W48"),
        lambda: store.dataset("gpu_hourly"),
        lambda: store.write_html("prod-a", WEEK, HTML),
    ):
        with pytest.raises(ReportStoreError) as caught:
            attempt()
        message = str(caught.value)
        assert caught.value.kind == "bucket_missing", message
        assert f"s3://no-such-bucket/fleet (endpoint {s3_env.endpoint_url})" in message
        assert "bucket 'no-such-bucket' does not exist" in message


def test_s3_wrong_credentials(s3_env):
    bucket = s3_env.create_bucket()
    store = ReportStore.from_settings(s3_env.settings(f"s3://{bucket}/fleet"))

    with s3_env.enforce_auth(), pytest.raises(ReportStoreError) as caught:
        store.write_tables(report_data("prod-a"))

    message = str(caught.value)
    assert caught.value.kind == "access_denied", message
    assert f"s3://{bucket}/fleet" in message
    assert "cannot write table=gpu_hourly/cluster=prod-a/week=2026-W48/part-0.parquet" in message
    assert "AWS_ACCESS_KEY_ID" in message
    assert SECRET_KEY not in message


def test_s3_unreachable_endpoint_fails_in_bounded_time(s3_env):
    endpoint = f"http://127.0.0.1:{free_port()}"
    settings = ReportSettings(location="s3://reports/fleet", s3_endpoint_url=endpoint)
    store = ReportStore.from_settings(settings)

    started = time.monotonic()
    with pytest.raises(ReportStoreError) as caught:
        store.write_tables(report_data("prod-a"))
    elapsed = time.monotonic() - started

    assert caught.value.kind == "unreachable", str(caught.value)
    assert f"endpoint {endpoint} does not answer" in str(caught.value)
    assert elapsed < 10
