"""The weekly report as one self-contained HTML file, rendered with Jinja2.

What the page says is decided by ``figures`` (the numbers) and ``charts`` (the images);
how it looks is decided by ``weekly.html.j2``, which users may replace
(``report.templates``) without touching Python. The page loads nothing: no script, font,
stylesheet or image from anywhere, so it opens offline and as a Slack attachment.

Every money figure is an element carrying its figure id, currency and exact decimal
(``data-money="cost.team.ml-research" data-currency="USD" data-value="1234.560000"``),
so that a test, or a sceptical reader with DuckDB, can check each against the Parquet
sums. The ids:

==========================  ========================================================
``headline.cost``           sum of ``gpu_hourly.cost`` (``previous.cost``: last week's)
``headline.idle_cost``      sum of ``gpu_hourly.idle_cost`` (``previous.idle_cost``)
``headline.net_savings``    sum of ``savings.net_monthly`` (``previous.net_savings``)
``headline.reclaimed``      sum of ``savings.reclaimed_monthly``
``headline.blocked``        sum of ``savings.monthly`` where ``blocked`` is set
``cost.team.<team>``        ``holder_hourly.cost`` of the team (``cost.pool.<pool>``:
                            ``gpu_hourly.cost`` of the pool)
``idle.team.<team>``        ``holder_hourly.idle_cost`` of the team (``idle.workload.<w>``)
``saving.<row>``            ``savings.monthly`` (gross) of the savings table's row
``saving_net.<row>``        its ``net_monthly`` (a cash lever)
``saving_reclaimed.<row>``  its ``reclaimed_monthly`` (reclaimed capacity)
``realized.<col>.<row>``    the ``realized`` table's row: ``projected``, ``measured``,
                            ``before``, ``after`` (``projected_monthly``,
                            ``measured_monthly``, ``before_cost``, ``after_cost``)
``headline.realized``       sum of ``realized.measured_monthly``
                            (``headline.realized_projected``: of ``projected_monthly``)
==========================  ========================================================

A missing team, pool or workload is keyed as ``figures.NO_TEAM`` and friends.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from gpuwatch.config.resources import shipped_dir
from gpuwatch.config.settings import ReportSettings
from gpuwatch.model.errors import ConfigError
from gpuwatch.report import charts
from gpuwatch.report.data import ReportData
from gpuwatch.report.figures import (
    CostRow,
    IdleRow,
    ReportFigures,
    compute_figures,
    relative_change,
)
from gpuwatch.report.html_rows import table_rows
from gpuwatch.report.schema import SCHEMA_VERSION
from gpuwatch.report.text import (
    change_text,
    count_text,
    exact_decimal,
    hours_text,
    json_text,
    money_text,
    percent_text,
    share_hours_text,
    when_text,
)

TEMPLATE = "weekly.html.j2"
CHART_BARS = 12
"""Bars per chart (the tables beside them list every row)."""


class ReportTemplateError(ConfigError):
    """A report template is missing, does not parse, or fails while rendering."""


def render_html(data: ReportData, settings: ReportSettings) -> str:
    """The report page for ``data``, with the templates of ``settings.templates`` (which
    may hold only some of them: the others are the shipped ones) or the shipped ones."""
    env = template_environment(settings.templates)
    figures = compute_figures(data, heatmap_max_rows=settings.heatmap_max_rows)
    try:
        template = env.get_template(TEMPLATE)
        return template.render(
            f=figures,
            charts=_charts(figures),
            rows=table_rows(figures),
            period=_period_text(figures),
            schema_version=SCHEMA_VERSION,
            near_oom_ratio=figures.memory.near_oom_ratio,
        )
    except jinja2.TemplateSyntaxError as exc:
        where = f"{exc.filename or exc.name or TEMPLATE}, line {exc.lineno}"
        raise ReportTemplateError(f"report template {where}: {exc.message}") from exc
    except Exception as exc:
        where = _template_frame(exc, env)
        if where is None:
            raise
        raise ReportTemplateError(f"report template {where}: {type(exc).__name__}: {exc}") from exc


def template_environment(folder: Path | None) -> jinja2.Environment:
    """Jinja2 with autoescape and ``StrictUndefined`` (a misspelt name is an error, not
    an empty cell), looking in ``folder`` first, then in the shipped templates."""
    shipped = shipped_dir("reports")
    search = [shipped]
    if folder is not None:
        if not (folder / TEMPLATE).is_file():
            raise ReportTemplateError(
                f"report templates {folder} (report.templates): expected {TEMPLATE} there"
            )
        search.insert(0, folder)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(path) for path in search]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        money=money_text,
        exact=exact_decimal,
        pct=percent_text,
        change=change_text,
        count=count_text,
        hours=hours_text,
        share_hours=share_hours_text,
        when=when_text,
        jsonish=json_text,
    )
    env.globals.update(relative_change=relative_change)
    return env


# --------------------------------------------------------------------------- formatting


def _period_text(figures: ReportFigures) -> dict[str, str]:
    period = figures.period
    last = period.end - timedelta(hours=1)
    return {
        "label": period.label,
        "dates": f"{period.start:%a %d %b %Y} – {last:%a %d %b %Y} (UTC)",
        "range": f"{_iso(period.start)} to {_iso(period.end)}",
        "generated": _iso(figures.generated_at),
    }


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


# --------------------------------------------------------------------------- charts


def _charts(figures: ReportFigures) -> dict[str, Any]:
    """Every chart as markup, money bars per currency."""
    return {
        "cost_by_team": _money_charts(figures.cost_by_team, "cost.team", "Cost by team"),
        "cost_by_pool": _money_charts(figures.cost_by_pool, "cost.pool", "Cost by pool"),
        "idle_by_team": _money_charts(figures.idle_by_team, "idle.team", "Idle cost by team"),
        "idle_by_workload": _money_charts(
            figures.idle_by_workload, "idle.workload", "Idle cost by workload"
        ),
        "headroom": Markup(
            charts.histogram(
                figures.memory.edges,
                figures.memory.counts,
                "GPU-hours by highest memory use in the hour (5 % bins)"
                + (
                    f"; red: above {figures.memory.near_oom_ratio:.0%}, near OOM"
                    if figures.memory.near_oom_ratio is not None
                    else ""
                ),
                highlight_above=figures.memory.near_oom_ratio,
            )
        ),
        "heatmap": Markup(
            charts.heatmap_svg(
                figures.heatmap,
                f"Utilization per GPU and hour, {figures.period.label}"
                + (
                    f"; each row the mean of {figures.heatmap.gpus_per_row} GPUs"
                    if figures.heatmap.grouped
                    else ""
                ),
            )
        ),
        "heatmap_legend": Markup(charts.heatmap_legend_svg()),
    }


def _money_charts(
    rows: Sequence[CostRow | IdleRow], prefix: str, title: str
) -> list[tuple[str, Markup]]:
    """One bar chart per currency: the largest ``CHART_BARS`` rows."""
    out = []
    for currency in sorted({row.currency for row in rows}):
        mine = [row for row in rows if row.currency == currency]
        bars = [
            charts.Bar(
                label=row.key,
                value=float(amount(row)),
                text=money_text(amount(row), currency),
                attrs={
                    "data-money": f"{prefix}.{row.key}",
                    "data-currency": currency,
                    "data-value": exact_decimal(amount(row)),
                },
            )
            for row in mine[:CHART_BARS]
        ]
        more = f" (largest {CHART_BARS} of {len(mine)})" if len(mine) > CHART_BARS else ""
        out.append((currency, Markup(charts.bar_chart(bars, f"{title}, {currency}{more}"))))
    return out


def amount(row: CostRow | IdleRow) -> Decimal:
    """A cost row's cost, an idle row's idle cost."""
    return row.cost if isinstance(row, CostRow) else row.idle_cost


# --------------------------------------------------------------------------- errors


def _template_frame(exc: BaseException, env: jinja2.Environment) -> str | None:
    """``<file>, line <n>`` of the innermost template frame of ``exc``'s traceback
    (Jinja2 rewrites tracebacks so that template lines appear as frames); None when the
    error did not happen in a template."""
    loader = env.loader
    folders = loader.searchpath if isinstance(loader, jinja2.FileSystemLoader) else []
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if any(Path(frame.filename).is_relative_to(folder) for folder in folders):
            return f"{frame.filename}, line {frame.lineno}"
    return None
