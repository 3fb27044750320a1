"""Detection rules: the YAML schema, loading with clear errors, and evaluation."""

from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.analysis.rules.schema import Rule

__all__ = ["Rule", "load_rules"]
