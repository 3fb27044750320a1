"""The permissions deploy/ grants, derived from the requests the code really makes.

For each configuration of the actions (a pool's mechanism, or migration to spot), every
path it can take runs as writing cycles against the emulated API server (see
``rbac_paths``): a scale-down by cordon-drain, cluster-api and karpenter, a drain and a
cluster-api scaling rolled back, a PyTorchJob's and a batch Job's move to spot, their
confirmation and the fall-back to on-demand, and with each the Lease taken, renewed and
released, the kill switch, state and silences ConfigMaps read and the state saved.

Each (group, resource[/subresource], verb, gpuwatch's namespace or anywhere) the requests
used is compared, both ways, with what the rendered manifests grant for that
configuration (the base, the leases Component and the mechanism Components the settings
call for, per ``gpuwatch.actuators.rbac.components``) and with what
``gpuwatch.actuators.rbac.required`` declares: every verb used is granted, every verb
granted was used by some path. Then every path runs again with exactly the rendered
grants enforced, and must still succeed.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from gpuwatch.actuators import rbac
from gpuwatch.actuators.rbac import Grant
from gpuwatch.config.load import load_settings
from gpuwatch.config.settings import Settings
from gpuwatch.kube.lease import Lease
from tests.deploy.conftest import DEPLOY, NAMESPACE, granted, render
from tests.integration.kube_emulator import KubeEmulator
from tests.integration.rbac_paths import (
    Run,
    build,
    cluster_api_rolled_back,
    drain_rolled_back,
    migration_confirmed,
    migration_falls_back,
    scale_down,
    used,
    writing,
)

pytestmark = pytest.mark.integration

NO_MIGRATION = {"migration": {"max_per_cycle": 0}}
CONFIGURATIONS: dict[str, tuple[dict[str, Any], tuple[Run, ...]]] = {
    "cordon-drain": (
        {"pools": {"gpu-training": {"mechanism": "cordon-drain"}}, **NO_MIGRATION},
        (scale_down("cordon-drain"), drain_rolled_back),
    ),
    "cluster-api": (
        {
            "pools": {
                "gpu-training": {"mechanism": "cluster-api", "machine_deployment": "capi/gpu-md"}
            },
            **NO_MIGRATION,
        },
        (scale_down("cluster-api"), cluster_api_rolled_back),
    ),
    "karpenter": (
        {"pools": {"gpu-training": {"mechanism": "karpenter"}}, **NO_MIGRATION},
        (scale_down("karpenter"),),
    ),
    "migration": (
        {"pools": {}, "migration": {"max_per_cycle": 1}},
        (migration_confirmed("PyTorchJob"), migration_confirmed("Job"), migration_falls_back),
    ),
}


@cache
def _rendered(folder: Path) -> frozenset[Grant]:
    return frozenset(granted(render(folder)))


def _settings(configuration: str) -> Settings:
    """The deployed settings file, writing, with this configuration's actions."""
    deployed = load_settings(DEPLOY / "base" / "gpuwatch.yaml", {}, {})
    return writing(deployed, CONFIGURATIONS[configuration][0])


def _granted_for(settings: Settings) -> frozenset[Grant]:
    """What the manifests grant a cycle writing with ``settings``: the base, the leases
    Component and each mechanism Component the settings call for."""
    folders = [DEPLOY, DEPLOY / "components" / "leases"]
    folders += [DEPLOY / "components" / name for name in rbac.components(settings.actions)]
    return frozenset().union(*(_rendered(folder) for folder in folders))


def _run(path: Run, settings: Settings, enforced: Iterable[Grant] | None = None) -> set[Grant]:
    """``path`` in a fresh cluster (only ``enforced`` allowed, when given): what it used."""
    with KubeEmulator(deadline_s=60.0) as emulator:
        if enforced is not None:
            emulator.grant_only(enforced)
        path(build(emulator, settings))
        refused = [(r.method, r.path) for r in emulator.requests if r.status == 403]
        assert not refused, f"{path.__name__}: refused {refused}"
        assert not emulator.exhausted
        return used(emulator, NAMESPACE)


def _uncovered(needed: set[Grant], grants: Iterable[Grant]) -> set[Grant]:
    """What ``grants`` do not allow: a ClusterRole's grant allows a namespace's too."""
    allowed = set(grants)
    return {g for g in needed if g not in allowed and g._replace(namespace=None) not in allowed}


@pytest.mark.parametrize("configuration", sorted(CONFIGURATIONS))
def test_what_is_granted_is_what_the_paths_use(configuration: str) -> None:
    settings = _settings(configuration)
    used_by_paths = set().union(*(_run(p, settings) for p in CONFIGURATIONS[configuration][1]))
    for source, grants in (
        ("deploy/ renders", _granted_for(settings)),
        ("gpuwatch.actuators.rbac declares", rbac.required(settings, "once").grants()),
    ):
        missing = _uncovered(used_by_paths, grants)
        unused = set(grants) - used_by_paths
        assert not missing, f"{configuration}: used, but not in what {source}: {missing}"
        assert not unused, f"{configuration}: {source} this, which no path used: {unused}"


@pytest.mark.parametrize(
    ("configuration", "path"),
    [(c, p) for c, (_, paths) in sorted(CONFIGURATIONS.items()) for p in paths],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
def test_each_path_succeeds_with_exactly_the_rendered_grants(configuration: str, path: Run):
    settings = _settings(configuration)
    _run(path, settings, enforced=_granted_for(settings))


def test_the_daemon_lease_needs_only_the_leases_role() -> None:
    """Taken, renewed and released by the daemon: the Role of components/leases."""
    reference = Settings().daemon.lease
    assert reference
    namespace, _, name = reference.partition("/")
    role = _rendered(DEPLOY / "components" / "leases")
    with KubeEmulator() as emulator:
        emulator.grant_only(role)
        lease = Lease(emulator.kube_api(), namespace, name, "gpuwatch-5d8f7-abcde", 60)
        assert lease.acquire() and lease.acquire()
        lease.release()
        assert not [r for r in emulator.requests if r.status == 403]
        assert used(emulator, NAMESPACE) == set(role)
