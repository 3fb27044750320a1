"""Cluster state from a file written by ``kubectl get -o json``, or from standard input.

Not every place gpuwatch runs may talk to the API server: a laptop looking at a
customer's cluster, an air-gapped audit, a CI job replaying last night's state. For
those, one command captures what gpuwatch reads::

    kubectl get nodes,pods,deployments.apps,replicasets.apps,statefulsets.apps,\\
      jobs.batch,cronjobs.batch,pytorchjobs.kubeflow.org,notebooks.kubeflow.org \\
      -A -o json > cluster.json

(kubectl refuses the whole command if one kind is not served: leave out the CRDs the
cluster does not have.)

The file is a ``kind: List`` whose items carry their own ``kind``; an API list
(``PodList``...) is accepted too, its items taking the kind the list names. Every kind
other than Node and Pod that is a known owner kind, or that some object in the file
names as its controller, becomes a ``Controller``; where owners are missing from the
file (no ReplicaSets captured, say) ownership resolves as far as the file allows.

The file is read again at every snapshot, so a daemon sees it change; standard input
(path ``-``) can only be read once and is kept.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from gpuwatch.kube.objects import (
    GPU_RESOURCE_ALIASES,
    OWNER_KINDS,
    controller_from_kube,
    namespace_from_kube,
    node_from_kube,
    owner_kinds_referenced,
    pod_from_kube,
)
from gpuwatch.model.cluster import ClusterState, Controller, Namespace, Node, Pod
from gpuwatch.model.errors import SourceBadResponse, SourceUnreachable

STDIN = "-"


class SnapshotFileClusterSource:
    """``ClusterSource`` over a ``kubectl get -o json`` file (``-``: standard input)."""

    name = "snapshot-file"

    def __init__(
        self,
        path: str | Path,
        *,
        gpu_aliases: Mapping[str, str] = GPU_RESOURCE_ALIASES,
        stdin: IO[bytes] | None = None,
    ) -> None:
        """``stdin`` replaces ``sys.stdin`` when ``path`` is ``-`` (for tests and embedding)."""
        self.path = str(path)
        self.gpu_aliases = gpu_aliases
        self._stdin = stdin
        self._from_stdin: ClusterState | None = None

    def snapshot(self, at: datetime) -> ClusterState:
        """The file's cluster. ``observed_at`` is the file's modification time (when kubectl
        wrote it); for standard input, the ``at`` of the first read."""
        if self.path == STDIN:
            if self._from_stdin is None:
                stream = self._stdin if self._stdin is not None else sys.stdin.buffer
                self._from_stdin = self._parse(self._read(stream), "<stdin>", at)
            return self._from_stdin
        path = Path(self.path)
        try:
            raw = path.read_bytes()
            written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except OSError as exc:
            raise SourceUnreachable(
                f"{self.path}: cannot read the cluster snapshot: {exc.strerror or exc}"
            ) from exc
        return self._parse(raw, self.path, written)

    def _read(self, stream: IO[bytes]) -> bytes:
        try:
            return stream.read()
        except OSError as exc:
            raise SourceUnreachable(f"<stdin>: cannot read the cluster snapshot: {exc}") from exc

    def _parse(self, raw: bytes, origin: str, observed_at: datetime) -> ClusterState:
        try:
            document = json.loads(raw)
        except UnicodeDecodeError as exc:
            raise SourceBadResponse(f"{origin}: not UTF-8 text: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise SourceBadResponse(
                f"{origin}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                "expected the output of `kubectl get ... -o json`"
            ) from exc
        items = _items(document, origin)

        # Kinds to keep as owners: the usual controllers, plus whatever the file's own
        # objects name as their controller (a RayCluster, an in-house operator's kind).
        owner_kinds = OWNER_KINDS | owner_kinds_referenced(
            item for item in items if isinstance(item, Mapping)
        )
        nodes: list[Node] = []
        pods: list[Pod] = []
        controllers: list[Controller] = []
        namespaces: list[Namespace] = []
        item_kind = _item_kind(document)
        for index, item in enumerate(items):
            where = f"{origin}: items[{index}]"
            if not isinstance(item, Mapping):
                raise SourceBadResponse(f"{where}: expected an object, got {type(item).__name__}")
            kind = item.get("kind") or item_kind
            if not isinstance(kind, str) or not kind:
                raise SourceBadResponse(f"{where}: object without kind")
            if not isinstance(item.get("metadata"), Mapping):
                raise SourceBadResponse(f"{where} ({kind}): object without metadata")
            try:
                if kind == "Node":
                    nodes.append(node_from_kube(item, self.gpu_aliases))
                elif kind == "Pod":
                    pods.append(pod_from_kube(item, self.gpu_aliases))
                elif kind == "Namespace":
                    namespaces.append(namespace_from_kube(item))
                elif kind in owner_kinds:
                    controllers.append(controller_from_kube(item, kind))
            except SourceBadResponse as exc:
                raise SourceBadResponse(f"{where}: {exc}") from exc
        return ClusterState.of(observed_at, nodes, pods, controllers, namespaces)


def _items(document: Any, origin: str) -> list[Any]:
    kind = document.get("kind") if isinstance(document, Mapping) else None
    if not isinstance(kind, str) or not (kind == "List" or kind.endswith("List")):
        got = f"kind {kind!r}" if isinstance(document, Mapping) else type(document).__name__
        raise SourceBadResponse(
            f"{origin}: expected a list of objects (kind: List, as `kubectl get nodes,pods "
            f"-A -o json` writes), got {got}"
        )
    items = document.get("items")
    if items is None:
        return []
    if not isinstance(items, list):
        raise SourceBadResponse(f"{origin}: items: expected a list, got {type(items).__name__}")
    return items


def _item_kind(document: Mapping[str, Any]) -> str | None:
    """``Pod`` for a ``PodList`` straight from the API (its items omit their kind)."""
    kind = str(document.get("kind", ""))
    return kind[: -len("List")] if kind != "List" and kind.endswith("List") else None
