"""Settings: file < environment < flags, and errors that name where to look."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuwatch.config.docs import settings_markdown
from gpuwatch.config.load import load_settings
from gpuwatch.model.alerts import Matcher, Silence
from gpuwatch.model.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _problems(**kwargs) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)
    return info.value.problems


def test_defaults():
    settings = load_settings()
    assert settings.simulator.gpus == 64
    assert settings.dry_run is True
    assert settings.output.format == "table"
    assert settings.state_path == Path("gpuwatch-out/state.json")


def test_precedence_file_env_flags(tmp_path):
    path = tmp_path / "gpuwatch.yaml"
    path.write_text("simulator:\n  gpus: 128\n  seed: 1\n  days: 2\n")
    env = {"GPUWATCH_SIMULATOR__SEED": "2", "GPUWATCH_SIMULATOR__DAYS": "3", "HOME": "/x"}
    settings = load_settings(path, env, {"simulator.days": 4})
    assert (settings.simulator.gpus, settings.simulator.seed, settings.simulator.days) == (
        128,
        2,
        4.0,
    )


def test_env_values_are_yaml_scalars():
    env = {
        "GPUWATCH_DRY_RUN": "false",
        "GPUWATCH_ATTRIBUTION__POOL_LABEL_FALLBACKS": "[a, b]",
        "GPUWATCH_AT": "2026-11-24T02:00:00Z",
        # YAML would read this as a comment, i.e. nothing; it is the channel.
        "GPUWATCH_NOTIFY__CHANNEL": "#gpu-oncall",
    }
    settings = load_settings(env=env)
    assert settings.notify.channel == "#gpu-oncall"
    assert settings.dry_run is False
    assert settings.attribution.pool_label_fallbacks == ["a", "b"]
    assert settings.at == datetime(2026, 11, 24, 2, tzinfo=UTC)


def test_unknown_key_in_file_names_file_line_and_choices(tmp_path):
    path = tmp_path / "gpuwatch.yaml"
    path.write_text("simulator:\n  gpus: 8\n  gpu_count: 8\n")
    (problem,) = _problems(config_file=path)
    assert problem.startswith(f"{path}:3: simulator.gpu_count: unknown setting")
    assert "gpus" in problem and "seed" in problem


def test_bad_value_in_file(tmp_path):
    path = tmp_path / "gpuwatch.yaml"
    path.write_text("output:\n  format: xml\n")
    (problem,) = _problems(config_file=path)
    assert f"{path}:2: output.format" in problem and "'table'" in problem and "'xml'" in problem


def test_bad_value_in_env_names_variable():
    (problem,) = _problems(env={"GPUWATCH_SIMULATOR__GPUS": "many"})
    assert problem.startswith("environment GPUWATCH_SIMULATOR__GPUS: simulator.gpus:")
    assert "'many'" in problem


def test_unknown_env_setting():
    (problem,) = _problems(env={"GPUWATCH_SIMULATR__GPUS": "8"})
    assert "GPUWATCH_SIMULATR__GPUS" in problem and "unknown setting" in problem


def test_out_of_range_value():
    (problem,) = _problems(flags={"simulator.gpus": 0})
    assert "simulator.gpus" in problem and "greater than or equal to 1" in problem


def test_naive_instant_rejected():
    (problem,) = _problems(flags={"at": "2026-11-24T02:00:00"})
    assert "time zone" in problem


def test_malformed_yaml(tmp_path):
    path = tmp_path / "gpuwatch.yaml"
    path.write_text("simulator:\n  gpus: [8\n")
    (problem,) = _problems(config_file=path)
    assert str(path) in problem and "not valid YAML" in problem


def test_top_level_must_be_mapping(tmp_path):
    path = tmp_path / "gpuwatch.yaml"
    path.write_text("- a\n")
    (problem,) = _problems(config_file=path)
    assert "expected a mapping" in problem


def test_empty_file_is_defaults(tmp_path):
    path = tmp_path / "gpuwatch.yaml"
    path.write_text("# nothing yet\n")
    assert load_settings(path).simulator.gpus == 64


def test_config_variable_itself_is_not_a_setting():
    load_settings(env={"GPUWATCH_CONFIG": "/etc/gpuwatch.yaml"})


def test_settings_reference_is_up_to_date():
    committed = (REPO / "docs" / "settings.md").read_text()
    assert committed == settings_markdown(), "run `make docs` and commit docs/settings.md"


def test_every_setting_is_documented():
    for line in settings_markdown().splitlines():
        if line.startswith("| `"):
            assert not line.rstrip().endswith("|  |"), f"undocumented setting: {line}"


def test_the_notify_settings_become_the_alert_lifecycle_terms(tmp_path):
    path = tmp_path / "gpuwatch.yaml"
    path.write_text(
        "notify:\n"
        "  channel: '#gpu'\n"
        "  group_by: [rule, team]\n"
        "  group_interval: 10m\n"
        "  undelivered_max_age: 2h\n"
        "  routes:\n"
        "    - {match: {severity: [critical], pool: ['a100-*']}, channel: '#oncall'}\n"
        "    - {channel: '#everything-else'}\n"
        "  silences:\n"
        "    - {match: {gpu: [node-a/gpu0]}, until: '2026-12-01T09:00:00Z', comment: ticket 42}\n"
    )
    notify = load_settings(path).notify
    policy = notify.policy()
    assert (policy.channel, policy.group_by) == ("#gpu", ("rule", "team"))
    assert (policy.group_interval_s, policy.undelivered_max_age_s) == (600, 7200)
    assert (policy.repeat_interval_s, policy.digest_over) == (14400, 10)  # the defaults
    assert [r.channel for r in policy.routes] == ["#oncall", "#everything-else"]
    assert policy.routes[0].match == Matcher(severity=("critical",), pool=("a100-*",))
    assert policy.routes[1].match == Matcher()  # no match: every finding
    (silence,) = [s.to_domain() for s in notify.silences]
    assert silence == Silence(
        Matcher(gpu=("node-a/gpu0",)), datetime(2026, 12, 1, 9, tzinfo=UTC), "ticket 42"
    )


def test_a_commands_defaults_yield_to_the_file_the_environment_and_flags(tmp_path):
    defaults = {"simulator.days": 24.0, "budgets.time_zone": "Asia/Shanghai"}
    assert load_settings(defaults=defaults).simulator.days == 24.0
    config = tmp_path / "gpuwatch.yaml"
    config.write_text("simulator: {gpus: 128}\nbudgets: {time_zone: Europe/Berlin}\n")
    from_file = load_settings(config, defaults=defaults)
    assert (from_file.simulator.days, from_file.simulator.gpus) == (24.0, 128)
    assert from_file.budgets.time_zone == "Europe/Berlin"
    env = {"GPUWATCH_SIMULATOR__DAYS": "0.5"}
    assert load_settings(config, env, defaults=defaults).simulator.days == 0.5
    flags = {"simulator.days": 2.0}
    assert load_settings(config, env, flags, defaults).simulator.days == 2.0
