"""The weekly dataset's schema is a published interface: it changes only on purpose.

``tests/golden/report_schema.json`` is every table's fields (name, type, nullability,
doc) and ``SCHEMA_VERSION`` as committed. Any difference fails here. When a change is
intended, bump ``SCHEMA_VERSION`` in ``gpuwatch/report/schema.py`` (the minor part for
added columns; renaming, retyping or removing a column is a new major version) and
regenerate the golden file:

    GPUWATCH_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_report_schema.py

Regeneration refuses a changed schema under an unchanged version.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from gpuwatch.report.schema import PARTITIONS, SCHEMA_VERSION, SCHEMAS, TABLES

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "report_schema.json"
REGENERATE = os.environ.get("GPUWATCH_REGENERATE_GOLDEN") == "1"
HOW = (
    "If the change is intended: bump SCHEMA_VERSION in gpuwatch/report/schema.py (minor "
    "for added columns, major for anything else), then regenerate the golden file with "
    "`GPUWATCH_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_report_schema.py` and "
    "commit it."
)


def render() -> dict[str, Any]:
    """The schemas as JSON: what a reader of the dataset depends on, in a stable order."""

    def field_json(field: pa.Field) -> dict[str, Any]:
        metadata = field.metadata or {}
        doc = metadata.get(b"doc")
        return {
            "name": field.name,
            "type": str(field.type),
            "nullable": field.nullable,
            "doc": doc.decode() if doc is not None else None,
        }

    return {
        "schema_version": SCHEMA_VERSION,
        "partitions": list(PARTITIONS),
        "tables": {
            name: {
                "metadata": {
                    key.decode(): value.decode()
                    for key, value in sorted((SCHEMAS[name].metadata or {}).items())
                },
                "fields": [field_json(field) for field in SCHEMAS[name]],
            }
            for name in TABLES
        },
    }


def as_text(rendered: dict[str, Any]) -> str:
    return json.dumps(rendered, indent=2, ensure_ascii=False) + "\n"


def without_version(rendered: dict[str, Any]) -> dict[str, Any]:
    """The schemas with every mention of the version taken out."""
    tables = {
        name: {
            "metadata": {
                k: v for k, v in table["metadata"].items() if k != "gpuwatch.schema_version"
            },
            "fields": table["fields"],
        }
        for name, table in rendered["tables"].items()
    }
    return {"partitions": rendered["partitions"], "tables": tables}


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Columns of ``old`` renamed, removed, retyped or made required in ``new``."""
    problems = []
    for name, table in old["tables"].items():
        if name not in new["tables"]:
            problems.append(f"table {name} removed")
            continue
        current = {field["name"]: field for field in new["tables"][name]["fields"]}
        for field in table["fields"]:
            now = current.get(field["name"])
            if now is None:
                problems.append(f"{name}.{field['name']} removed or renamed")
            elif now["type"] != field["type"]:
                problems.append(f"{name}.{field['name']} retyped {field['type']} -> {now['type']}")
            elif field["nullable"] and not now["nullable"]:
                problems.append(f"{name}.{field['name']} made non-nullable")
    return problems


def test_schemas_match_the_golden_file():
    current = render()
    golden = json.loads(GOLDEN.read_text(encoding="utf-8")) if GOLDEN.exists() else None

    if REGENERATE:
        if golden is not None:
            assert golden["schema_version"] != SCHEMA_VERSION or without_version(
                golden
            ) == without_version(current), (
                f"refusing to regenerate {GOLDEN.name}: the schema changed but SCHEMA_VERSION "
                f"is still {SCHEMA_VERSION}. Bump it first."
            )
            assert_no_breaking_change(golden, current)
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(as_text(current), encoding="utf-8")
        return

    assert golden is not None, f"{GOLDEN} is missing. {HOW}"
    if without_version(golden) != without_version(current) and (
        golden["schema_version"] == SCHEMA_VERSION
    ):
        raise AssertionError(
            f"The report's Parquet schema differs from {GOLDEN.name} but SCHEMA_VERSION is "
            f"still {SCHEMA_VERSION}: finance notebooks, DuckDB, Spark and Trino read these "
            f"files. {HOW}\n" + diff(golden, current)
        )
    assert as_text(golden) == as_text(current), (
        f"The report's Parquet schema or SCHEMA_VERSION differs from {GOLDEN.name}. {HOW}\n"
        + diff(golden, current)
    )


def assert_no_breaking_change(golden: dict[str, Any], current: dict[str, Any]) -> None:
    same_major = golden["schema_version"].split(".")[0] == SCHEMA_VERSION.split(".")[0]
    problems = breaking_changes(golden, current)
    assert not (same_major and problems), (
        "Breaking changes under the same major SCHEMA_VERSION (readers' queries would "
        "break; add a column instead, or bump the major version): " + "; ".join(problems)
    )


def test_a_minor_version_only_adds_columns():
    assert_no_breaking_change(json.loads(GOLDEN.read_text(encoding="utf-8")), render())


def test_every_schema_names_its_table_and_the_version():
    assert list(SCHEMAS) == list(TABLES)
    for name, schema in SCHEMAS.items():
        assert schema.metadata == {
            b"gpuwatch.table": name.encode(),
            b"gpuwatch.schema_version": SCHEMA_VERSION.encode(),
        }
        assert not set(PARTITIONS) & set(schema.names), f"{name}: partition column in file"


def diff(golden: dict[str, Any], current: dict[str, Any]) -> str:
    lines = difflib.unified_diff(
        as_text(golden).splitlines(),
        as_text(current).splitlines(),
        "golden",
        "current",
        lineterm="",
    )
    return "\n".join(lines)
