"""Which settings hold secrets, and the secrets they hold, registered for redaction.

A setting is secret when its field is marked (``gpuwatch.config.sections.base.secret``):
nothing here lists settings by name, so a new secret setting is covered by marking it.
Loading the settings registers every secret they hold or name with
``gpuwatch.util.redact`` (URL passwords, header values, the values of the environment
variables and the contents of the files they name), so that from then on no output of
the process carries them; the adapters register again what they read each cycle, so
that a rotated token is masked too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel

from gpuwatch.config.sections.base import SecretKind
from gpuwatch.config.settings import Settings
from gpuwatch.util.redact import (
    MASK,
    redact,
    redact_url,
    register_secret,
    register_url,
    register_webhook,
)

SDK_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
"""Secrets no setting names that a client library gpuwatch runs reads from the
environment (pyarrow's S3 filesystem, for the report location)."""


@dataclass(frozen=True)
class SecretSetting:
    """One secret setting: where it is (keys as written in YAML) and how it holds it."""

    path: tuple[str, ...]
    attributes: tuple[str, ...]
    """The same path as attribute names of ``Settings``."""
    kind: SecretKind
    webhook: bool

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    def value(self, settings: Settings) -> Any:
        node: Any = settings
        for name in self.attributes:
            node = getattr(node, name)
        return node


def secret_settings(model: type[BaseModel] = Settings) -> list[SecretSetting]:
    """Every setting marked secret, in the order the settings reference lists them."""
    return list(_secret_settings(model))


@cache
def _secret_settings(model: type[BaseModel]) -> tuple[SecretSetting, ...]:
    return tuple(_walk(model, (), ()))


def _walk(
    model: type[BaseModel], path: tuple[str, ...], attributes: tuple[str, ...]
) -> Iterator[SecretSetting]:
    for name, field in model.model_fields.items():
        key, attribute = (*path, field.alias or name), (*attributes, name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _walk(annotation, key, attribute)
            continue
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("secret"):
            kind = cast(SecretKind, extra["secret"])
            yield SecretSetting(key, attribute, kind, bool(extra.get("webhook")))


def register_settings_secrets(settings: Settings, env: Mapping[str, str]) -> None:
    """Register for redaction every secret ``settings`` hold or name. A file that cannot
    be read is skipped here: the cycle that needs it says so."""
    for setting in secret_settings():
        value = setting.value(settings)
        if value is None:
            continue
        if setting.kind == "url":
            register_url(str(value))
        elif setting.kind == "value":
            for item in value.values() if isinstance(value, Mapping) else [value]:
                register_secret(str(item))
        else:
            secret = _read(Path(value)) if setting.kind == "file" else env.get(str(value))
            (register_webhook if setting.webhook else register_secret)(secret)
    for name in SDK_SECRET_ENV:
        register_secret(env.get(name))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None


def secret_path(loc: tuple[str | int, ...]) -> bool:
    """True when ``loc`` (keys as written) is a secret setting whose value is itself
    secret (``url`` or ``value``), or lies within one: its input is never echoed."""
    key = tuple(str(part) for part in loc)
    return any(
        key[: len(s.path)] == s.path for s in secret_settings() if s.kind in ("url", "value")
    )


def masked_settings_json(settings: Settings) -> str:
    """The settings as JSON with every secret masked: URL passwords, secret values (each
    value of a mapping), and anything registered; the names of files and variables that
    hold secrets are shown, not their content."""
    document = json.loads(settings.model_dump_json())
    for setting in secret_settings():
        *parents, name = setting.attributes
        parent = document
        for key in parents:
            parent = parent[key]
        value = parent.get(name)
        if value is None:
            continue
        if setting.kind == "url":
            parent[name] = redact_url(value)
        elif setting.kind == "value":
            parent[name] = {k: MASK for k in value} if isinstance(value, dict) else MASK
    return redact(json.dumps(document, indent=2, ensure_ascii=False))
