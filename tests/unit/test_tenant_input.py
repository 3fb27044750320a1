"""What tenants write on their objects can never stop a cycle: every annotation, label and
record gpuwatch reads is parsed in one place, and a bad value is a note, not a crash."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuwatch.analysis.pricing import load_price_book
from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.config.settings import Settings
from gpuwatch.model.cluster import ClusterState
from gpuwatch.model.tenant import (
    ALL_FIELDS,
    CHECKPOINT_INTERVAL,
    LAST_CHECKPOINT,
    MODEL_PARAMS,
    flag,
    notes_for,
)
from gpuwatch.pipeline import analyse, gather
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from tests.unit.test_pipeline import _components

OPT_IN = ("gpuwatch.io/migrate-to-spot", "gpuwatch.io/reclaimable")
FIELDS = [*ALL_FIELDS, *(flag(key) for key in OPT_IN)]
# Values a tenant might write: anything at all, and the near-misses that broke parsers.
VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["1e300", "-1e300", "nan", "inf", "-0", "", " ", "true ", "TRUE", "yes", "0x10",
         "9" * 40, "2026-13-01T00:00:00Z", "{}", "[]", "null", '{"a": 1}', "7B", "-7B",
         "5m", "0s", "\x00", "🙂"]
    ),
)  # fmt: skip


@given(value=VALUES)
@settings(max_examples=300, deadline=None)
@pytest.mark.parametrize("field", FIELDS, ids=[f.key for f in FIELDS])
def test_no_value_makes_a_field_raise(field, value):
    metadata = {field.key: value}
    parsed = field.get(metadata)
    problem = field.problem(metadata)
    # Exactly one of: a value, or the reason there is none.
    assert (parsed is None) == (problem is not None)
    if problem is not None:
        assert field.key in problem and field.expected in problem


def test_absent_is_neither_a_value_nor_a_problem():
    for field in FIELDS:
        assert field.get({}) is None and field.problem({}) is None


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [
        (LAST_CHECKPOINT, "1764000000", datetime.fromtimestamp(1764000000, tz=SHOWCASE_AT.tzinfo)),
        (LAST_CHECKPOINT, "1e300", None),  # past the year 9999: was an OverflowError
        (LAST_CHECKPOINT, "nan", None),
        (CHECKPOINT_INTERVAL, "300", 300),
        (CHECKPOINT_INTERVAL, "5m", 300),
        (CHECKPOINT_INTERVAL, "banana", None),  # was silently the default interval
        (CHECKPOINT_INTERVAL, "0", None),
        (MODEL_PARAMS, "7B", 7e9),
        (MODEL_PARAMS, "inf", None),
    ],
)
def test_the_values_that_broke_parsers(field, text, value):
    assert field.get({field.key: text}) == value


@dataclass(frozen=True)
class _Static:
    state: ClusterState
    name: str = "static"

    def snapshot(self, at: datetime) -> ClusterState:
        return self.state


SETTINGS = Settings.model_validate({"actions": {"pools": {"gpu-training": {}}}})
COMPONENTS = _components()
SHOWCASE = COMPONENTS.cluster.snapshot(SHOWCASE_AT)


def _scribbled(values: list[str]) -> ClusterState:
    """The showcase cluster with ``values`` written into every key gpuwatch reads, on
    every node, pod and controller."""

    def tagged(i: int) -> dict[str, str]:
        return {f.key: values[(i + k) % len(values)] for k, f in enumerate(FIELDS)}

    return replace(
        SHOWCASE,
        nodes=tuple(replace(n, annotations={**n.annotations, **tagged(i)},
                            labels={**n.labels, **tagged(i + 1)})
                    for i, n in enumerate(SHOWCASE.nodes)),
        pods=tuple(replace(p, annotations={**p.annotations, **tagged(i)},
                           labels={**p.labels, **tagged(i + 2)})
                   for i, p in enumerate(SHOWCASE.pods)),
        controllers=tuple(replace(c, annotations={**c.annotations, **tagged(i)})
                          for i, c in enumerate(SHOWCASE.controllers)),
    )  # fmt: skip


@given(values=st.lists(VALUES, min_size=1, max_size=6))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_cluster_full_of_bad_values_is_analysed_with_notes(values):
    components = replace(COMPONENTS, cluster=_Static(_scribbled(values)))
    gathered = gather(components, SETTINGS, SHOWCASE_AT, for_effects=False)
    analysis = analyse(gathered, load_rules(), load_price_book(), SETTINGS)
    assert analysis.complete
    bad = [n for n in analysis.notes if n.kind == "tenant_input"]
    expected = notes_for(_scribbled(values), OPT_IN)
    assert len(bad) == len(expected)
    for note in bad:
        assert note.details["key"] in note.message and "not opted in" in note.message


def test_one_bad_checkpoint_time_is_one_note_naming_object_key_and_value():
    pretrain = next(c for c in SHOWCASE.controllers if c.name == "llm-pretrain")
    broken = replace(pretrain, annotations={**pretrain.annotations, LAST_CHECKPOINT.key: "1e300"})
    cluster = replace(
        SHOWCASE,
        controllers=tuple(broken if c is pretrain else c for c in SHOWCASE.controllers),
    )
    notes = [n for n in notes_for(cluster, OPT_IN) if n.kind == "tenant_input"]
    (note,) = notes
    assert note.message.startswith("PyTorchJob/llm/llm-pretrain: annotation ")
    assert "gpuwatch.io/last-checkpoint='1e300'" in note.message
