from __future__ import annotations

import pytest

from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.analysis.rules.schema import Rule


@pytest.fixture(scope="session")
def shipped_rules() -> dict[str, Rule]:
    return {rule.id: rule for rule in load_rules()}
