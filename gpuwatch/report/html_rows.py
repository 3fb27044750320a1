"""The rows of the page's long tables, written in Python rather than by template loops.

Their length grows with the fleet: at 10,000 GPUs a week has some 13,000 near-OOM
findings, 2,000 workloads with idle cost and 1,000 savings with their details, and a
Jinja2 loop spent most of the page's rendering on them (a filter call, an escape and a
``Markup`` per cell). Here each row is one format string over values escaped by
markupsafe, as the template's autoescape escapes them, and a moment of the period (a few
hundred distinct hours) is formatted once. The markup is exactly what
``weekly.html.j2``'s loops wrote (``tests/unit/test_report_rows.py`` renders both); the
template places each table's rows with ``{{ rows.<table> }}``, and a template of one's
own may still loop over the figures (``f``) itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from markupsafe import Markup
from markupsafe import escape as markup_escape

from gpuwatch.report.figures import IdleRow, NearOomFinding, ReportFigures, SavingRow
from gpuwatch.report.text import (
    exact_decimal,
    hours_text,
    json_text,
    money_text,
    percent_text,
    when_text,
)

DASH = "–"
"""What an empty cell shows."""


@dataclass(frozen=True)
class TableRows:
    """Each long table's rows (without the newline after the last), for the template."""

    near_oom: Markup
    idle_by_workload: Markup
    savings: Markup


def table_rows(figures: ReportFigures) -> TableRows:
    return TableRows(
        near_oom=near_oom_rows(figures.memory.findings),
        idle_by_workload=idle_workload_rows(figures.idle_by_workload),
        savings=saving_rows(figures.savings),
    )


def escape(value: object) -> str:
    """``value`` as text escaped as the template's autoescape escapes it: markupsafe's
    own ``escape``, so that the rows and the template can never escape differently."""
    return str(markup_escape(value))


def money_html(figure: str, amount: Decimal | None, currency: str) -> str:
    """The ``money`` macro of ``_macros.html.j2``: a money figure with its id, currency
    and exact value."""
    return (
        f'<span class="money" data-money="{escape(figure)}" data-currency="{escape(currency)}" '
        f'data-value="{escape(exact_decimal(amount))}">{escape(money_text(amount, currency))}'
        "</span>"
    )


def near_oom_rows(findings: Sequence[NearOomFinding]) -> Markup:
    when = _cached(when_text)
    return _lines(
        f"    <tr><td>{escape(row.workload or row.pod or DASH)}</td>"
        f"<td>{escape(row.team or DASH)}</td><td>{escape(row.node)}"
        f"{f'<br><code>{escape(row.gpu_uuid)}</code>' if row.gpu_uuid else ''}</td>\n"
        f"        <td>{when(row.start)}</td><td>{when(row.end)}</td>"
        f'<td class="num">{escape(row.hours)}</td>'
        f'<td class="num">{escape(percent_text(row.worst_value, 1))}</td></tr>\n'
        for row in findings
    )


def idle_workload_rows(rows: Sequence[IdleRow]) -> Markup:
    return _lines(
        f"    <tr><td>{escape(row.key)}</td><td>{escape(', '.join(row.teams))}</td>"
        f'<td class="num">'
        f"{money_html('idle.workload.' + row.key, row.idle_cost, row.currency)}</td>"
        f'<td class="num">{escape(percent_text(row.idle_ratio))}</td></tr>\n'
        for row in rows
    )


def saving_rows(savings: Sequence[SavingRow]) -> Markup:
    return _lines(_saving(number, s) for number, s in enumerate(savings, start=1))


def _saving(number: int, s: SavingRow) -> str:
    scope = "<br>".join(
        f"{escape(key)}: {escape(json_text(value))}"
        for key, value in s.scope.items()
        if value is not None
    )
    if s.blocked:
        status = '<span class="status status-refused">blocked</span>'
    else:
        status = "reclaimed capacity" if s.reclaims else "cash"
    if s.reclaims:
        reclaimed = money_html(f"saving_reclaimed.{s.index}", s.reclaimed_monthly, s.currency)
        net = f"{escape(hours_text(s.reclaimed_gpu_hours_monthly))} GPU-hours, worth {reclaimed}\n"
    elif s.net_monthly is not None:
        net = money_html(f"saving_net.{s.index}", s.net_monthly, s.currency)
    else:
        net = DASH
    return (
        f"    <tr><td>{number}</td><td>{escape(s.kind)}</td>\n"
        f"        <td>{scope}</td>\n"
        f"        <td>{escape(s.confidence or DASH)}</td>\n"
        f"        <td>{status}</td>\n"
        f'        <td class="num">{money_html(f"saving.{s.index}", s.monthly, s.currency)}</td>\n'
        f'        <td class="num">{net}</td></tr>\n'
        '    <tr class="detail"><td></td><td colspan="6">\n'
        f"{_saving_details(s)}"
        "    </td></tr>\n"
    )


def _saving_details(s: SavingRow) -> str:
    parts = []
    if s.blocked:
        unblock = f" <strong>Would unblock it:</strong> {escape(s.unblock)}" if s.unblock else ""
        parts.append(f"<div><strong>Blocked:</strong> {escape(s.blocked)}{unblock}</div>")
    if s.action:
        parts.append(f'<div><span class="muted">Action:</span> {escape(s.action)}</div>')
    if s.formula:
        parts.append(
            f'<div><span class="muted">Formula:</span> <code>{escape(s.formula)}</code></div>'
        )
    if s.inputs:
        items = sorted(s.inputs.items(), key=_key_ignoring_case)
        parts.append(
            "<dl>"
            + "".join(f"<dt>{escape(k)}</dt><dd>{escape(json_text(v))}</dd>" for k, v in items)
            + "</dl>"
        )
    if s.assumptions:
        parts.append("<ul>" + "".join(f"<li>{escape(a)}</li>" for a in s.assumptions) + "</ul>")
    if s.gpus or s.nodes or s.lookback_s:
        parts.append(f'<div class="muted">\n{_claims(s)}      </div>')
    return "".join(parts)


def _claims(s: SavingRow) -> str:
    text = f"Claims {len(s.gpus)} GPU(s)" if s.gpus else ""
    if s.nodes:
        text += f"{'; removes' if s.gpus else 'Removes'} {escape(', '.join(s.nodes))}"
    if (s.gpus or s.nodes) and s.lookback_s:
        text += ". "
    if s.lookback_s:
        text += (
            f"Rests on {escape(hours_text(s.hours_counted or 0))} hours of data in a "
            f"{escape(hours_text(s.lookback_s / 3600))}-hour look-back."
        )
    return text


def _key_ignoring_case(item: tuple[Any, Any]) -> Any:
    """Jinja2's ``dictsort``: by key, strings without regard to case."""
    key = item[0]
    return key.lower() if isinstance(key, str) else key


def _cached(write: Callable[[datetime], str]) -> Callable[[datetime], str]:
    """``write``, escaped, once per distinct moment and time zone (aware moments of one
    ``tzinfo`` are equal exactly when their wall-clock times are, which is what the text
    shows)."""
    done: dict[datetime, tuple[object, str]] = {}

    def cached(moment: datetime) -> str:
        found = done.get(moment)
        if found is not None and found[0] is moment.tzinfo:
            return found[1]
        text = escape(write(moment))
        done[moment] = (moment.tzinfo, text)
        return text

    return cached


def _lines(rows: Iterable[str]) -> Markup:
    """The rows, each ending its line, less the newline after the last (the template
    writes that one)."""
    return Markup("".join(rows)[:-1])
