"""The price book: what a GPU-hour costs, per GPU model, capacity type, pool and label.

Loaded from ``rules/pricing.yaml`` (users edit it) and validated strictly, with the
file, line and field of every problem. Prices are numbers with a currency; a GPU the
book cannot price is unpriced (with the reason), never free.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpuwatch.config.resources import shipped_dir
from gpuwatch.config.sections.base import Money, PositiveCount
from gpuwatch.config.yamlfile import format_loc, load_yaml_file
from gpuwatch.model.cost import Price
from gpuwatch.model.errors import ConfigError
from gpuwatch.model.mig import compute_slices, compute_slices_per_gpu, instances_per_gpu

CapacityType = Literal["on-demand", "spot", "reserved"]
_CURRENCY = r"^[A-Z]{3}$"


class _Strict(BaseModel):
    # No NaN or infinity anywhere: either would pass every bound and poison each cost.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class GpuModelEntry(_Strict):
    name: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    memory_gib: float = Field(gt=0)
    relative_throughput: float = Field(1.0, gt=0)
    speedup: dict[Literal["int8", "int4"], Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict
    )
    """Throughput at that precision over FP16 on this GPU (1.0 where absent: measure
    yours before relying on more)."""
    equivalent: list[str] = Field(default_factory=list)
    """Other models a workload of this one may move to at the same throughput (for a
    spot pool of another SKU of the same GPU)."""
    mig_slices: dict[str, PositiveCount] = Field(default_factory=dict)
    prices: dict[CapacityType, Money] = Field(default_factory=dict)
    currency: str | None = Field(None, pattern=_CURRENCY)


class PriceOverride(_Strict):
    description: str = ""
    pool: str | None = None
    node_labels: dict[str, str] = Field(default_factory=dict)
    model: str | None = None
    prices: dict[CapacityType, Money]
    currency: str | None = Field(None, pattern=_CURRENCY)


class PriceBookFile(_Strict):
    version: Literal[1]
    example: bool = False
    currency: str = Field(pattern=_CURRENCY)
    models: list[GpuModelEntry]
    overrides: list[PriceOverride] = Field(default_factory=list)


@functools.lru_cache(maxsize=4096)
def normalize_model(name: str) -> str:
    """``NVIDIA-A100-SXM4-80GB``, ``NVIDIA A100-SXM4-80GB`` -> ``a100 sxm4 80gb``."""
    words = re.split(r"[\s_\-]+", name.lower())
    return " ".join(w for w in words if w and w not in ("nvidia", "tesla"))


class PriceBook:
    """Lookups over a validated price book file."""

    def __init__(
        self,
        book: PriceBookFile,
        path: str = "(price book)",
        node_prices: Mapping[str, Price] | None = None,
    ) -> None:
        self.book = book
        self.path = path
        self.node_prices = dict(node_prices or {})
        """Measured per-node prices (OpenCost) that replace the book for a node's own
        capacity; what-if prices (spot, reserved) still come from the book."""
        self._models: dict[str, GpuModelEntry] = {}
        for entry in book.models:
            for name in (entry.name, *entry.aliases):
                self._models[normalize_model(name)] = entry

    def with_node_prices(self, prices: Mapping[str, Price]) -> PriceBook:
        return PriceBook(self.book, self.path, prices)

    @property
    def is_example(self) -> bool:
        return self.book.example

    def model(self, name: str | None) -> GpuModelEntry | None:
        return self._models.get(normalize_model(name)) if name else None

    def models(self) -> list[GpuModelEntry]:
        return list(self.book.models)

    def equivalent(self, one: str | None, other: str | None) -> bool:
        """The same GPU model, or one the book declares equivalent (either way)."""
        a, b = self.model(one), self.model(other)
        if a is None or b is None:
            return bool(one and other and normalize_model(one) == normalize_model(other))
        if a is b:
            return True
        names = {normalize_model(n) for n in (b.name, *b.aliases)}
        mine = {normalize_model(n) for n in (a.name, *a.aliases)}
        return bool(names & {normalize_model(n) for n in a.equivalent}) or bool(
            mine & {normalize_model(n) for n in b.equivalent}
        )

    def mig_fraction(self, model: str | None, profile: str | None) -> tuple[float, str]:
        """The share of its GPU a MIG instance of ``profile`` is billed: one over the
        instances of that profile a GPU holds (the book's ``mig_slices``, else NVIDIA's
        MIG profile table), else its compute slices over the 7 of a GPU; and how."""
        entry = self.model(model)
        slices = entry.mig_slices.get(profile or "") if entry is not None else None
        if slices:
            return 1.0 / slices, f"1/{slices}: {slices} {profile} instances per GPU"
        known = instances_per_gpu(profile or "", model)
        if known:
            return 1.0 / known, f"1/{known}: {known} {profile} instances per GPU"
        compute = compute_slices(profile or "")
        if compute:
            per_card = compute_slices_per_gpu(model)
            return (
                min(compute / per_card, 1.0),
                f"{compute}/{per_card} compute slices ({profile} is not in the "
                f"price book's mig_slices for {model or 'this model'})",
            )
        return 1.0, f"the whole GPU: MIG profile {profile or '(unknown)'} is unreadable"

    def price(
        self,
        model: str | None,
        capacity_type: str,
        pool: str | None = None,
        node_labels: Mapping[str, str] | None = None,
        node: str | None = None,
    ) -> tuple[Price | None, str]:
        """The price of one GPU-hour, or None and the reason there is none.

        ``node``: the GPU's node, when the price asked is for its own capacity; a
        measured node price then wins over the book.
        """
        if node is not None and node in self.node_prices:
            return self.node_prices[node], ""
        labels = node_labels or {}
        entry = self.model(model)
        for i, override in enumerate(self.book.overrides):
            if override.pool is not None and override.pool != pool:
                continue
            if any(labels.get(k) != v for k, v in override.node_labels.items()):
                continue
            if override.model is not None and (
                entry is None or self.model(override.model) is not entry
            ):
                continue
            amount = override.prices.get(capacity_type)  # type: ignore[call-overload]
            if amount is not None:
                what = override.description or f"overrides[{i}]"
                currency = override.currency or self.book.currency
                return Price(amount, currency, f"override:{what}", self.book.example), ""
        if entry is None:
            return None, f"GPU model {model or '(unknown)'} is not in the price book"
        amount = entry.prices.get(capacity_type)  # type: ignore[call-overload]
        if amount is None:
            return None, f"no {capacity_type} price for {entry.name} in the price book"
        currency = entry.currency or self.book.currency
        return Price(amount, currency, f"book:{entry.name}:{capacity_type}", self.book.example), ""


def load_price_book(path: Path | None = None) -> PriceBook:
    """Load and validate; raise ConfigError listing every problem with file and line."""
    path = path or shipped_dir("rules") / "pricing.yaml"
    doc = load_yaml_file(path)
    try:
        book = PriceBookFile.model_validate(doc.data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            detail = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
            if "input" in error and not isinstance(error["input"], dict | list):
                detail += f" (got {error['input']!r})"
            problems.append(f"{doc.where(loc)}: {format_loc(loc)}: {detail}")
        raise ConfigError(problems) from exc
    names: dict[str, str] = {}
    problems = []
    for i, entry in enumerate(book.models):
        for name in (entry.name, *entry.aliases):
            key = normalize_model(name)
            if key in names and names[key] != entry.name:
                problems.append(
                    f"{doc.where(('models', i))}: models[{i}]: {name!r} also names {names[key]!r}"
                )
            names[key] = entry.name
    if problems:
        raise ConfigError(problems)
    return PriceBook(book, str(path))
