"""Rule files: the shipped ones are valid; every bad one gets file, line, rule, field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.analysis.rules.schema import ThresholdRule
from gpuwatch.config.resources import shipped_dir
from gpuwatch.model.errors import ConfigError
from gpuwatch.model.findings import Role
from tests.builders import SHIPPED_RULES

GOOD = """\
version: 1
rules:
  - id: low-tensor
    kind: threshold
    signal: tensor_active_ratio
    aggregate: avg
    op: "<"
    threshold: 0.05
    window: 1h
"""


def _write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _problems(*paths: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_rules(paths)
    return info.value.problems


def test_shipped_rules_have_every_builtin():
    ids = {r.id for r in load_rules()}
    assert ids == SHIPPED_RULES
    assert shipped_dir("rules").joinpath("gpu.yaml").is_file()


def test_user_rule_parses_with_defaults(tmp_path):
    (rule,) = load_rules([_write(tmp_path, GOOD)])
    assert isinstance(rule, ThresholdRule)
    assert rule.window_s == 3600
    assert rule.min_coverage == 0.5
    assert rule.scope == "any"


def test_folder_loads_every_yaml(tmp_path):
    _write(tmp_path, GOOD, "a.yaml")
    _write(tmp_path, GOOD.replace("low-tensor", "low-tensor-2"), "b.yml")
    assert [r.id for r in load_rules([tmp_path])] == ["low-tensor", "low-tensor-2"]


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = _write(tmp_path, "version: 1\nrules:\n  - id: x\n    kind: [threshold\n")
    (problem,) = _problems(path)
    assert str(path) in problem and "not valid YAML" in problem


def test_unknown_field_names_rule_field_and_line(tmp_path):
    path = _write(tmp_path, GOOD + "    treshold: 3\n")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:10:")
    assert "rule low-tensor" in problem and "treshold" in problem and "unknown field" in problem


def test_wrong_type_says_what_was_expected(tmp_path):
    path = _write(tmp_path, GOOD.replace("threshold: 0.05", "threshold: low"))
    (problem,) = _problems(path)
    assert f"{path}:8:" in problem and "threshold" in problem and "'low'" in problem


def test_unknown_kind_lists_kinds(tmp_path):
    path = _write(tmp_path, GOOD.replace("kind: threshold", "kind: magic"))
    (problem,) = _problems(path)
    assert "unknown kind 'magic'" in problem and "data_gap" in problem


def test_unknown_signal(tmp_path):
    path = _write(tmp_path, GOOD.replace("tensor_active_ratio", "gpu_util"))
    (problem,) = _problems(path)
    assert "signal" in problem and "util_ratio" in problem


def test_bad_duration(tmp_path):
    path = _write(tmp_path, GOOD.replace("window: 1h", "window: an hour"))
    (problem,) = _problems(path)
    assert "window" in problem and "30m" in problem


def test_unknown_message_placeholder(tmp_path):
    path = _write(tmp_path, GOOD + '    message: "{gpu} {value.__class__}"\n')
    (problem,) = _problems(path)
    assert "unknown placeholder" in problem


def test_duplicate_ids_across_files(tmp_path):
    a = _write(tmp_path, GOOD, "a.yaml")
    b = _write(tmp_path, GOOD, "b.yaml")
    (problem,) = _problems(a, b)
    assert "duplicate" in problem and str(a) in problem


def test_every_problem_is_reported_at_once(tmp_path):
    text = GOOD + GOOD.split("rules:\n")[1].replace("low-tensor", "x2").replace("0.05", "'a'")
    path = _write(tmp_path, text.replace("window: 1h", "window: soon", 1))
    assert len(_problems(path)) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules: []\n", "version"),
        ("version: 2\nrules: []\n", "version: expected 1"),
        ("version: 1\nrules: {}\n", "expected a list"),
        ("- 1\n", "expected a mapping"),
        ("version: 1\nrules: []\nextras: 1\n", "extras: unknown key"),
    ],
)
def test_file_shape_errors(tmp_path, text, expected):
    assert any(expected in p for p in _problems(_write(tmp_path, text)))


def test_missing_file(tmp_path):
    (problem,) = _problems(tmp_path / "nope.yaml")
    assert "cannot read" in problem


# ---------------------------------------------------------------- roles

IDLE = """\
version: 1
rules:
  - id: {id}
    role: idle
    kind: threshold
    signal: util_ratio
    aggregate: avg
    op: "<"
    threshold: {threshold}
    scope: allocated
    window: 30m
    enabled: {enabled}
"""


def test_every_shipped_rule_has_its_own_role():
    roles = {rule.role for rule in load_rules()}
    assert roles == set(Role)


def test_a_role_must_fit_the_rule(tmp_path):
    text = GOOD.replace("kind: threshold", "role: unallocated\n    kind: threshold")
    (problem,) = _problems(_write(tmp_path, text))
    assert problem.startswith(f"{tmp_path / 'r.yaml'}:")
    assert "rule low-tensor: role: role unallocated needs kind unallocated" in problem


@pytest.mark.parametrize(("threshold", "ok"), [(0.5, True), (0.51, False), (0.9, False)])
def test_an_idle_rule_that_would_call_busy_gpus_idle_is_refused(tmp_path, threshold, ok):
    """The scale-down planner drains nodes on the idle rule's findings: a threshold
    above 50 % utilization would call busy GPUs idle."""
    path = _write(tmp_path, IDLE.format(id="idle", threshold=threshold, enabled="true"))
    if ok:
        (rule,) = load_rules([path])
        assert rule.role is Role.IDLE and rule.threshold == threshold
    else:
        (problem,) = _problems(path)
        assert "role idle needs kind threshold, signal util_ratio" in problem
        assert "threshold at most 0.5" in problem


def test_one_enabled_rule_per_role(tmp_path):
    first = _write(tmp_path, IDLE.format(id="idle-a", threshold=0.1, enabled="true"), "a.yaml")
    second = _write(tmp_path, IDLE.format(id="idle-b", threshold=0.05, enabled="true"), "b.yaml")
    (problem,) = _problems(first, second)
    assert problem.startswith(f"{second}:")
    assert "rule idle-b: role: idle is already the role of rule idle-a" in problem
    assert str(first) in problem
    # A disabled rule keeps its role without competing.
    off = _write(tmp_path, IDLE.format(id="idle-c", threshold=0.05, enabled="false"), "c.yaml")
    assert [r.id for r in load_rules([first, off]) if r.enabled] == ["idle-a"]


def test_a_consumer_that_needs_a_role_says_so(tmp_path):
    needs = {Role.UNALLOCATED: "the scale-down planner (actions.pools is set)"}
    with pytest.raises(ConfigError) as info:
        load_rules([_write(tmp_path, GOOD)], needs=needs)
    (problem,) = info.value.problems
    assert problem.startswith("no enabled rule has role unallocated")
    assert "the scale-down planner (actions.pools is set) needs one" in problem
    assert load_rules(needs=needs)  # the shipped rules have it


def test_renaming_a_rule_keeps_what_is_built_on_it(tmp_path):
    shipped = (shipped_dir("rules") / "gpu.yaml").read_text()
    renamed = shipped.replace("id: gpu-idle", "id: notebook-asleep")
    (rule,) = [r for r in load_rules([_write(tmp_path, renamed)]) if r.role is Role.IDLE]
    assert rule.id == "notebook-asleep" and rule.threshold == 0.1


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ("{id: f, kind: forecast, threshold: 0.95, horizon: 30m, window: 2m}", "3 steps"),
        ("{id: f, kind: forecast, threshold: 0.95, window: 2h}", "horizon"),
        ("{id: b, kind: budget, message: 'x'}", "leave message unset"),
        ("{id: b, kind: budget, spent_ratios: [0, 1]}", "above 0"),
        ("{id: b, kind: budget, role: oom_forecast}", "role oom_forecast needs kind forecast"),
    ],
)
def test_new_kinds_are_validated(tmp_path, rule, problem):
    path = tmp_path / "r.yaml"
    path.write_text(f"version: 1\nrules:\n  - {rule}\n")
    with pytest.raises(ConfigError) as raised:
        load_rules([path])
    assert problem in "\n".join(raised.value.problems)
