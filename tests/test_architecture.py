"""The shape docs/architecture.md describes holds, checked on every run: the layers
(import contracts), lint, module sizes, no copied blocks, rules found by role."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PACKAGE = REPO / "gpuwatch"
MAX_MODULE_LINES = 500
BLOCK_LINES = 6


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_import_contracts_hold():
    run = subprocess.run(
        [str(BIN / "lint-imports")], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_ruff_lint_and_format():
    for args in (["check"], ["format", "--check"]):
        run = subprocess.run(
            [str(BIN / "ruff"), *args, "gpuwatch", "tests", "bench", "scripts"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stdout + run.stderr


def test_client_libraries_stay_in_their_adapters():
    # Belt and braces for the import contracts: read the source itself.
    owners = {
        "kubernetes": ("kube/client.py", "kube/api.py"),
        "slack_sdk": (
            "notify/slack.py",
            "notify/slack_http.py",
            "notify/slack_approvals.py",
            "notify/slack_listeners.py",
        ),
        "prometheus_api_client": ("sources/prometheus/client.py",),
        "duckdb": ("report/fleet_query.py",),
    }
    for path in _modules():
        where = path.relative_to(PACKAGE).as_posix()
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if not stripped.startswith(("import ", "from ")):
                continue
            module = stripped.split()[1]
            for library, allowed in owners.items():
                if module == library or module.startswith(library + "."):
                    assert where in allowed, f"{where}: {stripped}"


def test_no_module_is_over_500_lines():
    long = {
        path.relative_to(REPO).as_posix(): n
        for path in _modules()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these by their jobs: {long}"


_PUNCTUATION = re.compile(r"^[)\]}(\[{,:;]*$")


def _significant(path: Path) -> list[tuple[int, str]]:
    """(line number, whitespace-folded text) of the lines that carry meaning: blank
    lines, comments, lone punctuation and import statements (also multi-line) left out."""
    lines: list[tuple[int, str]] = []
    in_import = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = " ".join(line.split())
        if in_import:
            in_import = not text.endswith(")")
            continue
        if text.startswith(("import ", "from ")):
            in_import = text.endswith("(")
            continue
        if not text or text.startswith("#") or _PUNCTUATION.match(text):
            continue
        lines.append((number, text))
    return lines


def test_no_block_of_six_lines_is_repeated():
    """A retry loop, an error explainer, a serializer copied from one module to another
    is the same job done in two places: the next fix lands in one of them only."""
    places: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
    for path in _modules():
        lines = _significant(path)
        for i in range(len(lines) - BLOCK_LINES + 1):
            block = tuple(text for _, text in lines[i : i + BLOCK_LINES])
            places[block].append((path.relative_to(REPO).as_posix(), lines[i][0]))
    repeated = []
    for block, where in places.items():
        files = {name for name, _ in where}
        lines_apart = max(n for _, n in where) - min(n for _, n in where)
        if len(files) > 1 or lines_apart >= BLOCK_LINES:
            repeated.append((where, block[0]))
    assert not repeated, "\n".join(f"{where}: {first}" for where, first in repeated)


def test_no_shipped_rule_id_is_named_in_the_code():
    """Consumers find rules by role: renaming a rule in rules/gpu.yaml must not silently
    drop a saving or change which nodes get drained."""
    shipped = yaml.safe_load((REPO / "rules" / "gpu.yaml").read_text())["rules"]
    ids = [rule["id"] for rule in shipped]
    assert all(rule.get("role") for rule in shipped), "every shipped rule has a role"
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, ids)) + r")(?![\w-])")
    named = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in _modules()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not named, "\n".join(named)


def test_documents_the_code_points_at_are_in_the_repository():
    """Docstrings and comments cite docs/*.md, never a document that is not here."""
    cited = re.compile(r"\b(docs/[\w./-]+\.md)\b")
    stale = re.compile(r"ARCHITECTURE\.md|the design document|README's \"")
    problems = []
    for path in _modules():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for doc in cited.findall(line):
                if not (REPO / doc).is_file():
                    problems.append(f"{path.relative_to(REPO)}:{number}: {doc} does not exist")
            if stale.search(line):
                problems.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not problems, "\n".join(problems)


def test_the_readme_s_safety_guarantees_name_tests_that_exist():
    """Each guarantee's proof is a test file (and test) that is really there."""
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Safety guarantees", 1)[1].split("\n## ", 1)[0]
    cited = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`", table)
    assert cited, "the section cites no test"
    current = None
    missing = []
    for path, name, continued in cited:
        if path:
            current = REPO / path
            if not current.exists():
                missing.append(path)
                continue
        test = name or continued
        if test and current is not None and f"def {test}(" not in current.read_text():
            missing.append(f"{current.relative_to(REPO)}::{test}")
    assert not missing, missing
