"""Rule files: the shipped ones are valid; every bad one gets file, line, rule, field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.analysis.rules.schema import ThresholdRule
from gpuwatch.config.resources import shipped_dir
from gpuwatch.model.errors import ConfigError

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
    assert ids == {
        "gpu-idle",
        "gpu-near-oom",
        "gpu-unallocated",
        "gpu-overheat",
        "gpu-xid",
        "data-gap",
    }
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
