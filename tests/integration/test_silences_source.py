"""Silences from a ConfigMap, against the emulated API server with the real client: what
``kubectl edit configmap gpuwatch-silences`` does on the next cycle, and the errors a
person gets for a typo."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gpuwatch.config.settings import AlertMatch, Silence
from gpuwatch.kube.api import RetryPolicy
from gpuwatch.model.errors import (
    ConfigError,
    SourceAuthRefused,
    SourceBadResponse,
    SourceUnreachable,
)
from gpuwatch.sources.silences import ConfigMapSilences

pytestmark = pytest.mark.integration

NS, NAME = "gpuwatch", "gpuwatch-silences"
AT = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
WHERE = f"configmap {NS}/{NAME} key silences.yaml"

VALID = """\
- match: {rule: [gpu-idle], pool: [a100-spot]}
  until: 2026-12-01T09:00:00Z
  comment: "node drained for repair; ask #gpu-infra"
- match:
    namespace: [team-a-*]
  until: "2026-11-24T03:00:00+01:00"
"""


def put(emulator, text: str | None, key: str = "silences.yaml") -> None:
    emulator.add(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": NAME, "namespace": NS},
            "data": {} if text is None else {key: text},
        }
    )


def source(emulator, sleeps: list[float] | None = None) -> ConfigMapSilences:
    api = emulator.kube_api(
        RetryPolicy(retries=2, backoff_max_s=5.0),
        sleep=(sleeps.append if sleeps is not None else lambda s: None),
    )
    return ConfigMapSilences(api, f"{NS}/{NAME}")


def problems(emulator, text: str) -> list[str]:
    put(emulator, text)
    with pytest.raises(SourceBadResponse) as caught:
        source(emulator).silences(AT)
    return str(caught.value).splitlines()


def test_a_valid_list(kube_emulator):
    put(kube_emulator, VALID)
    earlier = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    silences = source(kube_emulator).silences(earlier)
    assert silences == [
        Silence(
            match=AlertMatch(rule=["gpu-idle"], pool=["a100-spot"]),
            until=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
            comment="node drained for repair; ask #gpu-infra",
        ),
        Silence(
            match=AlertMatch(namespace=["team-a-*"]),
            until=datetime.fromisoformat("2026-11-24T03:00:00+01:00"),
        ),
    ]


def test_expired_silences_are_left_out(kube_emulator):
    put(kube_emulator, VALID)
    # The second one ends at 03:00+01:00, that is AT: at that instant it is over.
    assert [s.match.rule for s in source(kube_emulator).silences(AT)] == [["gpu-idle"]]
    earlier = datetime(2026, 11, 24, 1, 59, 59, tzinfo=UTC)
    assert len(source(kube_emulator).silences(earlier)) == 2
    assert source(kube_emulator).silences(datetime(2027, 1, 1, tzinfo=UTC)) == []


@pytest.mark.parametrize("text", [None, "", "# nothing muted right now\n", "[]"])
def test_no_configmap_no_key_or_an_empty_list_mean_none(kube_emulator, text):
    assert source(kube_emulator).silences(AT) == []  # no ConfigMap at all: 404
    put(kube_emulator, text)
    assert source(kube_emulator).silences(AT) == []


def test_another_key_is_not_read(kube_emulator):
    put(kube_emulator, VALID, key="silences.yml")
    assert source(kube_emulator).silences(AT) == []


def test_malformed_yaml_names_the_configmap_key_and_line(kube_emulator):
    lines = problems(kube_emulator, "- match: {rule: [gpu-idle]\n  until: 2026-12-01T09:00:00Z\n")
    assert len(lines) == 1
    assert lines[0].startswith(f"{WHERE}:2: not valid YAML: ")


def test_an_unknown_field_names_entry_line_field_and_what_is_expected(kube_emulator):
    text = VALID + "- match: {rule: [gpu-idle], pol: [a100]}\n  until: 2026-12-01T09:00:00Z\n"
    assert problems(kube_emulator, text) == [
        f"{WHERE}:7: [2].match.pol: unknown field; expected one of: "
        "gpu, namespace, node, pool, rule, severity, team"
    ]
    text = VALID + "- match: {rule: [x]}\n  until: 2026-12-01T09:00:00Z\n  reason: typo\n"
    assert problems(kube_emulator, text) == [
        f"{WHERE}:9: [2].reason: unknown field; expected one of: comment, match, until"
    ]


def test_every_invalid_entry_is_reported_and_none_applied(kube_emulator):
    text = """\
- match: {rule: [gpu-idle]}
  until: 2026-12-01T09:00:00
- match: {}
  until: 2026-12-01T09:00:00Z
- match: {pool: a100}
  until: 2026-12-01
- just a string
- match: {rule: [gpu-idle]}
"""
    assert problems(kube_emulator, text) == [
        f"{WHERE}:2: [0].until: expected an instant with a time zone, e.g. "
        "2026-12-01T09:00:00Z (got 2026-12-01T09:00:00)",
        f"{WHERE}:3: [1].match: a silence must match something: set at least one match field",
        f"{WHERE}:5: [2].match.pool: Input should be a valid list (got 'a100')",
        f"{WHERE}:6: [2].until: expected an instant with a time zone, e.g. "
        "2026-12-01T09:00:00Z (got 2026-12-01)",
        f"{WHERE}:7: [3]: expected a mapping with match, until and an optional comment, "
        "got str 'just a string'",
        f"{WHERE}:8: [4].until: required, and missing",
    ]


def test_not_a_list(kube_emulator):
    assert problems(kube_emulator, "match: {rule: [gpu-idle]}\nuntil: 2026-12-01T09:00:00Z\n") == [
        f"{WHERE}:1: expected a YAML list of silences (each with match, until and an "
        "optional comment), got a mapping"
    ]


def test_rbac_refusal_names_the_rule(kube_emulator):
    kube_emulator.deny("get", "configmaps", namespace=NS)
    with pytest.raises(SourceAuthRefused) as caught:
        source(kube_emulator).silences(AT)
    message = str(caught.value)
    assert message.startswith(f"get configmap {NS}/{NAME}: 403 Forbidden")
    assert f'a Role in namespace {NS} with the rule apiGroups [""], resources [configmaps]' in (
        message
    )
    assert "verbs [get]" in message and f"resourceNames [{NAME}]" in message


def test_throttling_is_retried_then_given_up(kube_emulator):
    put(kube_emulator, VALID)
    path = kube_emulator.path("v1", "ConfigMap", NAME, NS)
    kube_emulator.fail_next(path, 429, times=2, retry_after_s=2)
    sleeps: list[float] = []
    assert len(source(kube_emulator, sleeps).silences(AT)) == 1
    assert sleeps == [2.0, 2.0]

    kube_emulator.fail_next(path, 503, times=3, retry_after_s=60)
    sleeps.clear()
    with pytest.raises(SourceUnreachable, match=r"kept failing \(3 attempts\): 503"):
        source(kube_emulator, sleeps).silences(AT)
    assert sleeps == [5.0, 5.0]  # Retry-After capped by backoff_max_s


@pytest.mark.parametrize("reference", ["gpuwatch", "/name", "ns/", "a/b/c"])
def test_a_bad_reference_is_a_config_error(kube_emulator, reference):
    with pytest.raises(ConfigError, match=r"notify\.silences_configmap: .*expected namespace/name"):
        ConfigMapSilences(kube_emulator.kube_api(), reference)
