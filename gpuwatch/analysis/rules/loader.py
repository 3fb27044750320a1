"""Load rule files and report every problem with its file, line, rule id and field."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from gpuwatch.analysis.rules.roles import missing_roles
from gpuwatch.analysis.rules.schema import RULE_KINDS, Rule, RuleFile
from gpuwatch.config.resources import shipped_dir
from gpuwatch.config.yamlfile import YamlDocument, format_loc, load_yaml_file
from gpuwatch.model.errors import ConfigError
from gpuwatch.model.findings import Role

_RULES = TypeAdapter(list[Rule])


def rule_files(paths: Iterable[Path]) -> list[Path]:
    """Expand folders into their ``*.yaml``/``*.yml`` files; no paths means the shipped rules."""
    given = list(paths) or [shipped_dir("rules") / "gpu.yaml"]
    files: list[Path] = []
    for path in given:
        if path.is_dir():
            found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            found = [f for f in found if f.name != "pricing.yaml"]
            if not found:
                raise ConfigError(f"{path}: folder holds no *.yaml rule files")
            files.extend(found)
        else:
            files.append(path)
    return files


def load_rules(
    paths: Iterable[Path] = (), needs: Mapping[Role, str] | None = None
) -> tuple[Rule, ...]:
    """Load and validate every rule file; raise ConfigError listing all problems found.

    ``needs`` (role -> the consumer that needs it, in words) are roles that some enabled
    rule must have, because the settings turned on something built on them."""
    problems: list[str] = []
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    roles: dict[Role, tuple[str, str]] = {}
    for path in rule_files(paths):
        try:
            doc = load_yaml_file(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        for rule, where in _parse(doc, problems):
            if rule.id in seen:
                problems.append(
                    f"{where}: rule {rule.id}: id: duplicate; first defined at {seen[rule.id]}"
                )
                continue
            seen[rule.id] = where
            if rule.enabled and rule.role is not None:
                if rule.role in roles:
                    other, at = roles[rule.role]
                    problems.append(
                        f"{where}: rule {rule.id}: role: {rule.role} is already the role of "
                        f"rule {other} ({at}); at most one enabled rule may have a role"
                    )
                    continue
                roles[rule.role] = (rule.id, where)
            rules.append(rule)
    if not problems:
        problems.extend(missing_roles(rules, needs or {}))
    if problems:
        raise ConfigError(problems)
    return tuple(rules)


def _parse(doc: YamlDocument, problems: list[str]) -> list[tuple[Rule, str]]:
    data = doc.data
    if not isinstance(data, dict):
        problems.append(f"{doc.path}: expected a mapping with 'version: 1' and 'rules: [...]'")
        return []
    try:
        RuleFile.model_validate({"version": data.get("version"), "rules": []})
    except ValidationError:
        problems.append(
            f"{doc.where(('version',))}: version: expected 1, got {data.get('version')!r}"
        )
    unknown = sorted(set(data) - {"version", "rules"})
    for key in unknown:
        problems.append(f"{doc.where((key,))}: {key}: unknown key; expected version, rules")
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list):
        problems.append(f"{doc.where(('rules',))}: rules: expected a list of rules")
        return []

    parsed: list[tuple[Rule, str]] = []
    for i, raw in enumerate(raw_rules):
        rule_id = raw.get("id", f"#{i + 1}") if isinstance(raw, dict) else f"#{i + 1}"
        try:
            (rule,) = _RULES.validate_python([raw])
        except ValidationError as exc:
            for error in exc.errors():
                loc = _strip_kind(error["loc"])
                if not loc and str(error["msg"]).startswith("Value error, role "):
                    loc = ("role",)  # the role does not fit the rest of the rule
                field = format_loc(loc) if loc else "(rule)"
                where = doc.where(("rules", i, *loc))
                problems.append(f"{where}: rule {rule_id}: {field}: {_explain(error)}")
            continue
        parsed.append((rule, doc.where(("rules", i))))
    return parsed


def _strip_kind(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    # TypeAdapter(list[Rule]) errors look like (0, 'threshold', 'op'): drop the list index
    # and the discriminator tag, which are not keys the user wrote.
    rest = loc[1:]
    if rest and rest[0] in RULE_KINDS:
        rest = rest[1:]
    return rest


def _explain(error: dict) -> str:  # type: ignore[type-arg]
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "union_tag_invalid":
        return f"unknown kind {error['input'].get('kind')!r}; expected one of: " + ", ".join(
            RULE_KINDS
        )
    if kind == "union_tag_not_found":
        return "missing 'kind'; expected one of: " + ", ".join(RULE_KINDS)
    message = str(error["msg"]).removeprefix("Value error, ")
    if "input" in error and not isinstance(error["input"], dict):
        message += f" (got {error['input']!r})"
    return message
