"""Secret settings: marked in the schema, registered when loaded, never echoed."""

from __future__ import annotations

import json

import pytest

from gpuwatch.config.docs import settings_markdown
from gpuwatch.config.load import load_settings
from gpuwatch.config.secrets import masked_settings_json, secret_path, secret_settings
from gpuwatch.model.errors import ConfigError
from gpuwatch.util.redact import redact


def test_the_secret_settings_are_marked_in_the_schema():
    marked = {s.dotted: (s.kind, s.webhook) for s in secret_settings()}
    # Not the list (the schema is): the ones a person would be surprised to miss.
    assert marked["prometheus.url"] == ("url", False)
    assert marked["prometheus.headers"] == ("value", False)
    assert marked["prometheus.bearer_token_file"] == ("file", False)
    assert marked["prometheus.password_env"] == ("env", False)
    assert marked["notify.slack.token_env"] == ("env", False)
    assert marked["notify.slack.webhook_url_file"] == ("file", True)
    assert marked["self_metrics.pushgateway_url"] == ("url", False)
    assert marked["report.location"] == ("url", False)
    assert "prometheus.username" not in marked


def test_the_settings_reference_says_which_settings_are_secret():
    rows = {
        line.split("|")[1].strip(" `"): line
        for line in settings_markdown().splitlines()
        if line.startswith("| `")
    }
    for setting in secret_settings():
        assert "**Secret**" in rows[setting.dotted], setting.dotted
    assert "**Secret**" not in rows["prometheus.username"]
    assert "webhook URL" in rows["notify.slack.webhook_url_env"]


def test_loading_registers_what_the_settings_hold_and_name(tmp_path):
    token = tmp_path / "token"
    token.write_text("file-token-canary-5151\n")
    webhook = "https://hooks.slack.com/services/T9/B9/webhook-canary-5151"
    env = {
        "GPUWATCH_PROMETHEUS__URL": "http://reader:url-canary-5151@prometheus:9090",
        "GPUWATCH_PROMETHEUS__HEADERS": "{X-Api-Key: header-canary-5151}",
        "GPUWATCH_PROMETHEUS__BEARER_TOKEN_FILE": str(token),
        "GPUWATCH_PROMETHEUS__PASSWORD_ENV": "PROM_PASSWORD",
        "PROM_PASSWORD": "env-canary-5151",
        "GPUWATCH_NOTIFY__SLACK__WEBHOOK_URL_ENV": "HOOK",
        "HOOK": webhook,
        "AWS_SECRET_ACCESS_KEY": "aws-canary-5151",
        "GPUWATCH_METRICS__SOURCE": "prometheus",
        "GPUWATCH_CLUSTER__SOURCE": "snapshot",
        "GPUWATCH_CLUSTER__SNAPSHOT_PATH": "snapshot.json",
    }
    load_settings(None, env)
    said = redact(" ".join(["said:", *env.values(), token.read_text()]))
    assert "canary-5151" not in said.replace("hooks.slack.com/***", "")
    assert "https://hooks.slack.com/***" in said


def test_a_secret_value_is_never_echoed_by_a_configuration_error():
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"GPUWATCH_NOTIFY__GRAFANA_URL": "http://g:echo-canary-7@h/{bad}"})
    assert "unknown placeholder" in str(caught.value)
    assert "echo-canary-7" not in str(caught.value)
    # Other settings still show what they were given.
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"GPUWATCH_SIMULATOR__GPUS": "many"})
    assert "'many'" in str(caught.value)


def test_secret_path_covers_a_mapping_and_its_keys():
    assert secret_path(("prometheus", "headers", "Authorization"))
    assert secret_path(("prometheus", "url"))
    assert not secret_path(("prometheus", "username"))
    # Names of files and variables are not themselves secret.
    assert not secret_path(("prometheus", "bearer_token_env"))


def test_config_show_masks_secret_settings_and_shows_names():
    settings = load_settings(
        None,
        {
            "GPUWATCH_NOTIFY__REPORT_URL": "https://viewer:show-canary-99@reports/x",
            "GPUWATCH_PROMETHEUS__HEADERS": "{Authorization: abc}",
            "GPUWATCH_PROMETHEUS__BEARER_TOKEN_ENV": "PROM_TOKEN",
        },
    )
    shown = json.loads(masked_settings_json(settings))
    assert shown["notify"]["report_url"] == "https://viewer:***@reports/x"
    # A header value too short to search for is still masked: the setting is secret.
    assert shown["prometheus"]["headers"] == {"Authorization": "***"}
    assert shown["prometheus"]["bearer_token_env"] == "PROM_TOKEN"
