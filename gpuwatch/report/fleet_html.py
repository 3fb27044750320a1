"""The fleet report: every cluster's week on one self-contained HTML page.

``gpuwatch report --fleet`` runs the fleet queries (``fleet_query``) over the dataset a
fleet's clusters write to one location, arranges their rows (``fleet``), renders
``fleet.html.j2`` (users may replace it, as the weekly page's templates) and writes the
page next to the clusters' pages:

    <location>/html/fleet/week=<2026-W48>/report.html   (and html/fleet/latest.html)

Like the weekly page, it loads nothing (no script, font, stylesheet or image), and each
money figure carries its id, currency and exact decimal in ``data-`` attributes:

===============================  ===================================================
``headline.cost``                sum of ``gpu_hourly.cost`` of the week, per currency
                                 (``previous.cost``: of the week before;
                                 ``headline.idle_cost`` / ``previous.idle_cost``)
``headline.net_savings``         sum of ``savings.net_monthly`` (``previous.net_savings``)
``headline.reclaimed``           sum of ``savings.reclaimed_monthly``
``headline.blocked``             sum of ``savings.monthly`` where ``blocked`` is set
``cluster.<col>.<cluster>``      the cluster's ``cost``, ``idle``, ``previous`` (cost the
                                 week before), ``net``, ``reclaimed``, ``blocked``
``pool.<col>.<pool>``            ``gpu_hourly`` of the pool: ``cost``, ``idle``, ``previous``
``team.<col>.<team>``            the same from ``holder_hourly``
``lever.<col>.<kind>``           ``net`` and ``gross`` of the levers of that kind
===============================  ===================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gpuwatch.config.settings import ReportSettings
from gpuwatch.report.fleet import FleetFigures, fleet_figures
from gpuwatch.report.fleet_query import run_fleet_queries
from gpuwatch.report.html import template_environment
from gpuwatch.report.schema import SCHEMA_VERSION
from gpuwatch.report.store import ReportStore

TEMPLATE = "fleet.html.j2"


@dataclass(frozen=True)
class FleetWritten:
    """A written fleet page: where, and what it said in one line."""

    path: str
    figures: FleetFigures
    summary: str


def render_fleet_html(figures: FleetFigures, settings: ReportSettings) -> str:
    """The fleet page for ``figures``, with ``settings.templates`` before the shipped
    templates."""
    env = template_environment(settings.templates)
    return env.get_template(TEMPLATE).render(f=figures, schema_version=SCHEMA_VERSION)


def write_fleet_report(
    settings: ReportSettings,
    week: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FleetWritten:
    """Read the fleet's week (default: the newest one written) from ``settings.location``
    and write its page there; ReportStoreError when the location cannot be read.
    ``progress(done, total)``: the files downloaded, from object storage."""
    store = ReportStore.from_settings(settings)
    figures = fleet_figures(run_fleet_queries(store, week, progress))
    path = store.write_fleet_html(figures.week, render_fleet_html(figures, settings))
    return FleetWritten(path=path, figures=figures, summary=fleet_summary(figures))


def fleet_summary(figures: FleetFigures) -> str:
    """One line: the week, the clusters, the cost per currency, who did not report."""
    money = ", ".join(
        f"{line.currency} {line.cost:,.2f} (idle {line.idle_cost:,.2f})"
        for line in figures.headlines
    )
    missing = ", ".join(f"{row.cluster} (last {row.last_week})" for row in figures.not_reported)
    reported = len(figures.reporting)
    text = f"Fleet {figures.week}: {reported} cluster{'' if reported == 1 else 's'} reported; "
    text += f"cost {money or 'none'}"
    return text + (f"; not reported: {missing}" if missing else "")
