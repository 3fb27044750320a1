from __future__ import annotations

import pytest

from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.analysis.rules.schema import Rule

# The emulated Kubernetes API server's fixtures (``kube_emulator``).
pytest_plugins = ["tests.integration.kube_emulator"]


@pytest.fixture(scope="session")
def shipped_rules() -> dict[str, Rule]:
    return {rule.id: rule for rule in load_rules()}
