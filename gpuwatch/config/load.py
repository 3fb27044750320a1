"""Build Settings from a YAML file, ``GPUWATCH_*`` environment variables and flags.

Precedence is a command's defaults < file < environment < flags. Each value remembers
where it came from, so that a validation error names the file and line, the variable,
or the flag to fix.
Environment variables nest with a double underscore: ``GPUWATCH_SIMULATOR__GPUS=128``
sets ``simulator.gpus``; values are read as YAML scalars (``true``, ``128``, ``[a, b]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from gpuwatch.config.secrets import register_settings_secrets, secret_path
from gpuwatch.config.settings import Settings
from gpuwatch.config.yamlfile import YamlDocument, format_loc, load_yaml_file
from gpuwatch.model.errors import ConfigError

ENV_PREFIX = "GPUWATCH_"
# Variables that steer loading itself rather than naming a setting.
META_ENV = {"GPUWATCH_CONFIG"}


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the three sources and validate; raise ConfigError listing every problem.
    The secrets the settings hold or name are registered for redaction. ``defaults``
    (dotted keys, as ``flags``) sit under all three: a command's own defaults, such as
    the demo's budgets, that any file, variable or flag overrides."""
    merged: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    doc: YamlDocument | None = None
    for dotted, value in (defaults or {}).items():
        path = tuple(dotted.split("."))
        _set(merged, path, value)
        origins[path] = f"default of the command for {dotted}"

    if config_file is not None:
        doc = load_yaml_file(config_file)
        if doc.data is None:
            doc.data = {}
        if not isinstance(doc.data, dict):
            raise ConfigError(
                f"{config_file}: expected a mapping of settings at the top level, "
                f"got {type(doc.data).__name__}"
            )
        merged = _merged(merged, _deep_copy(doc.data))

    for name, raw in sorted((env or {}).items()):
        if not name.startswith(ENV_PREFIX) or name in META_ENV:
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        if not all(path):
            raise ConfigError(f"environment {name}: expected GPUWATCH_SECTION__KEY")
        _set(merged, path, _parse_env_value(raw))
        origins[path] = f"environment {name}"

    for dotted, value in (flags or {}).items():
        if value is None:
            continue
        path = tuple(dotted.split("."))
        _set(merged, path, value)
        origins[path] = f"flag for {dotted}"

    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, doc, origins)) from exc
    register_settings_secrets(settings, env or {})
    return settings


def _describe(
    exc: ValidationError, doc: YamlDocument | None, origins: Mapping[tuple[str, ...], str]
) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = tuple(str(p) if not isinstance(p, int) else p for p in error["loc"])
        origin = _origin(loc, doc, origins)
        key = format_loc(loc)
        if error["type"] == "extra_forbidden":
            known = ", ".join(sorted(_known_keys(loc[:-1])))
            detail = f"unknown setting; expected one of: {known}"
        else:
            detail = f"{error['msg']}"
            # A secret's value is never echoed, whatever is wrong with it.
            if "input" in error and not isinstance(error["input"], dict) and not secret_path(loc):
                detail += f" (got {error['input']!r})"
        problems.append(f"{origin}: {key}: {detail}")
    return problems


def _origin(
    loc: tuple[str | int, ...], doc: YamlDocument | None, origins: Mapping[tuple[str, ...], str]
) -> str:
    key = tuple(str(p) for p in loc)
    if not key:  # a rule across several settings
        return doc.path if doc is not None else "settings"
    # An unknown section set from the environment has origins only for its children.
    below = [origin for path, origin in origins.items() if path[: len(key)] == key]
    if below:
        return below[0]
    while key:
        if key in origins:
            return origins[key]
        key = key[:-1]
    if doc is not None:
        return doc.where(loc)
    return "defaults"


def _known_keys(loc: tuple[str | int, ...]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [field.alias or name for name, field in model.model_fields.items()]


def _parse_env_value(raw: str) -> Any:
    """A YAML scalar (``true``, ``128``, ``[a, b]``), except that text YAML would read
    as a comment stays text: ``GPUWATCH_NOTIFY__CHANNEL=#gpu-alerts`` means the channel."""
    if raw.lstrip().startswith("#"):
        return raw.strip()
    try:
        return yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        return raw


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
