"""Every number a person can write in the settings or the price book has bounds.

The walk below finds every numeric field of ``Settings`` and of the price book, however
deep (sections, lists of routes, dicts of pool policies, price maps), writes -1, NaN and
infinity into a YAML file at that place, and expects a ConfigError naming the file, the
line and the field. A field added later without a bound fails here, not in a cost.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import pytest
import yaml
from pydantic import BaseModel

from gpuwatch.analysis.pricing import GpuModelEntry, PriceBookFile, PriceOverride, load_price_book
from gpuwatch.config.load import load_settings
from gpuwatch.config.settings import BudgetItem, MaintenanceWindow, Route, Settings, Silence
from gpuwatch.model.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
MARK = "__the_value_under_test__"

BOOK = {"version": 1, "currency": "CNY", "models": []}
"""The least valid price book; every case adds to it."""

EXAMPLES: dict[type[BaseModel], dict[str, Any]] = {
    Route: {"channel": "#gpu"},
    BudgetItem: {"team": "a", "amount": 1, "currency": "CNY"},
    Silence: {"match": {"pool": ["a"]}, "until": "2026-12-01T09:00:00Z"},
    MaintenanceWindow: {"start": "01:00", "end": "02:00"},
    GpuModelEntry: {"name": "A", "memory_gib": 8},
    PriceOverride: {"prices": {"on-demand": 1}},
}
"""The required fields of the models that sit in lists and dicts, so that one of them
can be written with a single bad number in it."""

NUMERIC = (int, float, Decimal)
Wrap = Callable[[Any], Any]


@dataclass(frozen=True)
class Leaf:
    """One numeric place: its path as the YAML spells it, the document putting a value
    there, and the bounds its field declares."""

    loc: tuple[str | int, ...]
    wrap: Wrap
    bounds: tuple[Any, ...]

    @property
    def dotted(self) -> str:
        text = ""
        for part in self.loc:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        return text


def _example(model: type[BaseModel]) -> dict[str, Any]:
    required = {f.alias or name for name, f in model.model_fields.items() if f.is_required()}
    example = EXAMPLES.get(model, {})
    missing = required - set(example)
    assert not missing, f"add {model.__name__}'s required {sorted(missing)} to EXAMPLES"
    return dict(example)


def _unwrap(annotation: Any, bounds: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
    """The type under ``Annotated`` and ``X | None``, with the bounds met on the way."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            base, *meta = get_args(annotation)
            for item in meta:
                bounds += tuple(getattr(item, "metadata", ())) or (item,)
            annotation = base
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation, bounds
            annotation = rest[0]
        else:
            return annotation, bounds


def leaves(annotation: Any, loc: tuple[str | int, ...], wrap: Wrap, bounds=()) -> Iterator[Leaf]:
    """Every numeric place reachable from a field of type ``annotation`` at ``loc``."""
    annotation, bounds = _unwrap(annotation, bounds)
    origin = get_origin(annotation)
    if annotation in NUMERIC:
        yield Leaf(loc, wrap, bounds)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        base = _example(annotation)
        for name, field in annotation.model_fields.items():
            key = field.alias or name
            yield from leaves(
                field.annotation,
                (*loc, key),
                lambda v, key=key, base=base: wrap({**base, key: v}),
                tuple(field.metadata),
            )
    elif origin is dict:
        key_type, value_type = get_args(annotation)
        key_type, _ = _unwrap(key_type, ())
        key = get_args(key_type)[0] if get_origin(key_type) is Literal else "example"
        yield from leaves(value_type, (*loc, key), lambda v: wrap({key: v}))
    elif origin is list:
        (item_type,) = get_args(annotation)
        yield from leaves(item_type, (*loc, 0), lambda v: wrap([v]))
    elif origin in (Union, types.UnionType):
        assert not any(_unwrap(a, ())[0] in NUMERIC for a in get_args(annotation)), (
            f"{loc}: a number in a union is not walked; give it its own field"
        )


def _model_leaves(model: type[BaseModel], wrap: Wrap) -> list[Leaf]:
    found = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        found += leaves(
            field.annotation, (key,), lambda v, key=key: wrap({key: v}), tuple(field.metadata)
        )
    return found


SETTINGS_LEAVES = _model_leaves(Settings, lambda v: v)
BOOK_LEAVES = _model_leaves(PriceBookFile, lambda v: {**BOOK, **v})


def _write(tmp_path: Path, leaf: Leaf, value: Any) -> tuple[Path, int]:
    """The document with ``value`` at the leaf, as block YAML; and the leaf's line."""
    text = yaml.safe_dump(leaf.wrap(MARK), default_flow_style=False, sort_keys=False)
    (line,) = [i for i, row in enumerate(text.splitlines(), 1) if MARK in row]
    path = tmp_path / "file.yaml"
    path.write_text(text.replace(MARK, yaml.safe_dump(value).splitlines()[0]))
    return path, line


def _problems(load: Callable[[Path], Any], path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(path)
    return info.value.problems


BAD = [-1, math.nan, math.inf, -math.inf]
LOADERS = [(leaf, load_settings, "settings") for leaf in SETTINGS_LEAVES] + [
    (leaf, load_price_book, "price book") for leaf in BOOK_LEAVES
]


def _cases(bound: type | None = None) -> list[Any]:
    """One case per numeric place (that declares a ``bound`` of this kind)."""
    return [
        pytest.param(leaf, load, id=f"{kind}:{leaf.dotted}")
        for leaf, load, kind in LOADERS
        if bound is None or _bound(leaf, bound) is not None
    ]


_BOUND_NAMES = {
    annotated_types.Ge: "ge",
    annotated_types.Gt: "gt",
    annotated_types.Le: "le",
    annotated_types.Lt: "lt",
}


def _bound(leaf: Leaf, kind: type) -> Any:
    """The value of the leaf's first bound of this kind, or None."""
    found = [getattr(b, _BOUND_NAMES[kind]) for b in leaf.bounds if isinstance(b, kind)]
    return found[0] if found else None


def test_the_walk_reaches_every_kind_of_place():
    """The walk itself: sections, aliases, dicts, lists of models, the price book."""
    settings = {leaf.dotted for leaf in SETTINGS_LEAVES}
    assert {
        "simulator.days",
        "notify.slack.max_retry_after_s",
        "notify.slack.server_error_retries",
        "notify.repeat_interval",  # an alias
        "savings.spot.pools.example",
        "savings.floors.example",
        "actions.pools.example.floor",
        "actions.migration.min_saving_monthly",
    } <= settings
    book = {leaf.dotted for leaf in BOOK_LEAVES}
    assert {
        "models[0].memory_gib",
        "models[0].relative_throughput",
        "models[0].mig_slices.example",
        "models[0].prices.on-demand",
        "overrides[0].prices.on-demand",
    } <= book


@pytest.mark.parametrize("value", BAD, ids=["-1", "nan", "inf", "-inf"])
@pytest.mark.parametrize(("leaf", "load"), _cases())
def test_every_number_refuses_negative_and_non_finite_values_with_file_line_and_field(
    tmp_path, leaf, load, value
):
    path, line = _write(tmp_path, leaf, value)
    problems = _problems(load, path)
    expected = f"{path}:{line}: {leaf.dotted}: "
    assert any(p.startswith(expected) for p in problems), (expected, problems)


@pytest.mark.parametrize(("leaf", "load"), _cases(annotated_types.Ge))
def test_an_inclusive_lower_bound_is_accepted(tmp_path, leaf, load):
    path, _ = _write(tmp_path, leaf, _bound(leaf, annotated_types.Ge))
    load(path)


@pytest.mark.parametrize(("leaf", "load"), _cases(annotated_types.Le))
def test_an_inclusive_upper_bound_is_accepted_and_just_above_refused(tmp_path, leaf, load):
    bound = _bound(leaf, annotated_types.Le)
    path, line = _write(tmp_path, leaf, bound)
    load(path)
    path, line = _write(tmp_path, leaf, bound + 1)
    assert any(p.startswith(f"{path}:{line}: ") for p in _problems(load, path))


@pytest.mark.parametrize(("leaf", "load"), _cases(annotated_types.Gt))
def test_an_exclusive_lower_bound_is_refused(tmp_path, leaf, load):
    path, line = _write(tmp_path, leaf, _bound(leaf, annotated_types.Gt))
    assert any(p.startswith(f"{path}:{line}: {leaf.dotted}: ") for p in _problems(load, path))


# --- the places where zero, a bound or a spelling matters ----------------------------


def _settings(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "gpuwatch.yaml"
    path.write_text(text)
    return load_settings(path)


def _book(tmp_path: Path, models: str) -> Any:
    path = tmp_path / "pricing.yaml"
    path.write_text(f"version: 1\ncurrency: CNY\nmodels:\n{models}")
    return path


def test_zero_is_accepted_where_none_is_an_answer(tmp_path):
    settings = _settings(
        tmp_path,
        "simulator: {seed: 0}\n"
        "savings:\n  floors: {gpu-training: 0}\n  spot: {pools: {gpu-spot: 0}, restart_s: 0}\n"
        "  sharing: {peak_load_max: 0, memory_max_ratio: 1}\n"
        "notify: {group_wait: 0}\n"
        "actions: {migration: {max_per_cycle: 0, min_saving_monthly: 0}}\n",
    )
    assert settings.savings.floors == {"gpu-training": 0}
    assert settings.savings.spot.pools == {"gpu-spot": 0.0}
    assert (settings.savings.sharing.peak_load_max, settings.savings.sharing.memory_max_ratio) == (
        0,
        1,
    )
    book = load_price_book(
        _book(tmp_path, "  - {name: A, memory_gib: 8, prices: {on-demand: 0}}\n")
    )
    price, _ = book.price("A", "on-demand")
    assert price is not None and price.per_gpu_hour == 0


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("notify: {repeat_interval: 0}\n", "notify.repeat_interval"),
        ("notify: {group_interval: 0s}\n", "notify.group_interval"),
        ("notify: {undelivered_max_age: 0}\n", "notify.undelivered_max_age"),
        ("savings: {sharing: {peak_load_max: 1.01}}\n", "savings.sharing.peak_load_max"),
        ("savings: {floors: {gpu-training: 1.5}}\n", "savings.floors.gpu-training"),
        ("notify: {slack: {server_error_retries: 11}}\n", "notify.slack.server_error_retries"),
    ],
)
def test_zero_or_out_of_range_is_refused_where_it_makes_no_sense(tmp_path, text, field):
    path = tmp_path / "gpuwatch.yaml"
    path.write_text(text)
    (problem,) = _problems(load_settings, path)
    assert problem.startswith(f"{path}:1: {field}: "), problem


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        ("{name: A, memory_gib: 8, prices: {spot: -0.01}}", "prices.spot", "greater than or"),
        ("{name: A, memory_gib: 8, prices: {spot: 'NaN'}}", "prices.spot", "finite"),
        ("{name: A, memory_gib: 8, prices: {spot: '-Infinity'}}", "prices.spot", "finite"),
        ("{name: A, memory_gib: 8, prices: {spot: .inf}}", "prices.spot", "finite"),
        ("{name: A, memory_gib: 8, mig_slices: {1g.10gb: 0}}", "mig_slices.1g.10gb", "greater"),
        ("{name: A, memory_gib: 0}", "memory_gib", "greater than 0"),
        ("{name: A, memory_gib: 8, relative_throughput: .nan}", "relative_throughput", "finite"),
    ],
)
def test_a_price_book_refuses_negative_and_non_finite_money(tmp_path, entry, field, words):
    path = _book(tmp_path, f"  - name: B\n    memory_gib: 8\n  - {entry}\n")
    (problem,) = _problems(load_price_book, path)
    assert problem.startswith(f"{path}:6: models[1].{field}: "), problem
    assert words in problem


def test_a_non_finite_number_from_the_environment_names_the_variable():
    with pytest.raises(ConfigError) as info:
        load_settings(env={"GPUWATCH_SIMULATOR__DAYS": "nan"})
    (problem,) = info.value.problems
    assert problem.startswith("environment GPUWATCH_SIMULATOR__DAYS: simulator.days: ")
    assert "finite" in problem


@pytest.mark.parametrize("path", ["rules/pricing.yaml", "deploy/base/rules/pricing.yaml"])
def test_the_shipped_price_books_load(path):
    assert load_price_book(REPO / path).models()


def test_the_deployed_settings_load():
    settings = load_settings(REPO / "deploy" / "base" / "gpuwatch.yaml")
    assert settings.metrics.source == "prometheus"
