"""deploy/ renders with kustomize and validates offline.

No API server is available, so everything is checked on ``kubectl kustomize`` output
(what ``kubectl apply -k`` would send): every object against the Kubernetes 1.37
OpenAPI schemas (``kubernetes-validate``, strict: an unknown field is an error), the
Prometheus Operator's ServiceMonitor (a CRD it has no schema for) structurally; the
pods' security settings; the settings file against gpuwatch's own loader; and
deploy/README.md's commands against what renders. The roles and the CronJob's deadlines
against the settings are in test_rbac_and_settings.py.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gpuwatch.analysis.pricing import load_price_book
from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.cli import cli
from gpuwatch.config.load import load_settings
from gpuwatch.config.settings import (
    ActionsSettings,
    DaemonSettings,
    SelfMetricsSettings,
    Settings,
)
from tests.deploy.conftest import (
    CONFIG_FILE,
    DEPLOY,
    ENTRIES,
    IMAGE,
    NAMESPACE,
    REPO,
    Objects,
    config_dir,
    env_of,
    name_of,
    one,
    pod_templates,
    render,
)

KUBERNETES_VERSION = "1.37.0"
# CRDs kubernetes-validate has no schema for; checked structurally below.
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}

BASE_OBJECTS = {
    ("Namespace", "gpuwatch"),
    ("ServiceAccount", "gpuwatch"),
    ("ClusterRole", "gpuwatch-read"),
    ("ClusterRoleBinding", "gpuwatch-read"),
    ("Role", "gpuwatch-state"),
    ("RoleBinding", "gpuwatch-state"),
    ("ConfigMap", "gpuwatch-config"),
}
CRONJOBS = {("CronJob", "gpuwatch-cycle"), ("CronJob", "gpuwatch-report")}
EXPECTED_OBJECTS = {
    "base": BASE_OBJECTS | CRONJOBS,
    "actions": BASE_OBJECTS
    | CRONJOBS
    | {
        ("Role", "gpuwatch-lease"),
        ("RoleBinding", "gpuwatch-lease"),
        ("ClusterRole", "gpuwatch-cordon-drain"),
        ("ClusterRoleBinding", "gpuwatch-cordon-drain"),
    },
    "daemon": BASE_OBJECTS
    | {
        ("Deployment", "gpuwatch"),
        ("Service", "gpuwatch"),
        ("ServiceMonitor", "gpuwatch"),
        ("Role", "gpuwatch-lease"),
        ("RoleBinding", "gpuwatch-lease"),
    },
}


# ---------------------------------------------------------------- what renders


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_each_entry_renders_what_it_should(rendered: dict[str, Objects], entry: str) -> None:
    objects = rendered[entry]
    assert {(o["kind"], name_of(o)) for o in objects} == EXPECTED_OBJECTS[entry]
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "gpuwatch", obj["kind"]
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == NAMESPACE, (obj["kind"], name_of(obj))


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_every_object_validates_against_the_kubernetes_schema(
    rendered: dict[str, Objects], entry: str
) -> None:
    for obj in rendered[entry]:
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{entry}: {obj['kind']}/{name_of(obj)}: {exc.message} at {list(exc.path)}")


def test_service_monitor_scrapes_the_daemon(rendered: dict[str, Objects]) -> None:
    objects = rendered["daemon"]
    monitor = one(objects, "ServiceMonitor", "gpuwatch")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    service = one(objects, "Service", "gpuwatch")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "honorLabels"}
    assert endpoint["path"] == "/metrics"
    (port,) = service["spec"]["ports"]
    assert endpoint["port"] == port["name"] and port["port"] == SelfMetricsSettings().port
    deployment = one(objects, "Deployment", "gpuwatch")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


# ---------------------------------------------------------------- pods


def _all_pod_templates(rendered: dict[str, Objects]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(entry, name, t) for entry in ENTRIES for name, t in pod_templates(rendered[entry])]


def test_every_pod_is_locked_down(rendered: dict[str, Objects]) -> None:
    for entry in ENTRIES:
        namespace = one(rendered[entry], "Namespace", NAMESPACE)
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
            "restricted"
        )
    templates = _all_pod_templates(rendered)
    assert len(templates) == 5  # two CronJobs in base and actions, the daemon's Deployment
    for entry, name, template in templates:
        where = f"{entry}: {name}"
        spec = template["spec"]
        assert spec["serviceAccountName"] == "gpuwatch", where
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True, where
        assert pod_security["runAsUser"] == 10001, where  # the Dockerfile's user
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(spec), where
        volumes = {v["name"]: v for v in spec["volumes"]}
        for volume in volumes.values():
            assert set(volume) - {"name"} <= {"configMap", "emptyDir", "secret"}, where
        assert spec.get("initContainers", []) == [], where
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert not security.get("privileged", False), where
            assert container["image"] == IMAGE, where
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert set(resources[kind]) == {"cpu", "memory"}, (where, kind)
            for mount in container["volumeMounts"]:
                volume = volumes[mount["name"]]
                # Writable paths are emptyDirs; everything else is mounted read-only.
                assert "emptyDir" in volume or mount.get("readOnly") is True, (where, mount)
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, where


def test_no_secret_is_committed(rendered: dict[str, Objects]) -> None:
    for entry in ENTRIES:
        assert not [o for o in rendered[entry] if o["kind"] == "Secret"], entry
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert not re.search(r"xox[abp]-[0-9]", path.read_text(errors="replace")), path


def test_slack_token_is_optional(rendered: dict[str, Objects]) -> None:
    """Without the Secret gpuwatch still runs (the messages go to the log)."""
    for entry, name, template in _all_pod_templates(rendered):
        (container,) = template["spec"]["containers"]
        token = env_of(container)[Settings().notify.slack.token_env]
        assert token == {
            "secretKeyRef": {"name": "gpuwatch-slack", "key": "token", "optional": True}
        }, (entry, name)


# ---------------------------------------------------------------- what runs


def _command(container: dict[str, Any]) -> list[str]:
    return [*container["command"], *container["args"]]


def test_commands_are_gpuwatch_with_its_config(rendered: dict[str, Objects]) -> None:
    (config_option,) = [p for p in cli.params if "--config" in p.opts]
    assert config_option.name == "config_file"  # a global option: before the command
    expected = {"gpuwatch-cycle": "once", "gpuwatch-report": "report", "gpuwatch": "run"}
    for entry, name, template in _all_pod_templates(rendered):
        (container,) = template["spec"]["containers"]
        command = _command(container)
        assert command == ["gpuwatch", "--config", CONFIG_FILE, expected[name]], (entry, name)
        assert expected[name] in cli.commands


def test_cronjobs_never_overlap_and_clean_up(rendered: dict[str, Objects]) -> None:
    for entry in ("base", "actions"):
        cycle = one(rendered[entry], "CronJob", "gpuwatch-cycle")["spec"]
        report = one(rendered[entry], "CronJob", "gpuwatch-report")["spec"]
        assert cycle["schedule"] == "*/5 * * * *"
        assert report["schedule"] == "0 9 * * 1"
        for spec in (cycle, report):
            assert spec["timeZone"] == "Etc/UTC"
            assert spec["concurrencyPolicy"] == "Forbid"
            assert spec["startingDeadlineSeconds"] > 0
            assert 1 <= spec["successfulJobsHistoryLimit"] <= 5
            assert 1 <= spec["failedJobsHistoryLimit"] <= 5
            assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] > 0
            assert spec["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        # A cycle ends, and may not start late, before the next one is due.
        assert cycle["jobTemplate"]["spec"]["activeDeadlineSeconds"] < 300
        assert cycle["startingDeadlineSeconds"] < 300


def test_daemon_probes_and_port(rendered: dict[str, Objects]) -> None:
    deployment = one(rendered["daemon"], "Deployment", "gpuwatch")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (port,) = container["ports"]
    assert port == {
        "name": "metrics",
        "containerPort": SelfMetricsSettings().port,
        "protocol": "TCP",
    }
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    lease_namespace = DaemonSettings().lease.partition("/")[0]
    assert one(rendered["daemon"], "Role", "gpuwatch-lease")["metadata"]["namespace"] == (
        lease_namespace
    )


# ---------------------------------------------------------------- settings


def _in_pod(path: Path | str, mounted: Path) -> Path:
    """A path in the pod's config mount, as the same file in ``mounted``."""
    relative = Path(path).relative_to(Path(CONFIG_FILE).parent)
    return mounted / relative


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_settings_load_as_each_pod_sees_them(
    rendered: dict[str, Objects], entry: str, tmp_path: Path
) -> None:
    objects = rendered[entry]
    mounted = config_dir(objects, tmp_path)
    for name, template in pod_templates(objects):
        (container,) = template["spec"]["containers"]
        env = {k: v for k, v in env_of(container).items() if isinstance(v, str)}
        settings = load_settings(mounted / "gpuwatch.yaml", env, {})
        assert settings.kubernetes.in_cluster is True
        assert settings.cluster_source == "kubernetes"
        assert settings.metrics.source == "prometheus" and settings.prometheus.url
        assert settings.state.backend == "configmap"
        assert settings.state.configmap.partition("/")[0] == NAMESPACE
        assert (settings.notify.silences_configmap or NAMESPACE).partition("/")[0] == NAMESPACE
        assert settings.dry_run is not (entry == "actions" and name == "gpuwatch-cycle")
        # Rules and price book from the mounted ConfigMap; both load.
        assert settings.rules.paths and settings.cost.price_book
        assert load_rules([_in_pod(p, mounted) for p in settings.rules.paths])
        load_price_book(_in_pod(settings.cost.price_book, mounted))
        # Output and reports go to an emptyDir.
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        writable = [
            Path(m["mountPath"])
            for m in container["volumeMounts"]
            if "emptyDir" in volumes[m["name"]]
        ]
        for path in (settings.output.dir, Path(settings.report.location)):
            assert any(path.is_relative_to(w) for w in writable), (name, path)


def test_kill_switch_and_lease_live_in_gpuwatch_namespace() -> None:
    actions = ActionsSettings()
    assert actions.kill_switch.split("/")[:2] == [NAMESPACE, "gpuwatch-actions"]
    assert actions.lease.partition("/")[0] == NAMESPACE


def test_rule_copies_match_the_repository() -> None:
    for name in ("gpu.yaml", "pricing.yaml"):
        copy = DEPLOY / "base" / "rules" / name
        assert copy.read_bytes() == (REPO / "rules" / name).read_bytes(), (
            f"deploy/base/rules/{name} differs from rules/{name}: "
            "run `cp rules/gpu.yaml rules/pricing.yaml deploy/base/rules/`"
        )


# ---------------------------------------------------------------- deploy/README.md


def _readme_commands() -> list[list[str]]:
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL):
        for line in block.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(shlex.split(line))
    # Inline `kubectl apply -k X` in the prose too (the variants).
    for inline in re.findall(r"`(kubectl apply -k [^`]+)`", text):
        commands.append(shlex.split(inline))
    return commands


def test_readme_applies_what_the_tests_render(rendered: dict[str, Objects]) -> None:
    applied = [c[3] for c in _readme_commands() if c[:3] == ["kubectl", "apply", "-k"]]
    by_path = {(REPO / p).resolve(): p for p in applied}
    assert set(by_path) == {*ENTRIES.values(), DEPLOY / "monitoring"}
    first = next(c for c in _readme_commands() if c[:2] == ["kubectl", "apply"])
    assert (REPO / first[3]).resolve() == ENTRIES["base"], "the install step applies the base"
    for entry, path in ENTRIES.items():
        assert render(REPO / by_path[path]) == rendered[entry]


def test_readme_names_what_is_rendered(rendered: dict[str, Objects]) -> None:
    commands = _readme_commands()
    base = rendered["base"]
    for command in commands:
        if command[:1] != ["kubectl"]:
            continue
        if "-n" in command:
            assert command[command.index("-n") + 1] == NAMESPACE, command
        text = " ".join(command)
        if "--from=cronjob/" in text:
            name = text.split("--from=cronjob/")[1].split()[0]
            one(base, "CronJob", name)
        if "create secret generic" in text:
            name = command[command.index("generic") + 1]
            (key,) = [
                a.removeprefix("--from-file=").split("=")[0]
                for a in command
                if a.startswith("--from-file=")
            ]
            (container,) = pod_templates(base)[0][1]["spec"]["containers"]
            ref = env_of(container)[Settings().notify.slack.token_env]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == (name, key)
        if "create configmap gpuwatch-actions" in text:
            literal = next(a for a in command if a.startswith("--from-literal="))
            key = literal.removeprefix("--from-literal=").split("=")[0]
            assert ActionsSettings().kill_switch == f"{NAMESPACE}/gpuwatch-actions/{key}"
    docker = next(c for c in commands if c[:2] == ["docker", "build"])
    target = docker[docker.index("--target") + 1]
    assert re.search(rf"^FROM .* AS {target}$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    # The image the README builds is the one the image component sets, renamed.
    component = yaml.safe_load((DEPLOY / "image" / "kustomization.yaml").read_text())
    (image,) = component["images"]
    assert f"{image['newName']}:{image['newTag']}" == IMAGE
    assert docker[docker.index("-t") + 1].endswith(f"/{IMAGE}")
