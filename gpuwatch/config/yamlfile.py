"""YAML loading that remembers where each key came from, for errors people can act on.

``yaml.safe_load`` alone loses line numbers; a config or rule error that says
``rules/gpu.yaml:14: rules[2].threshold: expected a number`` saves a hunt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gpuwatch.model.errors import ConfigError

KeyPath = tuple[str | int, ...]


@dataclass
class YamlDocument:
    """Parsed YAML plus the line (1-based) of every key and item in it."""

    path: str
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The line of ``loc``, or of its nearest ancestor that has one."""
        key = tuple(loc)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), None)

    def where(self, loc: Sequence[str | int]) -> str:
        line = self.line_of(loc)
        return f"{self.path}:{line}" if line else self.path


def format_loc(loc: Sequence[str | int]) -> str:
    """``('rules', 2, 'threshold')`` -> ``rules[2].threshold``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def load_yaml_text(text: str, path: str) -> YamlDocument:
    """Parse ``text``; a syntax error becomes a ConfigError naming ``path`` and the line."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from exc
    finally:
        loader.dispose()
    doc = YamlDocument(path=path, data=data)
    if node is not None:
        _index_lines(node, (), doc.lines)
    return doc


def load_yaml_file(path: Path) -> YamlDocument:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return load_yaml_text(text, str(path))


def _index_lines(node: yaml.Node, loc: KeyPath, lines: dict[KeyPath, int]) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            child = (*loc, key)
            lines[child] = key_node.start_mark.line + 1
            _index_lines(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*loc, i)
            lines[child] = item.start_mark.line + 1
            _index_lines(item, child, lines)
