"""The long tables' rows written in Python (``gpuwatch.report.html_rows``) are the markup
the template's loops wrote: each loop below is the one ``weekly.html.j2`` had, rendered
with the report's Jinja2 environment, and must give the same bytes for rows that take
every branch, with text that needs escaping and moments in more than one time zone."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, timedelta, timezone
from decimal import Decimal

import pytest
from markupsafe import escape as markup_escape

from gpuwatch.report.figures import NearOomFinding, compute_figures
from gpuwatch.report.figures.money import IdleRow
from gpuwatch.report.html import template_environment
from gpuwatch.report.html_rows import escape, idle_workload_rows, near_oom_rows, saving_rows
from gpuwatch.report.text import WHEN, json_text
from tests.report_tables import PERIOD, realistic_report, saving_row, tables_of

IMPORTS = '{% from "_macros.html.j2" import money %}\n'

NEAR_OOM_LOOP = """  <tbody>
  {% for row in m.findings %}
    <tr><td>{{ row.workload or row.pod or "–" }}</td><td>{{ row.team or "–" }}</td><td>{{ row.node }}{% if row.gpu_uuid %}<br><code>{{ row.gpu_uuid }}</code>{% endif %}</td>
        <td>{{ row.start|when }}</td><td>{{ row.end|when }}</td><td class="num">{{ row.hours }}</td><td class="num">{{ row.worst_value|pct(1) }}</td></tr>
  {% endfor %}
  </tbody>"""  # noqa: E501

IDLE_LOOP = """  <tbody>
  {% for row in f.idle_by_workload %}
    <tr><td>{{ row.key }}</td><td>{{ row.teams|join(", ") }}</td><td class="num">{{ money("idle.workload." ~ row.key, row.idle_cost, row.currency) }}</td><td class="num">{{ row.idle_ratio|pct }}</td></tr>
  {% endfor %}
  </tbody>"""  # noqa: E501

SAVINGS_LOOP = """  <tbody>
  {% for s in f.savings %}
    <tr><td>{{ loop.index }}</td><td>{{ s.kind }}</td>
        <td>{% for k, v in s.scope.items() if v is not none %}{{ k }}: {{ v|jsonish }}{% if not loop.last %}<br>{% endif %}{% endfor %}</td>
        <td>{{ s.confidence or "–" }}</td>
        <td>{% if s.blocked %}<span class="status status-refused">blocked</span>{% elif s.reclaims %}reclaimed capacity{% else %}cash{% endif %}</td>
        <td class="num">{{ money("saving." ~ s.index, s.monthly, s.currency) }}</td>
        <td class="num">{% if s.reclaims %}{{ s.reclaimed_gpu_hours_monthly|hours }} GPU-hours, worth {{ money("saving_reclaimed." ~ s.index, s.reclaimed_monthly, s.currency) }}
          {% elif s.net_monthly is not none %}{{ money("saving_net." ~ s.index, s.net_monthly, s.currency) }}{% else %}–{% endif %}</td></tr>
    <tr class="detail"><td></td><td colspan="6">
      {% if s.blocked %}<div><strong>Blocked:</strong> {{ s.blocked }}{% if s.unblock %} <strong>Would unblock it:</strong> {{ s.unblock }}{% endif %}</div>{% endif %}
      {% if s.action %}<div><span class="muted">Action:</span> {{ s.action }}</div>{% endif %}
      {% if s.formula %}<div><span class="muted">Formula:</span> <code>{{ s.formula }}</code></div>{% endif %}
      {% if s.inputs %}<dl>{% for k, v in s.inputs|dictsort %}<dt>{{ k }}</dt><dd>{{ v|jsonish }}</dd>{% endfor %}</dl>{% endif %}
      {% if s.assumptions %}<ul>{% for a in s.assumptions %}<li>{{ a }}</li>{% endfor %}</ul>{% endif %}
      {% if s.gpus or s.nodes or s.lookback_s %}<div class="muted">
        {% if s.gpus %}Claims {{ s.gpus|length }} GPU(s){% endif %}{% if s.nodes %}{% if s.gpus %}; removes{% else %}Removes{% endif %} {{ s.nodes|join(", ") }}{% endif %}{% if (s.gpus or s.nodes) and s.lookback_s %}. {% endif %}
        {% if s.lookback_s %}Rests on {{ (s.hours_counted or 0)|hours }} hours of data in a {{ (s.lookback_s / 3600)|hours }}-hour look-back.{% endif %}
      </div>{% endif %}
    </td></tr>
  {% endfor %}
  </tbody>"""  # noqa: E501

ODD = '<b>&"it\'s"</b>'
"""Text that needs every escape."""


def loop_html(loop: str, **context: object) -> str:
    return template_environment(None).from_string(IMPORTS + loop).render(**context)


def in_body(rows: str) -> str:
    return f"  <tbody>\n{rows}\n  </tbody>"


def savings_with_every_branch():
    rows = [
        saving_row("spot", "10"),
        saving_row(ODD, "1234.5", confidence=None, action=None, formula=None),
        saving_row(
            "sharing",
            "5",
            cash=False,
            reclaimed_gpu_hours_monthly=1234.5,
            reclaimed_monthly=Decimal("99.994999"),
            gpus=json.dumps([]),
            lookback_s=None,
        ),
        saving_row(
            "release-idle",
            "7",
            blocked=ODD,
            unblock=None,
            net_monthly=None,
            gpus=json.dumps([]),
            nodes=json.dumps(["n1", ODD]),
            scope=json.dumps({"pool": ODD, "team": None, "n": 3, "list": [1, "x"]}),
            inputs=json.dumps({"b": 1, "A": {"x": ODD}, "a": None, "C": "text"}),
            assumptions=json.dumps([ODD, 4]),
        ),
        saving_row("x", "1", blocked="pool busy", unblock=ODD, gpus=json.dumps(["g"]), nodes="[]"),
        saving_row("y", "2", gpus=json.dumps(["g"]), nodes=json.dumps(["n"]), lookback_s=3599),
        saving_row("z", "3", gpus="[]", nodes=json.dumps(["n"]), lookback_s=None),
        saving_row("w", "4", inputs="{}", assumptions="[]", scope="not json", gpus="{"),
    ]
    return compute_figures(realistic_report(tables=tables_of(savings=rows))).savings


def test_saving_rows_are_the_loops():
    savings = savings_with_every_branch()
    assert len(savings) == 8
    f = {"savings": savings}
    assert in_body(saving_rows(savings)) == loop_html(SAVINGS_LOOP, f=f)


def test_realistic_rows_are_the_loops():
    figures = compute_figures(realistic_report())
    assert figures.memory.findings and figures.idle_by_workload and figures.savings
    assert in_body(near_oom_rows(figures.memory.findings)) == loop_html(
        NEAR_OOM_LOOP, m=figures.memory
    )
    assert in_body(idle_workload_rows(figures.idle_by_workload)) == loop_html(IDLE_LOOP, f=figures)
    assert in_body(saving_rows(figures.savings)) == loop_html(SAVINGS_LOOP, f=figures)


def test_near_oom_rows_with_missing_and_odd_values():
    start = PERIOD.start
    plus_two = timezone(timedelta(hours=2))
    base = NearOomFinding(
        node=ODD,
        gpu_uuid=ODD,
        pool=None,
        namespace=None,
        pod=ODD,
        workload=None,
        team=None,
        start=start,
        end=start + timedelta(hours=3),
        hours=3,
        worst_value=None,
        threshold=0.95,
        message=None,
    )
    findings = [
        base,
        dataclasses.replace(base, gpu_uuid=None, pod=None, workload="w", team="t"),
        dataclasses.replace(base, worst_value=0.98765),
        # The same instant elsewhere: the text is the wall-clock time it carries.
        dataclasses.replace(base, start=start.astimezone(plus_two)),
        dataclasses.replace(base, start=start.astimezone(UTC), hours=10**6),
    ]
    assert in_body(near_oom_rows(findings)) == loop_html(NEAR_OOM_LOOP, m={"findings": findings})
    assert start.astimezone(plus_two).strftime(WHEN) in near_oom_rows(findings)


@pytest.mark.parametrize("ratio", [None, 0.0, 0.4449, 1.0])
def test_idle_rows_with_odd_keys(ratio):
    rows = [
        IdleRow(ODD, "USD", Decimal("1234.565"), 3.0, ratio, teams=(ODD, "b")),
        IdleRow("w", ODD, Decimal("-0.004999"), 0.0, ratio, teams=()),
    ]
    assert in_body(idle_workload_rows(rows)) == loop_html(IDLE_LOOP, f={"idle_by_workload": rows})


@pytest.mark.parametrize(
    "value",
    [0, -3, 2**70, 1.5, -0.0, 1e300, 0.1 + 0.2, float("nan"), float("inf"), True, None, [1, "é"]],
)
def test_json_text_writes_json_as_json_dumps_does(value):
    assert json_text(value) == json.dumps(value, ensure_ascii=False, sort_keys=True)
    assert json_text({"b": value, "a": "x"}) == json.dumps(
        {"b": value, "a": "x"}, ensure_ascii=False, sort_keys=True
    )


def test_escape_is_markupsafes():
    for text in [ODD, "plain", "", "a&b", 5, None, "&amp;"]:
        assert escape(text) == str(markup_escape(text))
