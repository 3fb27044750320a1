"""The figures' grouping by integer codes (``figures.columns``) against pyarrow's
``group_by`` over the same rows, as the figures were first computed: same keys, same
money to the micro-unit, same device order, on small tables with nulls, NaN, gaps, runs
and no runs, several currencies, a key spelled like the name of a missing one, and money
too large for int64 sums."""

from __future__ import annotations

import importlib
import math
from datetime import timedelta
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from gpuwatch.report.figures import NO_POOL, NO_TEAM, NO_WORKLOAD
from gpuwatch.report.figures.columns import (
    NO_CURRENCY,
    Columns,
    key_codes,
    money_by_currency,
    rows_of,
    value_codes,
)
from gpuwatch.report.figures.money import cost_by, idle_by
from gpuwatch.report.schema import GPU_HOURLY, HOLDER_HOURLY
from tests.report_tables import PERIOD, gap_row, holders_of, hourly_row, hourly_table

heatmap_module = importlib.import_module("gpuwatch.report.figures.heatmap")
HOUR = timedelta(hours=1)


def fleet(seed: int, *, shuffle: bool) -> pa.Table:
    """A week's ``gpu_hourly`` of a few GPUs: teams, pools and currencies that change and
    go missing, gaps, partial hours, unpriced hours; GPU by GPU (runs) or shuffled."""
    rng = np.random.default_rng(seed)
    rows = []
    teams = ["a", "b", NO_TEAM, None, "Z"]
    for gpu in range(7):
        pool = [None, "p1", "p2", "p1"][gpu % 4]
        for hour in range(0, 60, 1 + gpu % 3):
            kwargs = {
                "gpu": f"GPU-{gpu}",
                "node": f"node-{gpu // 2}",
                "index": None if gpu == 6 else gpu % 2,
                "pool": pool if hour != 7 else "p0",
                "team": teams[int(rng.integers(len(teams)))],
                "workload": None if hour % 5 == 0 else f"Job/w{gpu % 3}",
                "price": None if gpu == 5 and hour % 2 else ["2.500000", "0.333333"][gpu % 2],
                "currency": ["USD", "EUR", None][gpu % 3] if gpu != 4 else "USD",
            }
            if hour % 11 == 3:
                rows.append(gap_row(hour, **kwargs))
            else:
                util = None if hour % 13 == 0 else float(rng.random())
                coverage = float(rng.choice([1.0, 0.5, 0.25]))
                rows.append(hourly_row(hour, util=util, coverage=coverage, **kwargs))
    if shuffle:
        rows = [rows[i] for i in rng.permutation(len(rows))]
    return hourly_table(rows)


def reference_cost_by(table: pa.Table, column: str, missing: str) -> dict:
    priced = table.filter(pc.is_valid(table["cost"]))
    grouped = (
        priced.set_column(
            priced.schema.get_field_index(column), column, pc.fill_null(priced[column], missing)
        )
        .set_column(
            priced.schema.get_field_index("currency"),
            "currency",
            pc.fill_null(priced["currency"], NO_CURRENCY),
        )
        .group_by([column, "currency"])
        .aggregate([("cost", "sum"), ("coverage_ratio", "count")])
    )
    return {
        (key, currency): cost
        for key, currency, cost in zip(
            grouped[column].to_pylist(),
            grouped["currency"].to_pylist(),
            grouped["cost_sum"].to_pylist(),
            strict=True,
        )
    }


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_grouped_money_is_pyarrows(seed, shuffle):
    hourly = fleet(seed, shuffle=shuffle)
    holders = holders_of(hourly)
    for table, column, missing in [
        (hourly, "pool", NO_POOL),
        (holders, "team", NO_TEAM),
        (holders, "workload", NO_WORKLOAD),
    ]:
        rows = cost_by(table, column, missing)
        expected = reference_cost_by(table, column, missing)
        assert {(r.key, r.currency): r.cost for r in rows} == expected
        assert [r.currency for r in rows] == sorted(r.currency for r in rows)
        for row in rows:
            mine = table.filter(pc.is_valid(table["cost"]))
            mine = mine.filter(
                pc.and_(
                    pc.equal(pc.fill_null(mine[column], missing), row.key),
                    pc.equal(pc.fill_null(mine["currency"], NO_CURRENCY), row.currency),
                )
            )
            share = mine["share_ratio"] if "share_ratio" in mine.column_names else None
            hours = pc.sum(share).as_py() if share is not None else mine.num_rows
            assert row.gpu_hours == pytest.approx(hours)
        idle = idle_by(table, column, missing, with_teams=True)
        measured = table.filter(pc.is_valid(table["idle_cost"]))
        expected_idle = reference_cost_by(
            measured.set_column(
                measured.schema.get_field_index("cost"), "cost", measured["idle_cost"]
            ),
            column,
            missing,
        )
        assert {(r.key, r.currency): r.idle_cost for r in idle} == expected_idle
        for row in idle:
            mine = measured.filter(pc.equal(pc.fill_null(measured[column], missing), row.key))
            mine = mine.filter(pc.equal(pc.fill_null(mine["currency"], NO_CURRENCY), row.currency))
            teams = set(pc.fill_null(mine["team"], NO_TEAM).to_pylist())
            assert row.teams == tuple(sorted(teams))
            seen = sum(
                float(cost) * coverage
                for cost, coverage in zip(
                    mine["cost"].to_pylist(), mine["coverage_ratio"].to_pylist(), strict=True
                )
                if cost is not None
            )
            assert row.measured_cost == pytest.approx(seen)


def test_money_by_currency_on_a_table_and_on_its_columns():
    hourly = fleet(4, shuffle=True)
    expected = reference_cost_by(
        hourly.append_column("none", pa.nulls(hourly.num_rows, pa.string())), "none", "-"
    )
    by_currency = {currency: cost for (_, currency), cost in expected.items()}
    assert money_by_currency(hourly, "cost") == by_currency
    assert money_by_currency(Columns(hourly), "cost") == by_currency
    assert money_by_currency(hourly.slice(0, 0), "cost") == {}
    assert cost_by(hourly.slice(0, 0), "pool", NO_POOL) == ()


def test_money_too_large_for_int64_sums_is_summed_by_pyarrow():
    big = Decimal("999999999999.999999")  # 10^18 - 1 units: fits, but two of them do not
    rows = [hourly_row(hour, gpu=f"GPU-{hour % 2}", team="a", price=str(big)) for hour in range(12)]
    hourly = hourly_table(rows)
    assert money_by_currency(hourly, "cost") == {"USD": big * 12}
    (row,) = cost_by(holders_of(hourly), "team", NO_TEAM)
    assert row.cost == big * 12


def test_decimals_beyond_int64_are_exact():
    kind = pa.decimal128(38, 6)
    schema = pa.schema([pa.field("cost", kind), pa.field("currency", pa.string())])
    values = [Decimal("12345678901234567890.123456"), Decimal("-1.000001"), None]
    table = pa.table({"cost": values, "currency": ["USD", "USD", "USD"]}, schema=schema)
    assert money_by_currency(table, "cost") == {"USD": values[0] + values[1]}


def test_key_codes_name_a_missing_key_once():
    for array in [
        pa.chunked_array([["a", None, "(none)"], [None, "a"]]),
        pa.chunked_array([["a"] * 100 + [None] * 100 + ["(none)"] * 100]),  # runs
        pa.chunked_array([], pa.string()),
    ]:
        keys = key_codes(array, "(none)")
        assert len(set(keys.names)) == len(keys.names)
        decoded = [keys.names[code] for code in keys.codes.tolist()]
        assert decoded == pc.fill_null(array, "(none)").to_pylist()


@pytest.mark.parametrize("size", [0, 1, 2, 5000, 200_000])
def test_value_codes_with_and_without_runs(size):
    rng = np.random.default_rng(size)
    runs = np.repeat(rng.integers(0, 9, size // 50 + 1), 50)[:size].tolist()
    scattered = rng.integers(0, 9, size).tolist()
    for values in (runs, scattered):
        array = pa.array([None if v == 0 else f"k{v}" for v in values], pa.string())
        codes, names = value_codes(array)
        assert [names[c] for c in codes.tolist()] == array.to_pylist()
        assert len(set(names)) == len(names)


def test_rows_of_converts_timestamps_as_to_pylist_does():
    starts = [PERIOD.start.replace(hour=h % 5) for h in range(100)] + [None]
    table = pa.table({"start": pa.array(starts, pa.timestamp("s", tz="UTC")), "n": range(101)})
    assert rows_of(table, ["start", "n"]) == [tuple(r.values()) for r in table.to_pylist()]
    assert rows_of(table, []) == [()] * 101


@pytest.mark.parametrize("shuffle", [False, True])
def test_heatmap_devices_are_those_pyarrow_finds(shuffle):
    hourly = fleet(5, shuffle=shuffle)
    # A device whose pool changes (the least is kept) and a MIG instance with no index.
    extra = [
        hourly_row(1, gpu="GPU-x", node="node-9", pool="p9"),
        hourly_row(2, gpu="GPU-x", node="node-9", pool="p3"),
        hourly_row(1, gpu="GPU-m", node="node-9", index=None, pool=None, mig_profile="1g.10gb"),
    ]
    hourly = pa.concat_tables([hourly, hourly_table(extra)])
    codes, devices = heatmap_module._sorted_devices(hourly)
    grouped = hourly.group_by("device_id").aggregate(
        [("pool", "min"), ("node", "min"), ("gpu_index", "min"), ("mig_profile", "min")]
    )
    expected = sorted(
        zip(
            grouped["device_id"].to_pylist(),
            grouped["pool_min"].to_pylist(),
            grouped["node_min"].to_pylist(),
            grouped["gpu_index_min"].to_pylist(),
            grouped["mig_profile_min"].to_pylist(),
            strict=True,
        ),
        key=lambda d: (d[1] is None, d[1] or "", d[2], d[3] is None, d[3] or 0, d[0]),
    )
    assert devices == [(d, p or NO_POOL, n, i, m) for d, p, n, i, m in expected]
    names = [devices[code][0] for code in codes.tolist()]
    assert names == hourly["device_id"].to_pylist()


def test_heatmap_cells_are_coverage_weighted_means():
    hourly = fleet(6, shuffle=True)
    heat = heatmap_module.heatmap(hourly, PERIOD)
    order = [device for device, *_ in heatmap_module._sorted_devices(hourly)[1]]
    assert heat.gpus == len(order) == 7 and not heat.grouped
    cells: dict[tuple[int, int], list[float]] = {}
    for device, hour, util, coverage in zip(
        hourly["device_id"].to_pylist(),
        hourly["hour"].to_pylist(),
        hourly["util_mean_ratio"].to_pylist(),
        hourly["coverage_ratio"].to_pylist(),
        strict=True,
    ):
        cell = cells.setdefault((order.index(device), (hour - PERIOD.start) // HOUR), [0.0, 0.0])
        if util is not None:
            cell[0] += util * coverage
            cell[1] += coverage
    for row in range(len(order)):
        for column in range(PERIOD.hours):
            total, weight = cells.get((row, column), (0.0, 0.0))
            if weight > 0:
                assert heat.values[row, column] == pytest.approx(total / weight)
            else:
                assert math.isnan(heat.values[row, column])


def test_schemas_used_here_are_the_reports():
    assert fleet(1, shuffle=False).schema.equals(GPU_HOURLY)
    assert holders_of(fleet(1, shuffle=False)).schema.equals(HOLDER_HOURLY)
