"""What each entry point grants against what its pods' settings need, and the cycle
CronJob's deadlines against the actions' settings.

Every entry point, and every example overlay in deploy/README.md, must grant exactly what
``gpuwatch.actuators.rbac.required`` says its pods ask for with the settings they load
(file and environment), plus the mechanism Components it composes: ClusterRoles for what
lies in any namespace, Roles in gpuwatch's namespace for its own Leases and ConfigMaps,
never those cluster-wide. That the declarations match the requests the code really makes
is tests/integration/test_rbac_derived.py.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from apscheduler.triggers.cron import CronTrigger

from gpuwatch.actuators import rbac
from gpuwatch.config.load import load_settings
from gpuwatch.config.settings import Settings
from gpuwatch.kube.client import api_for
from gpuwatch.sources import kubernetes_rbac
from gpuwatch.sources.kubernetes import KubernetesClusterSource
from gpuwatch.wiring import lease_holder
from tests.builders import grants
from tests.deploy.conftest import (
    DEPLOY,
    ENTRIES,
    NAMESPACE,
    REPO,
    Objects,
    config_dir,
    env_of,
    granted,
    one,
    pod_templates,
    render,
)

ROLLBACK_MARGIN_S = 30
"""What undoing a drain cut off at ``actions.deadline`` may take before the Job is killed:
an uncordon, or an unmark and an uncordon, each a request with its retries."""
OWN_RESOURCES = {("", "configmaps"), ("coordination.k8s.io", "leases")}
"""gpuwatch's own objects: granted in its namespace, never cluster-wide."""
EXAMPLE = re.compile(r"```yaml\n# (\S+)/kustomization\.yaml[^\n]*\n(.*?)```", re.DOTALL)


def _pods(objects: Objects, folder: Path) -> list[tuple[str, str, Settings]]:
    """(owner, gpuwatch command, settings) of each pod, as it loads them."""
    mounted = config_dir(objects, folder)
    pods = []
    for owner, template in pod_templates(objects):
        (container,) = template["spec"]["containers"]
        env = {k: v for k, v in env_of(container).items() if isinstance(v, str)}
        settings = load_settings(mounted / "gpuwatch.yaml", env, {})
        pods.append((owner, container["args"][-1], settings))
    return pods


def _mechanisms(folder: Path) -> set[str]:
    """The mechanism Components a kustomization composes, through its resources too."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    found = set()
    for entry in [*kustomization.get("resources", []), *kustomization.get("components", [])]:
        path = (folder / entry).resolve()
        if path.parent == DEPLOY / "components" and path.name in rbac.COMPONENT_RULES:
            found.add(path.name)
        elif (path / "kustomization.yaml").is_file():
            found |= _mechanisms(path)
    return found


def _assert_grants_what_is_needed(objects: Objects, folder: Path, tmp_path: Path) -> None:
    mechanisms = _mechanisms(folder)
    pods = _pods(objects, tmp_path)
    needed = rbac.component_permissions(mechanisms)
    for _, command, settings in pods:
        needed |= rbac.required(settings, command)
    # The migration verbs where, and only where, jobs may move (pools, whose mechanisms
    # need the rest, are the user's to list).
    writers = [s for _, c, s in pods if c in rbac.CYCLE_COMMANDS and not s.dry_run]
    assert writers or not mechanisms, f"{folder}: action verbs granted, nothing writes"
    for settings in writers:
        moving = settings.actions.migration.max_per_cycle > 0
        assert moving == ("migration" in mechanisms), f"{folder}: migration vs its grants"
    declared, rendered = set(needed.grants()), granted(objects)
    assert not rendered - declared, f"{folder}: granted, not needed: {rendered - declared}"
    assert not declared - rendered, f"{folder}: needed, not granted: {declared - rendered}"
    for role in (o for o in objects if o["kind"] in ("Role", "ClusterRole")):
        assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in role["rules"])
        assert not {g for g in grants(role["rules"]) if "*" in g}, role["metadata"]["name"]


# ---------------------------------------------------------------- RBAC


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_roles_grant_exactly_what_the_pods_need(
    rendered: dict[str, Objects], entry: str, tmp_path: Path
) -> None:
    _assert_grants_what_is_needed(rendered[entry], ENTRIES[entry], tmp_path)


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_every_role_is_bound_to_gpuwatch_alone(rendered: dict[str, Objects], entry: str) -> None:
    objects = rendered[entry]
    roles = [o for o in objects if o["kind"] in ("Role", "ClusterRole")]
    bindings = [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    bound = {(b["roleRef"]["kind"], b["roleRef"]["name"]) for b in bindings}
    assert bound == {(r["kind"], r["metadata"]["name"]) for r in roles}
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "gpuwatch", "namespace": NAMESPACE}
        ]
    for grant in granted(objects):
        if (grant.group, grant.resource) in OWN_RESOURCES:
            assert grant.namespace == NAMESPACE, f"{entry}: {grant} beyond gpuwatch's namespace"
        assert grant.namespace in (None, NAMESPACE), grant


def test_cluster_source_lists_exactly_what_it_declares() -> None:
    source = KubernetesClusterSource(api_for("http://127.0.0.1:1"))
    listed = {(group, plural, "list") for group, plural in source.listed()}
    assert listed == grants(kubernetes_rbac.RBAC_RULES)


def _readme_examples() -> list[tuple[str, str]]:
    return EXAMPLE.findall((DEPLOY / "README.md").read_text(encoding="utf-8"))


def test_readme_has_an_example_per_mechanism_beyond_the_actions_overlay() -> None:
    composed = {
        Path(entry).name
        for _, text in _readme_examples()
        for entry in yaml.safe_load(text).get("components", [])
    }
    assert composed >= set(rbac.COMPONENT_RULES) - {"cordon-drain"}


@pytest.mark.parametrize("folder", [f for f, _ in _readme_examples()])
def test_readme_examples_render_and_grant_what_their_pods_need(folder: str, tmp_path: Path) -> None:
    """Each example as a folder beside deploy/, its paths made relative to a temporary
    copy (kustomize accepts no absolute path)."""
    (text,) = [t for f, t in _readme_examples() if f == folder]
    kustomization: dict[str, Any] = yaml.safe_load(text)
    copy = tmp_path / folder
    copy.mkdir()
    for key in ("resources", "components"):
        kustomization[key] = [
            os.path.relpath((REPO / folder / entry).resolve(), copy)
            for entry in kustomization.get(key, [])
        ]
    (copy / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    objects = render(copy)
    _assert_grants_what_is_needed(objects, copy, tmp_path)


# ---------------------------------------------------------------- the pods


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_pods_know_their_own_name(rendered: dict[str, Objects], entry: str) -> None:
    """The Lease's holder is the pod (POD_NAME), whichever pod holds it."""
    for owner, template in pod_templates(rendered[entry]):
        (container,) = template["spec"]["containers"]
        assert env_of(container)["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}, (
            entry,
            owner,
        )
    # ... and the actions Lease is held under that name.
    assert lease_holder({"POD_NAME": "gpuwatch-cycle-29111230-x7k2p"}) == (
        "gpuwatch-cycle-29111230-x7k2p"
    )
    assert lease_holder({}).count("-") >= 1  # elsewhere: host and process


def _period_s(schedule: str, zone: str) -> float:
    """The shortest time between two runs of a crontab schedule, over a week."""
    trigger = CronTrigger.from_crontab(schedule, timezone=ZoneInfo(zone))
    start = datetime(2026, 1, 5, tzinfo=ZoneInfo(zone))
    fire = trigger.get_next_fire_time(None, start)
    gaps = []
    while fire is not None and fire < start + timedelta(days=7):
        following = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
        assert following is not None
        gaps.append((following - fire).total_seconds())
        fire = following
    return min(gaps)


@pytest.mark.parametrize("entry", ["base", "actions"])
def test_the_cycle_job_outlives_the_actions_deadline_and_ends_before_the_next(
    rendered: dict[str, Objects], entry: str, tmp_path: Path
) -> None:
    objects = rendered[entry]
    cronjob = one(objects, "CronJob", "gpuwatch-cycle")["spec"]
    active_deadline_s = cronjob["jobTemplate"]["spec"]["activeDeadlineSeconds"]
    period_s = _period_s(cronjob["schedule"], cronjob["timeZone"])
    (actions,) = [s.actions for o, _, s in _pods(objects, tmp_path) if o == "gpuwatch-cycle"]
    # A drain cut off at actions.deadline is rolled back before the Job is killed...
    assert active_deadline_s >= actions.deadline_s + ROLLBACK_MARGIN_S
    # ...and the Job ends before the next is due (concurrencyPolicy: Forbid would skip it).
    assert active_deadline_s < period_s
    # A disruption budget's wait fits in the drain's time.
    assert actions.eviction_deadline_s <= actions.deadline_s
    # The Lease of a run killed mid-way lapses before the next run wants it.
    assert actions.lease_duration_s < period_s
