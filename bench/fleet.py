"""Benchmark: the fleet report over a fleet's dataset, against the same roll-up in pandas.

A fleet of ``--clusters`` clusters of ``--gpus`` GPUs each writes a week of ``--days``
days (100 x 1,000 x 7: 16.8 million GPU-hours), and the week before it, into one
dataset, by the weekly report's own writer (``ReportStore.write_tables``): every table,
``holder_hourly`` one row per GPU-hour, a tenth of the clusters priced in CNY, and two
more clusters that reported only the week before. The dataset is generated before
anything is timed and cached in ``.bench-cache/``.

Then, side by side, each in its own process (so that peak RSS is its own):

(a) pandas: the same roll-up a user writes with pandas at its best: ``pd.read_parquet``
    of the two weeks' partitions with only the columns needed and Arrow-backed dtypes
    (``dtype_backend="pyarrow"``: money stays exact decimals, as the page needs; the
    default object dtype of ``Decimal`` values is several times slower and larger), then
    ``groupby`` per cluster, pool, team, lever and finding, the clusters that did not
    report from the folder listing;
(b) gpuwatch: ``gpuwatch report --fleet`` without the command line: the SQL of
    ``gpuwatch/report/fleet_sql/`` on DuckDB embedded over the dataset, the figures,
    the HTML page written back to the dataset.

Both must give the same figures to the last digit: cost and idle cost per currency, and
per cluster, team and pool in both weeks; each lever's gross, net and blocked monthly
amounts (the rows that differ are printed). With
``--object-store`` both read the dataset from S3 instead: moto's S3 server on loopback,
the dataset uploaded to it before anything is timed (each side through pyarrow's S3
filesystem; moto's Python server is not S3, so its seconds say more about the two sides
side by side than about a bucket in a cloud).
Run:

    .venv/bin/python bench/fleet.py                  # 100 clusters x 1,000 GPUs x 7 days
    .venv/bin/python bench/fleet.py --clusters 10    # a quick look
    .venv/bin/python bench/fleet.py --object-store   # the same, from S3

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peak_memory import peak_rss_mib

WEEK, PREVIOUS = "2026-W48", "2026-W47"
RETIRED = 2
"""Clusters that reported the week before only: the page must name them."""
REGION = "us-east-1"
CHILD_ENV = {
    **os.environ,
    # moto's server takes any credentials; none of a developer's own are sent to it.
    "AWS_ACCESS_KEY_ID": "AKIAGPUWATCHBENCHONLY",
    "AWS_SECRET_ACCESS_KEY": "gpuwatch-bench-secret-not-a-real-one",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def dataset_folder(clusters: int, gpus: int, days: int) -> Path:
    return REPO / ".bench-cache" / f"fleet-{clusters}x{gpus}x{days}d"


# --------------------------------------------------------------------------- the dataset


def generate(folder: Path, clusters: int, gpus: int, days: int) -> None:
    """The fleet's two weeks, by the report's writer; ``folder/.complete`` when done."""
    from gpuwatch.config.settings import ReportSettings
    from gpuwatch.report.data import ReportData, ReportPeriod
    from gpuwatch.report.store import ReportStore

    if (folder / ".complete").exists():
        return
    store = ReportStore.from_settings(ReportSettings(location=str(folder)))
    started = time.perf_counter()
    names = [f"c{index:03d}" for index in range(clusters + RETIRED)]
    for index, name in enumerate(names):
        weeks = (PREVIOUS,) if index >= clusters else (PREVIOUS, WEEK)
        for label in weeks:
            period = ReportPeriod.iso_week(label)
            tables = cluster_week(
                index, gpus, days, period.start, seed=zlib.crc32(f"{name}/{label}".encode())
            )
            store.write_tables(ReportData(name, period, tables))
        print(f"  generated {index + 1}/{len(names)} clusters", file=sys.stderr, end="\r")
    (folder / ".complete").write_text(f"{time.perf_counter() - started:.1f} s\n")
    print(file=sys.stderr)


def cluster_week(index: int, gpus: int, days: int, start, seed: int) -> dict:
    """One cluster's week as the report writes it, built with numpy (no Python rows)."""
    import numpy as np

    from gpuwatch.report.schema import SCHEMAS

    rng = np.random.default_rng(seed)
    hours = days * 24
    rows = gpus * hours
    currency = "CNY" if index % 10 == 9 else "USD"
    rate = 7 if currency == "CNY" else 1
    gpu = np.tile(np.arange(gpus), hours)
    hour = np.repeat(np.arange(hours), gpus)
    node = gpu // 8
    # Half the nodes train, three tenths serve, a fifth are spot.
    share = np.arange(gpus // 8 + 1) / max(gpus // 8, 1)
    pool_of_node = np.select(
        [share < 0.5, share < 0.8], ["gpu-training", "gpu-inference"], "gpu-spot"
    )
    team_ids = (np.arange(gpus // 8 + 1) * 7 + index) % 20
    unallocated = (np.arange(gpus // 8 + 1) % 7) == 3
    free = unallocated[node]
    util_pct = rng.integers(0, 101, rows)
    util_pct[free] = 0
    price_micro = (
        np.select(
            [pool_of_node == "gpu-training", pool_of_node == "gpu-inference"],
            [2_500_000, 1_200_000],
            900_000,
        )[node]
        * rate
    )
    idle_micro = price_micro * (100 - util_pct) // 100
    uuid = np.array([f"GPU-{index:03d}-{g:05d}" for g in range(gpus)], dtype=object)
    nodes = np.array([f"node-{n:04d}" for n in range(gpus // 8 + 1)], dtype=object)
    teams = np.array([f"team-{t:02d}" for t in range(20)], dtype=object)
    team = np.where(free, None, teams[team_ids[node]])
    workload = np.where(free, None, "PyTorchJob/" + teams[team_ids[node]] + "/train")
    utc = np.datetime64(start.replace(tzinfo=None), "s") + hour.astype("timedelta64[h]")
    util = util_pct / 100
    common = {
        "hour": utc,
        "device_id": uuid[gpu],
        "node": nodes[node],
        "pool": pool_of_node[node],
        "namespace": team,
        "pod": np.where(free, None, "train-0"),
        "workload": workload,
        "team": team,
        "util_mean_ratio": util,
        "coverage_ratio": np.ones(rows),
        "cost": _decimals(price_micro),
        "idle_cost": _decimals(idle_micro),
        "currency": np.full(rows, currency, dtype=object),
    }
    hourly = {
        **common,
        "gpu_uuid": uuid[gpu],
        "gpu_index": (gpu % 8).astype(np.int32),
        "model": np.full(rows, "NVIDIA A100-SXM4-80GB", dtype=object),
        "capacity_type": np.where(pool_of_node[node] == "gpu-spot", "spot", "on-demand"),
        "util_p95_ratio": np.minimum(util + 0.1, 1.0),
        "fb_used_max_mib": util * 60000,
        "fb_used_max_ratio": util * 0.73,
        "power_mean_w": 100 + 300 * util,
        "energy_kwh": (100 + 300 * util) / 1000,
        "allocated_ratio": np.where(free, 0.0, 1.0),
    }
    holders = {
        **common,
        "share_ratio": np.ones(rows),
        "evidence": np.where(free, None, "exporter"),
    }
    tables = {
        "gpu_hourly": _table(SCHEMAS["gpu_hourly"], hourly, rows),
        "holder_hourly": _table(SCHEMAS["holder_hourly"], holders, rows),
        "findings": _findings(SCHEMAS["findings"], uuid, start, rng),
        "savings": _savings(SCHEMAS["savings"], currency, start, days, index),
    }
    # The tables the fleet report does not read are written empty, as a cluster with no
    # actions, budgets or forecasts writes them.
    for name in SCHEMAS.keys() - tables.keys():
        tables[name] = SCHEMAS[name].empty_table()
    return tables


def _decimals(micro):
    """int64 micro-units as ``decimal128(18, 6)``, exactly (no float on the way)."""
    import numpy as np
    import pyarrow as pa

    words = np.zeros((len(micro), 2), dtype=np.int64)
    words[:, 0] = micro
    words[:, 1] = np.where(micro < 0, -1, 0)
    return pa.Array.from_buffers(
        pa.decimal128(18, 6), len(micro), [None, pa.py_buffer(words.tobytes())]
    )


def _table(schema, columns: dict, rows: int):
    import pyarrow as pa

    arrays = []
    for field in schema:
        value = columns.get(field.name)
        if value is None:
            arrays.append(pa.nulls(rows, field.type))
        elif isinstance(value, pa.Array):
            arrays.append(value)
        else:
            arrays.append(pa.array(value, type=field.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


def _findings(schema, uuid, start, rng):
    import datetime as dt

    import pyarrow as pa

    rows = []
    for number in range(40):
        first = int(rng.integers(0, 150))
        rows.append(
            {
                "rule": ("gpu-idle", "gpu-near-oom", "gpu-xid")[number % 3],
                "severity": "critical" if number % 3 == 2 else "warning",
                "gpu_uuid": uuid[number],
                "device_id": uuid[number],
                "node": f"node-{number // 8:04d}",
                "pool": "gpu-training",
                "team": f"team-{number % 20:02d}",
                "start": start + dt.timedelta(hours=first + 1),
                "end": start + dt.timedelta(hours=first + 5),
                "hours": 4,
            }
        )
    return pa.Table.from_pylist(rows, schema=schema)


def _savings(schema, currency: str, start, days: int, index: int):
    import datetime as dt
    from decimal import Decimal

    import pyarrow as pa

    at = start + dt.timedelta(days=days)
    rows = []
    for order, kind in enumerate(("release_idle", "share", "scale_down", "spot", "reserve")):
        monthly = Decimal(1000 + 37 * index + 11 * order).quantize(Decimal("0.000001"))
        rows.append(
            {
                "kind": kind,
                "scope": "{}",
                "monthly": monthly,
                "currency": currency,
                "at": at,
                "net_monthly": Decimal(0) if kind == "release_idle" else monthly,
                "cash": kind != "release_idle",
                "reclaimed_monthly": monthly if kind == "release_idle" else Decimal(0),
                "blocked": "no spot capacity" if kind == "spot" and index % 4 == 0 else None,
                "order": order,
            }
        )
    return pa.Table.from_pylist(rows, schema=schema)


# --------------------------------------------------------------------------- the sides


def run_gpuwatch(location: str, endpoint: str | None) -> dict:
    from gpuwatch.config.settings import ReportSettings
    from gpuwatch.report.fleet_html import write_fleet_report

    settings = ReportSettings(location=location, s3_endpoint_url=endpoint, s3_region=REGION)
    started = time.perf_counter()
    written = write_fleet_report(settings, WEEK)
    wall = time.perf_counter() - started
    figures = written.figures
    totals = {line.currency: [str(line.cost), str(line.idle_cost)] for line in figures.headlines}

    def money(rows: list) -> dict[str, list[str]]:
        return {
            f"{row.key}|{row.currency}": [
                _money(row.cost),
                _money(row.idle_cost),
                _money(row.previous_cost),
                _money(row.previous_idle_cost),
            ]
            for row in rows
            if row.cost is not None or row.previous_cost is not None
        }

    return {
        "wall_s": wall,
        "peak_rss_mib": peak_rss_mib(),
        "totals": totals,
        "not_reported": [row.cluster for row in figures.not_reported],
        "breakdowns": {
            "clusters": money([row for row in figures.clusters if row.reported]),
            "teams": money(figures.teams),
            "pools": money(figures.pools),
            "levers": {
                f"{row.kind}|{row.currency}": [
                    _money(row.gross_monthly),
                    _money(row.net_monthly),
                    _money(row.blocked_monthly or None),
                ]
                for row in figures.levers
            },
        },
    }


def _money(amount: object) -> str:
    """An amount as both sides print it: six places, or "-" for none."""
    if amount is None or (isinstance(amount, float) and math.isnan(amount)):
        return "-"
    return f"{amount:.6f}"


def filesystem(location: str, endpoint: str | None) -> tuple[Any, str]:
    """pyarrow's filesystem of ``location`` and the dataset's root in it; on S3 with
    the bench's own credentials, and allowed to create the bucket (for the upload)."""
    import pyarrow.fs as pafs

    if not location.startswith("s3://"):
        return pafs.LocalFileSystem(), location
    s3 = pafs.S3FileSystem(
        access_key=CHILD_ENV["AWS_ACCESS_KEY_ID"],
        secret_key=CHILD_ENV["AWS_SECRET_ACCESS_KEY"],
        endpoint_override=endpoint,
        region=REGION,
        scheme="http",
        allow_bucket_creation=True,
    )
    return s3, location.removeprefix("s3://")


def run_pandas(location: str, endpoint: str | None) -> dict:
    import pandas as pd
    import pyarrow.fs as pafs

    fs, root = filesystem(location, endpoint)
    started = time.perf_counter()
    weeks = [("week", "in", [WEEK, PREVIOUS])]

    def read(table: str, columns: list[str]) -> pd.DataFrame:
        return pd.read_parquet(
            f"{root}/table={table}",
            columns=columns,
            filters=weeks,
            partitioning="hive",
            dtype_backend="pyarrow",
            filesystem=fs,
        )

    money = ["cost", "idle_cost"]
    hourly = read(
        "gpu_hourly",
        ["cluster", "week", "currency", "pool", "device_id", "util_mean_ratio", *money],
    )
    by_cluster = hourly.groupby(["cluster", "currency", "week"], observed=True).agg(
        gpus=("device_id", "nunique"),
        gpu_hours=("device_id", "size"),
        cost=("cost", "sum"),
        idle_cost=("idle_cost", "sum"),
        util=("util_mean_ratio", "mean"),
    )
    by_pool = hourly.groupby(["pool", "currency", "week"], observed=True)[money].sum()
    del hourly
    holders = read("holder_hourly", ["team", "currency", "week", "share_ratio", *money])
    by_team = holders.groupby(["team", "currency", "week"], observed=True, dropna=False).agg(
        gpu_hours=("share_ratio", "sum"), cost=("cost", "sum"), idle_cost=("idle_cost", "sum")
    )
    del holders
    savings = read(
        "savings",
        [
            "cluster",
            "week",
            "kind",
            "currency",
            "monthly",
            "net_monthly",
            "reclaimed_monthly",
            "blocked",
        ],
    )
    savings["blocked_monthly"] = savings["monthly"].where(savings["blocked"].notna())
    plan = savings.groupby(["cluster", "currency", "week"], observed=True)[
        ["net_monthly", "reclaimed_monthly", "blocked_monthly"]
    ].sum()
    levers = (
        savings[savings["week"] == WEEK]
        .groupby(["kind", "currency"], observed=True)[["monthly", "net_monthly", "blocked_monthly"]]
        .sum()
    )
    findings = read("findings", ["cluster", "team", "pool", "rule", "severity", "week", "hours"])
    found = findings.groupby(
        ["cluster", "team", "pool", "rule", "severity", "week"], observed=True, dropna=False
    )["hours"].agg(["size", "sum"])
    files = fs.get_file_info(pafs.FileSelector(f"{root}/table=gpu_hourly", recursive=True))
    parts = [Path(f.path).parts for f in files if f.path.endswith(".parquet")]
    listed = {(p[-3][len("cluster=") :], p[-2][len("week=") :]) for p in parts}
    reported = {cluster for cluster, week in listed if week == WEEK}
    not_reported = sorted({c for c, week in listed if week < WEEK} - reported)
    wall = time.perf_counter() - started
    this_week = by_cluster.xs(WEEK, level="week").groupby(level="currency")[money].sum()
    totals = {
        currency: [f"{row.cost:.6f}", f"{row.idle_cost:.6f}"]
        for currency, row in this_week.iterrows()
    }
    assert len(plan) and len(found)

    def by_week(frame: pd.DataFrame, missing: str) -> dict[str, list[str]]:
        """Rows ``(key, currency, week)`` -> ``key|currency``: this week's cost and idle
        cost, then the previous week's."""
        out: dict[str, list[str]] = {}
        for (key, currency, week), row in frame[money].iterrows():
            name = missing if pd.isna(key) else key
            found = out.setdefault(f"{name}|{currency}", ["-"] * 4)
            at = 0 if week == WEEK else 2
            found[at : at + 2] = [
                _money(None if pd.isna(value) else value) for value in (row.cost, row.idle_cost)
            ]
        return out

    from gpuwatch.report.figures.columns import NO_POOL, NO_TEAM

    return {
        "wall_s": wall,
        "peak_rss_mib": peak_rss_mib(),
        "totals": totals,
        "not_reported": not_reported,
        "breakdowns": {
            "clusters": {
                k: v for k, v in by_week(by_cluster, "-").items() if k.split("|")[0] in reported
            },
            "teams": by_week(by_team, NO_TEAM),
            "pools": by_week(by_pool, NO_POOL),
            "levers": {
                f"{kind}|{currency}": [
                    *(_money(None if pd.isna(v) else v) for v in (row.monthly, row.net_monthly)),
                    # pandas adds up no blocked lever to 0, SQL to NULL: none either way.
                    _money(row.blocked_monthly if row.blocked_monthly else None),
                ]
                for (kind, currency), row in levers.iterrows()
            },
        },
    }


def child(side: str, location: str, endpoint: str | None) -> dict:
    command = [sys.executable, __file__, "--side", side, "--location", location]
    if endpoint:
        command += ["--endpoint", endpoint]
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=3600, check=False, env=CHILD_ENV
    )
    if run.returncode != 0:
        raise SystemExit(f"{side} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--gpus", type=int, default=1000, help="GPUs per cluster.")
    parser.add_argument("--days", type=int, default=7, choices=range(1, 8))
    parser.add_argument("--no-baseline", action="store_true", help="Measure gpuwatch only.")
    parser.add_argument(
        "--object-store",
        action="store_true",
        help="Both sides read the dataset from S3 (moto's server on loopback, the dataset "
        "uploaded before anything is timed) instead of the folder.",
    )
    parser.add_argument("--side", choices=("gpuwatch", "pandas"), help=argparse.SUPPRESS)
    parser.add_argument("--location", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run = run_gpuwatch if args.side == "gpuwatch" else run_pandas
        print(json.dumps(run(args.location, args.endpoint)))
        return

    folder = dataset_folder(args.clusters, args.gpus, args.days)
    generate(folder, args.clusters, args.gpus, args.days)
    with ExitStack() as stack:
        location, endpoint = str(folder), None
        if args.object_store:
            location, endpoint = stack.enter_context(uploaded(folder))
        compare(args, folder, location, endpoint)


@contextmanager
def uploaded(folder: Path) -> Iterator[tuple[str, str]]:
    """The dataset in a bucket of moto's S3 server on loopback, for the time of the
    block: its location and endpoint."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3, _ = filesystem("s3://fleet", endpoint)
        s3.create_dir("fleet")
        began = time.perf_counter()
        pafs.copy_files(str(folder), "fleet/gpuwatch", destination_filesystem=s3, use_threads=True)
        print(f"dataset uploaded to {endpoint} in {time.perf_counter() - began:.0f} s (not timed)")
        yield "s3://fleet/gpuwatch", endpoint
    finally:
        server.stop()


def compare(args: argparse.Namespace, folder: Path, location: str, endpoint: str | None) -> None:
    gpu_hours = args.clusters * args.gpus * args.days * 24
    size_mib = sum(p.stat().st_size for p in folder.rglob("*.parquet")) / 2**20
    print(
        f"{args.clusters} clusters x {args.gpus} GPUs x {args.days} days: {gpu_hours:,} "
        f"GPU-hours this week, {gpu_hours + RETIRED * args.gpus * args.days * 24:,} the week "
        f"before; dataset {size_mib:,.0f} MiB in {folder}"
    )
    ours = child("gpuwatch", location, endpoint)
    print(f"gpuwatch (DuckDB)  {ours['wall_s']:7.1f} s  {ours['peak_rss_mib']:7.0f} MiB")
    result = {
        "bench": "fleet",
        "clusters": args.clusters,
        "gpus": args.gpus,
        "days": args.days,
        "gpu_hours": gpu_hours,
        "object_store": args.object_store,
        "wall_s": round(ours["wall_s"], 2),
        "peak_rss_mib": round(ours["peak_rss_mib"]),
        "baseline_s": None,
        "speedup": None,
    }
    if not args.no_baseline:
        theirs = child("pandas", location, endpoint)
        print(f"pandas             {theirs['wall_s']:7.1f} s  {theirs['peak_rss_mib']:7.0f} MiB")
        same = theirs["totals"] == ours["totals"]
        print(
            f"same cost and idle cost per currency: {same}; same clusters not reported: "
            f"{theirs['not_reported'] == ours['not_reported']}"
        )
        if not same:
            print(f"  gpuwatch {ours['totals']}\n  pandas   {theirs['totals']}")
        for name, mine in ours["breakdowns"].items():
            other = theirs["breakdowns"][name]
            differ = sorted(k for k in mine.keys() | other.keys() if mine.get(k) != other.get(k))
            same = same and not differ
            print(
                f"  by {name}: {len(mine)} rows, "
                + (f"{len(differ)} differ, e.g. {differ[:3]}" if differ else "identical")
            )
            for key in differ[:3]:
                print(f"    {key}: gpuwatch {mine.get(key)}, pandas {other.get(key)}")
        speedup = theirs["wall_s"] / ours["wall_s"]
        memory = theirs["peak_rss_mib"] / ours["peak_rss_mib"]
        print(f"gpuwatch: {speedup:.1f}x the speed, 1/{memory:.1f} of the peak memory")
        result.update(
            baseline_s=round(theirs["wall_s"], 2),
            baseline_peak_rss_mib=round(theirs["peak_rss_mib"]),
            speedup=round(speedup, 2),
            memory_ratio=round(memory, 2),
            same_figures=same,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
