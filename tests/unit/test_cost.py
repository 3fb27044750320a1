"""Cost allocation by hand, to the cent, and the totals that must reconcile."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.cost import allocate_cost
from gpuwatch.analysis.pricing import PriceBook, PriceBookFile, load_price_book
from gpuwatch.model.cluster import Node, Pod
from gpuwatch.model.errors import ConfigError
from gpuwatch.model.findings import GpuHolder
from tests.builders import AT, device

BOOK = PriceBook(
    PriceBookFile.model_validate(
        {
            "version": 1,
            "currency": "CNY",
            "models": [
                {
                    "name": "NVIDIA A100-SXM4-80GB",
                    "memory_gib": 80,
                    "prices": {"on-demand": "32.00", "spot": "9.60", "reserved": "19.20"},
                },
                {"name": "Tesla T4", "memory_gib": 16, "prices": {"on-demand": "6.00"}},
            ],
            "overrides": [{"pool": "us-pool", "prices": {"on-demand": "2.50"}, "currency": "USD"}],
        }
    )
)


def ctx(index=0, holders=(), model="NVIDIA-A100-SXM4-80GB", pool="gpu-training", node=None):
    node = node or Node("n1", {"pool": pool})
    return GpuContext(
        node_name=node.name,
        device=device(index, node=node.name),
        node=node,
        pool=pool,
        capacity_type="on-demand",
        model=model,
        holders=tuple(holders),
        attribution="exact" if holders else "none",
    )


def holder(pod="p", share=1.0, team="team-a"):
    return GpuHolder("team-a", pod, f"Job/team-a/{pod}", team, share)


def pod(name="p", started=None):
    return Pod("team-a", name, "n1", "Running", started_at=started)


def test_whole_gpu_and_unallocated_remainder():
    report = allocate_cost(
        [ctx(0, [holder("a")]), ctx(1)], np.array([0.25, 0.0]), [pod("a")], BOOK, AT, 3600
    )
    a, free = report.lines
    assert (a.pod, a.gpu_hours, a.cost, a.idle_cost) == (
        "a",
        1.0,
        Decimal("32.00"),
        Decimal("24.00"),
    )
    assert (free.pod, free.cost, free.idle_cost) == (None, Decimal("32.00"), Decimal("32.00"))
    (total,) = report.totals
    assert total.capacity_cost == Decimal("64.00")
    assert total.allocated_cost + total.unallocated_cost == total.capacity_cost
    teams = {g.key: g for g in report.groups["team"]}
    assert teams["team-a"].cost == Decimal("32.00") and teams["(unallocated)"].cost == Decimal(
        "32.00"
    )


def test_pod_that_started_inside_the_window():
    started = AT - timedelta(minutes=15)
    report = allocate_cost(
        [ctx(0, [holder("a")])], np.array([1.0]), [pod("a", started)], BOOK, AT, 3600
    )
    a, free = report.lines
    assert a.gpu_hours == pytest.approx(0.25) and a.cost == Decimal("8.00")
    assert free.gpu_hours == pytest.approx(0.75) and free.cost == Decimal("24.00")
    assert a.idle_cost == Decimal("0.00")


def test_shared_gpu_is_split_by_memory_share():
    t4 = ctx(0, [holder("x", 0.4), holder("y", 0.2)], model="Tesla T4", pool="gpu-inference")
    report = allocate_cost([t4], np.array([0.5]), [pod("x"), pod("y")], BOOK, AT, 3600)
    assert [(line.pod, line.cost) for line in report.lines] == [
        ("x", Decimal("2.40")),
        ("y", Decimal("1.20")),
        (None, Decimal("2.40")),
    ]
    assert report.totals[0].capacity_cost == Decimal("6.00")


def test_gpu_without_price_is_unpriced_not_free():
    report = allocate_cost([ctx(0, model="NVIDIA H100")], np.array([0.1]), [], BOOK, AT, 3600)
    assert report.lines[0].cost is None and report.totals == ()
    (unpriced,) = report.unpriced
    assert "not in the price book" in unpriced["reason"]


def test_currencies_are_never_added():
    report = allocate_cost(
        [ctx(0, [holder("a")]), ctx(1, [holder("b")], pool="us-pool")],
        np.array([0.5, 0.5]),
        [pod("a"), pod("b")],
        BOOK,
        AT,
        3600,
    )
    assert [(t.currency, t.capacity_cost) for t in report.totals] == [
        ("CNY", Decimal("32.00")),
        ("USD", Decimal("2.50")),
    ]
    assert {g.currency for g in report.groups["team"]} == {"CNY", "USD"}


def test_node_that_joined_inside_the_window():
    node = Node("late", {"pool": "gpu-training"}, created_at=AT - timedelta(minutes=30))
    report = allocate_cost([ctx(0, node=node)], np.array([np.nan]), [], BOOK, AT, 3600)
    (line,) = report.lines
    assert line.gpu_hours == pytest.approx(0.5) and line.cost == Decimal("16.00")
    assert line.idle_cost is None  # no measurement, no idle figure


def test_gpu_missing_from_metrics_is_still_priced():
    report = allocate_cost([ctx(0), ctx(1)], np.array([0.0]), [], BOOK, AT, 3600)
    assert [line.cost for line in report.lines] == [Decimal("32.00"), Decimal("32.00")]


@settings(max_examples=100, deadline=None)
@given(
    gpus=st.lists(
        st.tuples(
            st.lists(st.floats(0.01, 1.0), max_size=3),
            st.floats(0.0, 1.0),
            st.sampled_from(["gpu-training", "us-pool"]),
            st.integers(0, 7200),
        ),
        min_size=1,
        max_size=12,
    ),
    window_s=st.integers(60, 7 * 86400),
)
def test_totals_reconcile_to_the_cent(gpus, window_s):
    contexts, pods, utils = [], [], []
    for i, (shares, util, pool, age_s) in enumerate(gpus):
        scale = max(sum(shares), 1.0)
        holders = [holder(f"p{i}-{j}", s / scale) for j, s in enumerate(shares)]
        contexts.append(ctx(i, holders, pool=pool))
        pods.extend(pod(h.pod, AT - timedelta(seconds=age_s)) for h in holders)
        utils.append(util)
    report = allocate_cost(contexts, np.array(utils), pods, BOOK, AT, window_s)
    for total in report.totals:
        assert total.capacity_cost == total.allocated_cost + total.unallocated_cost
        assert total.idle_cost <= total.capacity_cost
        for dim, groups in report.groups.items():
            in_currency = [g for g in groups if g.currency == total.currency]
            assert sum(g.cost for g in in_currency) == total.capacity_cost, dim
    # Capacity is what every GPU-hour costs, give or take a cent per line item.
    expected = sum(
        Decimal(str(window_s / 3600))
        * (Decimal("32") if c.pool == "gpu-training" else Decimal("2.5"))
        for c in contexts
    )
    assert abs(sum(t.capacity_cost for t in report.totals) - expected) <= Decimal("0.01") * len(
        report.lines
    )


def test_shipped_price_book_is_valid_and_marked_as_example():
    book = load_price_book()
    assert book.is_example
    price, _ = book.price("NVIDIA-A100-SXM4-80GB", "spot")
    assert price is not None and price.currency == "CNY" and price.per_gpu_hour == Decimal("9.6")


HEAD = "version: 1\ncurrency: CNY\nmodels:\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            HEAD + "  - {name: A, memory_gib: 8, prices: {ondemand: 1}}\n",
            "models[0].prices.ondemand",
        ),
        ("version: 1\ncurrency: yuan\nmodels: []\n", "currency"),
        ("version: 1\ncurrency: CNY\nmodels:\n  - {name: A, memory_gib: -1}\n", "memory_gib"),
        (
            "version: 1\ncurrency: CNY\nmodels:\n  - {name: A, memory_gib: 8, price: 3}\n",
            "unknown field",
        ),
        (
            HEAD + "  - {name: A-1, memory_gib: 8}\n  - {name: a 1, memory_gib: 8}\n",
            "also names",
        ),
    ],
)
def test_price_book_errors_name_file_line_and_field(tmp_path, text, expected):
    path = tmp_path / "pricing.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_price_book(path)
    assert any(str(path) in p and expected in p for p in info.value.problems), info.value.problems
