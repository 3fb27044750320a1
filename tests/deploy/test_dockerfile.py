"""The Dockerfile, read statically (no docker here): two targets, non-root, no torch in
the daemon image, gpuwatch as the entry point, a build context that holds what it copies."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex

import pytest

from tests.deploy.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"


def _stages() -> dict[str, dict[str, object]]:
    """Each stage: the stage or image it starts FROM, and its instructions in order."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical = re.sub(r"\\\n", " ", text)  # line continuations
    stages: dict[str, dict[str, object]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest, flags=re.IGNORECASE)
            assert match, f"every stage is named: FROM {rest}"
            current = []
            stages[match[2]] = {"from": match[1], "lines": current}
        elif current is not None:
            current.append((instruction, rest.strip()))
    return stages


def _chain(stages: dict[str, dict[str, object]], name: str) -> list[tuple[str, str]]:
    """A stage's instructions with those of the stages it is built FROM."""
    stage = stages[name]
    parent = str(stage["from"])
    before = _chain(stages, parent) if parent in stages else []
    return [*before, *stage["lines"]]  # type: ignore[misc]


def _last(lines: list[tuple[str, str]], instruction: str) -> str | None:
    found = [rest for inst, rest in lines if inst == instruction]
    return found[-1] if found else None


def test_both_targets_exist_and_daemon_is_the_default() -> None:
    stages = _stages()
    assert {"daemon", "training"} <= set(stages)
    assert list(stages)[-1] == "daemon"  # `docker build .` builds the last stage
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, flags=re.MULTILINE)


@pytest.mark.parametrize("target", ["daemon", "training"])
def test_target_runs_gpuwatch_as_a_non_root_user(target: str) -> None:
    lines = _chain(_stages(), target)
    user = _last(lines, "USER")
    assert user is not None, f"{target}: no USER"
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) == 10001, f"{target}: USER {user} (numeric, 10001)"
    assert any("--uid 10001" in rest for inst, rest in lines if inst == "RUN")
    entrypoint = _last(lines, "ENTRYPOINT")
    assert entrypoint is not None and json.loads(entrypoint) == ["gpuwatch"]


def test_daemon_image_has_no_torch() -> None:
    lines = _chain(_stages(), "daemon")
    for instruction, rest in lines:
        assert "torch" not in rest.lower(), f"daemon: {instruction} {rest}"
        assert "[train]" not in rest, f"daemon: {instruction} {rest}"


def test_training_image_has_torch_from_a_build_arg_index() -> None:
    lines = _chain(_stages(), "training")
    args = {rest.split("=")[0]: rest.partition("=")[2] for inst, rest in lines if inst == "ARG"}
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    runs = " ".join(rest for inst, rest in lines if inst == "RUN")
    assert '--index-url "${TORCH_INDEX_URL}"' in runs and "[train]" in runs


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    ignored = [
        p.strip()
        for p in (REPO / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    for stage in _stages().values():
        for instruction, rest in stage["lines"]:  # type: ignore[attr-defined]
            if instruction != "COPY" or rest.startswith("--from="):
                continue
            *sources, _ = shlex.split(rest)
            for source in sources:
                assert (REPO / source).exists(), source
                assert not any(fnmatch.fnmatch(source, p) for p in ignored), source
    for needed in ("rules", "reports", "README.md"):  # the wheel force-includes them
        assert needed not in ignored


@pytest.mark.parametrize("target", ["daemon", "training"])
def test_images_install_the_versions_the_suite_passed_with(target: str) -> None:
    """The wheel is installed under requirements/constraints.txt (`make lock` keeps it),
    as `make demo` and `make test` install it: an image gets the pinned versions."""
    lines = _chain(_stages(), target)
    copied = [rest for inst, rest in lines if inst == "COPY" and "constraints.txt" in rest]
    assert copied == ["requirements/constraints.txt /etc/gpuwatch/constraints.txt"]
    installs = [rest for inst, rest in lines if inst == "RUN" and "gpuwatch-*.whl" in rest]
    assert installs, f"{target}: no RUN installs the wheel"
    for rest in installs:
        assert re.search(r"pip install --constraint \S*constraints\.txt ", rest), rest
    constraints = (REPO / "requirements/constraints.txt").read_text().splitlines()
    pins = [line for line in constraints if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", p) for p in pins)
    assert "torch==2.13.0" in pins  # the CPU build's version, without its +cpu label


def test_the_makefile_installs_under_the_constraints() -> None:
    """`make demo` and `make test` both pin every install to requirements/constraints.txt,
    and `make demo` installs neither torch nor the test tools."""
    makefile = (REPO / "Makefile").read_text()
    assert "CONSTRAINTS := requirements/constraints.txt" in makefile
    recipes = re.findall(r"^\t(\$\((?:PIP|UV)_INSTALL\).*)$", makefile, flags=re.MULTILINE)
    assert recipes and all("--constraint" not in r for r in recipes)  # in the variables
    for name in ("PIP_INSTALL", "UV_INSTALL"):
        assert re.search(rf"^{name} := .*--constraint \$\(CONSTRAINTS\)", makefile, re.M)
    demo = makefile.split("$(DEMO_STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "-e ." in demo and "torch" not in demo and "[dev" not in demo
    assert re.search(r"^lock:", makefile, flags=re.MULTILINE)
