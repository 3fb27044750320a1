"""Credentials, and the official client's ``ApiClient`` built so that retries happen once.

gpuwatch uses the ``kubernetes`` package for what it does well (kubeconfig and in-cluster
credentials, exec plugins, token refresh, TLS, proxies) and sends every request through
``gpuwatch.kube.api.KubeApi``. The urllib3 pool under the client would itself retry
429/503, sleeping whatever ``Retry-After`` says, uncapped: ``new_api_client`` builds
clients whose transport retries only a failed connect or a dropped keep-alive
connection, so that retries by status happen once, in ``KubeApi``, under its caps.
"""

from __future__ import annotations

from dataclasses import dataclass

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from gpuwatch.kube.api import KubeApi, RetryPolicy
from gpuwatch.model.errors import ConfigError


@dataclass(frozen=True)
class Credentials:
    """Where the credentials come from."""

    in_cluster: bool = False
    """The pod's service account (``/var/run/secrets/kubernetes.io/serviceaccount``);
    what the deployed CronJob and daemon use. Otherwise a kubeconfig is read."""
    kubeconfig: str | None = None
    """Kubeconfig path; None: ``$KUBECONFIG`` or ``~/.kube/config``, as kubectl."""
    context: str | None = None
    """Kubeconfig context; None: the file's current context."""

    def describe(self) -> str:
        if self.in_cluster:
            return "in-cluster service account"
        kubeconfig = self.kubeconfig or "$KUBECONFIG or ~/.kube/config"
        return f"kubeconfig {kubeconfig}" + (f", context {self.context}" if self.context else "")


def transport_retries() -> urllib3.Retry:
    """The urllib3 policy of gpuwatch's clients: a quick retry of a failed connect or a
    dropped keep-alive connection; nothing by status, never a sleep on ``Retry-After``."""
    return urllib3.Retry(
        total=2,
        connect=2,
        read=1,
        status=0,
        other=0,
        redirect=0,
        respect_retry_after_header=False,
        raise_on_status=False,
    )


def new_api_client(configuration: k8s.Configuration) -> k8s.ApiClient:
    """An ``ApiClient`` on ``configuration`` whose transport leaves retries to ``KubeApi``."""
    configuration.retries = transport_retries()
    return k8s.ApiClient(configuration)


def load_api_client(credentials: Credentials) -> k8s.ApiClient:
    """Load credentials (in-cluster, or kubeconfig and context) into a new ``ApiClient``.

    Raises ``ConfigError`` when they cannot be loaded, naming the file and context:
    that is a setting to fix rather than a cluster that is down."""
    configuration = k8s.Configuration()
    try:
        if credentials.in_cluster:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=credentials.kubeconfig,
                context=credentials.context,
                client_configuration=configuration,
                persist_config=False,  # never write refreshed tokens into a user's file
            )
    except (ConfigException, OSError) as exc:
        raise ConfigError(
            f"{credentials.describe()}: cannot load Kubernetes credentials: {exc}"
        ) from exc
    return new_api_client(configuration)


def connect(credentials: Credentials, policy: RetryPolicy | None = None) -> KubeApi:
    """A ``KubeApi`` with loaded credentials; no request is sent yet."""
    return KubeApi(load_api_client(credentials), policy)


def api_for(host: str, policy: RetryPolicy | None = None, **kwargs: object) -> KubeApi:
    """A ``KubeApi`` for ``host`` with no credentials (an API server on loopback, as
    in tests and benchmarks); ``kwargs`` go to ``KubeApi`` (``sleep``, ``now``...)."""
    return KubeApi(new_api_client(k8s.Configuration(host=host)), policy, **kwargs)  # type: ignore[arg-type]
